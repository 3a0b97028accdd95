//! Where objects go. Keys are relative to the store's configured prefix:
//!
//! ```text
//! {database}/{schema}.{table}/year=YYYY/month=MM/day=DD/{item slug}-b{seq:06}.jsonl.zst   (partition: day)
//! {database}/{schema}.{table}/year=YYYY/month=MM/{item slug}-b{seq:06}.jsonl.zst          (partition: month)
//! {database}/{schema}.{table}/year=YYYY/{item slug}-b{seq:06}.jsonl.zst                   (partition: year)
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

/// `{database}/{schema}.{table}`: everything of one table lives below it.
pub fn table_prefix(database: &str, schema: &str, table: &str) -> String {
    format!("{}/{}.{}", segment(database), segment(schema), segment(table))
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

/// The key of batch `seq` of `item`, whose rows all fall in the partition starting on `start`.
pub fn data_key(item: &WorkItem, partition: Partition, start: NaiveDate, seq: i32, compression: Compression) -> String {
    format!("{}{}-b{:06}.{}", partition_prefix(item, partition, start), item.slug(), seq, compression.extension())
}

/// The file-name start shared by all of an item's data objects.
pub fn data_name_prefix(item: &WorkItem) -> String {
    format!("{}-b", item.slug())
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
    fn keys_are_partitioned_by_the_rows_day() {
        let day = NaiveDate::from_ymd_opt(2024, 3, 5).unwrap();
        assert_eq!(
            data_key(&item("audit_log"), Partition::Day, day, 7, Compression::Zstd),
            "app/public.audit_log/year=2024/month=03/day=05/20240305T000000Z-20240306T000000Z-g0-i1-b000007.jsonl.zst"
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
        assert!(data_key(&i, Partition::Year, d, 2, Compression::Gzip).ends_with("/year=2024/20240305T000000Z-20240306T000000Z-g0-i1-b000002.jsonl.gz"));
    }
}
