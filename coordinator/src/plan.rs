//! Planning: cut each table's eligible time span into work items.
//!
//! Input: an inspected table, its source and checkpoint store. Output: the items to run: the
//! table's unfinished items first (a restarted run resumes them, never plans over their rows), then
//! new items for ranges that hold eligible rows. Invariants: the retention cutoff comes from the
//! database clock and no range reaches past it; ranges are aligned to `range_interval` from the
//! Unix epoch so every run cuts the same ranges; planning holds an advisory lock derived from the
//! table's name, so two coordinators never plan the same rows twice.

use std::time::Duration;

use archiver_proto::WorkItem;
use archiver_engine::source::db::{qualified, quote_ident};
use archiver_engine::checkpoint::ItemRow;
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

/// Rows older than the cutoff (NULL timestamps excluded).
pub async fn eligible_rows(source: &Source, info: &TableInfo, cutoff: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    let s = &info.settings;
    let (n,): (i64,) = sqlx::query_as(&format!(
        "SELECT count(*) FROM {} WHERE {} < $1",
        qualified(&s.schema, &s.table),
        quote_ident(&s.timestamp_column)
    ))
    .bind(cutoff)
    .fetch_one(&source.pool)
    .await?;
    Ok(n)
}

/// Sets `archiver_rows_eligible` of every table in scope, if metrics are recorded (the count
/// costs a scan of the timestamp index, so it is skipped otherwise).
pub async fn report_eligible(prepared: &archiver_engine::setup::Prepared) {
    if !archiver_engine::observe::recording() {
        return;
    }
    for info in &prepared.tables {
        let s = &info.settings;
        let source = &prepared.sources[&s.database];
        let counted = async { eligible_rows(source, info, cutoff(source, s.retention_days).await?).await }.await;
        match counted {
            Ok(n) => metrics::gauge!(archiver_engine::observe::names::ROWS_ELIGIBLE, "database" => s.database.clone(), "table" => s.table.clone())
                .set(n as f64),
            Err(e) => tracing::warn!(table = %info.label(), error = %e, "cannot count the eligible rows"),
        }
    }
}

/// Plans one table. With `dry_run` nothing is written (and a missing checkpoint store reads as
/// empty).
pub async fn plan_table(source: &Source, info: &TableInfo, dry_run: bool) -> Result<TablePlan, sqlx::Error> {
    let s = &info.settings;
    let cutoff = cutoff(source, s.retention_days).await?;
    let cp = &source.checkpoints;
    let mut tx = if dry_run { None } else { Some(cp.pool().begin().await?) };
    if let Some(tx) = tx.as_mut() {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("audit_archiver:plan:{}:{}.{}", s.database, s.schema, s.table))
            .execute(&mut **tx)
            .await?;
    }
    let unfinished: Vec<ItemRow> = if dry_run && !cp.exists().await? {
        Vec::new()
    } else {
        cp.unfinished(&s.database, &s.schema, &s.table).await?
    };
    let mut plan = TablePlan { label: info.label(), cutoff, resumed: Vec::new(), new: Vec::new(), skipped: Vec::new() };
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
    let interval = s.range_interval;
    let mut ranges = Vec::new();
    for t in queries.slots(source, cutoff, interval).await? {
        let start = align_down(t, interval);
        let end = (start + chrono::Duration::from_std(interval).expect("interval fits")).min(cutoff);
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
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("audit_archiver:plan:{}:{}.{}", s.database, s.schema, s.table))
        .execute(&mut *tx)
        .await?;
    let busy: Vec<_> =
        cp.unfinished(&s.database, &s.schema, &s.table).await?.iter().map(|r| (r.range_start, r.range_end)).collect();
    let queries = RangeQueries::new(info);
    let step = chrono::Duration::from_std(s.range_interval).expect("interval fits");
    let mut ranges = Vec::new();
    let mut start = from;
    while start < to {
        let end = (align_down(start, s.range_interval) + step).min(to);
        for (a, b) in subtract((start, end), &busy) {
            if queries.any_rows(source, a, b).await? {
                ranges.push((a, b));
            }
        }
        start = end;
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
    any: String,
    slots: String,
}

impl RangeQueries {
    fn new(info: &TableInfo) -> Self {
        let s = &info.settings;
        let t = qualified(&s.schema, &s.table);
        let ts = quote_ident(&s.timestamp_column);
        RangeQueries {
            min_ts: format!("SELECT min({ts})::timestamptz FROM {t} WHERE {ts} >= $1 AND {ts} < $2"),
            any: format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE {ts} >= $1 AND {ts} < $2)"),
            // A skip scan in one round trip: the oldest row, then the oldest row of each next
            // non-empty slot, each found by one index probe.
            slots: format!(
                "WITH RECURSIVE slots(ts) AS (
                     SELECT (SELECT min({ts})::timestamptz FROM {t} WHERE {ts} < $1)
                     UNION ALL
                     SELECT (SELECT min({ts})::timestamptz FROM {t}
                             WHERE {ts} >= to_timestamp((floor(extract(epoch FROM s.ts) / $2::bigint) + 1) * $2::bigint)
                               AND {ts} < $1)
                     FROM slots s WHERE s.ts IS NOT NULL)
                 SELECT ts FROM slots WHERE ts IS NOT NULL"
            ),
        }
    }

    /// The oldest timestamp of every `interval` slot before the cutoff that holds rows.
    async fn slots(
        &self,
        source: &Source,
        cutoff: DateTime<Utc>,
        interval: Duration,
    ) -> Result<Vec<DateTime<Utc>>, sqlx::Error> {
        let rows: Vec<(DateTime<Utc>,)> =
            sqlx::query_as(&self.slots).bind(cutoff).bind(interval.as_secs() as i64).fetch_all(&source.pool).await?;
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

    async fn any_rows(&self, source: &Source, a: DateTime<Utc>, b: DateTime<Utc>) -> Result<bool, sqlx::Error> {
        let (any,): (bool,) = sqlx::query_as(&self.any).bind(a).bind(b).fetch_one(&source.pool).await?;
        Ok(any)
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
