//! Finding plugin files: `plugins/` under the working directory, then the build output beside
//! the running binary, then any `--plugin-dir`.

use std::path::{Path, PathBuf};

fn is_shared_library(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".so") || name.ends_with(".dylib") || name.ends_with(".dll")
}

/// Directories searched, in order.
pub fn search_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("plugins")];
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir);
    }
    dirs.extend(extra.iter().cloned());
    dirs
}

/// Shared libraries in the search directories, each file once (a link and its target count as
/// one; the first path found is kept). Dangling links are kept so `list` can say what to build.
pub fn discover(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for dir in search_dirs(extra) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| is_shared_library(p))
            .collect();
        files.sort();
        for f in files {
            let key = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
            if !seen.contains(&key) {
                seen.push(key);
                out.push(f);
            }
        }
    }
    out
}
