//! Extract: read one batch of a table by keyset, straight into the encoder.
//!
//! Input: a day window `[start, end)` inside the work item's range and the last (timestamp, key)
//! already taken from it. Output: up to `limit` rows ordered by (timestamp, primary key), encoded,
//! with their primary keys and row versions (`xmin`). Invariants: never OFFSET; rows whose
//! timestamp is NULL never match (`>=` is never true for NULL); nothing is locked or changed.

use archiver_proto::Partition;
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::encode::{Encoded, Encoder, ROW_SEPARATOR};
use super::render::{raw, Kind, Renderer};
use crate::source::db::{qualified, quote_ident};
use crate::source::table::TableInfo;

/// The statements of a table's keyset scan, its delete and its check of which keys are still
/// present, and how the scan's rows are rendered.
#[derive(Debug, Clone)]
pub struct TableSql {
    scans: Scans,
    /// The table's columns as [`TableInfo::inspect`] found them, each as `name type-oid`: every
    /// page checks them (see [`ColumnsChanged`]).
    shape: Vec<String>,
    renderer: Renderer,
    /// The table as messages name it.
    label: String,
    /// The delete of a chunk: keys `$1`, row versions `$2`, and the held ranges as arrays of
    /// starts `$3` and ends `$4` (read from a checkpoint store in another database).
    pub delete: String,
    /// The same with the checkpoint store's `holds` table read in the statement itself (`$3`,
    /// `$4`, `$5`: database, schema, table), when the store is in the source database.
    pub delete_local: Option<String>,
    /// Which of the keys (a JSON array of strings) still have a row in the table.
    pub present: String,
}

/// The columns a page selects before the row's own: key, timestamp, row version (as text) and
/// whether the table still has the columns it was inspected with.
const KEY_COLUMNS: usize = 4;

/// A page found the table's columns changed since the run inspected it: the rows would be
/// archived without a column added since (and deleted), so the batch stops before it is stored.
#[derive(Debug, thiserror::Error)]
#[error("the columns of {table} changed while it was being archived; nothing of this batch was stored or deleted. Run again: the next run reads the new columns")]
pub struct ColumnsChanged {
    pub table: String,
}

/// A page's statements: the first of a window (`$1` start, `$2` end, `$3` limit, `$4` the
/// columns expected), and the next after a row (`$1` its timestamp, `$2` end, `$3` limit, `$4` its
/// key, `$5` the window's start, `$6` the columns expected).
#[derive(Debug, Clone)]
struct Scans {
    first: String,
    next: String,
}

impl Scans {
    /// `t`: the table, `alias` its alias, `ts` and `pk` its timestamp and key under that alias.
    fn new(info: &TableInfo, renderer: &Renderer, [t, alias, ts, pk]: [&str; 4]) -> Self {
        // Columns the archiver renders come in binary; the others as the server's `to_json`.
        let values: Vec<String> = renderer
            .kinds()
            .enumerate()
            .map(|(i, (name, kind))| match kind {
                Kind::Server => format!(", to_json({alias}.{})::text AS v{i}", quote_ident(name)),
                _ => format!(", {alias}.{} AS v{i}", quote_ident(name)),
            })
            .collect();
        let check = |n: usize| {
            format!(
                "(SELECT coalesce(array_agg(attname::text || ' ' || atttypid::text ORDER BY attnum), '{{}}') FROM pg_attribute
                  WHERE attrelid = {} AND attnum > 0 AND NOT attisdropped) = ${n}::text[] AS c",
                info.oid
            )
        };
        let cols = |n: usize| format!("{pk}::text AS p, {ts}::text AS s, {alias}.xmin::text AS x, {}{}", check(n), values.concat());
        let order = format!("ORDER BY {ts}, {pk} LIMIT $3");
        let (tt, pt) = (&info.ts_type, &info.pk_type);
        let first = format!("WHERE {ts} >= $1 AND {ts} < $2 {order}");
        // The plain `>=` on the timestamp lets a single-column index on it bound the scan;
        // `$5` is the window's start, which may lie past the last row read (a hold skipped).
        let next = format!("WHERE {ts} >= $1::text::{tt} AND {ts} >= $5 AND {ts} < $2 AND ({ts}, {pk}) > ($1::text::{tt}, $4::text::{pt}) {order}");
        Scans {
            first: format!("SELECT {} FROM {t} AS {alias} {first}", cols(4)),
            next: format!("SELECT {} FROM {t} AS {alias} {next}", cols(6)),
        }
    }
}

/// The table's alias in the statements: `__archiver_row`, lengthened until no column has that
/// name (a name the statements could confuse with a column).
fn row_alias(info: &TableInfo) -> String {
    let mut alias = String::from("__archiver_row");
    while info.columns.iter().any(|c| c.name == alias) {
        alias.push('_');
    }
    quote_ident(&alias)
}

impl TableSql {
    fn columns_changed(&self) -> sqlx::Error {
        sqlx::Error::Decode(Box::new(ColumnsChanged { table: self.label.clone() }))
    }

    /// `local_holds`: the checkpoint store's `holds` table, when it lives in the source database.
    pub fn new(info: &TableInfo, local_holds: Option<&str>) -> Self {
        let s = &info.settings;
        let t = qualified(&s.schema, &s.table);
        let alias = row_alias(info);
        let ts = format!("{alias}.{}", quote_ident(&s.timestamp_column));
        let pk = format!("{alias}.{}", quote_ident(&s.primary_key));
        let renderer = Renderer::new(info.columns.iter().map(|c| c.name.as_str()).zip(info.type_oids.iter().copied()));
        let scans = Scans::new(info, &renderer, [&t, &alias, &ts, &pk]);
        let pt = &info.pk_type;
        // Rows in a range under an active legal hold are never deleted (the clause added below).
        let delete = format!(
            "DELETE FROM {t} AS {alias}
             USING unnest(ARRAY(SELECT json_array_elements_text($1::json)),
                          ARRAY(SELECT json_array_elements_text($2::json))) AS k(pk, x)
             WHERE {pk} = k.pk::{pt} AND {alias}.xmin = k.x::xid"
        );
        TableSql {
            scans,
            shape: info.columns.iter().zip(&info.type_oids).map(|(c, oid)| format!("{} {oid}", c.name)).collect(),
            renderer,
            label: info.label(),
            // Each holds clause first asks, once per statement, whether the table has any active
            // hold at all; only then is each row checked against the held ranges (a per-row check
            // costs a big delete about a tenth of its time, and holds are rare).
            delete: format!(
                "{delete} AND (cardinality($3::timestamptz[]) = 0
                     OR NOT EXISTS (SELECT 1 FROM unnest($3::timestamptz[], $4::timestamptz[]) AS h(s, e)
                                    WHERE {ts} >= h.s AND {ts} < h.e))"
            ),
            delete_local: local_holds.map(|holds| {
                let active = "h.released_at IS NULL AND h.database = $3 AND h.schema_name = $4 AND h.table_name = $5";
                format!(
                    "{delete} AND (NOT EXISTS (SELECT 1 FROM {holds} AS h WHERE {active})
                     OR NOT EXISTS (SELECT 1 FROM {holds} AS h WHERE {active} AND {ts} >= h.range_start AND {ts} < h.range_end))"
                )
            }),
            present: format!(
                "SELECT k.pk FROM json_array_elements_text($1::json) AS k(pk)
                 WHERE EXISTS (SELECT 1 FROM {t} AS {alias} WHERE {pk} = k.pk::{pt})"
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

/// Which rows a page reads: up to `limit` of `window`, after `after` (or after the batch's last).
pub struct Page<'a> {
    pub window: Window,
    pub after: Option<&'a (String, String)>,
    pub limit: u32,
}

/// A batch being read page by page: each page's rows are encoded (as they stream in, or once a
/// whole page is fetched), with their keys and row versions, until the batch is full or its
/// window has no more rows.
pub struct Batch {
    encoder: Encoder,
    pks: JsonList,
    xmins: JsonList,
    rows: usize,
    first: Option<(String, String)>,
    last: (String, String),
}

impl Batch {
    pub fn new(encoder: Encoder) -> Self {
        Batch { encoder, pks: JsonList::default(), xmins: JsonList::default(), rows: 0, first: None, last: Default::default() }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Where the next page starts: after the last row read so far, or after `after` if none.
    fn after<'a>(&'a self, after: Option<&'a (String, String)>) -> Option<&'a (String, String)> {
        if self.rows > 0 { Some(&self.last) } else { after }
    }

    /// Reads up to `limit` more rows of `window` (after `after`, or after this batch's last row)
    /// into the batch, rendering and encoding them as they arrive: the server's scan and the
    /// client's work run at once (fastest, and a big page is never held whole in memory).
    /// Returns how many it read (fewer than `limit`: the window is exhausted).
    pub async fn read_page(&mut self, conn: &mut PgConnection, sql: &TableSql, page: Page<'_>) -> Result<usize, sqlx::Error> {
        let mut rows = Self::query(self.after(page.after).cloned(), sql, page).fetch(conn);
        let mut read = 0;
        let mut line = String::new();
        while let Some(row) = rows.try_next().await? {
            line.clear();
            self.add_row(sql, &row, &mut line)?;
            self.encoder.push(&line);
            read += 1;
        }
        Ok(read)
    }

    /// Fetches a page whole, before any of it is rendered; the caller adds it to the batch
    /// ([`Batch::add_page`]) after the statement, so the page's timed database time holds none
    /// of the client's rendering and compression (the governor's small pages).
    pub async fn fetch_page(&self, conn: &mut PgConnection, sql: &TableSql, page: Page<'_>) -> Result<Vec<PgRow>, sqlx::Error> {
        Self::query(self.after(page.after).cloned(), sql, page).fetch_all(conn).await
    }

    /// Renders and encodes a page [`Batch::fetch_page`] fetched; returns its rows.
    pub fn add_page(&mut self, sql: &TableSql, rows: &[PgRow]) -> Result<usize, sqlx::Error> {
        let mut lines = String::new();
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                lines.push(ROW_SEPARATOR);
            }
            self.add_row(sql, row, &mut lines)?;
        }
        if !rows.is_empty() {
            self.encoder.push_rows_joined(&lines, rows.len());
        }
        Ok(rows.len())
    }

    /// Adds a row's key, timestamp and version, and appends its JSON to `out`; fails if the
    /// table's columns changed since it was inspected, or a value cannot be rendered.
    fn add_row(&mut self, sql: &TableSql, row: &PgRow, out: &mut String) -> Result<(), sqlx::Error> {
        if !row.try_get::<bool, _>(3)? {
            return Err(sql.columns_changed());
        }
        let values = (KEY_COLUMNS..row.len()).map(|i| raw(row, i)).collect::<Result<Vec<_>, _>>()?;
        sql.renderer.render(values, out).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        self.add(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        Ok(())
    }

    fn query<'q>(after: Option<(String, String)>, sql: &'q TableSql, page: Page<'q>) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let (window, limit) = (page.window, page.limit as i64);
        match after {
            None => sqlx::query(&sql.scans.first).bind(window.start).bind(window.end).bind(limit).bind(&sql.shape),
            Some((ts, pk)) => sqlx::query(&sql.scans.next).bind(ts).bind(window.end).bind(limit).bind(pk).bind(window.start).bind(&sql.shape),
        }
    }

    /// Adds a row's key, timestamp and version (its JSON is already encoded).
    fn add(&mut self, pk: &str, ts: &str, xmin: &str) {
        if self.first.is_none() {
            self.first = Some((ts.to_string(), pk.to_string()));
        }
        self.last.0.clear();
        self.last.0.push_str(ts);
        self.last.1.clear();
        self.last.1.push_str(pk);
        self.pks.push(pk);
        self.xmins.push(xmin);
        self.rows += 1;
    }

    /// The batch, encoded; None if no row was read. Rows are compressed page by page (inside
    /// `extract`); this closes the frame and takes the checksum (`encode`).
    pub fn finish(self, batch: &tracing::Span) -> Option<Extracted> {
        let first = self.first?;
        let encoder = self.encoder;
        let encoded = tracing::debug_span!(parent: batch, "stage", otel.name = "encode").in_scope(|| encoder.finish());
        Some(Extracted { encoded, pks: self.pks.finish(), xmins: self.xmins.finish(), rows: self.rows, first, last: self.last })
    }
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
