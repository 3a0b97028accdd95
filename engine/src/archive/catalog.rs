//! The catalog of one table's archive: its manifests, and the objects whose rows may fall in a
//! time range.
//!
//! Input: the object store, a table, `[from, to)`. Output: the manifests (each named by key) and
//! the objects they list, in archive order, chosen by the item's range and the object's date
//! partition (`year=/month=/day=` in its key), so only objects that may hold rows of the range are
//! read. Invariant: a manifest that cannot be read or parsed is reported, never skipped silently.

use std::sync::Arc;

use archiver_proto::manifest::{self, Column, Manifest, ManifestObject};
use archiver_proto::{layout, Compression};
use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::storage::{ObjectStore, StorageError};

/// A time range `[from, to)`, either end open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl Range {
    /// Whether `[start, end)` overlaps this range.
    pub fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.from.is_none_or(|f| end > f) && self.to.is_none_or(|t| start < t)
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = |t: Option<DateTime<Utc>>, open: &str| t.map_or(open.to_string(), |t| t.to_rfc3339());
        write!(f, "[{}, {})", end(self.from, "-infinity"), end(self.to, "infinity"))
    }
}

/// One object chosen for a restore or a check, with what its manifest says of it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub manifest_key: String,
    /// When its manifest was written: the order in which objects were archived.
    pub archived_at: DateTime<Utc>,
    pub object: ManifestObject,
    pub compression: Compression,
    /// The manifest's columns (shared by all its objects).
    pub columns: Arc<Vec<Column>>,
    pub timestamp_column: Arc<str>,
    pub primary_key: Arc<str>,
}

/// A manifest that could not be used, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unreadable {
    pub key: String,
    pub problem: String,
}

/// The manifests of one table, read from the store.
#[derive(Debug, Default)]
pub struct Catalog {
    pub manifests: Vec<(String, Manifest)>,
    pub unreadable: Vec<Unreadable>,
}

/// Reads every manifest under `{database}/{schema}.{table}/_manifests/`.
pub async fn read(store: &dyn ObjectStore, database: &str, schema: &str, table: &str) -> Result<Catalog, StorageError> {
    let prefix = format!("{}/_manifests/", layout::table_prefix(database, schema, table));
    let mut catalog = read_prefix(store, &prefix).await?;
    // Archives written before schemas' dots were encoded may hold two tables under one prefix.
    catalog.manifests.retain(|(_, m)| m.schema == schema && m.table == table);
    Ok(catalog)
}

/// Reads every manifest under `prefix` (a table's `_manifests/` folder).
pub async fn read_prefix(store: &dyn ObjectStore, prefix: &str) -> Result<Catalog, StorageError> {
    let mut catalog = Catalog::default();
    for key in store.list(prefix).await? {
        if !key.ends_with(".json") {
            continue;
        }
        let problem = match store.get(&key).await? {
            None => "listed but gone when read".to_string(),
            Some(body) => match serde_json::from_slice::<Manifest>(&body) {
                Ok(m) if manifest::readable(m.format) => {
                    catalog.manifests.push((key, m));
                    continue;
                }
                Ok(m) => format!("manifest format {} is newer than this archiver reads ({})", m.format, manifest::FORMAT),
                Err(e) => format!("not a manifest: {e}"),
            },
        };
        catalog.unreadable.push(Unreadable { key, problem });
    }
    catalog.manifests.sort_by_key(|(_, m)| (m.range_start, m.generation, m.created_at));
    Ok(catalog)
}

impl Catalog {
    /// The objects that may hold rows in `range`, in archive order (item range, then batch).
    pub fn objects_in(&self, range: Range) -> Vec<Listed> {
        let mut out = Vec::new();
        for (key, m) in &self.manifests {
            if !range.overlaps(m.range_start, m.range_end) {
                continue;
            }
            let columns = Arc::new(m.columns.clone());
            let (ts, pk): (Arc<str>, Arc<str>) = (m.timestamp_column.as_str().into(), m.primary_key.as_str().into());
            for o in &m.objects {
                if partition_of(&o.key).is_some_and(|(s, e)| !range.overlaps(s, e)) {
                    continue;
                }
                out.push(Listed {
                    manifest_key: key.clone(),
                    archived_at: m.created_at,
                    object: o.clone(),
                    compression: m.compression,
                    columns: columns.clone(),
                    timestamp_column: ts.clone(),
                    primary_key: pk.clone(),
                });
            }
        }
        out
    }
}

/// Checks a stored object's bytes against what its manifest says: present, size, SHA-256. The
/// error is (kind, what is wrong): `missing`, `size` or `checksum`.
pub fn check(o: &ManifestObject, body: Option<&[u8]>) -> Result<(), (&'static str, String)> {
    let body = body.ok_or(("missing", "listed in its manifest, not in the store".to_string()))?;
    if body.len() as i64 != o.bytes {
        return Err(("size", format!("{} bytes in the store, {} in its manifest", body.len(), o.bytes)));
    }
    let sum = hex::encode(crate::storage::sha256(body));
    if sum != o.sha256 {
        return Err(("checksum", format!("SHA-256 {sum}, its manifest says {}", o.sha256)));
    }
    Ok(())
}

/// The UTC time span of the date partition a data key names (`year=YYYY[/month=MM[/day=DD]]`),
/// or None if the key names none.
pub fn partition_of(key: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let field = |name: &str| key.split('/').find_map(|s| s.strip_prefix(name)?.parse::<u32>().ok());
    let year = field("year=")? as i32;
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let (start, end) = match (field("month="), field("day=")) {
        (Some(m), Some(d)) => {
            let s = NaiveDate::from_ymd_opt(year, m, d)?;
            (s, s.succ_opt()?)
        }
        (Some(m), None) => {
            let s = NaiveDate::from_ymd_opt(year, m, 1)?;
            let e = if m == 12 { NaiveDate::from_ymd_opt(year + 1, 1, 1)? } else { NaiveDate::from_ymd_opt(year, m + 1, 1)? };
            (s, e)
        }
        _ => (NaiveDate::from_ymd_opt(year, 1, 1)?, NaiveDate::from_ymd_opt(year + 1, 1, 1)?),
    };
    debug_assert!(start.year() == year);
    Some((midnight(start), midnight(end)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_key_names_its_partitions_span() {
        assert_eq!(partition_of("app/public.t/year=2024/month=02/day=29/x-a1-b000001.jsonl.zst"), Some((at(2024, 2, 29), at(2024, 3, 1))));
        assert_eq!(partition_of("app/public.t/year=2024/month=12/x.jsonl.zst"), Some((at(2024, 12, 1), at(2025, 1, 1))));
        assert_eq!(partition_of("app/public.t/year=2024/x.jsonl.zst"), Some((at(2024, 1, 1), at(2025, 1, 1))));
        assert_eq!(partition_of("app/public.t/_manifests/x.json"), None);
    }

    #[test]
    fn ranges_overlap_half_open() {
        let r = Range { from: Some(at(2024, 3, 1)), to: Some(at(2024, 3, 2)) };
        assert!(r.overlaps(at(2024, 2, 1), at(2024, 3, 2)));
        assert!(!r.overlaps(at(2024, 2, 1), at(2024, 3, 1)), "ends where the range starts");
        assert!(!r.overlaps(at(2024, 3, 2), at(2024, 3, 3)), "starts where the range ends");
        assert!(Range::default().overlaps(at(1, 1, 1), at(1, 1, 2)));
    }
}
