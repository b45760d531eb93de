//! The ops that take a step one row at a time: norms, RoPE, KV writes, the SwiGLU gate, the
//! step's first kernel.

use super::{common::max_diff, gpu, max_abs};
use candle_core::{DType, Device, Tensor};
use nanohost_kernels::{rms_norm_rope, silu_mul, write_kv};

#[test]
fn norm_rope_and_strided_kv_write_match_cpu() {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let (tokens, heads, kv_heads, d) = (37, 16, 8, 128);
    for dtype in [DType::F32, DType::BF16] {
        let proj = Tensor::randn(0f32, 1.0, (tokens, (heads + 2 * kv_heads) * d), &cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let w = Tensor::randn(1f32, 0.1, d, &cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let cs = Tensor::randn(0f32, 1.0, (tokens, d), &cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let run = |dev: &Device| {
            let (p, w, cs) = (
                proj.to_device(dev).unwrap(),
                w.to_device(dev).unwrap(),
                cs.to_device(dev).unwrap(),
            );
            let k = rms_norm_rope(
                &p.narrow(1, heads * d, kv_heads * d).unwrap(),
                kv_heads,
                &w,
                &cs,
                1e-6,
            )
            .unwrap();
            let pool = Tensor::zeros((8, 16, kv_heads, d), dtype, dev).unwrap();
            let slots = Tensor::new(
                (0..tokens as u32)
                    .map(|t| t * 3 % 128)
                    .collect::<Vec<_>>()
                    .as_slice(),
                dev,
            )
            .unwrap();
            write_kv(
                &pool,
                &p.narrow(1, (heads + kv_heads) * d, kv_heads * d).unwrap(),
                &slots,
            )
            .unwrap();
            (k, pool)
        };
        let (k_cpu, pool_cpu) = run(&cpu);
        let (k_gpu, pool_gpu) = run(&gpu);
        // bf16: one rounding of values up to about 10 (normed, times a random cos/sin) is 2^-8
        // relative; a sum in another order may round to the neighbour (0.03125 seen at 4-8).
        let top = max_abs(&k_cpu);
        let tol = if dtype == DType::F32 {
            1e-5
        } else {
            top.max(1.0) / 128.0
        };
        let d1 = max_diff(&k_cpu, &k_gpu);
        assert!(
            d1 <= tol,
            "{dtype:?} norm+rope differs by {d1} (largest output {top})"
        );
        assert_eq!(
            max_diff(&pool_cpu, &pool_gpu),
            0.0,
            "{dtype:?} strided write_kv differs"
        );
    }
}

#[test]
fn silu_mul_matches_cpu() {
    // 3,072: 16-byte vectors of outputs; 1,001: one output a thread (norm.cuh).
    for width in [3072, 1001] {
        let x = Tensor::randn(0f32, 2.0, (5, 2 * width), &Device::Cpu).unwrap();
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
            let x = x.to_dtype(dtype).unwrap();
            let d = max_diff(
                &silu_mul(&x).unwrap(),
                &silu_mul(&x.to_device(&gpu()).unwrap()).unwrap(),
            );
            assert!(d <= tol, "{dtype:?} width {width}: silu_mul differs by {d}");
        }
    }
}

#[test]
fn fused_qkv_norm_rope_write_matches_the_cpu_composition() {
    let (cpu, gpu) = (Device::Cpu, gpu());
    let (tokens, heads, kv_heads, d) = (37, 16, 8, 128);
    for dtype in [DType::F32, DType::BF16] {
        let qkv = Tensor::randn(0f32, 1.0, (tokens, (heads + 2 * kv_heads) * d), &cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let qw = Tensor::randn(1f32, 0.1, d, &cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let kw = Tensor::randn(1f32, 0.1, d, &cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let cs = Tensor::randn(0f32, 1.0, (tokens, d), &cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        // The last token's slot is past the pool: skipped, as write_kv skips it.
        let slots: Vec<u32> = (0..tokens as u32)
            .map(|t| {
                if t + 1 == tokens as u32 {
                    10_000
                } else {
                    t * 3 % 128
                }
            })
            .collect();
        let run = |dev: &Device| {
            let (qkv, qw, kw, cs) = (
                qkv.to_device(dev).unwrap(),
                qw.to_device(dev).unwrap(),
                kw.to_device(dev).unwrap(),
                cs.to_device(dev).unwrap(),
            );
            // Poisoned pools: the writes must land exactly where the composition puts them.
            let kp = Tensor::full(7f32, (8, 16, kv_heads, d), dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let vp = Tensor::full(-3f32, (8, 16, kv_heads, d), dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let n = nanohost_kernels::QkvNorms {
                heads,
                kv_heads,
                q_norm: &qw,
                k_norm: &kw,
                eps: 1e-6,
            };
            let st = Tensor::new(slots.as_slice(), dev).unwrap();
            let st = if dev.is_cpu() {
                st.narrow(0, 0, tokens - 1).unwrap()
            } else {
                st
            };
            let q = if dev.is_cpu() {
                // The CPU composition would refuse the out-of-pool slot: compose over the rest.
                let q = nanohost_kernels::qkv_norm_rope_write(
                    &qkv.narrow(0, 0, tokens - 1).unwrap(),
                    &n,
                    &cs.narrow(0, 0, tokens - 1).unwrap(),
                    &kp,
                    &vp,
                    &st,
                )
                .unwrap();
                let last = rms_norm_rope(
                    &qkv.narrow(0, tokens - 1, 1)
                        .unwrap()
                        .narrow(1, 0, heads * d)
                        .unwrap(),
                    heads,
                    &qw,
                    &cs.narrow(0, tokens - 1, 1).unwrap(),
                    1e-6,
                )
                .unwrap();
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
        let (x, dx, w) = (
            x.to_dtype(dtype).unwrap(),
            dx.to_dtype(dtype).unwrap(),
            w.to_dtype(dtype).unwrap(),
        );
        let (s_cpu, h_cpu) = nanohost_kernels::add_rms_norm(&x, &dx, &w, 1e-6).unwrap();
        let g = |t: &Tensor| t.to_device(&gpu()).unwrap();
        let (s_gpu, h_gpu) = nanohost_kernels::add_rms_norm(&g(&x), &g(&dx), &g(&w), 1e-6).unwrap();
        assert_eq!(
            max_diff(&s_cpu, &s_gpu),
            0.0,
            "{dtype:?} hidden {hidden}: sums differ"
        );
        let d = max_diff(&h_cpu, &h_gpu);
        assert!(
            d <= tol,
            "{dtype:?} hidden {hidden}: normed rows differ by {d}"
        );
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
        let (embed, w, table) = (
            embed.to_dtype(dtype).unwrap(),
            w.to_dtype(dtype).unwrap(),
            table.to_dtype(dtype).unwrap(),
        );
        let (x, h, cs) =
            nanohost_kernels::embed_rms_norm_rope(&embed, &ids_pos, &w, &table, 1e-6).unwrap();
        let g = |t: &Tensor| t.to_device(&gpu()).unwrap();
        let (xg, hg, csg) = nanohost_kernels::embed_rms_norm_rope(
            &g(&embed),
            &g(&ids_pos),
            &g(&w),
            &g(&table),
            1e-6,
        )
        .unwrap();
        assert_eq!(max_diff(&x, &xg), 0.0, "{dtype:?}: embedding rows differ");
        assert_eq!(max_diff(&cs, &csg), 0.0, "{dtype:?}: RoPE rows differ");
        let d = max_diff(&h, &hg);
        assert!(d <= tol, "{dtype:?}: normed rows differ by {d}");
    }
}
