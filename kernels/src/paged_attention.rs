//! Causal attention of packed query rows over contexts stored in the paged pool (GQA aware).

use crate::elem::{unsupported, Elem};
use crate::layout::SeqAttention;
use candle_core::{backend::BackendStorage, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Query rows `[tokens, heads, head_dim]` attend over the K/V pools
/// `[num_blocks, block_size, kv_heads, head_dim]`; the output has the shape of the queries.
/// Query head `h` reads KV head `h / (heads / kv_heads)`.
#[derive(Clone, Debug)]
pub struct PagedAttention {
    pub seqs: Vec<SeqAttention>,
    pub softmax_scale: f32,
}

/// Runs [`PagedAttention`] after checking every sequence description against the pool.
pub fn paged_attention(q: &Tensor, k_pool: &Tensor, v_pool: &Tensor, seqs: &[SeqAttention], softmax_scale: f32) -> Result<Tensor> {
    let (rows, heads, head_dim) = q.dims3()?;
    let (num_blocks, block_size, kv_heads, kv_dim) = k_pool.dims4()?;
    if k_pool.dims() != v_pool.dims() || kv_dim != head_dim || kv_heads == 0 || heads % kv_heads != 0 {
        candle_core::bail!(
            "paged_attention: queries {:?} do not fit pools K {:?} / V {:?}",
            q.dims(),
            k_pool.dims(),
            v_pool.dims()
        );
    }
    for (i, s) in seqs.iter().enumerate() {
        s.validate(block_size, num_blocks, rows)
            .map_err(|e| candle_core::Error::Msg(format!("paged_attention: sequence {i}: {e}")))?;
    }
    let q = q.contiguous()?;
    q.apply_op3_no_bwd(k_pool, v_pool, &PagedAttention { seqs: seqs.to_vec(), softmax_scale })
}

struct Dims {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
}

impl PagedAttention {
    fn run<T: Elem>(&self, q: &[T], k: &[T], v: &[T], d: &Dims) -> Vec<T> {
        let row = d.heads * d.head_dim;
        let mut out = vec![T::from_f32(0.0); q.len()];
        // One task per query row; each row knows its sequence and how much context it sees.
        let mut work: Vec<(usize, usize, usize, &mut [T])> = Vec::new();
        let mut chunks: Vec<Option<&mut [T]>> = out.chunks_mut(row).map(Some).collect();
        for (si, s) in self.seqs.iter().enumerate() {
            let kv_len = s.kv_len();
            for i in 0..s.q_len {
                let r = s.q_start + i;
                if let Some(chunk) = chunks[r].take() {
                    work.push((si, r, kv_len - s.q_len + i + 1, chunk));
                }
            }
        }
        work.into_par_iter().for_each(|(si, r, visible, out_row)| {
            self.attend_row(&q[r * row..(r + 1) * row], k, v, &self.seqs[si], visible, d, out_row);
        });
        out
    }

    /// Online softmax over the visible context for every head of one query row.
    #[allow(clippy::too_many_arguments)]
    fn attend_row<T: Elem>(&self, q: &[T], k: &[T], v: &[T], seq: &SeqAttention, visible: usize, d: &Dims, out: &mut [T]) {
        let group = d.heads / d.kv_heads;
        let kv_row = d.kv_heads * d.head_dim;
        let mut acc = vec![0f32; d.head_dim];
        let mut qf = vec![0f32; d.head_dim];
        for h in 0..d.heads {
            let kvh = h / group;
            for (x, q) in qf.iter_mut().zip(&q[h * d.head_dim..(h + 1) * d.head_dim]) {
                *x = q.to_f32() * self.softmax_scale;
            }
            acc.iter_mut().for_each(|a| *a = 0.0);
            let (mut max, mut sum) = (f32::NEG_INFINITY, 0f32);
            for (block, off) in seq.slots(d.block_size, visible) {
                let base = (block * d.block_size + off) * kv_row + kvh * d.head_dim;
                let key = &k[base..base + d.head_dim];
                let score: f32 = qf.iter().zip(key).map(|(a, b)| a * b.to_f32()).sum();
                let new_max = max.max(score);
                let correction = (max - new_max).exp();
                let p = (score - new_max).exp();
                sum = sum * correction + p;
                for (a, val) in acc.iter_mut().zip(&v[base..base + d.head_dim]) {
                    *a = *a * correction + p * val.to_f32();
                }
                max = new_max;
            }
            for (o, a) in out[h * d.head_dim..(h + 1) * d.head_dim].iter_mut().zip(&acc) {
                *o = T::from_f32(a / sum);
            }
        }
    }
}

fn contiguous<'a, T>(data: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("paged_attention: {what} must be contiguous")))?;
    Ok(&data[a..b])
}

impl CustomOp3 for PagedAttention {
    fn name(&self) -> &'static str {
        "paged-attention"
    }

    fn cpu_fwd(&self, q: &CpuStorage, ql: &Layout, k: &CpuStorage, kl: &Layout, v: &CpuStorage, vl: &Layout) -> Result<(CpuStorage, Shape)> {
        let qd = ql.dims();
        let kd = kl.dims();
        let d = Dims { heads: qd[1], kv_heads: kd[2], head_dim: qd[2], block_size: kd[1] };
        let out = match (q, k, v) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => CpuStorage::F32(self.run(
                contiguous(q, ql, "q")?,
                contiguous(k, kl, "the K pool")?,
                contiguous(v, vl, "the V pool")?,
                &d,
            )),
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => CpuStorage::BF16(self.run(
                contiguous(q, ql, "q")?,
                contiguous(k, kl, "the K pool")?,
                contiguous(v, vl, "the V pool")?,
                &d,
            )),
            (CpuStorage::F16(q), CpuStorage::F16(k), CpuStorage::F16(v)) => CpuStorage::F16(self.run(
                contiguous(q, ql, "q")?,
                contiguous(k, kl, "the K pool")?,
                contiguous(v, vl, "the V pool")?,
                &d,
            )),
            (q, _, _) => return Err(unsupported("paged_attention", q.dtype())),
        };
        Ok((out, ql.shape().clone()))
    }
}
