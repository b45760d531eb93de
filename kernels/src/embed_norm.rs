//! A step's first kernel on the GPU: each token's embedding row, the first layer's input
//! RMSNorm of it, and its position's RoPE row, in one launch. Apart they were three of candle's
//! kernels (two `index_select`s and `rms_norm`), none of which may launch early under PDL: 15 us
//! of a replayed batch-64 step on an H200, 7 of them idle before the gathers
//! (results/gpu-h200-2026-11-29-sampling/). The model keeps candle's three ops on the CPU, whose
//! results the CPU tests pin; this op's CPU side is the reference the GPU test compares with.

use crate::add_norm::rms_norm_row;
use crate::elem::{unsupported, Elem};
use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor,
};

/// `(x, h, cos_sin)` for a step's tokens: `x = embed[ids]` (`[tokens, hidden]`), `h` its RMSNorm
/// times `weight`, and `cos_sin = rope[positions]` (`[tokens, head_dim]`, the rows of
/// [`crate::rms_norm_rope`]'s table). `ids_positions` is `[2 tokens]` u32: the ids, then the
/// positions. Ids and positions must be in range (the host checks them); on the GPU one out of
/// range reads as a row of zeros, never past the tables.
pub fn embed_rms_norm_rope(
    embed: &Tensor,
    ids_positions: &Tensor,
    weight: &Tensor,
    rope: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, hidden) = embed.dims2()?;
    let (_, head_dim) = rope.dims2()?;
    let n = ids_positions.dims1()?;
    if n % 2 != 0
        || ids_positions.dtype() != candle_core::DType::U32
        || weight.dims() != [hidden]
        || weight.dtype() != embed.dtype()
        || rope.dtype() != embed.dtype()
    {
        candle_core::bail!(
            "embed_rms_norm_rope: embed {:?} {:?}, ids and positions {:?} {:?}, weight {:?} {:?}, rope {:?} {:?} do not fit",
            embed.dims(), embed.dtype(), ids_positions.dims(), ids_positions.dtype(), weight.dims(), weight.dtype(), rope.dims(), rope.dtype()
        );
    }
    let tokens = n / 2;
    let op = EmbedRmsNormRope {
        rope: rope.contiguous()?,
        eps,
    };
    let all = embed.contiguous()?.apply_op3_no_bwd(
        &ids_positions.contiguous()?,
        &weight.contiguous()?,
        &op,
    )?;
    let rows = all
        .narrow(0, 0, 2 * tokens * hidden)?
        .reshape((2 * tokens, hidden))?;
    let cos_sin = all
        .narrow(0, 2 * tokens * hidden, tokens * head_dim)?
        .reshape((tokens, head_dim))?;
    Ok((
        rows.narrow(0, 0, tokens)?,
        rows.narrow(0, tokens, tokens)?,
        cos_sin,
    ))
}

pub struct EmbedRmsNormRope {
    /// `[positions, head_dim]`, contiguous: a fourth input, which candle's ops have no slot for.
    pub(crate) rope: Tensor,
    pub(crate) eps: f32,
}

impl EmbedRmsNormRope {
    fn run<T: Elem>(&self, embed: &[T], ids_pos: &[u32], w: &[T], table: &[T]) -> Result<Vec<T>> {
        let (hidden, head_dim) = (w.len(), self.rope.dim(1)?);
        let tokens = ids_pos.len() / 2;
        let mut out = vec![T::from_f32(0.0); tokens * (2 * hidden + head_dim)];
        let (rows, rope) = out.split_at_mut(2 * tokens * hidden);
        let (xs, hs) = rows.split_at_mut(tokens * hidden);
        for t in 0..tokens {
            let (id, pos) = (ids_pos[t] as usize, ids_pos[tokens + t] as usize);
            let (Some(src), Some(cs)) = (
                embed.get(id * hidden..(id + 1) * hidden),
                table.get(pos * head_dim..(pos + 1) * head_dim),
            ) else {
                candle_core::bail!(
                    "embed_rms_norm_rope: token {id} or position {pos} is out of range"
                );
            };
            xs[t * hidden..(t + 1) * hidden].copy_from_slice(src);
            rms_norm_row(src, w, self.eps, &mut hs[t * hidden..(t + 1) * hidden]);
            rope[t * head_dim..(t + 1) * head_dim].copy_from_slice(cs);
        }
        Ok(out)
    }
}

impl CustomOp3 for EmbedRmsNormRope {
    fn name(&self) -> &'static str {
        "embed-rms-norm-rope"
    }

    fn cpu_fwd(
        &self,
        e: &CpuStorage,
        el: &Layout,
        i: &CpuStorage,
        il: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let r = |l: &Layout| l.contiguous_offsets().expect("made contiguous");
        let ((e0, e1), (i0, i1), (w0, w1)) = (r(el), r(il), r(wl));
        let (table, tl) = self.rope.storage_and_layout();
        let Storage::Cpu(table) = &*table else {
            candle_core::bail!("embed_rms_norm_rope: the RoPE table is not on the CPU")
        };
        let (t0, t1) = tl.contiguous_offsets().expect("made contiguous");
        let CpuStorage::U32(ids) = i else {
            candle_core::bail!("embed_rms_norm_rope: ids and positions must be u32")
        };
        let ids = &ids[i0..i1];
        let out = match (e, w, table) {
            (CpuStorage::F32(e), CpuStorage::F32(w), CpuStorage::F32(t)) => {
                CpuStorage::F32(self.run(&e[e0..e1], ids, &w[w0..w1], &t[t0..t1])?)
            }
            (CpuStorage::BF16(e), CpuStorage::BF16(w), CpuStorage::BF16(t)) => {
                CpuStorage::BF16(self.run(&e[e0..e1], ids, &w[w0..w1], &t[t0..t1])?)
            }
            (CpuStorage::F16(e), CpuStorage::F16(w), CpuStorage::F16(t)) => {
                CpuStorage::F16(self.run(&e[e0..e1], ids, &w[w0..w1], &t[t0..t1])?)
            }
            (e, _, _) => return Err(unsupported("embed_rms_norm_rope", e.dtype())),
        };
        let n = (i1 - i0) / 2 * (2 * wl.shape().elem_count() + self.rope.dim(1)?);
        Ok((out, Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        e: &candle_core::CudaStorage,
        el: &Layout,
        i: &candle_core::CudaStorage,
        il: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::embed_rms_norm_rope(self, e, el, i, il, w, wl)
    }
}
