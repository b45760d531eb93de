//! Files are never half-written: write a temporary file beside the target, then rename.

use anyhow::{Context, Result};
use std::path::Path;

pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    write(&tmp)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {} into place", path.display()))
}

pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| std::fs::write(tmp, contents).with_context(|| format!("cannot write {}", tmp.display())))
}
