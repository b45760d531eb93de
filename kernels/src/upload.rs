//! Writing into a tensor that keeps its address: the fixed input buffer a CUDA graph reads is
//! refilled before each replay instead of being reallocated, from the host ([`write_u32`]) or,
//! for tokens sampled on the device, from another tensor ([`copy_u32`]).

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Result, Tensor};

struct WriteU32<'a> {
    at: usize,
    data: &'a [u32],
}

/// Copies `data` into the contiguous `u32` tensor `dst` from element `at` on, in place.
pub fn write_u32(dst: &Tensor, at: usize, data: &[u32]) -> Result<()> {
    if dst.dtype() != DType::U32 || !dst.is_contiguous() || at + data.len() > dst.elem_count() {
        candle_core::bail!("write_u32: {} values at {at} do not fit a contiguous u32 tensor of {} ({:?})", data.len(), dst.elem_count(), dst.dtype());
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
        let CpuStorage::U32(v) = s else { candle_core::bail!("write_u32: not a u32 tensor") };
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
        let mut dst = s.as_cuda_slice_mut::<u32>()?.slice_mut(start..start + self.data.len());
        // Pageable host memory: the call returns once the data is staged, and the copy is
        // ordered on the stream after earlier work (an earlier replay reading the buffer).
        stream.memcpy_htod(self.data, &mut dst).w()
    }
}

struct CopyU32 {
    at: usize,
}

/// Copies the contiguous `u32` tensor `src` into `dst` from element `at` on, in place, queued on
/// the device after the work that writes `src`: a step launched before the host has read the
/// tokens the step before sampled takes them this way.
pub fn copy_u32(dst: &Tensor, at: usize, src: &Tensor) -> Result<()> {
    let fits = |t: &Tensor| t.dtype() == DType::U32 && t.is_contiguous();
    if !fits(dst) || !fits(src) || at + src.elem_count() > dst.elem_count() || !dst.device().same_device(src.device()) {
        candle_core::bail!(
            "copy_u32: {} values ({:?}) at {at} do not fit a contiguous u32 tensor of {} ({:?}) on the same device",
            src.elem_count(),
            src.dtype(),
            dst.elem_count(),
            dst.dtype()
        );
    }
    if src.elem_count() == 0 {
        return Ok(());
    }
    dst.inplace_op2(src, &CopyU32 { at })
}

impl InplaceOp2 for CopyU32 {
    fn name(&self) -> &'static str {
        "copy-u32"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (CpuStorage::U32(dst), CpuStorage::U32(src)) = (s1, s2) else { candle_core::bail!("copy_u32: not u32 tensors") };
        let (start, n) = (l1.start_offset() + self.at, l2.shape().elem_count());
        dst[start..start + n].copy_from_slice(&src[l2.start_offset()..l2.start_offset() + n]);
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &mut candle_core::CudaStorage, l1: &Layout, s2: &candle_core::CudaStorage, l2: &Layout) -> Result<()> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::WrapErr;
        let stream = s1.device().cuda_stream();
        let (start, n) = (l1.start_offset() + self.at, l2.shape().elem_count());
        let src = s2.as_cuda_slice::<u32>()?.slice(l2.start_offset()..l2.start_offset() + n);
        let mut dst = s1.as_cuda_slice_mut::<u32>()?.slice_mut(start..start + n);
        stream.memcpy_dtod(&src, &mut dst).w()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn copy_u32_writes_in_place_at_an_offset_and_refuses_what_does_not_fit() {
        let dst = Tensor::zeros(5, DType::U32, &Device::Cpu).unwrap();
        copy_u32(&dst, 1, &Tensor::new(&[4u32, 5], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(dst.to_vec1::<u32>().unwrap(), [0, 4, 5, 0, 0]);
        let three = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
        assert!(copy_u32(&dst, 3, &three).unwrap_err().to_string().contains("do not fit"));
        assert!(copy_u32(&dst, 0, &three.to_dtype(DType::F32).unwrap()).is_err());
    }
}
