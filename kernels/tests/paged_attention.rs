//! The paged ops against plain dense attention on random inputs.

use candle_core::{DType, Device, Tensor};
use nanohost_kernels::{
    context_slot, paged_attention, write_kv, AttentionBatch, KvSpan, SeqAttention,
};

/// Tiny deterministic generator so the test needs no extra crates.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Reference: for each sequence, gather its context K/V densely and run causal softmax attention.
fn dense_reference(
    q: &Tensor,
    k: &[Tensor],
    v: &[Tensor],
    seqs: &[SeqAttention],
    group: usize,
    scale: f64,
) -> Tensor {
    let mut rows = Vec::new();
    for (s, seq) in seqs.iter().enumerate() {
        let kv_len = seq.kv_len();
        let past = kv_len - seq.q_len;
        for i in 0..seq.q_len {
            let qi = q.get(seq.q_start + i).unwrap(); // [H, D]
            let visible = past + i + 1;
            let ks = k[s].narrow(0, 0, visible).unwrap(); // [L, KVH, D]
            let vs = v[s].narrow(0, 0, visible).unwrap();
            let mut heads = Vec::new();
            for h in 0..qi.dim(0).unwrap() {
                let qh = qi.get(h).unwrap().unsqueeze(0).unwrap(); // [1, D]
                let kh = ks.narrow(1, h / group, 1).unwrap().squeeze(1).unwrap(); // [L, D]
                let vh = vs.narrow(1, h / group, 1).unwrap().squeeze(1).unwrap();
                let scores = (qh.matmul(&kh.t().unwrap()).unwrap() * scale).unwrap();
                let p = candle_nn::ops::softmax_last_dim(&scores).unwrap();
                heads.push(p.matmul(&vh).unwrap().squeeze(0).unwrap());
            }
            rows.push(Tensor::stack(&heads, 0).unwrap());
        }
    }
    Tensor::stack(&rows, 0).unwrap()
}

fn check(
    seed: u64,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    lens: &[(usize, usize)],
) {
    let dev = Device::Cpu;
    let mut rng = Lcg(seed);
    let num_blocks = lens
        .iter()
        .map(|(kv, _)| kv.div_ceil(block_size) + 1)
        .sum::<usize>()
        + 3;
    let k_pool = Tensor::zeros(
        (num_blocks, block_size, kv_heads, head_dim),
        DType::F32,
        &dev,
    )
    .unwrap();
    let v_pool = k_pool.zeros_like().unwrap();
    // Shuffle block ids so sequences use non-contiguous, interleaved blocks.
    let mut free: Vec<u32> = (0..num_blocks as u32).collect();
    for i in (1..free.len()).rev() {
        free.swap(i, rng.below(i + 1));
    }
    let total_q: usize = lens.iter().map(|(_, q)| q).sum();
    let q = Tensor::randn(0f32, 1.0, (total_q, heads, head_dim), &dev).unwrap();
    let (mut seqs, mut dense_k, mut dense_v, mut q_start) = (vec![], vec![], vec![], 0);
    for &(kv_len, q_len) in lens {
        // Split the context into up to two spans, the first one ending mid-block.
        let cut = if kv_len > 1 {
            1 + rng.below(kv_len - 1)
        } else {
            kv_len
        };
        let mut context = Vec::new();
        for len in [cut, kv_len - cut] {
            if len > 0 {
                let blocks = (0..len.div_ceil(block_size))
                    .map(|_| free.pop().unwrap())
                    .collect();
                context.push(KvSpan {
                    first: 0,
                    blocks,
                    len,
                    shift: 0,
                });
            }
        }
        let k = Tensor::randn(0f32, 1.0, (kv_len, kv_heads, head_dim), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (kv_len, kv_heads, head_dim), &dev).unwrap();
        let slots: Vec<u32> = (0..kv_len)
            .map(|j| context_slot(&context, j, block_size).unwrap())
            .collect();
        let slots = Tensor::new(slots.as_slice(), &dev).unwrap();
        write_kv(&k_pool, &k, &slots).unwrap();
        write_kv(&v_pool, &v, &slots).unwrap();
        seqs.push(SeqAttention {
            q_start,
            q_len,
            context,
        });
        dense_k.push(k);
        dense_v.push(v);
        q_start += q_len;
    }
    let scale = 1.0 / (head_dim as f64).sqrt();
    let batch = AttentionBatch::new(&seqs, &[], total_q, block_size, num_blocks, &dev).unwrap();
    let got = paged_attention(&q, &k_pool, &v_pool, &batch, scale as f32).unwrap();
    let want = dense_reference(&q, &dense_k, &dense_v, &seqs, heads / kv_heads, scale);
    let diff = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "max abs diff {diff} for lens {lens:?}");
}

#[test]
fn prefill_with_cached_prefix_and_decode_match_dense_attention() {
    // (context length, query rows): fresh prefill, prefill over a cached prefix, decode.
    check(
        1,
        4,
        2,
        16,
        16,
        &[(37, 37), (50, 13), (17, 1), (1, 1), (300, 1)],
    );
}

#[test]
fn gqa_ratios_and_block_sizes() {
    check(2, 8, 1, 8, 5, &[(23, 4), (9, 9)]);
    check(3, 6, 3, 32, 1, &[(12, 2)]);
    check(4, 2, 2, 4, 7, &[(49, 49), (7, 1)]);
}

#[test]
fn bf16_storage_is_attended_in_f32() {
    let dev = Device::Cpu;
    let k = Tensor::randn(0f32, 1.0, (2, 4, 1, 8), &dev).unwrap();
    let v = Tensor::randn(0f32, 1.0, (2, 4, 1, 8), &dev).unwrap();
    let q = Tensor::randn(0f32, 1.0, (1, 2, 8), &dev).unwrap();
    let seqs = [SeqAttention {
        q_start: 0,
        q_len: 1,
        context: vec![KvSpan {
            first: 0,
            blocks: vec![1, 0],
            len: 6,
            shift: 0,
        }],
    }];
    let batch = AttentionBatch::new(&seqs, &[], 1, 4, 2, &dev).unwrap();
    let f = paged_attention(&q, &k, &v, &batch, 0.3).unwrap();
    let b = paged_attention(
        &q.to_dtype(DType::BF16).unwrap(),
        &k.to_dtype(DType::BF16).unwrap(),
        &v.to_dtype(DType::BF16).unwrap(),
        &batch,
        0.3,
    )
    .unwrap()
    .to_dtype(DType::F32)
    .unwrap();
    let diff = (f - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 0.05, "bf16 drifted by {diff}");
}

#[test]
fn bad_descriptions_are_errors_not_memory_errors() {
    let dev = Device::Cpu;
    let pool = Tensor::zeros((2, 4, 1, 8), DType::F32, &dev).unwrap();
    let out_of_range = [SeqAttention {
        q_start: 0,
        q_len: 1,
        context: vec![KvSpan {
            first: 0,
            blocks: vec![2],
            len: 1,
            shift: 0,
        }],
    }];
    let e = AttentionBatch::new(&out_of_range, &[], 1, 4, 2, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("block 2 is outside the pool of 2 blocks"), "{e}");
    let overfull = [SeqAttention {
        q_start: 0,
        q_len: 1,
        context: vec![KvSpan {
            first: 0,
            blocks: vec![0],
            len: 5,
            shift: 0,
        }],
    }];
    let e = AttentionBatch::new(&overfull, &[], 1, 4, 2, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("does not fit"), "{e}");
    let uncovered = [SeqAttention {
        q_start: 0,
        q_len: 1,
        context: vec![KvSpan {
            first: 0,
            blocks: vec![0],
            len: 1,
            shift: 0,
        }],
    }];
    let e = AttentionBatch::new(&uncovered, &[], 2, 4, 2, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("query row 1 belongs to no sequence"), "{e}");
    let rows = Tensor::zeros((1, 1, 8), DType::F32, &dev).unwrap();
    let e = write_kv(&pool, &rows, &Tensor::new(&[8u32], &dev).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("slot 8 is outside the pool of 8 slots"), "{e}");
}
