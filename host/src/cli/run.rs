use super::bench_args::BenchArgs;
use crate::bench::{report, summary, supervisor};
use crate::plugin::discover::{discover, search_dirs};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct RunArgs {
    /// Plugin library to run (repeatable). Default: every plugin discovered.
    #[arg(long = "plugin", value_name = "PATH")]
    plugins: Vec<PathBuf>,
    #[command(flatten)]
    bench: BenchArgs,
    /// Where result files go.
    #[arg(long, value_name = "DIR", default_value = "results")]
    out: PathBuf,
    /// Another directory to discover plugins in (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,
}

pub fn run(a: RunArgs) -> Result<()> {
    let cfg = a.bench.config()?;
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
    report::render(&a.out)?;
    eprintln!("results in {} (summary.md, charts)", a.out.display());
    if failed > 0 {
        bail!("{failed} of {} plugins failed (see above and {}/run_report.json)", plugins.len(), a.out.display());
    }
    Ok(())
}
