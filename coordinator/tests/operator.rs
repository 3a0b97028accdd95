//! Operator-grade behaviour: what must never be archived is refused, odd values in the database do
//! not stop a run, a run right after a crash resumes at once, a refused object store stops the
//! run with one line, and coarser partitions give fewer objects with the same guarantees.

mod common;

use std::sync::Arc;

use archiver_engine::pipeline::{Hooks, PipelineError, Point};
use archiver_proto::WorkItem;
use archiver_testkit::config::Storage;
use archiver_testkit::seed;
use async_trait::async_trait;
use common::*;

#[tokio::test]
async fn system_catalogs_views_and_foreign_tables_are_refused_before_anything_is_read() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 100).await;
    sqlx::raw_sql(
        "CREATE ROLE expired_role_for_test VALID UNTIL '2000-01-01';
         CREATE VIEW audit_view AS SELECT * FROM audit_log;
         CREATE MATERIALIZED VIEW audit_matview AS SELECT * FROM audit_log;",
    )
    .execute(&db.pool)
    .await
    .ok();
    let (roles_before,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_authid").fetch_one(&db.pool).await.unwrap();
    let builder = test_config(&db, Storage::s3(&s3, "")).tables([
        Table::new("pg_authid", "rolvaliduntil", "oid").schema("pg_catalog"),
        Table::audit("audit_view"),
        Table::audit("audit_matview"),
        audit_table(),
    ]);
    let err = match archiver_coordinator::standalone::run(&load(&builder), opts(1), Default::default()).await {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("the run must be refused"),
    };
    assert!(err.contains("pg_catalog.pg_authid") && err.contains("system catalogs are never archived"), "{err}");
    assert!(err.contains("audit_view: is a view"), "{err}");
    assert!(err.contains("audit_matview: is a materialized view"), "{err}");
    let (roles_after,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_authid").fetch_one(&db.pool).await.unwrap();
    assert_eq!(roles_before, roles_after);
    let (store_made,): (bool,) =
        sqlx::query_as("SELECT to_regclass('archiver.work_items') IS NOT NULL").fetch_one(&db.pool).await.unwrap();
    assert!(!store_made, "nothing was written before the refusal");
    assert!(open_store(&load(&builder)).await.list("").await.unwrap().is_empty());
    let _ = sqlx::query("DROP ROLE expired_role_for_test").execute(&db.pool).await;
}

#[tokio::test]
async fn infinite_and_ancient_timestamps_never_stop_a_run() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 300).await;
    seed::create_audit_table(&db.pool, "public", "audit_odd").await.unwrap();
    // Ids apart from audit_log's: the archive check reads both tables' objects by id.
    sqlx::query("ALTER SEQUENCE audit_odd_id_seq RESTART 1000000").execute(&db.pool).await.unwrap();
    seed::insert_rows(&db.pool, "public", "audit_odd", 200, 200.0, 0.0).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO audit_odd (created_at, user_id, action, table_name, record_id) VALUES
            ('-infinity', 1, 'x', 't', 1), ('-infinity', 1, 'x', 't', 2),
            ('infinity', 1, 'x', 't', 3), ('9999-12-31 23:59:59+00', 1, 'x', 't', 4),
            ('0044-03-15 12:00:00+00 BC', 1, 'x', 't', 5), ('1900-01-01 00:00:00+00', 1, 'x', 't', 6)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let builder = test_config(&db, Storage::s3(&s3, "")).tables([Table::audit("audit_odd"), audit_table()]);
    let config = load(&builder);
    let before = snapshot(&db, "audit_odd").await;
    let summary = run(&config, opts(2)).await;
    assert!(!summary.all_finished(), "rows were left, so the run says so: {summary}");
    let text = summary.to_string();
    assert!(text.contains("2 rows have created_at = -infinity and are left in the table"), "{text}");
    // The other table is archived all the same.
    let (plain_left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM audit_log WHERE created_at < now() - interval '90 days'").fetch_one(&db.pool).await.unwrap();
    assert_eq!(plain_left, 0, "{text}");
    // Of the odd table, only what no range can name or what is not old enough stays.
    let left: Vec<(String,)> = sqlx::query_as(
        "SELECT created_at::text FROM audit_odd WHERE created_at < now() - interval '90 days' ORDER BY created_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(left, vec![("-infinity".to_string(),), ("-infinity".to_string(),)]);
    let after = snapshot(&db, "audit_odd").await;
    // The store as seen below this table's prefix: the check reads every object it lists.
    let odd_only = Storage::s3(&s3, &format!("{}/public.audit_odd", db.name));
    let store = open_store(&load(&test_config(&db, odd_only).table(audit_table()))).await;
    let archived = assert_exactly_once(&before, &after, &*store).await;
    assert!(archived.values().any(|r| r["record_id"] == 5), "the BC row was archived");
    assert!(after.values().any(|r| r["record_id"] == 4), "year 9999 is not old enough");
}

#[tokio::test]
async fn a_run_started_right_after_a_crash_takes_the_dead_process_items_over_at_once() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 2_000).await;
    // The default lease (60 s): only the dead process's vanished presence lets the next run in.
    let builder = ConfigBuilder::new()
        .storage(Storage::s3(&s3, ""))
        .set_default("retention_days", 90)
        .set_default("batch_size", 200)
        .set_default("range_interval", "400d")
        .set_default("governor", "{budget: 8.0}")
        .database(&db)
        .table(audit_table());
    let (_dir, path) = config_file(&builder);
    let before = snapshot(&db, "audit_log").await;
    crash_process(env!("CARGO_BIN_EXE_archiver-coordinator"), &["--config", &path, "run", "--workers", "1"], "recorded:2").await;
    let (running,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM archiver.work_items WHERE state = 'running' AND lease_until > now()")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(running, 1, "the dead process left its item under a live lease");
    let summary = run(&load(&builder), opts(1)).await;
    assert!(summary.all_finished(), "{summary}");
    assert_exactly_once(&before, &snapshot(&db, "audit_log").await, &*open_store(&load(&builder)).await).await;
}

/// An S3 server of the test's own whose credentials can be changed under a running archiver, as
/// when an operator rotates keys and the archiver's are no longer valid.
struct RotatingS3 {
    dir: tempfile::TempDir,
    port: u16,
    child: std::sync::Mutex<std::process::Child>,
}

impl RotatingS3 {
    fn start(root: &std::path::Path, port: u16, secret: &str) -> std::process::Child {
        let child = std::process::Command::new(archiver_testkit::s3s_fs_bin())
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", "testkey", "--secret-key", secret])
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        child
    }

    fn new() -> RotatingS3 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("archive")).unwrap();
        let port = archiver_testkit::free_port();
        let child = Self::start(dir.path(), port, "the-first-secret");
        RotatingS3 { dir, port, child: std::sync::Mutex::new(child) }
    }

    fn storage(&self) -> archiver_testkit::config::S3Storage {
        archiver_testkit::config::S3Storage {
            endpoint: format!("http://127.0.0.1:{}", self.port),
            bucket: "archive".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            access_key_id: "testkey".into(),
            secret_access_key: "the-first-secret".into(),
        }
    }
}

impl Drop for RotatingS3 {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Rotates the server's secret when the first batch was read: every later call is refused.
struct Rotate(Arc<RotatingS3>, std::sync::atomic::AtomicBool);

#[async_trait]
impl Hooks for Rotate {
    async fn at(&self, point: Point, _item: &WorkItem, _seq: i32) -> Result<(), PipelineError> {
        if point == Point::Extracted && !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let s3 = &self.0;
            let mut child = s3.child.lock().unwrap();
            child.kill().unwrap();
            child.wait().unwrap();
            *child = RotatingS3::start(s3.dir.path(), s3.port, "a-rotated-secret");
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_store_that_refuses_us_stops_the_run_with_one_line_and_fails_no_item() {
    let db = archiver_testkit::TestDb::new().await;
    seeded(&db, 600).await;
    let s3 = Arc::new(RotatingS3::new());
    let builder = test_config(&db, s3.storage()).set_default("range_interval", "20d").table(audit_table());
    let config = load(&builder);
    let before = snapshot(&db, "audit_log").await;
    let mut o = opts(2);
    o.hooks = Arc::new(Rotate(s3.clone(), Default::default()));
    let summary = run(&config, o).await;
    let stopped = summary.stopped.clone().unwrap_or_else(|| panic!("the run did not stop early: {summary}"));
    assert!(stopped.contains("s3.secret_access_key") && stopped.contains("s3://archive/"), "{stopped}");
    assert!(stopped.contains("HTTP 403"), "{stopped}");
    let (failed, pending): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'failed'), count(*) FILTER (WHERE state = 'pending') FROM archiver.work_items",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(failed, 0, "no item is blamed for the store's refusal: {summary}");
    assert!(pending >= 2, "the items wait for the next run");
    assert_eq!(snapshot(&db, "audit_log").await, before, "nothing was deleted");
}

#[tokio::test]
async fn month_partitions_give_one_object_per_month_with_the_same_guarantees() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 1_000).await;
    let builder = test_config(&db, Storage::s3(&s3, "")).set_default("batch_size", 100_000).table(audit_table().set("partition", "month"));
    let config = load(&builder);
    let before = snapshot(&db, "audit_log").await;
    let summary = run(&config, opts(2)).await;
    assert!(summary.all_finished(), "{summary}");
    let after = snapshot(&db, "audit_log").await;
    let store = open_store(&config).await;
    assert_exactly_once(&before, &after, &*store).await;
    let data: Vec<String> = store.list("").await.unwrap().into_iter().filter(|k| k.ends_with(".jsonl.zst")).collect();
    let archived_months: std::collections::BTreeSet<String> = before
        .values()
        .filter(|r| !after.contains_key(&r["id"].to_string()))
        .map(|r| r["created_at"].as_str().unwrap()[..7].to_string())
        .collect();
    assert_eq!(data.len(), archived_months.len(), "one object per month: {data:?}");
    for k in &data {
        assert!(k.contains("/month=") && !k.contains("/day="), "{k}");
    }
}

async fn start_error(builder: &ConfigBuilder) -> String {
    match archiver_coordinator::standalone::run(&load(builder), opts(1), Default::default()).await {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("the run must not start"),
    }
}

#[tokio::test]
async fn start_up_errors_name_the_place_the_cause_and_what_to_do() {
    let (db, s3) = s3_and_db().await;
    let closed = archiver_testkit::free_port();
    let nowhere = Database::new("nowhere", "127.0.0.1", closed, "postgres").table(audit_table());
    let err = start_error(&ConfigBuilder::new().storage(Storage::s3(&s3, "")).database(nowhere)).await;
    assert!(err.contains(&format!("127.0.0.1:{closed}/nowhere")) && err.contains("refused"), "{err}");
    assert!(!err.contains("pool timed out"), "{err}");

    seeded(&db, 10).await;
    let wrong = archiver_testkit::config::S3Storage { secret_access_key: "not-the-secret".into(), ..archiver_testkit::config::S3Storage::of(&s3, "") };
    let err = start_error(&test_config(&db, wrong).table(audit_table())).await;
    assert!(err.contains("denied") && err.contains("s3.secret_access_key") && err.contains(&s3.endpoint), "{err}");
}
