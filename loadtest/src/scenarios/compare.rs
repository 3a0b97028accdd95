//! `compare`: the archiver against the raw baseline (`psql` COPY | `zstd -3`, then DELETE) on
//! identical data, in one run (see `baseline.rs`).
//!
//! Pass criterion: the archiver's throughput over 0.8 of the raw baseline's (the guide sets no
//! threshold), judged only when both timed runs took at least 10 s. A benchmark, not one of the
//! guide's scenarios: its report never gives a production-readiness verdict.

use super::baseline::{measure, timed_runs, BaselineArgs};
use crate::report::{Criterion, Report};

pub async fn compare(a: BaselineArgs) -> anyhow::Result<Report> {
    let mut m = measure("compare", &a).await?;
    m.report.criteria = criteria(m.ratio, m.archiver_secs, m.baseline_secs);
    Ok(m.finish())
}

fn criteria(ratio: f64, archiver_secs: f64, baseline_secs: f64) -> Vec<Criterion> {
    vec![Criterion::new("archiver / raw baseline", format!("{ratio:.2}")).ours(">0.8", ratio > 0.8).needs(timed_runs(archiver_secs, baseline_secs))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Correctness;
    use crate::report::Verdict;

    fn report(ratio: f64, archiver_secs: f64, baseline_secs: f64) -> Report {
        let mut r = Report::new("compare", "local directory");
        r.duration_s = archiver_secs + baseline_secs;
        r.correctness = Correctness { inserted: 10_000, archived: 10_000, ..Correctness::default() };
        r.criteria = criteria(ratio, archiver_secs, baseline_secs);
        r
    }

    #[test]
    fn a_short_compare_run_claims_no_verdict_and_no_readiness() {
        let r = report(0.92, 1.4, 1.4);
        assert_eq!(r.judge(), Verdict::Inconclusive);
        let md = r.markdown();
        assert!(!md.to_lowercase().contains("ready for production"), "{md}");
        assert!(!md.contains("[PASS]"), "{md}");
        assert!(md.contains("| archiver / raw baseline | 0.92 | none set | n/a | >0.8 | met, not judged |"), "{md}");
        assert!(md.contains("archiver run 1.4 s, needs ≥ 10.0 s; raw baseline run 1.4 s, needs ≥ 10.0 s"), "{md}");
        assert!(md.contains("No production-readiness verdict: compare is a benchmark"), "{md}");
    }

    #[test]
    fn a_long_compare_run_passes_but_is_still_no_production_verdict() {
        let r = report(0.92, 13.2, 12.2);
        assert_eq!(r.judge(), Verdict::Pass);
        let md = r.markdown();
        assert!(md.contains("| archiver / raw baseline | 0.92 | none set | n/a | >0.8 | PASS |"), "{md}");
        assert!(!md.to_lowercase().contains("ready for production"), "{md}");
        assert_eq!(report(0.7, 13.2, 12.2).judge(), Verdict::Fail);
    }
}
