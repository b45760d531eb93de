//! Attention on the GPU: flat, shifted spans, cascade, and the fused input side.

use super::{common, common::max_diff, gpu};
use candle_core::{DType, Device, Tensor};
use nanohost_kernels::{
    context_slot, paged_attention, write_kv, AttentionBatch, KvSpan, SeqAttention,
};

/// Spans of (length) with blocks taken from a shuffled list, the first span ending mid-block.
fn contexts(lens: &[usize], block_size: usize, num_blocks: usize, seed: u64) -> Vec<Vec<KvSpan>> {
    let mut free: Vec<u32> = (0..num_blocks as u32).collect();
    let mut x = seed;
    for i in (1..free.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        free.swap(i, (x >> 33) as usize % (i + 1));
    }
    lens.iter()
        .map(|&len| {
            let cut = (len * 2 / 3).max(1).min(len);
            [cut, len - cut]
                .into_iter()
                .filter(|&l| l > 0)
                .map(|l| KvSpan {
                    first: 0,
                    blocks: (0..l.div_ceil(block_size))
                        .map(|_| free.pop().unwrap())
                        .collect(),
                    len: l,
                    shift: 0,
                })
                .collect()
        })
        .collect()
}

fn check_attention(
    dtype: DType,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    lens: &[(usize, usize)],
    tol: f32,
) {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let num_blocks = lens
        .iter()
        .map(|(kv, _)| kv.div_ceil(block_size) + 1)
        .sum::<usize>()
        + 2;
    let ctx = contexts(
        &lens.iter().map(|l| l.0).collect::<Vec<_>>(),
        block_size,
        num_blocks,
        7,
    );
    let total_q: usize = lens.iter().map(|l| l.1).sum();
    let total_kv: usize = lens.iter().map(|l| l.0).sum();
    let q = Tensor::randn(0f32, 1.0, (total_q, heads, head_dim), &cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let k_new = Tensor::randn(0f32, 1.0, (total_kv, kv_heads, head_dim), &cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let v_new = Tensor::randn(0f32, 1.0, (total_kv, kv_heads, head_dim), &cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let slots: Vec<u32> = ctx
        .iter()
        .zip(lens)
        .flat_map(|(c, l)| (0..l.0).map(|j| context_slot(c, j, block_size).unwrap()))
        .collect();
    let mut seqs = Vec::new();
    let mut q_start = 0;
    for (c, l) in ctx.iter().zip(lens) {
        seqs.push(SeqAttention {
            q_start,
            q_len: l.1,
            context: c.clone(),
        });
        q_start += l.1;
    }
    let mut outs = Vec::new();
    for dev in [&cpu, &gpu] {
        let k_pool =
            Tensor::zeros((num_blocks, block_size, kv_heads, head_dim), dtype, dev).unwrap();
        let v_pool = k_pool.zeros_like().unwrap();
        let s = Tensor::new(slots.as_slice(), dev).unwrap();
        write_kv(&k_pool, &k_new.to_device(dev).unwrap(), &s).unwrap();
        write_kv(&v_pool, &v_new.to_device(dev).unwrap(), &s).unwrap();
        let batch = AttentionBatch::new(&seqs, &[], total_q, block_size, num_blocks, dev).unwrap();
        let out = paged_attention(
            &q.to_device(dev).unwrap(),
            &k_pool,
            &v_pool,
            &batch,
            1.0 / (head_dim as f32).sqrt(),
        )
        .unwrap();
        outs.push((k_pool, v_pool, out));
    }
    assert_eq!(
        max_diff(&outs[0].0, &outs[1].0),
        0.0,
        "K pools differ after write_kv"
    );
    assert_eq!(
        max_diff(&outs[0].1, &outs[1].1),
        0.0,
        "V pools differ after write_kv"
    );
    let d = max_diff(&outs[0].2, &outs[1].2);
    assert!(
        d <= tol,
        "{dtype:?} attention differs by {d} (tolerance {tol}) for {lens:?}"
    );
}

/// Spans whose keys were stored for other positions (shifted by up to +-3000) are re-rotated the
/// same way on the GPU as on the CPU.
#[test]
fn shifted_spans_match_cpu() {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let (heads, kv_heads, d, bs) = (16, 8, 128, 16);
    let lens = [(300usize, 1usize), (700, 3), (40, 40), (2000, 1)];
    let num_blocks = lens
        .iter()
        .map(|(kv, _)| kv.div_ceil(bs) + 1)
        .sum::<usize>()
        + 2;
    let mut ctx = contexts(
        &lens.iter().map(|l| l.0).collect::<Vec<_>>(),
        bs,
        num_blocks,
        11,
    );
    for (i, c) in ctx.iter_mut().enumerate() {
        if let Some(span) = c.get_mut(1) {
            span.shift = [1234, -57, 3000, -2999][i];
        }
    }
    let total_q: usize = lens.iter().map(|l| l.1).sum();
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
        let k = Tensor::randn(0f32, 1.0, (num_blocks, bs, kv_heads, d), &cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let v = Tensor::randn(0f32, 1.0, (num_blocks, bs, kv_heads, d), &cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let q = Tensor::randn(0f32, 1.0, (total_q, heads, d), &cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let mut seqs = Vec::new();
        let mut q_start = 0;
        for (c, l) in ctx.iter().zip(&lens) {
            seqs.push(SeqAttention {
                q_start,
                q_len: l.1,
                context: c.clone(),
            });
            q_start += l.1;
        }
        let outs: Vec<Tensor> = [&cpu, &gpu]
            .iter()
            .map(|dev| {
                let batch = AttentionBatch::new(&seqs, &[], total_q, bs, num_blocks, dev)
                    .unwrap()
                    .with_rope_theta(1_000_000.0);
                let (q, k, v) = (
                    q.to_device(dev).unwrap(),
                    k.to_device(dev).unwrap(),
                    v.to_device(dev).unwrap(),
                );
                paged_attention(&q, &k, &v, &batch, 0.088).unwrap()
            })
            .collect();
        let diff = max_diff(&outs[0], &outs[1]);
        assert!(
            diff <= tol,
            "{dtype:?}: shifted attention on the GPU differs from the CPU by {diff}"
        );
    }
}

#[test]
fn attention_matches_cpu_f32() {
    // (context, query rows): prefill, prefill over a cached prefix, decode; odd lengths.
    check_attention(
        DType::F32,
        16,
        8,
        128,
        16,
        &[(37, 37), (300, 45), (17, 1), (1, 1), (259, 1)],
        1e-5,
    );
    check_attention(DType::F32, 4, 1, 64, 5, &[(23, 4), (9, 9)], 1e-5);
    // Few rows over long contexts: split-KV (several blocks per row, then a merge).
    check_attention(DType::F32, 16, 8, 128, 16, &[(2000, 1), (700, 1)], 1e-5);
    // Tiled prefill (>= TILED_MIN_ROWS rows): several tiles of rows and of keys, over a cached
    // prefix, next to per-row rows; GQA 8 (8 rows per tile).
    check_attention(
        DType::F32,
        16,
        8,
        128,
        16,
        &[(300, 300), (1, 1), (1000, 333), (16, 16), (40, 15)],
        1e-5,
    );
    check_attention(DType::F32, 8, 1, 64, 16, &[(100, 100), (77, 20)], 1e-5);
}

#[test]
fn attention_matches_cpu_bf16() {
    check_attention(
        DType::BF16,
        16,
        8,
        128,
        16,
        &[(37, 37), (300, 45), (17, 1), (1, 1), (259, 1)],
        2e-2,
    );
    check_attention(DType::BF16, 8, 2, 32, 16, &[(513, 3), (70, 70)], 2e-2);
    check_attention(
        DType::BF16,
        16,
        8,
        128,
        16,
        &[(4000, 1), (2049, 2), (600, 1)],
        2e-2,
    );
    check_attention(
        DType::BF16,
        16,
        8,
        128,
        16,
        &[(700, 700), (1, 1), (1000, 333), (5, 1)],
        2e-2,
    );
    // Every row tiled: the per-row kernel is not launched.
    check_attention(DType::BF16, 16, 8, 128, 16, &[(64, 64), (130, 17)], 2e-2);
}

/// Cascade on the GPU (tensor cores for bf16, CUDA cores for f32) against the CPU's cascade and
/// against flat attention on the GPU, over the same pool: group sizes up to 70 rows (two tiles
/// of query vectors at GQA 2), prefixes over several chunks, prefill rows and lone sequences.
#[test]
fn cascade_matches_cpu_and_flat() {
    let members = |n: usize, seed: usize| {
        (0..n)
            .map(|i| (1 + (i * 7 + seed) % 90, if i % 5 == 0 { 3 } else { 1 }))
            .collect::<Vec<_>>()
    };
    let cases = [
        common::Case {
            heads: 16,
            kv_heads: 8,
            head_dim: 128,
            block_size: 16,
            groups: vec![(2048, members(70, 1)), (300, members(5, 2))],
            alone: vec![(200, 1), (33, 33)],
        },
        common::Case {
            heads: 4,
            kv_heads: 2,
            head_dim: 32,
            block_size: 16,
            groups: vec![(257, members(8, 3)), (16, members(2, 4))],
            alone: vec![(5, 1)],
        },
        common::Case {
            heads: 8,
            kv_heads: 1,
            head_dim: 64,
            block_size: 16,
            groups: vec![(1000, members(9, 5))],
            alone: vec![],
        },
        // Long own parts and a long lone row with few rows: the shared pass plus split-KV.
        common::Case {
            heads: 4,
            kv_heads: 2,
            head_dim: 128,
            block_size: 16,
            groups: vec![(512, vec![(900, 1), (600, 1)])],
            alone: vec![(3000, 1)],
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
            let cpu = case.build(i as u64, dtype);
            let gpu_case = cpu.to_device(&gpu());
            let (want, got, flat) = (
                cpu.attend(true),
                gpu_case.attend(true),
                gpu_case.attend(false),
            );
            let (d_cpu, d_flat) = (max_diff(&want, &got), max_diff(&flat, &got));
            assert!(d_cpu <= tol && d_flat <= tol, "case {i} {dtype:?}: cascade on the GPU differs from the CPU's by {d_cpu} and from flat by {d_flat} (tolerance {tol})");
        }
    }
}

/// qkv_attention in one kernel gives what qkv_norm_rope_write then paged_attention give, bit for
/// bit (output and both pools): many short rows, and one long row split over many blocks (only
/// the split holding the last key writes it), at GQA 2 (head_dim 128) and 4 (64: six jobs for
/// four warps).
#[test]
fn fused_qkv_attention_is_the_two_ops_in_turn() {
    let dev = gpu();
    let block_size = 16;
    for (heads, kv_heads, d) in [(16, 8, 128), (8, 2, 64)] {
        for lens in [vec![1, 17, 300, 64, 129, 5, 250, 33], vec![2000]] {
            for dtype in [DType::F32, DType::BF16] {
                let rows = lens.len();
                let num_blocks = lens
                    .iter()
                    .map(|&l: &usize| l.div_ceil(block_size) + 1)
                    .sum::<usize>()
                    + 2;
                let ctx = contexts(&lens, block_size, num_blocks, 11);
                let seqs: Vec<SeqAttention> = ctx
                    .iter()
                    .enumerate()
                    .map(|(r, c)| SeqAttention {
                        q_start: r,
                        q_len: 1,
                        context: c.clone(),
                    })
                    .collect();
                let new_slots: Vec<u32> = ctx
                    .iter()
                    .zip(&lens)
                    .map(|(c, &l)| context_slot(c, l - 1, block_size).unwrap())
                    .collect();
                let randn = |shape: &[usize], mean: f32, std: f32| {
                    Tensor::randn(mean, std, shape, &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap()
                };
                let qkv = randn(&[rows, (heads + 2 * kv_heads) * d], 0.0, 1.0);
                let (qw, kw) = (randn(&[d], 1.0, 0.1), randn(&[d], 1.0, 0.1));
                let cs = randn(&[rows, d], 0.0, 1.0);
                // Every slot holds a key and value already, the new ones too: they must be overwritten.
                let k0 = randn(&[num_blocks, block_size, kv_heads, d], 0.0, 1.0);
                let v0 = randn(&[num_blocks, block_size, kv_heads, d], 0.0, 1.0);
                let slots = Tensor::new(new_slots.as_slice(), &dev).unwrap();
                let batch =
                    AttentionBatch::new(&seqs, &[], rows, block_size, num_blocks, &dev).unwrap();
                let n = nanohost_kernels::QkvNorms {
                    heads,
                    kv_heads,
                    q_norm: &qw,
                    k_norm: &kw,
                    eps: 1e-6,
                };
                let scale = 1.0 / (d as f32).sqrt();
                assert!(
                    nanohost_kernels::qkv_attention_fuses(&qkv, d, &batch),
                    "the test must run the fused kernel"
                );
                let (ka, va) = (k0.copy().unwrap(), v0.copy().unwrap());
                let q =
                    nanohost_kernels::qkv_norm_rope_write(&qkv, &n, &cs, &ka, &va, &slots).unwrap();
                let two_ops = paged_attention(&q, &ka, &va, &batch, scale).unwrap();
                let (kb, vb) = (k0.copy().unwrap(), v0.copy().unwrap());
                let fused =
                    nanohost_kernels::qkv_attention(&qkv, &n, &cs, &kb, &vb, &slots, &batch, scale)
                        .unwrap();
                let what = format!("{dtype:?}, {heads}/{kv_heads} heads of {d}, rows {lens:?}");
                assert_eq!(fused.dims(), [rows, heads, d], "{what}");
                assert_eq!(max_diff(&ka, &kb), 0.0, "K pools differ: {what}");
                assert_eq!(max_diff(&va, &vb), 0.0, "V pools differ: {what}");
                assert_eq!(max_diff(&two_ops, &fused), 0.0, "outputs differ: {what}");
            }
        }
    }
}
