//! `x @ w^T` for a few rows: decode at batch 1-8 multiplies a handful of rows by every weight
//! matrix, a pure read of the weights; cuBLAS's kernels for that shape reached about 1.1 TB/s on
//! an H200 (results/gpu-h200-2026-11-28-fused), a warp per output column streaming its weight
//! row with 16-byte loads gets much closer to the bandwidth.

use crate::elem::{unsupported, Elem};
use candle_core::{backend::BackendStorage, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// Most rows the kernel takes (one accumulator per row per lane).
pub const SMALL_MATMUL_MAX_ROWS: usize = 8;

/// `x` `[rows, k]` times `w` `[n, k]` transposed: `[rows, n]`, accumulated in f32. For at most
/// [`SMALL_MATMUL_MAX_ROWS`] rows and `k` a multiple of 8.
pub fn small_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (rows, k) = x.dims2()?;
    let (_, wk) = w.dims2()?;
    if wk != k || rows == 0 || rows > SMALL_MATMUL_MAX_ROWS || k % 8 != 0 || x.dtype() != w.dtype() {
        candle_core::bail!("small_matmul: x {:?} {:?} and w {:?} {:?} (at most {SMALL_MATMUL_MAX_ROWS} rows, k a multiple of 8)", x.dims(), x.dtype(), w.dims(), w.dtype());
    }
    x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &SmallMatmul)
}

pub struct SmallMatmul;

fn run<T: Elem>(x: &[T], w: &[T], rows: usize, k: usize) -> Vec<T> {
    let n = w.len() / k;
    let mut out = Vec::with_capacity(rows * n);
    for r in 0..rows {
        let xr = &x[r * k..(r + 1) * k];
        out.extend((0..n).map(|c| T::from_f32(xr.iter().zip(&w[c * k..(c + 1) * k]).map(|(a, b)| a.to_f32() * b.to_f32()).sum())));
    }
    out
}

impl CustomOp2 for SmallMatmul {
    fn name(&self) -> &'static str {
        "small-matmul"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, k) = xl.shape().dims2()?;
        let n = wl.dims()[0];
        let r = |l: &Layout| l.contiguous_offsets().expect("made contiguous");
        let ((x0, x1), (w0, w1)) = (r(xl), r(wl));
        let out = match (x, w) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(run(&x[x0..x1], &w[w0..w1], rows, k)),
            (CpuStorage::BF16(x), CpuStorage::BF16(w)) => CpuStorage::BF16(run(&x[x0..x1], &w[w0..w1], rows, k)),
            (CpuStorage::F16(x), CpuStorage::F16(w)) => CpuStorage::F16(run(&x[x0..x1], &w[w0..w1], rows, k)),
            (x, _) => return Err(unsupported("small_matmul", x.dtype())),
        };
        Ok((out, Shape::from((rows, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, x: &candle_core::CudaStorage, xl: &Layout, w: &candle_core::CudaStorage, wl: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::small_matmul(x, xl, w, wl)
    }
}
