//! Small multiples: one panel per workload, grouped bars per point (batch size, prefix or
//! context length), one colour per plugin in every panel, each bar a ratio to the standard
//! plugin on the same prompts (a line at 1), and one legend above the panels, outside the data.

use super::run_table::point_key;
use super::summary::label;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use serde_json::Value;
use std::path::Path;

/// One workload's bars: `groups` on the x axis, `values[plugin][group]`.
pub struct Panel {
    pub title: String,
    pub groups: Vec<String>,
    pub values: Vec<Vec<Option<f64>>>,
}

/// The panels of `key` over `points` as ratios to the baseline point of the same group, and the
/// plugins in colour order (the baseline first). Groups without a baseline are left out.
pub fn ratio_panels(points: &[Value], key: &str) -> (Vec<String>, Vec<Panel>) {
    let mut plugins: Vec<(bool, String)> = points
        .iter()
        .map(|p| (p["plugin"]["baseline"] != true, label(p)))
        .collect();
    plugins.sort();
    plugins.dedup();
    let plugins: Vec<String> = plugins.into_iter().map(|(_, l)| l).collect();
    let mut panels = Vec::new();
    for (workload, pts) in
        super::run_table::by_workload(points.iter().filter(|p| p[key].is_number()))
    {
        let mut keys: Vec<(u64, u64, String)> = pts.iter().map(|p| point_key(p)).collect();
        keys.sort();
        keys.dedup();
        let base = |g: &str| {
            pts.iter()
                .find(|p| point_key(p).2 == g && p["plugin"]["baseline"] == true)
                .and_then(|p| p[key].as_f64())
                .filter(|b| *b > 0.0)
        };
        let groups: Vec<String> = keys
            .into_iter()
            .map(|k| k.2)
            .filter(|g| base(g).is_some())
            .collect();
        if groups.is_empty() {
            continue;
        }
        let values = plugins
            .iter()
            .map(|pl| {
                groups
                    .iter()
                    .map(|g| {
                        let p = pts
                            .iter()
                            .find(|p| point_key(p).2 == *g && label(p) == *pl)?;
                        Some(p[key].as_f64()? / base(g)?)
                    })
                    .collect()
            })
            .collect();
        // Short names under the bars: "b4 prefix 100" -> "b4/p100".
        let groups = groups
            .iter()
            .map(|g| g.replace(" prefix ", "/p").replace(" ctx ", "/c"))
            .collect();
        panels.push(Panel {
            title: workload,
            groups,
            values,
        });
    }
    (plugins, panels)
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

/// Draws `panels` (see the module doc) with `plugins` as the legend; `y_desc` names the ratio.
pub fn bar_panels(
    path: &Path,
    title: &str,
    y_desc: &str,
    plugins: &[String],
    panels: &[Panel],
) -> Result<()> {
    let cols = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(cols).max(1);
    // At least two panels wide, so the title and the legend fit however few panels there are.
    let w = 420 * cols.max(2) as i32;
    // The legend: one swatch per plugin, as many to a row as fit (about 7 px a character).
    let mut at = Vec::new();
    let (mut x, mut y) = (12, 40);
    for name in plugins {
        let width = 34 + 7 * name.chars().count() as i32;
        if x > 12 && x + width > w - 12 {
            (x, y) = (12, y + 20);
        }
        at.push((x, y));
        x += width;
    }
    let top_h = (y + 24) as u32;
    let h = top_h + 300 * rows as u32;
    let root = SVGBackend::new(path, (w as u32, h)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let (top, body) = root.split_vertically(top_h);
    top.draw(&Text::new(title.to_string(), (12, 8), ("sans-serif", 20)))
        .map_err(draw_err)?;
    for (i, (name, &(x, y))) in plugins.iter().zip(&at).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        top.draw(&Rectangle::new([(x, y), (x + 14, y + 12)], color.filled()))
            .map_err(draw_err)?;
        top.draw(&Text::new(name.clone(), (x + 20, y), ("sans-serif", 13)))
            .map_err(draw_err)?;
    }
    for (area, panel) in body.split_evenly((rows, cols)).iter().zip(panels) {
        let y_max = panel
            .values
            .iter()
            .flatten()
            .flatten()
            .fold(1.0f64, |a, &b| a.max(b))
            * 1.15;
        let n = panel.groups.len();
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0.0..n as f64, 0.0..y_max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|_| String::new())
            .y_desc(y_desc)
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()
            .map_err(draw_err)?;
        let k = panel.values.len().max(1) as f64;
        for (i, series) in panel.values.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(series.iter().enumerate().filter_map(|(g, v)| {
                    let x0 = g as f64 + 0.1 + 0.8 * i as f64 / k;
                    v.map(|v| Rectangle::new([(x0, 0.0), (x0 + 0.8 / k, v)], color.filled()))
                }))
                .map_err(draw_err)?;
        }
        chart
            .draw_series(LineSeries::new(
                [(0.0, 1.0), (n as f64, 1.0)],
                BLACK.stroke_width(1),
            ))
            .map_err(draw_err)?;
        // Each group's name under its bars (the axis' own labels sit at round numbers).
        let (bx, by) = area.get_base_pixel();
        for (g, name) in panel.groups.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            let at = (x - bx - 3 * name.len() as i32, y - by + 8);
            area.draw(&Text::new(name.clone(), at, ("sans-serif", 12)))
                .map_err(draw_err)?;
        }
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn panels_hold_ratios_to_the_baseline_and_render_as_labelled_svg() {
        let p = |w: &str, pl: &str, base: bool, b: u64, kv: f64| {
            json!({"workload": w, "batch_size": b, "peak_kv_bytes": kv,
                   "plugin": {"name": pl, "label": pl, "baseline": base}})
        };
        let points = vec![
            p("shared-prefix", "cascade", false, 4, 1.0),
            p("shared-prefix", "standard", true, 4, 4.0),
            p("chunked", "standard", true, 1, 2.0),
            p("chunked", "chunked", false, 1, 3.0),
        ];
        let (plugins, panels) = ratio_panels(&points, "peak_kv_bytes");
        assert_eq!(plugins, ["standard", "cascade", "chunked"]);
        // Panels in the order the workloads come, not alphabetical.
        assert_eq!(panels[1].title, "chunked");
        assert_eq!(
            panels[1].values,
            vec![vec![Some(1.0)], vec![None], vec![Some(1.5)]]
        );
        assert_eq!(panels[0].values[1], vec![Some(0.25)]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.svg");
        bar_panels(
            &path,
            "Peak KV vs standard",
            "ratio to standard",
            &plugins,
            &panels,
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in [
            "<svg",
            "Peak KV vs standard",
            "ratio to standard",
            "shared-prefix",
            "cascade",
            "b4",
            "</svg>",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
