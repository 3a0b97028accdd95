//! The `ObjectStore` conformance suite: every promise written on the trait, checked with the same
//! code against both backends — `LocalStore` on a temporary directory and `S3Store` against a real
//! `s3s-fs` server (`archiver_testkit::S3Server`).
//!
//! Besides what the store itself reports, the suite reads the objects where the backend really
//! keeps them (the directory, or the S3 server's bucket directory), so a backend that answered
//! from a cache of its own would fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use archiver_testkit::S3Server;
use archiver_engine::config::{self, S3Config};
use archiver_engine::storage::{LocalStore, ObjectStore, S3Store, StorageError};
use base64::Engine;
use bytes::Bytes;
use sha2::{Digest, Sha256};

mod list;
use list::list;

/// The prefix of the store under test.
const PREFIX: &str = "some/prefix";
/// A prefix that extends [`PREFIX`] textually but is not under it.
const SIBLING_PREFIX: &str = "some/prefixx";

/// Computes the checksum string a store states for a body.
type ChecksumFn<'a> = Box<dyn Fn(&[u8]) -> String + Send + Sync + 'a>;

/// One backend as the suite sees it.
struct Backend<'a> {
    name: &'static str,
    /// The store under test, with prefix [`PREFIX`].
    store: &'a dyn ObjectStore,
    /// The same backing storage with prefix [`SIBLING_PREFIX`].
    sibling: &'a dyn ObjectStore,
    /// The same backing storage without a prefix.
    unprefixed: &'a dyn ObjectStore,
    /// Where the store's objects really are: the object `key` is the file `objects_dir/key`.
    objects_dir: PathBuf,
    /// Everything the backend may write to; nothing in it may change when a call is refused.
    backing_root: PathBuf,
    /// The checksum string the store must state for a body, computed here independently.
    expected_checksum: ChecksumFn<'a>,
    /// Length of the body that goes through the large-object path (multipart for S3).
    large_len: usize,
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Deterministic pseudo-random bytes (xorshift64*), so a misplaced part or byte shows.
fn body(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The file where the backend keeps `key`, if any.
fn on_disk(b: &Backend<'_>, key: &str) -> Option<Vec<u8>> {
    match std::fs::read(b.objects_dir.join(key)) {
        Ok(data) => Some(data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("[{}] reading {key} from {}: {e}", b.name, b.objects_dir.display()),
    }
}

/// Every regular file under `root` (relative path, `/`-separated) with the SHA-256 of its content.
fn snapshot(root: &Path) -> BTreeMap<String, [u8; 32]> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read_dir {}: {e}", dir.display()),
        };
        for entry in entries {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.insert(rel, Sha256::digest(std::fs::read(&path).unwrap()).into());
            }
        }
    }
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// put, then check everything the contract promises about the stored object.
async fn put_and_verify(b: &Backend<'_>, key: &str, data: &Bytes) -> String {
    let n = b.name;
    let checksum = b.store.put(key, data.clone()).await.unwrap_or_else(|e| panic!("[{n}] put {key}: {e}"));
    assert_eq!(
        checksum,
        (b.expected_checksum)(data),
        "[{n}] put {key}: returned checksum is not the store's checksum of the body"
    );
    let meta = b.store.head(key).await.unwrap_or_else(|e| panic!("[{n}] head {key}: {e}"));
    let meta = meta.unwrap_or_else(|| panic!("[{n}] head {key}: None right after put"));
    assert_eq!(meta.size, data.len() as u64, "[{n}] head {key}: size");
    let got = b.store.get(key).await.unwrap_or_else(|e| panic!("[{n}] get {key}: {e}"));
    let got = got.unwrap_or_else(|| panic!("[{n}] get {key}: None right after put"));
    assert!(got == *data, "[{n}] get {key}: bytes differ from what was put ({} vs {} bytes)", got.len(), data.len());
    let stored = on_disk(b, key)
        .unwrap_or_else(|| panic!("[{n}] {key}: not found at {} after put", b.objects_dir.join(key).display()));
    assert!(stored == data[..], "[{n}] {key}: bytes in the backing storage differ from what was put");
    // Last, so that a failure here means the bytes were stored right and only the checksum the
    // store states is wrong.
    assert_eq!(
        meta.checksum.as_deref(),
        Some(checksum.as_str()),
        "[{n}] head {key}: checksum differs from what put returned"
    );
    checksum
}

// ---------------------------------------------------------------------------------------------
// The suite

async fn conformance(b: &Backend<'_>) {
    assert!(
        b.store.describe().contains(PREFIX),
        "[{}] describe() should name the prefix: {}",
        b.name,
        b.store.describe()
    );
    b.store.check().await.unwrap_or_else(|e| panic!("[{}] check on a good store: {e}", b.name));
    // `list` first, while the store is empty, so its expectations are exact.
    list(b).await;
    round_trip(b).await;
    replace(b).await;
    missing(b).await;
    invalid_keys(b).await;
    delete(b).await;
    nothing_left_behind(b).await;
    large(b).await;
    nothing_left_behind(b).await;
}

/// put then head/get: size, checksum and bytes.
async fn round_trip(b: &Backend<'_>) {
    let n = b.name;
    let one = body(1, 1000);
    let c1 = put_and_verify(b, "rt/db=app/t=audit/day=2024-01-01/00000001.jsonl.zst", &one).await;
    // The checksum is a function of the content: the same body elsewhere states the same one,
    // another body another one.
    let c1b = put_and_verify(b, "rt/copy.bin", &one).await;
    assert_eq!(c1, c1b, "[{n}] same body, same checksum");
    let two = body(2, 1000);
    let c2 = put_and_verify(b, "rt/two.bin", &two).await;
    assert_ne!(c1, c2, "[{n}] different bodies, different checksums");
    // A one-byte and an empty body.
    put_and_verify(b, "rt/one-byte", &Bytes::from_static(b"x")).await;
    put_and_verify(b, "rt/empty", &Bytes::new()).await;
    assert_eq!(
        b.store.list("rt/").await.unwrap(),
        ["rt/copy.bin", "rt/db=app/t=audit/day=2024-01-01/00000001.jsonl.zst", "rt/empty", "rt/one-byte", "rt/two.bin"],
        "[{n}] list after round trips"
    );
}

/// put over an existing key replaces it.
async fn replace(b: &Backend<'_>) {
    let n = b.name;
    let key = "rp/object.jsonl.zst";
    let v1 = body(10, 3000);
    let c1 = put_and_verify(b, key, &v1).await;

    // Shorter body.
    let v2 = body(11, 1234);
    let c2 = put_and_verify(b, key, &v2).await;
    assert_ne!(c1, c2, "[{n}] head checksum must change when the object is replaced");

    // Same length, one byte different.
    let mut v3 = v2.to_vec();
    v3[617] ^= 0x01;
    let v3 = Bytes::from(v3);
    let c3 = put_and_verify(b, key, &v3).await;
    assert_ne!(c2, c3, "[{n}] one byte changed, checksum must change");

    // Longer body again.
    let v4 = body(12, 5000);
    put_and_verify(b, key, &v4).await;
    assert_eq!(b.store.list("rp/").await.unwrap(), [key], "[{n}] replacing leaves exactly one object");
}

/// Absent keys: head/get None, delete Ok.
async fn missing(b: &Backend<'_>) {
    let n = b.name;
    for key in [
        "ms/missing.bin",
        "no/such/directory/at/all.bin",
        // Under an existing object's key: still just a missing key.
        "rt/two.bin/child",
        // Not here: a "directory" of other keys (`rt/db=app` while `rt/db=app/...` exists). It is
        // a missing key too, but s3s-fs (0.14.1) answers HEAD on it with HTTP 500 where S3 says
        // 404; `local_store_a_directory_is_not_an_object` checks it for the local store.
    ] {
        assert_eq!(
            b.store.head(key).await.unwrap_or_else(|e| panic!("[{n}] head {key}: {e}")),
            None,
            "[{n}] head {key}"
        );
        assert_eq!(b.store.get(key).await.unwrap_or_else(|e| panic!("[{n}] get {key}: {e}")), None, "[{n}] get {key}");
        b.store.delete(key).await.unwrap_or_else(|e| panic!("[{n}] delete of absent {key}: {e}"));
        assert_eq!(b.store.head(key).await.unwrap(), None, "[{n}] head {key} after delete");
    }
    assert_eq!(b.store.list("ms/").await.unwrap(), Vec::<String>::new(), "[{n}] list of an absent prefix");
    assert_eq!(b.store.list("rt/two.bin/").await.unwrap(), Vec::<String>::new(), "[{n}] list under an object's key");
    // Objects stay in place when an absent neighbour is deleted.
    assert!(b.store.head("rt/two.bin").await.unwrap().is_some(), "[{n}] rt/two.bin survives");
}

/// Invalid keys are refused, and nothing is written, read or deleted.
async fn invalid_keys(b: &Backend<'_>) {
    let n = b.name;
    // A victim outside the store's prefix that `../` keys would reach.
    b.unprefixed.put("some/x", body(20, 64)).await.unwrap();
    b.unprefixed.put("x", body(21, 64)).await.unwrap();
    let before = snapshot(&b.backing_root);
    let listed_before = b.unprefixed.list("").await.unwrap();
    let bad = ["../x", "/abs", "a//b", "", "a/../../x", "./x", "a/./b", "a/", "/", "a\\b", "a\0b", "x/.."];
    for key in bad {
        let data = body(22, 32);
        match b.store.put(key, data).await {
            Err(e) => assert!(!e.is_retryable(), "[{n}] put {key:?}: refusal must not be retryable: {e}"),
            Ok(c) => panic!("[{n}] put {key:?} was accepted (checksum {c})"),
        }
        match b.store.head(key).await {
            Err(e) => assert!(!e.is_retryable(), "[{n}] head {key:?}: {e}"),
            Ok(m) => panic!("[{n}] head {key:?} was accepted: {m:?}"),
        }
        match b.store.get(key).await {
            Err(e) => assert!(!e.is_retryable(), "[{n}] get {key:?}: {e}"),
            Ok(m) => panic!("[{n}] get {key:?} was accepted ({:?} bytes)", m.map(|d| d.len())),
        }
        match b.store.delete(key).await {
            Err(e) => assert!(!e.is_retryable(), "[{n}] delete {key:?}: {e}"),
            Ok(()) => panic!("[{n}] delete {key:?} was accepted"),
        }
    }
    assert_eq!(snapshot(&b.backing_root), before, "[{n}] refused keys changed the backing storage");
    assert_eq!(b.unprefixed.list("").await.unwrap(), listed_before, "[{n}] refused keys changed the listing");
    b.unprefixed.delete("some/x").await.unwrap();
    b.unprefixed.delete("x").await.unwrap();
}

/// delete removes the object, only that object, and is idempotent.
async fn delete(b: &Backend<'_>) {
    let n = b.name;
    let a = body(30, 100);
    put_and_verify(b, "dl/a", &a).await;
    put_and_verify(b, "dl/ab", &a).await;
    put_and_verify(b, "dl/a.bak", &a).await;
    b.store.delete("dl/a").await.unwrap_or_else(|e| panic!("[{n}] delete dl/a: {e}"));
    assert_eq!(b.store.head("dl/a").await.unwrap(), None, "[{n}] head after delete");
    assert_eq!(b.store.get("dl/a").await.unwrap(), None, "[{n}] get after delete");
    assert_eq!(on_disk(b, "dl/a"), None, "[{n}] the object is gone from the backing storage");
    assert_eq!(b.store.list("dl/").await.unwrap(), ["dl/a.bak", "dl/ab"], "[{n}] list after delete");
    b.store.delete("dl/a").await.unwrap_or_else(|e| panic!("[{n}] second delete of dl/a: {e}"));
    // It can be written again.
    put_and_verify(b, "dl/a", &body(31, 50)).await;
}

/// A body over the multipart threshold (S3) or just large (local).
///
/// s3s-fs 0.14.1 checks each part's SHA-256 but records no checksum for the assembled object, so
/// HEAD states none where AWS states the composite `<base64>-3`. The contract allows that (None:
/// "the store keeps none"), and the pipeline's verification then reads the object back and hashes
/// it; so here a large object must be whole, and `verify` must accept it and only it. (s3s-fs also
/// reports a stale single-part checksum when a multipart upload replaces a single-part object
/// under the same key; that case fails verification safely, and is left out here.)
async fn large(b: &Backend<'_>) {
    use archiver_engine::pipeline::verify::{verify, Verification};
    let n = b.name;
    for (i, seed) in [40u64, 42].into_iter().enumerate() {
        let key = format!("lg/big{i}.jsonl.zst");
        let big = body(seed, b.large_len);
        let c = b.store.put(&key, big.clone()).await.unwrap_or_else(|e| panic!("[{n}] put {key}: {e}"));
        assert_eq!(c, (b.expected_checksum)(&big), "[{n}] put {key}: returned checksum");
        let meta = b.store.head(&key).await.unwrap().unwrap_or_else(|| panic!("[{n}] head {key}: None after put"));
        assert_eq!(meta.size, big.len() as u64, "[{n}] head {key}: size");
        if let Some(stated) = &meta.checksum {
            assert_eq!(stated, &c, "[{n}] head {key}: a stated checksum must be the one put returned");
        }
        assert!(b.store.get(&key).await.unwrap().unwrap() == big, "[{n}] get {key}: bytes differ");
        let sha = archiver_engine::storage::sha256(&big);
        assert_eq!(verify(b.store, &key, big.len() as u64, &c, &sha).await.unwrap(), Verification::Verified);
        let other = archiver_engine::storage::sha256(b"something else");
        let wrong = format!("{}x", &c[..c.len() - 1]);
        assert_ne!(
            verify(b.store, &key, big.len() as u64, &wrong, &other).await.unwrap(),
            Verification::Verified,
            "[{n}] {key}: verification must reject a body that is not the one encoded"
        );
        // Replaced by a small body: an ordinary object again.
        put_and_verify(b, &key, &body(41, 777)).await;
    }
    assert_eq!(b.store.list("lg/").await.unwrap(), ["lg/big0.jsonl.zst", "lg/big1.jsonl.zst"], "[{n}] list");
}

/// No temporary files, upload parts or other debris among the objects: the backing directory
/// holds exactly the listed keys.
async fn nothing_left_behind(b: &Backend<'_>) {
    let listed = b.store.list("").await.unwrap();
    let files: Vec<String> = snapshot(&b.objects_dir).into_keys().collect();
    assert_eq!(files, listed, "[{}] files in {} vs list(\"\")", b.name, b.objects_dir.display());
}

// ---------------------------------------------------------------------------------------------
// Local directory

fn local_checksum(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let store = LocalStore::new(root.clone(), PREFIX).unwrap();
    let sibling = LocalStore::new(root.clone(), SIBLING_PREFIX).unwrap();
    let unprefixed = LocalStore::new(root.clone(), "").unwrap();
    let backend = Backend {
        name: "local",
        store: &store,
        sibling: &sibling,
        unprefixed: &unprefixed,
        objects_dir: root.join(PREFIX),
        backing_root: dir.path().to_path_buf(),
        expected_checksum: Box::new(local_checksum),
        large_len: 11 * 1024 * 1024 + 12_345,
    };
    conformance(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_check_names_an_unusable_directory() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the directory should be.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let store = LocalStore::new(file.clone(), PREFIX).unwrap();
    match store.check().await {
        Err(StorageError::Config(msg)) => {
            assert!(msg.contains(&file.display().to_string()), "message should name the directory: {msg}");
            assert!(msg.contains("is a file, not a directory"), "message should say what is wrong: {msg}");
        }
        other => panic!("check on an unusable directory: expected a Config error, got {other:?}"),
    }
}

/// A key that is a directory on disk (`a` while `a/x` exists) is a missing key, as on S3: head and
/// get say None, delete succeeds and removes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_a_directory_is_not_an_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().to_path_buf(), PREFIX).unwrap();
    store.put("a/x", body(1, 10)).await.unwrap();
    assert_eq!(store.head("a").await.unwrap(), None);
    assert_eq!(store.get("a").await.unwrap(), None);
    store.delete("a").await.unwrap();
    assert_eq!(store.list("").await.unwrap(), ["a/x"]);
    assert_eq!(store.get("a/x").await.unwrap(), Some(body(1, 10)));
}

// ---------------------------------------------------------------------------------------------
// S3 (s3s-fs)

const MINIMAL_DATABASES: &str = "databases:\n  - name: app\n    host: localhost\n    user: u\n    tables:\n      - name: audit\n        timestamp_column: created_at\n        primary_key: id\n";

/// An `S3Config` as the configuration file would give it: the server's `s3:` section, possibly
/// edited, plus `extra` lines inside that section.
fn s3_config(s3_yaml: &str, extra: &str) -> S3Config {
    let yaml = format!("{s3_yaml}{extra}{MINIMAL_DATABASES}");
    config::parse("conformance.yaml", &yaml, &|_| None)
        .unwrap_or_else(|e| panic!("config: {e}\n{yaml}"))
        .config
        .s3
        .expect("s3 section")
}

const PART: usize = 5 * 1024 * 1024;

/// What S3 states for a body uploaded by `S3Store` with 5 MiB parts: the SHA-256 in base64, or for
/// a multipart upload the SHA-256 of the parts' SHA-256s followed by `-<parts>`.
fn s3_checksum(body: &[u8]) -> String {
    if body.len() > PART {
        let mut digests = Vec::new();
        for part in body.chunks(PART) {
            digests.extend_from_slice(&Sha256::digest(part));
        }
        format!("{}-{}", b64(&Sha256::digest(&digests)), body.len().div_ceil(PART))
    } else {
        b64(&Sha256::digest(body))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conformance() {
    let server = S3Server::start().await;
    let threshold = "  multipart_threshold_mb: 5\n";
    let store = S3Store::new(&s3_config(&server.yaml(PREFIX), threshold)).await.unwrap();
    let sibling = S3Store::new(&s3_config(&server.yaml(SIBLING_PREFIX), threshold)).await.unwrap();
    let unprefixed = S3Store::new(&s3_config(&server.yaml("''"), threshold)).await.unwrap();
    let large_len = 11 * 1024 * 1024;
    // 11 MiB in 5 MiB parts is three parts: the composite form `<base64>-3`.
    assert!(s3_checksum(&body(0, large_len)).ends_with("-3"));
    let backend = Backend {
        name: "s3",
        store: &store,
        sibling: &sibling,
        unprefixed: &unprefixed,
        objects_dir: server.bucket_dir().join(PREFIX),
        backing_root: server.dir.path().to_path_buf(),
        expected_checksum: Box::new(s3_checksum),
        large_len,
    };
    assert_eq!(store.describe(), format!("s3://{}/{PREFIX}", server.bucket));
    conformance(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_check_names_a_missing_bucket() {
    let server = S3Server::start().await;
    let yaml = server.yaml(PREFIX).replace(&format!("bucket: {}\n", server.bucket), "bucket: no-such-bucket\n");
    let store = S3Store::new(&s3_config(&yaml, "")).await.unwrap();
    match store.check().await {
        Err(StorageError::Config(msg)) => {
            assert!(msg.contains("no-such-bucket"), "message should name the bucket: {msg}");
            assert!(msg.contains("does not exist"), "message should say what is wrong: {msg}");
        }
        other => panic!("check with a missing bucket: expected a Config error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_check_refuses_a_wrong_secret_key() {
    let server = S3Server::start().await;
    let yaml = server
        .yaml(PREFIX)
        .replace(&format!("secret_access_key: {}\n", server.secret_key), "secret_access_key: wrong-secret\n");
    assert_ne!(yaml, server.yaml(PREFIX), "the secret was replaced");
    let store = S3Store::new(&s3_config(&yaml, "")).await.unwrap();
    // s3s-fs checks SigV4 signatures and answers 403, as S3 does.
    match store.check().await {
        Err(StorageError::Config(msg)) => {
            assert!(msg.contains(&server.bucket), "message should name the bucket: {msg}");
            assert!(msg.contains("credentials"), "message should point at the credentials: {msg}");
            assert!(!msg.contains("wrong-secret"), "message must not contain the secret: {msg}");
        }
        other => panic!("check with a wrong secret key: expected a Config error, got {other:?}"),
    }
    // And nothing can be written with it.
    assert!(store.put("x", Bytes::from_static(b"x")).await.is_err(), "put with a wrong secret key");
    assert!(snapshot(&server.bucket_dir()).is_empty(), "nothing written with a wrong secret key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_check_names_an_unreachable_endpoint() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let yaml = format!(
        "s3:\n  endpoint: {endpoint}\n  bucket: archive\n  prefix: {PREFIX}\n  access_key_id: k\n  secret_access_key: s\n"
    );
    let store = S3Store::new(&s3_config(&yaml, "")).await.unwrap();
    match store.check().await {
        Err(StorageError::Config(msg)) => assert!(msg.contains(&endpoint), "message should name the endpoint: {msg}"),
        other => panic!("check with an unreachable endpoint: expected a Config error, got {other:?}"),
    }
}
