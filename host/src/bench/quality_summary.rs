//! Memory saved against quality kept, per plugin, on one screen: the quality table (stdout and
//! `summary.md`), each plugin's retrieval grid (depth x length), and the points behind the
//! savings-vs-accuracy chart.

use super::quality::{Quality, RetrievalCell};
use serde_json::Value;
use std::collections::BTreeMap;

/// What one plugin scored over a run's points.
#[derive(Clone, Debug, Default)]
pub struct PluginQuality {
    pub cells: Vec<RetrievalCell>,
    /// (forced tokens, summed NLL) over perplexity points.
    pub nll: (usize, f64),
    /// (agreeing tokens, compared tokens, identical requests, requests) over points with a
    /// fidelity check.
    pub agreement: (f64, usize, usize, usize),
    /// Peak KV bytes on the quality points.
    pub peak_kv_bytes: f64,
    /// Mean of `memory_savings_ratio` over the points that have one.
    pub savings: Option<f64>,
}

impl PluginQuality {
    pub fn accuracy(&self) -> Option<f64> {
        let (c, t) = self
            .cells
            .iter()
            .fold((0, 0), |(c, t), x| (c + x.correct, t + x.total));
        (t > 0).then(|| c as f64 / t as f64)
    }

    pub fn perplexity(&self) -> Option<f64> {
        (self.nll.0 > 0).then(|| (self.nll.1 / self.nll.0 as f64).exp())
    }

    pub fn agreement(&self) -> Option<f64> {
        (self.agreement.1 > 0).then(|| self.agreement.0 / self.agreement.1 as f64)
    }
}

/// Per plugin name, in name order.
pub fn collect(points: &[Value]) -> BTreeMap<String, PluginQuality> {
    let mut by: BTreeMap<String, PluginQuality> = BTreeMap::new();
    let mut savings: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for p in points {
        let name = super::summary::label(p);
        let q = by.entry(name.clone()).or_default();
        if let Some(s) = p["memory_savings_ratio"].as_f64() {
            savings.entry(name.clone()).or_default().push(s);
        }
        if let Some(f) = p.get("fidelity").filter(|f| f.is_object()) {
            let compared = f["requests"].as_u64().unwrap_or(0) as usize;
            let tokens = p["output_tokens"].as_u64().unwrap_or(0) as usize;
            q.agreement.0 += f["greedy_token_agreement"].as_f64().unwrap_or(0.0) * tokens as f64;
            q.agreement.1 += tokens;
            q.agreement.2 += f["requests_with_identical_output"].as_u64().unwrap_or(0) as usize;
            q.agreement.3 += compared;
        }
        let Some(quality) = p
            .get("quality")
            .and_then(|v| serde_json::from_value::<Quality>(v.clone()).ok())
        else {
            continue;
        };
        q.peak_kv_bytes = q
            .peak_kv_bytes
            .max(p["peak_kv_bytes"].as_f64().unwrap_or(0.0));
        match quality {
            Quality::Retrieval { cells, .. } => q.cells.extend(cells),
            Quality::Perplexity {
                tokens, mean_nll, ..
            } => {
                q.nll.0 += tokens;
                q.nll.1 += mean_nll * tokens as f64;
            }
        }
    }
    for (name, s) in savings {
        if let Some(q) = by.get_mut(&name) {
            q.savings = Some(s.iter().sum::<f64>() / s.len() as f64);
        }
    }
    by
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
}

/// The quality table; empty when no point measured quality or fidelity.
pub fn table(points: &[Value]) -> String {
    let by = collect(points);
    if by
        .values()
        .all(|q| q.cells.is_empty() && q.nll.0 == 0 && q.agreement.1 == 0)
    {
        return String::new();
    }
    let standard_ppl = points
        .iter()
        .find(|p| p["plugin"]["baseline"] == true)
        .and_then(|p| by.get(&super::summary::label(p)))
        .and_then(PluginQuality::perplexity);
    let header = [
        "Plugin",
        "Retrieval",
        "Perplexity",
        "vs standard",
        "Greedy agreement",
        "Identical requests",
        "KV saved",
    ];
    let rows: Vec<[String; 7]> = by
        .iter()
        .map(|(name, q)| {
            let ppl = q.perplexity();
            let ratio = match (ppl, standard_ppl) {
                (Some(a), Some(b)) if b > 0.0 => format!("x{:.3}", a / b),
                _ => "-".into(),
            };
            let identical = if q.agreement.3 > 0 {
                format!("{}/{}", q.agreement.2, q.agreement.3)
            } else {
                "-".into()
            };
            [
                name.clone(),
                pct(q.accuracy()),
                ppl.map_or("-".into(), |p| format!("{p:.3}")),
                ratio,
                pct(q.agreement()),
                identical,
                pct(q.savings),
            ]
        })
        .collect();
    super::summary::text_table(header, &rows)
}

/// A plugin's retrieval grid as text: one row per depth, one column per context length, each
/// cell the exact-match percentage.
pub fn grid_text(cells: &[RetrievalCell]) -> String {
    let (lengths, depths) = grid_axes(cells);
    let mut out = format!(
        "{:>6} |{}\n",
        "depth",
        lengths
            .iter()
            .map(|l| format!("{l:>7}"))
            .collect::<String>()
    );
    out.push_str(&format!(
        "{}-+{}\n",
        "-".repeat(6),
        "-".repeat(7 * lengths.len())
    ));
    for &d in &depths {
        out.push_str(&format!("{:>5}% |", d));
        for &l in &lengths {
            out.push_str(&match cell_accuracy(cells, l, d) {
                None => format!("{:>7}", "-"),
                Some(a) => format!("{:>6.0}%", 100.0 * a),
            });
        }
        out.push('\n');
    }
    out
}

/// The context lengths and depths the cells cover, each sorted once.
pub fn grid_axes(cells: &[RetrievalCell]) -> (Vec<usize>, Vec<u32>) {
    let mut lengths: Vec<usize> = cells.iter().map(|c| c.context_tokens).collect();
    let mut depths: Vec<u32> = cells.iter().map(|c| c.depth_percent).collect();
    lengths.sort_unstable();
    lengths.dedup();
    depths.sort_unstable();
    depths.dedup();
    (lengths, depths)
}

/// Exact match over the cells at one length and depth; `None` where there are none.
pub fn cell_accuracy(cells: &[RetrievalCell], len: usize, depth: u32) -> Option<f64> {
    let (c, t) = cells
        .iter()
        .filter(|x| x.context_tokens == len && x.depth_percent == depth)
        .fold((0, 0), |(c, t), x| (c + x.correct, t + x.total));
    (t > 0).then(|| c as f64 / t as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn retrieval_point(
        plugin: &str,
        cells: &[(usize, u32, usize, usize)],
        peak: u64,
        savings: Option<f64>,
    ) -> Value {
        let cells: Vec<RetrievalCell> = cells
            .iter()
            .map(|&(l, d, c, t)| RetrievalCell {
                context_tokens: l,
                depth_percent: d,
                correct: c,
                total: t,
            })
            .collect();
        let (c, t) = cells
            .iter()
            .fold((0, 0), |(c, t), x| (c + x.correct, t + x.total));
        let q = Quality::Retrieval {
            accuracy: c as f64 / t as f64,
            correct: c,
            total: t,
            cells,
        };
        let mut p = json!({"plugin": {"name": plugin, "baseline": plugin == "standard"}, "workload": "retrieval", "peak_kv_bytes": peak, "quality": q, "output_tokens": 10});
        if let Some(s) = savings {
            p["memory_savings_ratio"] = json!(s);
            p["fidelity"] = json!({"greedy_token_agreement": 0.5, "requests_with_identical_output": 1, "requests": 2});
        }
        p
    }

    #[test]
    fn the_table_puts_each_plugins_quality_beside_what_it_saved() {
        let ppl = |plugin: &str, nll: f64| json!({"plugin": {"name": plugin, "baseline": plugin == "standard"}, "workload": "perplexity", "peak_kv_bytes": 1, "quality": Quality::Perplexity { tokens: 100, mean_nll: nll, perplexity: nll.exp() }});
        let points = vec![
            retrieval_point("standard", &[(512, 0, 4, 4), (512, 100, 4, 4)], 1000, None),
            retrieval_point(
                "streaming",
                &[(512, 0, 1, 4), (512, 100, 4, 4)],
                400,
                Some(0.6),
            ),
            ppl("standard", 1.0),
            ppl("streaming", 1.5),
        ];
        let by = collect(&points);
        assert_eq!(by["streaming"].accuracy(), Some(5.0 / 8.0));
        assert!((by["streaming"].perplexity().unwrap() - 1.5f64.exp()).abs() < 1e-9);
        assert_eq!(by["streaming"].agreement(), Some(0.5));
        let t = table(&points);
        let row = t.lines().find(|l| l.starts_with("| streaming")).unwrap();
        assert!(
            row.contains("62.5%")
                && row.contains(&format!("x{:.3}", 0.5f64.exp()))
                && row.contains("60.0%")
                && row.contains("1/2"),
            "{t}"
        );
        let grid = grid_text(&by["streaming"].cells);
        assert!(
            grid.contains("    0% |    25%") && grid.contains("  100% |   100%"),
            "{grid}"
        );
        assert!(table(&[json!({"plugin": {"name": "standard"}})]).is_empty());
    }
}
