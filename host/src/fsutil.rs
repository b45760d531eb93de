//! Files are never half-written: write a temporary file beside the target, then rename.
//!
//! The temporary file is created exclusively (O_EXCL: an existing file or a symlink planted at
//! its name makes the write fail instead of being followed), under a name that is not
//! predictable from the process id alone.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Creates a fresh temporary file beside `path`: (its name, the open file).
fn create_temp(path: &Path) -> Result<(PathBuf, std::fs::File)> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}-{nanos:08x}-{n}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("cannot create {} (exclusively)", tmp.display()))?;
    Ok((tmp, file))
}

fn finish(tmp: &Path, path: &Path, written: Result<()>) -> Result<()> {
    if let Err(e) = written {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    std::fs::rename(tmp, path).with_context(|| format!("cannot move {} into place", path.display()))
}

pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let (tmp, file) = create_temp(path)?;
    drop(file);
    let written = write(&tmp);
    finish(&tmp, path, written)
}

pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let (tmp, mut file) = create_temp(path)?;
    let written = file
        .write_all(contents)
        .and_then(|_| file.sync_data())
        .with_context(|| format!("cannot write {}", tmp.display()));
    finish(&tmp, path, written)
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_whole_files_through_fresh_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.json");
        super::write_atomic(&target, b"one").unwrap();
        super::write_atomic(&target, b"two").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let failed = super::write_atomic_with(&target, |_| anyhow::bail!("no"));
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
