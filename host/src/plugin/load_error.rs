//! Why a file is not a usable plugin, as one line that names the file and what to do.
//!
//! Self-contained (abi_stable and the strategy API only): the ABI compatibility tests build
//! this same file into a probe host against newer copies of the API (`tests/abi_versions.rs`).

use nanohost_strategy_api::abi_stable::library::LibraryError;
use nanohost_strategy_api::ABI_VERSION;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum LoadError {
    Missing {
        path: PathBuf,
        hint: String,
    },
    NotALibrary {
        path: PathBuf,
        detail: String,
    },
    NotAPlugin {
        path: PathBuf,
    },
    /// The plugin's ABI version is not one this host loads (abi_stable's version check).
    AbiMismatch {
        path: PathBuf,
        plugin_version: String,
        host_version: String,
    },
    /// The versions may load together, but the layouts do not (abi_stable's layout check):
    /// `reason` is abi_stable's, shortened to its findings.
    Incompatible {
        path: PathBuf,
        plugin_version: String,
        reason: String,
    },
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
                "{} was built for strategy ABI {plugin_version}, but this host speaks ABI {host_version} (the major versions must match); rebuild the plugin against nanohost-strategy-api {host_version}",
                path.display()
            ),
            LoadError::Incompatible { path, plugin_version, reason } => write!(
                f,
                "{} was built for strategy ABI {plugin_version}, which this host (ABI {ABI_VERSION}) cannot load: abi_stable found {reason}; rebuild the plugin against nanohost-strategy-api {ABI_VERSION}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    /// A few words for `nanohost list`.
    pub fn status(&self) -> String {
        match self {
            LoadError::Missing { .. } => "missing".into(),
            LoadError::NotALibrary { .. } | LoadError::NotAPlugin { .. } => {
                "not a nanohost plugin".into()
            }
            LoadError::AbiMismatch {
                plugin_version,
                host_version,
                ..
            } => format!("ABI mismatch (plugin {plugin_version}, host {host_version})"),
            LoadError::Incompatible { plugin_version, .. } => {
                format!("ABI mismatch (plugin {plugin_version}, host {ABI_VERSION}: layout)")
            }
        }
    }

    /// Sorts abi_stable's error for the plugin at `path`, built for `plugin_version` (when
    /// its header could be read).
    pub fn classify(path: &Path, plugin_version: Option<&str>, e: LibraryError) -> LoadError {
        let path = path.to_path_buf();
        let plugin_version = plugin_version.unwrap_or("?").to_string();
        match e {
            LibraryError::OpenError { err, .. } => LoadError::NotALibrary {
                path,
                detail: err.to_string(),
            },
            LibraryError::GetSymbolError { .. } => LoadError::NotAPlugin { path },
            LibraryError::IncompatibleVersionNumber {
                expected_version,
                actual_version,
                ..
            } => LoadError::AbiMismatch {
                path,
                plugin_version: actual_version.to_string(),
                host_version: expected_version.to_string(),
            },
            other => LoadError::Incompatible {
                path,
                plugin_version,
                reason: findings(&other.to_string()),
            },
        }
    }
}

/// abi_stable's layout report (hundreds of lines: both layouts, then each finding as `Error:`,
/// `Expected:` and `Found:` blocks) as its findings on one line, e.g. `too many fields (this
/// host expects 3, the plugin has 2)`. Falls back to the report's first line.
pub fn findings(report: &str) -> String {
    let lines: Vec<&str> = report.lines().collect();
    let value_after = |from: usize, label: &str| -> String {
        lines[from..]
            .iter()
            .position(|l| l.trim() == label)
            .and_then(|j| lines.get(from + j + 1))
            .map_or("?".into(), |l| l.trim().to_string())
    };
    let mut found: Vec<String> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(what) = l.trim().strip_prefix("Error:") {
            let item = format!(
                "{} (this host expects {}, the plugin has {})",
                what.trim(),
                value_after(i, "Expected:"),
                value_after(i, "Found:")
            );
            if !found.contains(&item) {
                found.push(item);
            }
        }
    }
    if found.is_empty() {
        return lines
            .iter()
            .find(|l| !l.trim().is_empty())
            .map_or(String::new(), |l| l.trim().to_string());
    }
    found.join("; ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn findings_are_one_line() {
        let report = "Compared <this>:\n    big layout\nTo <other>:\n    other\n1 error(s)inside:\n    <other>\n\n\nError:too many fields\nExpected:\n    3\nFound:\n    2\n";
        assert_eq!(
            super::findings(report),
            "too many fields (this host expects 3, the plugin has 2)"
        );
        assert_eq!(super::findings("\nsomething odd\nmore"), "something odd");
    }
}
