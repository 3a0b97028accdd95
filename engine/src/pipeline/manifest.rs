//! Manifest: the last stage of an item, its commit marker.
//!
//! Input: an item whose every batch is recorded and deleted. Output: the manifest object (every
//! batch object with its rows, bytes, SHA-256 and key bounds, and the table's columns) stored and
//! verified, then the item marked done. Invariants: objects of interrupted attempts that no record
//! names are removed first, so the manifest lists exactly what is in the store for the item; the
//! item is done only after its manifest is verified.

use std::collections::BTreeSet;

use archiver_proto::manifest::{KeyBound, Manifest, ManifestObject, FORMAT};
use archiver_proto::{layout, Partition, WorkItem};
use chrono::Utc;

use crate::checkpoint::BatchRecord;
use crate::source::table::TableInfo;
use crate::storage::ObjectStore;

use super::PipelineError;

/// The manifest of `item` over its recorded `batches`.
pub(super) fn build(item: &WorkItem, info: &TableInfo, batches: &[BatchRecord]) -> Result<Manifest, PipelineError> {
    let superseded = |b: &BatchRecord| match &b.superseded {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str::<Vec<String>>(s)
            .map_err(|e| PipelineError::CorruptRecord { item: b.item_id, seq: b.seq, what: format!("superseded: {e}") }),
    };
    let objects = batches
        .iter()
        .map(|b| {
            Ok(ManifestObject {
            superseded: superseded(b)?,
            key: b.object_key.clone(),
            seq: b.seq,
            rows: b.row_count,
            bytes: b.byte_size,
            sha256: b.sha256.clone(),
            first_key: KeyBound { ts: b.first_ts.clone(), pk: b.first_pk.clone() },
            last_key: KeyBound { ts: b.last_ts.clone(), pk: b.last_pk.clone() },
            })
        })
        .collect::<Result<Vec<_>, PipelineError>>()?;
    Ok(Manifest {
        format: FORMAT,
        database: item.database.clone(),
        schema: item.schema.clone(),
        table: item.table.clone(),
        range_start: item.range_start,
        range_end: item.range_end,
        generation: item.generation,
        created_at: Utc::now(),
        compression: info.settings.compression,
        timestamp_column: info.settings.timestamp_column.clone(),
        primary_key: info.settings.primary_key.clone(),
        columns: info.columns.clone(),
        total_rows: objects.iter().map(|o| o.rows).sum(),
        total_bytes: objects.iter().map(|o| o.bytes).sum(),
        objects,
    })
}

/// Deletes this item's data objects of claim `attempt` or an earlier one that no batch record names:
/// left by an attempt that crashed between upload and record, or overtaken by a retry that cut
/// batches differently.
pub(super) async fn remove_strays(
    store: &dyn ObjectStore,
    item: &WorkItem,
    attempt: i32,
    partition: Partition,
    batches: &[BatchRecord],
) -> Result<(), PipelineError> {
    let keep: BTreeSet<&str> = batches.iter().map(|b| b.object_key.as_str()).collect();
    // Read once, at the first stray: what a manifest already under this item's name lists.
    let mut listed: Option<BTreeSet<String>> = None;
    let name_prefix = layout::data_name_prefix(item);
    let mut day = partition.floor(item.range_start.date_naive());
    let last = (item.range_end - chrono::Duration::microseconds(1)).date_naive();
    while day <= last {
        let prefix = format!("{}{}", layout::partition_prefix(item, partition, day), name_prefix);
        for key in store.list(&prefix).await? {
            // Never a later claim's object: its owner may be about to record it.
            let ours = layout::data_attempt(item, &key).is_some_and(|a| a <= attempt);
            if ours && !keep.contains(key.as_str()) {
                // A manifest is built from this store's records, so one that lists an object our
                // records do not name was written by another checkpoint store whose item had our
                // item's name (ids that met): that object holds rows deleted long ago. Keep it.
                if listed.is_none() {
                    listed = Some(listed_in_manifest(store, item).await?);
                }
                if listed.as_ref().is_some_and(|l| l.contains(&key)) {
                    return Err(PipelineError::Occupied { key });
                }
                tracing::info!(%key, "removing an object of an interrupted attempt that no batch record names");
                store.delete(&key).await?;
            }
        }
        day = partition.next(day);
    }
    Ok(())
}

/// The object keys the manifest under `item`'s name lists, if there is one that parses.
async fn listed_in_manifest(store: &dyn ObjectStore, item: &WorkItem) -> Result<BTreeSet<String>, PipelineError> {
    let body = store.get(&layout::manifest_key(item)).await?;
    let manifest = body.and_then(|b| serde_json::from_slice::<Manifest>(&b).ok());
    Ok(manifest.map(|m| m.objects.into_iter().map(|o| o.key).collect()).unwrap_or_default())
}
