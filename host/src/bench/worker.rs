//! The child process of `nanohost run`: one plugin, every point of every workload, one result
//! file. Progress goes to stdout as JSON lines for the supervisor.

use super::chunk_stats;
use super::config::BenchConfig;
use super::metrics::RunRecord;
use super::waves::run_waves;
use crate::engine::kv_pool::{KvPool, PoolSize};
use crate::engine::scheduler::SchedulerConfig;
use crate::engine::sequence::SamplingParams;
use crate::engine::Engine;
use crate::fsutil::write_atomic;
use crate::model::{DecodeGraphs, GraphStats, LoadedModel, ModelSource};
use crate::plugin::{load_plugin, Plugin};
use crate::workload::{self, Point, Prompt};
use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Instant;

/// The commit the binary was built from.
pub const COMMIT: &str = env!("NANOHOST_COMMIT");

/// The prototype's method label: the plugin description up to its first colon.
pub fn method_label(plugin: &Plugin) -> String {
    let d = plugin.info.description.as_str();
    d.split(':')
        .next()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or(plugin.info.name.as_str())
        .trim()
        .to_string()
}

fn progress(done: usize, total: usize, what: &str) {
    super::channel::send(&super::channel::Message::Progress {
        done,
        total,
        point: what.to_string(),
    });
}

pub fn model_source(cfg: &BenchConfig) -> Result<ModelSource> {
    ModelSource::resolve(
        cfg.model_path.as_ref().map(Into::into),
        cfg.preset.as_deref(),
        cfg.model_seed,
    )
}

/// Runs every point of `cfg` with the plugin at `plugin_path`, writing `out_dir/results_file`
/// after each point.
pub fn run_worker(
    plugin_path: &Path,
    cfg: &BenchConfig,
    out_dir: &Path,
    results_file: &str,
) -> Result<()> {
    let plugin = load_plugin(plugin_path)?;
    let compute = crate::device::select(cfg.device.as_deref(), cfg.dtype.as_deref())?;
    let device = compute.device.clone();
    let source = model_source(cfg)?;
    let loaded = source.load(&device, compute.dtype)?;
    let vocab = loaded.model.config().vocab_size;
    let mut points = Vec::new();
    for name in &cfg.workloads {
        points.extend(workload::by_name(name)?.points(cfg, vocab, &loaded.tokenizer)?);
    }
    // The parent checked host memory; device memory only the worker can see.
    if let Some(used) = crate::device::device_memory_in_use(&device) {
        let total = crate::device::device_memory_total(&device).unwrap_or(u64::MAX);
        let mut need = super::preflight::estimate(
            cfg,
            loaded.model.config(),
            compute.dtype.size_in_bytes(),
            &points,
        );
        need.weights = 0; // already loaded, so already in `used`
        super::preflight::check_fits(&need, total.saturating_sub(used), &compute.name)?;
    }
    let size = match (cfg.num_blocks, cfg.kv_cache_bytes) {
        (Some(n), _) => PoolSize::Blocks(n),
        (None, Some(b)) => PoolSize::Bytes(b),
        (None, None) => PoolSize::Blocks(super::preflight::default_blocks(cfg, &points)),
    };
    let pool = KvPool::new(
        loaded.model.config(),
        size,
        cfg.block_size,
        loaded.model.dtype(),
        &device,
    )?;
    let reference = if cfg.fidelity {
        fidelity_reference(&plugin)
    } else {
        None
    };
    // One set of graphs for the pool: what the warm-ups capture, the timed runs replay.
    let graphs = DecodeGraphs::new(&loaded.model, cfg.max_num_seqs, cfg.cuda_graphs);
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let path = out_dir.join(results_file);
    let mut results = Vec::new();
    for (i, point) in points.iter().enumerate() {
        progress(
            i,
            points.len(),
            &format!("{} batch {}", point.workload, point.batch_size),
        );
        let record = run_point(
            &plugin,
            reference.as_ref(),
            &loaded,
            &pool,
            &graphs,
            cfg,
            point,
            &compute.name,
        )
        .with_context(|| {
            format!(
                "{} workload, batch size {}",
                point.workload, point.batch_size
            )
        })?;
        results.push(Value::Object(record));
        // After every point: a plugin that fails, crashes or hangs later keeps these.
        write_atomic(&path, serde_json::to_string_pretty(&results)?.as_bytes())?;
        super::channel::send(&super::channel::Message::Results { file: path.clone() });
    }
    progress(points.len(), points.len(), "done");
    Ok(())
}

/// What the graphs did during the timed run (captures in the warm-up are not counted there),
/// and the shapes captured ahead of it with their time.
fn graph_record(
    graphs: &DecodeGraphs,
    before: &GraphStats,
    precaptured: usize,
    precapture_seconds: f64,
) -> Value {
    let now = graphs.stats();
    json!({
        "mode": graphs.mode(),
        "precaptured_shapes": precaptured,
        "precapture_seconds": precapture_seconds,
        "replays": now.replays - before.replays,
        "captures": now.captures - before.captures,
        "capture_seconds": now.capture_seconds - before.capture_seconds,
        "eager_decode_steps": now.eager_decode_steps - before.eager_decode_steps,
        "last_graph": now.last_graph,
    })
}

/// The reference for the fidelity check: the standard plugin found beside
/// this one or in the plugin search path; `None` (and a log line) when there is none.
fn fidelity_reference(plugin: &Plugin) -> Option<Plugin> {
    let beside = plugin
        .path
        .parent()
        .map(|d| d.join("libstandard.so"))
        .filter(|p| p.is_file());
    // `is_file` follows links: a link to a library not built yet is no reference.
    let found = beside.or_else(|| {
        crate::plugin::discover::discover(&[])
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == "libstandard.so") && p.is_file())
    });
    let Some(path) = found else {
        tracing::warn!(
            "no libstandard.so beside the plugin or in the plugin search path: no fidelity check"
        );
        return None;
    };
    match load_plugin(&path) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(
                "the fidelity reference {} does not load ({e:#}): no fidelity check",
                path.display()
            );
            None
        }
    }
}

/// Options as a JSON object, each value in its JSON type.
fn option_map(options: &[nanohost_strategy_api::PluginOption]) -> Map<String, Value> {
    use nanohost_strategy_api::OptionValue::*;
    let json = |v: &nanohost_strategy_api::OptionValue| match v {
        Int(i) => json!(i),
        Float(f) => json!(f),
        Bool(b) => json!(b),
        Text(t) => json!(t.as_str()),
    };
    options
        .iter()
        .map(|o| (o.key.to_string(), json(&o.value)))
        .collect()
}

/// `reference`: the fidelity reference (the standard plugin), compared on every point.
#[allow(clippy::too_many_arguments)]
fn run_point(
    plugin: &Plugin,
    reference: Option<&Plugin>,
    loaded: &LoadedModel,
    pool: &KvPool,
    graphs: &DecodeGraphs,
    cfg: &BenchConfig,
    point: &Point,
    device: &str,
) -> Result<Map<String, Value>> {
    let options = cfg.options_for(plugin.info.name.as_str())?;
    let sched = SchedulerConfig {
        max_num_seqs: cfg.max_num_seqs,
        max_num_batched_tokens: cfg.max_num_batched_tokens,
    };
    // Quality points are scored on greedy answers.
    let quality = point.prompts.iter().any(|p| p.check.is_some());
    let temperature = if quality { 0.0 } else { cfg.temperature as f32 };
    let params = SamplingParams {
        temperature,
        max_tokens: cfg.max_output_len,
        ignore_eos: true,
    };
    // Warm-up on a fresh strategy, as the prototype did, so one-time costs stay out of the timing.
    if cfg.warmup_tokens > 0 {
        let mut warm = Engine::new(
            &loaded.model,
            pool,
            Box::new(plugin.new_policy(pool, &options)?),
            sched,
            cfg.seed,
        )
        .with_graphs(graphs);
        for p in &point.prompts {
            warm.add_chunked_request(
                p.tokens.clone(),
                p.chunks.clone(),
                SamplingParams {
                    max_tokens: cfg.warmup_tokens.min(p.max_tokens.unwrap_or(usize::MAX)),
                    ..params
                },
            )?;
        }
        warm.run_to_completion()?;
    }
    // Every decode shape the point can meet, captured before the clock starts.
    let precapture_start = Instant::now();
    let max_context = (0..point.prompts.len())
        .map(|i| Prompt::full_len(&point.prompts, i, cfg.max_output_len))
        .max()
        .unwrap_or(0);
    let precaptured = graphs.precapture(&loaded.model, pool, point.prompts.len(), max_context)?;
    let precapture_seconds = precapture_start.elapsed().as_secs_f64();
    let policy = plugin.new_policy(pool, &options)?;
    let effective = policy.options();
    let mut engine =
        Engine::new(&loaded.model, pool, Box::new(policy), sched, cfg.seed).with_graphs(graphs);
    let graphs_before = graphs.stats();
    let baseline = crate::device::device_memory_in_use(loaded.model.device());
    let (mut before, mut wave_stats) = (engine.policy().counters()?, Vec::new());
    let started = Instant::now();
    let seqs = run_waves(&mut engine, &point.prompts, params, |engine, wave, done| {
        let after = engine.policy().counters()?;
        let held = engine.policy().reported_blocks()? * pool.bytes_per_block();
        wave_stats.push(chunk_stats::wave(&before, &after, point, wave, done, held));
        before = after;
        Ok(())
    })?;
    let elapsed = started.elapsed();
    let record = RunRecord {
        seqs: &seqs,
        steps: &engine.steps,
        started,
        elapsed,
        peak_blocks: engine.peak_blocks,
        peak_reported_blocks: engine.peak_reported_blocks,
        bytes_per_block: pool.bytes_per_block(),
        preemptions: engine.preemptions(),
        device_memory_before: baseline,
        peak_device_memory: engine.peak_device_memory,
    };
    let mut m = Map::new();
    m.insert("method".into(), json!(method_label(plugin)));
    m.insert("workload".into(), json!(point.workload));
    m.insert("batch_size".into(), json!(point.batch_size));
    m.extend(point.extra.clone());
    m.extend(record.to_json());
    m.insert(
        "plugin".into(),
        json!({
            "name": plugin.info.name.as_str(), "version": plugin.info.version.as_str(),
            "sha256": plugin.sha256, "path": plugin.path.display().to_string(),
            "abi": plugin.abi.as_str(),
            "options": option_map(&effective),
            "options_given": option_map(&options),
        }),
    );
    let mut warnings = loaded.warnings.clone();
    if engine.first_logits_finite == Some(false) {
        warnings.push("the first step's logits hold NaN or infinite values: the outputs (and fidelity) of this point are meaningless".into());
    }
    if !warnings.is_empty() {
        m.insert("warnings".into(), json!(warnings));
    }
    let host = engine.policy().host_counters();
    m.insert("tokens_evicted".into(), json!(host.tokens_evicted));
    m.insert("blocks_evicted".into(), json!(host.blocks_evicted));
    let counters = engine.policy().counters()?;
    if point.prompts.iter().any(|p| !p.chunks.is_empty()) {
        m.extend(chunk_stats::point(
            &counters,
            (engine.peak_reported_blocks * pool.bytes_per_block()) as u64,
            wave_stats,
        ));
    }
    if let Some(q) = super::quality::score(&point.prompts, &seqs, &loaded.tokenizer)? {
        m.insert("quality".into(), serde_json::to_value(q)?);
    }
    // Forced outputs are the same text for every strategy: nothing to compare greedily.
    let forced = point
        .prompts
        .iter()
        .any(|p| matches!(p.check, Some(crate::workload::Check::Forced(_))));
    let fidelity = match reference {
        Some(r) if r.sha256 != plugin.sha256 && !forced => {
            Some(super::fidelity::compare_to_reference(
                plugin,
                &options,
                r,
                loaded,
                pool,
                sched,
                point,
                cfg.max_output_len,
            )?)
        }
        _ => None,
    };
    if let Some(f) = fidelity {
        m.insert("fidelity".into(), serde_json::to_value(f)?);
    }
    m.insert(
        "cuda_graphs".into(),
        graph_record(graphs, &graphs_before, precaptured, precapture_seconds),
    );
    m.insert(
        "programmatic_launch".into(),
        json!(nanohost_kernels::programmatic_launch(loaded.model.device())),
    );
    m.insert(
        "strategy_counters".into(),
        Value::Object(counters.into_iter().map(|(k, v)| (k, json!(v))).collect()),
    );
    m.insert("model".into(), json!(loaded.name));
    m.insert("device".into(), json!(device));
    m.insert(
        "dtype".into(),
        json!(format!("{:?}", loaded.model.dtype()).to_lowercase()),
    );
    m.insert("block_size".into(), json!(pool.block_size()));
    m.insert("temperature".into(), json!(cfg.temperature));
    m.insert("seed".into(), json!(cfg.seed));
    m.insert("commit".into(), json!(COMMIT));
    // Tuning switches change what is measured: every one in effect goes with the numbers.
    let tuning: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("NANOHOST_")
                && !["NANOHOST_CHANNEL", "NANOHOST_LOG"].contains(&k.as_str())
        })
        .collect();
    m.insert("environment".into(), json!(tuning));
    Ok(m)
}
