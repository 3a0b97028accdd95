//! `tradeoff`: lays `db-impact` runs made with different governor settings side by side, as a
//! Markdown table on stdout and a plot (rows archived a second against the probe p99 ratio and
//! PostgreSQL's CPU increase, both axes logarithmic).

use std::path::PathBuf;

use anyhow::Context;

#[derive(Debug, Clone, clap::Args)]
pub struct TradeoffArgs {
    /// db-impact runs as `LABEL=DIR`, DIR holding the run's report.json (e.g. `0.08=results/a`).
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// The SVG to write.
    #[arg(long, default_value = "governor-tradeoff.svg")]
    pub plot: PathBuf,
}

/// One run's figures.
struct Point {
    label: String,
    rows_per_s: f64,
    p99_ratio: f64,
    cpu_increase: f64,
}

fn read(run: &str) -> anyhow::Result<Point> {
    let (label, dir) = run.split_once('=').with_context(|| format!("{run}: expected LABEL=DIR"))?;
    let path = PathBuf::from(dir).join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let report: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let figure = |name: &str| {
        report["figures"][name].as_f64().with_context(|| format!("{}: no figure {name} (not a db-impact run with an archiver?)", path.display()))
    };
    Ok(Point { label: label.to_string(), rows_per_s: figure("rows_per_second")?, p99_ratio: figure("p99_ratio")?, cpu_increase: figure("pg_cpu_increase_pct")? })
}

pub fn run(a: TradeoffArgs) -> anyhow::Result<()> {
    let points = a.runs.iter().map(|r| read(r)).collect::<anyhow::Result<Vec<_>>>()?;
    println!("| governor | rows/s | probe p99 ratio | PostgreSQL CPU increase (points of the machine) |");
    println!("|---|---|---|---|");
    for p in &points {
        println!("| {} | {:.0} | {:.2}× | {:+.1} |", p.label, p.rows_per_s, p.p99_ratio, p.cpu_increase);
    }
    draw(&points, &a.plot)?;
    eprintln!("plot written to {}", a.plot.display());
    Ok(())
}

/// Which figure of a run a series plots.
type Figure = fn(&Point) -> f64;

fn draw(points: &[Point], path: &std::path::Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("drawing {}: {e:?}", path.display());
    let xmax = points.iter().map(|p| p.rows_per_s).fold(1.0, f64::max) * 2.0;
    let xmin = points.iter().map(|p| p.rows_per_s).fold(f64::MAX, f64::min).max(1.0) / 2.0;
    let ymax = points.iter().map(|p| p.p99_ratio.max(p.cpu_increase)).fold(2.0, f64::max) * 2.0;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("db-impact: throughput against the probe p99 ratio and CPU increase", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((xmin..xmax).log_scale(), (0.5..ymax).log_scale())
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("rows archived per second").y_desc("ratio (×) or points").draw().map_err(|e| err(&e))?;
    let limit = [(xmin, 1.2), (xmax, 1.2)];
    chart
        .draw_series(LineSeries::new(limit, BLACK.mix(0.4)))
        .map_err(|e| err(&e))?
        .label("p99 limit 1.2×")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.4)));
    let series: [(&str, RGBColor, Figure); 2] =
        [("probe p99 ratio (×)", BLUE, |p| p.p99_ratio), ("PostgreSQL CPU increase (points)", RED, |p| p.cpu_increase.max(0.5))];
    for (name, color, y) in series {
        chart
            .draw_series(points.iter().map(|p| Circle::new((p.rows_per_s, y(p)), 5, color.filled())))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 9, y), 5, color.filled()));
        chart
            .draw_series(points.iter().map(|p| Text::new(p.label.clone(), (p.rows_per_s * 1.06, y(p)), ("sans-serif", 12).into_font())))
            .map_err(|e| err(&e))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
