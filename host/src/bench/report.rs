//! `summary.md` and SVG charts beside a run's `benchmark_summary.json` and a comparison's
//! `compare.json`, rendered from those files alone (so `nanohost report DIR` can redo them).

use super::compare::{self, METRICS};
use super::plots::{self, RatioRow, Series};
use super::{quality_summary, summary};
use crate::fsutil::write_atomic;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Writes the charts and `summary.md` for what `dir` holds; returns the files written.
/// `wide`: every column of the run table.
pub fn render(dir: &Path, wide: bool) -> Result<Vec<String>> {
    let (run, cmp) = (dir.join("benchmark_summary.json"), dir.join("compare.json"));
    if !run.is_file() && !cmp.is_file() {
        bail!("{} holds neither benchmark_summary.json (from `nanohost run`) nor compare.json (from `nanohost compare`)", dir.display());
    }
    let mut md = String::from("# nanohost results\n\n");
    let mut written = Vec::new();
    if run.is_file() {
        let mut points: Vec<Value> = read(&run)?;
        summary::label_plugins(&mut points);
        md.push_str(&format!(
            "## Run\n\n```\n{}\n```\n\n",
            super::run_table::table(&points, wide)
        ));
        for (file, title, key, scale, unit) in [
            (
                "throughput.svg",
                "Output throughput",
                "output_throughput_tokens_per_sec",
                1.0,
                "output tokens/s",
            ),
            (
                "peak_kv_memory.svg",
                "Peak KV memory",
                "peak_kv_bytes",
                1.0 / (1024.0 * 1024.0),
                "MiB of KV held at peak",
            ),
        ] {
            // Ratios to the standard plugin, a panel per workload; absolute lines over batch
            // size when the run has no standard plugin to divide by.
            let (plugins, panels) = super::panels::ratio_panels(&points, key);
            match panels.is_empty() {
                false => super::panels::bar_panels(
                    &dir.join(file),
                    &format!("{title}, ratio to standard on the same prompts"),
                    "x standard",
                    &plugins,
                    &panels,
                )?,
                true => {
                    plots::line_chart(&dir.join(file), title, unit, &series(&points, key, scale))?
                }
            }
            md.push_str(&format!("![{title}]({file})\n\n"));
            written.push(file.to_string());
        }
        written.extend(quality_section(dir, &points, &mut md)?);
    }
    if cmp.is_file() {
        let report: Value = read(&cmp)?;
        md.push_str(&compare_markdown(&report));
        let rows: Vec<RatioRow> = report["points"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| {
                METRICS.iter().filter_map(move |(key, name)| {
                    let m = p["metrics"].get(*key)?;
                    let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
                    Some(RatioRow {
                        label: format!("{}: {name}", p["point"].as_str().unwrap_or("")),
                        ratios: m["ratios"]
                            .as_array()?
                            .iter()
                            .filter_map(Value::as_f64)
                            .collect(),
                        median: f("ratio_median"),
                        ci: (f("ci_low"), f("ci_high")),
                    })
                })
            })
            .collect();
        plots::ratio_chart(&dir.join("compare_ratios.svg"), "B / A per trial", &rows)?;
        md.push_str("![B / A per trial](compare_ratios.svg)\n");
        written.push("compare_ratios.svg".into());
    }
    write_atomic(&dir.join("summary.md"), md.as_bytes())?;
    written.push("summary.md".into());
    Ok(written)
}

/// Quality kept against memory saved: the table, each plugin's retrieval grid (text and heat
/// map), and the savings-vs-accuracy scatter. Nothing when no point measured quality.
fn quality_section(dir: &Path, points: &[Value], md: &mut String) -> Result<Vec<String>> {
    let table = quality_summary::table(points);
    if table.is_empty() {
        return Ok(Vec::new());
    }
    md.push_str(&format!("## Quality\n\nRetrieval: exact match of the greedy answer over the grid. Perplexity: teacher-forced through each strategy's own KV. Agreement: greedy tokens equal to standard's on the same prompts. KV saved: peak KV bytes against standard's on the same points.\n\n```\n{table}\n```\n\n"));
    let mut written = Vec::new();
    let mut scatter = Vec::new();
    for (name, q) in quality_summary::collect(points) {
        if q.cells.is_empty() {
            continue;
        }
        let file = format!(
            "retrieval_{}.svg",
            name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
        );
        let (lengths, depths) = quality_summary::grid_axes(&q.cells);
        let cell = |l: usize, d: u32| quality_summary::cell_accuracy(&q.cells, l, d);
        plots::heat_map(
            &dir.join(&file),
            &format!("{name}: retrieval exact match"),
            &lengths,
            &depths,
            &cell,
        )?;
        md.push_str(&format!(
            "### {name}\n\n```\n{}```\n\n![{name} retrieval]({file})\n\n",
            quality_summary::grid_text(&q.cells)
        ));
        written.push(file);
        if let Some(a) = q.accuracy() {
            scatter.push((name.clone(), 100.0 * q.savings.unwrap_or(0.0), 100.0 * a));
        }
    }
    if !scatter.is_empty() {
        plots::scatter(
            &dir.join("savings_vs_accuracy.svg"),
            "KV saved vs retrieval kept",
            "KV saved vs standard (%)",
            "retrieval exact match (%)",
            &scatter,
        )?;
        md.push_str("![KV saved vs retrieval kept](savings_vs_accuracy.svg)\n\n");
        written.push("savings_vs_accuracy.svg".into());
    }
    Ok(written)
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not what nanohost writes there", path.display()))
}

/// One line per plugin and workload (and shared prefix length), over batch size.
fn series(points: &[Value], key: &str, scale: f64) -> Vec<Series> {
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for p in points {
        let (Some(x), Some(y)) = (p["batch_size"].as_f64(), p[key].as_f64()) else {
            continue;
        };
        let plugin = summary::label(p);
        let mut name = format!("{plugin} / {}", p["workload"].as_str().unwrap_or("?"));
        if let Some(n) = p.get("shared_prefix_len") {
            name.push_str(&format!(" (prefix {n})"));
        }
        by.entry(name).or_default().push((x, y * scale));
    }
    by.into_iter()
        .map(|(name, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { name, points }
        })
        .collect()
}

fn compare_markdown(report: &Value) -> String {
    let side = |s: &Value| {
        let options = s
            .get("options_given")
            .and_then(Value::as_object)
            .filter(|o| !o.is_empty())
            .map_or(String::new(), |o| {
                format!(", options {}", Value::Object(o.clone()))
            });
        format!(
            "{} {} ({}, sha256 {:.12}{options})",
            s["name"].as_str().unwrap_or("?"),
            s["version"].as_str().unwrap_or("?"),
            s["path"].as_str().unwrap_or("?"),
            s["sha256"].as_str().unwrap_or("?")
        )
    };
    format!(
        "## Comparison\n\nA: {}\n\nB: {}\n\n```\n{}```\n\n",
        side(&report["a"]),
        side(&report["b"]),
        compare::table(report)
    )
}
