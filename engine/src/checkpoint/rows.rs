//! The checkpoint store's rows as Rust values: [`ItemRow`] (a work item with its progress) and
//! [`BatchRecord`] (an uploaded batch, recorded before its rows are deleted), decoded strictly: a
//! state this release does not know is an error naming it.

use archiver_proto::{BatchState, ItemState, WorkItem};
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, Row};

/// One uploaded object as recorded before its rows are deleted.
#[derive(Debug, Clone)]
pub struct BatchRecord {
    pub item_id: i64,
    pub seq: i32,
    pub object_key: String,
    pub row_count: i64,
    pub byte_size: i64,
    pub sha256: String,
    pub store_checksum: String,
    pub first_ts: String,
    pub first_pk: String,
    pub last_ts: String,
    pub last_pk: String,
    pub day: NaiveDate,
    pub window_end: DateTime<Utc>,
    /// The batch's primary keys, a JSON array of strings; `[]` once deleted.
    pub pks: String,
    /// Their row versions (`xmin`) in the same order.
    pub xmins: String,
    pub state: BatchState,
    pub deleted_count: Option<i64>,
    /// The keys whose row changed on the source after it was read (a JSON array of strings), so
    /// that the archived version is not the last one; None where none did or not yet known.
    pub superseded: Option<String>,
}

/// A row of `work_items` with its progress.
#[derive(Debug, Clone)]
pub struct ItemRow {
    pub id: i64,
    pub database: String,
    pub schema_name: String,
    pub table_name: String,
    pub range_start: DateTime<Utc>,
    pub range_end: DateTime<Utc>,
    pub generation: i32,
    pub state: ItemState,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub rows_archived: i64,
    pub bytes_archived: i64,
    pub objects: i32,
    pub rows_short: i64,
}

impl ItemRow {
    pub fn item(&self) -> WorkItem {
        WorkItem {
            id: self.id,
            database: self.database.clone(),
            schema: self.schema_name.clone(),
            table: self.table_name.clone(),
            range_start: self.range_start,
            range_end: self.range_end,
            generation: self.generation,
        }
    }
}

/// A state column: a value this release does not know is a decode error naming it, never a guess.
fn state<T: TryFrom<String, Error = archiver_proto::UnknownState>>(row: &PgRow, column: &str) -> Result<T, sqlx::Error> {
    let text: String = row.try_get(column)?;
    T::try_from(text).map_err(|e| sqlx::Error::ColumnDecode { index: column.to_string(), source: Box::new(e) })
}

impl<'r> FromRow<'r, PgRow> for ItemRow {
    fn from_row(r: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(ItemRow {
            id: r.try_get("id")?,
            database: r.try_get("database")?,
            schema_name: r.try_get("schema_name")?,
            table_name: r.try_get("table_name")?,
            range_start: r.try_get("range_start")?,
            range_end: r.try_get("range_end")?,
            generation: r.try_get("generation")?,
            state: state(r, "state")?,
            lease_owner: r.try_get("lease_owner")?,
            lease_until: r.try_get("lease_until")?,
            attempts: r.try_get("attempts")?,
            last_error: r.try_get("last_error")?,
            rows_archived: r.try_get("rows_archived")?,
            bytes_archived: r.try_get("bytes_archived")?,
            objects: r.try_get("objects")?,
            rows_short: r.try_get("rows_short")?,
        })
    }
}

impl<'r> FromRow<'r, PgRow> for BatchRecord {
    fn from_row(r: &'r PgRow) -> Result<Self, sqlx::Error> {
        Ok(BatchRecord {
            item_id: r.try_get("item_id")?,
            seq: r.try_get("seq")?,
            object_key: r.try_get("object_key")?,
            row_count: r.try_get("row_count")?,
            byte_size: r.try_get("byte_size")?,
            sha256: r.try_get("sha256")?,
            store_checksum: r.try_get("store_checksum")?,
            first_ts: r.try_get("first_ts")?,
            first_pk: r.try_get("first_pk")?,
            last_ts: r.try_get("last_ts")?,
            last_pk: r.try_get("last_pk")?,
            day: r.try_get("day")?,
            window_end: r.try_get("window_end")?,
            pks: r.try_get("pks")?,
            xmins: r.try_get("xmins")?,
            state: state(r, "state")?,
            deleted_count: r.try_get("deleted_count")?,
            superseded: r.try_get("superseded")?,
        })
    }
}

