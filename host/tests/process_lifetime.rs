//! No worker outlives its run: a parent killed with SIGKILL takes its worker with it (the
//! parent-death signal), SIGTERM to the parent kills the worker's group and still writes the run
//! report (exit status 143), and a timeout kills what the plugin itself started, without `run`
//! waiting on the pipes that process held.

mod common;

use common::{fault_plugins, s};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Processes whose command line contains `marker`, as (pid, command line).
fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(marker) && pid != std::process::id() {
            found.push((pid, cmdline));
        }
    }
    found
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `nanohost run` of the hanging plugin into `out`, started, with its worker up.
fn hanging_run(out: &Path) -> Child {
    let plugin = fault_plugins().join("libfault_hang.so");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_nanohost"))
        .current_dir(root)
        .args([
            "run",
            "--plugin",
            s(&plugin),
            "--workload",
            "standard",
            "--out",
            s(out),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let marker = out.to_str().unwrap().to_string();
    wait_for("the worker to start", Duration::from_secs(30), || {
        processes_with(&marker)
            .iter()
            .any(|(_, c)| c.contains(" worker "))
    });
    child
}

#[test]
fn a_parent_killed_with_sigkill_takes_its_worker_along() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("killed-run");
    let mut parent = hanging_run(&out);
    parent.kill().unwrap();
    parent.wait().unwrap();
    let marker = out.to_str().unwrap().to_string();
    wait_for(
        "no process of the run to remain",
        Duration::from_secs(5),
        || processes_with(&marker).is_empty(),
    );
}

#[test]
fn sigterm_kills_the_worker_and_reports_the_interruption() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("terminated-run");
    let parent = hanging_run(&out);
    // SAFETY: a plain kill(2) of the child we started.
    unsafe { libc::kill(parent.id() as libc::pid_t, libc::SIGTERM) };
    let done = parent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(143), "{stderr}");
    assert!(
        stderr.contains(
            "nanohost run: interrupted by SIGTERM: its worker was killed; 0 of 1 plugins finished"
        ),
        "{stderr}"
    );
    let report = common::read_json(&out.join("run_report.json"));
    assert_eq!(report[0]["interrupted"], "SIGTERM");
    assert!(report[0]["failure"]
        .as_str()
        .unwrap()
        .contains("interrupted by SIGTERM and killed"));
    assert!(processes_with(out.to_str().unwrap()).is_empty());
}

#[test]
fn a_timeout_kills_what_the_plugin_started_too() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = fault_plugins().join("libfault_spawn_and_hang.so");
    let start = Instant::now();
    let out = common::nanohost(&[
        "run",
        "--plugin",
        s(&plugin),
        "--workload",
        "standard",
        "--timeout",
        "4",
        "--out",
        s(&tmp.path().join("out")),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("timed out after 4s and was killed"),
        "{text}"
    );
    // The plugin's `sleep` held the worker's stdout and stderr; `run` did not wait for it.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "run took {:?}",
        start.elapsed()
    );
    wait_for(
        "the plugin's process to be gone",
        Duration::from_secs(5),
        || processes_with("sleep 987654").is_empty(),
    );
}

/// What a plugin prints never reaches the results: a forged result line and progress on
/// stdout, bytes that are not UTF-8, and 4 MB on stderr leave a normal run, whose worker log
/// keeps a capped head and tail.
#[test]
fn a_plugins_output_is_only_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let forged = Path::new("/tmp/nanohost-forged-results.json");
    std::fs::write(
        forged,
        r#"[{"method": "forged", "throughput_tokens_per_sec": 99999999}]"#,
    )
    .unwrap();
    let plugin = fault_plugins().join("libfault_forger.so");
    let out = tmp.path().join("out");
    let cfg = common::config_file(
        tmp.path(),
        r#"{"workloads": ["standard"], "batch_sizes": [1], "max_input_len": 100, "max_output_len": 3, "warmup_tokens": 0}"#,
    );
    let run = common::nanohost(&[
        "run",
        "--plugin",
        s(&plugin),
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
    let summary = common::read_json(&out.join("benchmark_summary.json"));
    assert_eq!(summary.as_array().unwrap().len(), 1);
    assert_eq!(summary[0]["plugin"]["name"], "fault-forger");
    let report = common::read_json(&out.join("run_report.json"));
    assert_eq!(
        report[0]["results"].as_str().unwrap(),
        s(&out.join("results_fault_forger.json"))
    );
    let log = std::fs::read(out.join("logs/fault_forger.log")).unwrap();
    assert!(
        log.len() < 400 * 1024,
        "the log keeps head and tail only: {} bytes",
        log.len()
    );
    assert!(String::from_utf8_lossy(&log).contains("bytes left out"));
}

/// A plugin that fails at its second point keeps the first: in the results, the summary and
/// the run report, with the failure saying so.
#[test]
fn points_finished_before_a_failure_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = fault_plugins().join("libfault_panic_later.so");
    let out = tmp.path().join("out");
    // No fidelity runs: they would admit more requests of the plugin within the first point.
    let cfg = common::config_file(
        tmp.path(),
        r#"{"workloads": ["standard"], "batch_sizes": [1, 2], "max_input_len": 100, "max_output_len": 3, "warmup_tokens": 1, "fidelity": false}"#,
    );
    let run = common::nanohost(&[
        "run",
        "--plugin",
        s(&plugin),
        "--config",
        s(&cfg),
        "--out",
        s(&out),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(!run.status.success());
    assert!(
        stdout.contains("panicked in admit: the third admission")
            && stdout.contains("(the 1 points it finished before are kept)"),
        "{stdout}"
    );
    let summary = common::read_json(&out.join("benchmark_summary.json"));
    assert_eq!(summary.as_array().unwrap().len(), 1);
    assert_eq!(summary[0]["batch_size"], 1);
    let report = common::read_json(&out.join("run_report.json"));
    assert_eq!(
        (
            report[0]["ok"].as_bool(),
            report[0]["results"].as_str().is_some()
        ),
        (Some(false), true)
    );
}
