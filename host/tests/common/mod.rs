//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

use nanohost::engine::kv_pool::KvPool;
use nanohost::model::preset::{write_preset, Preset};
use nanohost::plugin::PluginPolicy;
use std::path::PathBuf;

/// A fresh directory holding the `tiny` preset (seed 0) in the Hugging Face layout.
pub fn tiny_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    write_preset(Preset::Tiny, 0, &dir).unwrap();
    (tmp, dir)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The standard strategy, run in-process through the same ABI wrapper and plan checks a loaded
/// plugin gets.
pub fn standard_policy(pool: &KvPool) -> Box<PluginPolicy> {
    let strategy =
        nanohost_strategy_api::new_boxed::<standard::Standard>(pool.info(), Default::default())
            .into_result()
            .unwrap();
    Box::new(PluginPolicy::new("standard", strategy, pool.info()))
}

/// A workspace plugin, built and loaded into this process (a test binary can link only one
/// plugin crate: each exports the same root-module symbol).
pub fn loaded_plugin(package: &str, lib: &str) -> nanohost::plugin::Plugin {
    nanohost::plugin::load_plugin(&built_plugin(package, lib)).unwrap()
}

/// A fresh strategy of `plugin` with `options`, or the error creating it gave.
pub fn policy_with(
    plugin: &nanohost::plugin::Plugin,
    pool: &KvPool,
    options: &[nanohost_strategy_api::PluginOption],
) -> Result<Box<PluginPolicy>, String> {
    plugin
        .new_policy(pool, options)
        .map(Box::new)
        .map_err(|e| e.to_string())
}

/// `key=value` options, typed as the command line types them.
pub fn options(pairs: &[(&str, i64)]) -> Vec<nanohost_strategy_api::PluginOption> {
    pairs
        .iter()
        .map(|&(k, v)| nanohost_strategy_api::PluginOption {
            key: k.into(),
            value: nanohost_strategy_api::OptionValue::Int(v),
        })
        .collect()
}

/// The build output directory holding the `nanohost` binary under test.
pub fn build_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_BIN_EXE_nanohost"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Path of a workspace plugin's library, built first (same profile as the tests): `cargo test`
/// compiles plugin crates but does not refresh their `.so`, so a stale library would be tested.
pub fn built_plugin(package: &str, lib: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if !built.iter().any(|p| p == package) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = std::process::Command::new(cargo)
            .args(["build", "-p", package])
            .status()
            .unwrap();
        assert!(st.success(), "building {package} failed");
        built.push(package.to_string());
    }
    build_dir().join(format!("lib{lib}.so"))
}

pub fn standard_plugin() -> PathBuf {
    built_plugin("nanohost-plugin-standard", "standard")
}

/// Builds a crate that is not a workspace member (its own workspace), once per process, into
/// `<target>/<name>`; returns the directory holding its debug `.so` files.
fn build_outside_workspace(manifest: &str, name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, dir)) = built.iter().find(|(n, _)| n == name) {
        return dir.clone();
    }
    let target = build_dir().parent().unwrap().join(name);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(cargo)
        .args(["build", "--manifest-path"])
        .arg(root.join(manifest))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .unwrap();
    assert!(st.success(), "building {manifest} failed");
    built.push((name.to_string(), target.join("debug")));
    target.join("debug")
}

/// The test-only fault plugins (host/tests/fault-plugins), in their own target directory so
/// they never sit beside real plugins. Returns the directory holding the `.so` files.
pub fn fault_plugins() -> PathBuf {
    build_outside_workspace("host/tests/fault-plugins/Cargo.toml", "fault-plugins")
}

/// The third-party template (examples/plugin-template) as a stranger uses it: copied to a folder
/// outside the repository, its `nanohost-strategy-api` dependency pointed at this checkout's
/// by absolute path (as its Cargo.toml says), and built there.
pub fn template_plugin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap();
            let outside = std::env::temp_dir()
                .join(format!("nanohost-template-{}", std::process::id()))
                .join("my-strategy");
            std::fs::create_dir_all(outside.join("src")).unwrap();
            let template = root.join("examples/plugin-template");
            for f in ["src/lib.rs", "Cargo.lock"] {
                std::fs::copy(template.join(f), outside.join(f)).unwrap();
            }
            let manifest = std::fs::read_to_string(template.join("Cargo.toml")).unwrap();
            let dep = "nanohost-strategy-api = { path = \"../../strategy-api\" }";
            assert!(
                manifest.contains(dep),
                "the template's Cargo.toml changed its dependency line"
            );
            let manifest = manifest.replace(
                dep,
                &format!(
                    "nanohost-strategy-api = {{ path = {:?} }}",
                    root.join("strategy-api").display().to_string()
                ),
            );
            std::fs::write(outside.join("Cargo.toml"), manifest).unwrap();
            let target = build_dir().parent().unwrap().join("plugin-template");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let st = std::process::Command::new(cargo)
                .args(["build", "--manifest-path"])
                .arg(outside.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .status()
                .unwrap();
            assert!(
                st.success(),
                "building the template copied to {} failed",
                outside.display()
            );
            let _ = std::fs::remove_dir_all(outside.parent().unwrap());
            target.join("debug/libmy_strategy.so")
        })
        .clone()
}

/// Runs the nanohost binary from the repository root.
pub fn nanohost(args: &[&str]) -> std::process::Output {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_nanohost"))
        .current_dir(root)
        .args(args)
        .output()
        .unwrap()
}

/// A path as the `&str` the binary's arguments want.
pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

pub fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

/// `json` written to `dir/config.json`, for `--config`.
pub fn config_file(dir: &std::path::Path, json: &str) -> PathBuf {
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    path
}
