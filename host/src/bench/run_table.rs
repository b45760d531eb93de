//! The run's table, on stdout and in `summary.md`: one table per workload, rows grouped by batch
//! size and point (prefix or context length), one row per plugin, each measure beside its ratio
//! to the baseline (the standard plugin) on the same prompts. Peak KV is what live sequences
//! held, `+N` what the strategy kept besides (a prefix or chunk cache). So "which strategy saves the most
//! KV on shared-prefix at batch 4, at what fidelity (Agree: greedy tokens equal to standard's)
//! and time to first token" is one glance.

use super::summary::label;
use comfy_table::{presets, CellAlignment, Table};
use serde_json::Value;

/// The narrow table's columns fit this many characters with plugin labels of up to about 16;
/// `--wide` shows every column.
pub const NARROW_WIDTH: u16 = 100;

/// Where a point sits within its workload: batch size, then prefix or context length.
pub fn point_key(p: &Value) -> (u64, u64, String) {
    let b = p["batch_size"].as_u64().unwrap_or(0);
    let (n, what) = match (
        p["shared_prefix_len"].as_u64(),
        p["context_tokens"].as_u64(),
    ) {
        (Some(n), _) => (n, format!(" prefix {n}")),
        (None, Some(n)) => (n, format!(" ctx {n}")),
        _ => (0, String::new()),
    };
    (b, n, format!("b{b}{what}"))
}

fn f(p: &Value, key: &str) -> Option<f64> {
    p[key].as_f64()
}

fn output_tok_s(p: &Value) -> Option<f64> {
    Some(f(p, "total_output_tokens")? / f(p, "time_seconds")?.max(1e-12))
}

fn bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.2} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b => format!("{:.0} kB", b / 1e3),
    }
}

/// `value` and, off the baseline row, `×ratio` to the baseline's value.
fn with_ratio(
    v: Option<f64>,
    base: Option<f64>,
    is_base: bool,
    fmt: impl Fn(f64) -> String,
) -> String {
    match (v, base) {
        (Some(v), Some(b)) if !is_base && b > 0.0 => format!("{} ×{:.2}", fmt(v), v / b),
        (Some(v), _) => fmt(v),
        _ => "-".into(),
    }
}

/// What a strategy kept beyond its live sequences at its peak (a prefix or chunk cache), as
/// ` +2.0M`; empty when it kept nothing more.
fn kept(p: &Value) -> String {
    match (
        f(p, "peak_kv_bytes"),
        f(p, "peak_kv_bytes_reported_by_strategy"),
    ) {
        (Some(live), Some(held)) if held > live => {
            format!(
                " +{}",
                bytes(held - live).replace(' ', "").trim_end_matches('B')
            )
        }
        _ => String::new(),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.0}%", 100.0 * v))
}

/// `points` by workload, in the order the workloads first appear (the config's order).
pub fn by_workload<'a>(points: impl Iterator<Item = &'a Value>) -> Vec<(String, Vec<&'a Value>)> {
    let mut out: Vec<(String, Vec<&Value>)> = Vec::new();
    for p in points {
        let w = p["workload"].as_str().unwrap_or("?");
        match out.iter_mut().find(|(name, _)| name == w) {
            Some((_, pts)) => pts.push(p),
            None => out.push((w.to_string(), vec![p])),
        }
    }
    out
}

/// The run table (see the module doc); empty when no point has a time.
pub fn table(points: &[Value], wide: bool) -> String {
    let groups = by_workload(points.iter().filter(|p| p.get("time_seconds").is_some()));
    let mut out = Vec::new();
    for (workload, mut pts) in groups {
        pts.sort_by_key(|p| {
            let (b, n, _) = point_key(p);
            (
                b,
                n,
                !p["plugin"]["baseline"].as_bool().unwrap_or(false),
                label(p),
            )
        });
        let mut t = Table::new();
        t.load_preset(presets::ASCII_MARKDOWN);
        let mut header = vec![
            "Point",
            "Plugin",
            "Out tok/s",
            "TTFT ms",
            "Peak KV",
            "Saved",
            "Reused",
            "Agree",
        ];
        if wide {
            header.extend([
                "Time s",
                "KV held (live+kept)",
                "TTFT mean ms",
                "ITL p50 ms",
                "Prefill tok/s",
                "Identical reqs",
                "Method",
            ]);
        }
        t.set_header(header);
        let mut last_point = String::new();
        for p in &pts {
            let (_, _, point) = point_key(p);
            let base = pts
                .iter()
                .find(|q| point_key(q).2 == point && q["plugin"]["baseline"] == true);
            let is_base = base.is_some_and(|b| std::ptr::eq(*b, *p));
            let bv = |g: &dyn Fn(&Value) -> Option<f64>| base.and_then(|b| g(b));
            let fid = &p["fidelity"];
            let mut row = vec![
                if point == last_point {
                    String::new()
                } else {
                    point.clone()
                },
                label(p),
                with_ratio(output_tok_s(p), bv(&output_tok_s), is_base, |v| {
                    format!("{v:.0}")
                }),
                with_ratio(
                    f(p, "time_to_first_token_ms_p50"),
                    bv(&|b| f(b, "time_to_first_token_ms_p50")),
                    is_base,
                    |v| format!("{v:.1}"),
                ),
                with_ratio(
                    f(p, "peak_kv_bytes"),
                    bv(&|b| f(b, "peak_kv_bytes")),
                    is_base || !wide,
                    bytes,
                ) + &kept(p),
                pct(f(p, "memory_savings_ratio")),
                p["tokens_reused"]
                    .as_u64()
                    .map_or("-".into(), |n| n.to_string()),
                pct(fid["greedy_token_agreement"].as_f64()),
            ];
            if wide {
                row.extend([
                    with_ratio(
                        f(p, "time_seconds"),
                        bv(&|b| f(b, "time_seconds")),
                        is_base,
                        |v| format!("{v:.2}"),
                    ),
                    f(p, "peak_kv_bytes_reported_by_strategy").map_or("-".into(), bytes),
                    f(p, "time_to_first_token_ms_mean").map_or("-".into(), |v| format!("{v:.1}")),
                    f(p, "inter_token_latency_ms_p50").map_or("-".into(), |v| format!("{v:.2}")),
                    f(p, "prefill_tokens_per_sec").map_or("-".into(), |v| format!("{v:.0}")),
                    match (
                        fid["requests_with_identical_output"].as_u64(),
                        fid["requests"].as_u64(),
                    ) {
                        (Some(a), Some(b)) => format!("{a}/{b}"),
                        _ => "-".into(),
                    },
                    p["method"].as_str().unwrap_or("").to_string(),
                ]);
            }
            last_point = point;
            t.add_row(row);
        }
        for c in 2..t.column_count() {
            if let Some(col) = t.column_mut(c) {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
        out.push(format!("{workload}\n{t}"));
    }
    out.join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn point(
        plugin: &str,
        base: bool,
        b: u64,
        prefix: u64,
        secs: f64,
        ttft: f64,
        kv: f64,
    ) -> Value {
        json!({"plugin": {"name": plugin, "label": plugin, "baseline": base}, "workload": "shared-prefix",
               "batch_size": b, "shared_prefix_len": prefix, "time_seconds": secs, "total_output_tokens": 100,
               "time_to_first_token_ms_p50": ttft, "peak_kv_bytes": kv,
               "peak_kv_bytes_reported_by_strategy": if base { kv } else { 3e6 }, "tokens_reused": if base { 0 } else { 300 },
               "memory_savings_ratio": if base { Value::Null } else { json!(1.0 - kv / 4e6) },
               "fidelity": if base { Value::Null } else { json!({"greedy_token_agreement": 1.0}) }})
    }

    #[test]
    fn rows_group_by_point_with_ratios_to_the_baseline() {
        let points = vec![
            point("cascade", false, 4, 100, 0.5, 20.0, 1e6),
            point("standard", true, 4, 100, 1.0, 40.0, 4e6),
            point("standard", true, 2, 50, 1.0, 30.0, 2e6),
        ];
        let t = table(&points, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "shared-prefix");
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() <= NARROW_WIDTH as usize),
            "{t}"
        );
        let rows: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains("standard") || l.contains("cascade"))
            .collect();
        // b2 first, then b4 with the baseline before the others; the point named once.
        assert!(
            rows[0].contains("b2 prefix 50") && rows[0].contains("standard"),
            "{t}"
        );
        assert!(
            rows[1].contains("b4 prefix 100") && rows[1].contains("standard"),
            "{t}"
        );
        assert!(
            !rows[2].contains("b4") && rows[2].contains("cascade"),
            "{t}"
        );
        // Output tok/s doubles, TTFT halves, 75% of the KV saved, every token agreed.
        for want in [
            "200 ×2.00",
            "20.0 ×0.50",
            "1.0 MB +2.0M",
            "75%",
            "300",
            "100%",
        ] {
            assert!(rows[2].contains(want), "{want} not in {}", rows[2]);
        }
        let wide = table(&points, true);
        assert!(
            wide.contains("0.50 ×0.50") && wide.contains("1.0 MB ×0.25") && wide.contains("Method"),
            "{wide}"
        );
    }
}
