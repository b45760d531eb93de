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
    // Tiled prefill (>= TILED_MIN_ROWS rows): several tiles of rows and of keys, over a cached
    // prefix, next to per-row rows; GQA 8 (8 rows per tile).
    check_attention(DType::F32, 16, 8, 128, 16, &[(300, 300), (1, 1), (1000, 333), (16, 16), (40, 15)], 1e-5);
    check_attention(DType::F32, 8, 1, 64, 16, &[(100, 100), (77, 20)], 1e-5);
}

#[test]
fn attention_matches_cpu_bf16() {
    check_attention(DType::BF16, 16, 8, 128, 16, &[(37, 37), (300, 45), (17, 1), (1, 1), (259, 1)], 2e-2);
    check_attention(DType::BF16, 8, 2, 32, 16, &[(513, 3), (70, 70)], 2e-2);
    check_attention(DType::BF16, 16, 8, 128, 16, &[(4000, 1), (2049, 2), (600, 1)], 2e-2);
    check_attention(DType::BF16, 16, 8, 128, 16, &[(700, 700), (1, 1), (1000, 333), (5, 1)], 2e-2);
    // Every row tiled: the per-row kernel is not launched.
    check_attention(DType::BF16, 16, 8, 128, 16, &[(64, 64), (130, 17)], 2e-2);
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

/// Rows split over many blocks (64 at one row, as many as fit at once over all rows at 64:
/// sample.cuh), merged by the last.
#[test]
fn sampling_matches_cpu() {
    for rows in [1, 3, 64] {
        sampling_matches_cpu_at(rows);
    }
}

fn sampling_matches_cpu_at(rows: usize) {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let logits = (Tensor::randn(0f32, 1.0, (rows, 151_936), &cpu).unwrap() * 3.0).unwrap();
    let u: Vec<f32> = (0..rows).map(|i| ((i + 1) as f32 * 0.618_034).fract()).collect();
    assert_eq!(sample_rows(&logits, &u, 0.0).unwrap(), sample_rows(&logits.to_device(&gpu).unwrap(), &u, 0.0).unwrap());
    let a = sample_rows(&logits, &u, 0.6).unwrap();
    let b = sample_rows(&logits.to_device(&gpu).unwrap(), &u, 0.6).unwrap();
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    // The sums are grouped differently (f64 both): at most one draw in 64 may fall on the
    // other side of a boundary.
    assert!(same + rows / 64 >= rows, "only {same} of {rows} draws agree: {a:?} vs {b:?}");
    // bf16 logits are read as they are on the GPU and widened to f32 on the CPU: the same values.
    let half = logits.to_dtype(DType::BF16).unwrap();
    let on_gpu = half.to_device(&gpu).unwrap();
    assert_eq!(sample_rows(&half, &u, 0.0).unwrap(), sample_rows(&on_gpu, &u, 0.0).unwrap());
    let (a, b) = (sample_rows(&half, &u, 0.6).unwrap(), sample_rows(&on_gpu, &u, 0.6).unwrap());
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    assert!(same + rows / 64 >= rows, "bf16: only {same} of {rows} draws agree: {a:?} vs {b:?}");
}

/// Rows whose length is no multiple of a 16-byte vector (every row but the first starts off
/// 16 bytes, so the kernel reads element by element), ties (the first index wins), and masked
/// logits (-inf weighs nothing, and a row of one finite logit draws it at any temperature).
#[test]
fn sampling_handles_odd_rows_ties_and_masks() {
    let (cpu, gpu) = (Device::Cpu, gpu());
    for vocab in [1001usize, 4099, 151_936] {
        let mut x: Vec<f32> = Tensor::randn(0f32, 1.0, (5, vocab), &cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        x[..vocab].iter_mut().for_each(|v| *v = 0.5); // row 0: all tied
        x[vocab + 300] = 9.0; // row 1: the maximum twice
        x[vocab + 700] = 9.0;
        x[2 * vocab..3 * vocab].iter_mut().enumerate().for_each(|(i, v)| if i % 97 != 5 { *v = f32::NEG_INFINITY });
        x[3 * vocab..4 * vocab].iter_mut().enumerate().for_each(|(i, v)| if i != vocab - 2 { *v = f32::NEG_INFINITY });
        let logits = Tensor::from_vec(x, (5, vocab), &cpu).unwrap();
        let u = [0.3f32, 0.9, 0.5, 0.99, 0.7];
        for dtype in [DType::F32, DType::BF16] {
            let l = logits.to_dtype(dtype).unwrap();
            let on_gpu = l.to_device(&gpu).unwrap();
            let greedy = sample_rows(&on_gpu, &u, 0.0).unwrap();
            assert_eq!(greedy, sample_rows(&l, &u, 0.0).unwrap(), "greedy, vocab {vocab} {dtype:?}");
            assert_eq!((greedy[0], greedy[1], greedy[3]), (0, 300, vocab as u32 - 2), "vocab {vocab} {dtype:?}");
            let drawn = sample_rows(&on_gpu, &u, 0.6).unwrap();
            assert_eq!(drawn[..4], sample_rows(&l, &u, 0.6).unwrap()[..4], "temperature 0.6, vocab {vocab} {dtype:?}");
            assert_eq!(drawn[2] % 97, 5, "row 2 drew a masked logit, vocab {vocab} {dtype:?}");
        }
    }
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
        // bf16: one rounding of values up to about 10 (normed, times a random cos/sin) is 2^-8
        // relative; a sum in another order may round to the neighbour (0.03125 seen at 4-8).
        let top = max_abs(&k_cpu);
        let tol = if dtype == DType::F32 { 1e-5 } else { top.max(1.0) / 128.0 };
        let d1 = max_diff(&k_cpu, &k_gpu);
        assert!(d1 <= tol, "{dtype:?} norm+rope differs by {d1} (largest output {top})");
        assert_eq!(max_diff(&pool_cpu, &pool_gpu), 0.0, "{dtype:?} strided write_kv differs");
    }
}

#[test]
fn silu_mul_matches_cpu() {
    // 3,072: 16-byte vectors of outputs; 1,001: one output a thread (norm.cuh).
    for width in [3072, 1001] {
        let x = Tensor::randn(0f32, 2.0, (5, 2 * width), &Device::Cpu).unwrap();
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
            let x = x.to_dtype(dtype).unwrap();
            let d = max_diff(&silu_mul(&x).unwrap(), &silu_mul(&x.to_device(&gpu()).unwrap()).unwrap());
            assert!(d <= tol, "{dtype:?} width {width}: silu_mul differs by {d}");
        }
    }
}

#[test]
fn fused_qkv_norm_rope_write_matches_the_cpu_composition() {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let (tokens, heads, kv_heads, d) = (37, 16, 8, 128);
    for dtype in [DType::F32, DType::BF16] {
        let qkv = Tensor::randn(0f32, 1.0, (tokens, (heads + 2 * kv_heads) * d), &cpu).unwrap().to_dtype(dtype).unwrap();
        let qw = Tensor::randn(1f32, 0.1, d, &cpu).unwrap().to_dtype(dtype).unwrap();
        let kw = Tensor::randn(1f32, 0.1, d, &cpu).unwrap().to_dtype(dtype).unwrap();
        let cs = Tensor::randn(0f32, 1.0, (tokens, d), &cpu).unwrap().to_dtype(dtype).unwrap();
        // The last token's slot is past the pool: skipped, as write_kv skips it.
        let slots: Vec<u32> = (0..tokens as u32).map(|t| if t + 1 == tokens as u32 { 10_000 } else { t * 3 % 128 }).collect();
        let run = |dev: &Device| {
            let (qkv, qw, kw, cs) = (qkv.to_device(dev).unwrap(), qw.to_device(dev).unwrap(), kw.to_device(dev).unwrap(), cs.to_device(dev).unwrap());
            // Poisoned pools: the writes must land exactly where the composition puts them.
            let kp = Tensor::full(7f32, (8, 16, kv_heads, d), dev).unwrap().to_dtype(dtype).unwrap();
            let vp = Tensor::full(-3f32, (8, 16, kv_heads, d), dev).unwrap().to_dtype(dtype).unwrap();
            let n = nanohost_kernels::QkvNorms { heads, kv_heads, q_norm: &qw, k_norm: &kw, eps: 1e-6 };
            let st = Tensor::new(slots.as_slice(), dev).unwrap();
            let st = if dev.is_cpu() { st.narrow(0, 0, tokens - 1).unwrap() } else { st };
            let q = if dev.is_cpu() {
                // The CPU composition would refuse the out-of-pool slot: compose over the rest.
                let q = nanohost_kernels::qkv_norm_rope_write(&qkv.narrow(0, 0, tokens - 1).unwrap(), &n, &cs.narrow(0, 0, tokens - 1).unwrap(), &kp, &vp, &st).unwrap();
                let last = rms_norm_rope(&qkv.narrow(0, tokens - 1, 1).unwrap().narrow(1, 0, heads * d).unwrap(), heads, &qw, &cs.narrow(0, tokens - 1, 1).unwrap(), 1e-6).unwrap();
                Tensor::cat(&[q, last], 0).unwrap()
            } else {
                nanohost_kernels::qkv_norm_rope_write(&qkv, &n, &cs, &kp, &vp, &st).unwrap()
            };
            (q, kp, vp)
        };
        let (q_cpu, k_cpu, v_cpu) = run(&cpu);
        let (q_gpu, k_gpu, v_gpu) = run(&gpu);
        // bf16: up to two units in the last place at the outputs' magnitude (about 4).
        let tol = if dtype == DType::F32 { 1e-5 } else { 6e-2 };
        assert_eq!(q_gpu.dims(), [tokens, heads, d]);
        for (what, a, b) in [("q", &q_cpu, &q_gpu), ("K pool", &k_cpu, &k_gpu)] {
            let diff = max_diff(a, b);
            assert!(diff <= tol, "{dtype:?} {what} differs by {diff}");
        }
        assert_eq!(max_diff(&v_cpu, &v_gpu), 0.0, "{dtype:?} V pool differs");
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
                let num_blocks = lens.iter().map(|&l: &usize| l.div_ceil(block_size) + 1).sum::<usize>() + 2;
                let ctx = contexts(&lens, block_size, num_blocks, 11);
                let seqs: Vec<SeqAttention> = ctx.iter().enumerate().map(|(r, c)| SeqAttention { q_start: r, q_len: 1, context: c.clone() }).collect();
                let new_slots: Vec<u32> = ctx.iter().zip(&lens).map(|(c, &l)| context_slot(c, l - 1, block_size).unwrap()).collect();
                let randn = |shape: &[usize], mean: f32, std: f32| Tensor::randn(mean, std, shape, &dev).unwrap().to_dtype(dtype).unwrap();
                let qkv = randn(&[rows, (heads + 2 * kv_heads) * d], 0.0, 1.0);
                let (qw, kw) = (randn(&[d], 1.0, 0.1), randn(&[d], 1.0, 0.1));
                let cs = randn(&[rows, d], 0.0, 1.0);
                // Every slot holds a key and value already, the new ones too: they must be overwritten.
                let k0 = randn(&[num_blocks, block_size, kv_heads, d], 0.0, 1.0);
                let v0 = randn(&[num_blocks, block_size, kv_heads, d], 0.0, 1.0);
                let slots = Tensor::new(new_slots.as_slice(), &dev).unwrap();
                let batch = AttentionBatch::new(&seqs, &[], rows, block_size, num_blocks, &dev).unwrap();
                let n = nanohost_kernels::QkvNorms { heads, kv_heads, q_norm: &qw, k_norm: &kw, eps: 1e-6 };
                let scale = 1.0 / (d as f32).sqrt();
                assert!(nanohost_kernels::qkv_attention_fuses(&qkv, d, &batch), "the test must run the fused kernel");
                let (ka, va) = (k0.copy().unwrap(), v0.copy().unwrap());
                let q = nanohost_kernels::qkv_norm_rope_write(&qkv, &n, &cs, &ka, &va, &slots).unwrap();
                let two_ops = paged_attention(&q, &ka, &va, &batch, scale).unwrap();
                let (kb, vb) = (k0.copy().unwrap(), v0.copy().unwrap());
                let fused = nanohost_kernels::qkv_attention(&qkv, &n, &cs, &kb, &vb, &slots, &batch, scale).unwrap();
                let what = format!("{dtype:?}, {heads}/{kv_heads} heads of {d}, rows {lens:?}");
                assert_eq!(fused.dims(), [rows, heads, d], "{what}");
                assert_eq!(max_diff(&ka, &kb), 0.0, "K pools differ: {what}");
                assert_eq!(max_diff(&va, &vb), 0.0, "V pools differ: {what}");
                assert_eq!(max_diff(&two_ops, &fused), 0.0, "outputs differ: {what}");
            }
        }
    }
}

/// Hidden 1,024 (Qwen3-0.6B: two vectors for each of 64 threads) and 1,080 (threads whose second
/// vector, or both, fall past the row).
#[test]
fn fused_add_rms_norm_matches_cpu() {
    for hidden in [1024, 1080] {
        fused_add_rms_norm_matches_cpu_at(hidden);
    }
}

fn fused_add_rms_norm_matches_cpu_at(hidden: usize) {
    let cpu = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (9, hidden), &cpu).unwrap();
    let dx = Tensor::randn(0f32, 1.0, (9, hidden), &cpu).unwrap();
    let w = Tensor::randn(1f32, 0.1, hidden, &cpu).unwrap();
    // bf16: up to two units in the last place at the outputs' magnitude (about 4).
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 6e-2)] {
        let (x, dx, w) = (x.to_dtype(dtype).unwrap(), dx.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap());
        let (s_cpu, h_cpu) = nanohost_kernels::add_rms_norm(&x, &dx, &w, 1e-6).unwrap();
        let g = |t: &Tensor| t.to_device(&gpu()).unwrap();
        let (s_gpu, h_gpu) = nanohost_kernels::add_rms_norm(&g(&x), &g(&dx), &g(&w), 1e-6).unwrap();
        assert_eq!(max_diff(&s_cpu, &s_gpu), 0.0, "{dtype:?} hidden {hidden}: sums differ");
        let d = max_diff(&h_cpu, &h_gpu);
        assert!(d <= tol, "{dtype:?} hidden {hidden}: normed rows differ by {d}");
    }
}

/// The step's first kernel against its CPU op: Qwen3-0.6B's widths, rows 0 and last of both
/// tables among the ids and positions.
#[test]
fn embed_rms_norm_rope_matches_cpu() {
    let cpu = Device::Cpu;
    let (vocab, hidden, positions, head_dim) = (1000, 1024, 300, 128);
    let embed = Tensor::randn(0f32, 1.0, (vocab, hidden), &cpu).unwrap();
    let w = Tensor::randn(1f32, 0.1, hidden, &cpu).unwrap();
    let table = Tensor::randn(0f32, 1.0, (positions, head_dim), &cpu).unwrap();
    let ids_pos = Tensor::new(&[0u32, 999, 5, 5, 123, 299, 0, 17, 250, 1], &cpu).unwrap();
    for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 6e-2)] {
        let (embed, w, table) = (embed.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap(), table.to_dtype(dtype).unwrap());
        let (x, h, cs) = nanohost_kernels::embed_rms_norm_rope(&embed, &ids_pos, &w, &table, 1e-6).unwrap();
        let g = |t: &Tensor| t.to_device(&gpu()).unwrap();
        let (xg, hg, csg) = nanohost_kernels::embed_rms_norm_rope(&g(&embed), &g(&ids_pos), &g(&w), &g(&table), 1e-6).unwrap();
        assert_eq!(max_diff(&x, &xg), 0.0, "{dtype:?}: embedding rows differ");
        assert_eq!(max_diff(&cs, &csg), 0.0, "{dtype:?}: RoPE rows differ");
        let d = max_diff(&h, &hg);
        assert!(d <= tol, "{dtype:?}: normed rows differ by {d}");
    }
}

#[test]
fn small_matmul_matches_cpu() {
    // Split-K (cuda.rs picks it from k and the columns): 2 warps per column for k = 3,072, and for
    // k = 2,056, whose share is not a whole number of passes; f32 (shorter passes) splits k =
    // 1,024 too. None for bf16 at k = 1,024, and the LM head's 151,936 columns walk many column
    // groups per block of the persistent grid.
    for (rows, n, k) in [(1, 1000, 1024), (3, 4096, 1024), (8, 1024, 3072), (4, 1024, 2048), (2, 1024, 2056), (5, 151_936, 1024)] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap();
        // bf16: the f32 sums differ in order only, then round to bf16; outputs reach about 8,
        // where two units in the last place are 0.0625.
        for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 7e-2)] {
            let (x, w) = (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap());
            let cpu = nanohost_kernels::small_matmul(&x, &w).unwrap();
            let gpu = nanohost_kernels::small_matmul(&x.to_device(&gpu()).unwrap(), &w.to_device(&gpu()).unwrap()).unwrap();
            let d = max_diff(&cpu, &gpu);
            assert!(d <= tol, "{dtype:?} {rows}x{k} . {n}x{k}: differs by {d}");
        }
    }
}

/// Whether the tensor-core matmul runs on `dev` (compute capability 9+); says so when a test
/// skips it.
fn tc_matmul_runs(dev: &Device) -> bool {
    let runs = nanohost_kernels::tc_matmul_fits(dev, DType::BF16, 1, 64, 64);
    if !runs {
        eprintln!("tc_matmul does not run on this GPU (compute capability 9+ only); skipped");
    }
    runs
}

#[test]
fn tc_matmul_matches_cpu() {
    // Clusters of 1 (k = 64), 4 (k = 1,024: slices of 256) and 8 blocks (k = 2,048; k = 3,072 in
    // slices of 384); 1 to 8 tiles of 8 rows, the last tile partial or full.
    let dev = gpu();
    if !tc_matmul_runs(&dev) {
        return;
    }
    for (rows, n, k) in [(1, 128, 1024), (3, 4096, 1024), (8, 1024, 2048), (9, 1024, 3072), (17, 6144, 1024), (33, 192, 64), (50, 1024, 2048), (64, 1024, 3072), (64, 4096, 1024)] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.05, (n, k), &Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let (x, w) = (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap());
            let f32_of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let want = f32_of(&x).matmul(&f32_of(&w).t().unwrap()).unwrap();
            let got = nanohost_kernels::tc_matmul(&x.to_device(&dev).unwrap(), &w.to_device(&dev).unwrap()).unwrap();
            assert_eq!(got.dims(), &[rows, n]);
            // f32 sums in another order, then one rounding to the storage type: outputs reach
            // about 12, where half a bf16 unit in the last place is 0.03.
            let d = max_diff(&want, &got);
            assert!(d <= 7e-2, "{dtype:?} {rows}x{k} . {n}x{k}: differs by {d}");
        }
    }
    let x = Tensor::zeros((65, 64), DType::BF16, &dev).unwrap();
    let w = Tensor::zeros((64, 64), DType::BF16, &dev).unwrap();
    assert!(nanohost_kernels::tc_matmul(&x, &w).unwrap_err().to_string().contains("do not fit"));
}

fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(DType::F32).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn matmuls_ending_in_swiglu_match_cpu() {
    // The fused gate/up projections (GLU kernels): the few-row kernel with splits 1, 2 and 4 (k
    // = 1,024 and 3,072, f32's shorter passes), and the tensor-core kernel at 3 to 64 rows, with
    // slices of k of 256 and (k = 3,072, 8 blocks) 384.
    let dev = gpu();
    let swiglu_f32 = |x: &Tensor, w: &Tensor| {
        let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
        nanohost_kernels::silu_mul(&f(x).matmul(&f(w).t().unwrap()).unwrap()).unwrap()
    };
    for (rows, n, k) in [(1, 3072, 1024), (2, 1000, 3072), (8, 96, 1024)] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.05, (2 * n, k), &Device::Cpu).unwrap();
        // Relative to the largest output (products of two sums reach about 30 at k = 3,072): f32
        // sums in another order, then one rounding to the storage type (bf16: 2^-8 relative).
        for (dtype, rel) in [(DType::F32, 1e-5), (DType::BF16, 1.0 / 128.0)] {
            let (x, w) = (x.to_dtype(dtype).unwrap(), w.to_dtype(dtype).unwrap());
            let got = nanohost_kernels::small_matmul_swiglu(&x.to_device(&dev).unwrap(), &w.to_device(&dev).unwrap()).unwrap();
            let want = swiglu_f32(&x, &w);
            let (d, top) = (max_diff(&want, &got), max_abs(&want));
            assert!(d <= rel * top.max(1.0), "small_matmul_swiglu {dtype:?} {rows}x{k} . {}x{k}: differs by {d} (largest output {top})", 2 * n);
        }
    }
    if nanohost_kernels::tc_matmul_swiglu_fits(&dev, DType::BF16, 3, 3072, 1024) {
        for (rows, n, k) in [(3, 3072, 1024), (16, 32, 1024), (64, 3072, 1024), (40, 96, 2048), (24, 1024, 3072)] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
            let w = Tensor::randn(0f32, 0.05, (2 * n, k), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
            let got = nanohost_kernels::tc_matmul_swiglu(&x.to_device(&dev).unwrap(), &w.to_device(&dev).unwrap()).unwrap();
            assert_eq!(got.dims(), &[rows, n]);
            let want = swiglu_f32(&x, &w);
            let (d, top) = (max_diff(&want, &got), max_abs(&want));
            assert!(d <= top.max(1.0) / 128.0, "tc_matmul_swiglu {rows}x{k} . {}x{k}: differs by {d} (largest output {top})", 2 * n);
        }
    }
}

/// `chain` on `x`, run once eagerly, then captured into a graph whose replay writes the chain's
/// result into `out` (made outside the capture): (the eager result, out, the graph).
fn capture_chain(cuda: &candle_core::CudaDevice, x: &Tensor, chain: &dyn Fn(&Tensor) -> Tensor) -> (Tensor, Tensor, candle_core::cuda_backend::cudarc::driver::CudaGraph) {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let eager = chain(x);
    let out = eager.zeros_like().unwrap();
    let stream = cuda.cuda_stream();
    stream.synchronize().unwrap();
    stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).unwrap();
    let recorded = chain(x);
    out.slice_set(&recorded, 0, 0).unwrap();
    drop(recorded);
    let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0)).unwrap().expect("a graph");
    (eager, out, graph)
}

/// Replays `graph` twice, the second time after `x` is rewritten with `other`: each replay's
/// `out` is exactly what `chain` computes eagerly on `x` then.
fn assert_replays_like_eager(cuda: &candle_core::CudaDevice, graph: &candle_core::cuda_backend::cudarc::driver::CudaGraph, x: &Tensor, other: &Tensor, out: &Tensor, chain: &dyn Fn(&Tensor) -> Tensor) {
    for round in 0..2 {
        if round == 1 {
            x.slice_set(other, 0, 0).unwrap();
        }
        graph.launch().unwrap();
        cuda.cuda_stream().synchronize().unwrap();
        assert_eq!(max_diff(&chain(x), out), 0.0, "replay {round} differs from the eager chain");
    }
}

/// The cluster launch of tc_matmul inside a captured graph, linked to its neighbours by
/// programmatic edges: the replay computes what the eager ops compute.
#[test]
fn captured_tc_matmul_replays_like_eager() {
    let dev = gpu();
    if !tc_matmul_runs(&dev) {
        return;
    }
    let Device::Cuda(cuda) = &dev else { unreachable!() };
    let bf = |t: Tensor| t.to_dtype(DType::BF16).unwrap().to_device(&dev).unwrap();
    let (w_up, w_down) = (bf(Tensor::randn(0f32, 0.05, (4096, 1024), &Device::Cpu).unwrap()), bf(Tensor::randn(0f32, 0.05, (1024, 2048), &Device::Cpu).unwrap()));
    let chain = |x: &Tensor| nanohost_kernels::tc_matmul(&silu_mul(&nanohost_kernels::tc_matmul(x, &w_up).unwrap()).unwrap(), &w_down).unwrap();
    let x = bf(Tensor::randn(0f32, 1.0, (20, 1024), &Device::Cpu).unwrap());
    let (_, out, graph) = capture_chain(cuda, &x, &chain);
    assert_replays_like_eager(cuda, &graph, &x, &bf(Tensor::randn(0f32, 1.0, (20, 1024), &Device::Cpu).unwrap()), &out, &chain);
}

#[test]
fn matmul_t_into_is_candles_matmul_written_in_place() {
    // The LM head of a captured step (matmul_into.rs): the same cuBLAS call as candle's matmul,
    // so the same values, bit for bit; rows past the product's keep what they held.
    let dev = gpu();
    for rows in [1usize, 5, 64] {
        let x = Tensor::randn(0f32, 1.0, (rows, 1024), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap().to_device(&dev).unwrap();
        let w = Tensor::randn(0f32, 0.05, (3000, 1024), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap().to_device(&dev).unwrap();
        let out = Tensor::ones((80, 3000), DType::BF16, &dev).unwrap();
        nanohost_kernels::matmul_t_into(&out, &x, &w).unwrap();
        let want = x.matmul(&w.t().unwrap()).unwrap();
        assert_eq!(max_diff(&want, &out.narrow(0, 0, rows).unwrap()), 0.0, "{rows} rows");
        let rest = out.narrow(0, rows, 80 - rows).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(rest.iter().all(|&v| v == 1.0), "{rows} rows: the rows after them were written");
    }
}

/// Programmatic edges in a captured graph (launch.rs, capture_links.rs): a chain of nanohost ops,
/// with candle allocating and freeing between them, captured and replayed. Each kernel after the
/// first is linked to the one before it (on sm_90 and later), and the replay computes exactly
/// what the eager ops compute, also after the input buffer is rewritten. The capture begins with
/// an allocation, a root node: asking the driver for a root's (no) predecessors with empty arrays
/// was an invalid argument, and this test's segmentation fault (results/gpu-h200-2026-11-28-pdl/).
#[test]
fn captured_chain_is_linked_programmatically_and_replays_like_eager() {
    let dev = gpu();
    let Device::Cuda(cuda) = &dev else { unreachable!() };
    let bf = |t: Tensor| t.to_dtype(DType::BF16).unwrap().to_device(&dev).unwrap();
    let (w_up, w_down, norm) = (
        bf(Tensor::randn(0f32, 0.05, (4096, 1024), &Device::Cpu).unwrap()),
        bf(Tensor::randn(0f32, 0.05, (1024, 2048), &Device::Cpu).unwrap()),
        bf(Tensor::randn(1f32, 0.1, 1024, &Device::Cpu).unwrap()),
    );
    // small_matmul -> silu_mul -> small_matmul -> add_rms_norm -> small_matmul: five kernels.
    let chain = |x: &Tensor| {
        let a = silu_mul(&nanohost_kernels::small_matmul(x, &w_up).unwrap()).unwrap();
        let d = nanohost_kernels::small_matmul(&a, &w_down).unwrap();
        let (_, h) = nanohost_kernels::add_rms_norm(x, &d, &norm, 1e-6).unwrap();
        nanohost_kernels::small_matmul(&h, &w_up).unwrap()
    };
    let input = bf(Tensor::randn(0f32, 1.0, (1, 1024), &Device::Cpu).unwrap());
    let x = input.zeros_like().unwrap();
    x.slice_set(&input, 0, 0).unwrap();
    let (eager, out, graph) = capture_chain(cuda, &x, &chain);
    // SAFETY: the graph is alive.
    let programmatic = unsafe { nanohost_kernels::graph_anatomy::anatomy(graph.cu_graph()) }.unwrap().programmatic_edges;
    if nanohost_kernels::programmatic_launch(&dev) {
        assert!(programmatic >= 4, "5 chained nanohost kernels, {programmatic} programmatic edges");
    } else {
        assert_eq!(programmatic, 0);
    }
    assert_replays_like_eager(cuda, &graph, &x, &bf(Tensor::randn(0f32, 1.0, (1, 1024), &Device::Cpu).unwrap()), &out, &chain);
    assert_eq!(max_diff(&eager, &chain(&input)), 0.0);
}

#[test]
fn tokens_move_on_the_device_and_come_back_while_later_work_is_queued() {
    // What a decode step queued behind the one before does with that step's sampled tokens:
    // StepStage's kernel puts the step's inputs (from mapped page-locked memory) and the tokens
    // in the next step's input buffer on the device, and the tokens on the host, without
    // waiting for what was queued after it (a large matmul here), which then still finishes
    // with its own result.
    let dev = gpu();
    let mut stage = nanohost_kernels::StepStage::default();
    let inputs = Tensor::zeros(8, DType::U32, &dev).unwrap();
    let ints = [1u32, 2, 3, 4, 5, 6];
    stage.stage(&inputs, &ints, &[(0..4, 0), (4..6, 6)], None).unwrap();
    assert_eq!(inputs.to_vec1::<u32>().unwrap(), [1, 2, 3, 4, 0, 0, 5, 6]);
    let sampled = Tensor::new(&[7u32, 8, 9], &dev).unwrap();
    stage.stage(&inputs, &[10, 20, 30, 40], &[(0..4, 0)], Some(&sampled)).unwrap();
    let a = Tensor::ones((2048, 2048), DType::F32, &dev).unwrap();
    let later = a.matmul(&a).unwrap();
    assert_eq!(stage.tokens().unwrap(), [7, 8, 9]);
    assert!(stage.tokens().is_err(), "a second read with no tokens staged");
    // Between the pieces, what the first image held there (the other image, the step before's,
    // is the one the second kernel read: 0 there).
    assert_eq!(inputs.to_vec1::<u32>().unwrap(), [7, 8, 9, 40, 0, 0, 5, 6]);
    assert_eq!(later.get(0).unwrap().get(0).unwrap().to_scalar::<f32>().unwrap(), 2048.0);
    // Longer steps grow the page-locked buffers; images alternate, each step complete.
    let big = Tensor::zeros(20_000, DType::U32, &dev).unwrap();
    for round in 0..3u32 {
        let ints: Vec<u32> = (0..20_000).map(|i| i * 3 + round).collect();
        let long = Tensor::arange(round, round + 1000, &dev).unwrap();
        stage.stage(&big, &ints, &[(0..20_000, 0)], Some(&long)).unwrap();
        assert_eq!(stage.tokens().unwrap(), (round..round + 1000).collect::<Vec<u32>>());
        let got = big.to_vec1::<u32>().unwrap();
        assert_eq!(&got[..1000], (round..round + 1000).collect::<Vec<u32>>().as_slice());
        assert_eq!(&got[1000..], &ints[1000..]);
    }
    assert!(stage.stage(&inputs, &ints, &[(0..6, 4)], None).unwrap_err().to_string().contains("do not fit"));
}
