//! Tools for validating and timing the engine itself: `teacher-force` and `bench-decode`.

use super::model_args::ModelArgs;
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
    let text = std::fs::read_to_string(&a.input).with_context(|| format!("cannot read {}", a.input.display()))?;
    let input: Input = serde_json::from_str(&text).with_context(|| format!("{} is not a teacher-forcing input", a.input.display()))?;
    let (loaded, _) = a.model.load()?;
    let logits = teacher_forced_logits(&loaded.model, &input.prompts, &input.continuations, a.block_size)?;
    let logits = std::collections::HashMap::from([("logits".to_string(), logits.to_device(&candle_core::Device::Cpu)?)]);
    write_atomic_with(&a.out, |tmp| Ok(candle_core::safetensors::save(&logits, tmp)?))?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

#[derive(Args)]
pub struct BenchDecodeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, value_delimiter = ',', default_value = "1,4,64")]
    batch_sizes: Vec<usize>,
    #[arg(long, default_value_t = 256)]
    prompt_len: usize,
    #[arg(long, default_value_t = 8)]
    warmup_steps: usize,
    #[arg(long, default_value_t = 64)]
    steps: usize,
    #[arg(long, default_value = "plugins/libstandard.so")]
    plugin: PathBuf,
    /// JSON file for the results (also printed).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn bench_decode(a: BenchDecodeArgs) -> Result<()> {
    let plugin = crate::plugin::load_plugin(&a.plugin)?;
    let (loaded, compute) = a.model.load()?;
    let b = DecodeBench {
        batch_sizes: a.batch_sizes,
        prompt_len: a.prompt_len,
        warmup_steps: a.warmup_steps,
        steps: a.steps,
        block_size: crate::engine::kv_pool::DEFAULT_BLOCK_SIZE,
        seed: 42,
    };
    let rows = decode::run(&b, &loaded, &plugin)?;
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "model": loaded.name, "device": compute.name, "commit": crate::bench::worker::COMMIT, "results": rows,
    }))?;
    println!("{text}");
    if let Some(out) = a.out {
        write_atomic(&out, text.as_bytes())?;
    }
    Ok(())
}
