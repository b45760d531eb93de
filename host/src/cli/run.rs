use crate::bench::config::BenchConfig;
use crate::bench::{summary, supervisor};
use crate::plugin::discover::{discover, search_dirs};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// Plugin library to run (repeatable). Default: every plugin discovered.
    #[arg(long = "plugin", value_name = "PATH")]
    plugins: Vec<PathBuf>,
    /// Workload to run (repeatable): standard. Default: the config's `workloads`.
    #[arg(long = "workload", value_name = "NAME")]
    workloads: Vec<String>,
    /// Hugging Face Qwen3 directory (overrides the config's `model_path`).
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// Generated preset instead of a directory: tiny | qwen3-0.6b.
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// JSON config: the prototype's keys (model_path, batch_sizes, max_input_len,
    /// max_output_len, seed) and nanohost's (see README).
    #[arg(long, value_name = "FILE.json")]
    config: Option<PathBuf>,
    /// Where result files go.
    #[arg(long, value_name = "DIR", default_value = "results")]
    out: PathBuf,
    /// Another directory to discover plugins in (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,
    /// Per-plugin timeout in seconds (overrides the config's `timeout_seconds`).
    #[arg(long)]
    timeout: Option<u64>,
    /// cpu, cuda or cuda:N (overrides the config's `device`).
    #[arg(long)]
    device: Option<String>,
}

pub fn run(a: RunArgs) -> Result<()> {
    let mut cfg = match &a.config {
        Some(f) => BenchConfig::from_file(f)?,
        None => BenchConfig::default(),
    };
    if let Some(m) = &a.model {
        cfg.model_path = Some(m.display().to_string());
        cfg.preset = None;
    }
    if a.preset.is_some() {
        cfg.preset = a.preset.clone();
        cfg.model_path = None;
    }
    if !a.workloads.is_empty() {
        cfg.workloads = a.workloads.clone();
    }
    if a.device.is_some() {
        cfg.device = a.device.clone();
    }
    if let Some(t) = a.timeout {
        cfg.timeout_seconds = t;
    }
    cfg.validate()?;
    // Resolve the model once here so a bad path fails before any child starts.
    crate::bench::worker::model_source(&cfg)?;
    let plugins = if a.plugins.is_empty() { discover(&a.plugin_dirs) } else { a.plugins.clone() };
    if plugins.is_empty() {
        bail!(
            "no plugins found in {}; build them with `cargo build --release --workspace` or give --plugin PATH",
            search_dirs(&a.plugin_dirs).iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    std::fs::create_dir_all(&a.out)?;
    let mut outcomes = Vec::new();
    for p in &plugins {
        outcomes.push(supervisor::run_child(p, &cfg, &a.out)?);
    }
    let failed = summary::summarize(&outcomes, &a.out)?;
    eprintln!("results in {}", a.out.display());
    if failed > 0 {
        bail!("{failed} of {} plugins failed (see above and {}/run_report.json)", plugins.len(), a.out.display());
    }
    Ok(())
}
