//! Finding plugin files. The search path, in order (each file once: a link and its target are
//! one):
//! 1. each `--plugin-dir`;
//! 2. each directory of `$NANOHOST_PLUGIN_PATH` (`:`-separated);
//! 3. `plugins/` under the working directory (a checkout of this repository);
//! 4. the running binary's directory (cargo's build output holds the plugins beside it);
//! 5. `plugins/` beside the binary, and `../share/nanohost/plugins` from it (where an install
//!    puts them: `cargo install --path host` writes `~/.cargo/bin/nanohost`, so
//!    `~/.cargo/share/nanohost/plugins`).

use std::path::{Path, PathBuf};

fn is_shared_library(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".so") || name.ends_with(".dylib") || name.ends_with(".dll")
}

/// Directories searched, in order (see the module doc).
pub fn search_dirs(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = extra.to_vec();
    if let Some(path) = std::env::var_os("NANOHOST_PLUGIN_PATH") {
        dirs.extend(std::env::split_paths(&path).filter(|d| !d.as_os_str().is_empty()));
    }
    dirs.push(PathBuf::from("plugins"));
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(exe_dir.join("plugins"));
        dirs.push(exe_dir.join("../share/nanohost/plugins"));
        dirs.insert(dirs.len() - 2, exe_dir);
    }
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
