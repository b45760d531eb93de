//! Writing host data into a tensor that keeps its address: the fixed input buffer a CUDA graph
//! reads is refilled before each replay instead of being reallocated.

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Result, Tensor};

struct WriteU32<'a> {
    at: usize,
    data: &'a [u32],
}

/// Copies `data` into the contiguous `u32` tensor `dst` from element `at` on, in place.
pub fn write_u32(dst: &Tensor, at: usize, data: &[u32]) -> Result<()> {
    if dst.dtype() != DType::U32 || !dst.is_contiguous() || at + data.len() > dst.elem_count() {
        candle_core::bail!(
            "write_u32: {} values at {at} do not fit a contiguous u32 tensor of {} ({:?})",
            data.len(),
            dst.elem_count(),
            dst.dtype()
        );
    }
    if data.is_empty() {
        return Ok(());
    }
    dst.inplace_op1(&WriteU32 { at, data })
}

impl InplaceOp1 for WriteU32<'_> {
    fn name(&self) -> &'static str {
        "write-u32"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let CpuStorage::U32(v) = s else {
            candle_core::bail!("write_u32: not a u32 tensor")
        };
        let start = l.start_offset() + self.at;
        v[start..start + self.data.len()].copy_from_slice(self.data);
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &mut candle_core::CudaStorage, l: &Layout) -> Result<()> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::WrapErr;
        let stream = s.device().cuda_stream();
        let start = l.start_offset() + self.at;
        let mut dst = s
            .as_cuda_slice_mut::<u32>()?
            .slice_mut(start..start + self.data.len());
        // Pageable host memory: the call returns once the data is staged, and the copy is
        // ordered on the stream after earlier work (an earlier replay reading the buffer).
        stream.memcpy_htod(self.data, &mut dst).w()
    }
}
