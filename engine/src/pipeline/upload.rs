//! Upload: store one encoded batch under its deterministic key.
//!
//! Input: a key derived from the work item and batch sequence, and the encoded body. Output: the
//! checksum string the store will report for it. Invariant: the same batch always goes to the same
//! key, so a retry overwrites its own earlier attempt instead of adding a second copy. Transient
//! store errors are retried with exponential backoff and jitter.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;

use crate::storage::{ObjectStore, StorageError};

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
