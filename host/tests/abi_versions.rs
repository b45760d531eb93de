//! What abi_stable lets load across strategy ABI versions, shown with real builds (the policy in
//! strategy-api's docs rests on this test). From checked-in sources it makes copies of
//! strategy-api at 1.1.0 (one root-module field and one trait method appended, as a minor
//! release may) and at 2.0.0 (the version alone changed), builds a fixture plugin (the standard
//! strategy's source) against 1.0 (this one), 1.1 and 2.0, and a probe host
//! (`abi-fixtures/probe.rs` with nanohost's `load_error.rs`) against 1.1. Then:
//! - a newer plugin (1.1) loads and runs in this host (1.0);
//! - this plugin (1.0) is refused by the newer host (1.1): "too many fields", both versions
//!   named on one line;
//! - a plugin of another major (2.0) is refused by this host, both versions named.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `text` with `anchor` replaced (the anchor must be there: when the API changes, this test
/// must be told how to make its newer copy).
fn patch(text: &str, anchor: &str, with: &str) -> String {
    assert!(
        text.contains(anchor),
        "strategy-api no longer contains {anchor:?}: update tests/abi_versions.rs"
    );
    text.replacen(anchor, with, 1)
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A copy of strategy-api under `dir` at `version`, with the 1.1 additions if `minor_additions`.
fn api_copy(dir: &Path, version: &str, minor_additions: bool) -> PathBuf {
    let src = root().join("strategy-api");
    let out = dir.join(format!("api-{version}"));
    for f in [
        "src/lib.rs",
        "src/plan.rs",
        "src/options.rs",
        "src/example.rs",
    ] {
        write(&out.join(f), &std::fs::read_to_string(src.join(f)).unwrap());
    }
    let cargo = std::fs::read_to_string(src.join("Cargo.toml")).unwrap();
    write(
        &out.join("Cargo.toml"),
        &patch(
            &cargo,
            "version = \"1.0.0\"",
            &format!("version = \"{version}\""),
        ),
    );
    let mut module = std::fs::read_to_string(src.join("src/module.rs")).unwrap();
    let mut strategy = std::fs::read_to_string(src.join("src/strategy.rs")).unwrap();
    if minor_additions {
        let field = "    pub new_strategy:\n        extern \"C\" fn(PoolInfo, RSlice<'_, PluginOption>) -> RResult<StrategyBox, RString>,";
        module = patch(
            &module,
            field,
            &format!("{field}\n    pub describe: extern \"C\" fn() -> RString,"),
        );
        module = patch(
            &module,
            "new_strategy: __nanohost_new_strategy,",
            "new_strategy: __nanohost_new_strategy, describe: __nanohost_describe,",
        );
        module = patch(&module, "#[$crate::abi_stable::export_root_module]", "extern \"C\" fn __nanohost_describe() -> $crate::abi_stable::std_types::RString { \"1.1\".into() }\n\n        #[$crate::abi_stable::export_root_module]");
        let last = "    fn stats(&self) -> RResult<StrategyStats, RString>;\n";
        strategy = patch(
            &strategy,
            last,
            &format!("{last}    fn describe(&self) -> RString;\n"),
        );
        let guarded = "impl<S: KvStrategy> Strategy for Guarded<S> {\n";
        strategy = patch(
            &strategy,
            guarded,
            &format!(
                "{guarded}    fn describe(&self) -> RString {{\n        \"1.1\".into()\n    }}\n"
            ),
        );
    }
    write(&out.join("src/module.rs"), &module);
    write(&out.join("src/strategy.rs"), &strategy);
    out
}

/// A crate of its own workspace under `dir/name`, depending on the API copy `api`.
fn fixture_crate(
    dir: &Path,
    name: &str,
    api: &Path,
    kind: &str,
    main: &[(&str, String)],
) -> PathBuf {
    let out = dir.join(name);
    let target = match kind {
        "lib" => "[lib]\nname = \"abi_fixture\"\ncrate-type = [\"cdylib\"]\n",
        _ => "[[bin]]\nname = \"probe\"\npath = \"src/main.rs\"\n",
    };
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n{target}\n[dependencies]\nnanohost-strategy-api = {{ path = {:?} }}\nabi_stable = \"0.11.3\"\n\n[workspace]\n",
        api.display().to_string()
    );
    write(&out.join("Cargo.toml"), &manifest);
    std::fs::copy(
        root().join("host/tests/fault-plugins/Cargo.lock"),
        out.join("Cargo.lock"),
    )
    .unwrap();
    for (file, text) in main {
        write(&out.join(file), text);
    }
    out
}

fn build(manifest_dir: &Path, target: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(manifest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target)
        .status()
        .unwrap();
    assert!(st.success(), "building {} failed", manifest_dir.display());
}

/// Builds the plugin against `api` into its own target folder; returns the `.so`.
fn plugin(dir: &Path, api: &Path, version: &str, target: &Path) -> PathBuf {
    let source = std::fs::read_to_string(root().join("strategy-api/src/example.rs")).unwrap();
    let source = patch(&source, "name: \"standard\"", "name: \"abi-fixture\"");
    let krate = fixture_crate(
        dir,
        &format!("plugin-{}", version.replace('.', "-")),
        api,
        "lib",
        &[("src/lib.rs", source)],
    );
    build(&krate, target);
    // Each version's library keeps its own copy (the next build overwrites the target's).
    let so = dir.join(format!("v{version}")).join("libabi_fixture.so");
    std::fs::create_dir_all(so.parent().unwrap()).unwrap();
    std::fs::copy(target.join("debug/libabi_fixture.so"), &so).unwrap();
    so
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn abi_versions_load_as_the_docs_say() {
    let dir = build_dir().parent().unwrap().join("abi-fixtures");
    let target = dir.join("target");
    let (v10, v11, v20) = (
        root().join("strategy-api"),
        api_copy(&dir, "1.1.0", true),
        api_copy(&dir, "2.0.0", false),
    );
    let p10 = plugin(&dir, &v10, "1.0.0", &target);
    let p11 = plugin(&dir, &v11, "1.1.0", &target);
    let p20 = plugin(&dir, &v20, "2.0.0", &target);
    let load_error = std::fs::read_to_string(root().join("host/src/plugin/load_error.rs")).unwrap();
    let probe_main =
        std::fs::read_to_string(root().join("host/tests/abi-fixtures/probe.rs")).unwrap();
    let probe = fixture_crate(
        &dir,
        "probe-1-1-0",
        &v11,
        "bin",
        &[
            ("src/main.rs", probe_main),
            ("src/load_error.rs", load_error),
        ],
    );
    build(&probe, &target);
    let probe = |so: &Path| {
        Command::new(target.join("debug/probe"))
            .arg(so)
            .output()
            .unwrap()
    };

    // A newer plugin in this host: listed with its version, and it runs.
    let out = nanohost(&["list", "--plugin-dir", s(p11.parent().unwrap())]);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("abi-fixture\t") && l.contains("\tABI 1.1.0 ok\t")),
        "{text}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(
        tmp.path(),
        r#"{"batch_sizes": [1], "max_input_len": 100, "max_output_len": 3, "warmup_tokens": 0, "workloads": ["standard"]}"#,
    );
    let out = nanohost(&[
        "run",
        "--plugin",
        s(&p11),
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("out")),
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    let results = read_json(&tmp.path().join("out/results_abi_fixture.json"));
    assert_eq!(results[0]["plugin"]["abi"], "1.1.0");

    // The newer host loads its own plugins, and refuses this one on one line naming both
    // versions and abi_stable's finding.
    let out = probe(&p11);
    assert!(
        out.status.success() && stdout(&out).contains("loaded abi-fixture (ABI 1.1.0)"),
        "{}",
        stdout(&out)
    );
    let out = probe(&p10);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("was built for strategy ABI 1.0.0, which this host (ABI 1.1.0) cannot load: abi_stable found too many fields"), "{text}");

    // Another major version: refused by the version check, both named.
    let out = nanohost(&["list", "--plugin-dir", s(p20.parent().unwrap())]);
    let text = stdout(&out);
    assert!(
        text.contains("ABI mismatch (plugin 2.0.0, host 1.0.0)"),
        "{text}"
    );
    assert!(
        text.contains("was built for strategy ABI 2.0.0, but this host speaks ABI 1.0.0"),
        "{text}"
    );
    let out = nanohost(&["list", "--plugin-dir", s(p10.parent().unwrap())]);
    assert!(
        stdout(&out).contains("\tABI 1.0.0 ok\t"),
        "{}",
        stdout(&out)
    );
}
