//! Record: commit a verified batch to the checkpoint store before any of its rows is deleted.
//!
//! Input: a batch whose object was uploaded and verified. Output: its [`BatchRecord`] (object
//! key, rows, checksums, key bounds, primary keys and row versions) committed in state
//! `uploaded`. Invariant: the record is written only while this worker holds the item's lease,
//! and it is what a resumed attempt finishes from: a recorded batch is never selected again.

use archiver_proto::WorkItem;

use super::extract::{Extracted, Window};
use super::PipelineError;
use crate::checkpoint::{BatchRecord, BatchState, CheckpointStore};

/// The record of `batch`, stored under `key` with the store's `checksum`.
pub(super) fn batch_record(item: &WorkItem, seq: i32, window: Window, key: String, checksum: String, batch: Extracted) -> BatchRecord {
    BatchRecord {
        item_id: item.id,
        seq,
        object_key: key,
        row_count: batch.rows() as i64,
        byte_size: batch.encoded.body.len() as i64,
        sha256: hex::encode(batch.encoded.sha256),
        store_checksum: checksum,
        first_ts: batch.first.0,
        first_pk: batch.first.1,
        last_ts: batch.last.0,
        last_pk: batch.last.1,
        day: window.day(),
        window_end: window.end,
        pks: batch.pks,
        xmins: batch.xmins,
        state: BatchState::Uploaded,
        deleted_count: None,
        superseded: None,
    }
}

/// Commits `record`; `LeaseLost` if this worker no longer holds the item.
pub(super) async fn record(store: &CheckpointStore, record: &BatchRecord, owner: &str) -> Result<(), PipelineError> {
    match store.record_batch(record, owner).await? {
        true => Ok(()),
        false => Err(PipelineError::LeaseLost),
    }
}
