//! A step's integer inputs into the fixed buffer a CUDA graph reads (refilled before each
//! replay, never reallocated), together with the tokens the step before sampled, which may
//! still be on the device, and those tokens' way back to the host.
//!
//! On the GPU this is one kernel queued before the graph: it reads the inputs from page-locked
//! host memory over the bus, takes the tokens from the device, and writes the tokens back into
//! page-locked memory as well. Three copies (the inputs up, the tokens across, the tokens down)
//! were three hand-offs between the copy engine and the SMs between one step's sampling and the
//! next step's first kernel, where the device stood idle about 29 us a step at batch 64 on an
//! H200 (results/gpu-h200-2026-11-28-async-launch/call5/timeline/). Work queued after the
//! kernel (the next step) runs on while the host waits for the tokens.

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Result, Tensor};
use std::ops::Range;

/// Stages one step at a time; its tokens are read once ([`StepStage::tokens`]) before the next
/// step with tokens is staged.
#[derive(Default)]
pub struct StepStage {
    #[cfg(feature = "cuda")]
    cuda: crate::cuda::PinnedStage,
    pending: Option<Pending>,
}

enum Pending {
    /// Read already (the CPU, where there is no queue).
    Host(Vec<u32>),
    /// Tokens the kernel copies back.
    #[cfg(feature = "cuda")]
    Device(usize),
}

impl StepStage {
    /// Writes `ints[range]` at `at` of `dst` (a contiguous `u32` tensor) for each (range, at) of
    /// `pieces`, then `tokens` (a contiguous `u32` vector on dst's device), if any, at its
    /// front, queued after the work queued before on dst's device; the tokens come back through
    /// [`StepStage::tokens`]. The rest of `dst` is left as it is, or (on the GPU, between pieces)
    /// filled with what an earlier step staged there.
    pub fn stage(
        &mut self,
        dst: &Tensor,
        ints: &[u32],
        pieces: &[(Range<usize>, usize)],
        tokens: Option<&Tensor>,
    ) -> Result<()> {
        if tokens.is_some() && self.pending.is_some() {
            candle_core::bail!(
                "stage: the tokens staged before were not read yet (StepStage::tokens)"
            );
        }
        if dst.dtype() != DType::U32 || !dst.is_contiguous() {
            candle_core::bail!(
                "stage: the step buffer must be a contiguous u32 tensor, got {:?}",
                dst.dtype()
            );
        }
        if let Some((r, at)) = pieces.iter().find(|(r, at)| {
            r.end > ints.len() || r.start > r.end || at + r.len() > dst.elem_count()
        }) {
            candle_core::bail!(
                "stage: {r:?} of {} values at {at} do not fit a buffer of {}",
                ints.len(),
                dst.elem_count()
            );
        }
        if let Some(t) = tokens {
            if t.dtype() != DType::U32
                || t.rank() != 1
                || !t.is_contiguous()
                || t.elem_count() > dst.elem_count()
                || !t.device().same_device(dst.device())
            {
                candle_core::bail!("stage: {:?} tokens ({:?}) do not fit the front of a u32 buffer of {} on the same device", t.dims(), t.dtype(), dst.elem_count());
            }
        }
        match dst.device() {
            #[cfg(feature = "cuda")]
            candle_core::Device::Cuda(_) => {
                let n = self.cuda.stage(dst, ints, pieces, tokens)?;
                if tokens.is_some() {
                    // No tokens, no kernel to wait for (and perhaps none launched at all).
                    self.pending = Some(if n == 0 {
                        Pending::Host(Vec::new())
                    } else {
                        Pending::Device(n)
                    });
                }
            }
            _ => {
                let front = tokens
                    .map(|t| t.to_vec1::<u32>())
                    .transpose()?
                    .unwrap_or_default();
                dst.inplace_op1(&HostWrite {
                    ints,
                    pieces,
                    front: &front,
                })?;
                if tokens.is_some() {
                    self.pending = Some(Pending::Host(front));
                }
            }
        }
        Ok(())
    }

    /// The tokens the last [`StepStage::stage`] took, on the host once that kernel has run (not
    /// what is queued after it).
    pub fn tokens(&mut self) -> Result<Vec<u32>> {
        match self.pending.take() {
            None => candle_core::bail!("stage: no tokens were staged since the last read"),
            Some(Pending::Host(v)) => Ok(v),
            #[cfg(feature = "cuda")]
            Some(Pending::Device(n)) => self.cuda.read(n),
        }
    }
}

/// The CPU's staging: the pieces, then the tokens at the front.
struct HostWrite<'a> {
    ints: &'a [u32],
    pieces: &'a [(Range<usize>, usize)],
    front: &'a [u32],
}

impl InplaceOp1 for HostWrite<'_> {
    fn name(&self) -> &'static str {
        "stage"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let CpuStorage::U32(v) = s else {
            candle_core::bail!("stage: not a u32 tensor")
        };
        let v = &mut v[l.start_offset()..];
        for (r, at) in self.pieces {
            v[*at..at + r.len()].copy_from_slice(&self.ints[r.clone()]);
        }
        v[..self.front.len()].copy_from_slice(self.front);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pieces_then_tokens_in_place_and_the_tokens_read_once() {
        let dst = Tensor::zeros(8, DType::U32, &Device::Cpu).unwrap();
        let mut stage = StepStage::default();
        let ints = [1u32, 2, 3, 4, 5];
        stage
            .stage(&dst, &ints, &[(0..3, 0), (3..5, 6)], None)
            .unwrap();
        assert_eq!(dst.to_vec1::<u32>().unwrap(), [1, 2, 3, 0, 0, 0, 4, 5]);
        assert!(stage
            .tokens()
            .unwrap_err()
            .to_string()
            .contains("no tokens"));
        let tokens = Tensor::new(&[7u32, 8], &Device::Cpu).unwrap();
        stage
            .stage(&dst, &ints, &[(0..3, 0)], Some(&tokens))
            .unwrap();
        assert_eq!(dst.to_vec1::<u32>().unwrap(), [7, 8, 3, 0, 0, 0, 4, 5]);
        let again = stage.stage(&dst, &ints, &[], Some(&tokens));
        assert!(again.unwrap_err().to_string().contains("not read yet"));
        assert_eq!(stage.tokens().unwrap(), [7, 8]);
        assert!(stage
            .stage(&dst, &ints, &[(2..5, 6)], None)
            .unwrap_err()
            .to_string()
            .contains("do not fit"));
        let floats = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        assert!(stage.stage(&dst, &ints, &[], Some(&floats)).is_err());
    }
}
