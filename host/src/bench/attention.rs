//! Cascade against flat paged attention, the op alone, on the same KV: decode rows of `batch`
//! sequences that share a `prefix`-token prompt start (its full blocks stored once, as the
//! cascade plugin places them) followed by private suffixes. What cascade saves is reading the
//! shared blocks once per group instead of once per sequence, so this measures where that pays
//! (the crossover) apart from everything else in a decode step.

use crate::engine::cascade::shared_groups;
use crate::engine::kv_pool::{KvPool, PoolSize};
use crate::model::Qwen3Config;
use crate::rng::Rng;
use anyhow::Result;
use candle_core::{DType, Device, Shape, Tensor};
use nanohost_kernels::{paged_attention, AttentionBatch, KvSpan, SeqAttention};
use serde_json::{json, Value};
use std::time::Instant;

pub struct AttentionBench {
    pub prefix_lens: Vec<usize>,
    pub batch_sizes: Vec<usize>,
    /// Private tokens per sequence after the prefix, drawn uniformly from this range.
    pub suffix: (usize, usize),
    pub iters: usize,
    pub block_size: usize,
    pub seed: u64,
}

/// Normal noise of `shape` with standard deviation `std`, in `dtype`: the benchmarks' stand-in
/// for activations, weights and cached keys.
pub(crate) fn noise(
    shape: impl Into<Shape>,
    std: f32,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    Ok(Tensor::randn(0f32, std, shape, device)?.to_dtype(dtype)?)
}

/// A one-layer pool of the model's KV shape, `blocks` blocks of `block_size`, its keys and
/// values noise.
pub(crate) fn noise_pool(
    cfg: &Qwen3Config,
    blocks: usize,
    block_size: usize,
    dtype: DType,
    device: &Device,
) -> Result<KvPool> {
    let one_layer = Qwen3Config {
        num_hidden_layers: 1,
        ..cfg.clone()
    };
    let pool = KvPool::new(
        &one_layer,
        PoolSize::Blocks(blocks),
        block_size,
        dtype,
        device,
    )?;
    let (k, v) = pool.layer(0);
    for p in [k, v] {
        p.slice_set(&noise(p.shape(), 1.0, device, dtype)?, 0, 0)?;
    }
    Ok(pool)
}

/// One layer's pool and queries at the model's attention shape; microseconds per call of each
/// mode (after warm-up, device synchronised), the per-step figure (times the model's layers),
/// and the largest difference between the two outputs.
pub fn run(
    b: &AttentionBench,
    cfg: &Qwen3Config,
    device: &Device,
    dtype: DType,
) -> Result<Vec<Value>> {
    let bs = b.block_size;
    let mut out = Vec::new();
    for &prefix in &b.prefix_lens {
        for &batch in &b.batch_sizes {
            let mut rng = Rng::derive(b.seed, &format!("attention-bench/{prefix}/{batch}"));
            let shared_blocks = prefix / bs;
            let own: Vec<usize> = (0..batch)
                .map(|_| {
                    prefix - shared_blocks * bs
                        + rng.range_inclusive(b.suffix.0 as u64, b.suffix.1 as u64) as usize
                })
                .collect();
            let blocks = shared_blocks + own.iter().map(|n| n.div_ceil(bs)).sum::<usize>();
            let pool = noise_pool(cfg, blocks, bs, dtype, device)?;
            let (k_pool, v_pool) = pool.layer(0);
            let shared = KvSpan {
                first: 0,
                blocks: (0..shared_blocks as u32).collect(),
                len: shared_blocks * bs,
                shift: 0,
            };
            let mut next = shared_blocks as u32;
            let seqs: Vec<SeqAttention> = own
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let mine = KvSpan {
                        first: 0,
                        blocks: (next..next + n.div_ceil(bs) as u32).collect(),
                        len: n,
                        shift: 0,
                    };
                    next += mine.blocks.len() as u32;
                    let context = if shared.len > 0 {
                        vec![shared.clone(), mine]
                    } else {
                        vec![mine]
                    };
                    SeqAttention {
                        q_start: i,
                        q_len: 1,
                        context,
                    }
                })
                .collect();
            // Every group, whatever its size: this measures where the threshold should be.
            let groups = shared_groups(&seqs, &vec![true; batch], bs, 0);
            let q = noise(
                (batch, cfg.num_attention_heads, cfg.head_dim),
                1.0,
                device,
                dtype,
            )?;
            let scale = 1.0 / (cfg.head_dim as f32).sqrt();
            // Wall time per call after the device finished, and the host's share: the time to
            // issue the calls (when it is close to the total, the op is bound by launch cost).
            let time = |groups: &[nanohost_kernels::SharedGroup]| -> Result<(f64, f64, Tensor)> {
                let batch =
                    AttentionBatch::new(&seqs, groups, seqs.len(), bs, pool.num_blocks(), device)?;
                let mut y = paged_attention(&q, k_pool, v_pool, &batch, scale)?;
                for _ in 0..3 {
                    y = paged_attention(&q, k_pool, v_pool, &batch, scale)?;
                }
                device.synchronize()?;
                let start = Instant::now();
                for _ in 0..b.iters {
                    y = paged_attention(&q, k_pool, v_pool, &batch, scale)?;
                }
                let issued = start.elapsed();
                device.synchronize()?;
                let per_call = |d: std::time::Duration| d.as_secs_f64() * 1e6 / b.iters as f64;
                Ok((per_call(start.elapsed()), per_call(issued), y))
            };
            let (flat_us, flat_issue_us, flat) = time(&[])?;
            let (cascade_us, cascade_issue_us, cascade) = time(&groups)?;
            let diff = (flat.to_dtype(DType::F32)? - cascade.to_dtype(DType::F32)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            let kv_entries: usize = seqs.iter().map(|s| s.kv_len()).sum();
            out.push(json!({
                "prefix_len": prefix,
                "batch_size": batch,
                "shared_entries": groups.first().map_or(0, |g| g.len),
                "kv_entries_flat": kv_entries,
                "flat_us_per_layer": flat_us,
                "cascade_us_per_layer": cascade_us,
                "flat_issue_us_per_layer": flat_issue_us,
                "cascade_issue_us_per_layer": cascade_issue_us,
                "flat_ms_per_step": flat_us * cfg.num_hidden_layers as f64 / 1e3,
                "cascade_ms_per_step": cascade_us * cfg.num_hidden_layers as f64 / 1e3,
                "speedup": flat_us / cascade_us,
                "max_abs_diff": diff,
            }));
        }
    }
    Ok(out)
}
