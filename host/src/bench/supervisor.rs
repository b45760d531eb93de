//! `nanohost run`: one child process per plugin, with a timeout, a progress bar, and a report
//! of how each child ended. A crashing or hanging plugin costs only its own results.

use super::config::BenchConfig;
use super::preflight::PlannedPlugin;
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STDERR_TAIL_LINES: usize = 20;

/// How one plugin's child process ended.
#[derive(Debug)]
pub struct Outcome {
    pub plugin: PathBuf,
    /// The result file, when the child succeeded.
    pub results: Option<PathBuf>,
    /// Why it failed: exit code or signal, and the tail of its stderr.
    pub failure: Option<String>,
    /// The run was interrupted (SIGINT or SIGTERM to nanohost) while this plugin ran.
    pub interrupted: Option<i32>,
}

#[derive(Default)]
struct Progress {
    done: usize,
    total: usize,
    point: String,
}

/// Processes of this cgroup the kernel's OOM killer has killed (cgroup v2 `memory.events`), so a
/// worker's SIGKILL can be told apart: `None` where the count cannot be read.
fn oom_kills() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let events =
        std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.events", path.trim())).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// `oom_before`: [`oom_kills`] when the worker started.
fn describe_exit(status: ExitStatus, oom_before: Option<u64>) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let oom = oom_before.zip(oom_kills()).is_some_and(|(a, b)| b > a);
            let name = match sig {
                9 if oom => return "killed by the kernel's out-of-memory killer (SIGKILL): the run needed more memory than the host had; lower batch_sizes or max_input_len, or set kv_cache_bytes".into(),
                6 => " (SIGABRT: the plugin aborted)",
                9 => " (SIGKILL, sent from outside nanohost; or the out-of-memory killer)",
                11 => " (SIGSEGV: the plugin crashed on a bad memory access)",
                7 => " (SIGBUS)",
                _ => "",
            };
            return format!("killed by signal {sig}{name}");
        }
    }
    match status.code() {
        Some(c) => format!("exited with code {c}"),
        None => "ended without an exit code".into(),
    }
}

/// Progress: an indicatif bar on a terminal; otherwise a plain line each time a point ends.
enum View {
    Bar(indicatif::ProgressBar),
    Lines,
}

impl View {
    fn new(name: &str, tty: bool) -> View {
        if !tty {
            return View::Lines;
        }
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:24}] {pos}/{len} {msg} ({elapsed})",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(name.to_string());
        View::Bar(bar)
    }

    fn show(&self, name: &str, p: &Progress, elapsed: Duration) {
        match self {
            View::Bar(bar) => {
                bar.set_length(p.total as u64);
                bar.set_position(p.done as u64);
                bar.set_message(p.point.clone());
            }
            View::Lines if p.total == 0 => eprintln!("{name}: {}", p.point),
            View::Lines => eprintln!(
                "[{}/{}] {name}: {} ({:.1}s)",
                p.done,
                p.total,
                p.point,
                elapsed.as_secs_f64()
            ),
        }
    }

    fn finish(&self) {
        if let View::Bar(bar) = self {
            bar.finish();
        }
    }
}

/// Runs one plugin in a child `nanohost worker` and waits for it, at most `timeout`. A plugin
/// the preflight refused is reported without starting one.
pub fn run_child(planned: &PlannedPlugin, cfg: &BenchConfig, out_dir: &Path) -> Result<Outcome> {
    let plugin = planned.path.as_path();
    if let Some(why) = &planned.refused {
        return Ok(Outcome {
            plugin: plugin.to_path_buf(),
            results: None,
            failure: Some(why.clone()),
            interrupted: None,
        });
    }
    let plugin_name = planned
        .results_file
        .trim_start_matches("results_")
        .trim_end_matches(".json")
        .to_string();
    let exe =
        std::env::current_exe().context("cannot find the nanohost binary to start a worker")?;
    let mut cmd = Command::new(exe);
    super::lifetime::bind_to_parent(&mut cmd);
    let (channel, worker_end) =
        super::channel::pipe().context("cannot make the worker's channel")?;
    super::lifetime::pass_fd(
        &mut cmd,
        std::os::fd::AsRawFd::as_raw_fd(&worker_end),
        super::channel::WORKER_FD,
    );
    cmd.env("NANOHOST_CHANNEL", super::channel::WORKER_FD.to_string());
    let oom_before = oom_kills();
    let mut child: Child = cmd
        .arg("worker")
        .arg("--plugin")
        .arg(plugin)
        .arg("--out")
        .arg(out_dir)
        .arg("--config-json")
        .arg(serde_json::to_string(cfg)?)
        .arg("--results")
        .arg(&planned.results_file)
        .env(
            "NANOHOST_LOG",
            std::env::var("NANOHOST_LOG")
                .or_else(|_| std::env::var("RUST_LOG"))
                .unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start a worker process")?;
    // Only the worker may hold the write end: the channel ends when it does.
    drop(worker_end);
    let log_path = out_dir.join("logs").join(format!("{plugin_name}.log"));

    let progress = Arc::new(Mutex::new(Progress {
        point: "loading".into(),
        ..Default::default()
    }));
    let result_file: Arc<Mutex<Option<PathBuf>>> = Arc::new(Mutex::new(None));
    let r2 = result_file.clone();
    let p2 = progress.clone();
    let out_thread = std::thread::spawn(move || {
        for line in BufReader::new(channel).lines().map_while(Result::ok) {
            match super::channel::parse(&line) {
                Some(super::channel::Message::Results { file }) => *r2.lock().unwrap() = Some(file),
                Some(super::channel::Message::Progress { done, total, point }) => {
                    *p2.lock().unwrap() = Progress { done, total, point }
                }
                None => {}
            }
        }
    });
    // The worker's stdout and stderr (the plugin's too): capped in memory and in its log file.
    let log = std::sync::Arc::new(Mutex::new(super::worker_log::CappedLog::default()));
    let (stdout, stderr) = (
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let (l1, l2) = (log.clone(), log.clone());
    let stdout_thread = std::thread::spawn(move || super::worker_log::drain(stdout, &l1));
    let err_thread = std::thread::spawn(move || {
        super::worker_log::drain(stderr, &l2);
        l2.lock().unwrap().tail_lines(STDERR_TAIL_LINES)
    });

    let tty = std::io::stderr().is_terminal();
    let view = View::new(&plugin_name, tty);
    let started = Instant::now();
    let timeout = Duration::from_secs(cfg.timeout_seconds);
    let mut last_draw = (usize::MAX, Instant::now());
    let mut interrupted = None;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Ok(st);
        }
        if let Some(sig) = super::lifetime::interrupted() {
            super::lifetime::kill_group(child.id());
            let _ = child.wait();
            interrupted = Some(sig);
            break Err(format!(
                "interrupted by {} and killed",
                super::lifetime::signal_name(sig)
            ));
        }
        if started.elapsed() >= timeout {
            // The whole group: the worker and any process its plugin started.
            super::lifetime::kill_group(child.id());
            let _ = child.wait();
            break Err(format!(
                "timed out after {}s and was killed (config key `timeout_seconds`)",
                cfg.timeout_seconds
            ));
        }
        {
            let p = progress.lock().unwrap();
            if (tty && last_draw.1.elapsed() > Duration::from_millis(250)) || p.done != last_draw.0
            {
                view.show(&plugin_name, &p, started.elapsed());
                last_draw = (p.done, Instant::now());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    view.finish();
    // Whatever else holds the worker's pipes (a process its plugin started outside the group)
    // keeps the readers waiting: give them a moment, then go on without them.
    super::lifetime::kill_group(child.id());
    let deadline = Instant::now() + Duration::from_secs(2);
    while !(out_thread.is_finished() && err_thread.is_finished() && stdout_thread.is_finished())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    log.lock().unwrap().write_to(&log_path);
    // The worker's own warnings (a graph that could not be captured, no fidelity reference...)
    // matter on success too: shown, not only kept in its log.
    for w in log.lock().unwrap().lines_with(" WARN ", 8) {
        eprintln!("warning: {plugin_name}: {}", w.trim());
    }
    // Rust's allocation failure (`memory allocation of N bytes failed`, then an abort), wherever
    // in the output: a backtrace may follow it.
    let out_of_memory = log
        .lock()
        .unwrap()
        .last_line_starting("memory allocation of");
    let tail = if err_thread.is_finished() {
        err_thread.join().unwrap_or_default()
    } else {
        "(the worker's stderr was still held open by another process)".into()
    };
    let named = result_file.lock().unwrap().clone();
    let expected = out_dir.join(&planned.results_file);
    let (results, bad_results) = match named.map(|f| check_results(&f, &expected, plugin)) {
        Some(Ok(f)) => (Some(f), None),
        Some(Err(why)) => (None, Some(why)),
        None => (None, None),
    };
    let failure = match (status, &results) {
        (Ok(st), _) if st.success() && bad_results.is_some() => bad_results,
        (Ok(st), Some(_)) if st.success() => None,
        (Ok(st), None) if st.success() => {
            Some("exited cleanly but reported no result file".to_string())
        }
        (Ok(st), _) => Some(describe_exit(st, oom_before)),
        (Err(why), _) => Some(why),
    };
    // Points finished before a failure are kept (the worker writes its file after each one).
    let kept = results
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        .map_or(0, |l| l.len());
    let failure = failure.map(|f| match &out_of_memory {
        Some(line) => format!("ran out of memory ({line}): {f}"),
        None => explain(f, &tail),
    });
    let failure = failure.map(|f| {
        if kept > 0 {
            format!("{f} (the {kept} points it finished before are kept)")
        } else {
            f
        }
    });
    Ok(Outcome {
        plugin: plugin.to_path_buf(),
        results,
        failure,
        interrupted,
    })
}

/// The child's own last `error:` line says why it failed; without one, show the stderr tail.
fn explain(how: String, stderr_tail: &str) -> String {
    match stderr_tail.lines().rev().find(|l| l.starts_with("error: ")) {
        Some(line) => format!("{how}: {}", line.trim_start_matches("error: ")),
        None if stderr_tail.trim().is_empty() => how,
        None => format!("{how}; stderr ends with:\n{stderr_tail}"),
    }
}

/// The result file a worker named, if it is one: the file the supervisor named for it, a list
/// of result records of this plugin file whose token counts add up.
fn check_results(file: &Path, expected: &Path, plugin: &Path) -> Result<PathBuf, String> {
    let bad = |why: String| {
        Err(format!(
            "reported a result file that is not one ({}): {why}",
            file.display()
        ))
    };
    if file != expected {
        return bad(format!("not {}, the file it was given", expected.display()));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let Ok(serde_json::Value::Array(records)) = serde_json::from_str::<serde_json::Value>(&text)
    else {
        return bad("not a JSON list".into());
    };
    for (i, r) in records.iter().enumerate() {
        if r["plugin"]["path"].as_str() != Some(&plugin.display().to_string()) {
            return bad(format!("record {i} is not of {}", plugin.display()));
        }
        let (input, output, total) = (
            r["total_input_tokens"].as_u64(),
            r["total_output_tokens"].as_u64(),
            r["total_tokens"].as_u64(),
        );
        if input.zip(output).map(|(i, o)| i + o) != total {
            return bad(format!(
                "record {i}: total_tokens is not total_input_tokens + total_output_tokens"
            ));
        }
    }
    Ok(file.to_path_buf())
}
