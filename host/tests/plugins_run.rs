//! `nanohost run` and `nanohost list` through the real binary, on `tiny`.

mod common;

use common::{config_file, fault_plugins, nanohost, read_json, s, standard_plugin};
use nanohost::bench::config::BenchConfig;
use nanohost::model::Preset;
use nanohost::workload;
use std::path::Path;

#[test]
fn standard_run_writes_results_that_follow_from_the_workload() {
    let tmp = tempfile::tempdir().unwrap();
    let config = r#"{"workloads": ["standard"], "batch_sizes": [1, 3], "max_input_len": 120, "max_output_len": 6, "seed": 7, "warmup_tokens": 2}"#;
    let cfg_path = config_file(tmp.path(), config);
    let out = tmp.path().join("out");
    let plugin = standard_plugin();
    let run = nanohost(&[
        "run",
        "--plugin",
        s(&plugin),
        "--config",
        s(&cfg_path),
        "--out",
        s(&out),
        "--csv",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.starts_with("standard\n")
            && stdout.contains("| Out tok/s")
            && stdout.contains("| b3 ")
            && stdout.lines().all(|l| l.chars().count() <= 100),
        "{stdout}"
    );

    // The same prompts, drawn by the library from the same config.
    let cfg = BenchConfig::from_json(config).unwrap();
    let tok = nanohost::model::tokenizer::byte_level_tokenizer().unwrap();
    let points = workload::by_name("standard")
        .unwrap()
        .points(&cfg, Preset::Tiny.config().vocab_size, &tok)
        .unwrap();
    let results = read_json(&out.join("results_standard.json"));
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 2);
    let bytes_per_block = 16 * Preset::Tiny.config().kv_bytes_per_token(4);
    for (r, p) in results.iter().zip(&points) {
        let b = p.batch_size;
        let lens: Vec<usize> = p.prompts.iter().map(|q| q.tokens.len()).collect();
        assert!(lens.iter().all(|&l| (100..=120).contains(&l)));
        let input: usize = lens.iter().sum();
        assert_eq!(r["method"], "Standard KV Cache");
        assert_eq!(r["batch_size"], b);
        assert_eq!(r["num_sequences"], b);
        assert_eq!(r["total_input_tokens"], input);
        assert_eq!(r["total_output_tokens"], 6 * b);
        assert_eq!(r["output_tokens_generated"], 6 * b);
        assert_eq!(r["total_tokens"], input + 6 * b);
        assert_eq!(r["prefill_tokens_computed"], input);
        assert_eq!(r["prefill_tokens_reused"], 0);
        // All sequences are live at the last step, holding prompt + 5 decoded tokens each.
        let blocks: usize = lens.iter().map(|l| (l + 5).div_ceil(16)).sum();
        assert_eq!(r["peak_kv_blocks"], blocks);
        assert_eq!(r["peak_kv_bytes"], blocks * bytes_per_block);
        assert_eq!(r["memory_used_bytes"], blocks * bytes_per_block);
        assert_eq!(
            r["peak_kv_bytes_reported_by_strategy"],
            blocks * bytes_per_block
        );
        let t = r["time_seconds"].as_f64().unwrap();
        let tput = r["throughput_tokens_per_sec"].as_f64().unwrap();
        assert!((tput - (input + 6 * b) as f64 / t).abs() < 1e-6 * tput);
        assert!(r["time_to_first_token_ms_p50"].as_f64().unwrap() > 0.0);
        assert!(
            r["inter_token_latency_ms_p99"].as_f64().unwrap()
                >= r["inter_token_latency_ms_p50"].as_f64().unwrap()
        );
        assert!(r["peak_process_memory_bytes"].as_u64().unwrap() > 0);
        assert_eq!(r["plugin"]["name"], "standard");
        assert_eq!(r["plugin"]["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(r["model"], "preset:tiny");
        assert_eq!(r["device"], "cpu");
    }
    // The CSV: a header, then one row per point, each key in its column.
    let csv = std::fs::read_to_string(out.join("benchmark_summary.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "total_input_tokens")
        .unwrap();
    assert_eq!(header[0], "plugin.name");
    // One level of nesting is flattened: a.b columns.
    assert!(header.contains(&"cuda_graphs.mode"), "{}", lines[0]);
    for (line, r) in lines[1..].iter().zip(results) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(
            (cells[0], cells[col]),
            ("standard", r["total_input_tokens"].to_string().as_str())
        );
    }
    // The summary is the result file's points, each plugin labelled and the baseline marked.
    let mut summary = read_json(&out.join("benchmark_summary.json"));
    for p in summary.as_array_mut().unwrap() {
        let plugin = p["plugin"].as_object_mut().unwrap();
        assert_eq!(plugin.remove("label").unwrap(), "standard");
        assert_eq!(plugin.remove("baseline").unwrap(), true);
    }
    assert_eq!(summary.as_array().unwrap(), results);
    assert!(!std::fs::read_dir(&out).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
}

#[test]
fn every_plugin_fault_is_reported_while_a_good_plugin_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let faults = fault_plugins();
    let random = tmp.path().join("librandom.so");
    std::fs::write(
        &random,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let cfg_path = config_file(
        tmp.path(),
        r#"{"workloads": ["standard"], "batch_sizes": [2], "max_output_len": 3, "warmup_tokens": 0, "max_input_len": 110}"#,
    );
    let out = tmp.path().join("out");
    let expected = [
        ("panic", "failed in admit: panicked in admit: injected fault: admit panicked"),
        ("abort", "killed by signal 6 (SIGABRT"),
        ("segfault", "killed by signal 11 (SIGSEGV"),
        ("hang", "timed out after 8s and was killed"),
        ("bad_block", "plugin `fault-bad-block` returned an invalid plan: span 0 uses block"),
        ("double_block", "returned an invalid plan: block 0 is handed to sequence 1 while live sequence 0 holds it privately"),
        ("abi_mismatch", "was built for strategy ABI 9.0.0, but this host speaks ABI 1.0.0"),
        ("not_a_plugin", "is a shared library but not a nanohost plugin"),
    ];
    let standard = standard_plugin();
    let mut args = vec![
        "run".to_string(),
        "--config".into(),
        s(&cfg_path).into(),
        "--out".into(),
        s(&out).into(),
        "--timeout".into(),
        "8".into(),
    ];
    args.extend(["--plugin".into(), s(&standard).into()]);
    for (name, _) in &expected {
        args.extend([
            "--plugin".into(),
            faults
                .join(format!("libfault_{name}.so"))
                .display()
                .to_string(),
        ]);
    }
    args.extend(["--plugin".into(), s(&random).into()]);
    let run = nanohost(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !run.status.success(),
        "a run with failing plugins must not exit 0"
    );
    let report = read_json(&out.join("run_report.json"));
    let report = report.as_array().unwrap();
    assert_eq!(report.len(), expected.len() + 2);
    assert_eq!(
        report[0]["ok"], true,
        "the good plugin failed: {}",
        report[0]
    );
    for ((name, why), r) in expected.iter().zip(&report[1..]) {
        assert_eq!(r["ok"], false, "{name} passed");
        let f = r["failure"].as_str().unwrap();
        assert!(f.contains(why), "{name}: expected \"{why}\" in \"{f}\"");
    }
    let f = report.last().unwrap()["failure"].as_str().unwrap();
    assert!(
        f.contains("librandom.so is not a loadable shared library"),
        "{f}"
    );
    let summary = read_json(&out.join("benchmark_summary.json"));
    assert!(summary
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["plugin"]["name"] == "standard"));
    assert_eq!(summary.as_array().unwrap().len(), 1);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        stdout.matches("FAILED").count(),
        expected.len() + 1,
        "{stdout}"
    );
}

#[test]
fn list_reports_abi_status_path_and_sha256() {
    let faults = fault_plugins();
    let standard = standard_plugin();
    let dir = standard.parent().unwrap();
    let out = nanohost(&["list", "--plugin-dir", s(&faults), "--plugin-dir", s(dir)]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let sha = nanohost::plugin::load::sha256_file(&standard).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("standard\t1.0.0\tABI 1.0.0 ok\t") && l.ends_with(&sha)),
        "{text}"
    );
    assert!(
        text.contains("ABI mismatch (plugin 9.0.0, host 1.0.0)"),
        "{text}"
    );
    assert!(text.contains("not a nanohost plugin"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("fault-panic\t0.0.1\tABI 1.0.0 ok")),
        "{text}"
    );
    // A file that aborts while loading is a row of its own; the rest are still listed.
    assert!(
        text.lines()
            .any(|l| l.starts_with("-\t-\tcrashes while loading\t")
                && l.contains("libfault_abort_at_load.so")),
        "{text}"
    );
}

#[test]
fn bad_inputs_to_run_are_named() {
    let out = nanohost(&[
        "run",
        "--plugin",
        "plugins/nope.so",
        "--out",
        "/nonexistent-dir/x",
        "--preset",
        "huge",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown preset \"huge\""));
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.json");
    std::fs::write(&cfg, r#"{"batch_sizes": [1], "max_output_len": "many"}"#).unwrap();
    let out = nanohost(&["run", "--config", s(&cfg)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("key `max_output_len`") && err.contains("c.json"),
        "{err}"
    );
}

#[test]
fn repository_plugin_links_point_at_release_builds_of_workspace_plugins() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("plugins")).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(cargo) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let rel = dir.strip_prefix(root).unwrap().display().to_string();
        assert!(
            manifest.contains(&format!("\"{rel}\"")),
            "{rel} is not a workspace member"
        );
        if !cargo.contains("cdylib") {
            continue; // a library plugins share (plugins/chunk-store), not a plugin
        }
        let lib_name = cargo
            .split("[lib]")
            .nth(1)
            .and_then(|t| t.lines().find_map(|l| l.strip_prefix("name = \"")))
            .unwrap()
            .trim_end_matches('"');
        let link = root.join("plugins").join(format!("lib{lib_name}.so"));
        let target = std::fs::read_link(&link)
            .unwrap_or_else(|_| panic!("{} is not a link", link.display()));
        assert_eq!(
            target,
            Path::new(&format!("../target/release/lib{lib_name}.so"))
        );
        checked += 1;
    }
    assert!(checked >= 4, "standard, cascade, chunked, chunked-reuse");
}

#[test]
fn summary_measures_cascade_savings_against_standard_on_the_same_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = config_file(
        tmp.path(),
        r#"{"batch_sizes": [3], "max_output_len": 2, "warmup_tokens": 0, "workloads": ["shared-prefix"]}"#,
    );
    let out = tmp.path().join("out");
    let standard = standard_plugin();
    let cascade = common::built_plugin("nanohost-plugin-cascade", "cascade");
    let run = nanohost(&[
        "run",
        "--config",
        s(&cfg_path),
        "--out",
        s(&out),
        "--plugin",
        s(&standard),
        "--plugin",
        s(&cascade),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = read_json(&out.join("benchmark_summary.json"));
    let points = summary.as_array().unwrap();
    assert_eq!(points.len(), 6);
    for c in points.iter().filter(|p| p["plugin"]["name"] == "cascade") {
        let prefix = c["shared_prefix_len"].as_u64().unwrap();
        let std_point = points
            .iter()
            .find(|p| p["plugin"]["name"] == "standard" && p["shared_prefix_len"] == prefix)
            .unwrap();
        let (mine, base) = (
            c["peak_kv_bytes"].as_f64().unwrap(),
            std_point["peak_kv_bytes"].as_f64().unwrap(),
        );
        assert!(mine < base, "prefix {prefix}: sharing saved nothing");
        assert!((c["memory_savings_ratio"].as_f64().unwrap() - (1.0 - mine / base)).abs() < 1e-12);
        // Full blocks of the prefix (16 tokens each) are stored once instead of 3 times.
        let bytes_per_block = base / std_point["peak_kv_blocks"].as_f64().unwrap();
        assert_eq!(
            base - mine,
            (prefix / 16 * 2) as f64 * bytes_per_block,
            "prefix {prefix}"
        );
        assert_eq!(c["prefill_tokens_reused"], prefix / 16 * 16 * 2);
        // Fidelity on every workload: cascade is exact, so it decodes what standard decodes.
        assert_eq!(c["fidelity"]["reference"], "standard");
        assert_eq!(
            c["fidelity"]["greedy_token_agreement"], 1.0,
            "{}",
            c["fidelity"]
        );
        assert_eq!(
            c["fidelity"]["requests_with_identical_output"],
            c["fidelity"]["requests"]
        );
    }
    // The reference is not compared with itself.
    assert!(points
        .iter()
        .filter(|p| p["plugin"]["name"] == "standard")
        .all(|p| p.get("fidelity").is_none()));
}

#[test]
fn chunked_runs_report_chunk_keys_and_fidelity_against_standard() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = config_file(
        tmp.path(),
        r#"{"batch_sizes": [3], "max_output_len": 3, "warmup_tokens": 0, "workloads": ["chunked", "chunked-reuse"]}"#,
    );
    let out = tmp.path().join("out");
    let chunked = common::built_plugin("nanohost-plugin-chunked", "chunked");
    let reuse = common::built_plugin("nanohost-plugin-chunked-reuse", "chunked_reuse");
    // The fidelity reference is found beside the plugin.
    assert_eq!(standard_plugin().parent(), chunked.parent());
    let run = nanohost(&[
        "run",
        "--config",
        s(&cfg_path),
        "--out",
        s(&out),
        "--plugin",
        s(&chunked),
        "--plugin",
        s(&reuse),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let reuse_points = read_json(&out.join("results_chunked_reuse.json"));
    let chunked_points = read_json(&out.join("results_chunked.json"));
    for p in reuse_points
        .as_array()
        .unwrap()
        .iter()
        .chain(chunked_points.as_array().unwrap())
    {
        assert_eq!(p["fidelity"]["reference"], "standard", "{p}");
        let agreement = p["fidelity"]["greedy_token_agreement"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&agreement));
        let (hits, misses) = (
            p["cache_hits"].as_u64().unwrap(),
            p["cache_misses"].as_u64().unwrap(),
        );
        assert_eq!(
            p["exact_cache_hits"].as_u64().unwrap() + p["approximate_cache_hits"].as_u64().unwrap(),
            hits
        );
        assert!(p["chunk_memory_mb"].as_f64().unwrap() > 0.0);
        // Every non-query chunk occurrence is a hit or a miss.
        assert!(hits + misses > 0);
    }
    // The prototype's chunked point: all three requests are admitted in one step, so every
    // repeated system prompt or context is a hit and every first occurrence a miss.
    let cfg = BenchConfig::from_json(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    let tok = nanohost::model::tokenizer::byte_level_tokenizer().unwrap();
    let point = &workload::by_name("chunked")
        .unwrap()
        .points(&cfg, Preset::Tiny.config().vocab_size, &tok)
        .unwrap()[0];
    let stored: Vec<[u8; 32]> = point
        .prompts
        .iter()
        .flat_map(|p| {
            p.chunks
                .iter()
                .filter(|c| c.kind != nanohost_strategy_api::ChunkKind::Query)
                .map(|c| c.hash)
        })
        .collect();
    let distinct = stored
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    for p in [&chunked_points[0], &reuse_points[0]] {
        assert_eq!(p["workload"], "chunked");
        assert_eq!(
            (
                p["cache_misses"].as_u64().unwrap(),
                p["cache_hits"].as_u64().unwrap()
            ),
            (distinct, stored.len() as u64 - distinct)
        );
        assert_eq!(
            p["num_unique_chunks"],
            distinct + 3,
            "plus one query per request"
        );
    }
    let wave_point = &reuse_points[1];
    assert_eq!(wave_point["workload"], "chunked-reuse");
    let waves = wave_point["batch_stats"].as_array().unwrap();
    assert_eq!(waves.len(), 5);
    assert_eq!(
        waves
            .iter()
            .map(|w| w["cache_hits"].as_u64().unwrap())
            .sum::<u64>(),
        wave_point["total_cache_hits"].as_u64().unwrap()
    );
    assert_eq!(wave_point["total_sequences"], 15);
    assert_eq!(wave_point["num_batches"], 5);
}

/// Options reach the strategy typed, are recorded in every result, and an unknown one fails the
/// plugin with its name and the options it takes.
#[test]
fn plugin_options_round_trip_into_results() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_file(
        tmp.path(),
        r#"{"workloads": ["standard"], "batch_sizes": [2], "max_input_len": 140, "max_output_len": 5, "warmup_tokens": 0, "plugin_options": {"streaming": {"sinks": 2}}}"#,
    );
    let plugin = common::built_plugin("nanohost-plugin-streaming", "streaming");
    let out = tmp.path().join("out");
    let run = nanohost(&[
        "run",
        "--plugin",
        s(&plugin),
        "--config",
        s(&cfg),
        "--out",
        s(&out),
        "--plugin-option",
        "window=48",
        "--plugin-option",
        "streaming:piece=16",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results = read_json(&out.join("results_streaming.json"));
    let p = &results[0];
    assert_eq!(
        p["plugin"]["options_given"],
        serde_json::json!({"piece": 16, "sinks": 2, "window": 48})
    );
    assert_eq!(
        p["plugin"]["options"],
        serde_json::json!({"piece": 16, "sinks": 2, "window": 48})
    );
    // Two prompts of 100..=140 tokens and 4 placed outputs each, held in 2 + 48 entries.
    let placed = p["total_input_tokens"].as_u64().unwrap() + 2 * 4;
    assert_eq!(p["tokens_evicted"].as_u64().unwrap(), placed - 2 * 50);
    assert_eq!(p["peak_kv_blocks"].as_u64().unwrap(), 2 * 4); // 50 slots in 4 blocks each

    let bad = nanohost(&[
        "run",
        "--plugin",
        s(&plugin),
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("bad")),
        "--plugin-option",
        "windw=48",
    ]);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        !bad.status.success()
            && text.contains("unknown option `windw`; it takes: sinks, window, piece"),
        "{text}"
    );
    let stray = nanohost(&[
        "run",
        "--plugin",
        s(&plugin),
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("stray")),
        "--plugin-option",
        "streamin:window=48",
    ]);
    let text = String::from_utf8_lossy(&stray.stderr);
    assert!(!stray.status.success() && text.contains("options were given for `streamin`, but no plugin of this run has that name (the plugins that ran: streaming)"), "{text}");
    let malformed = nanohost(&["run", "--plugin", s(&plugin), "--plugin-option", "window"]);
    let text = String::from_utf8_lossy(&malformed.stderr);
    assert!(
        !malformed.status.success() && text.contains("--plugin-option `window` has no `=`"),
        "{text}"
    );
}

#[test]
fn list_searches_the_plugin_path_first_and_shows_the_order() {
    let faults = fault_plugins();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nanohost"))
        .args(["list"])
        .env(
            "NANOHOST_PLUGIN_PATH",
            format!("/nonexistent:{}", faults.display()),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let path_line = text
        .lines()
        .find(|l| l.starts_with("plugin search path: "))
        .unwrap();
    assert!(
        path_line.starts_with(&format!(
            "plugin search path: /nonexistent, {}, plugins, ",
            faults.display()
        )),
        "{path_line}"
    );
    assert!(path_line.ends_with("share/nanohost/plugins"), "{path_line}");
    assert!(
        text.lines().any(|l| l.starts_with("fault-panic\t")),
        "{text}"
    );
}
