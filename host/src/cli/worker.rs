use crate::bench::config::BenchConfig;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// The child process of `nanohost run` (not for direct use).
#[derive(Args)]
pub struct WorkerArgs {
    #[arg(long)]
    plugin: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    config_json: String,
    /// The result file's name in --out, chosen by the supervisor.
    #[arg(long)]
    results: String,
}

pub fn run(a: WorkerArgs) -> Result<()> {
    // A plugin panic is caught and reported as an error; keep the default hook's backtrace out
    // of the supervisor's report.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let cfg = BenchConfig::from_json(&a.config_json)?;
    crate::bench::worker::run_worker(&a.plugin, &cfg, &a.out, &a.results)
}
