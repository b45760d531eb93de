//! What `run` and `compare` share: where the benchmark's settings come from.

use crate::bench::config::BenchConfig;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct BenchArgs {
    /// Workload to run (repeatable): standard, shared-prefix, long-prefix, chunked,
    /// chunked-reuse, long-chunked, conversation, long-context, retrieval, perplexity,
    /// throughput, latency, or trace:FILE (JSONL or ShareGPT). Default: the config's `workloads`
    /// (the prototype's four).
    #[arg(long = "workload", value_name = "NAME")]
    workloads: Vec<String>,
    /// Hugging Face Qwen3 directory, or a repo id (Qwen/Qwen3-0.6B) found offline in the Hugging
    /// Face cache (overrides the config's `model_path`).
    #[arg(long, value_name = "DIR|ORG/NAME")]
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
    /// An option for the strategies (repeatable): `key=value` for every plugin run, or
    /// `PLUGIN:key=value` for the plugin of that name. Values are integers, numbers,
    /// true/false or text. Adds to (and overrides) the config's `plugin_options`.
    #[arg(long = "plugin-option", value_name = "[PLUGIN:]KEY=VALUE")]
    plugin_options: Vec<String>,
    /// Batch sizes, comma-separated (overrides the config's `batch_sizes`).
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    batch_sizes: Vec<usize>,
    /// Overrides the config's `seed` (prompts and sampling).
    #[arg(long)]
    seed: Option<u64>,
    /// Overrides the config's `max_input_len`.
    #[arg(long)]
    max_input_len: Option<usize>,
    /// Overrides the config's `max_output_len`.
    #[arg(long)]
    max_output_len: Option<usize>,
    /// Overrides the config's `temperature` (0: greedy).
    #[arg(long)]
    temperature: Option<f64>,
    /// Arrivals of `trace:FILE` workloads: requests per second (Poisson, seeded by `seed`) or
    /// inf (all at once). Default: the trace's own arrival times.
    #[arg(long, value_name = "R|inf")]
    request_rate: Option<crate::bench::config::RequestRate>,
}

/// Adds `[PLUGIN:]key=value` options to a config's `plugin_options`.
pub fn add_plugin_options(cfg: &mut BenchConfig, options: &[String]) -> Result<()> {
    for o in options {
        let Some((scoped, value)) = o.split_once('=') else {
            anyhow::bail!(
                "--plugin-option `{o}` has no `=`; write it as key=value or plugin:key=value"
            );
        };
        let (scope, key) = scoped.split_once(':').unwrap_or(("*", scoped));
        if key.is_empty() || scope.is_empty() {
            anyhow::bail!(
                "--plugin-option `{o}` needs a name before `=` (and a plugin name before `:`)"
            );
        }
        cfg.plugin_options
            .entry(scope.to_string())
            .or_default()
            .insert(
                key.to_string(),
                crate::bench::config::parse_option_value(value),
            );
    }
    Ok(())
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
        if !self.batch_sizes.is_empty() {
            cfg.batch_sizes = self.batch_sizes.clone();
        }
        cfg.seed = self.seed.unwrap_or(cfg.seed);
        cfg.max_input_len = self.max_input_len.unwrap_or(cfg.max_input_len);
        cfg.max_output_len = self.max_output_len.unwrap_or(cfg.max_output_len);
        cfg.temperature = self.temperature.unwrap_or(cfg.temperature);
        cfg.request_rate = self.request_rate.or(cfg.request_rate);
        add_plugin_options(&mut cfg, &self.plugin_options)?;
        cfg.validate()?;
        // Resolved once here (a repo id to its snapshot), so every worker loads the same files.
        if let crate::model::ModelSource::Dir(dir) = crate::bench::worker::model_source(&cfg)? {
            cfg.model_path = Some(dir.display().to_string());
        }
        Ok(cfg)
    }
}
