//! A local directory as object store.
//!
//! Contract: a put writes a temporary file in the target's directory, fsyncs it, renames it over
//! the target and fsyncs the directory, so after `put` returns the object survives a crash and a
//! reader never sees a partial file. `head` hashes the file as it is on disk.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use std::io::Write;

use super::{check_key, join_prefix, sha256, ObjectMeta, ObjectStore, Result, StorageError};

pub struct LocalStore {
    root: PathBuf,
    prefix: String,
}

impl LocalStore {
    pub fn new(root: PathBuf, prefix: &str) -> Result<Self> {
        Ok(LocalStore { root, prefix: prefix.trim_matches('/').to_string() })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(join_prefix(&self.prefix, key)))
    }
}

fn io_err(op: &'static str, key: &str, e: std::io::Error) -> StorageError {
    StorageError::Transient { op, key: key.to_string(), message: e.to_string() }
}

/// No object at this path: the file is missing, a parent is a file (`a/x` when `a` is an object)
/// or the path is a directory (`a` when `a/x` is an object); on S3 each is just a missing key.
fn is_absent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), NotFound | NotADirectory | IsADirectory)
}

fn checksum_string(body: &[u8]) -> String {
    hex::encode(sha256(body))
}

fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("object path has a parent");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<String> {
        let path = self.path(key)?;
        let expected = checksum_string(&body);
        tokio::task::spawn_blocking(move || write_atomic(&path, &body))
            .await
            .expect("write task panicked")
            .map_err(|e| io_err("put", key, e))?;
        Ok(expected)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.get(key).await?.map(|b| ObjectMeta { size: b.len() as u64, checksum: Some(checksum_string(&b)) }))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match tokio::fs::read(self.path(key)?).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(io_err("get", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let root = self.root.join(&self.prefix);
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            // Only walk the directory the prefix points into.
            let start_dir = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.clone(),
            };
            let mut out = Vec::new();
            let mut stack = vec![start_dir];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if is_absent(&e) => continue,
                    Err(e) => return Err(io_err("list", &prefix, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| io_err("list", &prefix, e))?;
                    let path = entry.path();
                    let name = entry.file_name();
                    if name.to_string_lossy().starts_with(".tmp-") {
                        continue;
                    }
                    if entry.file_type().map_err(|e| io_err("list", &prefix, e))?.is_dir() {
                        stack.push(path);
                    } else if let Ok(rel) = path.strip_prefix(&root) {
                        let key = rel.to_string_lossy().replace('\\', "/");
                        if key.starts_with(&prefix) {
                            out.push(key);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
        .expect("list task panicked")
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(io_err("delete", key, e)),
        }
    }

    async fn check(&self) -> Result<()> {
        let dir = self.root.join(&self.prefix);
        let probe = dir.clone();
        tokio::task::spawn_blocking(move || {
            // A file where the directory (or one of its parents) should be: say so, not "File exists".
            if let Some(file) = probe.ancestors().find(|p| p.is_file()) {
                return Err(std::io::Error::other(format!("{} is a file, not a directory", file.display())));
            }
            std::fs::create_dir_all(&probe)?;
            tempfile::Builder::new().prefix(".tmp-check-").tempfile_in(&probe).map(drop)
        })
        .await
        .expect("check task panicked")
        .map_err(|e| StorageError::Config(format!("directory {} is not writable: {e}", dir.display())))
    }

    fn describe(&self) -> String {
        self.root.join(&self.prefix).display().to_string()
    }
}
