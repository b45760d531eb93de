use crate::plugin::discover::{discover, search_dirs};
use crate::plugin::load::{load_plugin, sha256_file};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ListArgs {
    /// Another directory to discover plugins in (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,
}

pub fn run(a: ListArgs) -> Result<()> {
    let found = discover(&a.plugin_dirs);
    println!("host strategy ABI {}", nanohost_strategy_api::ABI_VERSION);
    if found.is_empty() {
        let dirs: Vec<String> = search_dirs(&a.plugin_dirs).iter().map(|d| d.display().to_string()).collect();
        println!("no plugins found in {}", dirs.join(", "));
        return Ok(());
    }
    for path in found {
        let sha = sha256_file(&path).unwrap_or_else(|_| "-".into());
        match load_plugin(&path) {
            Ok(p) => println!("{}\t{}\tABI {} ok\t{}\t{sha}", p.info.name, p.info.version, p.abi, path.display()),
            Err(e) => println!("-\t-\t{}\t{}\t{sha}\n\t{e}", e.status(), path.display()),
        }
    }
    Ok(())
}
