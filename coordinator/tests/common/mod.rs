//! Shared helpers of the coordinator's integration tests; `distributed_env` those of the
//! distributed-mode tests.
#![allow(dead_code)]

pub mod distributed_env;
pub mod restore_env;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use archiver_coordinator::standalone::{self, Outcome, RunOptions};
use archiver_coordinator::summary::Summary;
use archiver_proto::{manifest::Manifest, Compression, WorkItem};
pub use archiver_testkit::config::{ConfigBuilder, Database, Queue, Storage, Table};
use archiver_testkit::{S3Server, TestDb};
use archiver_engine::config::{self, Config};
use archiver_engine::pipeline::{encode, Hooks, PipelineError, Point};
use archiver_engine::storage::{self, ObjectStore};
use async_trait::async_trait;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub fn parse(yaml: &str) -> Config {
    config::parse("test.yaml", yaml, &|_| None).unwrap_or_else(|e| panic!("{e}\n{yaml}")).config
}

/// The tests' configuration: `storage`, `retention_days: 90`, `batch_size: 1000`, a governor
/// budget no test waits on, a 3 s lease
/// and the database `db` (a `&TestDb` or a `Database`), to which tables are added.
pub fn test_config(db: impl Into<Database>, storage: impl Into<Storage>) -> ConfigBuilder {
    ConfigBuilder::new()
        .storage(storage)
        .set_default("retention_days", 90)
        .set_default("batch_size", 1000)
        // The governor runs (chunked, paced deletes) with a budget no test waits on.
        .set_default("governor", "{budget: 8.0, interval: 200ms}")
        .checkpoint("lease_duration", "3s")
        .database(db)
}

/// What `builder` writes, parsed.
pub fn load(builder: &ConfigBuilder) -> Config {
    parse(&builder.yaml())
}

/// A configuration written to a file, for the binaries: its directory and its path.
pub fn config_file(builder: &ConfigBuilder) -> (tempfile::TempDir, String) {
    let (dir, path) = builder.write_temp();
    let path = path.to_str().expect("a UTF-8 temporary path").to_string();
    (dir, path)
}

/// The table `seeded` fills.
pub fn audit_table() -> Table {
    Table::audit("audit_log")
}

pub async fn run(config: &Config, opts: RunOptions) -> Summary {
    match standalone::run(config, opts, CancellationToken::new()).await.expect("run") {
        Outcome::Ran(s) => s,
        Outcome::DryRun { .. } => panic!("not a dry run"),
    }
}

pub fn opts(workers: usize) -> RunOptions {
    RunOptions { workers, progress: false, ..RunOptions::default() }
}

/// Every row of a table as `row_to_json`, by id.
pub async fn snapshot(db: &TestDb, table: &str) -> BTreeMap<String, Value> {
    let rows: Vec<(String, Value)> =
        sqlx::query_as(&format!("SELECT id::text, row_to_json(t)::jsonb FROM {table} t")).fetch_all(&db.pool).await.unwrap();
    rows.into_iter().collect()
}

/// Every data object under the store (manifests excluded), decoded: (key, rows).
pub async fn archived(store: &dyn ObjectStore) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for key in store.list("").await.unwrap() {
        if key.contains("_manifests/") {
            continue;
        }
        let compression = if key.ends_with(".jsonl.zst") {
            Compression::Zstd
        } else if key.ends_with(".jsonl.gz") {
            Compression::Gzip
        } else {
            panic!("unexpected object {key}");
        };
        let body = store.get(&key).await.unwrap().unwrap();
        let text = encode::decode(compression, &body).unwrap();
        let rows = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        out.push((key, rows));
    }
    out
}

pub async fn manifests(store: &dyn ObjectStore) -> Vec<Manifest> {
    let mut out = Vec::new();
    for key in store.list("").await.unwrap() {
        if key.contains("_manifests/") {
            out.push(serde_json::from_slice(&store.get(&key).await.unwrap().unwrap()).unwrap());
        }
    }
    out
}

/// The central claim: every row that left the table is in the archive exactly once, identical
/// to what it was, and every row of `before` is either still in the table or archived.
/// Returns the archived rows by id.
pub async fn assert_exactly_once(
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
    store: &dyn ObjectStore,
) -> BTreeMap<String, Value> {
    check_archive(before, after, store, true).await
}

/// After a crash: every row that left the table is archived, unchanged, once; rows of an object
/// that was uploaded but whose delete had not happened yet may be in both places.
pub async fn assert_nothing_lost(before: &BTreeMap<String, Value>, after: &BTreeMap<String, Value>, store: &dyn ObjectStore) {
    check_archive(before, after, store, false).await;
}

async fn check_archive(
    before: &BTreeMap<String, Value>,
    after: &BTreeMap<String, Value>,
    store: &dyn ObjectStore,
    finished: bool,
) -> BTreeMap<String, Value> {
    let mut archived_rows = BTreeMap::new();
    for (key, rows) in archived(store).await {
        for row in rows {
            let id = row["id"].to_string();
            assert!(archived_rows.insert(id.clone(), row).is_none(), "row {id} archived twice (again in {key})");
        }
    }
    for (id, row) in before {
        match (after.get(id), archived_rows.get(id)) {
            (Some(_), Some(_)) if finished => panic!("row {id} is both archived and still in the table"),
            (Some(_), Some(_)) => {}
            (None, None) => panic!("row {id} was LOST: gone from the table and not in the archive"),
            (None, Some(a)) => assert_eq!(a, row, "archived row {id} differs from the original"),
            (Some(_), None) => {}
        }
    }
    for id in archived_rows.keys() {
        assert!(before.contains_key(id), "archive holds row {id} that never existed");
    }
    archived_rows
}

pub async fn open_store(config: &Config) -> Arc<dyn ObjectStore> {
    storage::open(config).await.unwrap()
}

pub async fn seeded(db: &TestDb, rows: u64) {
    archiver_testkit::seed::create_audit_table(&db.pool, "public", "audit_log").await.unwrap();
    archiver_testkit::seed::insert_rows(&db.pool, "public", "audit_log", rows, 200.0, 0.0).await.unwrap();
}

/// The keys of a store with their checksums.
pub async fn listing(store: &dyn ObjectStore) -> BTreeSet<(String, Option<String>)> {
    let mut out = BTreeSet::new();
    for k in store.list("").await.unwrap() {
        let meta = store.head(&k).await.unwrap().unwrap();
        out.insert((k, meta.checksum));
    }
    out
}

/// Emulates a crash of the worker at `point` of batch `seq` of the first item that gets there:
/// the item stops dead, leaving its lease and whatever it wrote.
pub struct CrashAt {
    pub point: Point,
    pub seq: i32,
    pub fired: AtomicBool,
}

impl CrashAt {
    pub fn new(point: Point, seq: i32) -> Arc<Self> {
        Arc::new(CrashAt { point, seq, fired: AtomicBool::new(false) })
    }
}

#[async_trait]
impl Hooks for CrashAt {
    async fn at(&self, point: Point, _item: &WorkItem, seq: i32) -> Result<(), PipelineError> {
        if point == self.point && seq == self.seq && !self.fired.swap(true, Ordering::SeqCst) {
            return Err(PipelineError::Crashed(point));
        }
        Ok(())
    }
}

/// Runs `bin args` with `ARCHIVER_CRASH_AT=crash_at` (a test build's fault injection) and checks
/// that the process died by a signal there, as a crashed process would.
pub async fn crash_process(bin: &str, args: &[&str], crash_at: &str) {
    let status = tokio::process::Command::new(bin)
        .args(args)
        .env("ARCHIVER_CRASH_AT", crash_at)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.code().is_none(), "{bin} should die by a signal at {crash_at}: {status:?}");
}

pub async fn s3_and_db() -> (TestDb, S3Server) {
    let (db, s3) = tokio::join!(TestDb::new(), S3Server::start());
    (db, s3)
}

/// Manual (not auto-) VACUUMs of `table` so far, waiting up to 5 s for at least `want`, since
/// statistics reach other sessions with a delay.
pub async fn manual_vacuums(db: &TestDb, table: &str, want: i64) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = $1")
            .bind(table)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if n >= want || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Two audit tables: `audit_vacuumed` with `vacuum_type: standard` on, `audit_plain` without.
pub fn vacuum_tables() -> [Table; 2] {
    [
        Table::audit("audit_vacuumed").set("vacuum_after_archive", true).set("vacuum_type", "standard"),
        Table::audit("audit_plain"),
    ]
}

pub async fn seed_vacuum_tables(db: &TestDb, rows: u64) {
    for t in ["audit_vacuumed", "audit_plain"] {
        archiver_testkit::seed::create_audit_table(&db.pool, "public", t).await.unwrap();
        archiver_testkit::seed::insert_rows(&db.pool, "public", t, rows, 200.0, 0.0).await.unwrap();
    }
}
