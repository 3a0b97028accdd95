//! Object storage: one trait, two backends (S3 and a local directory).
//!
//! Every backend keeps the contract written on [`ObjectStore`]; `tests/storage_conformance.rs`
//! runs the same suite against both. The pipeline depends only on the trait.

mod local;
mod s3;
mod s3_error;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use local::LocalStore;
pub use s3::S3Store;

use crate::config::{Config, StorageConfig};

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store cannot be used as configured (missing bucket, bad credentials, unwritable
    /// directory). Retrying will not help.
    #[error("object store misconfigured: {0}")]
    Config(String),
    /// The store refused the call for good: authentication, authorization, a missing or invalid
    /// bucket, a wrong region or setting. Retrying will not help; the run stops.
    #[error("{0}")]
    Refused(Box<Refusal>),
    /// A call failed in a way that may pass on retry (network, throttling, 5xx).
    #[error("object store {op} {key}: {message}")]
    Transient { op: &'static str, key: String, message: String },
}

/// What the store refused, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("object store {op} s3://{bucket}/{key}: {code} (HTTP {status}){}; {advice}", if message.is_empty() { String::new() } else { format!(": {message}") })]
pub struct Refusal {
    pub op: &'static str,
    pub bucket: String,
    pub key: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    pub advice: &'static str,
}

impl StorageError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Transient { .. })
    }

    /// Every later call would fail the same way: stop the run rather than retry item by item.
    pub fn is_permanent(&self) -> bool {
        matches!(self, StorageError::Config(_) | StorageError::Refused(_))
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// What a store reports about a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// The checksum as this store states it (see [`ObjectStore::put`]); None if the store keeps
    /// none for this object.
    pub checksum: Option<String>,
}

/// Object storage as the pipeline needs it.
///
/// Keys are `/`-separated relative paths without a leading `/`, `..` or empty segments; they are
/// taken relative to the store's configured prefix.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Stores `body` under `key`, replacing any object already there.
    ///
    /// Atomic: a reader sees the previous object or all of the new one, never a part. The store is
    /// handed the body's SHA-256 where it can check it, so a body damaged on the way is refused
    /// rather than stored. Returns the checksum string that [`ObjectStore::head`] will report for
    /// this body once stored; verification compares the two.
    async fn put(&self, key: &str, body: Bytes) -> Result<String>;

    /// Size and checksum of the stored object, as read back from the store itself (for S3 from
    /// the server, for a directory by reading the file), or None if there is no object.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>>;

    /// The stored bytes, or None if there is no object.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// Every key that starts with `prefix`, in lexical order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Removes the object; succeeds if it is already absent.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Checks that the store is reachable and usable (bucket exists, credentials valid,
    /// directory writable). Names what is wrong.
    async fn check(&self) -> Result<()>;

    /// Where objects go, for logs: `s3://bucket/prefix` or a directory.
    fn describe(&self) -> String;
}

/// SHA-256 of a body, as raw bytes.
pub fn sha256(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

/// Opens the store the configuration names: `s3`, `storage`, or the default `./archive`.
pub async fn open(config: &Config) -> Result<Arc<dyn ObjectStore>> {
    if let Some(s3) = &config.s3 {
        return Ok(Arc::new(S3Store::new(s3).await?));
    }
    match &config.storage {
        Some(StorageConfig::Local { path, prefix }) => Ok(Arc::new(LocalStore::new(path.clone(), prefix)?)),
        None => Ok(Arc::new(LocalStore::new("archive".into(), "")?)),
    }
}

/// Refuses keys that could escape the store's root or that S3 and a filesystem would read
/// differently.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..")
        || key.contains('\0')
        || key.contains('\\');
    if bad {
        return Err(StorageError::Config(format!("invalid object key {key:?}")));
    }
    Ok(())
}

/// Joins a configured prefix (`archives/`, `archives`, or empty) and a key.
pub(crate) fn join_prefix(prefix: &str, key: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        key.to_string()
    } else {
        format!("{p}/{key}")
    }
}
