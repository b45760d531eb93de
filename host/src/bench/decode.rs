//! Decode step time at fixed batch sizes: the number to hold against the memory-bandwidth floor
//! (one read of all weights per step) and against other engines.

use crate::engine::kv_pool::{KvPool, PoolSize};
use crate::engine::scheduler::SchedulerConfig;
use crate::engine::sequence::SamplingParams;
use crate::engine::Engine;
use crate::model::{DecodeGraphs, GraphMode, LoadedModel};
use crate::plugin::Plugin;
use crate::rng::Rng;
use anyhow::Result;
use serde_json::{json, Value};

pub struct DecodeBench {
    pub batch_sizes: Vec<usize>,
    pub prompt_len: usize,
    /// Tokens every prompt starts with (before its own `prompt_len` random ones): 0 for
    /// unrelated prompts; a long one shows what prefix sharing and cascade attention do to a
    /// decode step.
    pub shared_prefix: usize,
    pub warmup_steps: usize,
    pub steps: usize,
    /// 0: greedy.
    pub temperature: f32,
    pub block_size: usize,
    pub seed: u64,
    pub graphs: GraphMode,
    /// The strategy's options.
    pub options: Vec<nanohost_strategy_api::PluginOption>,
}

/// For each batch size: prefill `batch` random prompts of `prompt_len`, then decode (greedy
/// unless a temperature is given);
/// decode step times after the warm-up steps, in milliseconds (each step ends when its tokens
/// are on the host, so the device work is included).
pub fn run(b: &DecodeBench, loaded: &LoadedModel, plugin: &Plugin) -> Result<Vec<Value>> {
    let cfg = loaded.model.config();
    let mut out = Vec::new();
    for &batch in &b.batch_sizes {
        let total = b.shared_prefix + b.prompt_len + b.warmup_steps + b.steps + 1;
        let blocks = batch * total.div_ceil(b.block_size);
        let pool = KvPool::new(
            cfg,
            PoolSize::Blocks(blocks),
            b.block_size,
            loaded.model.dtype(),
            loaded.model.device(),
        )?;
        let sched = SchedulerConfig {
            max_num_seqs: batch,
            max_num_batched_tokens: batch * (b.shared_prefix + b.prompt_len),
        };
        let graphs = DecodeGraphs::new(&loaded.model, batch, b.graphs);
        let mut engine = Engine::new(
            &loaded.model,
            &pool,
            Box::new(plugin.new_policy(&pool, &b.options)?),
            sched,
            b.seed,
        )
        .with_graphs(&graphs);
        let mut rng = Rng::derive(b.seed, &format!("decode-bench/{batch}"));
        let params = SamplingParams {
            temperature: b.temperature,
            max_tokens: b.warmup_steps + b.steps + 1,
            ignore_eos: true,
        };
        let prefix: Vec<u32> = (0..b.shared_prefix)
            .map(|_| rng.range_inclusive(0, 10_000) as u32)
            .collect();
        for _ in 0..batch {
            let prompt = prefix
                .iter()
                .copied()
                .chain((0..b.prompt_len).map(|_| rng.range_inclusive(0, 10_000) as u32))
                .collect();
            engine.add_request(prompt, params)?;
        }
        let done = engine.run_to_completion()?;
        let timed: Vec<_> = engine
            .steps
            .iter()
            .filter(|s| !s.prefill)
            .skip(b.warmup_steps)
            .collect();
        let mut ms: Vec<f64> = timed
            .iter()
            .map(|s| s.duration.as_secs_f64() * 1e3)
            .collect();
        // Where a step's time goes, medians in us: host work before the launch (the device
        // idles), launch to sampled tokens (the device's work), and the rest (bookkeeping after).
        let part = |f: &dyn Fn(&crate::engine::StepReport) -> std::time::Duration| {
            let mut v: Vec<f64> = timed.iter().map(|s| f(s).as_secs_f64() * 1e6).collect();
            super::metrics::quantile(&mut v, 0.5)
        };
        let split = json!({
            "before_launch_us_median": part(&|s| s.before_launch),
            "scheduling_us_median": part(&|s| s.scheduling),
            "packing_us_median": part(&|s| s.packing),
            "launch_to_sampled_us_median": part(&|s| s.until_sampled),
            "after_sampled_us_median": part(&|s| s.duration.saturating_sub(s.before_launch + s.until_sampled)),
        });
        let prefill_ms: f64 = engine
            .steps
            .iter()
            .filter(|s| s.prefill)
            .map(|s| s.duration.as_secs_f64() * 1e3)
            .sum();
        let median = super::metrics::quantile(&mut ms, 0.5);
        let cascade_steps = engine
            .steps
            .iter()
            .filter(|s| !s.prefill && s.cascade_groups > 0)
            .count();
        let stats = graphs.stats();
        let per_warm_replay = |seconds: f64| seconds * 1e6 / stats.warm_replays.max(1) as f64;
        out.push(json!({
            "batch_size": batch,
            "prompt_len": b.shared_prefix + b.prompt_len,
            "shared_prefix": b.shared_prefix,
            "temperature": b.temperature,
            "decode_steps_timed": ms.len(),
            "decode_steps_prepared_ahead": timed.iter().filter(|s| s.prepared_ahead).count(),
            "decode_steps_launched_ahead": timed.iter().filter(|s| s.launched_ahead).count(),
            "decode_ms_per_step_median": median,
            "decode_step_split": split,
            "decode_ms_per_step_p10": super::metrics::quantile(&mut ms, 0.1),
            "decode_ms_per_step_p90": super::metrics::quantile(&mut ms, 0.9),
            "decode_tokens_per_sec": batch as f64 * 1e3 / median,
            "prefill_ms": prefill_ms,
            "decode_steps_with_cascade_groups": cascade_steps,
            "cuda_graphs": graphs.mode(),
            "graph_replays": stats.replays,
            "graph_host_us_mean": {
                "prepare": per_warm_replay(stats.prepare_seconds),
                "upload": per_warm_replay(stats.upload_seconds),
                "launch": per_warm_replay(stats.launch_seconds),
            },
            "graph_captures": stats.captures,
            "graph_capture_seconds": stats.capture_seconds,
            "graph_anatomy": stats.last_graph,
            "programmatic_launch": nanohost_kernels::programmatic_launch(loaded.model.device()),
            "output_tokens_sha256": super::metrics::output_digest(&done),
        }));
    }
    Ok(out)
}
