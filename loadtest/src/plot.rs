//! Plots over time (SVG), drawn for every report.

use std::path::Path;

use serde::Serialize;

use crate::sample::Sample;

/// A line plot over time.
#[derive(Debug, Clone, Serialize)]
pub struct Plot {
    pub file: String,
    pub title: String,
    pub y_label: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Memory and throughput over time, from the samples.
pub fn standard_plots(samples: &[Sample]) -> Vec<Plot> {
    let mut plots = Vec::new();
    if samples.len() >= 2 {
        let mem: Vec<(f64, f64)> = samples.iter().map(|s| (s.t, s.rss_mb)).collect();
        plots.push(Plot {
            file: "memory.svg".into(),
            title: "Archiver resident memory".into(),
            y_label: "MB".into(),
            series: vec![("RSS (archiver processes)".into(), mem)],
        });
        let rate: Vec<(f64, f64)> = samples
            .windows(2)
            .map(|w| (w[1].t, (w[1].archived_rows - w[0].archived_rows).max(0) as f64 / (w[1].t - w[0].t).max(1e-3)))
            .collect();
        plots.push(Plot {
            file: "throughput.svg".into(),
            title: "Rows archived per second".into(),
            y_label: "rows/s".into(),
            series: vec![("archived".into(), rate)],
        });
        let conns: Vec<(f64, f64)> = samples.iter().map(|s| (s.t, s.connections.max(0) as f64)).collect();
        plots.push(Plot {
            file: "connections.svg".into(),
            title: "Archiver connections (pg_stat_activity)".into(),
            y_label: "connections".into(),
            series: vec![("application_name = audit_archiver".into(), conns)],
        });
    }
    plots
}

/// Draws `plot` as an SVG file at `path`.
pub fn draw(plot: &Plot, path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let points = plot.series.iter().flat_map(|(_, p)| p.iter());
    let (xmax, ymax) = points.fold((1e-9f64, 1e-9f64), |(x, y), (px, py)| (x.max(*px), y.max(*py)));
    let root = SVGBackend::new(path, (900, 360)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&plot.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..xmax * 1.02, 0f64..ymax * 1.1)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(plot.y_label.as_str())
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, pts)) in plot.series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}
