//! The `nanohost` command line.

mod bench_args;
mod check;
mod compare;
mod generate;
mod init_model;
mod list;
mod model_args;
mod report;
mod run;
mod train_preset;
mod worker;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nanohost",
    version,
    about = "Benchmark host for KV-cache strategies on Qwen3"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a preset model (config.json, model.safetensors, tokenizer.json) in the Hugging Face layout.
    InitModel(init_model::InitModelArgs),
    /// Train the embedded `tiny` model from scratch (CPU, deterministic from the recipe's seed).
    TrainPreset(train_preset::TrainPresetArgs),
    /// Generate text from one prompt: a quick manual check of model and engine.
    Generate(generate::GenerateArgs),
    /// Run strategy plugins on the benchmark workloads, each in its own process.
    Run(run::RunArgs),
    /// A/B comparison of two plugin files: trials alternate A and B, each in its own process,
    /// on identical prompts and seeds; medians, paired ratios B/A with distribution-free intervals, and
    /// whether the generated tokens are identical.
    Compare(compare::CompareArgs),
    /// Re-render summary.md and the SVG charts of a run or comparison folder from its JSON.
    Report(report::ReportArgs),
    /// List discovered plugins: name, version, ABI status, path, sha256.
    List(list::ListArgs),
    /// Logits under teacher forcing, for comparison with another implementation on the same weights.
    TeacherForce(check::TeacherForceArgs),
    /// Decode step time at fixed batch sizes (greedy, the standard plugin).
    BenchDecode(check::BenchDecodeArgs),
    /// Cascade vs flat paged attention, the op alone, on shared-prefix batches.
    BenchAttention(check::BenchAttentionArgs),
    /// One kernel's cost inside a replayed CUDA graph chain: the boundary, add + RMSNorm, each
    /// projection's matmul (CUDA only).
    BenchChain(check::BenchChainArgs),
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
    /// One plugin file loaded in a process of its own, for `list` (not for direct use).
    #[command(hide = true)]
    Inspect(list::InspectArgs),
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::InitModel(a) => init_model::run(a),
        Command::Generate(a) => generate::run(a),
        Command::TrainPreset(a) => train_preset::run(a),
        Command::Run(a) => run::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Report(a) => report::run(a),
        Command::List(a) => list::run(a),
        Command::TeacherForce(a) => check::teacher_force(a),
        Command::BenchDecode(a) => check::bench_decode(a),
        Command::BenchAttention(a) => check::bench_attention(a),
        Command::BenchChain(a) => check::bench_chain(a),
        Command::Worker(a) => worker::run(a),
        Command::Inspect(a) => list::inspect(a),
    }
}
