//! `x @ w^T` for decode's batches of up to 64 rows on tensor cores (sm_90 and later, bf16 or
//! f16): the weight streamed once into shared memory by clusters of blocks that split k, every
//! row of x multiplied there (cuda/tc_matmul.cuh). cuBLAS's kernels for these shapes streamed
//! Qwen3-0.6B's o_proj and down_proj at under 0.9 TB/s on an H200, and a kernel after them could
//! not start early (they take no part in programmatic dependent launch).
//!
//! GPU only: [`tc_matmul_fits`] says where it runs; elsewhere the model keeps candle's matmul.

use candle_core::{DType, Device, Result, Tensor};

/// Most rows the kernel takes (eight tiles of eight rows of x per warp).
pub const TC_MATMUL_MAX_ROWS: usize = 64;

/// Whether [`tc_matmul`] takes `x` `[rows, k]` by `w` `[n, k]` on `device`: a CUDA device of
/// compute capability 9 or later with the kernels built for it, bf16 or f16, 1 to
/// [`TC_MATMUL_MAX_ROWS`] rows, `n` a multiple of 64, and `k` a multiple of 64 that a cluster of
/// at most 8 blocks cuts into slices of at most 512.
pub fn tc_matmul_fits(device: &Device, dtype: DType, rows: usize, n: usize, k: usize) -> bool {
    fits(device, dtype, rows, n, k, false)
}

/// Whether [`tc_matmul_swiglu`] takes `x` `[rows, k]` by the gate/up pair `w` `[2 n, k]`: as
/// [`tc_matmul_fits`], with `n` a multiple of 32.
pub fn tc_matmul_swiglu_fits(
    device: &Device,
    dtype: DType,
    rows: usize,
    n: usize,
    k: usize,
) -> bool {
    fits(device, dtype, rows, n, k, true)
}

fn fits(device: &Device, dtype: DType, rows: usize, n: usize, k: usize, swiglu: bool) -> bool {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => crate::cuda::tc_matmul_fits(d, dtype, rows, n, k, swiglu),
        _ => {
            let _ = (dtype, rows, n, k, swiglu);
            false
        }
    }
}

/// `x` `[rows, k]` times `w` `[n, k]` transposed: `[rows, n]`, accumulated in f32, where
/// [`tc_matmul_fits`]; an error naming what does not fit otherwise.
pub fn tc_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    tc_matmul_op(x, w, false)
}

/// The gate and up projections and the SwiGLU gate in one kernel: `w` is `[2 n, k]`, gate rows
/// then up rows; the result `[rows, n]` is `silu(x @ gate^T) * (x @ up^T)` from the f32 sums,
/// where [`tc_matmul_swiglu_fits`].
pub fn tc_matmul_swiglu(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    tc_matmul_op(x, w, true)
}

fn tc_matmul_op(x: &Tensor, w: &Tensor, swiglu: bool) -> Result<Tensor> {
    let (rows, k) = x.dims2()?;
    let (wn, wk) = w.dims2()?;
    let n = if swiglu { wn / 2 } else { wn };
    let halves = !swiglu || wn % 2 == 0;
    if wk != k
        || x.dtype() != w.dtype()
        || !halves
        || !fits(x.device(), x.dtype(), rows, n, k, swiglu)
    {
        candle_core::bail!(
            "tc_matmul: x {:?} {:?} and w {:?} {:?} on {:?} do not fit (a GPU of compute capability 9+, bf16 or f16, 1-{TC_MATMUL_MAX_ROWS} rows, n and k multiples of 64; gate/up halves of 32s for swiglu)",
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
            .apply_op2_no_bwd(&w.contiguous()?, &TcMatmul { swiglu })
    }
    #[cfg(not(feature = "cuda"))]
    unreachable!("tc_matmul_fits is false without the cuda feature")
}

/// The CUDA side (cuda/tc_matmul.rs); [`tc_matmul`] lets no other device reach it.
#[cfg(feature = "cuda")]
struct TcMatmul {
    swiglu: bool,
}

#[cfg(feature = "cuda")]
impl candle_core::CustomOp2 for TcMatmul {
    fn name(&self) -> &'static str {
        "tc-matmul"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        candle_core::bail!("tc_matmul runs on CUDA devices only (tc_matmul_fits)")
    }

    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &candle_core::Layout,
        w: &candle_core::CudaStorage,
        wl: &candle_core::Layout,
    ) -> Result<(candle_core::CudaStorage, candle_core::Shape)> {
        crate::cuda::tc_matmul(x, xl, w, wl, self.swiglu)
    }
}
