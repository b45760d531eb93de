//! `nanohost list`: every plugin file found, each loaded in a short-lived child process of its
//! own (`nanohost inspect`), so a file that crashes or hangs while loading is a row with its
//! reason and the others are still listed.

use crate::plugin::discover::{discover, search_dirs};
use crate::plugin::load::{load_plugin, sha256_file};
use anyhow::Result;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct ListArgs {
    /// Another directory to discover plugins in (repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,
}

#[derive(Args)]
pub struct InspectArgs {
    plugin: PathBuf,
}

/// What `inspect` prints: one line of JSON.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Inspected {
    Loaded {
        name: String,
        version: String,
        abi: String,
    },
    Refused {
        status: String,
        reason: String,
    },
}

/// How long loading one plugin may take.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(20);

pub fn inspect(a: InspectArgs) -> Result<()> {
    let row = match load_plugin(&a.plugin) {
        Ok(p) => Inspected::Loaded {
            name: p.info.name.to_string(),
            version: p.info.version.to_string(),
            abi: p.abi,
        },
        Err(e) => Inspected::Refused {
            status: e.status(),
            reason: e.to_string(),
        },
    };
    println!("{}", serde_json::to_string(&row)?);
    Ok(())
}

/// Loads `path` in a child and reads its answer: (status column, name, version, reason line).
fn inspect_in_child(path: &Path) -> Result<(String, String, String, Option<String>)> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    crate::bench::lifetime::bind_to_parent(&mut cmd);
    let mut child = cmd
        .arg("inspect")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if started.elapsed() > INSPECT_TIMEOUT {
            crate::bench::lifetime::kill_group(child.id());
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut so, &mut out);
    }
    let dash = || "-".to_string();
    Ok(
        match (
            status,
            out.lines()
                .last()
                .and_then(|l| serde_json::from_str::<Inspected>(l).ok()),
        ) {
            (_, Some(Inspected::Loaded { name, version, abi })) => {
                (format!("ABI {abi} ok"), name, version, None)
            }
            (_, Some(Inspected::Refused { status, reason })) => {
                (status, dash(), dash(), Some(reason))
            }
            (None, None) => (
                "hangs while loading".into(),
                dash(),
                dash(),
                Some(format!(
                    "{} did not load within {}s and was killed",
                    path.display(),
                    INSPECT_TIMEOUT.as_secs()
                )),
            ),
            (Some(st), None) => (
                "crashes while loading".into(),
                dash(),
                dash(),
                Some(format!(
                    "{} ended its loading process ({st}) before answering",
                    path.display()
                )),
            ),
        },
    )
}

pub fn run(a: ListArgs) -> Result<()> {
    let found = discover(&a.plugin_dirs);
    println!("host strategy ABI {}", nanohost_strategy_api::ABI_VERSION);
    let dirs: Vec<String> = search_dirs(&a.plugin_dirs)
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    println!("plugin search path: {}", dirs.join(", "));
    if found.is_empty() {
        let dirs: Vec<String> = search_dirs(&a.plugin_dirs)
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        println!("no plugins found in {}", dirs.join(", "));
        return Ok(());
    }
    for path in found {
        let sha = sha256_file(&path).unwrap_or_else(|_| "-".into());
        let (status, name, version, reason) = inspect_in_child(&path)?;
        println!("{name}\t{version}\t{status}\t{}\t{sha}", path.display());
        if let Some(r) = reason {
            println!("\t{r}");
        }
    }
    Ok(())
}
