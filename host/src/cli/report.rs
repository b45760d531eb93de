//! `nanohost report DIR`: re-renders `summary.md` and the charts from a run's or a comparison's
//! JSON.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ReportArgs {
    /// A folder written by `nanohost run` or `nanohost compare`.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Every column of the run table (default: the columns that fit 100 characters).
    #[arg(long)]
    wide: bool,
}

pub fn run(a: ReportArgs) -> Result<()> {
    for f in crate::bench::report::render(&a.dir, a.wide)? {
        println!("{}", a.dir.join(f).display());
    }
    Ok(())
}
