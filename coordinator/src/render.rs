//! What the coordinator prints: dry runs, status tables, run summaries, and the exit status and
//! advice that go with them. The advice is the one that helps in the mode the run was in.

use std::collections::BTreeMap;
use std::process::ExitCode;

use crate::distributed::{self, TableStatus};
use crate::standalone::{self, DryRunTable};
use crate::summary::Summary;

/// `n thing` or `n things`.
pub fn count(n: usize, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

pub fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

fn dry_run(tables: &[DryRunTable]) {
    for t in tables {
        let p = &t.plan;
        for why in &p.left {
            println!("{}: {why}", p.label);
        }
        println!(
            "{}: {} eligible rows (older than {}), {} to resume, {}{}",
            p.label,
            t.eligible_rows,
            p.cutoff.format("%Y-%m-%d %H:%M:%S UTC"),
            count(p.resumed.len(), "item"),
            count(p.new.len(), "new item"),
            match (p.items().next(), p.items().last()) {
                (Some(a), Some(b)) => format!(", from {} to {}", a.range_start, b.range_end),
                _ => String::new(),
            }
        );
    }
    println!("dry run: nothing was changed");
}

/// The end of a standalone run or the demo.
pub fn standalone(result: anyhow::Result<standalone::Outcome>) -> ExitCode {
    match result {
        Ok(standalone::Outcome::DryRun { tables, unplanned }) => {
            dry_run(&tables);
            left_behind(&unplanned)
        }
        Ok(standalone::Outcome::Ran(summary)) => finished(&summary, "run the same command again: it resumes where this run stopped"),
        Err(e) => fail(e),
    }
}

/// The end of a distributed run.
pub fn distributed(result: anyhow::Result<distributed::Outcome>) -> ExitCode {
    match result {
        Ok(distributed::Outcome::Published { planned, published, queue, unplanned }) => {
            println!(
                "{} planned or resumed, {} published to {queue}; archiver-worker processes archive them \
                 (follow with `status`, or use `run --wait`)",
                count(planned, "item"),
                count(published, "message")
            );
            left_behind(&unplanned)
        }
        Ok(distributed::Outcome::Waited { summary, timed_out }) => {
            let advice = if timed_out {
                "the wait timed out; the items go on in the workers: follow them with `status`"
            } else {
                "`retry-failed` publishes failed items again once their cause is fixed; `status` lists them"
            };
            finished(&summary, advice)
        }
        Err(e) => fail(e),
    }
}

/// Planning left rows in their tables (a table that could not be planned, rows no item can take):
/// say which and why, and fail.
fn left_behind(unplanned: &Summary) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for (name, t) in &unplanned.tables {
        for why in &t.left {
            eprintln!("error: {name}: {why}");
            code = ExitCode::FAILURE;
        }
    }
    code
}

fn finished(summary: &Summary, advice: &str) -> ExitCode {
    println!("{summary}");
    if summary.all_finished() {
        return ExitCode::SUCCESS;
    }
    let items_left = summary.stopped.is_some() || summary.tables.values().any(|t| t.items_failed > 0 || t.items_not_run > 0);
    if items_left {
        eprintln!("error: not every work item finished (see above); {advice}");
    } else {
        eprintln!("error: rows were left in their tables (see above); they stay until what is named there is fixed");
    }
    ExitCode::FAILURE
}

pub fn status(tables: &BTreeMap<String, TableStatus>, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(tables).expect("status serializes"));
        return;
    }
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>8} {:>12} {:>14}  oldest eligible row",
        "table", "pending", "running", "done", "failed", "rows", "bytes"
    );
    for (name, t) in tables {
        println!(
            "{:<40} {:>8} {:>8} {:>8} {:>8} {:>12} {:>14}  {}",
            name,
            t.pending,
            t.running,
            t.done,
            t.failed,
            t.rows_archived,
            t.bytes_archived,
            t.oldest_eligible_row.map_or("none".to_string(), |t| t.to_rfc3339())
        );
        match &t.governor {
            Some(g) => println!("  governor: {} ({}), budget {}: {}", g.state, g.reason, g.budget, g.detail),
            None => println!("  governor: off"),
        }
        for f in &t.failed_items {
            println!(
                "  failed item {} [{}, {}) after {} attempts: {}",
                f.id,
                f.range_start,
                f.range_end,
                f.attempts,
                f.last_error.as_deref().unwrap_or("")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_agree_with_their_number() {
        assert_eq!(super::count(1, "table"), "1 table");
        assert_eq!(super::count(0, "table"), "0 tables");
        assert_eq!(super::count(2, "item"), "2 items");
    }
}
