//! `--model Qwen/Qwen3-0.6B`: a Hugging Face repo id, found offline in the cache that
//! `huggingface-cli download` (or any hub client) fills. Nothing is downloaded.
//!
//! The layout (huggingface_hub's): `<hub>/models--<org>--<name>/refs/<revision>` holds a commit
//! hash, `snapshots/<hash>/` the files (links into `blobs/`). `<hub>` is `$HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Whether `spec` reads as a repo id (`org/name`, no path of its own on disk).
pub fn looks_like_repo_id(spec: &Path) -> bool {
    let s = spec.to_string_lossy();
    let parts: Vec<&str> = s.split('/').collect();
    !spec.exists()
        && !s.starts_with(['/', '.', '~'])
        && parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// The hub cache directory, by the variables huggingface_hub reads.
pub fn hub_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HF_HUB_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("HF_HOME") {
        return Some(PathBuf::from(d).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub"))
}

/// The snapshot directory of `repo_id` at `refs/main` (or the only snapshot when there is no
/// ref). The error lists every place it looked.
pub fn resolve(repo_id: &str) -> Result<PathBuf> {
    let Some(hub) = hub_dir() else {
        bail!("model {repo_id}: no Hugging Face cache to look in (HOME, HF_HOME and HF_HUB_CACHE are unset)");
    };
    let repo = hub.join(format!("models--{}", repo_id.replace('/', "--")));
    let main = repo.join("refs").join("main");
    let snapshots = repo.join("snapshots");
    let from_ref = std::fs::read_to_string(&main)
        .ok()
        .map(|hash| snapshots.join(hash.trim()));
    let dir = match from_ref {
        Some(d) => Some(d),
        None => {
            let found: Vec<PathBuf> = std::fs::read_dir(&snapshots)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            match found.len() {
                1 => found.into_iter().next(),
                0 => None,
                n => bail!(
                    "model {repo_id}: {} has {n} snapshots and no refs/main to choose one; give --model with the snapshot directory",
                    snapshots.display()
                ),
            }
        }
    };
    match dir {
        Some(d) if d.join("config.json").is_file() => Ok(d),
        _ => bail!(
            "model {repo_id} is not in the Hugging Face cache, nor a directory here: looked for {} (from {}), then the only folder in {}; download it (`huggingface-cli download {repo_id}`), or give --model DIR or --preset tiny",
            snapshots.join("<hash>/config.json").display(),
            main.display(),
            snapshots.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_told_from_paths() {
        assert!(looks_like_repo_id(Path::new("Qwen/Qwen3-0.6B")));
        for not in [
            "/abs/Qwen3",
            "./Qwen/Qwen3",
            "~/m",
            "a/b/c",
            "Qwen3-0.6B",
            "Q w/x",
        ] {
            assert!(!looks_like_repo_id(Path::new(not)), "{not}");
        }
    }
}
