//! Planning: cut each table's eligible time span into work items.
//!
//! Input: an inspected table, its source and checkpoint store. Output: the items to run: the
//! table's unfinished items first (a restarted run resumes them, never plans over their rows), then
//! new items for ranges that hold eligible rows. Invariants: the retention cutoff comes from the
//! database clock and no range reaches past it; ranges are aligned to `range_interval` from the
//! Unix epoch so every run cuts the same ranges; planning holds an advisory lock derived from the
//! table's name, so two coordinators never plan the same rows twice.

use std::time::Duration;

use archiver_proto::{Partition, WorkItem};
use archiver_engine::source::db::{qualified, quote_ident};
use archiver_engine::checkpoint::{advisory_xact_lock, ItemRow};
use archiver_engine::config::TableSettings;
use archiver_engine::source::Source;
use archiver_engine::source::table::TableInfo;
use chrono::{DateTime, TimeZone, Utc};

/// What planning found for one table.
#[derive(Debug, Clone)]
pub struct TablePlan {
    pub label: String,
    pub cutoff: DateTime<Utc>,
    /// Unfinished items taken up again (pending, failed, or running under a lease).
    pub resumed: Vec<WorkItem>,
    /// Items planned by this run (in a dry run: that would be planned).
    pub new: Vec<WorkItem>,
    /// Unfinished items left alone because their range now reaches past the cutoff.
    pub skipped: Vec<(WorkItem, String)>,
    /// Eligible rows no item can take, and why (they stay in the table; the run reports them).
    pub left: Vec<String>,
}

impl TablePlan {
    pub fn items(&self) -> impl Iterator<Item = &WorkItem> {
        self.resumed.iter().chain(self.new.iter())
    }
}

/// The retention cutoff by the database's clock.
pub async fn cutoff(source: &Source, retention_days: u32) -> Result<DateTime<Utc>, sqlx::Error> {
    archiver_engine::source::table::cutoff(&source.pool, retention_days).await
}

pub use archiver_engine::observe::backlog::{eligible_rows, report_eligible};

/// Plans every table in scope. A table that cannot be planned is reported in `summary` (its
/// rows stay where they are) and the other tables are planned all the same.
pub async fn plan_tables(prepared: &archiver_engine::setup::Prepared, dry_run: bool, summary: &mut crate::summary::Summary) -> Vec<TablePlan> {
    let mut plans = Vec::new();
    for info in &prepared.tables {
        let source = &prepared.sources[&info.settings.database];
        match plan_table(source, info, dry_run).await {
            Ok(p) => plans.push(p),
            Err(e) => {
                tracing::error!(table = %info.label(), error = %e, "cannot plan the table; its rows stay in place");
                summary.table(&info.label()).left.push(format!("planning failed, nothing of this table was archived: {e}"));
            }
        }
    }
    plans
}

/// The lock that serializes planning of one table across processes.
fn plan_lock(s: &TableSettings) -> String {
    format!("plan:{}", archiver_proto::table_label(&s.database, &s.schema, &s.table))
}

/// Plans one table. With `dry_run` nothing is written (and a missing checkpoint store reads as
/// empty).
pub async fn plan_table(source: &Source, info: &TableInfo, dry_run: bool) -> Result<TablePlan, sqlx::Error> {
    let s = &info.settings;
    let cutoff = cutoff(source, s.retention_days).await?;
    let cp = &source.checkpoints;
    let mut tx = if dry_run { None } else { Some(cp.pool().begin().await?) };
    if let Some(tx) = tx.as_mut() {
        advisory_xact_lock(tx, &plan_lock(s)).await?;
    }
    let unfinished: Vec<ItemRow> = if dry_run && !cp.exists().await? {
        Vec::new()
    } else {
        cp.unfinished(&s.database, &s.schema, &s.table).await?
    };
    let mut plan = TablePlan { label: info.label(), cutoff, resumed: Vec::new(), new: Vec::new(), skipped: Vec::new(), left: Vec::new() };
    for row in &unfinished {
        let item = row.item();
        if item.range_end > cutoff {
            let why = format!("range ends {} after the cutoff {} (was retention raised?)", item.range_end, cutoff);
            tracing::warn!(item = %item.slug(), table = %plan.label, "{why}; left unfinished");
            plan.skipped.push((item, why));
        } else {
            plan.resumed.push(item);
        }
    }
    let busy: Vec<(DateTime<Utc>, DateTime<Utc>)> = unfinished.iter().map(|r| (r.range_start, r.range_end)).collect();
    let queries = RangeQueries::new(info);
    let unplaceable = queries.unplaceable(source).await?;
    if unplaceable > 0 {
        let why = format!(
            "{unplaceable} rows have {} = -infinity and are left in the table: no date partition can hold them; \
             set them to a real time to archive them",
            s.timestamp_column
        );
        tracing::warn!(table = %plan.label, "{why}");
        plan.left.push(why);
    }
    let slots = Slots::of(s);
    let mut ranges = Vec::new();
    for t in queries.slots(source, None, cutoff).await? {
        let (start, end) = slots.around(t);
        let end = end.min(cutoff);
        let pieces = subtract((start, end), &busy);
        // Uncut, the slot holds the row at `t`; only pieces left by unfinished items need a look.
        let uncut = pieces.len() == 1 && pieces[0] == (start, end);
        for (a, b) in pieces {
            if uncut || queries.any_rows(source, a, b).await? {
                ranges.push((a, b));
            }
        }
    }
    plan.new = match tx {
        Some(mut tx) => {
            let items = cp.insert_items(&mut *tx, &s.database, &s.schema, &s.table, &ranges).await?;
            tx.commit().await?;
            items
        }
        None => ranges
            .into_iter()
            .map(|(a, b)| WorkItem {
                id: 0,
                database: s.database.clone(),
                schema: s.schema.clone(),
                table: s.table.clone(),
                range_start: a,
                range_end: b,
                generation: 0,
            })
            .collect(),
    };
    Ok(plan)
}

/// Plans an ad-hoc range `[from, to)` (already checked against the cutoff): aligned items that
/// hold rows, minus ranges of unfinished items, under the table's planning lock.
pub async fn plan_range(
    source: &Source,
    info: &TableInfo,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<WorkItem>, sqlx::Error> {
    let s = &info.settings;
    let cp = &source.checkpoints;
    let mut tx = cp.pool().begin().await?;
    advisory_xact_lock(&mut tx, &plan_lock(s)).await?;
    let busy: Vec<_> =
        cp.unfinished(&s.database, &s.schema, &s.table).await?.iter().map(|r| (r.range_start, r.range_end)).collect();
    let queries = RangeQueries::new(info);
    let slots = Slots::of(s);
    let mut ranges = Vec::new();
    // Only the slots that hold rows, found by one skip scan: an empty span costs nothing however
    // long it is.
    for t in queries.slots(source, Some(from), to).await? {
        let (start, end) = slots.around(t);
        let (start, end) = (start.max(from), end.min(to));
        for (a, b) in subtract((start, end), &busy) {
            if queries.any_rows(source, a, b).await? {
                ranges.push((a, b));
            }
        }
    }
    let items = cp.insert_items(&mut *tx, &s.database, &s.schema, &s.table, &ranges).await?;
    tx.commit().await?;
    Ok(items)
}

/// The oldest row still older than the cutoff, if any.
pub async fn oldest_before(
    source: &Source,
    info: &TableInfo,
    cutoff: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    RangeQueries::new(info).min_ts(source, None, cutoff).await
}

struct RangeQueries {
    min_ts: String,
    unplaceable: String,
    any: String,
    slots: String,
}

impl RangeQueries {
    fn new(info: &TableInfo) -> Self {
        let s = &info.settings;
        let t = qualified(&s.schema, &s.table);
        let ts = quote_ident(&s.timestamp_column);
        // Keeps `-infinity` out of what is read as a time: no client type can hold it. Such rows
        // are counted apart (`unplaceable`), left in the table and reported.
        let finite = format!("{ts} > '-infinity'");
        let next_slot = Slots::of(s).next_sql("s.ts");
        RangeQueries {
            min_ts: format!("SELECT min({ts})::timestamptz FROM {t} WHERE {ts} >= $1 AND {ts} < $2 AND {finite}"),
            unplaceable: format!("SELECT count(*) FROM {t} WHERE {ts} = '-infinity'"),
            any: format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE {ts} >= $1 AND {ts} < $2)"),
            // A skip scan in one round trip: the oldest row, then the oldest row of each next
            // non-empty slot, each found by one index probe.
            slots: format!(
                "WITH RECURSIVE slots(ts) AS (
                     SELECT (SELECT min({ts})::timestamptz FROM {t}
                             WHERE {ts} < $1 AND {finite} AND ($2::timestamptz IS NULL OR {ts} >= $2))
                     UNION ALL
                     SELECT (SELECT min({ts})::timestamptz FROM {t}
                             WHERE {ts} >= {next_slot} AND {ts} < $1)
                     FROM slots s WHERE s.ts IS NOT NULL)
                 SELECT ts FROM slots WHERE ts IS NOT NULL"
            ),
        }
    }

    /// The oldest timestamp of every slot in `[from, cutoff)` that holds rows; `from` None means
    /// no lower bound.
    async fn slots(&self, source: &Source, from: Option<DateTime<Utc>>, cutoff: DateTime<Utc>) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
        let rows: Vec<(DateTime<Utc>,)> = sqlx::query_as(&self.slots)
            .bind(cutoff)
            .bind(from)
            .fetch_all(&source.pool)
            .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// The oldest timestamp in `[from, cutoff)`; `from` None means no lower bound.
    async fn min_ts(
        &self,
        source: &Source,
        from: Option<DateTime<Utc>>,
        cutoff: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let from = from.unwrap_or_else(|| Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap());
        let (t,): (Option<DateTime<Utc>>,) =
            sqlx::query_as(&self.min_ts).bind(from).bind(cutoff).fetch_one(&source.pool).await?;
        Ok(t)
    }

    /// Rows older than any cutoff that no time range can name (`-infinity`).
    async fn unplaceable(&self, source: &Source) -> Result<i64, sqlx::Error> {
        let (n,): (i64,) = sqlx::query_as(&self.unplaceable).fetch_one(&source.pool).await?;
        Ok(n)
    }

    async fn any_rows(&self, source: &Source, a: DateTime<Utc>, b: DateTime<Utc>) -> Result<bool, sqlx::Error> {
        let (any,): (bool,) = sqlx::query_as(&self.any).bind(a).bind(b).fetch_one(&source.pool).await?;
        Ok(any)
    }
}

/// How a table's time is cut into work items: fixed `range_interval` slots counted from the Unix
/// epoch (day partitions), or calendar months or years (month and year partitions, so that one
/// item fills one partition and a quiet table gets one object per month or year).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slots {
    Fixed(Duration),
    Calendar(Partition),
}

impl Slots {
    pub fn of(s: &TableSettings) -> Self {
        match s.partition {
            Partition::Day => Slots::Fixed(s.range_interval),
            coarser => Slots::Calendar(coarser),
        }
    }

    /// The slot `[start, end)` that holds `t`.
    pub fn around(self, t: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        match self {
            Slots::Fixed(interval) => {
                let start = align_down(t, interval);
                (start, start + chrono::Duration::from_std(interval).expect("interval fits"))
            }
            Slots::Calendar(p) => {
                let day = t.date_naive();
                let at = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
                (at(p.floor(day)), at(p.next(day)))
            }
        }
    }

    /// SQL for the start of the slot after the one holding the timestamptz `expr` (the session
    /// runs in UTC).
    fn next_sql(self, expr: &str) -> String {
        match self {
            Slots::Fixed(i) => format!("to_timestamp((floor(extract(epoch FROM {expr}) / {n}) + 1) * {n})", n = i.as_secs()),
            Slots::Calendar(Partition::Year) => format!("date_trunc('year', {expr}) + interval '1 year'"),
            Slots::Calendar(_) => format!("date_trunc('month', {expr}) + interval '1 month'"),
        }
    }
}

/// Start of the `interval`-wide slot (counted from the Unix epoch) that holds `t`.
pub fn align_down(t: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let step = interval.as_micros() as i64;
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros - micros.rem_euclid(step)).expect("in range")
}

/// `range` minus every range in `busy`, as ordered disjoint pieces.
pub fn subtract(
    range: (DateTime<Utc>, DateTime<Utc>),
    busy: &[(DateTime<Utc>, DateTime<Utc>)],
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut pieces = vec![range];
    for &(bs, be) in busy {
        pieces = pieces
            .into_iter()
            .flat_map(|(a, b)| {
                let mut out = Vec::new();
                if be <= a || bs >= b {
                    out.push((a, b));
                } else {
                    if a < bs {
                        out.push((a, bs));
                    }
                    if be < b {
                        out.push((be, b));
                    }
                }
                out
            })
            .collect();
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, d, h, 0, 0).unwrap()
    }

    #[test]
    fn aligns_to_epoch_slots() {
        assert_eq!(align_down(t(5, 13), Duration::from_secs(86_400)), t(5, 0));
        assert_eq!(align_down(t(5, 13), Duration::from_secs(6 * 3600)), t(5, 12));
        assert_eq!(align_down(t(5, 0), Duration::from_secs(86_400)), t(5, 0));
    }

    #[test]
    fn calendar_slots_are_months_and_years() {
        let at = Utc.with_ymd_and_hms(2024, 2, 29, 13, 0, 0).unwrap();
        let m = Slots::Calendar(Partition::Month).around(at);
        assert_eq!(m, (Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap()));
        let y = Slots::Calendar(Partition::Year).around(at);
        assert_eq!(y, (Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()));
        assert_eq!(Slots::Fixed(Duration::from_secs(86_400)).around(at).0, Utc.with_ymd_and_hms(2024, 2, 29, 0, 0, 0).unwrap());
    }

    #[test]
    fn subtract_cuts_around_busy_ranges() {
        assert_eq!(subtract((t(1, 0), t(2, 0)), &[]), vec![(t(1, 0), t(2, 0))]);
        assert_eq!(subtract((t(1, 0), t(2, 0)), &[(t(1, 0), t(1, 6))]), vec![(t(1, 6), t(2, 0))]);
        assert_eq!(
            subtract((t(1, 0), t(2, 0)), &[(t(1, 6), t(1, 12))]),
            vec![(t(1, 0), t(1, 6)), (t(1, 12), t(2, 0))]
        );
        assert_eq!(subtract((t(1, 0), t(2, 0)), &[(t(1, 0), t(3, 0))]), vec![]);
        assert_eq!(subtract((t(1, 0), t(2, 0)), &[(t(2, 0), t(3, 0))]), vec![(t(1, 0), t(2, 0))]);
    }
}
