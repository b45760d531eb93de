//! Opening a plugin file and telling apart the ways it can fail to be one.

pub use super::load_error::LoadError;
use anyhow::Result;
use nanohost_strategy_api::abi_stable::library::lib_header_from_path;
use nanohost_strategy_api::{PluginInfo, StrategyModRef};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A plugin that loaded and passed the ABI checks.
pub struct Plugin {
    pub path: PathBuf,
    pub info: PluginInfo,
    pub module: StrategyModRef,
    pub sha256: String,
    /// The strategy ABI version the plugin was built for.
    pub abi: String,
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

pub fn missing_hint(path: &Path) -> String {
    match std::fs::read_link(path) {
        Ok(target) => format!(
            " (it links to {}, which is not built yet: run `cargo build --release --workspace` in the repository root)",
            target.display()
        ),
        Err(_) => String::new(),
    }
}

/// Loads a plugin from `path`. Uses abi_stable's header API, which (unlike `load_from_file`)
/// does not cache one module per type, so one process can load two versions of a plugin.
/// The library stays mapped for the life of the process; one process per plugin run makes
/// that harmless.
pub fn load_plugin(path: &Path) -> Result<Plugin, LoadError> {
    let p = path.to_path_buf();
    if !path.is_file() {
        return Err(LoadError::Missing {
            path: p,
            hint: missing_hint(path),
        });
    }
    let header = lib_header_from_path(path).map_err(|e| LoadError::classify(&p, None, e))?;
    let abi = header.version_strings().version.to_string();
    let module = header
        .init_root_module::<StrategyModRef>()
        .map_err(|e| LoadError::classify(&p, Some(&abi), e))?;
    let info = sanitized((module.info())());
    let sha256 = sha256_file(path).map_err(|e| LoadError::NotALibrary {
        path: p.clone(),
        detail: e.to_string(),
    })?;
    Ok(Plugin {
        path: p,
        info,
        module,
        sha256,
        abi,
    })
}

impl Plugin {
    /// A fresh strategy instance over `pool` with `options`, wrapped as the engine's policy.
    pub fn new_policy(
        &self,
        pool: &crate::engine::kv_pool::KvPool,
        options: &[nanohost_strategy_api::PluginOption],
    ) -> Result<super::PluginPolicy> {
        let info = pool.info();
        let strategy = (self.module.new_strategy())(info, options.into())
            .into_result()
            .map_err(|e| {
                anyhow::anyhow!(
                    "plugin `{}` failed to create a strategy: {e}",
                    self.info.name
                )
            })?;
        Ok(super::PluginPolicy::new(&self.info.name, strategy, info))
    }
}

/// A plugin's self-description made safe to print and to put in file names: control
/// characters (terminal escapes, newlines) dropped, lengths bounded; a name left empty becomes
/// `unnamed`. The name is also kept to letters, digits, `-`, `_` and `.`, never `..`.
fn sanitized(info: PluginInfo) -> PluginInfo {
    let clean = |s: &str, max: usize| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(max)
            .collect::<String>()
    };
    let mut name: String = clean(info.name.as_str(), 64)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    while name.contains("..") {
        name = name.replace("..", "_");
    }
    if name.trim_matches(['_', '.']).is_empty() {
        name = "unnamed".into();
    }
    PluginInfo {
        name: name.into(),
        version: clean(info.version.as_str(), 32).into(),
        description: clean(info.description.as_str(), 200).into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_printable_and_never_paths() {
        let info = |name: &str, version: &str| super::PluginInfo {
            name: name.into(),
            version: version.into(),
            description: "A\u{1b}[2J\nB".into(),
        };
        let s = super::sanitized(info("../../etc/x\u{1b}[31m", "1.0\n"));
        assert_eq!(
            (s.name.as_str(), s.version.as_str(), s.description.as_str()),
            ("__.._etc_x_31m".replace("..", "_").as_str(), "1.0", "A[2JB")
        );
        assert!(!s.name.contains('/') && !s.name.contains(".."));
        assert_eq!(super::sanitized(info("", "")).name.as_str(), "unnamed");
        assert_eq!(super::sanitized(info(&"x".repeat(500), "")).name.len(), 64);
    }
}
