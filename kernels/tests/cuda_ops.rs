//! Each CUDA op against its CPU implementation on random inputs. Runs only with the `cuda`
//! feature, on a machine with a GPU: `cargo test -p nanohost-kernels --features cuda --test cuda_ops`
//! (or the prebuilt binary that scripts/gpu/check.sh runs on the GPU machine).
#![cfg(feature = "cuda")]

mod common;
use common::max_diff;

use candle_core::{DType, Device, Tensor};
use nanohost_kernels::{context_slot, paged_attention, rms_norm_rope, sample_rows, silu_mul, write_kv, AttentionBatch, KvSpan, SeqAttention};

fn gpu() -> Device {
    Device::new_cuda(0).expect("these tests need a CUDA GPU")
}

/// Spans of (length) with blocks taken from a shuffled list, the first span ending mid-block.
fn contexts(lens: &[usize], block_size: usize, num_blocks: usize, seed: u64) -> Vec<Vec<KvSpan>> {
    let mut free: Vec<u32> = (0..num_blocks as u32).collect();
    let mut x = seed;
    for i in (1..free.len()).rev() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        free.swap(i, (x >> 33) as usize % (i + 1));
    }
    lens.iter()
        .map(|&len| {
            let cut = (len * 2 / 3).max(1).min(len);
            [cut, len - cut]
                .into_iter()
                .filter(|&l| l > 0)
                .map(|l| KvSpan { blocks: (0..l.div_ceil(block_size)).map(|_| free.pop().unwrap()).collect(), len: l, shift: 0 })
                .collect()
        })
        .collect()
}


fn check_attention(dtype: DType, heads: usize, kv_heads: usize, head_dim: usize, block_size: usize, lens: &[(usize, usize)], tol: f32) {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let num_blocks = lens.iter().map(|(kv, _)| kv.div_ceil(block_size) + 1).sum::<usize>() + 2;
    let ctx = contexts(&lens.iter().map(|l| l.0).collect::<Vec<_>>(), block_size, num_blocks, 7);
    let total_q: usize = lens.iter().map(|l| l.1).sum();
    let total_kv: usize = lens.iter().map(|l| l.0).sum();
    let q = Tensor::randn(0f32, 1.0, (total_q, heads, head_dim), &cpu).unwrap().to_dtype(dtype).unwrap();
    let k_new = Tensor::randn(0f32, 1.0, (total_kv, kv_heads, head_dim), &cpu).unwrap().to_dtype(dtype).unwrap();
    let v_new = Tensor::randn(0f32, 1.0, (total_kv, kv_heads, head_dim), &cpu).unwrap().to_dtype(dtype).unwrap();
    let slots: Vec<u32> = ctx.iter().zip(lens).flat_map(|(c, l)| (0..l.0).map(|j| context_slot(c, j, block_size).unwrap())).collect();
    let mut seqs = Vec::new();
    let mut q_start = 0;
    for (c, l) in ctx.iter().zip(lens) {
        seqs.push(SeqAttention { q_start, q_len: l.1, context: c.clone() });
        q_start += l.1;
    }
    let mut outs = Vec::new();
    for dev in [&cpu, &gpu] {
        let k_pool = Tensor::zeros((num_blocks, block_size, kv_heads, head_dim), dtype, dev).unwrap();
        let v_pool = k_pool.zeros_like().unwrap();
        let s = Tensor::new(slots.as_slice(), dev).unwrap();
        write_kv(&k_pool, &k_new.to_device(dev).unwrap(), &s).unwrap();
        write_kv(&v_pool, &v_new.to_device(dev).unwrap(), &s).unwrap();
        let batch = AttentionBatch::new(&seqs, &[], total_q, block_size, num_blocks, dev).unwrap();
        let out = paged_attention(&q.to_device(dev).unwrap(), &k_pool, &v_pool, &batch, 1.0 / (head_dim as f32).sqrt()).unwrap();
        outs.push((k_pool, v_pool, out));
    }
    assert_eq!(max_diff(&outs[0].0, &outs[1].0), 0.0, "K pools differ after write_kv");
    assert_eq!(max_diff(&outs[0].1, &outs[1].1), 0.0, "V pools differ after write_kv");
    let d = max_diff(&outs[0].2, &outs[1].2);
    assert!(d <= tol, "{dtype:?} attention differs by {d} (tolerance {tol}) for {lens:?}");
}

/// Spans whose keys were stored for other positions (shifted by up to +-3000) are re-rotated the
/// same way on the GPU as on the CPU.
#[test]
fn shifted_spans_match_cpu() {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let (heads, kv_heads, d, bs) = (16, 8, 128, 16);
    let lens = [(300usize, 1usize), (700, 3), (40, 40), (2000, 1)];
    let num_blocks = lens.iter().map(|(kv, _)| kv.div_ceil(bs) + 1).sum::<usize>() + 2;
    let mut ctx = contexts(&lens.iter().map(|l| l.0).collect::<Vec<_>>(), bs, num_blocks, 11);
    for (i, c) in ctx.iter_mut().enumerate() {
        if let Some(span) = c.get_mut(1) {
            span.shift = [1234, -57, 3000, -2999][i];
        }
    }
    let total_q: usize = lens.iter().map(|l| l.1).sum();
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
        let k = Tensor::randn(0f32, 1.0, (num_blocks, bs, kv_heads, d), &cpu).unwrap().to_dtype(dtype).unwrap();
        let v = Tensor::randn(0f32, 1.0, (num_blocks, bs, kv_heads, d), &cpu).unwrap().to_dtype(dtype).unwrap();
        let q = Tensor::randn(0f32, 1.0, (total_q, heads, d), &cpu).unwrap().to_dtype(dtype).unwrap();
        let mut seqs = Vec::new();
        let mut q_start = 0;
        for (c, l) in ctx.iter().zip(&lens) {
            seqs.push(SeqAttention { q_start, q_len: l.1, context: c.clone() });
            q_start += l.1;
        }
        let outs: Vec<Tensor> = [&cpu, &gpu]
            .iter()
            .map(|dev| {
                let batch = AttentionBatch::new(&seqs, &[], total_q, bs, num_blocks, dev).unwrap().with_rope_theta(1_000_000.0);
                let (q, k, v) = (q.to_device(dev).unwrap(), k.to_device(dev).unwrap(), v.to_device(dev).unwrap());
                paged_attention(&q, &k, &v, &batch, 0.088).unwrap()
            })
            .collect();
        let diff = max_diff(&outs[0], &outs[1]);
        assert!(diff <= tol, "{dtype:?}: shifted attention on the GPU differs from the CPU by {diff}");
    }
}

#[test]
fn attention_matches_cpu_f32() {
    // (context, query rows): prefill, prefill over a cached prefix, decode; odd lengths.
    check_attention(DType::F32, 16, 8, 128, 16, &[(37, 37), (300, 45), (17, 1), (1, 1), (259, 1)], 1e-5);
    check_attention(DType::F32, 4, 1, 64, 5, &[(23, 4), (9, 9)], 1e-5);
    // Few rows over long contexts: split-KV (several blocks per row, then a merge).
    check_attention(DType::F32, 16, 8, 128, 16, &[(2000, 1), (700, 1)], 1e-5);
}

#[test]
fn attention_matches_cpu_bf16() {
    check_attention(DType::BF16, 16, 8, 128, 16, &[(37, 37), (300, 45), (17, 1), (1, 1), (259, 1)], 2e-2);
    check_attention(DType::BF16, 8, 2, 32, 16, &[(513, 3), (70, 70)], 2e-2);
    check_attention(DType::BF16, 16, 8, 128, 16, &[(4000, 1), (2049, 2), (600, 1)], 2e-2);
}

/// Cascade on the GPU (tensor cores for bf16, CUDA cores for f32) against the CPU's cascade and
/// against flat attention on the GPU, over the same pool: group sizes up to 70 rows (two tiles
/// of query vectors at GQA 2), prefixes over several chunks, prefill rows and lone sequences.
#[test]
fn cascade_matches_cpu_and_flat() {
    let members = |n: usize, seed: usize| (0..n).map(|i| (1 + (i * 7 + seed) % 90, if i % 5 == 0 { 3 } else { 1 })).collect::<Vec<_>>();
    let cases = [
        common::Case { heads: 16, kv_heads: 8, head_dim: 128, block_size: 16, groups: vec![(2048, members(70, 1)), (300, members(5, 2))], alone: vec![(200, 1), (33, 33)] },
        common::Case { heads: 4, kv_heads: 2, head_dim: 32, block_size: 16, groups: vec![(257, members(8, 3)), (16, members(2, 4))], alone: vec![(5, 1)] },
        common::Case { heads: 8, kv_heads: 1, head_dim: 64, block_size: 16, groups: vec![(1000, members(9, 5))], alone: vec![] },
        // Long own parts and a long lone row with few rows: the shared pass plus split-KV.
        common::Case { heads: 4, kv_heads: 2, head_dim: 128, block_size: 16, groups: vec![(512, vec![(900, 1), (600, 1)])], alone: vec![(3000, 1)] },
    ];
    for (i, case) in cases.iter().enumerate() {
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
            let cpu = case.build(i as u64, dtype);
            let gpu_case = cpu.to_device(&gpu());
            let (want, got, flat) = (cpu.attend(true), gpu_case.attend(true), gpu_case.attend(false));
            let (d_cpu, d_flat) = (max_diff(&want, &got), max_diff(&flat, &got));
            assert!(d_cpu <= tol && d_flat <= tol, "case {i} {dtype:?}: cascade on the GPU differs from the CPU's by {d_cpu} and from flat by {d_flat} (tolerance {tol})");
        }
    }
}

#[test]
fn sampling_matches_cpu() {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let rows = 64;
    let logits = (Tensor::randn(0f32, 1.0, (rows, 151_936), &cpu).unwrap() * 3.0).unwrap();
    let u: Vec<f32> = (0..rows).map(|i| (i as f32 * 0.618_034).fract()).collect();
    assert_eq!(sample_rows(&logits, &u, 0.0).unwrap(), sample_rows(&logits.to_device(&gpu).unwrap(), &u, 0.0).unwrap());
    let a = sample_rows(&logits, &u, 0.6).unwrap();
    let b = sample_rows(&logits.to_device(&gpu).unwrap(), &u, 0.6).unwrap();
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(same >= rows - 1, "only {same} of {rows} draws agree: {a:?} vs {b:?}");
}

#[test]
fn norm_rope_and_strided_kv_write_match_cpu() {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let (tokens, heads, kv_heads, d) = (37, 16, 8, 128);
    for dtype in [DType::F32, DType::BF16] {
        let proj = Tensor::randn(0f32, 1.0, (tokens, (heads + 2 * kv_heads) * d), &cpu).unwrap().to_dtype(dtype).unwrap();
        let w = Tensor::randn(1f32, 0.1, d, &cpu).unwrap().to_dtype(dtype).unwrap();
        let cs = Tensor::randn(0f32, 1.0, (tokens, d), &cpu).unwrap().to_dtype(dtype).unwrap();
        let run = |dev: &Device| {
            let (p, w, cs) = (proj.to_device(dev).unwrap(), w.to_device(dev).unwrap(), cs.to_device(dev).unwrap());
            let k = rms_norm_rope(&p.narrow(1, heads * d, kv_heads * d).unwrap(), kv_heads, &w, &cs, 1e-6).unwrap();
            let pool = Tensor::zeros((8, 16, kv_heads, d), dtype, dev).unwrap();
            let slots = Tensor::new((0..tokens as u32).map(|t| t * 3 % 128).collect::<Vec<_>>().as_slice(), dev).unwrap();
            write_kv(&pool, &p.narrow(1, (heads + kv_heads) * d, kv_heads * d).unwrap(), &slots).unwrap();
            (k, pool)
        };
        let (k_cpu, pool_cpu) = run(&cpu);
        let (k_gpu, pool_gpu) = run(&gpu);
        let tol = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
        let d1 = max_diff(&k_cpu, &k_gpu);
        assert!(d1 <= tol, "{dtype:?} norm+rope differs by {d1}");
        assert_eq!(max_diff(&pool_cpu, &pool_gpu), 0.0, "{dtype:?} strided write_kv differs");
    }
}

#[test]
fn silu_mul_matches_cpu() {
    let x = Tensor::randn(0f32, 2.0, (5, 2 * 3072), &Device::Cpu).unwrap();
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
        let x = x.to_dtype(dtype).unwrap();
        let d = max_diff(&silu_mul(&x).unwrap(), &silu_mul(&x.to_device(&gpu()).unwrap()).unwrap());
        assert!(d <= tol, "{dtype:?} silu_mul differs by {d}");
    }
}
