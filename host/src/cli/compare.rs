//! `nanohost compare A B`: trial pairs, A first in odd trials and B first in even ones, each side
//! in its own process on the same config and seeds; the comparison goes to stdout, `compare.json`,
//! `summary.md` and a chart.

use super::bench_args::{add_plugin_options, BenchArgs};
use crate::bench::{compare, report, supervisor};
use crate::fsutil::write_atomic;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct CompareArgs {
    /// Plugin A (the baseline).
    #[arg(value_name = "A")]
    a: PathBuf,
    /// Plugin B (the candidate); ratios are B/A.
    #[arg(value_name = "B")]
    b: PathBuf,
    /// Trial pairs (A then B in odd trials, B then A in even ones). A difference is called only
    /// from 6 pairs at 95% (8 at 99%): fewer cannot reach the level.
    #[arg(long, default_value_t = 6)]
    trials: usize,
    /// Confidence of the intervals.
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    #[command(flatten)]
    bench: BenchArgs,
    /// An option for A's strategy only (repeatable, `key=value`): with B the same file and its
    /// own `--b-option`s, an A/B of two option sets.
    #[arg(long = "a-option", value_name = "KEY=VALUE")]
    a_options: Vec<String>,
    /// An option for B's strategy only (repeatable, `key=value`).
    #[arg(long = "b-option", value_name = "KEY=VALUE")]
    b_options: Vec<String>,
    /// Where the trials' result files and the comparison go. Default: a new folder under runs/
    /// (runs/latest points at it). A folder that holds another run or comparison is refused
    /// unless --overwrite.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write into --out even though it holds another run's or comparison's results.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(a: CompareArgs) -> Result<()> {
    if a.trials == 0 {
        bail!("--trials must be at least 1");
    }
    if !(0.5..1.0).contains(&a.confidence) {
        bail!("--confidence must be in [0.5, 1), e.g. 0.95");
    }
    let cfg = a.bench.config()?;
    let planned = crate::bench::preflight::plan_plugins(std::slice::from_ref(&a.a))
        .into_iter()
        .chain(crate::bench::preflight::plan_plugins(std::slice::from_ref(
            &a.b,
        )));
    for p in planned {
        if let Some(why) = p.refused {
            bail!("{why}");
        }
    }
    crate::bench::preflight::check_model_and_memory(&cfg)?;
    let (mut cfg_a, mut cfg_b) = (cfg.clone(), cfg.clone());
    add_plugin_options(&mut cfg_a, &a.a_options)?;
    add_plugin_options(&mut cfg_b, &a.b_options)?;
    let same_file =
        crate::plugin::load::sha256_file(&a.a)? == crate::plugin::load::sha256_file(&a.b)?;
    if same_file && cfg_a.plugin_options == cfg_b.plugin_options {
        eprintln!("warning: A and B are the same plugin (same sha256) with the same options: any difference this comparison calls is noise between runs (an A/A test)");
    }
    let dir = crate::bench::run_dir::open(a.out.as_deref(), a.overwrite)?;
    let out = dir.path.clone();
    crate::bench::lifetime::catch_interrupts();
    let mut trials = Vec::new();
    for t in 1..=a.trials {
        // Counterbalanced: A first in odd trials, B first in even ones, so whatever favours the
        // first (or second) process of a trial (caches, clocks) falls on both sides alike.
        let (a_list, b_list) = match t % 2 {
            1 => {
                let a_list = trial(&a.a, "a", t, &cfg_a, &out)?;
                (a_list, trial(&a.b, "b", t, &cfg_b, &out)?)
            }
            _ => {
                let b_list = trial(&a.b, "b", t, &cfg_b, &out)?;
                (trial(&a.a, "a", t, &cfg_a, &out)?, b_list)
            }
        };
        trials.push((a_list, b_list));
    }
    let result = compare::compare(&trials, a.confidence)?;
    write_atomic(
        &out.join("compare.json"),
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )?;
    println!("{}", compare::table(&result));
    report::render(&out, false)?;
    eprintln!(
        "comparison in {} (compare.json, summary.md, compare_ratios.svg)",
        out.display()
    );
    Ok(())
}

/// One side of one trial in its own child process; its result list.
fn trial(
    plugin: &Path,
    side: &str,
    t: usize,
    cfg: &crate::bench::config::BenchConfig,
    out: &Path,
) -> Result<Vec<Value>> {
    let dir = out.join(format!("trial-{t}")).join(side);
    let planned = crate::bench::preflight::plan_plugins(&[plugin.to_path_buf()]);
    let outcome = supervisor::run_child(&planned[0], cfg, &dir)?;
    if let Some(why) = outcome.failure {
        bail!(
            "trial {t}: {} ({}) failed: {why}",
            side.to_uppercase(),
            plugin.display()
        );
    }
    let Some(file) = outcome.results else {
        bail!(
            "trial {t}: {} ({}) reported no results",
            side.to_uppercase(),
            plugin.display()
        )
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a result list", file.display()))
}
