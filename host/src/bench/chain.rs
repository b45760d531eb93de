//! What one kernel costs inside a decode step's chain, apart from the model: each chain is
//! `reps` launches of one op captured in one CUDA graph (with programmatic launch where it is
//! on) and replayed, so the figure per launch includes the boundary to the next kernel, as in a
//! replayed decode step. The matmul chains cycle through `reps` distinct weights, so that each
//! launch reads its weight from DRAM as a step does; an `empty` chain (a kernel with next to
//! no work) gives the cost of the boundary itself. This is the floor to count before tuning a
//! kernel of the step: bytes / time against the card's bandwidth, and launches times the
//! boundary.

use super::attention::{noise, noise_pool};
use crate::engine::kv_pool::{KvPool, DEFAULT_BLOCK_SIZE};
use crate::model::cuda_graph::record;
use crate::model::Qwen3Config;
use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;
use nanohost_kernels::{
    add_rms_norm, paged_attention, qkv_norm_rope_write, silu_mul, small_matmul,
    small_matmul_swiglu, tc_matmul, tc_matmul_fits, tc_matmul_swiglu, tc_matmul_swiglu_fits,
    AttentionBatch, KvSpan, QkvNorms, SeqAttention, SMALL_MATMUL_MAX_ROWS,
};
use serde_json::{json, Value};
use std::time::Instant;

pub struct ChainBench {
    pub rows: Vec<usize>,
    /// Launches per captured chain (a step has one per layer of each op: 28 for Qwen3-0.6B).
    pub reps: usize,
    pub iters: usize,
}

/// The decode step's projections at the model's shape: (name, output columns, inner size, how
/// many distinct weights a chain cycles through at most: the LM head is large enough that 4
/// copies already exceed any L2).
fn projections(cfg: &Qwen3Config) -> [(&'static str, usize, usize, usize); 5] {
    let (h, q, kv) = (
        cfg.hidden_size,
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let all = usize::MAX;
    [
        ("qkv_proj", q + 2 * kv, h, all),
        ("o_proj", h, q, all),
        ("gate_up_proj", 2 * cfg.intermediate_size, h, all),
        ("down_proj", h, cfg.intermediate_size, all),
        ("lm_head", cfg.vocab_size, h, 4),
    ]
}

/// Microseconds per op of a chain of `ops` ops that `chain` records (a cuBLAS matmul may be
/// two kernels), replayed after one eager run.
fn time_chain(
    device: &Device,
    iters: usize,
    ops: usize,
    chain: impl Fn() -> Result<()>,
) -> Result<f64> {
    let Device::Cuda(dev) = device else {
        anyhow::bail!("bench-chain needs a CUDA device")
    };
    let stream = dev.cuda_stream();
    // Once eagerly first, as a decode step's capture does: buffers an op keeps for good (the
    // completion counters) are made outside the graph.
    chain()?;
    let graph = record(&stream, chain)?;
    graph.launch()?;
    stream.synchronize()?;
    let t = Instant::now();
    for _ in 0..iters {
        graph.launch()?;
    }
    stream.synchronize()?;
    Ok(t.elapsed().as_secs_f64() * 1e6 / (iters * ops) as f64)
}

/// `op` `n` times, its results dropped as they come (as a step drops what it no longer needs).
fn repeat<T>(n: usize, op: impl Fn() -> candle_core::Result<T>) -> Result<()> {
    for _ in 0..n {
        op()?;
    }
    Ok(())
}

pub fn run(b: &ChainBench, cfg: &Qwen3Config, device: &Device, dtype: DType) -> Result<Vec<Value>> {
    anyhow::ensure!(
        b.reps > 0 && b.iters > 0,
        "bench-chain needs --reps and --iters of at least 1"
    );
    let randn = |shape: (usize, usize), std: f32| noise(shape, std, device, dtype);
    let eps = cfg.rms_norm_eps as f32;
    let elem = dtype.size_in_bytes();
    let weights: Vec<(&str, Vec<Linear>)> = projections(cfg)
        .into_iter()
        .map(|(name, n, k, most)| {
            Ok((
                name,
                (0..b.reps.min(most))
                    .map(|_| Ok(Linear::new(randn((n, k), 0.02)?, None)))
                    .collect::<Result<Vec<_>>>()?,
            ))
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    let mut row = |chain: &str, rows: usize, ops: usize, bytes: usize, us: f64| {
        tracing::info!(chain, rows, us_per_op = us, "chain");
        out.push(json!({ "chain": chain, "rows": rows, "ops": ops, "us_per_op": us, "weight_bytes": bytes, "gb_per_s": bytes as f64 / us / 1e3 }));
    };
    for &rows in &b.rows {
        let tiny = randn((rows, 64), 1.0)?;
        let us = time_chain(device, b.iters, b.reps, || {
            repeat(b.reps, || silu_mul(&tiny))
        })?;
        row("empty (silu_mul of 32 columns)", rows, b.reps, 0, us);
        let (x, d) = (
            randn((rows, cfg.hidden_size), 1.0)?,
            randn((rows, cfg.hidden_size), 1.0)?,
        );
        let w = randn((1, cfg.hidden_size), 0.1)?.squeeze(0)?;
        let us = time_chain(device, b.iters, b.reps, || {
            let (mut x, mut h) = (x.clone(), d.clone());
            for _ in 0..b.reps {
                (x, h) = add_rms_norm(&x, &h, &w, eps)?;
            }
            Ok(())
        })?;
        row("add_rms_norm", rows, b.reps, 0, us);
        let a = AttentionInputs::new(cfg, rows, device, dtype)?;
        let (k, v) = a.pool.layer(0);
        let norms = QkvNorms {
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            q_norm: &a.q_norm,
            k_norm: &a.k_norm,
            eps,
        };
        let us = time_chain(device, b.iters, b.reps, || {
            repeat(b.reps, || {
                qkv_norm_rope_write(&a.qkv, &norms, &a.cos_sin, k, v, &a.slots)
            })
        })?;
        row("qkv_norm_rope_write", rows, b.reps, 0, us);
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        let us = time_chain(device, b.iters, b.reps, || {
            repeat(b.reps, || paged_attention(&a.q, k, v, &a.batch, scale))
        })?;
        row(
            &format!("paged_attention ({ATTENTION_CONTEXT} keys a row)"),
            rows,
            b.reps,
            0,
            us,
        );
        let gate_up = randn((rows, 2 * cfg.intermediate_size), 1.0)?;
        let us = time_chain(device, b.iters, b.reps, || {
            repeat(b.reps, || silu_mul(&gate_up))
        })?;
        row("silu_mul", rows, b.reps, 0, us);
        for (name, ws) in &weights {
            let (n, k) = ws[0].weight().dims2()?;
            let x = randn((rows, k), 1.0)?;
            let bytes = n * k * elem;
            if rows <= SMALL_MATMUL_MAX_ROWS && device.is_cuda() {
                let us = time_chain(device, b.iters, ws.len(), || {
                    ws.iter().try_for_each(|w| {
                        small_matmul(&x, w.weight())?;
                        Ok(())
                    })
                })?;
                row(
                    &format!("small_matmul {name} {n}x{k}"),
                    rows,
                    ws.len(),
                    bytes,
                    us,
                );
            }
            if tc_matmul_fits(device, dtype, rows, n, k) {
                let us = time_chain(device, b.iters, ws.len(), || {
                    ws.iter().try_for_each(|w| {
                        tc_matmul(&x, w.weight())?;
                        Ok(())
                    })
                })?;
                row(
                    &format!("tc_matmul {name} {n}x{k}"),
                    rows,
                    ws.len(),
                    bytes,
                    us,
                );
            }
            if *name == "gate_up_proj" {
                // The projection and the SwiGLU gate in one kernel (against the rows above plus
                // silu_mul's).
                if rows <= SMALL_MATMUL_MAX_ROWS && device.is_cuda() {
                    let us = time_chain(device, b.iters, ws.len(), || {
                        ws.iter().try_for_each(|w| {
                            small_matmul_swiglu(&x, w.weight())?;
                            Ok(())
                        })
                    })?;
                    row(
                        &format!("small_matmul_swiglu {name} {n}x{k}"),
                        rows,
                        ws.len(),
                        bytes,
                        us,
                    );
                }
                if tc_matmul_swiglu_fits(device, dtype, rows, n / 2, k) {
                    let us = time_chain(device, b.iters, ws.len(), || {
                        ws.iter().try_for_each(|w| {
                            tc_matmul_swiglu(&x, w.weight())?;
                            Ok(())
                        })
                    })?;
                    row(
                        &format!("tc_matmul_swiglu {name} {n}x{k}"),
                        rows,
                        ws.len(),
                        bytes,
                        us,
                    );
                }
            }
            let us = time_chain(device, b.iters, ws.len(), || {
                ws.iter().try_for_each(|w| {
                    w.forward(&x)?;
                    Ok(())
                })
            })?;
            row(&format!("cublas {name} {n}x{k}"), rows, ws.len(), bytes, us);
        }
    }
    Ok(out)
}

/// Keys each decode row attends in the attention chains: the latency workload's mean (a
/// 256-token prompt and half of its 128 new tokens).
const ATTENTION_CONTEXT: usize = 320;

/// The attention block's inputs for `rows` decode rows of ATTENTION_CONTEXT keys each, in a
/// one-layer pool of random keys and values (eager metadata: graph replay widens it to the
/// row-key bucket, which may split the keys over more blocks).
struct AttentionInputs {
    pool: KvPool,
    batch: AttentionBatch,
    q: Tensor,
    qkv: Tensor,
    cos_sin: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    /// The new token of row r goes to the last slot of its context.
    slots: Tensor,
}

impl AttentionInputs {
    fn new(cfg: &Qwen3Config, rows: usize, device: &Device, dtype: DType) -> Result<Self> {
        let bs = DEFAULT_BLOCK_SIZE;
        let per_row = ATTENTION_CONTEXT.div_ceil(bs);
        let pool = noise_pool(cfg, rows * per_row, bs, dtype, device)?;
        let randn = |shape: &[usize]| noise(shape, 1.0, device, dtype);
        let seqs: Vec<SeqAttention> = (0..rows)
            .map(|r| {
                let blocks = (r * per_row) as u32..((r + 1) * per_row) as u32;
                SeqAttention {
                    q_start: r,
                    q_len: 1,
                    context: vec![KvSpan {
                        first: 0,
                        blocks: blocks.collect(),
                        len: ATTENTION_CONTEXT,
                        shift: 0,
                    }],
                }
            })
            .collect();
        let batch = AttentionBatch::new(&seqs, &[], rows, bs, pool.num_blocks(), device)?;
        let (hd, heads, kv_heads) = (
            cfg.head_dim,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
        );
        let slots: Vec<u32> = (0..rows)
            .map(|r| (r * per_row * bs + ATTENTION_CONTEXT - 1) as u32)
            .collect();
        Ok(AttentionInputs {
            batch,
            q: randn(&[rows, heads, hd])?,
            qkv: randn(&[rows, (heads + 2 * kv_heads) * hd])?,
            cos_sin: randn(&[rows, hd])?,
            q_norm: randn(&[hd])?,
            k_norm: randn(&[hd])?,
            slots: Tensor::from_vec(slots, rows, device)?,
            pool,
        })
    }
}
