//! Validate: the archive against its manifests, and against the checkpoint store where it is
//! reachable.
//!
//! Input: the object store, the tables to check, their checkpoint stores (or why each cannot be
//! reached), and whether to look inside every object (`deep`). Output: per table the manifests,
//! objects, rows and bytes checked and every problem found, each naming its key. Invariant: the
//! archive alone is enough; the checkpoint store adds checks (every done item has its manifest,
//! every batch of a done item its object) and tells an object of an item still in progress from
//! an orphan.

use std::collections::{BTreeSet, HashMap};
use std::io::BufRead;

use archiver_proto::manifest::Manifest;
use archiver_proto::{layout, Compression, ItemState};

use super::catalog;
use crate::checkpoint::CheckpointStore;
use crate::storage::{ObjectStore, StorageError};

/// One table to check: its database name, schema and table.
#[derive(Debug, Clone)]
pub struct TableRef {
    pub database: String,
    pub schema: String,
    pub table: String,
}

/// Something that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// missing, size, checksum, read, manifest, orphan, rows, json, bounds, no-manifest, unlisted
    pub kind: &'static str,
    pub key: String,
    pub detail: String,
}

/// What was checked of one table.
#[derive(Debug, Default, serde::Serialize)]
pub struct TableReport {
    pub table: String,
    pub manifests: usize,
    pub objects: usize,
    pub rows: i64,
    pub bytes: i64,
    /// Objects of items still in progress (not orphans, not yet in a manifest).
    pub in_progress: usize,
    /// Why the checkpoint records were not checked, if they were not.
    pub checkpoint: Option<String>,
    pub problems: Vec<Problem>,
}

/// The whole check.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub ok: bool,
    pub deep: bool,
    pub tables: Vec<TableReport>,
}

/// Checks every table; `checkpoints` maps a database name to its store, or why it is unreachable.
pub async fn validate(
    store: &dyn ObjectStore,
    tables: &[TableRef],
    checkpoints: &HashMap<String, Result<CheckpointStore, String>>,
    deep: bool,
) -> Result<Report, StorageError> {
    let mut report = Report { deep, ..Report::default() };
    for t in tables {
        let cp = checkpoints.get(&t.database).cloned().unwrap_or_else(|| Err("no checkpoint store configured".into()));
        report.tables.push(table(store, t, cp, deep).await?);
    }
    report.ok = report.tables.iter().all(|t| t.problems.is_empty());
    Ok(report)
}

async fn table(store: &dyn ObjectStore, t: &TableRef, cp: Result<CheckpointStore, String>, deep: bool) -> Result<TableReport, StorageError> {
    let prefix = layout::table_prefix(&t.database, &t.schema, &t.table);
    let mut r = TableReport { table: archiver_proto::table_label(&t.database, &t.schema, &t.table), ..TableReport::default() };
    let cat = catalog::read_prefix(store, &format!("{prefix}/_manifests/")).await?;
    let problem = |kind, key: &str, detail: String| Problem { kind, key: key.to_string(), detail };
    r.problems.extend(cat.unreadable.iter().map(|u| problem("manifest", &u.key, u.problem.clone())));
    let data: BTreeSet<String> = store.list(&format!("{prefix}/")).await?.into_iter().filter(|k| !k.contains("/_manifests/")).collect();
    let mut listed = BTreeSet::new();
    for (key, m) in &cat.manifests {
        r.manifests += 1;
        for o in &m.objects {
            listed.insert(o.key.clone());
            r.objects += 1;
            r.rows += o.rows;
            r.bytes += o.bytes;
            if let Some(p) = object(store, m, o, deep).await? {
                r.problems.push(p);
            }
        }
        let total: i64 = m.objects.iter().map(|o| o.rows).sum();
        if total != m.total_rows {
            r.problems.push(problem("manifest", key, format!("its objects hold {total} rows, it says {} in all", m.total_rows)));
        }
    }
    let items = match &cp {
        Ok(cp) => checkpoint_records(cp, t, &cat.manifests, &mut r).await,
        Err(why) => Err(why.clone()),
    };
    let running: Vec<String> = match items {
        Ok(running) => running,
        Err(why) => {
            r.checkpoint = Some(why);
            Vec::new()
        }
    };
    for key in data.difference(&listed) {
        let name = key.rsplit('/').next().unwrap_or(key);
        if running.iter().any(|slug| name.starts_with(&format!("{slug}-a"))) {
            r.in_progress += 1;
        } else {
            r.problems.push(problem("orphan", key, "no manifest lists it (left by a crash before its item's manifest, or not ours)".into()));
        }
    }
    Ok(r)
}

/// Checks the checkpoint records of the table's items against the manifests; returns the slugs of
/// items not done (their objects are in progress), or why the records cannot be read.
async fn checkpoint_records(cp: &CheckpointStore, t: &TableRef, manifests: &[(String, Manifest)], r: &mut TableReport) -> Result<Vec<String>, String> {
    let unreachable = |e: sqlx::Error| format!("checkpoint store: {e}");
    if !cp.exists().await.map_err(unreachable)? {
        return Err("checkpoint store: no checkpoint tables".into());
    }
    let by_key: HashMap<&str, &Manifest> = manifests.iter().map(|(k, m)| (k.as_str(), m)).collect();
    let mut running = Vec::new();
    for row in cp.items_of(&t.database, &t.schema, &t.table).await.map_err(unreachable)? {
        let item = row.item();
        if row.state != ItemState::Done {
            running.push(item.slug());
            continue;
        }
        let key = layout::manifest_key(&item);
        let Some(m) = by_key.get(key.as_str()) else {
            r.problems.push(Problem { kind: "no-manifest", key, detail: format!("item {} is done but its manifest is missing", item.id) });
            continue;
        };
        let listed: BTreeSet<&str> = m.objects.iter().map(|o| o.key.as_str()).collect();
        for b in cp.batches(item.id).await.map_err(unreachable)? {
            if !listed.contains(b.object_key.as_str()) {
                let detail = format!("batch {} of done item {} is not in its manifest {key}", b.seq, item.id);
                r.problems.push(Problem { kind: "unlisted", key: b.object_key.clone(), detail });
            }
        }
    }
    Ok(running)
}

/// One object: present, its size and SHA-256, and with `deep` its rows, JSON and key bounds.
async fn object(store: &dyn ObjectStore, m: &Manifest, o: &archiver_proto::manifest::ManifestObject, deep: bool) -> Result<Option<Problem>, StorageError> {
    let problem = |kind, detail: String| Some(Problem { kind, key: o.key.clone(), detail });
    let body = match store.get(&o.key).await {
        Ok(body) => body,
        Err(e) if !e.is_permanent() => return Ok(problem("read", e.to_string())),
        Err(e) => return Err(e),
    };
    if let Err((kind, detail)) = catalog::check(o, body.as_deref()) {
        return Ok(problem(kind, detail));
    }
    let body = body.expect("checked present");
    if !deep {
        return Ok(None);
    }
    Ok(inside(m, o, &body).err().and_then(|(kind, detail)| problem(kind, detail)))
}

/// Reads the object line by line: each a JSON object, as many as the manifest says, the first and
/// last with the manifest's key bounds.
fn inside(m: &Manifest, o: &archiver_proto::manifest::ManifestObject, body: &[u8]) -> Result<(), (&'static str, String)> {
    let reader: Box<dyn std::io::Read + '_> = match m.compression {
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(body).map_err(|e| ("json", format!("not zstd: {e}")))?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
    };
    let (mut rows, mut first, mut last) = (0i64, None, None);
    for line in std::io::BufReader::new(reader).lines() {
        let line = line.map_err(|e| ("json", format!("cannot decompress: {e}")))?;
        rows += 1;
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| ("json", format!("row {rows} is not JSON: {e}")))?;
        let bound = bound_of(&v, &m.timestamp_column, &m.primary_key).ok_or(("json", format!("row {rows} lacks its timestamp or key")))?;
        if first.is_none() {
            first = Some(bound.clone());
        }
        last = Some(bound);
    }
    if rows != o.rows {
        return Err(("rows", format!("{rows} rows, its manifest says {}", o.rows)));
    }
    for (found, want, which) in [(first, &o.first_key, "first"), (last, &o.last_key, "last")] {
        let found = found.unwrap_or_default();
        if found.1 != want.pk || normal_ts(&found.0) != normal_ts(&want.ts) {
            return Err(("bounds", format!("{which} row is ({}, {}), its manifest says ({}, {})", found.0, found.1, want.ts, want.pk)));
        }
    }
    Ok(())
}

/// (timestamp, key) of a row as text.
fn bound_of(v: &serde_json::Value, ts: &str, pk: &str) -> Option<(String, String)> {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    };
    Some((text(v.get(ts)?)?, text(v.get(pk)?)?))
}

/// A timestamp as JSON (`2024-03-05T10:00:00.5+00:00`) and as PostgreSQL prints it
/// (`2024-03-05 10:00:00.5+00`), reduced to what both say alike: date and time to the second.
fn normal_ts(s: &str) -> String {
    s.replacen('T', " ", 1).chars().take(19).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_compare_across_json_and_postgres_text() {
        assert_eq!(normal_ts("2024-03-05T10:00:00.5+00:00"), normal_ts("2024-03-05 10:00:00.5+00"));
        assert_ne!(normal_ts("2024-03-05T10:00:01"), normal_ts("2024-03-05 10:00:00"));
        let v = serde_json::json!({"id": 42, "at": "2024-03-05T10:00:00"});
        assert_eq!(bound_of(&v, "at", "id"), Some(("2024-03-05T10:00:00".into(), "42".into())));
        assert_eq!(bound_of(&v, "gone", "id"), None);
    }
}
