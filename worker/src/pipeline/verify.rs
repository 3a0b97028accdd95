//! Verify: read back what the store holds and compare it with what was encoded.
//!
//! Input: a key, the encoded size and the checksum string `put` returned. Output: a typed
//! [`Verification`]. Invariant: never returns `Verified` unless the store itself reports an object
//! of exactly that size with exactly that checksum.

use backon::Retryable;

use super::upload::store_backoff;
use crate::storage::{ObjectStore, StorageError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Verified,
    Missing,
    SizeMismatch { expected: u64, found: u64 },
    ChecksumMismatch { expected: String, found: Option<String> },
}

impl Verification {
    pub fn describe(&self, key: &str) -> String {
        match self {
            Verification::Verified => format!("{key}: verified"),
            Verification::Missing => format!("{key}: object is missing from the store"),
            Verification::SizeMismatch { expected, found } => {
                format!("{key}: store holds {found} bytes, expected {expected}")
            }
            Verification::ChecksumMismatch { expected, found } => format!(
                "{key}: store reports checksum {}, expected {expected}",
                found.as_deref().unwrap_or("(none)")
            ),
        }
    }
}

pub async fn verify(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
    checksum: &str,
) -> Result<Verification, StorageError> {
    let meta = (|| async { store.head(key).await })
        .retry(store_backoff())
        .when(StorageError::is_retryable)
        .await?;
    Ok(match meta {
        None => Verification::Missing,
        Some(m) if m.size != size => Verification::SizeMismatch { expected: size, found: m.size },
        Some(m) if m.checksum.as_deref() != Some(checksum) => {
            Verification::ChecksumMismatch { expected: checksum.to_string(), found: m.checksum }
        }
        Some(_) => Verification::Verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStore;
    use bytes::Bytes;

    #[tokio::test]
    async fn only_an_identical_object_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().into(), "").unwrap();
        assert_eq!(verify(&store, "a/b", 3, "x").await.unwrap(), Verification::Missing);
        let sum = store.put("a/b", Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(verify(&store, "a/b", 3, &sum).await.unwrap(), Verification::Verified);
        assert!(matches!(verify(&store, "a/b", 4, &sum).await.unwrap(), Verification::SizeMismatch { .. }));
        // Same size, other content: only the checksum tells.
        store.put("a/b", Bytes::from_static(b"abd")).await.unwrap();
        assert!(matches!(verify(&store, "a/b", 3, &sum).await.unwrap(), Verification::ChecksumMismatch { .. }));
    }
}
