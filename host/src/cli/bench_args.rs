//! What `run` and `compare` share: where the benchmark's settings come from.

use crate::bench::config::BenchConfig;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct BenchArgs {
    /// Workload to run (repeatable): standard, shared-prefix, long-prefix, chunked,
    /// chunked-reuse, long-chunked, throughput, latency. Default: the config's `workloads` (the
    /// prototype's four).
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
    /// Per-plugin timeout in seconds (overrides the config's `timeout_seconds`).
    #[arg(long)]
    timeout: Option<u64>,
    /// cpu, cuda or cuda:N (overrides the config's `device`).
    #[arg(long)]
    device: Option<String>,
    /// Decode steps through CUDA graphs: on, off, or staged (padded as for a graph, run
    /// eagerly). Overrides the config's `cuda_graphs`.
    #[arg(long, value_enum, value_name = "MODE")]
    cuda_graphs: Option<crate::model::GraphMode>,
}

impl BenchArgs {
    /// The config file (or the defaults) with the command line's overrides, validated, and its
    /// model resolved so that a bad path fails before any child starts.
    pub fn config(&self) -> Result<BenchConfig> {
        let mut cfg = match &self.config {
            Some(f) => BenchConfig::from_file(f)?,
            None => BenchConfig::default(),
        };
        if let Some(m) = &self.model {
            cfg.model_path = Some(m.display().to_string());
            cfg.preset = None;
        }
        if self.preset.is_some() {
            cfg.preset = self.preset.clone();
            cfg.model_path = None;
        }
        if !self.workloads.is_empty() {
            cfg.workloads = self.workloads.clone();
        }
        if self.device.is_some() {
            cfg.device = self.device.clone();
        }
        if let Some(g) = self.cuda_graphs {
            cfg.cuda_graphs = g;
        }
        if let Some(t) = self.timeout {
            cfg.timeout_seconds = t;
        }
        cfg.validate()?;
        crate::bench::worker::model_source(&cfg)?;
        Ok(cfg)
    }
}
