//! The end-of-run summary: per table and in total.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use archiver_engine::pipeline::ItemReport;

#[derive(Debug, Default, Clone)]
pub struct TableTotals {
    pub items_done: u64,
    pub items_failed: u64,
    /// Held by another live process, handed back on shutdown, or left past the cutoff.
    pub items_not_run: u64,
    pub rows: i64,
    pub bytes: i64,
    pub objects: i64,
    pub rows_short: i64,
    pub errors: Vec<String>,
    /// Why eligible rows were left in the table (a table that could not be planned, rows no item
    /// can take): the run did not archive everything it should have.
    pub left: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub tables: BTreeMap<String, TableTotals>,
    pub duration: Duration,
    /// Why the run stopped before its end: an error every item would meet (e.g. the object store
    /// refuses the credentials).
    pub stopped: Option<String>,
}

impl Summary {
    /// Adds what planning left aside for one table.
    pub fn planned(&mut self, plan: &crate::plan::TablePlan) {
        let t = self.table(&plan.label);
        t.items_not_run += plan.skipped.len() as u64;
        for (item, why) in &plan.skipped {
            t.errors.push(format!("{} not run: {why}", item.slug()));
        }
        t.left.extend(plan.left.iter().cloned());
    }

    pub fn table(&mut self, label: &str) -> &mut TableTotals {
        self.tables.entry(label.to_string()).or_default()
    }

    /// Adds what was archived in this run (also by items that did not finish).
    pub fn add_archived(&mut self, label: &str, r: &ItemReport) {
        let t = self.table(label);
        t.rows += r.rows;
        t.bytes += r.bytes;
        t.objects += r.objects;
        t.rows_short += r.rows_short;
    }

    pub fn rows(&self) -> i64 {
        self.tables.values().map(|t| t.rows).sum()
    }

    /// True if every planned item finished.
    pub fn all_finished(&self) -> bool {
        self.stopped.is_none() && self.tables.values().all(|t| t.items_failed == 0 && t.items_not_run == 0 && t.left.is_empty())
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<40} {:>6} {:>6} {:>6} {:>12} {:>12} {:>8}", "table", "done", "failed", "left", "rows", "bytes", "objects")?;
        let mut total = TableTotals::default();
        for (name, t) in &self.tables {
            writeln!(
                f,
                "{:<40} {:>6} {:>6} {:>6} {:>12} {:>12} {:>8}",
                name, t.items_done, t.items_failed, t.items_not_run, t.rows, t.bytes, t.objects
            )?;
            total.items_done += t.items_done;
            total.items_failed += t.items_failed;
            total.items_not_run += t.items_not_run;
            total.rows += t.rows;
            total.bytes += t.bytes;
            total.objects += t.objects;
            total.rows_short += t.rows_short;
        }
        let secs = self.duration.as_secs_f64();
        writeln!(
            f,
            "{:<40} {:>6} {:>6} {:>6} {:>12} {:>12} {:>8}",
            "total", total.items_done, total.items_failed, total.items_not_run, total.rows, total.bytes, total.objects
        )?;
        write!(
            f,
            "{}, {} rows, {} bytes in {} objects, {:.1}s, {:.0} rows/s",
            crate::render::count(self.tables.len(), "table"),
            total.rows,
            total.bytes,
            total.objects,
            secs,
            if secs > 0.0 { total.rows as f64 / secs } else { 0.0 }
        )?;
        if total.rows_short > 0 {
            write!(f, "\n{} archived rows were not deleted: they changed or vanished after being read (see the log)", total.rows_short)?;
        }
        if let Some(why) = &self.stopped {
            write!(f, "\nthe run stopped early: {why}")?;
        }
        for (name, t) in &self.tables {
            for e in t.left.iter().chain(&t.errors) {
                write!(f, "\n{name}: {e}")?;
            }
        }
        Ok(())
    }
}
