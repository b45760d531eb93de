//! The CUDA side of [`crate::StepStage`]: page-locked host buffers mapped into the device's
//! address space, and the one kernel (stage.cuh) that moves a step's inputs and tokens.

use super::kernel;
use super::launch::Launch;
use crate::elem::contiguous_range;
use candle_core::cuda_backend::cudarc::driver::{
    sys, CudaEvent, CudaStream, LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{Result, Storage, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// Page-locked host memory the device reads and writes in place (over the bus).
struct Mapped {
    host: PinnedHostSlice<u32>,
    dev: u64,
}

impl Mapped {
    fn new(stream: &Arc<CudaStream>, len: usize) -> Result<Mapped> {
        let ctx = stream.context();
        // SAFETY: page-locked memory the driver leaves unset, zeroed before any use (an image's
        // gaps between pieces are copied as they are).
        let mut host =
            unsafe { ctx.alloc_pinned_with_flags::<u32>(len, sys::CU_MEMHOSTALLOC_DEVICEMAP) }
                .w()?;
        host.as_mut_slice().w()?.fill(0);
        let mut dev = 0u64;
        // SAFETY: the pointer is the start of the live allocation above, mapped by its flag.
        unsafe {
            sys::cuMemHostGetDevicePointer_v2(
                &mut dev,
                host.as_mut_ptr().w()? as *mut std::ffi::c_void,
                0,
            )
        }
        .result()
        .w()?;
        Ok(Mapped { host, dev })
    }
}

/// Two images, each with the event recorded after the last kernel that read it, so that the
/// host fills one while the kernel of the step before may still read the other; and the
/// tokens' way back.
#[derive(Default)]
pub(crate) struct PinnedStage {
    images: Vec<(Mapped, CudaEvent)>,
    next: usize,
    back: Option<Mapped>,
    /// The image whose event follows the last launch.
    last: Option<usize>,
}

impl PinnedStage {
    /// Queues the kernel that writes `ints` at `pieces` and `tokens` at the front of `dst`
    /// (checked by the caller); returns how many tokens it also copies back.
    pub(crate) fn stage(
        &mut self,
        dst: &Tensor,
        ints: &[u32],
        pieces: &[(Range<usize>, usize)],
        tokens: Option<&Tensor>,
    ) -> Result<usize> {
        let n = tokens.map_or(0, |t| t.elem_count());
        let len = pieces
            .iter()
            .map(|(r, at)| at + r.len())
            .max()
            .unwrap_or(0)
            .max(n);
        if len == 0 {
            return Ok(0);
        }
        let (ds, dl) = dst.storage_and_layout();
        let Storage::Cuda(dc) = &*ds else {
            candle_core::bail!("stage: the buffer is not on the GPU")
        };
        let dev = dc.device.clone();
        let stream = dev.cuda_stream();
        let grow_images = self.images.first().is_none_or(|(m, _)| m.host.len() < len);
        if grow_images || self.back.as_ref().is_none_or(|m| m.host.len() < n) {
            for (_, done) in &self.images {
                done.synchronize().w()?; // no kernel touches a buffer that is freed
            }
        }
        if grow_images {
            // As long as the whole buffer: a step's extent grows with its contexts (by a slot a
            // sequence each decode step), and page-locked allocations cost a millisecond and
            // more (each step at batch 64 on an H200 when they followed the extent).
            let (ctx, cap) = (stream.context(), dst.elem_count().max(len));
            self.images = vec![
                (Mapped::new(&stream, cap)?, ctx.new_event(None).w()?),
                (Mapped::new(&stream, cap)?, ctx.new_event(None).w()?),
            ];
        }
        if self.back.as_ref().is_none_or(|m| m.host.len() < n) {
            self.back = Some(Mapped::new(&stream, n.max(256))?);
        }
        let (image, done) = &mut self.images[self.next];
        done.synchronize().w()?; // the kernel that last read this image has run
                                 // The slice's own event is never recorded: this waits for nothing.
        let host = image.host.as_mut_slice().w()?;
        for (r, at) in pieces {
            host[*at..at + r.len()].copy_from_slice(&ints[r.clone()]);
        }
        let (d0, d1) = contiguous_range(dl, "the step buffer")?;
        let out = dc.as_cuda_slice::<u32>()?.slice(d0..d1);
        let back = self.back.as_ref().expect("allocated above");
        let func = kernel(&dev, "stage_step", 0)?;
        let per_block = 256 * 8; // stage.cuh: STAGE_PER elements a thread
        let cfg = LaunchConfig {
            grid_dim: (len.div_ceil(per_block) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = Launch::new(&stream, &func);
        b.arg(&out).arg(&image.dev).arg(&(len as u32));
        let token_storage = tokens.map(|t| t.storage_and_layout());
        let token_view = match &token_storage {
            Some((ts, tl)) => {
                let Storage::Cuda(tc) = &**ts else {
                    candle_core::bail!("stage: the tokens are not on the GPU")
                };
                let (t0, t1) = contiguous_range(tl, "the tokens")?;
                Some(tc.as_cuda_slice::<u32>()?.slice(t0..t1))
            }
            None => None,
        };
        match &token_view {
            Some(view) => b.arg(view).arg(&(n as u32)).arg(&back.dev),
            None => b.arg(&0u64).arg(&0u32).arg(&0u64), // no tokens: null pointers, none to copy
        };
        // SAFETY: dst holds len >= n elements (the caller checked every piece and the tokens
        // fit), the image len, back n; the kernel touches no more.
        unsafe { b.launch(cfg) }?;
        done.record(&stream).w()?;
        self.last = Some(self.next);
        self.next = 1 - self.next;
        Ok(n)
    }

    /// The `n` tokens the last launch copied back, once it has run.
    pub(crate) fn read(&mut self, n: usize) -> Result<Vec<u32>> {
        let (Some(last), Some(back)) = (self.last, self.back.as_ref()) else {
            candle_core::bail!("stage: nothing was staged")
        };
        self.images[last].1.synchronize().w()?;
        Ok(back.host.as_slice().w()?[..n].to_vec())
    }
}
