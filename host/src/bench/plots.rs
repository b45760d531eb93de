//! SVG charts (plotters' SVG backend: text is left to the viewer's fonts, so nothing beyond the
//! crate is needed to draw).

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// One line of a chart: its legend and (x, y) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines over batch size, one per series.
pub fn line_chart(path: &Path, title: &str, y_desc: &str, series: &[Series]) -> Result<()> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let x_max = xs.fold(1.0f64, f64::max) * 1.05;
    let y_max = ys.fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let root = SVGBackend::new(path, (860, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(draw_err)?;
    let y_decimals = if y_max >= 100.0 { 0 } else { 2 };
    chart
        .configure_mesh()
        .x_desc("batch size")
        .y_desc(y_desc)
        .x_labels((x_max.ceil() as usize + 1).clamp(3, 13))
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.y_decimals$}"))
        .draw()
        .map_err(draw_err)?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
            .map_err(draw_err)?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(draw_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

/// One row of a ratio chart: its label, the per-trial ratios, and the interval of their median.
pub struct RatioRow {
    pub label: String,
    pub ratios: Vec<f64>,
    pub median: f64,
    pub ci: (f64, f64),
}

/// Per-trial ratios B/A, one row each, with the median's interval and a line at 1.0.
pub fn ratio_chart(path: &Path, title: &str, rows: &[RatioRow]) -> Result<()> {
    let values = rows
        .iter()
        .flat_map(|r| r.ratios.iter().copied().chain([r.ci.0, r.ci.1, 1.0]))
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((1.0f64, 1.0f64), |(a, b), v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * 0.1).max(0.02);
    let n = rows.len().max(1);
    let root = SVGBackend::new(path, (960, (80 + 26 * n) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(420)
        .build_cartesian_2d((lo - pad)..(hi + pad), -0.5..(n as f64 - 0.5))
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("B / A (dots: trials; bar: interval of the median)")
        .y_labels(n)
        .y_label_formatter(&|y| {
            labels
                .get(y.round().max(0.0) as usize)
                .filter(|_| (y - y.round()).abs() < 1e-6)
                .cloned()
                .unwrap_or_default()
        })
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(
            [(1.0, -0.5), (1.0, n as f64 - 0.5)],
            BLACK.stroke_width(1),
        ))
        .map_err(draw_err)?;
    for (i, r) in rows.iter().enumerate() {
        let y = i as f64;
        let color = Palette99::pick(i % 8).to_rgba();
        chart
            .draw_series([PathElement::new(
                vec![(r.ci.0, y), (r.ci.1, y)],
                color.stroke_width(3),
            )])
            .map_err(draw_err)?;
        chart
            .draw_series(
                r.ratios
                    .iter()
                    .map(|&x| Circle::new((x, y), 4, color.mix(0.6).filled())),
            )
            .map_err(draw_err)?;
        chart
            .draw_series([Cross::new((r.median, y), 6, BLACK.stroke_width(2))])
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// A retrieval grid as a heat map: depth (rows) x context length (columns), each cell's exact
/// match from red (0%) to green (100%), its percentage written in it.
pub fn heat_map(
    path: &Path,
    title: &str,
    lengths: &[usize],
    depths: &[u32],
    accuracy: &dyn Fn(usize, u32) -> Option<f64>,
) -> Result<()> {
    let (w, h) = (
        140 + 90 * lengths.len() as u32,
        90 + 30 * depths.len() as u32,
    );
    let root = SVGBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..lengths.len() as f64, 0.0..depths.len() as f64)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("context tokens")
        .y_desc("needle depth")
        .x_labels(lengths.len() * 2 + 1)
        .y_labels(depths.len() * 2 + 1)
        .x_label_formatter(&|x| label_at(*x, lengths.iter().map(|l| l.to_string())))
        .y_label_formatter(&|y| label_at(*y, depths.iter().map(|d| format!("{d}%"))))
        .draw()
        .map_err(draw_err)?;
    for (i, &l) in lengths.iter().enumerate() {
        for (j, &d) in depths.iter().enumerate() {
            let Some(a) = accuracy(l, d) else { continue };
            let color = RGBColor((255.0 * (1.0 - a)) as u8, (200.0 * a) as u8, 60);
            let (x, y) = (i as f64, j as f64);
            chart
                .draw_series([Rectangle::new([(x, y), (x + 1.0, y + 1.0)], color.filled())])
                .map_err(draw_err)?;
            chart
                .draw_series([Text::new(
                    format!("{:.0}", 100.0 * a),
                    (x + 0.4, y + 0.65),
                    ("sans-serif", 13).into_font().color(&WHITE),
                )])
                .map_err(draw_err)?;
        }
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// The label of the category centred at `v` (categories sit on 0.5, 1.5, ...), else nothing.
fn label_at(v: f64, labels: impl Iterator<Item = String>) -> String {
    let i = v - 0.5;
    if (i - i.round()).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    labels
        .into_iter()
        .nth(i.round() as usize)
        .unwrap_or_default()
}

/// One labelled point per plugin: x and y in percent.
pub fn scatter(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    points: &[(String, f64, f64)],
) -> Result<()> {
    let x_lo = points.iter().map(|p| p.1).fold(0.0f64, f64::min) - 5.0;
    let root = SVGBackend::new(path, (760, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_lo..105.0, 0.0..105.0)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(draw_err)?;
    for (i, (name, x, y)) in points.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series([Circle::new((*x, *y), 6, color.filled())])
            .map_err(draw_err)?;
        chart
            .draw_series([Text::new(
                name.clone(),
                (*x + 1.0, *y - 2.0),
                ("sans-serif", 14).into_font(),
            )])
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}
