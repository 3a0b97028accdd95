//! The report of a scenario: the guide's template filled with measured figures, a verdict per
//! success criterion (the guide's and ours), what each verdict needs and whether the run had it,
//! the same as JSON, and plots over time (SVG).
//!
//! A verdict is earned. A criterion is PASS or FAIL only when the run met its minimums
//! (`evidence.rs`: duration, setup, samples); otherwise it was measured, not judged. Where no
//! threshold is set, its verdict is "n/a", never PASS. The report is PASS only when every
//! criterion that applies was judged and met, FAIL when one was judged and missed (or a row was
//! lost, or an error counted), and INCONCLUSIVE otherwise. One report never claims production
//! readiness: that needs all five of the guide's scenarios to pass (`readiness.rs`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::evidence::{Percentile, Requirement};
use crate::harness::Correctness;
use crate::plot::{draw, standard_plots, Plot};
use crate::sample::{LockWait, Sample};

/// The guide's five scenarios. Production readiness needs all of them to pass; the others
/// (`compare`) are benchmarks.
pub const GUIDE_SCENARIOS: [&str; 5] = ["sustained", "concurrency", "large-batch", "pool-stability", "db-impact"];

/// One success criterion: what was measured, the guide's threshold and ours, and what a verdict
/// on it needs.
#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    pub name: String,
    pub measured: String,
    /// The guide's threshold; None where the guide sets none.
    pub guide: Option<String>,
    /// Whether the measurement meets the guide's threshold; None where the guide sets none or this
    /// run could not measure it.
    pub guide_pass: Option<bool>,
    /// What the guide says where it sets no threshold one could judge (e.g. "stable").
    pub guide_note: Option<String>,
    /// Our threshold; None where we set none.
    pub ours: Option<String>,
    pub ours_pass: Option<bool>,
    /// What a verdict needs (duration, setup, samples), and what this run had.
    pub requirements: Vec<Requirement>,
    /// Every requirement met: the PASS or FAIL stands. Otherwise measured, not judged.
    pub conclusive: bool,
}

impl Criterion {
    pub fn new(name: &str, measured: impl Into<String>) -> Self {
        Criterion {
            name: name.into(),
            measured: measured.into(),
            guide: None,
            guide_pass: None,
            guide_note: None,
            ours: None,
            ours_pass: None,
            requirements: Vec::new(),
            conclusive: true,
        }
    }

    /// The guide's threshold, and whether it was met (None: this run could not measure it).
    pub fn guide(mut self, threshold: &str, pass: Option<bool>) -> Self {
        (self.guide, self.guide_pass) = (Some(threshold.into()), pass);
        self
    }

    /// What the guide says, where it sets no threshold: shown, judged "n/a".
    pub fn guide_says(mut self, note: &str) -> Self {
        self.guide_note = Some(note.into());
        self
    }

    /// Our threshold, and whether it was met.
    pub fn ours(mut self, threshold: &str, pass: bool) -> Self {
        (self.ours, self.ours_pass) = (Some(threshold.into()), Some(pass));
        self
    }

    /// Conditions without which the verdict would be a guess.
    pub fn needs(mut self, requirements: impl IntoIterator<Item = Requirement>) -> Self {
        self.requirements.extend(requirements);
        self.conclusive = self.requirements.iter().all(|r| r.met);
        self
    }

    fn columns(&self) -> [(Option<&str>, Option<bool>); 2] {
        [(self.guide.as_deref(), self.guide_pass), (self.ours.as_deref(), self.ours_pass)]
    }

    /// Judged, and a threshold missed.
    pub fn failed(&self) -> bool {
        self.conclusive && self.columns().iter().any(|(_, p)| *p == Some(false))
    }

    /// Judged, and every threshold set was measured and met.
    pub fn shown(&self) -> bool {
        self.conclusive && self.columns().iter().all(|(t, p)| t.is_none() || *p == Some(true))
    }

    /// A threshold is set but this run could not measure it.
    pub fn unmeasured(&self) -> bool {
        self.columns().iter().any(|(t, p)| t.is_some() && p.is_none())
    }

    /// Requirements this run did not meet, in words.
    fn shortfalls(&self) -> String {
        let unmet = self.requirements.iter().filter(|r| !r.met);
        unmet.map(|r| format!("{} {}, needs {}", r.what, r.actual, r.needed)).collect::<Vec<_>>().join("; ")
    }
}

/// A verdict cell: "n/a" where no threshold is set, never PASS.
pub fn cell(threshold: Option<&str>, pass: Option<bool>, conclusive: bool) -> &'static str {
    match (threshold, pass, conclusive) {
        (None, _, _) => "n/a",
        (Some(_), None, _) => "not measured",
        (Some(_), Some(true), true) => "PASS",
        (Some(_), Some(false), true) => "FAIL",
        (Some(_), Some(true), false) => "met, not judged",
        (Some(_), Some(false), false) => "missed, not judged",
    }
}

/// The report's verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Every criterion that applies judged and met; no row lost, no error.
    Pass,
    /// A criterion judged and missed, a row lost or archived twice, or an error counted.
    Fail,
    /// Nothing failed, but not every criterion could be judged (run too short, setup too small,
    /// too few samples, or not measured).
    #[default]
    Inconclusive,
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
    /// Percentiles with the samples behind them; `small_sample` flags those that stand on too few.
    pub percentiles: Vec<Percentile>,
    /// Every warning the report prints (small samples first).
    pub warnings: Vec<String>,
    pub samples: Vec<Sample>,
    pub lock_waits: Vec<LockWait>,
    #[serde(skip)]
    pub extra_plots: Vec<Plot>,
    pub plots: Vec<String>,
    pub verdict: Verdict,
    /// The conclusion as printed: the verdict, what was shown, what was measured but not judged,
    /// and why there is no production-readiness verdict.
    pub conclusion: Vec<String>,
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
            percentiles: Vec::new(),
            warnings: Vec::new(),
            samples: Vec::new(),
            lock_waits: Vec::new(),
            extra_plots: Vec::new(),
            plots: Vec::new(),
            verdict: Verdict::Inconclusive,
            conclusion: Vec::new(),
        }
    }

    pub fn figure(&mut self, name: &str, value: impl Into<serde_json::Value>) {
        self.figures.insert(name.into(), value.into());
    }

    /// Records a percentile (and its warning, if it stands on too few samples); returns it.
    pub fn percentile(&mut self, p: Percentile) -> Percentile {
        if let Some(w) = &p.warning {
            self.warnings.push(w.clone());
        }
        self.percentiles.push(p.clone());
        p
    }

    pub fn is_guide_scenario(&self) -> bool {
        GUIDE_SCENARIOS.contains(&self.scenario.as_str())
    }

    /// PASS only if every criterion that applies was judged and met.
    pub fn judge(&self) -> Verdict {
        if !self.correctness.ok() || self.errors > 0 || self.criteria.iter().any(Criterion::failed) {
            Verdict::Fail
        } else if self.criteria.iter().all(Criterion::shown) {
            Verdict::Pass
        } else {
            Verdict::Inconclusive
        }
    }

    /// The conclusion: the verdict, what was shown, what was measured but not judged (and why),
    /// and the production-readiness line, which one report never answers with a yes.
    pub fn conclude(&self) -> Vec<String> {
        let verdict = self.judge();
        let (c, guide) = (&self.correctness, self.is_guide_scenario());
        let mut failed: Vec<&str> = self.criteria.iter().filter(|k| k.failed()).map(|k| k.name.as_str()).collect();
        let mut shown: Vec<String> = self.criteria.iter().filter(|k| k.shown()).map(|k| format!("{}: PASS", k.name)).collect();
        for (name, ok) in [("correctness", c.ok()), ("errors", self.errors == 0)] {
            if ok { shown.push(format!("{name}: PASS")) } else { failed.push(name) }
        }
        let mut out = vec![match verdict {
            Verdict::Fail if guide => format!("[FAIL] - Not ready for production: {} failed", failed.join(", ")),
            Verdict::Fail => format!("[FAIL] - {} failed", failed.join(", ")),
            Verdict::Pass => format!("[PASS] - every criterion of {} judged and met, over a long enough run", self.scenario),
            Verdict::Inconclusive => "[INCONCLUSIVE] - no verdict: not every criterion could be judged on this run".into(),
        }];
        out.push(format!("Shown: {}", if shown.is_empty() { "nothing".into() } else { shown.join("; ") }));
        for k in self.criteria.iter().filter(|k| !k.conclusive) {
            out.push(format!("Measured, not judged: {} ({}): {}", k.name, k.measured, k.shortfalls()));
        }
        for k in self.criteria.iter().filter(|k| k.unmeasured()) {
            out.push(format!("Not measured: {} ({})", k.name, k.measured));
        }
        out.push(if !guide {
            format!("No production-readiness verdict: {} is a benchmark, not one of the guide's five scenarios", self.scenario)
        } else if verdict == Verdict::Fail {
            format!("Production readiness: not shown, {} failed", self.scenario)
        } else {
            let others: Vec<&str> = GUIDE_SCENARIOS.iter().copied().filter(|s| *s != self.scenario).collect();
            let why = if verdict == Verdict::Pass { " from one scenario:" } else { ": this scenario was not shown (see above), and" };
            format!(
                "No production-readiness verdict{why} readiness needs all five of the guide's scenarios to pass ({} too); `archiver-loadtest verdict` over their reports gives it",
                others.join(", ")
            )
        });
        out
    }

    /// Prints the report and writes `report.md`, `report.json` and the plots into `out`.
    /// Returns the path of `report.md`.
    pub fn write(&mut self, out: &Path) -> anyhow::Result<PathBuf> {
        self.verdict = self.judge();
        self.conclusion = self.conclude();
        let mut plots = standard_plots(&self.samples);
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
        if !self.warnings.is_empty() {
            s.push_str("\n### Warnings\n");
            for w in &self.warnings {
                s.push_str(&format!("- WARNING: {w}\n"));
            }
        }
        s.push_str(&self.criteria_table());
        s.push_str(&self.minimums_table());
        if !self.plots.is_empty() {
            s.push_str("\n## Plots\n\n");
            for p in &self.plots {
                s.push_str(&format!("![{p}]({p})\n"));
            }
        }
        let mut conclusion = self.conclude().into_iter();
        s.push_str(&format!("\n## Conclusion\n{}\n", conclusion.next().unwrap_or_default()));
        for line in conclusion {
            s.push_str(&format!("- {line}\n"));
        }
        s
    }

    /// The criteria with a verdict per column: PASS/FAIL only where judged, n/a where none is set.
    fn criteria_table(&self) -> String {
        let mut s = String::from("\n## Success Criteria\n\n| criterion | measured | the guide | | ours | |\n|---|---|---|---|---|---|\n");
        for k in &self.criteria {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                k.name,
                k.measured,
                k.guide.as_deref().or(k.guide_note.as_deref()).unwrap_or("none set"),
                cell(k.guide.as_deref(), k.guide_pass, k.conclusive),
                k.ours.as_deref().unwrap_or("none set"),
                cell(k.ours.as_deref(), k.ours_pass, k.conclusive)
            ));
        }
        let c = &self.correctness;
        let verdict = |p: bool| if p { "PASS" } else { "FAIL" };
        s.push_str(&format!(
            "| correctness | {} lost, {} duplicated | all records archived | {} | none lost or duplicated | {} |\n",
            c.lost,
            c.duplicated,
            verdict(c.ok()),
            verdict(c.ok())
        ));
        let ok = self.errors == 0;
        s.push_str(&format!("| errors | {} | no crashes | {} | zero errors | {} |\n", self.errors, verdict(ok), verdict(ok)));
        s
    }

    /// What each criterion's verdict needs, and what this run had.
    fn minimums_table(&self) -> String {
        let mut s = String::from(
            "\n### Minimums for a verdict\n\nA criterion whose minimums this run did not meet was measured, not judged.\n\n| criterion | needs | this run | |\n|---|---|---|---|\n",
        );
        for k in &self.criteria {
            for r in &k.requirements {
                let met = if r.met { "met" } else { "NOT MET" };
                s.push_str(&format!("| {} | {} {} | {} | {met} |\n", k.name, r.what, r.needed, r.actual));
            }
        }
        s.push_str("| correctness, errors | none: a lost row or an error fails any run | | |\n");
        s
    }
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

    fn correct() -> Correctness {
        Correctness { inserted: 10, archived: 10, ..Correctness::default() }
    }

    #[test]
    fn a_failed_criterion_fails_the_report_and_plots_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Report::new("unit", "local directory");
        r.samples = (0..5).map(|i| Sample { t: i as f64, rss_mb: 10.0 + i as f64, archived_rows: i * 100, ..Sample::default() }).collect();
        r.criteria.push(Criterion::new("speed", "1 rows/s").guide(">0", Some(true)).ours(">2", false));
        r.write(dir.path()).unwrap();
        assert_eq!(r.verdict, Verdict::Fail);
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| speed | 1 rows/s | >0 | PASS | >2 | FAIL |"), "{md}");
        assert!(md.contains("[FAIL] - speed failed"), "{md}");
        let svg = std::fs::read_to_string(dir.path().join("memory.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("polyline"), "{svg}");
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
        assert_eq!(json["verdict"], "FAIL");
        assert_eq!(json["conclusion"][0], "[FAIL] - speed failed");
    }

    #[test]
    fn where_no_criterion_is_set_the_verdict_is_n_a_never_pass() {
        let mut r = Report::new("compare", "local directory");
        r.correctness = correct();
        r.criteria.push(Criterion::new("ratio", "0.92").ours(">0.8", true));
        r.criteria.push(Criterion::new("cpu", "3.0%").guide("<5%", Some(true)));
        let md = r.markdown();
        assert!(md.contains("| ratio | 0.92 | none set | n/a | >0.8 | PASS |"), "{md}");
        assert!(md.contains("| cpu | 3.0% | <5% | PASS | none set | n/a |"), "{md}");
        assert_eq!(cell(None, Some(true), true), "n/a");
        assert_eq!(cell(None, None, true), "n/a");
    }

    #[test]
    fn a_criterion_below_its_minimums_is_measured_not_judged_and_the_report_has_no_verdict() {
        let mut r = Report::new("large-batch", "local directory");
        r.correctness = correct();
        r.duration_s = 2.8;
        let short = Requirement::secs("archiver run", 1.4, crate::evidence::MIN_TIMED_S);
        r.criteria.push(Criterion::new("throughput", "0.95 of the baseline").guide(">10,000 rows/min", Some(true)).ours(">0.8", true).needs([short.clone()]));
        r.criteria.push(Criterion::new("slow", "0.5").ours(">0.8", false).needs([short]));
        assert_eq!(r.judge(), Verdict::Inconclusive, "a missed threshold on a short run is not a FAIL either");
        let md = r.markdown();
        assert!(md.contains("| throughput | 0.95 of the baseline | >10,000 rows/min | met, not judged | >0.8 | met, not judged |"), "{md}");
        assert!(md.contains("| slow | 0.5 | none set | n/a | >0.8 | missed, not judged |"), "{md}");
        assert!(md.contains("| throughput | archiver run ≥ 10.0 s | 1.4 s | NOT MET |"), "{md}");
        assert!(md.contains("[INCONCLUSIVE] - no verdict"), "{md}");
        assert!(md.contains("- Shown: correctness: PASS; errors: PASS"), "{md}");
        assert!(md.contains("- Measured, not judged: throughput (0.95 of the baseline): archiver run 1.4 s, needs ≥ 10.0 s"), "{md}");
        assert!(md.contains("No production-readiness verdict: this scenario was not shown"), "{md}");
        assert!(!md.to_lowercase().contains("ready for production"), "{md}");
    }

    #[test]
    fn a_lost_row_fails_even_a_short_run() {
        let mut r = Report::new("compare", "local directory");
        r.correctness = Correctness { inserted: 10, archived: 9, lost: 1, ..Correctness::default() };
        r.criteria.push(Criterion::new("ratio", "0.9").ours(">0.8", true).needs([Requirement::secs("archiver run", 1.0, 10.0)]));
        assert_eq!(r.judge(), Verdict::Fail);
        assert_eq!(r.conclude()[0], "[FAIL] - correctness failed");
    }

    #[test]
    fn a_passing_scenario_alone_never_claims_production_readiness() {
        for scenario in ["large-batch", "compare"] {
            let mut r = Report::new(scenario, "local directory");
            r.correctness = correct();
            r.criteria.push(Criterion::new("memory", "50 MB").guide("<2 GB", Some(true)).ours("<64 MB", true).needs([Requirement::count("rows", 1_000_000, 200_000)]));
            assert_eq!(r.judge(), Verdict::Pass);
            let md = r.markdown();
            assert!(md.contains(&format!("[PASS] - every criterion of {scenario} judged and met")), "{md}");
            assert!(!md.to_lowercase().contains("ready for production"), "{md}");
            assert!(md.contains("No production-readiness verdict"), "{md}");
        }
    }

    #[test]
    fn an_unmeasured_threshold_leaves_the_report_without_a_verdict() {
        let mut r = Report::new("db-impact", "local directory");
        r.correctness = correct();
        r.criteria.push(Criterion::new("CPU increase", "not measured").guide("<5%", None));
        assert_eq!(r.judge(), Verdict::Inconclusive);
        assert!(r.markdown().contains("| CPU increase | not measured | <5% | not measured | none set | n/a |"));
        assert!(r.conclude().iter().any(|l| l.starts_with("Not measured: CPU increase")));
    }
}
