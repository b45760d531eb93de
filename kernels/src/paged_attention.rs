//! Causal attention of packed query rows over contexts stored in the paged pool (GQA aware).

use crate::elem::{unsupported, Elem};
use crate::layout::{AttentionBatch, MetaLayout};
use crate::rope_shift::Rotation;
use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor,
};
use rayon::prelude::*;

/// Query rows `[rows, heads, head_dim]` attend over the K/V pools
/// `[num_blocks, block_size, kv_heads, head_dim]` as `batch` describes; the output has the shape
/// of the queries. Query head `h` reads KV head `h / (heads / kv_heads)`. Scores and the softmax
/// are f32 whatever the storage type. When the batch has shared groups this is cascade
/// attention (see [`crate::SharedGroup`]): same result, shared entries read once per group.
pub struct PagedAttention {
    pub(crate) meta: Tensor,
    pub(crate) layout: MetaLayout,
    pub(crate) softmax_scale: f32,
    pub(crate) rope_theta: f64,
}

pub fn paged_attention(
    q: &Tensor,
    k_pool: &Tensor,
    v_pool: &Tensor,
    batch: &AttentionBatch,
    softmax_scale: f32,
) -> Result<Tensor> {
    let op = PagedAttention::new(
        "paged_attention",
        q.dims3()?,
        k_pool,
        v_pool,
        batch,
        softmax_scale,
    )?;
    q.contiguous()?.apply_op3_no_bwd(k_pool, v_pool, &op)
}

pub(crate) struct Dims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// The sections of the flattened metadata (see [`AttentionBatch`]).
pub(crate) struct Sections<'a> {
    pub row_seq: &'a [u32],
    pub row_visible: &'a [u32],
    pub row_skip: &'a [u32],
    pub seq_start: &'a [u32],
    pub group_row_start: &'a [u32],
    pub group_seq: &'a [u32],
    pub group_len: &'a [u32],
    pub group_rows: &'a [u32],
    pub slots: &'a [u32],
    /// Per slot, as `i32` bits; empty when no span is shifted.
    pub shifts: &'a [u32],
}

impl<'a> Sections<'a> {
    fn split(m: &'a [u32], l: &MetaLayout) -> Self {
        let o = l.offsets();
        Sections {
            row_seq: &m[o.row_seq..o.row_visible],
            row_visible: &m[o.row_visible..o.row_skip],
            row_skip: &m[o.row_skip..o.seq_start],
            seq_start: &m[o.seq_start..o.group_row_start],
            group_row_start: &m[o.group_row_start..o.group_seq],
            group_seq: &m[o.group_seq..o.group_len],
            group_len: &m[o.group_len..o.items],
            group_rows: &m[o.group_rows..o.tiled],
            slots: &m[o.slots..o.shifts],
            shifts: if l.shifted {
                &m[o.shifts..o.shifts + l.slot_capacity]
            } else {
                &[]
            },
        }
    }
}

/// Online softmax of one query head over some of its keys: the running maximum score, the sum
/// of `exp(score - max)` and the values weighted the same way. Two partials over disjoint keys
/// merge exactly, which is what lets cascade attention split a context.
pub(crate) struct Partial {
    max: f32,
    sum: f32,
    acc: Vec<f32>,
}

impl Partial {
    pub fn new(head_dim: usize) -> Self {
        Partial {
            max: f32::NEG_INFINITY,
            sum: 0.0,
            acc: vec![0.0; head_dim],
        }
    }

    /// Adds one key (scored against `q`, already scaled) and its value.
    pub fn push<K: Elem, V: Elem>(&mut self, q: &[f32], key: &[K], value: &[V]) {
        let score: f32 = q.iter().zip(key).map(|(a, b)| a * b.to_f32()).sum();
        let new_max = self.max.max(score);
        let correction = (self.max - new_max).exp();
        let p = (score - new_max).exp();
        self.sum = self.sum * correction + p;
        for (a, val) in self.acc.iter_mut().zip(value) {
            *a = *a * correction + p * val.to_f32();
        }
        self.max = new_max;
    }

    /// Log-sum-exp merge of a partial over other keys.
    pub fn merge(&mut self, other: &Partial) {
        if other.sum == 0.0 {
            return;
        }
        let max = self.max.max(other.max);
        let (a, b) = ((self.max - max).exp(), (other.max - max).exp());
        self.sum = self.sum * a + other.sum * b;
        for (x, y) in self.acc.iter_mut().zip(&other.acc) {
            *x = *x * a + y * b;
        }
        self.max = max;
    }

    fn write<T: Elem>(&self, out: &mut [T]) {
        for (o, a) in out.iter_mut().zip(&self.acc) {
            *o = T::from_f32(a / self.sum);
        }
    }
}

impl PagedAttention {
    /// The op for queries of shape `(rows, heads, head_dim)` over these pools and `batch`, after
    /// checking that they fit (`op` names the caller in the error).
    pub(crate) fn new(
        op: &str,
        (rows, heads, head_dim): (usize, usize, usize),
        k_pool: &Tensor,
        v_pool: &Tensor,
        batch: &AttentionBatch,
        softmax_scale: f32,
    ) -> Result<Self> {
        let (_, _, kv_heads, kv_dim) = k_pool.dims4()?;
        if k_pool.dims() != v_pool.dims()
            || kv_dim != head_dim
            || kv_heads == 0
            || heads % kv_heads != 0
            || rows != batch.layout.rows
        {
            candle_core::bail!(
                "{op}: queries {:?} do not fit pools K {:?} / V {:?} and a batch of {} rows",
                [rows, heads, head_dim],
                k_pool.dims(),
                v_pool.dims(),
                batch.layout.rows
            );
        }
        let rope_theta = match (batch.layout.shifted, batch.rope_theta) {
            (true, None) => candle_core::bail!("{op}: the batch has shifted spans but no RoPE base to re-rotate them with (AttentionBatch::with_rope_theta)"),
            (_, theta) => theta.unwrap_or(0.0),
        };
        Ok(PagedAttention {
            meta: batch.meta.clone(),
            layout: batch.layout,
            softmax_scale,
            rope_theta,
        })
    }

    fn run<T: Elem>(&self, q: &[T], k: &[T], v: &[T], meta: &Sections, d: &Dims) -> Vec<T> {
        let shared = if self.layout.num_groups > 0 {
            crate::cascade::shared_partials(q, k, v, meta, d, self.softmax_scale)
        } else {
            Vec::new()
        };
        let row = d.heads * d.head_dim;
        let group = d.heads / d.kv_heads;
        let kv_row = d.kv_heads * d.head_dim;
        let mut out = vec![T::from_f32(0.0); q.len()];
        out.par_chunks_mut(row)
            .enumerate()
            .for_each(|(r, out_row)| {
                let s = meta.row_seq[r] as usize;
                let first = meta.seq_start[s] as usize + meta.row_skip[r] as usize;
                let own =
                    &meta.slots[first..meta.seq_start[s] as usize + meta.row_visible[r] as usize];
                let shifts = meta.shifts.get(first..first + own.len());
                let mut qf = vec![0f32; d.head_dim];
                let mut rotated = vec![0f32; d.head_dim];
                let mut rotation: Option<(u32, Rotation)> = None;
                for h in 0..d.heads {
                    for (x, q) in qf
                        .iter_mut()
                        .zip(&q[(r * d.heads + h) * d.head_dim..][..d.head_dim])
                    {
                        *x = q.to_f32() * self.softmax_scale;
                    }
                    let mut state = Partial::new(d.head_dim);
                    for (j, &slot) in own.iter().enumerate() {
                        let base = slot as usize * kv_row + (h / group) * d.head_dim;
                        let (key, value) =
                            (&k[base..base + d.head_dim], &v[base..base + d.head_dim]);
                        match shifts.map_or(0, |s| s[j]) {
                            0 => state.push(&qf, key, value),
                            shift => {
                                if rotation.as_ref().is_none_or(|(at, _)| *at != shift) {
                                    rotation = Some((
                                        shift,
                                        Rotation::new(shift as i32, d.head_dim, self.rope_theta),
                                    ));
                                }
                                rotation.as_ref().expect("set").1.apply(key, &mut rotated);
                                state.push(&qf, &rotated, value);
                            }
                        }
                    }
                    if let Some(Some(part)) = shared.get(r * d.heads + h) {
                        state.merge(part);
                    }
                    state.write(&mut out_row[h * d.head_dim..(h + 1) * d.head_dim]);
                }
            });
        out
    }
}

fn contiguous<'a, T>(data: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
    let (a, b) = crate::elem::contiguous_range(l, &format!("paged_attention: {what}"))?;
    Ok(&data[a..b])
}

impl CustomOp3 for PagedAttention {
    fn name(&self) -> &'static str {
        "paged-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        k: &CpuStorage,
        kl: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (qd, kd) = (ql.dims(), kl.dims());
        let d = Dims {
            heads: qd[1],
            kv_heads: kd[2],
            head_dim: qd[2],
        };
        let (meta_storage, meta_layout) = self.meta.storage_and_layout();
        let Storage::Cpu(meta_storage) = &*meta_storage else {
            candle_core::bail!("paged_attention: metadata is not on the CPU")
        };
        let meta = Sections::split(
            contiguous(meta_storage.as_slice::<u32>()?, meta_layout, "metadata")?,
            &self.layout,
        );
        let out = match (q, k, v) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                CpuStorage::F32(self.run(
                    contiguous(q, ql, "q")?,
                    contiguous(k, kl, "the K pool")?,
                    contiguous(v, vl, "the V pool")?,
                    &meta,
                    &d,
                ))
            }
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                CpuStorage::BF16(self.run(
                    contiguous(q, ql, "q")?,
                    contiguous(k, kl, "the K pool")?,
                    contiguous(v, vl, "the V pool")?,
                    &meta,
                    &d,
                ))
            }
            (CpuStorage::F16(q), CpuStorage::F16(k), CpuStorage::F16(v)) => {
                CpuStorage::F16(self.run(
                    contiguous(q, ql, "q")?,
                    contiguous(k, kl, "the K pool")?,
                    contiguous(v, vl, "the V pool")?,
                    &meta,
                    &d,
                ))
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
        crate::cuda::paged_attention(self, q, ql, k, kl, v, vl, None)
    }
}
