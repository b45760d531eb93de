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
    /// Where result files go. Default: a new folder under runs/ (runs/latest points at it).
    /// A folder that holds another run is refused unless --overwrite.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write into --out even though it holds another run's results.
    #[arg(long)]
    overwrite: bool,
    /// Every column of the summary table (default: the columns that fit 100 characters).
    #[arg(long)]
    wide: bool,
    /// Also write benchmark_summary.csv: one row per point, every scalar result key a column
    /// (keys one object deep as `a.b`).
    #[arg(long)]
    csv: bool,
    /// Another directory to discover plugins in (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,
}

pub fn run(a: RunArgs) -> Result<()> {
    let cfg = a.bench.config()?;
    let plugins = if a.plugins.is_empty() {
        discover(&a.plugin_dirs)
    } else {
        a.plugins.clone()
    };
    if plugins.is_empty() {
        bail!(
            "no plugins found in {}; build them with `cargo build --release --workspace` or give --plugin PATH",
            search_dirs(&a.plugin_dirs).iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    crate::bench::preflight::check_model_and_memory(&cfg)?;
    let plugins = crate::bench::preflight::plan_plugins(&plugins);
    let dir = crate::bench::run_dir::open(a.out.as_deref(), a.overwrite)?;
    let out = dir.path.clone();
    crate::bench::lifetime::catch_interrupts();
    let mut outcomes = Vec::new();
    for p in &plugins {
        let outcome = supervisor::run_child(p, &cfg, &out)?;
        let stop = outcome.interrupted;
        outcomes.push(outcome);
        if stop.is_some() {
            break;
        }
    }
    let failed = summary::summarize(&outcomes, &out, a.wide, a.csv)?;
    // Charts and summary.md only when some plugin measured something: an empty report would
    // read as a result.
    if outcomes.iter().any(|o| o.results.is_some()) {
        report::render(&out, a.wide)?;
        eprintln!("results in {} (summary.md, charts)", out.display());
    } else {
        eprintln!(
            "no plugin produced results; why is in {}/run_report.json",
            out.display()
        );
    }
    if let Some(sig) = outcomes.iter().find_map(|o| o.interrupted) {
        let done = outcomes
            .iter()
            .filter(|o| o.results.is_some() && o.failure.is_none())
            .count();
        eprintln!(
            "nanohost run: interrupted by {}: its worker was killed; {done} of {} plugins finished, their results are in {} (run_report.json says which)",
            crate::bench::lifetime::signal_name(sig),
            plugins.len(),
            out.display()
        );
        drop(dir); // the lock: exit skips destructors
        std::process::exit(128 + sig);
    }
    if failed > 0 {
        bail!(
            "{failed} of {} plugins failed (see above and {}/run_report.json)",
            plugins.len(),
            out.display()
        );
    }
    check_option_scopes(&cfg, &outcomes)
}

/// Options scoped to a plugin name that no plugin of the run had are a typo: an error, after
/// the run (the names are only known from the children's results).
fn check_option_scopes(
    cfg: &crate::bench::config::BenchConfig,
    outcomes: &[supervisor::Outcome],
) -> Result<()> {
    let ran: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.results.as_ref())
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter_map(|v| v[0]["plugin"]["name"].as_str().map(str::to_string))
        .collect();
    let unmatched: Vec<&String> = cfg
        .plugin_options
        .keys()
        .filter(|k| *k != "*" && !ran.contains(k))
        .collect();
    if !unmatched.is_empty() && !ran.is_empty() {
        bail!(
            "options were given for {}, but no plugin of this run has that name (the plugins that ran: {}); the results above ran without them",
            unmatched.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
            ran.join(", ")
        );
    }
    Ok(())
}
