//! Opening a plugin file and telling apart the ways it can fail to be one.

use anyhow::Result;
pub use super::load_error::LoadError;
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
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

fn missing_hint(path: &Path) -> String {
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
        return Err(LoadError::Missing { path: p, hint: missing_hint(path) });
    }
    let header = lib_header_from_path(path).map_err(|e| LoadError::classify(&p, None, e))?;
    let abi = header.version_strings().version.to_string();
    let module = header.init_root_module::<StrategyModRef>().map_err(|e| LoadError::classify(&p, Some(&abi), e))?;
    let info = (module.info())();
    let sha256 = sha256_file(path).map_err(|e| LoadError::NotALibrary { path: p.clone(), detail: e.to_string() })?;
    Ok(Plugin { path: p, info, module, sha256, abi })
}

impl Plugin {
    /// A fresh strategy instance over `pool` with `options`, wrapped as the engine's policy.
    pub fn new_policy(&self, pool: &crate::engine::kv_pool::KvPool, options: &[nanohost_strategy_api::PluginOption]) -> Result<super::PluginPolicy> {
        let info = pool.info();
        let strategy = (self.module.new_strategy())(info, options.into())
            .into_result()
            .map_err(|e| anyhow::anyhow!("plugin `{}` failed to create a strategy: {e}", self.info.name))?;
        Ok(super::PluginPolicy::new(&self.info.name, strategy, info))
    }
}
