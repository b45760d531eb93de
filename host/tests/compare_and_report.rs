//! `nanohost compare`, `nanohost report`, the charts beside every run, and the third-party
//! plugin template, through the real binary.

mod common;

use common::{config_file, nanohost, read_json, s, standard_plugin, template_plugin};
use std::path::Path;

const CONFIG: &str = r#"{"workloads": ["standard"], "batch_sizes": [1, 2], "max_input_len": 110, "max_output_len": 5, "seed": 3, "warmup_tokens": 1}"#;

fn is_svg(p: &Path) -> bool {
    std::fs::read_to_string(p)
        .is_ok_and(|t| t.starts_with("<svg") && t.trim_end().ends_with("</svg>"))
}

#[test]
fn compare_of_a_plugin_with_a_copy_of_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(tmp.path(), CONFIG);
    let copy = tmp.path().join("v2/libstandard.so");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(standard_plugin(), &copy).unwrap();
    let out = tmp.path().join("cmp");
    let run = nanohost(&[
        "compare",
        s(&standard_plugin()),
        s(&copy),
        "--trials",
        "2",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "compare failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("A and B generated identical tokens (2 trials"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&run.stderr)
        .contains("warning: A and B are the same plugin (same sha256) with the same options"));

    let report = read_json(&out.join("compare.json"));
    assert_eq!(report["trials"], 2);
    assert_eq!(report["identical_tokens"], true);
    assert_eq!(
        report["a"]["sha256"], report["b"]["sha256"],
        "a copy has the same bytes"
    );
    assert_ne!(report["a"]["path"], report["b"]["path"]);
    let points = report["points"].as_array().unwrap();
    assert_eq!(
        points
            .iter()
            .map(|p| p["point"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["standard batch 1", "standard batch 2"]
    );
    for p in points {
        assert_eq!(p["identical_tokens"], true);
        for key in [
            "output_throughput_tokens_per_sec",
            "time_to_first_token_ms_p50",
            "inter_token_latency_ms_p50",
            "peak_kv_bytes",
            "peak_memory_bytes",
        ] {
            let m = &p["metrics"][key];
            assert_eq!(m["ratios"].as_array().unwrap().len(), 2, "{key}: {m}");
            assert_eq!(m["a"].as_array().unwrap().len(), 2);
            assert!(m["ci_low"].as_f64().unwrap() <= m["ratio_median"].as_f64().unwrap());
            assert!(m["ratio_median"].as_f64().unwrap() <= m["ci_high"].as_f64().unwrap());
            // Two pairs cannot reach 95%: no call either way.
            assert_eq!(m["verdict"], "too_few_trials", "{key}");
        }
        // The same plugin holds the same KV: the ratio is exactly 1.
        assert_eq!(p["metrics"]["peak_kv_bytes"]["ratio_median"], 1.0);
    }
    // Each side of each trial ran in its own process and left its own result file.
    for t in 1..=2 {
        for side in ["a", "b"] {
            assert!(out
                .join(format!("trial-{t}/{side}/results_standard.json"))
                .is_file());
        }
    }
    assert!(is_svg(&out.join("compare_ratios.svg")));
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("## Comparison") && md.contains("(compare_ratios.svg)"),
        "{md}"
    );
}

#[test]
fn runs_get_charts_and_a_summary_that_report_can_redo() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(tmp.path(), CONFIG);
    let out = tmp.path().join("run");
    let run = nanohost(&[
        "run",
        "--plugin",
        s(&standard_plugin()),
        "--config",
        s(&cfg),
        "--out",
        s(&out),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for f in ["throughput.svg", "peak_kv_memory.svg"] {
        assert!(is_svg(&out.join(f)), "{f}");
    }
    let chart = std::fs::read_to_string(out.join("throughput.svg")).unwrap();
    assert!(
        chart.contains("ratio to standard") && chart.lines().any(|l| l.trim() == "standard"),
        "one panel per workload, the legend names the plugin: {chart}"
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("(throughput.svg)")
            && md.contains("(peak_kv_memory.svg)")
            && md.contains("| b1 ")
            && md.contains("| standard "),
        "{md}"
    );

    for f in ["summary.md", "throughput.svg", "peak_kv_memory.svg"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let again = nanohost(&["report", s(&out)]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        std::fs::read_to_string(out.join("summary.md")).unwrap() == md,
        "report re-renders the same summary"
    );
    assert!(is_svg(&out.join("throughput.svg")));

    let empty = nanohost(&["report", s(tmp.path())]);
    let err = String::from_utf8_lossy(&empty.stderr);
    assert!(
        !empty.status.success() && err.contains("holds neither benchmark_summary.json"),
        "{err}"
    );
}

/// One plugin file, two option sets: each side runs with its own, the report names them, and a
/// smaller window holds less KV.
#[test]
fn compare_of_two_option_sets_of_one_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(tmp.path(), CONFIG);
    let plugin = common::built_plugin("nanohost-plugin-streaming", "streaming");
    let out = tmp.path().join("cmp");
    let run = nanohost(&[
        "compare",
        s(&plugin),
        s(&plugin),
        "--trials",
        "1",
        "--a-option",
        "window=96",
        "--b-option",
        "window=32",
        "--config",
        s(&cfg),
        "--out",
        s(&out),
    ]);
    assert!(
        run.status.success(),
        "compare failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report = read_json(&out.join("compare.json"));
    assert_eq!(
        (
            report["a"]["options_given"]["window"].as_u64(),
            report["b"]["options_given"]["window"].as_u64()
        ),
        (Some(96), Some(32))
    );
    for p in report["points"].as_array().unwrap() {
        let kv = &p["metrics"]["peak_kv_bytes"];
        assert!(
            kv["b"][0].as_f64().unwrap() < kv["a"][0].as_f64().unwrap(),
            "{kv}"
        );
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains(r#"options {"window":96}"#)
            && summary.contains(r#"options {"window":32}"#),
        "{summary}"
    );
}

#[test]
fn the_plugin_template_builds_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(tmp.path(), CONFIG);
    let out = tmp.path().join("run");
    let plugin = template_plugin();
    let run = nanohost(&[
        "run",
        "--plugin",
        s(&plugin),
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--plugin-option",
        "my-strategy:min_free=1",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results = read_json(&out.join("results_my_strategy.json"));
    let points = results.as_array().unwrap();
    assert_eq!(points.len(), 2);
    for p in points {
        assert_eq!(p["plugin"]["name"], "my-strategy");
        assert_eq!(p["plugin"]["options"], serde_json::json!({"min_free": 1}));
        assert_eq!(p["method"], "My Strategy");
        // Every block it held was handed out by it: at least the peak.
        assert!(
            p["strategy_counters"]["blocks_handed_out"]
                .as_u64()
                .unwrap()
                >= p["peak_kv_blocks"].as_u64().unwrap()
        );
    }
    let list = nanohost(&["list", "--plugin-dir", s(plugin.parent().unwrap())]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains("my-strategy") && text.contains("0.1.0"),
        "{text}"
    );
}
