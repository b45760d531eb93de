//! `x @ w^T` on cuBLASLt with the algorithm measured fastest for each shape the first time it
//! runs (cuda/tuned_matmul.rs), for decode's projections past the rows `tc_matmul` takes:
//! cuBLAS's first pick for some of Qwen3-0.6B's shapes at 64 rows streams the weight at under
//! 0.9 TB/s on an H200.
//!
//! GPU only: [`tuned_matmul_fits`] says where it runs; elsewhere the model keeps candle's matmul.

use candle_core::{DType, Device, Result, Tensor};

/// Most rows it takes: decode's batches (a prefill's many row counts would each be timed).
pub const TUNED_MATMUL_MAX_ROWS: usize = 64;

/// Whether [`tuned_matmul`] takes `x` `[rows, k]` by `w` `[n, k]` on `device` now: a CUDA
/// device, bf16 or f16, 1 to [`TUNED_MATMUL_MAX_ROWS`] rows, and the shape measured already or
/// measurable now (the stream is not capturing a graph: the timing waits for the device).
pub fn tuned_matmul_fits(
    device: &Device,
    dtype: DType,
    rows: usize,
    n: usize,
    k: usize,
) -> Result<bool> {
    if !matches!(dtype, DType::BF16 | DType::F16)
        || !(1..=TUNED_MATMUL_MAX_ROWS).contains(&rows)
        || n == 0
        || k == 0
    {
        return Ok(false);
    }
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => crate::cuda::tuned_matmul_ready(d, dtype, rows, n, k),
        _ => Ok(false),
    }
}

/// `x` `[rows, k]` times `w` `[n, k]` transposed: `[rows, n]`, accumulated in f32, where
/// [`tuned_matmul_fits`]; the first call of a shape times cuBLASLt's candidates for it.
pub fn tuned_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (rows, k) = x.dims2()?;
    let (n, wk) = w.dims2()?;
    if wk != k || x.dtype() != w.dtype() || !tuned_matmul_fits(x.device(), x.dtype(), rows, n, k)? {
        candle_core::bail!(
            "tuned_matmul: x {:?} {:?} and w {:?} {:?} on {:?} do not fit (a CUDA device, bf16 or f16, 1-{TUNED_MATMUL_MAX_ROWS} rows, a shape met outside graph capture first)",
            x.dims(),
            x.dtype(),
            w.dims(),
            w.dtype(),
            x.device().location()
        );
    }
    #[cfg(feature = "cuda")]
    {
        x.contiguous()?
            .apply_op2_no_bwd(&w.contiguous()?, &TunedMatmul)
    }
    #[cfg(not(feature = "cuda"))]
    unreachable!("tuned_matmul_fits is false without the cuda feature")
}

/// The CUDA side (cuda/tuned_matmul.rs); [`tuned_matmul`] lets no other device reach it.
#[cfg(feature = "cuda")]
struct TunedMatmul;

#[cfg(feature = "cuda")]
impl candle_core::CustomOp2 for TunedMatmul {
    fn name(&self) -> &'static str {
        "tuned-matmul"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        candle_core::bail!("tuned_matmul runs on CUDA devices only (tuned_matmul_fits)")
    }

    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &candle_core::Layout,
        w: &candle_core::CudaStorage,
        wl: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        crate::cuda::tuned_matmul(x, xl, w, wl)
    }
}
