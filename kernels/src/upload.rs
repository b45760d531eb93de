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
        if pinned_upload() {
            return pinned::upload(&stream, self.data, &mut dst);
        }
        // Pageable host memory: the call returns once the data is staged, and the copy is
        // ordered on the stream after earlier work (an earlier replay reading the buffer).
        stream.memcpy_htod(self.data, &mut dst).w()
    }
}

/// Whether uploads go through a pinned staging buffer (`NANOHOST_PINNED_UPLOAD`, default on):
/// a pageable copy of a batch-64 step's ~100 KB of metadata kept the host 9-29 us on H200
/// machines, before each graph launch.
#[cfg(feature = "cuda")]
fn pinned_upload() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    crate::knob::switch(&ON, "NANOHOST_PINNED_UPLOAD", true)
}

/// One page-locked staging buffer per device: the data is copied into it and the driver copies
/// it to the device asynchronously; the next upload waits for that copy (an event) before it
/// overwrites the buffer.
#[cfg(feature = "cuda")]
mod pinned {
    use candle_core::cuda_backend::cudarc::driver::{result, CudaEvent, CudaStream, CudaViewMut, DevicePtrMut, PinnedHostSlice};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::Result;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    struct Staging {
        buf: PinnedHostSlice<u32>,
        /// Recorded after the last copy out of `buf`.
        copied: CudaEvent,
    }

    pub fn upload(stream: &Arc<CudaStream>, data: &[u32], dst: &mut CudaViewMut<u32>) -> Result<()> {
        static STAGING: OnceLock<Mutex<HashMap<usize, Staging>>> = OnceLock::new();
        let mut map = STAGING.get_or_init(Default::default).lock().expect("pinned staging");
        let ctx = stream.context();
        let ordinal = ctx.ordinal();
        if map.get(&ordinal).is_none_or(|s| s.buf.len() < data.len()) {
            if let Some(old) = map.remove(&ordinal) {
                old.copied.synchronize().w()?;
            }
            // SAFETY: written below before any copy reads it.
            let buf = unsafe { ctx.alloc_pinned_with_flags::<u32>(data.len().next_power_of_two().max(1 << 16), 0) }.w()?;
            map.insert(ordinal, Staging { buf, copied: ctx.new_event(None).w()? });
        }
        let staging = map.get_mut(&ordinal).expect("inserted above");
        staging.copied.synchronize().w()?;
        let host = &mut staging.buf.as_mut_slice().w()?[..data.len()];
        host.copy_from_slice(data);
        let (ptr, _record) = dst.device_ptr_mut(stream);
        // SAFETY: `host` is page-locked and outlives the copy (the next upload waits for
        // `copied`; dropping the buffer waits too); `ptr` holds `data.len()` u32s.
        unsafe { result::memcpy_htod_async(ptr, host, stream.cu_stream()) }.w()?;
        staging.copied.record(stream).w()
    }
}
