//! The contract between the coordinator and the workers.
//!
//! Everything both sides must agree on lives here and nowhere else: what a work item is, how it is
//! named, where its objects go, what a manifest holds, and the checkpoint schema in PostgreSQL.
//! This crate is plain data: no I/O, no runtime.

pub mod checkpoint_schema;
pub mod layout;
pub mod manifest;
pub mod message;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `database/schema.table`: how every log line, summary and status names a table.
pub fn table_label(database: &str, schema: &str, table: &str) -> String {
    // A schema with a dot of its own is quoted, so `"a.b".c` and `a.b.c` (schema a, table b.c)
    // stay two tables in summaries and logs.
    if schema.contains('.') {
        format!("{database}/\"{schema}\".{table}")
    } else {
        format!("{database}/{schema}.{table}")
    }
}

/// One unit of work: the rows of one table whose timestamp falls in `[range_start, range_end)`.
///
/// `generation` tells apart two items over the same range: a range that was finished once and
/// later received late rows gets a new item with the next generation, so its objects never
/// overwrite the first item's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkItem {
    /// Row id in the checkpoint store.
    pub id: i64,
    /// The `databases[].name` of the configuration.
    pub database: String,
    pub schema: String,
    pub table: String,
    pub range_start: DateTime<Utc>,
    pub range_end: DateTime<Utc>,
    pub generation: i32,
}

impl WorkItem {
    /// The item's name in object keys and logs, derived only from what identifies the item, so a
    /// retry of the same item writes to the same keys: `20250101T000000Z-20250102T000000Z-g0-i42`.
    /// The id makes it unique even for two items whose ranges print alike (ends within the same
    /// second), so one item can never overwrite another's objects.
    pub fn slug(&self) -> String {
        format!(
            "{}-{}-g{}-i{}",
            self.range_start.format("%Y%m%dT%H%M%SZ"),
            self.range_end.format("%Y%m%dT%H%M%SZ"),
            self.generation,
            self.id
        )
    }

    /// `database/schema.table`, for logs and summaries.
    pub fn table_label(&self) -> String {
        table_label(&self.database, &self.schema, &self.table)
    }
}

/// Where a work item stands in the checkpoint store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    /// Planned, not yet claimed (or handed back).
    Pending,
    /// Claimed by a worker whose lease has not expired.
    Running,
    /// Every row archived, verified and deleted; the manifest is written.
    Done,
    /// Gave up after an error; `last_error` says why. Nothing half-done is left: its recorded
    /// batches are finished when the item is resumed.
    Failed,
}

impl ItemState {
    pub const ALL: [ItemState; 4] = [ItemState::Pending, ItemState::Running, ItemState::Done, ItemState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Running => "running",
            ItemState::Done => "done",
            ItemState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Where a batch stands in the checkpoint store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    /// Its object is stored and verified, and its keys and row versions are recorded; its rows
    /// may not be deleted yet.
    Uploaded,
    /// Its rows were deleted (the count is recorded); the keys are dropped.
    Deleted,
}

impl BatchState {
    pub const ALL: [BatchState; 2] = [BatchState::Uploaded, BatchState::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Uploaded => "uploaded",
            BatchState::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A state column held a value this release does not know: an error, never taken for "failed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState {
    pub kind: &'static str,
    pub value: String,
}

impl std::fmt::Display for UnknownState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown {} state {:?} in the checkpoint store (written by a newer archiver, or edited by hand)", self.kind, self.value)
    }
}

impl std::error::Error for UnknownState {}

impl TryFrom<String> for ItemState {
    type Error = UnknownState;
    fn try_from(value: String) -> Result<Self, UnknownState> {
        ItemState::parse(&value).ok_or(UnknownState { kind: "work item", value })
    }
}

impl TryFrom<String> for BatchState {
    type Error = UnknownState;
    fn try_from(value: String) -> Result<Self, UnknownState> {
        BatchState::parse(&value).ok_or(UnknownState { kind: "batch", value })
    }
}

/// How finely a table's objects are partitioned by the rows' dates: one folder (and at least one
/// object) per day, month or year. Coarser partitions give fewer, larger objects for quiet tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Partition {
    #[default]
    Day,
    Month,
    Year,
}

impl Partition {
    /// The first day of the partition that holds `d`.
    pub fn floor(self, d: chrono::NaiveDate) -> chrono::NaiveDate {
        use chrono::Datelike;
        match self {
            Partition::Day => d,
            Partition::Month => d.with_day(1).expect("day 1 exists"),
            Partition::Year => chrono::NaiveDate::from_ymd_opt(d.year(), 1, 1).expect("January 1st exists"),
        }
    }

    /// The first day of the partition after the one that holds `d`.
    pub fn next(self, d: chrono::NaiveDate) -> chrono::NaiveDate {
        let start = self.floor(d);
        match self {
            Partition::Day => start + chrono::Days::new(1),
            Partition::Month => start + chrono::Months::new(1),
            Partition::Year => start + chrono::Months::new(12),
        }
    }
}

/// How batch objects are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
}

impl Compression {
    /// File name ending of a batch object.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => "jsonl.zst",
            Compression::Gzip => "jsonl.gz",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_schema_with_a_dot_is_quoted_in_labels() {
        assert_eq!(table_label("d", "a.b", "c"), "d/\"a.b\".c");
        assert_eq!(table_label("d", "a", "b.c"), "d/a.b.c");
    }

    #[test]
    fn slug_is_derived_from_what_identifies_the_item() {
        let item = WorkItem {
            id: 7,
            database: "db".into(),
            schema: "public".into(),
            table: "audit".into(),
            range_start: Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
            range_end: Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap(),
            generation: 3,
        };
        assert_eq!(item.slug(), "20250101T000000Z-20250102T000000Z-g3-i7");
        assert_eq!(item.slug(), item.clone().slug());
        // Same printed range, different item: different keys.
        let other = WorkItem { id: 99, range_end: item.range_end + chrono::Duration::milliseconds(300), ..item.clone() };
        assert_ne!(item.slug(), other.slug());
    }

    #[test]
    fn partitions_floor_and_step() {
        let d = |y, m, day| chrono::NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(Partition::Day.next(d(2024, 2, 29)), d(2024, 3, 1));
        assert_eq!(Partition::Month.floor(d(2024, 2, 29)), d(2024, 2, 1));
        assert_eq!(Partition::Month.next(d(2024, 12, 31)), d(2025, 1, 1));
        assert_eq!(Partition::Year.floor(d(2024, 7, 4)), d(2024, 1, 1));
        assert_eq!(Partition::Year.next(d(2024, 7, 4)), d(2025, 1, 1));
    }

    #[test]
    fn state_names_round_trip() {
        for s in ItemState::ALL {
            assert_eq!(ItemState::try_from(s.as_str().to_string()), Ok(s));
        }
        for s in BatchState::ALL {
            assert_eq!(BatchState::try_from(s.as_str().to_string()), Ok(s));
        }
        let e = ItemState::try_from("finished".to_string()).unwrap_err();
        assert!(e.to_string().contains("\"finished\""), "{e}");
        assert!(BatchState::try_from("Uploaded".to_string()).is_err());
    }
}
