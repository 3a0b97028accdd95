//! Reads from a streaming replica, and the governor's replica gate, against the real replica that
//! `testkit/replica.sh` makes of the local PostgreSQL. The tests share that replica and one of
//! them pauses its replay, so they run one at a time (`REPLICA`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use archiver_engine::pipeline::{Hooks, PipelineError, Point};
use archiver_proto::WorkItem;
use archiver_testkit::config::Storage;
use archiver_testkit::{replica, TestDb};
use async_trait::async_trait;
use common::*;
use tokio::sync::Mutex;

static REPLICA: Mutex<()> = Mutex::const_new(());

/// The test database on the primary, with `read_replica` on the replica.
fn on_replica(db: &TestDb) -> Database {
    Database::of(db).set("read_replica", format!("{{host: 127.0.0.1, port: {}}}", replica::port()))
}

/// A database of the test's own with `rows` seeded rows, on the primary and (once replicated)
/// on the replica, and a configuration that reads it on the replica with `batch_size` and the
/// governor section `governor`.
async fn setup(rows: u64, batch_size: u32, governor: &str) -> (TestDb, archiver_testkit::S3Server, sqlx::PgPool, ConfigBuilder) {
    let (db, s3) = s3_and_db().await;
    seeded(&db, rows).await;
    let standby = replica::connect(&db.name).await;
    replica::caught_up(&db.pool, &standby).await;
    let builder = ConfigBuilder::new()
        .storage(Storage::s3(&s3, ""))
        .set_default("retention_days", 90)
        .set_default("batch_size", batch_size)
        .set_default("range_interval", "400d")
        .set_default("governor", governor)
        .database(on_replica(&db).table(audit_table()));
    (db, s3, standby, builder)
}

/// Tuples read through the (created_at, id) index of `audit_log` on one server.
async fn read_through_ts_index(pool: &sqlx::PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT coalesce(sum(idx_tup_read), 0)::int8 FROM pg_stat_user_indexes WHERE indexrelname = 'audit_log_created_at_id'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    n
}

#[tokio::test]
async fn batches_are_read_on_the_replica_and_deleted_on_the_primary() {
    let _one = REPLICA.lock().await;
    let (db, _s3, standby, builder) = setup(3_000, 200, "{budget: 1.0, interval: 200ms}").await;
    let config = load(&builder);
    let before = snapshot(&db, "audit_log").await;
    let summary = run(&config, opts(2)).await;
    assert!(summary.all_finished(), "{summary}");
    let after = snapshot(&db, "audit_log").await;
    let archived = assert_exactly_once(&before, &after, &*open_store(&config).await).await;
    // The replica's statistics arrive within a second or so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (read_through_ts_index(&standby).await as usize) < archived.len() {
        assert!(Instant::now() < deadline, "the batches were not read on the replica");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let on_primary = read_through_ts_index(&db.pool).await as usize;
    assert!(on_primary < archived.len() / 2, "the primary served only planning, not {on_primary} of {} rows", archived.len());
}

/// Updates the first row of batch 0 on the primary once the replica has served it.
struct UpdateAfterRead(sqlx::PgPool, std::sync::atomic::AtomicBool);

#[async_trait]
impl Hooks for UpdateAfterRead {
    async fn at(&self, point: Point, _item: &WorkItem, seq: i32) -> Result<(), PipelineError> {
        if point == Point::Extracted && seq == 0 && !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            sqlx::query("UPDATE audit_log SET action = 'CHANGED' WHERE id = (SELECT id FROM audit_log ORDER BY created_at, id LIMIT 1)")
                .execute(&self.0)
                .await
                .unwrap();
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_row_changed_on_the_primary_after_the_replica_served_it_is_not_deleted() {
    let _one = REPLICA.lock().await;
    let (db, _s3, _standby, builder) = setup(1_000, 100, "{budget: 1.0, interval: 200ms}").await;
    let config = load(&builder);
    let (oldest,): (i64,) = sqlx::query_as("SELECT id FROM audit_log ORDER BY created_at, id LIMIT 1").fetch_one(&db.pool).await.unwrap();
    let mut o = opts(1);
    o.hooks = Arc::new(UpdateAfterRead(db.pool.clone(), Default::default()));
    let summary = run(&config, o).await;
    let (action,): (String,) =
        sqlx::query_as("SELECT action FROM audit_log WHERE id = $1").bind(oldest).fetch_one(&db.pool).await.expect("the changed row stays in the table");
    assert_eq!(action, "CHANGED", "{summary}");
    let store = open_store(&config).await;
    let old = archived(&*store)
        .await
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .find(|r| r["id"] == oldest)
        .expect("its old version was archived");
    assert_ne!(old["action"], "CHANGED");
    assert!(summary.to_string().contains("archived rows were not deleted"), "{summary}");
}

#[tokio::test]
async fn paused_replay_holds_the_writes_until_it_resumes() {
    let _one = REPLICA.lock().await;
    let recorder = archiver_engine::observe::install_recorder();
    let (db, _s3, standby, builder) = setup(6_000, 100, "{budget: 0.5, interval: 100ms, max_replica_lag: 5s}").await;
    let config = load(&builder);
    let before = snapshot(&db, "audit_log").await;
    let run = tokio::spawn({
        let config = config.clone();
        async move { run(&config, opts(1)).await }
    });
    let remaining = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log").fetch_one(&db.pool).await.unwrap();
        n
    };
    while remaining().await == before.len() as i64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query("SELECT pg_wal_replay_pause()").execute(&standby).await.unwrap();
    let paused = format!("archiver_governor_state{{database=\"{}\",state=\"paused\"}} 1", db.name);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !recorder.render().contains(&paused) {
        assert!(Instant::now() < deadline, "the governor never paused:\n{}", recorder.render());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = remaining().await;
    // `status` shows what the governors see: paused by the replica, one process archiving.
    let tables = archiver_coordinator::distributed::status(&config, &Default::default()).await.unwrap();
    let g = tables.values().next().and_then(|t| t.governor.clone()).expect("the governor is on");
    assert_eq!((g.state, g.reason, g.processes), ("paused", "replica_stalled", 1), "{g:?}");
    assert!(g.detail.contains("replay is paused"), "{g:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = remaining().await;
    sqlx::query("SELECT pg_wal_replay_resume()").execute(&standby).await.unwrap();
    assert_eq!(held, still, "no row was deleted while replay was paused");
    assert!(still > 0, "the run had work left when replay was paused");
    let summary = run.await.unwrap();
    assert!(summary.all_finished(), "{summary}");
    assert_exactly_once(&before, &snapshot(&db, "audit_log").await, &*open_store(&config).await).await;
}
