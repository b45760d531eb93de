//! Random batches with shared prefixes, for the cascade tests on the CPU and on the GPU.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use nanohost_kernels::{context_slot, write_kv, AttentionBatch, KvSpan, SeqAttention, SharedGroup};

/// Tiny deterministic generator so the tests need no extra crates.
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Shape of a batch: groups of (shared prefix length, members as (own entries, query rows)),
/// then sequences outside any group as (context length, query rows).
pub struct Case {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub groups: Vec<(usize, Vec<(usize, usize)>)>,
    pub alone: Vec<(usize, usize)>,
}

/// A case laid out in a pool (built on the CPU; [`Built::to_device`] copies it, values and all).
pub struct Built {
    pub q: Tensor,
    pub k_pool: Tensor,
    pub v_pool: Tensor,
    pub seqs: Vec<SeqAttention>,
    pub groups: Vec<SharedGroup>,
    pub rows: usize,
    pub num_blocks: usize,
}

impl Case {
    pub fn build(&self, seed: u64, dtype: DType) -> Built {
        let (bs, dev) = (self.block_size, &Device::Cpu);
        let mut rng = Lcg(seed);
        let mut blocks_needed = 0;
        for (prefix, members) in &self.groups {
            blocks_needed += prefix.div_ceil(bs)
                + members
                    .iter()
                    .map(|(own, _)| own.div_ceil(bs))
                    .sum::<usize>();
        }
        blocks_needed += self
            .alone
            .iter()
            .map(|(kv, _)| kv.div_ceil(bs))
            .sum::<usize>();
        let num_blocks = blocks_needed + 3;
        let mut free: Vec<u32> = (0..num_blocks as u32).collect();
        for i in (1..free.len()).rev() {
            free.swap(i, rng.below(i + 1));
        }
        let mut take = |len: usize| KvSpan {
            first: 0,
            blocks: (0..len.div_ceil(bs)).map(|_| free.pop().unwrap()).collect(),
            len,
            shift: 0,
        };
        let (mut seqs, mut groups, mut rows) = (Vec::new(), Vec::new(), 0);
        for (prefix, members) in &self.groups {
            let shared = take(*prefix);
            let mut g = SharedGroup {
                seqs: Vec::new(),
                len: *prefix,
            };
            for &(own, q_len) in members {
                let mut context = vec![shared.clone()];
                if own > 0 {
                    context.push(take(own));
                }
                g.seqs.push(seqs.len());
                seqs.push(SeqAttention {
                    q_start: rows,
                    q_len,
                    context,
                });
                rows += q_len;
            }
            groups.push(g);
        }
        for &(kv, q_len) in &self.alone {
            seqs.push(SeqAttention {
                q_start: rows,
                q_len,
                context: vec![take(kv)],
            });
            rows += q_len;
        }
        let shape = (num_blocks, bs, self.kv_heads, self.head_dim);
        let k_pool = Tensor::zeros(shape, dtype, dev).unwrap();
        let v_pool = k_pool.zeros_like().unwrap();
        // Every slot of the pool gets a value, through the op the engine writes with.
        let all_slots: Vec<u32> = (0..num_blocks as u32 * bs as u32).collect();
        let slots = Tensor::new(all_slots.as_slice(), dev).unwrap();
        for pool in [&k_pool, &v_pool] {
            let vals = Tensor::randn(
                0f32,
                1.0,
                (all_slots.len(), self.kv_heads, self.head_dim),
                dev,
            )
            .unwrap();
            write_kv(pool, &vals.to_dtype(dtype).unwrap(), &slots).unwrap();
        }
        let q = Tensor::randn(0f32, 1.0, (rows, self.heads, self.head_dim), dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        Built {
            q,
            k_pool,
            v_pool,
            seqs,
            groups,
            rows,
            num_blocks,
        }
    }
}

impl Built {
    pub fn to_device(&self, dev: &Device) -> Built {
        Built {
            q: self.q.to_device(dev).unwrap(),
            k_pool: self.k_pool.to_device(dev).unwrap(),
            v_pool: self.v_pool.to_device(dev).unwrap(),
            seqs: self.seqs.clone(),
            groups: self.groups.clone(),
            rows: self.rows,
            num_blocks: self.num_blocks,
        }
    }

    /// Attention output with the groups (cascade) or without (flat).
    pub fn attend(&self, cascade: bool) -> Tensor {
        let groups: &[SharedGroup] = if cascade { &self.groups } else { &[] };
        let bs = self.k_pool.dim(1).unwrap();
        let batch = AttentionBatch::new(
            &self.seqs,
            groups,
            self.rows,
            bs,
            self.num_blocks,
            self.q.device(),
        )
        .unwrap();
        let scale = 1.0 / (self.q.dim(2).unwrap() as f32).sqrt();
        nanohost_kernels::paged_attention(&self.q, &self.k_pool, &self.v_pool, &batch, scale)
            .unwrap()
    }

    /// Every slot of sequence `s`'s context, for checks.
    pub fn slots(&self, s: usize) -> Vec<u32> {
        let bs = self.k_pool.dim(1).unwrap();
        let seq = &self.seqs[s];
        (0..seq.kv_len())
            .map(|j| context_slot(&seq.context, j, bs).unwrap())
            .collect()
    }
}

pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
