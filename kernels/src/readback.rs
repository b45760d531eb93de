//! Reading a step's sampled tokens back to the host without holding up the device's queue: the
//! copy goes into page-locked memory, so work queued after it (the next step, launched before
//! the host has these tokens) runs on while the host waits for the copy alone. A plain read
//! (`Tensor::to_vec1`) copies into pageable memory, which waits for everything queued before it
//! returns, the next step included.

#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc;
use candle_core::{DType, Result, Tensor};

/// A reusable page-locked buffer for one read at a time.
#[derive(Default)]
pub struct Readback {
    /// The page-locked buffer, and the event recorded after each copy into it (the buffer's
    /// own event would wait with a blocking sync).
    #[cfg(feature = "cuda")]
    pinned: Option<(
        cudarc::driver::PinnedHostSlice<u32>,
        cudarc::driver::CudaEvent,
    )>,
    pending: Option<Pending>,
}

enum Pending {
    /// Read already (the CPU, where there is no queue).
    Host(Vec<u32>),
    /// Elements queued into the pinned buffer.
    #[cfg(feature = "cuda")]
    Pinned(usize),
}

impl Readback {
    /// Queues the copy of `t`, a contiguous `u32` vector; [`Readback::finish`] returns it.
    pub fn start(&mut self, t: &Tensor) -> Result<()> {
        if self.pending.is_some() {
            candle_core::bail!("readback: a read is already pending");
        }
        if t.dtype() != DType::U32 || t.rank() != 1 || !t.is_contiguous() {
            candle_core::bail!(
                "readback: wants a contiguous u32 vector, got {:?} {:?}",
                t.dims(),
                t.dtype()
            );
        }
        self.pending = Some(match t.device() {
            #[cfg(feature = "cuda")]
            candle_core::Device::Cuda(_) => Pending::Pinned(self.queue(t)?),
            _ => Pending::Host(t.to_vec1::<u32>()?),
        });
        Ok(())
    }

    /// Waits for the copy [`Readback::start`] queued, and returns the values.
    pub fn finish(&mut self) -> Result<Vec<u32>> {
        match self.pending.take() {
            None => candle_core::bail!("readback: no read is pending"),
            Some(Pending::Host(v)) => Ok(v),
            #[cfg(feature = "cuda")]
            Some(Pending::Pinned(n)) => {
                use candle_core::cuda_backend::WrapErr;
                let (pinned, copied) = self.pinned.as_ref().expect("queued into it");
                copied.synchronize().w()?;
                Ok(pinned.as_slice().w()?[..n].to_vec())
            }
        }
    }

    #[cfg(feature = "cuda")]
    fn queue(&mut self, t: &Tensor) -> Result<usize> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::WrapErr;
        let (storage, layout) = t.storage_and_layout();
        let candle_core::Storage::Cuda(cs) = &*storage else {
            candle_core::bail!("readback: not a CUDA tensor")
        };
        let n = layout.shape().elem_count();
        let stream = cs.device().cuda_stream();
        if self.pinned.as_ref().is_none_or(|(p, _)| p.len() < n) {
            let ctx = stream.context();
            // SAFETY: page-locked memory the driver leaves unset; only the first n elements a
            // copy wrote are ever read (finish).
            let pinned = unsafe { ctx.alloc_pinned_with_flags::<u32>(n.max(256), 0) }.w()?;
            self.pinned = Some((pinned, ctx.new_event(None).w()?));
        }
        let src = cs
            .as_cuda_slice::<u32>()?
            .slice(layout.start_offset()..layout.start_offset() + n);
        let (pinned, copied) = self.pinned.as_mut().expect("allocated above");
        // The buffer's own event is never recorded, so this waits for nothing; as a plain slice
        // of page-locked memory the copy stays asynchronous, and copies n elements (cudarc
        // copies as many as the destination holds).
        let dst = &mut pinned.as_mut_slice().w()?[..n];
        stream.memcpy_dtoh(&src, dst).w()?;
        copied.record(&stream).w()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn one_read_at_a_time_of_a_u32_vector() {
        let mut r = Readback::default();
        assert!(r.finish().unwrap_err().to_string().contains("no read is pending"));
        r.start(&Tensor::new(&[3u32, 1, 4], &Device::Cpu).unwrap()).unwrap();
        let again = r.start(&Tensor::new(&[1u32], &Device::Cpu).unwrap());
        assert!(again.unwrap_err().to_string().contains("already pending"));
        assert_eq!(r.finish().unwrap(), [3, 1, 4]);
        let floats = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        assert!(r.start(&floats).unwrap_err().to_string().contains("u32 vector"));
        r.start(&Tensor::new(&[9u32], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(r.finish().unwrap(), [9]);
    }
}
