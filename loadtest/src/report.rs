//! The report of a scenario: the guide's template filled with measured figures, a PASS/FAIL per
//! success criterion (the guide's and ours), the same as JSON, and plots over time (SVG).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::harness::Correctness;
use crate::sample::{LockWait, Sample};

/// One success criterion: the guide's threshold and ours, and what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    pub name: String,
    pub measured: String,
    pub guide: String,
    /// None where the guide sets no threshold for this criterion.
    pub guide_pass: Option<bool>,
    pub ours: String,
    pub ours_pass: bool,
}

impl Criterion {
    pub fn new(name: &str, measured: String, guide: &str, guide_pass: Option<bool>, ours: &str, ours_pass: bool) -> Self {
        Criterion { name: name.into(), measured, guide: guide.into(), guide_pass, ours: ours.into(), ours_pass }
    }
}

/// A line plot over time.
#[derive(Debug, Clone, Serialize)]
pub struct Plot {
    pub file: String,
    pub title: String,
    pub y_label: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub date: String,
    pub duration_s: f64,
    pub environment: String,
    pub configuration: Vec<(String, String)>,
    pub performance: Vec<(String, String)>,
    pub stability: Vec<(String, String)>,
    pub database_impact: Vec<(String, String)>,
    pub criteria: Vec<Criterion>,
    pub correctness: Correctness,
    /// Errors the archiver counted (`archiver_errors_total`), failed items and failed commands.
    pub errors: u64,
    /// The measured figures by name, for comparing runs.
    pub figures: serde_json::Map<String, serde_json::Value>,
    pub samples: Vec<Sample>,
    pub lock_waits: Vec<LockWait>,
    #[serde(skip)]
    pub extra_plots: Vec<Plot>,
    pub plots: Vec<String>,
    pub verdict: String,
}

pub fn kv(k: &str, v: impl std::fmt::Display) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(x: f64) -> String {
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

pub fn environment(storage: &str) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!(
        "{cores} cores, {mem_gb:.0} GiB RAM; PostgreSQL on {}:{}; storage: {storage}",
        archiver_testkit::pg_host(),
        archiver_testkit::pg_port()
    )
}

impl Report {
    pub fn new(scenario: &str, storage: &str) -> Report {
        Report {
            scenario: scenario.into(),
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            duration_s: 0.0,
            environment: environment(storage),
            configuration: Vec::new(),
            performance: Vec::new(),
            stability: Vec::new(),
            database_impact: Vec::new(),
            criteria: Vec::new(),
            correctness: Correctness::default(),
            errors: 0,
            figures: serde_json::Map::new(),
            samples: Vec::new(),
            lock_waits: Vec::new(),
            extra_plots: Vec::new(),
            plots: Vec::new(),
            verdict: String::new(),
        }
    }

    pub fn figure(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.figures.insert(name.into(), value.into());
    }

    pub fn passed(&self) -> bool {
        self.correctness.ok()
            && self.errors == 0
            && self.criteria.iter().all(|c| c.ours_pass && c.guide_pass != Some(false))
    }

    /// Memory and throughput over time, from the samples.
    fn standard_plots(&self) -> Vec<Plot> {
        let mut plots = Vec::new();
        if self.samples.len() >= 2 {
            let mem: Vec<(f64, f64)> = self.samples.iter().map(|s| (s.t, s.rss_mb)).collect();
            plots.push(Plot {
                file: "memory.svg".into(),
                title: "Archiver resident memory".into(),
                y_label: "MB".into(),
                series: vec![("RSS (archiver processes)".into(), mem)],
            });
            let rate: Vec<(f64, f64)> = self
                .samples
                .windows(2)
                .map(|w| (w[1].t, (w[1].archived_rows - w[0].archived_rows).max(0) as f64 / (w[1].t - w[0].t).max(1e-3)))
                .collect();
            plots.push(Plot {
                file: "throughput.svg".into(),
                title: "Rows archived per second".into(),
                y_label: "rows/s".into(),
                series: vec![("archived".into(), rate)],
            });
            let conns: Vec<(f64, f64)> = self.samples.iter().map(|s| (s.t, s.connections.max(0) as f64)).collect();
            plots.push(Plot {
                file: "connections.svg".into(),
                title: "Archiver connections (pg_stat_activity)".into(),
                y_label: "connections".into(),
                series: vec![("application_name = audit_archiver".into(), conns)],
            });
        }
        plots
    }

    /// Prints the report and writes `report.md`, `report.json` and the plots into `out`.
    /// Returns the path of `report.md`.
    pub fn write(&mut self, out: &Path) -> anyhow::Result<PathBuf> {
        self.verdict = if self.passed() { "PASS".into() } else { "FAIL".into() };
        let mut plots = self.standard_plots();
        plots.extend(self.extra_plots.clone());
        self.plots.clear();
        for p in &plots {
            match draw(p, &out.join(&p.file)) {
                Ok(()) => self.plots.push(p.file.clone()),
                Err(e) => eprintln!("warning: plot {}: {e}", p.file),
            }
        }
        let md = self.markdown();
        println!("{md}");
        let path = out.join("report.md");
        std::fs::write(&path, &md)?;
        std::fs::write(out.join("report.json"), serde_json::to_string_pretty(self)?)?;
        eprintln!("report written to {}", path.display());
        Ok(path)
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let list = |s: &mut String, items: &[(String, String)]| {
            for (k, v) in items {
                s.push_str(&format!("- {k}: {v}\n"));
            }
        };
        s.push_str(&format!("# Load Test Report: {}\n\n", self.scenario));
        s.push_str(&format!("**Date**: {}\n", self.date));
        s.push_str(&format!("**Duration**: {:.1} s\n", self.duration_s));
        s.push_str(&format!("**Environment**: {}\n\n", self.environment));
        s.push_str("## Test Configuration\n");
        list(&mut s, &self.configuration);
        s.push_str("\n## Results\n\n### Performance\n");
        list(&mut s, &self.performance);
        s.push_str("\n### Stability\n");
        list(&mut s, &self.stability);
        s.push_str(&format!("- Errors: {}\n", self.errors));
        if !self.database_impact.is_empty() {
            s.push_str("\n### Database Impact\n");
            list(&mut s, &self.database_impact);
        }
        let c = &self.correctness;
        s.push_str(&format!(
            "\n### Correctness\n- Rows inserted: {}\n- Archived: {} (read back from storage)\n- Still in the tables: {}\n- Lost: {}\n- Archived twice: {}\n- Archived and still in the table: {}\n- Eligible rows left: {}\n",
            c.inserted, c.archived, c.remaining, c.lost, c.duplicated, c.archived_and_remaining, c.eligible_left
        ));
        s.push_str("\n## Success Criteria\n\n| criterion | measured | the guide | | ours | |\n|---|---|---|---|---|---|\n");
        let verdict = |p: bool| if p { "PASS" } else { "FAIL" };
        for k in &self.criteria {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                k.name,
                k.measured,
                k.guide,
                k.guide_pass.map_or("–", verdict),
                k.ours,
                verdict(k.ours_pass)
            ));
        }
        s.push_str(&format!(
            "| correctness | {} lost, {} duplicated | all records archived | {} | none lost or duplicated | {} |\n",
            c.lost,
            c.duplicated,
            verdict(c.ok()),
            verdict(c.ok())
        ));
        s.push_str(&format!("| errors | {} | no crashes | {} | zero errors | {} |\n", self.errors, verdict(self.errors == 0), verdict(self.errors == 0)));
        if !self.plots.is_empty() {
            s.push_str("\n## Plots\n\n");
            for p in &self.plots {
                s.push_str(&format!("![{p}]({p})\n"));
            }
        }
        s.push_str(&format!(
            "\n## Conclusion\n[{}] - {}\n",
            self.verdict,
            if self.verdict == "PASS" { "Ready for production" } else { "Not ready: see the failed criteria above" }
        ));
        s
    }
}

fn draw(plot: &Plot, path: &Path) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
    }

    #[test]
    fn a_failed_criterion_fails_the_report_and_plots_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Report::new("unit", "local directory");
        r.samples = (0..5).map(|i| Sample { t: i as f64, rss_mb: 10.0 + i as f64, archived_rows: i * 100, ..Sample::default() }).collect();
        r.criteria.push(Criterion::new("speed", "1 rows/s".into(), ">0", Some(true), ">2", false));
        r.write(dir.path()).unwrap();
        assert_eq!(r.verdict, "FAIL");
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| speed | 1 rows/s | >0 | PASS | >2 | FAIL |"), "{md}");
        assert!(md.contains("[FAIL] - Not ready"));
        let svg = std::fs::read_to_string(dir.path().join("memory.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("polyline"), "{svg}");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
        assert_eq!(json["verdict"], "FAIL");
    }
}
