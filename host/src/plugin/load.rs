//! Opening a plugin file and telling apart the ways it can fail to be one.

use anyhow::Result;
use nanohost_strategy_api::abi_stable::library::{lib_header_from_path, LibraryError};
use nanohost_strategy_api::{PluginInfo, StrategyModRef, ABI_VERSION};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A plugin that loaded and passed the ABI checks.
pub struct Plugin {
    pub path: PathBuf,
    pub info: PluginInfo,
    pub module: StrategyModRef,
    pub sha256: String,
}

/// Why a file is not a usable plugin; each message names the file and what to do.
#[derive(Debug)]
pub enum LoadError {
    Missing { path: PathBuf, hint: String },
    NotALibrary { path: PathBuf, detail: String },
    NotAPlugin { path: PathBuf },
    AbiMismatch { path: PathBuf, plugin_version: String, host_version: String },
    Incompatible { path: PathBuf, detail: String },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Missing { path, hint } => write!(f, "plugin file {} does not exist{hint}", path.display()),
            LoadError::NotALibrary { path, detail } => {
                write!(f, "{} is not a loadable shared library ({detail}); give the .so a plugin crate builds", path.display())
            }
            LoadError::NotAPlugin { path } => write!(
                f,
                "{} is a shared library but not a nanohost plugin: it exports no strategy module (plugins use `export_strategy!` from nanohost-strategy-api)",
                path.display()
            ),
            LoadError::AbiMismatch { path, plugin_version, host_version } => write!(
                f,
                "{} was built for strategy ABI {plugin_version}, but this host speaks ABI {host_version}; rebuild the plugin against nanohost-strategy-api {host_version}",
                path.display()
            ),
            LoadError::Incompatible { path, detail } => write!(
                f,
                "{} does not match this host's strategy ABI {ABI_VERSION}; rebuild it against this nanohost-strategy-api ({detail})",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    /// One word for `nanohost list`.
    pub fn status(&self) -> String {
        match self {
            LoadError::Missing { .. } => "missing".into(),
            LoadError::NotALibrary { .. } | LoadError::NotAPlugin { .. } => "not a nanohost plugin".into(),
            LoadError::AbiMismatch { plugin_version, host_version, .. } => {
                format!("ABI mismatch (plugin {plugin_version}, host {host_version})")
            }
            LoadError::Incompatible { .. } => format!("ABI mismatch (layout differs from host {ABI_VERSION})"),
        }
    }
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
    let header = lib_header_from_path(path).map_err(|e| classify(&p, e))?;
    let module = header.init_root_module::<StrategyModRef>().map_err(|e| classify(&p, e))?;
    let info = (module.info())();
    let sha256 = sha256_file(path).map_err(|e| LoadError::NotALibrary { path: p.clone(), detail: e.to_string() })?;
    Ok(Plugin { path: p, info, module, sha256 })
}

impl Plugin {
    /// A fresh strategy instance over `pool`, wrapped as the engine's policy.
    pub fn new_policy(&self, pool: &crate::engine::kv_pool::KvPool) -> Result<super::PluginPolicy> {
        let info = pool.info();
        let strategy = (self.module.new_strategy())(info)
            .into_result()
            .map_err(|e| anyhow::anyhow!("plugin `{}` failed to create a strategy: {e}", self.info.name))?;
        Ok(super::PluginPolicy::new(&self.info.name, strategy, info))
    }
}

fn classify(path: &Path, e: LibraryError) -> LoadError {
    let path = path.to_path_buf();
    match e {
        LibraryError::OpenError { err, .. } => LoadError::NotALibrary { path, detail: err.to_string() },
        LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path },
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => LoadError::AbiMismatch {
            path,
            plugin_version: actual_version.to_string(),
            host_version: expected_version.to_string(),
        },
        other => LoadError::Incompatible { path, detail: first_line(&other.to_string()) },
    }
}

fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

