//! What `nanohost run` checks before any worker starts, how it names and tells plugins apart,
//! and what it says about a bad model or a worker out of memory: through the real binary.

mod common;

use common::{config_file, fault_plugins, nanohost, read_json, s, standard_plugin, tiny_dir};
use std::path::Path;

const SMALL: &str = r#"{"workloads": ["shared-prefix"], "batch_sizes": [2], "max_input_len": 260, "max_output_len": 4, "warmup_tokens": 0, "fidelity": false}"#;

fn run(tmp: &Path, config: &str, extra: &[&str]) -> std::process::Output {
    let cfg = config_file(tmp, config);
    let mut args = vec!["run", "--config", s(&cfg)];
    args.extend(extra);
    nanohost(&args)
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_plugin_calling_itself_standard_keeps_its_own_file_and_is_not_the_baseline() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let standard = standard_plugin();
    let impostor = fault_plugins().join("libfault_impostor.so");
    let o = run(
        tmp.path(),
        SMALL,
        &[
            "--plugin",
            s(&impostor),
            "--plugin",
            s(&standard),
            "--out",
            s(&out),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let mine = read_json(&out.join("results_standard.json"));
    let theirs = read_json(&out.join("results_fault_impostor.json"));
    assert_eq!(mine[0]["plugin"]["path"], s(&standard));
    assert_eq!(theirs[0]["plugin"]["path"], s(&impostor));
    assert_eq!(theirs[0]["plugin"]["name"], "standard");
    let summary = read_json(&out.join("benchmark_summary.json"));
    let points = summary.as_array().unwrap();
    assert_eq!(points.len(), 6, "3 prefix lengths x 2 plugins");
    for p in points {
        let is_real = p["plugin"]["path"] == s(&standard);
        assert_eq!(p["plugin"]["baseline"], is_real, "{}", p["plugin"]);
        // Given first, the impostor is still measured against the real standard plugin.
        assert_eq!(p.get("memory_savings_baseline").is_some(), !is_real);
        if !is_real {
            assert_eq!(p["memory_savings_baseline"], s(&standard));
        }
        let label = p["plugin"]["label"].as_str().unwrap();
        let want = match is_real {
            true => "standard [standard]",
            false => "standard [fault_impostor]",
        };
        assert_eq!(label, want);
    }
}

#[test]
fn the_same_plugin_file_given_twice_runs_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let standard = standard_plugin();
    let copy = tmp.path().join("libstandard.so");
    std::fs::copy(&standard, &copy).unwrap();
    let o = run(
        tmp.path(),
        SMALL,
        &[
            "--plugin",
            s(&standard),
            "--plugin",
            s(&copy),
            "--out",
            s(&out),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("running it once"), "{}", text(&o));
    let report = read_json(&out.join("run_report.json"));
    assert_eq!(report.as_array().unwrap().len(), 1);
    let summary = read_json(&out.join("benchmark_summary.json"));
    assert_eq!(summary.as_array().unwrap().len(), 3);
}

#[test]
fn a_bad_model_or_an_oversized_point_is_refused_before_any_worker_and_clobbers_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let standard = standard_plugin();
    let out = tmp.path().join("out");
    let base = ["--plugin", s(&standard), "--out", s(&out)];
    let cases: [(&str, &[&str], &[&str]); 4] = [
        (
            SMALL,
            &["--model", "/nonexistent/qwen"],
            &["model directory", "/nonexistent/qwen", "does not exist"],
        ),
        (
            r#"{"workloads": ["standard"], "batch_sizes": [100000000], "max_input_len": 256}"#,
            &[],
            &["batch_sizes [100000000]", "GB", "lower batch_sizes"],
        ),
        (
            r#"{"workloads": ["standard"], "max_input_len": 1000000000}"#,
            &[],
            &["1000000000", "max_position_embeddings"],
        ),
        (
            r#"{"workloads": ["standard"], "batch_sizes": [200], "max_input_len": 4000, "max_output_len": 4000, "num_blocks": 100000000, "device": "cpu"}"#,
            &[],
            &["the largest point needs about", "KV pool", "free"],
        ),
    ];
    for (config, extra, expect) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = run(tmp.path(), config, &args);
        let t = text(&o);
        assert!(!o.status.success(), "{config}: {t}");
        for e in expect {
            assert!(t.contains(e), "{config}: expected \"{e}\" in: {t}");
        }
        assert!(!t.contains("worker"), "{t}");
        assert!(
            !out.exists(),
            "{config}: the refused run made {}",
            out.display()
        );
    }
}

#[test]
fn non_finite_weights_are_a_warning_in_the_results_and_on_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let (_t, dir) = tiny_dir();
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let norm = &tensors["model.norm.weight"];
    let nan = (norm * f64::NAN).unwrap();
    tensors.insert("model.norm.weight".into(), nan);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let out = tmp.path().join("out");
    let standard = standard_plugin();
    let o = run(
        tmp.path(),
        SMALL,
        &[
            "--model",
            s(&dir),
            "--plugin",
            s(&standard),
            "--out",
            s(&out),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("warning: standard: tensor model.norm.weight")
            && stdout.contains("NaN or infinite"),
        "{stdout}"
    );
    let results = read_json(&out.join("results_standard.json"));
    let warnings = results[0]["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("logits")),
        "{warnings:?}"
    );
}

#[test]
fn a_worker_out_of_memory_is_reported_as_out_of_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let huge = fault_plugins().join("libfault_alloc_huge.so");
    let o = run(tmp.path(), SMALL, &["--plugin", s(&huge), "--out", s(&out)]);
    assert!(!o.status.success());
    let report = read_json(&out.join("run_report.json"));
    // Nothing measured: no summary or chart that would read as a result.
    assert!(!out.join("summary.md").exists() && !out.join("throughput.svg").exists());
    let failure = report[0]["failure"].as_str().unwrap();
    assert!(
        failure.contains("ran out of memory (memory allocation of 70368744177664 bytes failed)"),
        "{failure}"
    );
}
