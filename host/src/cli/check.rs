//! Tools for validating and timing the engine itself: `teacher-force`, `bench-decode` and
//! `bench-attention`.

use super::model_args::ModelArgs;
use crate::bench::attention::{self, AttentionBench};
use crate::bench::decode::{self, DecodeBench};
use crate::bench::teacher::teacher_forced_logits;
use crate::fsutil::{write_atomic, write_atomic_with};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct TeacherForceArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSON: {"prompts": [[ids]...], "continuations": [[ids]...]} (continuations of equal length).
    #[arg(long, value_name = "FILE.json")]
    input: PathBuf,
    /// safetensors file receiving `logits` [sequences, continuation + 1, vocab] (f32).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[arg(long, default_value_t = crate::engine::kv_pool::DEFAULT_BLOCK_SIZE)]
    block_size: usize,
}

pub fn teacher_force(a: TeacherForceArgs) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Input {
        prompts: Vec<Vec<u32>>,
        continuations: Vec<Vec<u32>>,
    }
    let text = std::fs::read_to_string(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))?;
    let input: Input = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a teacher-forcing input", a.input.display()))?;
    let (loaded, _) = a.model.load()?;
    let logits = teacher_forced_logits(
        &loaded.model,
        &input.prompts,
        &input.continuations,
        a.block_size,
    )?;
    let logits = std::collections::HashMap::from([(
        "logits".to_string(),
        logits.to_device(&candle_core::Device::Cpu)?,
    )]);
    write_atomic_with(&a.out, |tmp| {
        Ok(candle_core::safetensors::save(&logits, tmp)?)
    })?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

#[derive(Args)]
pub struct BenchDecodeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, value_delimiter = ',', default_value = "1,4,64")]
    batch_sizes: Vec<usize>,
    /// Random tokens of each prompt (after the shared prefix).
    #[arg(long, default_value_t = 256)]
    prompt_len: usize,
    /// Tokens all prompts start with (0: none).
    #[arg(long, default_value_t = 0)]
    shared_prefix: usize,
    #[arg(long, default_value_t = 8)]
    warmup_steps: usize,
    #[arg(long, default_value_t = 64)]
    steps: usize,
    /// 0 decodes greedily; above 0 samples (the workloads' default is 0.6), which costs the
    /// sampling kernel a softmax over the vocabulary.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value = "plugins/libstandard.so")]
    plugin: PathBuf,
    /// Decode steps through CUDA graphs: on, off, or staged (padded as for a graph, run eagerly).
    #[arg(long, value_enum, default_value = "on", value_name = "MODE")]
    cuda_graphs: crate::model::GraphMode,
    /// An option for the strategy (repeatable), `key=value`.
    #[arg(long = "plugin-option", value_name = "KEY=VALUE")]
    plugin_options: Vec<String>,
    /// JSON file for the results (also printed).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn bench_decode(a: BenchDecodeArgs) -> Result<()> {
    let mut options = crate::bench::config::BenchConfig::default();
    super::bench_args::add_plugin_options(&mut options, &a.plugin_options)?;
    let plugin = crate::plugin::load_plugin(&a.plugin)?;
    let (loaded, compute) = a.model.load()?;
    let b = DecodeBench {
        batch_sizes: a.batch_sizes,
        prompt_len: a.prompt_len,
        shared_prefix: a.shared_prefix,
        warmup_steps: a.warmup_steps,
        steps: a.steps,
        temperature: a.temperature,
        block_size: crate::engine::kv_pool::DEFAULT_BLOCK_SIZE,
        seed: 42,
        graphs: a.cuda_graphs,
        options: options.options_for(plugin.info.name.as_str())?,
    };
    let rows = decode::run(&b, &loaded, &plugin)?;
    let mut extra = serde_json::json!({ "model": loaded.name, "plugin": plugin.info.name.as_str(), "plugin_options": options.plugin_options.get("*") });
    report(&mut extra, &compute.name, rows, a.out.as_deref())
}

/// Prints the results (with the device and commit) and writes them to `out` if given.
fn report(
    head: &mut serde_json::Value,
    device: &str,
    rows: Vec<serde_json::Value>,
    out: Option<&std::path::Path>,
) -> Result<()> {
    head["device"] = device.into();
    head["commit"] = crate::bench::worker::COMMIT.into();
    head["results"] = rows.into();
    let text = serde_json::to_string_pretty(head)?;
    println!("{text}");
    if let Some(out) = out {
        write_atomic(out, text.as_bytes())?;
    }
    Ok(())
}

#[derive(Args)]
pub struct BenchAttentionArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Shared prompt prefix lengths (tokens).
    #[arg(long, value_delimiter = ',', default_value = "256,512,1024,2048")]
    prefix_lens: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    batch_sizes: Vec<usize>,
    /// Private tokens per sequence, uniform in MIN..=MAX.
    #[arg(long, value_delimiter = ',', default_value = "64,256", num_args = 1)]
    suffix: Vec<usize>,
    #[arg(long, default_value_t = 50)]
    iters: usize,
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Cascade vs flat paged attention, the op alone at the model's attention shape (only the
/// model's config is read).
pub fn bench_attention(a: BenchAttentionArgs) -> Result<()> {
    let [lo, hi] = a.suffix[..] else {
        anyhow::bail!("--suffix takes MIN,MAX")
    };
    if lo > hi || a.iters == 0 {
        anyhow::bail!("--suffix needs MIN <= MAX and --iters at least 1");
    }
    let source = a.model.source()?;
    let cfg = source.config()?;
    let compute = crate::device::select(a.model.device.as_deref(), a.model.dtype.as_deref())?;
    let b = AttentionBench {
        prefix_lens: a.prefix_lens,
        batch_sizes: a.batch_sizes,
        suffix: (lo, hi),
        iters: a.iters,
        block_size: crate::engine::kv_pool::DEFAULT_BLOCK_SIZE,
        seed: 42,
    };
    let rows = attention::run(&b, &cfg, &compute.device, compute.dtype)?;
    let mut head = serde_json::json!({ "model": source.describe(), "dtype": format!("{:?}", compute.dtype), "layers": cfg.num_hidden_layers });
    report(&mut head, &compute.name, rows, a.out.as_deref())
}

#[derive(Args)]
pub struct BenchChainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Rows per op (the decode batch).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    rows: Vec<usize>,
    /// Ops per captured chain (default: 28, Qwen3-0.6B's layers).
    #[arg(long, default_value_t = 28)]
    reps: usize,
    #[arg(long, default_value_t = 200)]
    iters: usize,
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One kernel's cost inside a replayed chain, apart from the model (only its config is read):
/// the boundary between kernels, add + RMSNorm, and each projection's matmul.
pub fn bench_chain(a: BenchChainArgs) -> Result<()> {
    let source = a.model.source()?;
    let cfg = source.config()?;
    let compute = crate::device::select(a.model.device.as_deref(), a.model.dtype.as_deref())?;
    #[cfg(feature = "cuda")]
    {
        let b = crate::bench::chain::ChainBench {
            rows: a.rows,
            reps: a.reps,
            iters: a.iters,
        };
        let rows = crate::bench::chain::run(&b, &cfg, &compute.device, compute.dtype)?;
        let mut head = serde_json::json!({ "model": source.describe(), "dtype": format!("{:?}", compute.dtype), "programmatic_launch": nanohost_kernels::programmatic_launch(&compute.device) });
        report(&mut head, &compute.name, rows, a.out.as_deref())
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (cfg, a.rows, a.reps, a.iters, a.out);
        anyhow::bail!("bench-chain times CUDA graphs: build nanohost with --features cuda and run it on {}'s GPU", compute.name)
    }
}
