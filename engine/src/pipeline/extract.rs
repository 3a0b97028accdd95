//! Extract: read one batch of a table by keyset, straight into the encoder.
//!
//! Input: a day window `[start, end)` inside the work item's range and the last (timestamp, key)
//! already taken from it. Output: up to `limit` rows ordered by (timestamp, primary key), encoded,
//! with their primary keys and row versions (`xmin`). Invariants: never OFFSET; rows whose
//! timestamp is NULL never match (`>=` is never true for NULL); nothing is locked or changed.

use archiver_proto::Partition;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use sqlx::{PgConnection, Row};

use super::encode::{Encoded, Encoder};
use crate::source::db::{qualified, quote_ident};
use crate::source::table::TableInfo;

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
                "DELETE FROM {t} AS {ALIAS}
                 USING unnest(ARRAY(SELECT json_array_elements_text($1::json)),
                              ARRAY(SELECT json_array_elements_text($2::json))) AS k(pk, x)
                 WHERE {pk} = k.pk::{pt} AND {ALIAS}.xmin = k.x::xid"
            ),
        }
    }
}

/// A partition-aligned slice of a work item's range (a UTC day, month or year); a batch never
/// spans two windows, so its rows all belong to one date partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub partition: Partition,
}

impl Window {
    /// The window that starts at `start`: up to the next partition boundary (UTC) or `range_end`.
    pub fn at(start: DateTime<Utc>, range_end: DateTime<Utc>, partition: Partition) -> Self {
        let next = partition.next(start.date_naive()).and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        Window { start, end: next.min(range_end), partition }
    }

    /// The first day of the window's partition: where its objects go.
    pub fn day(&self) -> NaiveDate {
        self.partition.floor(self.start.date_naive())
    }
}

/// A batch read and encoded, not yet stored.
pub struct Extracted {
    pub encoded: Encoded,
    /// Primary keys as a JSON array of strings.
    pub pks: String,
    /// Row versions (`xmin`) in the same order, as a JSON array.
    pub xmins: String,
    pub rows: usize,
    pub first: (String, String),
    pub last: (String, String),
}

impl Extracted {
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// A JSON array of strings built row by row: one growing buffer instead of one allocation per
/// row, which is most of a batch's memory besides its compressed body.
#[derive(Default)]
struct JsonList(Vec<u8>);

impl JsonList {
    fn push(&mut self, s: &str) {
        self.0.push(if self.0.is_empty() { b'[' } else { b',' });
        serde_json::to_writer(&mut self.0, s).expect("writing to memory");
    }

    fn finish(mut self) -> String {
        if self.0.is_empty() {
            self.0.push(b'[');
        }
        self.0.push(b']');
        self.0.shrink_to_fit();
        String::from_utf8(self.0).expect("serde_json writes UTF-8")
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
    batch: &tracing::Span,
) -> Result<Option<Extracted>, sqlx::Error> {
    let query = match after {
        None => sqlx::query(&sql.first).bind(window.start).bind(window.end).bind(limit as i64),
        Some((ts, pk)) => sqlx::query(&sql.next).bind(ts).bind(window.end).bind(limit as i64).bind(pk),
    };
    let mut rows = query.fetch(conn);
    let (mut pks, mut xmins) = (JsonList::default(), JsonList::default());
    let mut count = 0;
    let mut first = None;
    let (mut last_ts, mut last_pk) = (String::new(), String::new());
    while let Some(row) = rows.try_next().await? {
        let pk: &str = row.try_get(0)?;
        let ts: &str = row.try_get(1)?;
        let xmin: &str = row.try_get(2)?;
        let json: &str = row.try_get(3)?;
        encoder.push(json);
        if first.is_none() {
            first = Some((ts.to_string(), pk.to_string()));
        }
        last_ts.clear();
        last_ts.push_str(ts);
        last_pk.clear();
        last_pk.push_str(pk);
        pks.push(pk);
        xmins.push(xmin);
        count += 1;
    }
    let Some(first) = first else { return Ok(None) };
    // Rows are compressed as they stream in (inside `extract`); `encode` closes the frame and
    // takes the checksum.
    let encoded = tracing::debug_span!(parent: batch, "stage", otel.name = "encode").in_scope(|| encoder.finish());
    Ok(Some(Extracted {
        encoded,
        pks: pks.finish(),
        xmins: xmins.finish(),
        rows: count,
        first,
        last: (last_ts, last_pk),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn windows_stop_at_midnight_and_range_end() {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 18, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2024, 1, 3, 6, 0, 0).unwrap();
        let w = Window::at(start, end, Partition::Day);
        assert_eq!(w.end, Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap());
        let w2 = Window::at(w.end, end, Partition::Day);
        assert_eq!(w2.end, Utc.with_ymd_and_hms(2024, 1, 3, 0, 0, 0).unwrap());
        let w3 = Window::at(w2.end, end, Partition::Day);
        assert_eq!(w3.end, end);
        assert_eq!(w3.day(), NaiveDate::from_ymd_opt(2024, 1, 3).unwrap());
    }

    #[test]
    fn month_windows_span_the_month_and_name_its_first_day() {
        let start = Utc.with_ymd_and_hms(2024, 1, 20, 6, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2024, 4, 1, 0, 0, 0).unwrap();
        let w = Window::at(start, end, Partition::Month);
        assert_eq!(w.end, Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap());
        assert_eq!(w.day(), NaiveDate::from_ymd_opt(2024, 1, 1).unwrap());
        let y = Window::at(start, end, Partition::Year);
        assert_eq!((y.end, y.day()), (end, NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()));
    }
}
