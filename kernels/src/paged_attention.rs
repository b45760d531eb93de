//! Causal attention of packed query rows over contexts stored in the paged pool (GQA aware).

use crate::elem::{unsupported, Elem};
use crate::layout::AttentionBatch;
use candle_core::{backend::BackendStorage, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Query rows `[rows, heads, head_dim]` attend over the K/V pools
/// `[num_blocks, block_size, kv_heads, head_dim]` as `batch` describes; the output has the shape
/// of the queries. Query head `h` reads KV head `h / (heads / kv_heads)`. Scores and the softmax
/// are f32 whatever the storage type.
pub struct PagedAttention {
    pub(crate) meta: Tensor,
    pub(crate) rows: usize,
    pub(crate) num_seqs: usize,
    pub(crate) softmax_scale: f32,
}

pub fn paged_attention(q: &Tensor, k_pool: &Tensor, v_pool: &Tensor, batch: &AttentionBatch, softmax_scale: f32) -> Result<Tensor> {
    let (rows, heads, head_dim) = q.dims3()?;
    let (_, _, kv_heads, kv_dim) = k_pool.dims4()?;
    if k_pool.dims() != v_pool.dims() || kv_dim != head_dim || kv_heads == 0 || heads % kv_heads != 0 || rows != batch.rows {
        candle_core::bail!(
            "paged_attention: queries {:?} do not fit pools K {:?} / V {:?} and a batch of {} rows",
            q.dims(),
            k_pool.dims(),
            v_pool.dims(),
            batch.rows
        );
    }
    let q = q.contiguous()?;
    let op = PagedAttention { meta: batch.meta.clone(), rows, num_seqs: batch.num_seqs, softmax_scale };
    q.apply_op3_no_bwd(k_pool, v_pool, &op)
}

pub(crate) struct Dims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// The views of the flattened metadata (see [`AttentionBatch`]).
struct Meta<'a> {
    row_seq: &'a [u32],
    row_visible: &'a [u32],
    seq_start: &'a [u32],
    slots: &'a [u32],
}

impl<'a> Meta<'a> {
    fn split(m: &'a [u32], rows: usize, num_seqs: usize) -> Self {
        let (row_seq, rest) = m.split_at(rows);
        let (row_visible, rest) = rest.split_at(rows);
        let (seq_start, slots) = rest.split_at(num_seqs + 1);
        Meta { row_seq, row_visible, seq_start, slots }
    }
}

impl PagedAttention {
    fn run<T: Elem>(&self, q: &[T], k: &[T], v: &[T], meta: &Meta, d: &Dims) -> Vec<T> {
        let row = d.heads * d.head_dim;
        let mut out = vec![T::from_f32(0.0); q.len()];
        out.par_chunks_mut(row).enumerate().for_each(|(r, out_row)| {
            let s = meta.row_seq[r] as usize;
            let slots = &meta.slots[meta.seq_start[s] as usize..][..meta.row_visible[r] as usize];
            self.attend_row(&q[r * row..(r + 1) * row], k, v, slots, d, out_row);
        });
        out
    }

    /// Online softmax over the visible slots for every head of one query row.
    fn attend_row<T: Elem>(&self, q: &[T], k: &[T], v: &[T], slots: &[u32], d: &Dims, out: &mut [T]) {
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
            for &slot in slots {
                let base = slot as usize * kv_row + kvh * d.head_dim;
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
        let (qd, kd) = (ql.dims(), kl.dims());
        let d = Dims { heads: qd[1], kv_heads: kd[2], head_dim: qd[2] };
        let (meta_storage, meta_layout) = self.meta.storage_and_layout();
        let Storage::Cpu(meta_storage) = &*meta_storage else { candle_core::bail!("paged_attention: metadata is not on the CPU") };
        let meta = Meta::split(contiguous(meta_storage.as_slice::<u32>()?, meta_layout, "metadata")?, self.rows, self.num_seqs);
        let out = match (q, k, v) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(self.run(contiguous(q, ql, "q")?, contiguous(k, kl, "the K pool")?, contiguous(v, vl, "the V pool")?, &meta, &d))
            }
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                CpuStorage::BF16(self.run(contiguous(q, ql, "q")?, contiguous(k, kl, "the K pool")?, contiguous(v, vl, "the V pool")?, &meta, &d))
            }
            (CpuStorage::F16(q), CpuStorage::F16(k), CpuStorage::F16(v)) => {
                CpuStorage::F16(self.run(contiguous(q, ql, "q")?, contiguous(k, kl, "the K pool")?, contiguous(v, vl, "the V pool")?, &meta, &d))
            }
            (q, _, _) => return Err(unsupported("paged_attention", q.dtype())),
        };
        Ok((out, ql.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        q: &candle_core::CudaStorage,
        ql: &Layout,
        k: &candle_core::CudaStorage,
        kl: &Layout,
        v: &candle_core::CudaStorage,
        vl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::paged_attention(self, q, ql, k, kl, v, vl)
    }
}
