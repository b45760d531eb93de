//! The residual add and the RMSNorm after it, fused: a transformer layer ends with
//! `x = x + delta` followed by the next norm of `x`; one pass reads both inputs once and writes
//! the new residual and its normed copy.

use crate::elem::{unsupported, Elem};
use candle_core::{backend::BackendStorage, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// `(x + delta, rms_norm(x + delta) * weight)` for `[tokens, hidden]` rows. The sum is rounded
/// to the storage type before it is normed, so the result equals a separate add then norm.
pub fn add_rms_norm(
    x: &Tensor,
    delta: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let (tokens, hidden) = x.dims2()?;
    if delta.dims() != x.dims()
        || weight.dims() != [hidden]
        || x.dtype() != delta.dtype()
        || x.dtype() != weight.dtype()
    {
        candle_core::bail!(
            "add_rms_norm: x {:?} {:?}, delta {:?} {:?}, weight {:?} do not fit",
            x.dims(),
            x.dtype(),
            delta.dims(),
            delta.dtype(),
            weight.dims()
        );
    }
    let both = x.contiguous()?.apply_op3_no_bwd(
        &delta.contiguous()?,
        &weight.contiguous()?,
        &AddRmsNorm { eps },
    )?;
    Ok((both.narrow(0, 0, tokens)?, both.narrow(0, tokens, tokens)?))
}

pub struct AddRmsNorm {
    pub(crate) eps: f32,
}

impl AddRmsNorm {
    fn run<T: Elem>(&self, x: &[T], d: &[T], w: &[T]) -> Vec<T> {
        let hidden = w.len();
        let tokens = x.len() / hidden;
        let mut out = vec![T::from_f32(0.0); 2 * x.len()];
        let (sums, normed) = out.split_at_mut(x.len());
        for t in 0..tokens {
            let row = t * hidden..(t + 1) * hidden;
            for ((s, a), b) in sums[row.clone()]
                .iter_mut()
                .zip(&x[row.clone()])
                .zip(&d[row.clone()])
            {
                *s = T::from_f32(a.to_f32() + b.to_f32());
            }
            rms_norm_row(&sums[row.clone()], w, self.eps, &mut normed[row]);
        }
        out
    }
}

/// `dst = rms_norm(src) * w` for one row, in f32 (the CPU side of the fused norms).
pub(crate) fn rms_norm_row<T: Elem>(src: &[T], w: &[T], eps: f32, dst: &mut [T]) {
    let ms = src.iter().map(|v| v.to_f32() * v.to_f32()).sum::<f32>() / src.len() as f32;
    let r = 1.0 / (ms + eps).sqrt();
    for ((n, s), w) in dst.iter_mut().zip(src).zip(w) {
        *n = T::from_f32(s.to_f32() * r * w.to_f32());
    }
}

impl CustomOp3 for AddRmsNorm {
    fn name(&self) -> &'static str {
        "add-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        d: &CpuStorage,
        dl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (tokens, hidden) = xl.shape().dims2()?;
        let r = |l: &Layout| l.contiguous_offsets().expect("made contiguous");
        let ((x0, x1), (d0, d1), (w0, w1)) = (r(xl), r(dl), r(wl));
        let out = match (x, d, w) {
            (CpuStorage::F32(x), CpuStorage::F32(d), CpuStorage::F32(w)) => {
                CpuStorage::F32(self.run(&x[x0..x1], &d[d0..d1], &w[w0..w1]))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(d), CpuStorage::BF16(w)) => {
                CpuStorage::BF16(self.run(&x[x0..x1], &d[d0..d1], &w[w0..w1]))
            }
            (CpuStorage::F16(x), CpuStorage::F16(d), CpuStorage::F16(w)) => {
                CpuStorage::F16(self.run(&x[x0..x1], &d[d0..d1], &w[w0..w1]))
            }
            (x, _, _) => return Err(unsupported("add_rms_norm", x.dtype())),
        };
        Ok((out, Shape::from((2 * tokens, hidden))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        d: &candle_core::CudaStorage,
        dl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::add_rms_norm(self, x, xl, d, dl, w, wl)
    }
}
