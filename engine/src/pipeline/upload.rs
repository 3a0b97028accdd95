//! Upload: store one encoded batch under its deterministic key.
//!
//! Input: a key derived from the work item and batch sequence, and the encoded body. Output: the
//! checksum string the store will report for it. Invariant: the same batch always goes to the same
//! key, so a retry overwrites its own earlier attempt instead of adding a second copy. Transient
//! store errors are retried with exponential backoff and jitter.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;

use super::error::PipelineError;
use crate::storage::{sha256, ObjectStore, StorageError};

/// The retry policy for object store calls.
pub fn store_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(3)
        .with_jitter()
}

pub async fn upload(store: &dyn ObjectStore, key: &str, body: Bytes) -> Result<String, StorageError> {
    (|| async { store.put(key, body.clone()).await })
        .retry(store_backoff())
        .when(StorageError::is_retryable)
        .notify(|e, wait| tracing::warn!(key, error = %e, ?wait, "upload failed; retrying"))
        .await
}

/// [`upload`] for a batch object, unless another object is already under `key`. A key names one
/// batch of one claim of one item, so an object there with other bytes was written by someone
/// else: another checkpoint store archiving under the same storage prefix (see the item ids of
/// `checkpoint_schema::create_statements`). Overwriting it would lose its rows, so the batch is
/// refused instead and its rows stay in the table. The same bytes are this claim's own earlier
/// put whose answer was lost: stored again.
pub async fn upload_new(store: &dyn ObjectStore, key: &str, body: Bytes, body_sha256: &[u8; 32]) -> Result<String, PipelineError> {
    let there = (|| async { store.get(key).await }).retry(store_backoff()).when(StorageError::is_retryable).await?;
    if there.is_some_and(|b| sha256(&b) != *body_sha256) {
        return Err(PipelineError::Occupied { key: key.to_string() });
    }
    Ok(upload(store, key, body).await?)
}
