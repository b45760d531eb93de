//! The run's summary: the prototype's table and `benchmark_summary.json`, written last.

use super::supervisor::Outcome;
use crate::fsutil::write_atomic;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;

/// A plain-text table (markdown pipes): the header, a rule, then the rows.
pub fn text_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    t.set_header(header);
    for r in rows {
        t.add_row(r.iter());
    }
    t.to_string()
}

/// The file of the standard plugin that ships with nanohost: the baseline is known by its file,
/// never by the name a plugin gives itself.
pub const BASELINE_FILE: &str = "libstandard.so";

/// The baseline's sha256: the first `libstandard.so` of the points (a run has one unless it was
/// given two builds of it; the first given is the baseline then).
pub fn baseline_sha(points: &[Value]) -> Option<String> {
    points
        .iter()
        .find(|p| {
            p["plugin"]["path"]
                .as_str()
                .and_then(|f| Path::new(f).file_name())
                .is_some_and(|n| n == BASELINE_FILE)
        })
        .and_then(|p| p["plugin"]["sha256"].as_str().map(str::to_string))
}

fn is_baseline(p: &Value, sha: &Option<String>) -> bool {
    sha.is_some() && p["plugin"]["sha256"].as_str() == sha.as_deref()
}

/// Names each point's plugin for tables and charts (`plugin.label`): its name, or, where two
/// files of the run give one name, `name [file stem]` (`name [sha256 prefix]` where the stems
/// match too). The baseline is marked
/// (`plugin.baseline`).
pub fn label_plugins(points: &mut [Value]) {
    let sha = baseline_sha(points);
    let files_of = |name: &str, points: &[Value]| {
        let mut shas: Vec<&str> = points
            .iter()
            .filter(|p| p["plugin"]["name"] == name)
            .filter_map(|p| p["plugin"]["sha256"].as_str())
            .collect();
        shas.sort();
        shas.dedup();
        shas.len()
    };
    // The stem that names the plugin's result file: one name for a file everywhere.
    let stem =
        |p: &Value| super::preflight::stem(Path::new(p["plugin"]["path"].as_str().unwrap_or("?")));
    let labels: Vec<String> = points
        .iter()
        .map(|p| {
            let name = p["plugin"]["name"].as_str().unwrap_or("?");
            if files_of(name, points) < 2 {
                return name.to_string();
            }
            // Told apart by the file's stem, or by its hash where the stems are the same too.
            let same_stem = points.iter().any(|q| {
                q["plugin"]["name"] == name
                    && q["plugin"]["sha256"] != p["plugin"]["sha256"]
                    && stem(q) == stem(p)
            });
            match same_stem {
                false => format!("{name} [{}]", stem(p)),
                true => {
                    let hash = p["plugin"]["sha256"].as_str().unwrap_or("");
                    format!("{name} [{}]", &hash[..hash.len().min(8)])
                }
            }
        })
        .collect();
    for (p, l) in points.iter_mut().zip(labels) {
        let base = is_baseline(p, &sha);
        if let Some(plugin) = p.get_mut("plugin").and_then(Value::as_object_mut) {
            plugin.insert("label".into(), json!(l));
            plugin.insert("baseline".into(), json!(base));
        }
    }
}

/// The plugin's label (see [`label_plugins`]), its name for points labelled before labels.
pub fn label(p: &Value) -> String {
    p["plugin"]["label"]
        .as_str()
        .or(p["plugin"]["name"].as_str())
        .unwrap_or("?")
        .to_string()
}

/// Measured savings against the baseline on the same prompts: for every point of another
/// plugin with a baseline point of the same workload, batch, prefix length and seed,
/// `memory_savings_ratio` = 1 - peak KV bytes / the baseline's peak KV bytes.
pub fn add_measured_savings(points: &mut [Value]) {
    // Context length too: the retrieval workload's points share a batch size.
    let key = |p: &Value| {
        (
            p["workload"].clone(),
            p["batch_size"].clone(),
            p.get("shared_prefix_len").cloned(),
            p.get("context_tokens").cloned(),
            p["seed"].clone(),
        )
    };
    let sha = baseline_sha(points);
    let baseline: Vec<(_, f64, String)> = points
        .iter()
        .filter(|p| is_baseline(p, &sha))
        .filter_map(|p| {
            let path = p["plugin"]["path"].as_str().unwrap_or("?").to_string();
            Some((key(p), p["peak_kv_bytes"].as_f64()?, path))
        })
        .collect();
    for p in points.iter_mut().filter(|p| !is_baseline(p, &sha)) {
        let k = key(p);
        if let (Some((_, base, path)), Some(mine)) = (
            baseline.iter().find(|(bk, _, _)| *bk == k),
            p["peak_kv_bytes"].as_f64(),
        ) {
            if *base > 0.0 {
                p["memory_savings_ratio"] = json!(1.0 - mine / base);
                p["memory_savings_baseline"] = json!(path);
            }
        }
    }
}

/// Reads every successful result file, prints the table and failures, writes the run report
/// and then `benchmark_summary.json`. Returns the number of failed plugins.
/// Every point as one CSV row: each scalar key, top-level or one object deep (`fidelity.*`,
/// `strategy_counters.*`, `quality.accuracy`...), in sorted columns after the plugin's name,
/// label, path and sha256; a key a point lacks is an empty cell.
pub fn csv(points: &[Value]) -> String {
    let scalar = |v: &Value| !(v.is_object() || v.is_array() || v.is_null());
    // Column name -> path of up to two keys.
    let mut keys: std::collections::BTreeSet<(String, Option<String>)> = Default::default();
    for p in points {
        for (k, v) in p.as_object().into_iter().flatten() {
            match v.as_object() {
                Some(inner) if k != "plugin" => {
                    for (k2, _) in inner.iter().filter(|(_, v2)| scalar(v2)) {
                        keys.insert((k.clone(), Some(k2.clone())));
                    }
                }
                _ if scalar(v) => {
                    keys.insert((k.clone(), None));
                }
                _ => {}
            }
        }
    }
    let quote = |s: String| match s.contains([',', '"', '\n']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")),
        false => s,
    };
    let cell = |v: &Value| match v {
        Value::String(s) => quote(s.clone()),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let plugin_keys = ["name", "label", "path", "sha256"];
    let mut out = plugin_keys
        .iter()
        .map(|k| format!("plugin.{k}"))
        .chain(keys.iter().map(|(a, b)| match b {
            Some(b) => format!("{a}.{b}"),
            None => a.clone(),
        }))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for p in points {
        let row: Vec<String> = plugin_keys
            .iter()
            .map(|k| cell(&p["plugin"][*k]))
            .chain(keys.iter().map(|(a, b)| match b {
                Some(b) => cell(&p[a.as_str()][b.as_str()]),
                None => cell(&p[a.as_str()]),
            }))
            .collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// `wide`: every column of the run table (see [`super::run_table`]).
/// `csv`: also `benchmark_summary.csv` (see [`csv`]).
pub fn summarize(
    outcomes: &[Outcome],
    out_dir: &Path,
    wide: bool,
    with_csv: bool,
) -> Result<usize> {
    let mut points = Vec::new();
    for o in outcomes {
        if let Some(f) = &o.results {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            let list: Vec<Value> = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a result list", f.display()))?;
            points.extend(list);
        }
    }
    label_plugins(&mut points);
    add_measured_savings(&mut points);
    println!("{}", super::run_table::table(&points, wide));
    let quality = super::quality_summary::table(&points);
    if !quality.is_empty() {
        println!("\n{quality}");
    }
    let mut warnings: Vec<String> = points
        .iter()
        .flat_map(|p| {
            let who = label(p);
            p["warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|w| w.as_str())
                .map(move |w| format!("warning: {who}: {w}"))
        })
        .collect();
    warnings.dedup();
    for w in &warnings {
        println!("{w}");
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    for o in &failed {
        println!(
            "\nFAILED {}: {}",
            o.plugin.display(),
            o.failure.as_deref().unwrap_or("")
        );
    }
    let report: Vec<Value> = outcomes
        .iter()
        .map(|o| json!({"plugin": o.plugin, "ok": o.failure.is_none(), "results": o.results, "failure": o.failure, "interrupted": o.interrupted.map(crate::bench::lifetime::signal_name)}))
        .collect();
    write_atomic(
        &out_dir.join("run_report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    if with_csv {
        write_atomic(
            &out_dir.join("benchmark_summary.csv"),
            csv(&points).as_bytes(),
        )?;
    }
    write_atomic(
        &out_dir.join("benchmark_summary.json"),
        serde_json::to_string_pretty(&points)?.as_bytes(),
    )?;
    Ok(failed.len())
}
