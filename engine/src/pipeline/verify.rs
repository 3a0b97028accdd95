//! Verify: read back what the store holds and compare it with what was encoded.
//!
//! Input: a key, the encoded size, the checksum string `put` returned and the body's SHA-256.
//! Output: a typed [`Verification`]. Invariant: never returns `Verified` unless the store itself
//! reports an object of exactly that size with exactly that checksum, or, where the store keeps no
//! checksum for the object (some S3-compatible servers after a multipart upload), unless the bytes
//! read back from it have exactly that size and SHA-256.

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
    sha256: &[u8; 32],
) -> Result<Verification, StorageError> {
    let meta = (|| async { store.head(key).await })
        .retry(store_backoff())
        .when(StorageError::is_retryable)
        .await?;
    Ok(match meta {
        None => Verification::Missing,
        Some(m) if m.size != size => Verification::SizeMismatch { expected: size, found: m.size },
        Some(m) if m.checksum.is_none() => read_back(store, key, size, sha256).await?,
        Some(m) if m.checksum.as_deref() != Some(checksum) => {
            Verification::ChecksumMismatch { expected: checksum.to_string(), found: m.checksum }
        }
        Some(_) => Verification::Verified,
    })
}

/// The store states no checksum: fetch the object and hash what it holds.
async fn read_back(
    store: &dyn ObjectStore,
    key: &str,
    size: u64,
    sha256: &[u8; 32],
) -> Result<Verification, StorageError> {
    tracing::debug!(key, "the store keeps no checksum for this object; verifying by reading it back");
    let body = (|| async { store.get(key).await }).retry(store_backoff()).when(StorageError::is_retryable).await?;
    Ok(match body {
        None => Verification::Missing,
        Some(b) if b.len() as u64 != size => Verification::SizeMismatch { expected: size, found: b.len() as u64 },
        Some(b) if crate::storage::sha256(&b) != *sha256 => Verification::ChecksumMismatch {
            expected: hex::encode(sha256),
            found: Some(hex::encode(crate::storage::sha256(&b))),
        },
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
        let sha = crate::storage::sha256(b"abc");
        assert_eq!(verify(&store, "a/b", 3, "x", &sha).await.unwrap(), Verification::Missing);
        let sum = store.put("a/b", Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(verify(&store, "a/b", 3, &sum, &sha).await.unwrap(), Verification::Verified);
        assert!(matches!(verify(&store, "a/b", 4, &sum, &sha).await.unwrap(), Verification::SizeMismatch { .. }));
        // Same size, other content: only the checksum tells.
        store.put("a/b", Bytes::from_static(b"abd")).await.unwrap();
        assert!(matches!(
            verify(&store, "a/b", 3, &sum, &sha).await.unwrap(),
            Verification::ChecksumMismatch { .. }
        ));
    }
}
