//! `large-batch`: memory and throughput at a large batch size (50,000 rows by default), against
//! the raw baseline on identical data (see `baseline.rs`).
//!
//! Pass criteria: peak RSS under 64 MB (the guide: under 2 GB at batch 50,000), and throughput
//! over 0.8 of the raw baseline (the guide: over 10,000 rows a minute). Judged only on the guide's
//! setup (200,000+ rows, batch 50,000+; memory over at least four batches) and, for throughput,
//! timed runs of at least 10 s each.

use super::baseline::{measure, timed_runs, BaselineArgs};
use crate::evidence::{Requirement, GUIDE_BATCH, MIN_LARGE_BATCH_ROWS};
use crate::report::{thousands, Criterion, Report};

pub async fn large_batch(a: BaselineArgs) -> anyhow::Result<Report> {
    let mut m = measure("large-batch", &a).await?;
    let (peak, ratio, rpm) = (m.peak_rss_mb, m.ratio, m.rows_per_minute);
    let setup = || {
        [
            Requirement::count("rows", a.rows, MIN_LARGE_BATCH_ROWS),
            Requirement::count("batch size", a.batch_size.into(), GUIDE_BATCH.into()),
            Requirement::count("batches", a.rows / u64::from(a.batch_size.max(1)), 4),
        ]
    };
    m.report.criteria = vec![
        Criterion::new("memory", format!("{peak:.1} MB peak RSS"))
            .guide("<2 GB at batch 50,000", Some(peak < 2048.0))
            .ours("<64 MB peak RSS", peak < 64.0)
            .needs(setup()),
        Criterion::new("throughput", format!("{} rows/min, {ratio:.2} of the baseline", thousands(rpm)))
            .guide(">10,000 rows/min", Some(rpm > 10_000.0))
            .ours(">0.8 of the raw baseline", ratio > 0.8)
            .needs(setup().into_iter().take(1).chain(timed_runs(m.archiver_secs, m.baseline_secs))),
    ];
    Ok(m.finish())
}
