//! Where objects go. Keys are relative to the store's configured prefix:
//!
//! ```text
//! {database}/{schema}.{table}/year=YYYY/month=MM/day=DD/{item slug}-a{attempt}-b{seq:06}.jsonl.zst   (partition: day)
//! {database}/{schema}.{table}/year=YYYY/month=MM/{item slug}-a{attempt}-b{seq:06}.jsonl.zst          (partition: month)
//! {database}/{schema}.{table}/year=YYYY/{item slug}-a{attempt}-b{seq:06}.jsonl.zst                   (partition: year)
//! {database}/{schema}.{table}/_manifests/{item slug}.json
//! ```
//!
//! Data objects are partitioned by the rows' own dates (a batch never spans two partitions), so
//! Athena, Trino or DuckDB prune by date; manifests live under `_manifests/`, which those engines skip.
//! Names are percent-encoded where they hold anything but letters, digits, `_`, `-` and `.`, so a
//! hostile table name cannot climb out of its prefix.

use chrono::{Datelike, NaiveDate};

use crate::{Compression, Partition, WorkItem};

/// Percent-encodes one key segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{database}/{schema}.{table}`: everything of one table lives below it. The schema's own dots
/// are encoded (`%2E`), so the first dot is always the one between schema and table: schema
/// `a.b` with table `c` and schema `a` with table `b.c` never share a prefix.
pub fn table_prefix(database: &str, schema: &str, table: &str) -> String {
    format!("{}/{}.{}", segment(database), segment(schema).replace('.', "%2E"), segment(table))
}

/// The directory of the partition that starts on `start` (see [`Partition::floor`]).
pub fn partition_prefix(item: &WorkItem, partition: Partition, start: NaiveDate) -> String {
    let table = table_prefix(&item.database, &item.schema, &item.table);
    match partition {
        Partition::Day => format!("{table}/year={:04}/month={:02}/day={:02}/", start.year(), start.month(), start.day()),
        Partition::Month => format!("{table}/year={:04}/month={:02}/", start.year(), start.month()),
        Partition::Year => format!("{table}/year={:04}/", start.year()),
    }
}

/// Where a batch object goes: which item, which claim of it (`attempt`, counted by the checkpoint
/// store), which partition, which batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchPlace<'a> {
    pub item: &'a WorkItem,
    pub attempt: i32,
    pub partition: Partition,
    /// The first day of the partition that holds the batch's rows.
    pub start: NaiveDate,
    pub seq: i32,
}

/// The key of a batch object: `{partition}/{item slug}-a{attempt}-b{seq:06}.jsonl.zst`. The
/// attempt keeps two claims of one item (a process taken over while it still ran) from ever
/// writing the same key; a retry within a claim overwrites its own object.
pub fn data_key(p: BatchPlace<'_>, compression: Compression) -> String {
    format!(
        "{}{}-a{}-b{:06}.{}",
        partition_prefix(p.item, p.partition, p.start),
        p.item.slug(),
        p.attempt,
        p.seq,
        compression.extension()
    )
}

/// The claim (attempt) a data object's key names, if it is one of `item`'s.
pub fn data_attempt(item: &WorkItem, key: &str) -> Option<i32> {
    let name = key.rsplit('/').next()?;
    let rest = name.strip_prefix(&data_name_prefix(item))?;
    rest.split_once("-b")?.0.parse().ok()
}

/// The file-name start shared by all of an item's data objects.
pub fn data_name_prefix(item: &WorkItem) -> String {
    format!("{}-a", item.slug())
}

/// The key of the item's manifest.
pub fn manifest_key(item: &WorkItem) -> String {
    format!("{}/_manifests/{}.json", table_prefix(&item.database, &item.schema, &item.table), item.slug())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn item(table: &str) -> WorkItem {
        WorkItem {
            id: 1,
            database: "app".into(),
            schema: "public".into(),
            table: table.into(),
            range_start: Utc.with_ymd_and_hms(2024, 3, 5, 0, 0, 0).unwrap(),
            range_end: Utc.with_ymd_and_hms(2024, 3, 6, 0, 0, 0).unwrap(),
            generation: 0,
        }
    }

    #[test]
    fn dots_in_names_never_make_two_tables_share_a_prefix() {
        assert_eq!(table_prefix("d", "a.b", "c"), "d/a%2Eb.c");
        assert_eq!(table_prefix("d", "a", "b.c"), "d/a.b.c");
        assert_eq!(table_prefix("d", "public", "audit_log"), "d/public.audit_log");
    }

    #[test]
    fn keys_are_partitioned_by_the_rows_day() {
        let day = NaiveDate::from_ymd_opt(2024, 3, 5).unwrap();
        assert_eq!(
            data_key(BatchPlace { item: &item("audit_log"), attempt: 1, partition: Partition::Day, start: day, seq: 7 }, Compression::Zstd),
            "app/public.audit_log/year=2024/month=03/day=05/20240305T000000Z-20240306T000000Z-g0-i1-a1-b000007.jsonl.zst"
        );
        assert_eq!(
            manifest_key(&item("audit_log")),
            "app/public.audit_log/_manifests/20240305T000000Z-20240306T000000Z-g0-i1.json"
        );
    }

    #[test]
    fn hostile_names_stay_inside_their_prefix() {
        assert_eq!(segment("../etc"), "%2E.%2Fetc");
        assert_eq!(segment(".."), "%2E.");
        assert_eq!(segment("Audit Log\"x"), "Audit%20Log%22x");
        let key = manifest_key(&item("../../x"));
        assert!(!key.split('/').any(|s| s == ".."), "{key}");
    }

    #[test]
    fn coarser_partitions_drop_the_finer_levels() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let i = item("audit_log");
        assert_eq!(partition_prefix(&i, Partition::Month, d), "app/public.audit_log/year=2024/month=03/");
        assert_eq!(partition_prefix(&i, Partition::Year, NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()), "app/public.audit_log/year=2024/");
        let key = data_key(BatchPlace { item: &i, attempt: 3, partition: Partition::Year, start: d, seq: 2 }, Compression::Gzip);
        assert!(key.ends_with("/year=2024/20240305T000000Z-20240306T000000Z-g0-i1-a3-b000002.jsonl.gz"), "{key}");
        assert_eq!(data_attempt(&i, &key), Some(3));
        let other = WorkItem { id: 12, ..i.clone() };
        assert_eq!(data_attempt(&other, &key), None, "another item's object");
    }
}
