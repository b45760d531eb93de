//! Where a run writes, so that runs never clobber each other: by default a new folder under
//! `runs/` (gitignored) with `runs/latest` pointing at it; an explicit folder that holds
//! another run only with `--overwrite`; and a lock file against two runs writing into one
//! folder at once.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Files that say a folder holds a run (or a comparison).
const RUN_FILES: [&str; 3] = ["run_report.json", "benchmark_summary.json", "compare.json"];

/// Whether `name`, in a run folder, is something a run or a comparison writes: what
/// `--overwrite` clears so that no earlier result is read as part of the new run.
fn written_by_a_run(name: &str, is_dir: bool) -> bool {
    match is_dir {
        true => name == "logs" || name.starts_with("trial-"),
        false => {
            RUN_FILES.contains(&name)
                || name == "benchmark_summary.csv"
                || name == "summary.md"
                || (name.starts_with("results_") && name.ends_with(".json"))
                || name.ends_with(".svg")
        }
    }
}
const LOCK: &str = ".nanohost-run.lock";

/// The output folder of a run, held (locked) while it lives.
pub struct RunDir {
    pub path: PathBuf,
    lock: PathBuf,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// `runs/<UTC time>-<pid>` under `root`, and `runs/latest` pointing at it.
fn fresh(root: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let name = format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        std::process::id()
    );
    let runs = root.join("runs");
    let path = runs.join(&name);
    std::fs::create_dir_all(&path)
        .with_context(|| format!("cannot create the run folder {}", path.display()))?;
    let latest = runs.join("latest");
    let _ = std::fs::remove_file(&latest);
    let _ = std::os::unix::fs::symlink(&name, &latest);
    Ok(path)
}

/// Year, month, day of the `days`-th day since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The folder a run writes to: `out` if given (refused if it holds another run, unless
/// `overwrite`), else a fresh one under `runs/`; locked until the returned value drops.
pub fn open(out: Option<&Path>, overwrite: bool) -> Result<RunDir> {
    let path = match out {
        Some(dir) => {
            if let Some(f) = RUN_FILES.iter().find(|f| dir.join(f).exists()) {
                if !overwrite {
                    bail!(
                        "{} already holds a run ({f}); give another --out, leave --out out (each run then gets its own folder under runs/), or pass --overwrite",
                        dir.display()
                    );
                }
            }
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the output folder {}", dir.display()))?;
            dir.to_path_buf()
        }
        None => fresh(Path::new("."))?,
    };
    let lock = path.join(LOCK);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
    {
        Ok(mut f) => {
            let _ = writeln!(f, "{}", std::process::id());
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let holder = std::fs::read_to_string(&lock).unwrap_or_default();
            bail!(
                "another nanohost run (process {}) is writing into {}; wait for it, or remove {} if no such process runs",
                holder.trim(),
                path.display(),
                lock.display()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("cannot write in {}", path.display())),
    }
    // With --overwrite, the earlier run's outputs go (only the files a run writes).
    if overwrite {
        for e in std::fs::read_dir(&path).into_iter().flatten().flatten() {
            let (name, is_dir) = (e.file_name(), e.path().is_dir());
            if written_by_a_run(&name.to_string_lossy(), is_dir) {
                let _ = match is_dir {
                    true => std::fs::remove_dir_all(e.path()),
                    false => std::fs::remove_file(e.path()),
                };
            }
        }
    }
    Ok(RunDir { path, lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_refusals() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_795), (2026, 12, 8));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        let held = open(Some(&dir), false).unwrap();
        let e = open(Some(&dir), false).err().unwrap().to_string();
        assert!(
            e.contains("another nanohost run (process") && e.contains("is writing into"),
            "{e}"
        );
        drop(held);
        std::fs::write(dir.join("run_report.json"), "[]").unwrap();
        let e = open(Some(&dir), false).err().unwrap().to_string();
        assert!(
            e.contains("already holds a run (run_report.json)") && e.contains("--overwrite"),
            "{e}"
        );
        std::fs::write(dir.join("results_old.json"), "[]").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        assert!(open(Some(&dir), true).is_ok());
        // The earlier run's outputs are gone; what the user put there stays.
        let left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["notes.txt"]);
        std::fs::write(dir.join("compare.json"), "{}").unwrap();
        let e = open(Some(&dir), false).err().unwrap().to_string();
        assert!(e.contains("already holds a run (compare.json)"), "{e}");
    }
}
