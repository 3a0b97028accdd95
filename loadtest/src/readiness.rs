//! `verdict`: the production-readiness verdict over several reports. Ready for production only
//! when each of the guide's five scenarios has a report that passed, every criterion judged (its
//! minimums met); otherwise it says which scenario failed, was not shown, or was not run.

use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use crate::report::GUIDE_SCENARIOS;

#[derive(Debug, Clone, clap::Args)]
pub struct VerdictArgs {
    /// Reports (`report.json`, or the directories holding them) of the guide's scenarios.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

/// What the reports show for one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    NotShown(String),
    NotRun,
}

/// The production-readiness verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady,
    NoVerdict,
}

/// One report's word on its scenario: passed only if its verdict is PASS and every criterion was
/// judged (a report written before minimums were checked has no `conclusive` and shows nothing).
fn outcome(report: &Value) -> Outcome {
    let criteria = report["criteria"].as_array().cloned().unwrap_or_default();
    let not_judged: Vec<&str> =
        criteria.iter().filter(|k| k["conclusive"] != Value::Bool(true)).filter_map(|k| k["name"].as_str()).collect();
    let reasons = || {
        let lines = report["conclusion"].as_array().cloned().unwrap_or_default();
        let why: Vec<String> = lines.iter().skip(1).filter_map(|l| l.as_str()).filter(|l| !l.starts_with("Shown") && !l.starts_with("No production")).map(String::from).collect();
        if why.is_empty() { format!("not judged: {}", not_judged.join(", ")) } else { why.join("; ") }
    };
    let predates = criteria.iter().any(|k| k.get("conclusive").is_none());
    match report["verdict"].as_str() {
        Some(v) if predates && v != "FAIL" => Outcome::NotShown(format!("{v}, but written without minimums for a verdict (an older archiver-loadtest): run it again")),
        Some("FAIL") => Outcome::Failed(report["conclusion"][0].as_str().unwrap_or("FAIL").to_string()),
        Some("PASS") if !criteria.is_empty() && not_judged.is_empty() => Outcome::Passed,
        Some(v) => Outcome::NotShown(format!("{v}: {}", reasons())),
        None => Outcome::NotShown("no verdict in the report".into()),
    }
}

/// What `reports` show for each of the guide's scenarios: a failure wins, then a pass.
pub fn assess(reports: &[Value]) -> Vec<(&'static str, Outcome)> {
    GUIDE_SCENARIOS
        .iter()
        .map(|&scenario| {
            let mine: Vec<Outcome> = reports.iter().filter(|r| r["scenario"] == scenario).map(outcome).collect();
            let pick = mine.iter().find(|s| matches!(s, Outcome::Failed(_))).or_else(|| mine.iter().find(|s| **s == Outcome::Passed));
            (scenario, pick.or(mine.first()).cloned().unwrap_or(Outcome::NotRun))
        })
        .collect()
}

/// The verdict and its lines, as printed.
pub fn verdict(assessed: &[(&str, Outcome)]) -> (Readiness, Vec<String>) {
    let mut lines = vec!["| scenario | shown |".to_string(), "|---|---|".to_string()];
    for (scenario, s) in assessed {
        let what = match s {
            Outcome::Passed => "PASS, every criterion judged".to_string(),
            Outcome::Failed(why) => why.clone(),
            Outcome::NotShown(why) => why.clone(),
            Outcome::NotRun => "not run".to_string(),
        };
        lines.push(format!("| {scenario} | {what} |"));
    }
    let names = |f: fn(&Outcome) -> bool| assessed.iter().filter(|(_, s)| f(s)).map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
    let failed = names(|s| matches!(s, Outcome::Failed(_)));
    let not_shown = names(|s| matches!(s, Outcome::NotShown(_)));
    let not_run = names(|s| *s == Outcome::NotRun);
    let readiness = if !failed.is_empty() {
        lines.push(format!("\n[FAIL] - Not ready for production: {failed} failed"));
        Readiness::NotReady
    } else if not_shown.is_empty() && not_run.is_empty() {
        lines.push("\n[PASS] - Ready for production: all five of the guide's scenarios passed, every criterion judged over a long enough run".into());
        Readiness::Ready
    } else {
        let mut why = Vec::new();
        if !not_shown.is_empty() {
            why.push(format!("not shown: {not_shown}"));
        }
        if !not_run.is_empty() {
            why.push(format!("not run: {not_run}"));
        }
        lines.push(format!("\n[NO VERDICT] - no production-readiness verdict: {}", why.join("; ")));
        Readiness::NoVerdict
    };
    (readiness, lines)
}

/// Reads the reports, prints the verdict, and returns it.
pub fn run(a: VerdictArgs) -> anyhow::Result<Readiness> {
    let mut reports = Vec::new();
    for path in &a.reports {
        let file = if path.is_dir() { path.join("report.json") } else { path.clone() };
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        reports.push(serde_json::from_str::<Value>(&text).with_context(|| format!("parsing {}", file.display()))?);
    }
    let (readiness, lines) = verdict(&assess(&reports));
    println!("# Production readiness\n\n{}", lines.join("\n"));
    let others: Vec<&str> = reports.iter().filter_map(|r| r["scenario"].as_str()).filter(|s| !GUIDE_SCENARIOS.contains(s)).collect();
    if !others.is_empty() {
        println!("(not counted: {}, not among the guide's scenarios)", others.join(", "));
    }
    Ok(readiness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(scenario: &str, verdict: &str, conclusive: bool) -> Value {
        json!({"scenario": scenario, "verdict": verdict, "criteria": [{"name": "memory growth", "conclusive": conclusive}],
               "conclusion": [format!("[{verdict}] - …"), "Shown: correctness: PASS", "Measured, not judged: memory growth (+0.0%): run 5 min, needs ≥ 24 h"]})
    }

    #[test]
    fn ready_only_when_all_five_passed_with_every_criterion_judged() {
        let all: Vec<Value> = GUIDE_SCENARIOS.iter().map(|s| report(s, "PASS", true)).collect();
        let (r, lines) = verdict(&assess(&all));
        assert_eq!(r, Readiness::Ready);
        assert!(lines.last().unwrap().contains("[PASS] - Ready for production"));

        let (r, lines) = verdict(&assess(&all[1..]));
        assert_eq!(r, Readiness::NoVerdict);
        let last = lines.last().unwrap();
        assert!(last.contains("no production-readiness verdict: not run: sustained") && !last.contains("Ready for production"), "{last}");
    }

    #[test]
    fn a_short_or_old_report_shows_nothing_and_a_failure_fails() {
        let mut reports: Vec<Value> = GUIDE_SCENARIOS.iter().map(|s| report(s, "PASS", true)).collect();
        reports[0] = report("sustained", "INCONCLUSIVE", false);
        let (r, lines) = verdict(&assess(&reports));
        assert_eq!(r, Readiness::NoVerdict);
        assert!(lines.iter().any(|l| l.contains("| sustained | INCONCLUSIVE: Measured, not judged: memory growth (+0.0%): run 5 min, needs ≥ 24 h |")), "{lines:?}");
        // Written before minimums were checked: a PASS without `conclusive`.
        reports[0] = json!({"scenario": "sustained", "verdict": "PASS", "criteria": [{"name": "memory growth"}]});
        let (r, lines) = verdict(&assess(&reports));
        assert_eq!(r, Readiness::NoVerdict);
        assert!(lines[2].contains("written without minimums"), "{lines:?}");
        reports.push(report("db-impact", "FAIL", true));
        let (r, lines) = verdict(&assess(&reports));
        assert_eq!(r, Readiness::NotReady);
        assert!(lines.last().unwrap().contains("Not ready for production: db-impact failed"));
    }
}
