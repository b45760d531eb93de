//! The decode matmuls: few-row, tensor-core, ending in SwiGLU, and the LM head in place.

use super::{common::max_diff, gpu, max_abs};
use candle_core::{DType, Device, Tensor};

#[test]
fn small_matmul_matches_cpu() {
    // Split-K (cuda.rs picks it from k and the columns): 2 warps per column for k = 3,072, and for
    // k = 2,056, whose share is not a whole number of passes; f32 (shorter passes) splits k =
    // 1,024 too. None for bf16 at k = 1,024, and the LM head's 151,936 columns walk many column
    // groups per block of the persistent grid.
    for (rows, n, k) in [
        (1, 1000, 1024),
        (3, 4096, 1024),
        (8, 1024, 3072),
        (4, 1024, 2048),
        (2, 1024, 2056),
        (5, 151_936, 1024),
    ] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap();
        // bf16: the f32 sums differ in order only, then round to bf16; outputs reach about 8,
        // where two units in the last place are 0.0625.
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 7e-2)] {
            let (x, w) = (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap());
            let cpu = nanohost_kernels::small_matmul(&x, &w).unwrap();
            let gpu = nanohost_kernels::small_matmul(
                &x.to_device(&gpu()).unwrap(),
                &w.to_device(&gpu()).unwrap(),
            )
            .unwrap();
            let d = max_diff(&cpu, &gpu);
            assert!(d <= tol, "{dtype:?} {rows}x{k} . {n}x{k}: differs by {d}");
        }
    }
}

/// Whether the tensor-core matmul runs on `dev` (compute capability 9+); says so when a test
/// skips it.
pub(crate) fn tc_matmul_runs(dev: &Device) -> bool {
    let runs = nanohost_kernels::tc_matmul_fits(dev, DType::BF16, 1, 64, 64);
    if !runs {
        eprintln!("tc_matmul does not run on this GPU (compute capability 9+ only); skipped");
    }
    runs
}

#[test]
fn tc_matmul_matches_cpu() {
    // Clusters of 1 (k = 64), 4 (k = 1,024: slices of 256) and 8 blocks (k = 2,048; k = 3,072 in
    // slices of 384); 1 to 8 tiles of 8 rows, the last tile partial or full.
    let dev = gpu();
    if !tc_matmul_runs(&dev) {
        return;
    }
    for (rows, n, k) in [
        (1, 128, 1024),
        (3, 4096, 1024),
        (8, 1024, 2048),
        (9, 1024, 3072),
        (17, 6144, 1024),
        (33, 192, 64),
        (50, 1024, 2048),
        (64, 1024, 3072),
        (64, 4096, 1024),
    ] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let (x, w) = (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap());
            let f32_of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let want = f32_of(&x).matmul(&f32_of(&w).t().unwrap()).unwrap();
            let got = nanohost_kernels::tc_matmul(
                &x.to_device(&dev).unwrap(),
                &w.to_device(&dev).unwrap(),
            )
            .unwrap();
            assert_eq!(got.dims(), &[rows, n]);
            // f32 sums in another order, then one rounding to the storage type: outputs reach
            // about 12, where half a bf16 unit in the last place is 0.03.
            let d = max_diff(&want, &got);
            assert!(d <= 7e-2, "{dtype:?} {rows}x{k} . {n}x{k}: differs by {d}");
        }
    }
    let x = Tensor::zeros((65, 64), DType::BF16, &dev).unwrap();
    let w = Tensor::zeros((64, 64), DType::BF16, &dev).unwrap();
    assert!(nanohost_kernels::tc_matmul(&x, &w)
        .unwrap_err()
        .to_string()
        .contains("do not fit"));
}

#[test]
fn matmuls_ending_in_swiglu_match_cpu() {
    // The fused gate/up projections (GLU kernels): the few-row kernel with splits 1, 2 and 4 (k
    // = 1,024 and 3,072, f32's shorter passes), and the tensor-core kernel at 3 to 64 rows, with
    // slices of k of 256 and (k = 3,072, 8 blocks) 384.
    let dev = gpu();
    let swiglu_f32 = |x: &Tensor, w: &Tensor| {
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        nanohost_kernels::silu_mul(&f(x).matmul(&f(w).t().unwrap()).unwrap()).unwrap()
    };
    for (rows, n, k) in [(1, 3072, 1024), (2, 1000, 3072), (8, 96, 1024)] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.05, (2 * n, k), &Device::Cpu).unwrap();
        // Relative to the largest output (products of two sums reach about 30 at k = 3,072): f32
        // sums in another order, then one rounding to the storage type (bf16: 2^-8 relative).
        for (dtype, rel) in [(DType::F32, 1e-5), (DType::BF16, 1.0 / 128.0)] {
            let (x, w) = (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap());
            let got = nanohost_kernels::small_matmul_swiglu(
                &x.to_device(&dev).unwrap(),
                &w.to_device(&dev).unwrap(),
            )
            .unwrap();
            let want = swiglu_f32(&x, &w);
            let (d, top) = (max_diff(&want, &got), max_abs(&want));
            assert!(d <= rel * top.max(1.0), "small_matmul_swiglu {dtype:?} {rows}x{k} . {}x{k}: differs by {d} (largest output {top})", 2 * n);
        }
    }
    if nanohost_kernels::tc_matmul_swiglu_fits(&dev, DType::BF16, 3, 3072, 1024) {
        for (rows, n, k) in [
            (3, 3072, 1024),
            (16, 32, 1024),
            (64, 3072, 1024),
            (40, 96, 2048),
            (24, 1024, 3072),
        ] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap();
            let w = Tensor::randn(0f32, 0.05, (2 * n, k), &Device::Cpu)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap();
            let got = nanohost_kernels::tc_matmul_swiglu(
                &x.to_device(&dev).unwrap(),
                &w.to_device(&dev).unwrap(),
            )
            .unwrap();
            assert_eq!(got.dims(), &[rows, n]);
            let want = swiglu_f32(&x, &w);
            let (d, top) = (max_diff(&want, &got), max_abs(&want));
            assert!(
                d <= top.max(1.0) / 128.0,
                "tc_matmul_swiglu {rows}x{k} . {}x{k}: differs by {d} (largest output {top})",
                2 * n
            );
        }
    }
}

#[test]
fn matmul_t_into_is_candles_matmul_written_in_place() {
    // The LM head of a captured step (matmul_into.rs): the same cuBLAS call as candle's matmul,
    // so the same values, bit for bit; rows past the product's keep what they held.
    let dev = gpu();
    for rows in [1usize, 5, 64] {
        let x = Tensor::randn(0f32, 1.0, (rows, 1024), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
            .to_device(&dev)
            .unwrap();
        let w = Tensor::randn(0f32, 0.05, (3000, 1024), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
            .to_device(&dev)
            .unwrap();
        let out = Tensor::ones((80, 3000), DType::BF16, &dev).unwrap();
        nanohost_kernels::matmul_t_into(&out, &x, &w).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap();
        assert_eq!(
            max_diff(&want, &out.narrow(0, 0, rows).unwrap()),
            0.0,
            "{rows} rows"
        );
        let rest = out
            .narrow(0, rows, 80 - rows)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            rest.iter().all(|&v| v == 1.0),
            "{rows} rows: the rows after them were written"
        );
    }
}
