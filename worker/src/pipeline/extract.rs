//! Extract: read one batch of a table by keyset, straight into the encoder.
//!
//! Input: a day window `[start, end)` inside the work item's range and the last (timestamp, key)
//! already taken from it. Output: up to `limit` rows ordered by (timestamp, primary key), encoded,
//! with their primary keys and row versions (`xmin`). Invariants: never OFFSET; rows whose
//! timestamp is NULL never match (`>=` is never true for NULL); nothing is locked or changed.

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use sqlx::{PgConnection, Row};

use super::encode::{Encoded, Encoder};
use crate::db::{qualified, quote_ident};
use crate::table::TableInfo;

/// The two statements of a table's keyset scan and its delete.
#[derive(Debug, Clone)]
pub struct TableSql {
    first: String,
    next: String,
    pub delete: String,
}

const ALIAS: &str = "\"__archiver_row\"";

impl TableSql {
    pub fn new(info: &TableInfo) -> Self {
        let s = &info.settings;
        let t = qualified(&s.schema, &s.table);
        let ts = format!("{ALIAS}.{}", quote_ident(&s.timestamp_column));
        let pk = format!("{ALIAS}.{}", quote_ident(&s.primary_key));
        let select = format!(
            "SELECT {pk}::text, {ts}::text, {ALIAS}.xmin::text, row_to_json({ALIAS})::text FROM {t} AS {ALIAS}"
        );
        let order = format!("ORDER BY {ts}, {pk} LIMIT $3");
        let (tt, pt) = (&info.ts_type, &info.pk_type);
        TableSql {
            first: format!("{select} WHERE {ts} >= $1 AND {ts} < $2 {order}"),
            // The plain `>=` on the timestamp lets a single-column index on it bound the scan.
            next: format!(
                "{select} WHERE {ts} >= $1::text::{tt} AND {ts} < $2 AND ({ts}, {pk}) > ($1::text::{tt}, $4::text::{pt}) {order}"
            ),
            delete: format!(
                "DELETE FROM {t} AS {ALIAS} USING unnest($1::text[], $2::text[]) AS k(pk, x)
                 WHERE {pk} = k.pk::{pt} AND {ALIAS}.xmin = k.x::xid"
            ),
        }
    }
}

/// A day-aligned slice of a work item's range; a batch never spans two windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    /// The window that starts at `start`: up to the next UTC midnight or `range_end`.
    pub fn at(start: DateTime<Utc>, range_end: DateTime<Utc>) -> Self {
        let next_midnight = (start.date_naive() + chrono::Days::new(1)).and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        Window { start, end: next_midnight.min(range_end) }
    }

    pub fn day(&self) -> NaiveDate {
        self.start.date_naive()
    }
}

/// A batch read and encoded, not yet stored.
pub struct Extracted {
    pub encoded: Encoded,
    pub pks: Vec<String>,
    pub xmins: Vec<String>,
    pub first: (String, String),
    pub last: (String, String),
}

impl Extracted {
    pub fn rows(&self) -> usize {
        self.pks.len()
    }
}

/// Reads the next batch of `window` after `after` (exclusive), encoding rows as they arrive.
/// Returns None when the window has no more rows.
pub async fn next_batch(
    conn: &mut PgConnection,
    sql: &TableSql,
    window: Window,
    after: Option<&(String, String)>,
    limit: u32,
    mut encoder: Encoder,
) -> Result<Option<Extracted>, sqlx::Error> {
    let query = match after {
        None => sqlx::query(&sql.first).bind(window.start).bind(window.end).bind(limit as i64),
        Some((ts, pk)) => sqlx::query(&sql.next).bind(ts).bind(window.end).bind(limit as i64).bind(pk),
    };
    let mut rows = query.fetch(conn);
    let mut pks = Vec::with_capacity(limit.min(100_000) as usize);
    let mut xmins = Vec::with_capacity(limit.min(100_000) as usize);
    let mut first = None;
    let mut last_ts = String::new();
    while let Some(row) = rows.try_next().await? {
        let pk: String = row.try_get(0)?;
        let ts: String = row.try_get(1)?;
        let xmin: String = row.try_get(2)?;
        let json: &str = row.try_get(3)?;
        encoder.push(json);
        if first.is_none() {
            first = Some((ts.clone(), pk.clone()));
        }
        last_ts = ts;
        pks.push(pk);
        xmins.push(xmin);
    }
    let Some(first) = first else { return Ok(None) };
    let last = (last_ts, pks.last().cloned().expect("at least one row"));
    Ok(Some(Extracted { encoded: encoder.finish(), pks, xmins, first, last }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn windows_stop_at_midnight_and_range_end() {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 18, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2024, 1, 3, 6, 0, 0).unwrap();
        let w = Window::at(start, end);
        assert_eq!(w.end, Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap());
        let w2 = Window::at(w.end, end);
        assert_eq!(w2.end, Utc.with_ymd_and_hms(2024, 1, 3, 0, 0, 0).unwrap());
        let w3 = Window::at(w2.end, end);
        assert_eq!(w3.end, end);
        assert_eq!(w3.day(), NaiveDate::from_ymd_opt(2024, 1, 3).unwrap());
    }
}
