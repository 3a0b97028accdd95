//! Helpers of the restore and hold tests: rows as JSON, restore arguments, a hook that runs SQL
//! between a batch's record and its delete.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use archiver_coordinator::archive;
use archiver_coordinator::cli::RestoreArgs;
use archiver_engine::config::Config;
use archiver_engine::pipeline::{Hooks, PipelineError, Point};
use archiver_proto::WorkItem;
use archiver_testkit::config::{ConfigBuilder, Storage};
use archiver_testkit::{S3Server, TestDb};
use async_trait::async_trait;
use serde_json::Value;

use super::{audit_table, load, opts, run, seeded, snapshot, test_config};

/// Seeds `rows` rows of `audit_log`, archives the old ones to `s3`; the configuration and the
/// archived rows as they were.
pub async fn archived_audit_log(db: &TestDb, s3: &S3Server, rows: u64) -> (ConfigBuilder, BTreeMap<String, Value>) {
    seeded(db, rows).await;
    let before = snapshot(db, "audit_log").await;
    let builder = test_config(db, Storage::s3(s3, "")).table(audit_table());
    assert!(run(&load(&builder), opts(2)).await.all_finished());
    (builder, archived_since(db, &before).await)
}

/// Rows of `table` as `row_to_json`, by `key`.
pub async fn rows(db: &TestDb, table: &str, key: &str) -> BTreeMap<String, Value> {
    let q = format!("SELECT {key}::text, row_to_json(t)::jsonb FROM {table} t");
    sqlx::query_as::<_, (String, Value)>(&q)
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Asserts two row sets are equal, naming the first difference (not printing thousands of rows).
pub fn same(found: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>) {
    for (id, row) in want {
        assert_eq!(found.get(id), Some(row), "row {id}");
    }
    assert_eq!(found.len(), want.len(), "rows beyond those wanted");
}

/// The rows a run archived: in `before`, gone from the table now.
pub async fn archived_since(db: &TestDb, before: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let now = snapshot(db, "audit_log").await;
    before
        .iter()
        .filter(|(id, _)| !now.contains_key(*id))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn args(config_db: &str, table: &str) -> RestoreArgs {
    RestoreArgs {
        database: config_db.into(),
        table: table.into(),
        from: None,
        to: None,
        into: None,
        on_conflict: "skip".into(),
        skip_damaged: false,
        dry_run: false,
    }
}

pub async fn restore(config: &Config, a: RestoreArgs) -> ExitCode {
    archive::restore(config, a).await.expect("restore")
}

pub async fn active_holds(db: &TestDb) -> Vec<(String, String)> {
    sqlx::query_as("SELECT table_name, reason FROM archiver.holds WHERE released_at IS NULL")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// Runs `sql` (binds: the item's range start and end) once, at the first batch of the first
/// item, between the batch's record and its delete.
pub struct SqlAtFirstBatch {
    pool: sqlx::PgPool,
    sql: &'static str,
    pub done: std::sync::atomic::AtomicBool,
}

impl SqlAtFirstBatch {
    pub fn new(db: &TestDb, sql: &'static str) -> Arc<Self> {
        Arc::new(SqlAtFirstBatch { pool: db.pool.clone(), sql, done: Default::default() })
    }
}

#[async_trait]
impl Hooks for SqlAtFirstBatch {
    async fn at(&self, point: Point, item: &WorkItem, seq: i32) -> Result<(), PipelineError> {
        if point == Point::Recorded && seq == 0 && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            sqlx::query(self.sql).bind(item.range_start).bind(item.range_end).execute(&self.pool).await.unwrap();
        }
        Ok(())
    }
}

/// The item's first row (in its first batch, recorded and not yet deleted) changes.
pub const CHANGE_FIRST_ROW: &str = "UPDATE audit_log SET action = 'changed after read' WHERE id =
    (SELECT id FROM audit_log WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, id LIMIT 1)";

/// A legal hold on the item's whole range arrives.
pub const HOLD_THE_ITEM: &str = "INSERT INTO archiver.holds (database, schema_name, table_name, range_start, range_end, reason, created_by)
    VALUES (current_database(), 'public', 'audit_log', $1, $2, 'placed while the item runs', 'test')";

