//! Qwen3's per-head RMSNorm followed by RoPE, fused: one pass over the projected queries or
//! keys instead of two kernels each (decode at small batch is bound by kernel count).

use crate::elem::{unsupported, Elem};
use candle_core::{backend::BackendStorage, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// `x` is `[tokens, heads * head_dim]` (rows may be strided, e.g. a column slice of a fused
/// QKV projection); `weight` is the norm's `[head_dim]`; `cos_sin` is `[tokens, head_dim]`, the
/// cos rows then the sin rows of each token's position (`head_dim / 2` each). Returns
/// `[tokens, heads, head_dim]`: `rope(rms_norm(x) * weight)`, rotating the two halves of each
/// head (candle's non-interleaved `rope`), all in f32.
pub fn rms_norm_rope(
    x: &Tensor,
    heads: usize,
    weight: &Tensor,
    cos_sin: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let (tokens, width) = x.dims2()?;
    let head_dim = weight.dims1()?;
    if width != heads * head_dim || cos_sin.dims() != [tokens, head_dim] || head_dim % 2 != 0 {
        candle_core::bail!(
            "rms_norm_rope: x {:?}, {heads} heads, weight {:?}, cos_sin {:?} do not fit",
            x.dims(),
            weight.dims(),
            cos_sin.dims()
        );
    }
    if x.stride()[1] != 1 {
        candle_core::bail!("rms_norm_rope: rows of x must be contiguous");
    }
    let out = x.apply_op3_no_bwd(
        &weight.contiguous()?,
        &cos_sin.contiguous()?,
        &RmsNormRope { heads, eps },
    )?;
    out.reshape((tokens, heads, head_dim))
}

pub struct RmsNormRope {
    pub(crate) heads: usize,
    pub(crate) eps: f32,
}

/// The rows of a 2-D layout: (offset of row 0, row stride).
pub(crate) fn rows_of(l: &Layout) -> (usize, usize) {
    (l.start_offset(), l.stride()[0])
}

impl RmsNormRope {
    fn run<T: Elem>(
        &self,
        x: &[T],
        (x0, xs): (usize, usize),
        w: &[T],
        cs: &[T],
        tokens: usize,
    ) -> Vec<T> {
        let d = w.len();
        let half = d / 2;
        let mut out = vec![T::from_f32(0.0); tokens * self.heads * d];
        let mut n = vec![0f32; d];
        for t in 0..tokens {
            let (cos, sin) = cs[t * d..(t + 1) * d].split_at(half);
            for h in 0..self.heads {
                let src = &x[x0 + t * xs + h * d..][..d];
                let ms = src.iter().map(|v| v.to_f32() * v.to_f32()).sum::<f32>() / d as f32;
                let r = 1.0 / (ms + self.eps).sqrt();
                for i in 0..d {
                    n[i] = src[i].to_f32() * r * w[i].to_f32();
                }
                let dst = &mut out[(t * self.heads + h) * d..][..d];
                for i in 0..half {
                    let (c, s) = (cos[i].to_f32(), sin[i].to_f32());
                    dst[i] = T::from_f32(n[i] * c - n[i + half] * s);
                    dst[i + half] = T::from_f32(n[i] * s + n[i + half] * c);
                }
            }
        }
        out
    }
}

impl CustomOp3 for RmsNormRope {
    fn name(&self) -> &'static str {
        "rms-norm-rope"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
        cs: &CpuStorage,
        csl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let tokens = xl.dims()[0];
        let shape = Shape::from((tokens, xl.dims()[1]));
        let (w0, w1) = wl.contiguous_offsets().expect("made contiguous");
        let (c0, c1) = csl.contiguous_offsets().expect("made contiguous");
        let out = match (x, w, cs) {
            (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(c)) => {
                CpuStorage::F32(self.run(x, rows_of(xl), &w[w0..w1], &c[c0..c1], tokens))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(w), CpuStorage::BF16(c)) => {
                CpuStorage::BF16(self.run(x, rows_of(xl), &w[w0..w1], &c[c0..c1], tokens))
            }
            (CpuStorage::F16(x), CpuStorage::F16(w), CpuStorage::F16(c)) => {
                CpuStorage::F16(self.run(x, rows_of(xl), &w[w0..w1], &c[c0..c1], tokens))
            }
            (x, _, _) => return Err(unsupported("rms_norm_rope", x.dtype())),
        };
        Ok((out, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
        cs: &candle_core::CudaStorage,
        csl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::rms_norm_rope(self, x, xl, w, wl, cs, csl)
    }
}
