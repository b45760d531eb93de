//! Re-rotation of stored keys: a key stored for position p, rotated by s, equals the key computed
//! at p + s; attention over a shifted span equals attention over keys computed where it sits.

mod common;
use candle_core::{DType, Device, Tensor};
use common::max_diff;
use nanohost_kernels::{
    context_slot, paged_attention, rerotate_keys, rms_norm_rope, write_kv, AttentionBatch, KvSpan,
    SeqAttention,
};

const THETA: f64 = 1_000_000.0;

/// `[positions, head_dim]` cos then sin rows, built as the model builds its tables.
fn cos_sin(positions: &[u32], head_dim: usize) -> Tensor {
    let dev = Device::Cpu;
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / THETA.powf(i as f64 / head_dim as f64) as f32)
        .collect();
    let half = inv.len();
    let t = Tensor::new(
        positions
            .iter()
            .map(|&p| p as f32)
            .collect::<Vec<_>>()
            .as_slice(),
        &dev,
    )
    .unwrap()
    .reshape((positions.len(), 1))
    .unwrap();
    let freqs = t
        .matmul(&Tensor::from_vec(inv, (1, half), &dev).unwrap())
        .unwrap();
    Tensor::cat(&[freqs.cos().unwrap(), freqs.sin().unwrap()], 1).unwrap()
}

/// Raw keys `[n, heads * head_dim]` normed and rotated for `positions`: `[n, heads, head_dim]`.
fn keys_at(raw: &Tensor, heads: usize, head_dim: usize, positions: &[u32]) -> Tensor {
    let w = Tensor::ones(head_dim, DType::F32, &Device::Cpu).unwrap();
    rms_norm_rope(raw, heads, &w, &cos_sin(positions, head_dim), 1e-6)
        .unwrap()
        .reshape((positions.len(), heads, head_dim))
        .unwrap()
}

#[test]
fn a_rerotated_key_equals_the_key_computed_at_the_target_position() {
    let (n, heads, d) = (40, 2, 64);
    let raw = Tensor::randn(0f32, 1.0, (n, heads * d), &Device::Cpu).unwrap();
    for (from, shift) in [(0u32, 37i32), (100, -60), (5, 2000), (3000, 1), (7, 0)] {
        let at: Vec<u32> = (from..from + n as u32).collect();
        let target: Vec<u32> = at.iter().map(|&p| (p as i32 + shift) as u32).collect();
        let stored = keys_at(&raw, heads, d, &at);
        let moved = rerotate_keys(&stored, shift, THETA).unwrap();
        let diff = max_diff(&moved, &keys_at(&raw, heads, d, &target));
        // The tables themselves are f32: an angle of P radians is known to about P x 2^-24, so
        // both sides carry that much error at the largest position they use.
        let largest = at.iter().chain(&target).copied().max().unwrap() as f32;
        let magnitude = stored
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let tol = 4.0 * f32::EPSILON * largest * magnitude + 1e-5;
        assert!(
            diff < tol,
            "stored at {from}, shifted by {shift}: differs by {diff} (tolerance {tol})"
        );
    }
}

#[test]
fn attention_over_a_shifted_span_equals_keys_computed_where_it_sits() {
    // Context: 20 entries computed in place, then a 30-entry chunk whose keys were computed for
    // positions 500.. but which sits at 20.. (shift -480). The reference holds the same chunk's
    // keys computed at 20.. in other blocks.
    let (heads, kv_heads, d, bs) = (4, 2, 32, 8);
    let dev = Device::Cpu;
    let (a, b) = (20usize, 30usize);
    let raw_k = Tensor::randn(0f32, 1.0, (a + b, kv_heads * d), &dev).unwrap();
    let v = Tensor::randn(0f32, 1.0, (a + b, kv_heads, d), &dev).unwrap();
    let in_place: Vec<u32> = (0..(a + b) as u32).collect();
    let stored_for: Vec<u32> = (0..a as u32).chain(500..500 + b as u32).collect();
    let k_in_place = keys_at(&raw_k, kv_heads, d, &in_place);
    let k_stored = keys_at(&raw_k, kv_heads, d, &stored_for);
    let pool = |k: &Tensor, spans: &[KvSpan]| {
        let kp = Tensor::zeros((16, bs, kv_heads, d), DType::F32, &dev).unwrap();
        let vp = kp.zeros_like().unwrap();
        let n: usize = spans.iter().map(|s| s.len).sum();
        let slots: Vec<u32> = (0..n)
            .map(|j| context_slot(spans, j, bs).unwrap())
            .collect();
        let slots = Tensor::new(slots.as_slice(), &dev).unwrap();
        write_kv(&kp, k, &slots).unwrap();
        write_kv(&vp, &v.narrow(0, 0, n).unwrap(), &slots).unwrap();
        (kp, vp)
    };
    let q = Tensor::randn(0f32, 1.0, (3, heads, d), &dev).unwrap();
    let first = KvSpan {
        first: 0,
        blocks: vec![9, 2, 5],
        len: a,
        shift: 0,
    };
    let chunk = |shift| KvSpan {
        first: 0,
        blocks: vec![0, 7, 3, 11],
        len: b,
        shift,
    };
    let run = |spans: Vec<KvSpan>, k: &Tensor| {
        let (kp, vp) = pool(k, &spans);
        let seqs = [SeqAttention {
            q_start: 0,
            q_len: 3,
            context: spans,
        }];
        let batch = AttentionBatch::new(&seqs, &[], 3, bs, 16, &dev)
            .unwrap()
            .with_rope_theta(THETA);
        paged_attention(&q, &kp, &vp, &batch, 0.2).unwrap()
    };
    let want = run(vec![first.clone(), chunk(0)], &k_in_place);
    let got = run(vec![first.clone(), chunk(a as i32 - 500)], &k_stored);
    let unshifted = run(vec![first.clone(), chunk(0)], &k_stored);
    let diff = max_diff(&got, &want);
    assert!(diff < 1e-4, "shifted span attended differs by {diff}");
    assert!(
        max_diff(&unshifted, &want) > 1e-2,
        "the test must see the shift: without it the output differs"
    );
    // The same batch widened to room for more slots (as a CUDA graph's fixed buffer holds it):
    // the compact metadata goes in pieces, the rest of the buffer is poison that must not be read.
    let spans = vec![first.clone(), chunk(a as i32 - 500)];
    let (kp, vp) = pool(&k_stored, &spans);
    let seqs = [SeqAttention {
        q_start: 0,
        q_len: 3,
        context: spans,
    }];
    let (compact, mut layout) = AttentionBatch::flatten(&seqs, &[], 3, bs, 16).unwrap();
    layout.widen(a + b + 77).unwrap();
    assert!(layout.widen(a + b - 1).is_err());
    let mut buffer = vec![0xdead_beef_u32; layout.total_len()];
    for (range, at) in layout.pieces() {
        buffer[at..at + range.len()].copy_from_slice(&compact[range]);
    }
    assert_eq!(
        layout.pieces().len(),
        2,
        "a shifted batch has its shifts placed apart"
    );
    let len = buffer.len();
    let widened = AttentionBatch::from_meta(Tensor::from_vec(buffer, len, &dev).unwrap(), layout)
        .unwrap()
        .with_rope_theta(THETA);
    assert_eq!(
        max_diff(&paged_attention(&q, &kp, &vp, &widened, 0.2).unwrap(), &got),
        0.0
    );
    let seqs = [SeqAttention {
        q_start: 0,
        q_len: 1,
        context: vec![chunk(-3)],
    }];
    let (kp, vp) = pool(&k_stored.narrow(0, 0, b).unwrap(), &[chunk(-3)]);
    let no_theta = AttentionBatch::new(&seqs, &[], 1, bs, 16, &dev).unwrap();
    let err = paged_attention(&q.narrow(0, 0, 1).unwrap(), &kp, &vp, &no_theta, 0.2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no RoPE base"), "{err}");
}
