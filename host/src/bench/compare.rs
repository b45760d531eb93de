//! A/B comparison of two plugin builds from their per-trial result lists: per point and metric,
//! each side's median, the paired ratios B/A with their median and distribution-free interval, the
//! verdict, and whether the two generated the same tokens.

use super::stats::{self, Paired};
use anyhow::{bail, Result};
use serde_json::{json, Value};

/// The metrics compared: result key (or derived name) and how the table names it.
pub const METRICS: [(&str, &str); 5] = [
    (
        "output_throughput_tokens_per_sec",
        "output throughput (tok/s)",
    ),
    ("time_to_first_token_ms_p50", "time to first token p50 (ms)"),
    ("inter_token_latency_ms_p50", "inter-token latency p50 (ms)"),
    ("peak_kv_bytes", "peak KV (bytes)"),
    ("peak_memory_bytes", "peak memory (bytes)"),
];

/// Keys that, with the workload and batch size, identify a point.
const POINT_KEYS: [&str; 1] = ["shared_prefix_len"];

pub fn point_label(v: &Value) -> String {
    let mut label = format!(
        "{} batch {}",
        v["workload"].as_str().unwrap_or("?"),
        v["batch_size"]
    );
    for k in POINT_KEYS {
        if let Some(x) = v.get(k) {
            label.push_str(&format!(" {k} {x}"));
        }
    }
    label
}

/// A metric of one record; peak memory is the device's where there is one, else the process's.
fn metric(v: &Value, key: &str) -> Option<f64> {
    match key {
        "peak_memory_bytes" => v
            .get("peak_device_memory_bytes")
            .or_else(|| v.get("peak_process_memory_bytes"))?
            .as_f64(),
        k => v.get(k)?.as_f64(),
    }
}

/// `trials[t]` holds A's and B's result lists of trial `t` (same config, same seeds).
pub fn compare(trials: &[(Vec<Value>, Vec<Value>)], confidence: f64) -> Result<Value> {
    let Some((first_a, first_b)) = trials.first() else {
        bail!("no trials to compare")
    };
    let labels: Vec<String> = first_a.iter().map(point_label).collect();
    for (t, (a, b)) in trials.iter().enumerate() {
        for (side, list) in [("A", a), ("B", b)] {
            let got: Vec<String> = list.iter().map(point_label).collect();
            if got != labels {
                bail!("trial {} of {side} ran points {got:?}, but the first trial of A ran {labels:?}", t + 1);
            }
        }
    }
    let mut points = Vec::new();
    let mut all_identical = true;
    for (i, label) in labels.iter().enumerate() {
        let digest = |v: &Value| {
            v.get("output_tokens_sha256")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let identical = trials
            .iter()
            .all(|(a, b)| digest(&a[i]).is_some() && digest(&a[i]) == digest(&b[i]));
        all_identical &= identical;
        let mut metrics = serde_json::Map::new();
        for (key, name) in METRICS {
            let (mut xa, mut xb) = (Vec::new(), Vec::new());
            for (a, b) in trials {
                if let (Some(x), Some(y)) = (metric(&a[i], key), metric(&b[i], key)) {
                    xa.push(x);
                    xb.push(y);
                }
            }
            if xa.is_empty() {
                continue;
            }
            let p: Paired = stats::paired(&xa, &xb, confidence);
            let mut m = serde_json::to_value(&p)?;
            m["label"] = json!(name);
            m["a"] = json!(xa);
            m["b"] = json!(xb);
            metrics.insert(key.to_string(), m);
        }
        points.push(json!({"point": label, "identical_tokens": identical, "metrics": metrics}));
    }
    let side = |v: &Value| v.get("plugin").cloned().unwrap_or(Value::Null);
    Ok(json!({
        "a": side(&first_a[0]),
        "b": side(&first_b[0]),
        "trials": trials.len(),
        "confidence": confidence,
        "identical_tokens": all_identical,
        "points": points,
    }))
}

/// The comparison as a text table.
pub fn table(report: &Value) -> String {
    let mut out = format!(
        "{:<34} {:<30} {:>14} {:>14} {:>24}  {}\n",
        "point", "metric", "A median", "B median", "B/A median [CI]", "verdict"
    );
    for p in report["points"].as_array().into_iter().flatten() {
        for (key, _) in METRICS {
            let Some(m) = p["metrics"].get(key) else {
                continue;
            };
            let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
            out.push_str(&format!(
                "{:<34} {:<30} {:>14.3} {:>14.3} {:>8.3} [{:.3}, {:.3}]  {}\n",
                p["point"].as_str().unwrap_or(""),
                m["label"].as_str().unwrap_or(key),
                f("a_median"),
                f("b_median"),
                f("ratio_median"),
                f("ci_low"),
                f("ci_high"),
                verdict_text(m),
            ));
        }
    }
    let same = report["identical_tokens"].as_bool() == Some(true);
    let confidence = report["confidence"].as_f64().unwrap_or(0.0);
    out.push_str(&format!(
        "\nA and B generated {} tokens ({} trials, {:.0}% intervals)\n",
        if same { "identical" } else { "DIFFERENT" },
        report["trials"],
        confidence * 100.0
    ));
    let need = stats::min_pairs(confidence);
    if report["trials"].as_u64().unwrap_or(0) < need as u64 {
        out.push_str(&format!("differences are called from {need} trial pairs at this confidence; run --trials {need} or more\n"));
    }
    out
}

fn verdict_text(m: &Value) -> &'static str {
    serde_json::from_value::<stats::Verdict>(m["verdict"].clone())
        .map_or("?", stats::Verdict::describe)
}
