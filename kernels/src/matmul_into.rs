//! `x @ w^T` written into rows of a tensor that already exists. A captured decode step must leave
//! its logits in a buffer that outlives the capture; computing them elsewhere and copying them
//! there cost a pass over `[rows, vocab]` (37 us at batch 64 for Qwen3-0.6B on an H200, in a
//! replayed step: results/gpu-h200-2026-11-28-timeline/).

#[cfg(feature = "cuda")]
use candle_core::{CpuStorage, InplaceOp3, Layout};
use candle_core::{Result, Tensor};

/// Writes `x` `[rows, k]` times `w` `[n, k]` transposed into the first `rows` rows of `out`
/// (contiguous, `[at least rows, n]`, the dtype of `x` and `w`). On the GPU this is the cuBLAS
/// call candle's own matmul makes for `x.matmul(&w.t())`, with the same compute type, so the
/// values are the ones that matmul gives.
pub fn matmul_t_into(out: &Tensor, x: &Tensor, w: &Tensor) -> Result<()> {
    let (rows, k) = x.dims2()?;
    let (n, wk) = w.dims2()?;
    let (out_rows, out_n) = out.dims2()?;
    if wk != k
        || out_n != n
        || rows > out_rows
        || !out.is_contiguous()
        || x.dtype() != w.dtype()
        || out.dtype() != x.dtype()
    {
        candle_core::bail!(
            "matmul_t_into: x {:?} {:?} times w {:?} {:?} transposed does not fit the first rows of out {:?} {:?} (contiguous, same dtype)",
            x.dims(),
            x.dtype(),
            w.dims(),
            w.dtype(),
            out.dims(),
            out.dtype()
        );
    }
    if rows == 0 {
        return Ok(());
    }
    match out.device() {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(_) => {
            out.inplace_op3(&x.contiguous()?, &w.contiguous()?, &MatmulTInto)
        }
        // Elsewhere candle's own matmul, copied: the values the model's LM head gives.
        _ => out.slice_set(&x.matmul(&w.t()?)?, 0, 0),
    }
}

/// The CUDA side (cuda/gemm_into.rs); other devices never reach it.
#[cfg(feature = "cuda")]
struct MatmulTInto;

#[cfg(feature = "cuda")]
impl InplaceOp3 for MatmulTInto {
    fn name(&self) -> &'static str {
        "matmul-t-into"
    }

    fn cpu_fwd(
        &self,
        _: &mut CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        candle_core::bail!(
            "matmul_t_into: on the CPU it is candle's matmul and a copy, not this op"
        )
    }

    fn cuda_fwd(
        &self,
        o: &mut candle_core::CudaStorage,
        ol: &Layout,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<()> {
        crate::cuda::matmul_t_into(o, ol, x, xl, w, wl)
    }
}
