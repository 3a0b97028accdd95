//! End-to-end tests of standalone mode against real PostgreSQL and a real S3 server (s3s-fs).
//! Each test has its own database and its own S3 server, so they run in parallel.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use archiver_coordinator::standalone::{self, Outcome, RunOptions};
use archiver_testkit::TestDb;
use archiver_engine::pipeline::{Hooks, PipelineError, Point};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::*;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_every_old_row_exactly_once_and_nothing_else() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 12_000).await;
    sqlx::query("INSERT INTO audit_log (created_at, user_id, action, table_name, record_id) VALUES (NULL, 1, 'X', 't', 1), (NULL, 2, 'Y', 't', 2)")
        .execute(&db.pool)
        .await
        .unwrap();
    let config = parse(&yaml(&db, &s3.yaml("archives/"), "", AUDIT_TABLE));
    let before = snapshot(&db, "audit_log").await;
    let started: DateTime<Utc> = Utc::now();
    let summary = run(&config, opts(2)).await;
    let ended: DateTime<Utc> = Utc::now();
    assert!(summary.all_finished(), "{summary}");
    let after = snapshot(&db, "audit_log").await;
    let store = open_store(&config).await;
    let archived = assert_exactly_once(&before, &after, &*store).await;

    assert_eq!(summary.rows(), archived.len() as i64, "summary counts what was archived");
    assert!(archived.len() > 6_000, "about 110 of 200 days are old: {}", archived.len());
    let ts = |v: &serde_json::Value| v["created_at"].as_str().map(|s| s.parse::<DateTime<Utc>>().unwrap());
    for row in archived.values() {
        let t = ts(row).expect("a row with a NULL timestamp was archived");
        assert!(t < ended - chrono::Duration::days(90), "archived a row newer than retention: {row}");
    }
    for row in after.values() {
        if let Some(t) = ts(row) {
            assert!(t >= started - chrono::Duration::days(90), "an old row was left behind: {row}");
        }
    }
    assert_eq!(after.values().filter(|r| r["created_at"].is_null()).count(), 2, "NULL-timestamp rows stay");

    // Objects live under the prefix, partitioned by the rows' own dates.
    let on_disk = s3.bucket_dir().join("archives");
    assert!(on_disk.is_dir(), "objects are on the S3 server under the prefix");
    for (key, rows) in archived_objects(&*store).await {
        for row in rows {
            let d = ts(&row).unwrap().date_naive();
            let part = format!("year={}/month={:02}/day={:02}/", d.format("%Y"), d.format("%m"), d.format("%d"));
            assert!(key.contains(&part), "row of {d} in object {key}");
        }
    }
    // One manifest per item; they list every object with its checksum and count every row.
    let manifests = manifests(&*store).await;
    let items: i64 = summary.tables.values().map(|t| t.items_done as i64).sum();
    assert_eq!(manifests.len() as i64, items);
    let mut listed = 0;
    for m in &manifests {
        assert_eq!(m.columns.len(), 11);
        for o in &m.objects {
            let body = store.get(&o.key).await.unwrap().expect("manifest names an existing object");
            assert_eq!(hex(&archiver_engine::storage::sha256(&body)), o.sha256);
            assert_eq!(body.len() as i64, o.bytes);
            listed += o.rows;
        }
    }
    assert_eq!(listed, archived.len() as i64);
}

async fn archived_objects(store: &dyn archiver_engine::storage::ObjectStore) -> Vec<(String, Vec<serde_json::Value>)> {
    archived(store).await
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_changes_nothing_and_late_rows_are_picked_up_in_a_new_generation() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 3_000).await;
    let config = parse(&yaml(&db, &s3.yaml(""), "", AUDIT_TABLE));
    let store = open_store(&config).await;
    let before = snapshot(&db, "audit_log").await;
    assert!(run(&config, opts(2)).await.all_finished());
    let first = listing(&*store).await;

    let again = run(&config, opts(2)).await;
    assert!(again.all_finished());
    assert_eq!(again.rows(), 0, "nothing is archived twice");
    assert_eq!(listing(&*store).await, first, "a re-run writes no object");

    // A late row into a range that is finished already.
    let (late_id,): (i64,) = sqlx::query_as(
        "INSERT INTO audit_log (created_at, user_id, action, table_name, record_id)
         VALUES (now() - interval '150 days', 9, 'LATE', 't', 9) RETURNING id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut before = before;
    before.extend(snapshot(&db, "audit_log").await);
    let late = run(&config, opts(2)).await;
    assert_eq!(late.rows(), 1, "{late}");
    let now = listing(&*store).await;
    assert!(first.is_subset(&now), "objects of the first run are never overwritten");
    assert!(now.iter().any(|(k, _)| k.contains("-g1-i") && k.contains("-b000000")), "late rows go to generation 1: {now:?}");
    let after = snapshot(&db, "audit_log").await;
    let archived = assert_exactly_once(&before, &after, &*store).await;
    assert!(archived.contains_key(&late_id.to_string()));
}

/// Crash the worker at every point of the pipeline, then resume: no row lost or duplicated.
async fn crash_and_resume(point: Point, seq: i32) {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 4_000).await;
    // Several batches per item, so the crash lands mid-item.
    let config = parse(&yaml(&db, &s3.yaml("p"), "  range_interval: 30d\n  batch_size: 200", AUDIT_TABLE));
    let store = open_store(&config).await;
    let before = snapshot(&db, "audit_log").await;
    let crash = CrashAt::new(point, seq);
    let first = run(&config, RunOptions { hooks: crash.clone(), ..opts(1) }).await;
    assert!(crash.fired.load(std::sync::atomic::Ordering::SeqCst), "the crash point was reached");
    assert!(!first.all_finished(), "a crashed item is not finished");
    // Whatever the crash left, nothing is lost so far.
    assert_nothing_lost(&before, &snapshot(&db, "audit_log").await, &*store).await;

    // The crashed worker's lease runs out (3 s); a new process takes the item over.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let second = run(&config, opts(1)).await;
    assert!(second.all_finished(), "{second}");
    let after = snapshot(&db, "audit_log").await;
    let archived = assert_exactly_once(&before, &after, &*store).await;
    let eligible = before.len() - after.len();
    assert_eq!(archived.len(), eligible);
    let listed: i64 = manifests(&*store).await.iter().map(|m| m.total_rows).sum();
    assert_eq!(listed, archived.len() as i64, "manifests account for every archived row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_extract() {
    crash_and_resume(Point::Extracted, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_upload_before_record() {
    crash_and_resume(Point::Uploaded, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_record_before_delete() {
    crash_and_resume(Point::Recorded, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_delete() {
    crash_and_resume(Point::Deleted, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_manifest_before_done() {
    crash_and_resume(Point::ManifestWritten, -1).await;
}

/// Runs `f` once, at the first time the pipeline reaches `point`.
struct Once<F> {
    point: Point,
    f: F,
    fired: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl<F, Fut> Hooks for Once<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: std::future::Future<Output = ()> + Send,
{
    async fn at(&self, point: Point, _item: &archiver_proto::WorkItem, _seq: i32) -> Result<(), PipelineError> {
        if point == self.point && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            (self.f)().await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_inserted_or_updated_while_archiving_are_never_deleted_unarchived() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 2_000).await;
    let config = parse(&yaml(&db, &s3.yaml(""), "  range_interval: 400d\n  batch_size: 100", AUDIT_TABLE));
    let store = open_store(&config).await;
    let pool = db.pool.clone();
    // While batch 0 is uploaded (read, not yet deleted): update one of its rows, and insert a
    // row that sorts before the batch's first key, i.e. behind the keyset cursor.
    let hook = Arc::new(Once {
        point: Point::Uploaded,
        fired: Default::default(),
        f: move || {
            let pool = pool.clone();
            async move {
                sqlx::query("UPDATE audit_log SET action = 'CHANGED' WHERE id = (SELECT id FROM audit_log ORDER BY created_at, id LIMIT 1)")
                    .execute(&pool)
                    .await
                    .unwrap();
                sqlx::query(
                    "INSERT INTO audit_log (id, created_at, user_id, action, table_name, record_id)
                     SELECT 1000000, min(created_at) - interval '1 millisecond', 7, 'LATE', 't', 7 FROM audit_log",
                )
                .execute(&pool)
                .await
                .unwrap();
            }
        },
    });
    let before = snapshot(&db, "audit_log").await;
    let summary = run(&config, RunOptions { hooks: hook, ..opts(1) }).await;
    assert!(summary.all_finished(), "{summary}");
    let after = snapshot(&db, "audit_log").await;
    let changed = after.values().find(|r| r["action"] == "CHANGED").expect("the updated row was not deleted");
    assert!(after.values().any(|r| r["action"] == "LATE"), "the late row was not deleted unarchived");
    let short: i64 = summary.tables.values().map(|t| t.rows_short).sum();
    assert_eq!(short, 1, "the shortfall is counted");
    // The old version is in the archive; the new one still in the table; everything else once.
    let mut before_plus_late = before.clone();
    for (id, row) in &after {
        before_plus_late.entry(id.clone()).or_insert(row.clone());
    }
    let changed_id = changed["id"].to_string();
    let mut after_without_changed = after.clone();
    after_without_changed.remove(&changed_id);
    let archived = assert_exactly_once(&before_plus_late, &after_without_changed, &*store).await;
    assert_eq!(archived[&changed_id]["action"], before[&changed_id]["action"]);

    // The next run archives both: the late row and the changed row (its new version).
    let next = run(&config, opts(1)).await;
    assert_eq!(next.rows(), 2, "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_objects_of_an_interrupted_attempt_are_removed() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 1_000).await;
    let config = parse(&yaml(&db, &s3.yaml(""), "  range_interval: 400d\n  batch_size: 100", AUDIT_TABLE));
    let store = open_store(&config).await;
    let crash = CrashAt::new(Point::Uploaded, 3);
    run(&config, RunOptions { hooks: crash, ..opts(1) }).await;
    let stray = store.list("").await.unwrap().into_iter().find(|k| k.contains("-b000003.")).expect("batch 3 uploaded");
    // Meanwhile someone else deletes the rest of the item's rows, so the retry never writes batch 3.
    let deleted = sqlx::query(
        "DELETE FROM audit_log a USING archiver.work_items w, archiver.batches b
         WHERE w.state = 'running' AND b.item_id = w.id AND b.seq = 2
           AND a.created_at >= w.range_start AND a.created_at < w.range_end
           AND (a.created_at, a.id) > (b.last_ts::timestamptz, b.last_pk::bigint)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(deleted.rows_affected() > 0);
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert!(run(&config, opts(1)).await.all_finished());
    assert!(store.head(&stray).await.unwrap().is_none(), "the stray object {stray} was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_killed_mid_batch_resumes_without_loss_or_duplicates() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 3_000).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml(&db, &s3.yaml("k"), "  range_interval: 400d\n  batch_size: 150", AUDIT_TABLE)).unwrap();
    let config = parse(&std::fs::read_to_string(&path).unwrap());
    let store = open_store(&config).await;
    let before = snapshot(&db, "audit_log").await;
    let bin = env!("CARGO_BIN_EXE_archiver-coordinator");
    for crash_at in ["recorded:2", "uploaded:5"] {
        let status = tokio::process::Command::new(bin)
            .args(["--config", path.to_str().unwrap(), "run", "--workers", "1"])
            .env("ARCHIVER_CRASH_AT", crash_at)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(!status.success() && status.code().is_none(), "the process was killed by a signal: {status:?}");
        assert_nothing_lost(&before, &snapshot(&db, "audit_log").await, &*store).await;
        tokio::time::sleep(Duration::from_millis(3_200)).await;
    }
    let out = tokio::process::Command::new(bin)
        .args(["--config", path.to_str().unwrap(), "run"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = snapshot(&db, "audit_log").await;
    let archived = assert_exactly_once(&before, &after, &*store).await;
    assert_eq!(archived.len(), before.len() - after.len());
    assert!(!archived.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_never_archive_a_row_twice() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 6_000).await;
    let config = parse(&yaml(&db, &s3.yaml(""), "  batch_size: 300", AUDIT_TABLE));
    let store = open_store(&config).await;
    let before = snapshot(&db, "audit_log").await;
    let (a, b) = tokio::join!(run(&config, opts(2)), run(&config, opts(2)));
    let after = snapshot(&db, "audit_log").await;
    let archived = assert_exactly_once(&before, &after, &*store).await;
    assert_eq!(a.rows() + b.rows(), archived.len() as i64);
    // Whatever one run found held by the other is finished by then or by a third run.
    let c = run(&config, opts(2)).await;
    assert!(c.all_finished(), "{c}");
    let (dupes,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM (SELECT 1 FROM archiver.work_items GROUP BY range_start, range_end HAVING count(*) > 1) d",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(dupes, 0, "no range was planned twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_touches_nothing() {
    let db = TestDb::new().await;
    seeded(&db, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("storage:\n  type: local\n  path: {}\n", dir.path().join("out").display());
    let config = parse(&yaml(&db, &storage, "", AUDIT_TABLE));
    let before = snapshot(&db, "audit_log").await;
    let outcome = standalone::run(&config, RunOptions { dry_run: true, ..opts(1) }, CancellationToken::new()).await.unwrap();
    let Outcome::DryRun(tables) = outcome else { panic!("dry run expected") };
    assert_eq!(tables.len(), 1);
    let (old,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log WHERE created_at < now() - interval '90 days'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tables[0].eligible_rows, old);
    assert!(!tables[0].plan.new.is_empty());
    assert_eq!(snapshot(&db, "audit_log").await, before);
    let (schema,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'archiver')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!schema, "a dry run creates no checkpoint tables");
    assert!(!dir.path().join("out").exists(), "a dry run writes no object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_that_cannot_be_archived_safely_are_refused_before_any_work() {
    let db = TestDb::new().await;
    seeded(&db, 500).await;
    for sql in [
        "CREATE TABLE no_key (id bigint, created_at timestamptz)",
        "CREATE TABLE nullable_key (id bigint, created_at timestamptz)",
        "CREATE UNIQUE INDEX ON nullable_key (id)",
        "CREATE TABLE text_ts (id bigint PRIMARY KEY, created_at text)",
    ] {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
    let cases = [
        ("no_key", "created_at", "id", "no unique index"),
        ("nullable_key", "created_at", "id", "allows NULL"),
        ("text_ts", "created_at", "id", "has type text"),
        ("missing", "created_at", "id", "does not exist"),
        ("audit_log", "created", "id", "timestamp_column \"created\" does not exist"),
        ("audit_log", "created_at", "uid", "primary_key \"uid\" does not exist"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("storage:\n  type: local\n  path: {}\n", dir.path().display());
    for (table, ts, pk, expected) in cases {
        let tables = format!("      - name: {table}\n        timestamp_column: {ts}\n        primary_key: {pk}\n");
        let with_valid = if table == "audit_log" { tables } else { format!("{AUDIT_TABLE}{tables}") };
        let config = parse(&yaml(&db, &storage, "", &with_valid));
        let err = standalone::run(&config, opts(1), CancellationToken::new()).await.err().expect("refused");
        let msg = err.to_string();
        assert!(msg.contains(table) && msg.contains(expected), "{table}: {msg}");
    }
    // Nothing happened to the valid table either.
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log").fetch_one(&db.pool).await.unwrap();
    assert_eq!(n, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_with_case_spaces_and_quotes_work() {
    let (db, s3) = s3_and_db().await;
    sqlx::query(r#"CREATE SCHEMA "Audit Data""#).execute(&db.pool).await.unwrap();
    sqlx::query(
        r#"CREATE TABLE "Audit Data"."Event ""Log""" ("Event ID" uuid PRIMARY KEY DEFAULT gen_random_uuid(),
           "Created At" timestamp without time zone, payload jsonb)"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        r#"INSERT INTO "Audit Data"."Event ""Log""" ("Created At", payload)
           SELECT (now() AT TIME ZONE 'UTC') - g * interval '1 hour', jsonb_build_object('n', g) FROM generate_series(1, 5000) g"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let tables = "      - name: 'Event \"Log\"'\n        schema: Audit Data\n        timestamp_column: Created At\n        primary_key: Event ID\n";
    let config = parse(&yaml(&db, &s3.yaml(""), "  batch_size: 250", tables));
    let summary = run(&config, opts(2)).await;
    assert!(summary.all_finished(), "{summary}");
    let (left_old,): (i64,) = sqlx::query_as(
        // The cutoff is taken in whole seconds at the start of the run: allow a little slack.
        r#"SELECT count(*) FROM "Audit Data"."Event ""Log""" WHERE "Created At" < (now() AT TIME ZONE 'UTC') - interval '90 days 1 minute'"#,
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(left_old, 0);
    let expected = 5000 - 90 * 24;
    assert!((summary.rows() - expected).abs() <= 1, "archived {} of about {expected}", summary.rows());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_really_throttle() {
    let db = TestDb::new().await;
    seeded(&db, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("storage:\n  type: local\n  path: {}\n", dir.path().display());
    let config = parse(&yaml(&db, &storage, "  range_interval: 400d\n  batch_size: 200\n  sleep_between_batches: 0.2", AUDIT_TABLE));
    let started = Instant::now();
    let s = run(&config, opts(1)).await;
    let batches = s.tables.values().map(|t| t.objects).sum::<i64>();
    assert!(batches >= 4, "{s}");
    assert!(started.elapsed() >= Duration::from_millis(200 * (batches as u64 - 1)), "sleep_between_batches was ignored");

    let db = TestDb::new().await;
    seeded(&db, 2_000).await;
    let config = parse(&yaml(&db, &storage, "  range_interval: 400d\n  batch_size: 200\n  max_rows_per_second: 1000", AUDIT_TABLE));
    let started = Instant::now();
    let s = run(&config, opts(1)).await;
    // n rows at 1000 rows/s cannot take less than (n - last batch) / 1000 seconds.
    let floor = (s.rows() - 200).max(0) as f64 / 1000.0;
    assert!(started.elapsed().as_secs_f64() >= floor, "max_rows_per_second was ignored: {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_to_a_local_directory_with_a_separate_checkpoint_database() {
    let (db, cp) = tokio::join!(TestDb::new(), TestDb::new());
    seeded(&db, 3_000).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("storage:\n  type: local\n  path: {}\n", dir.path().display());
    let mut text = yaml(&db, &storage, "  compression: gzip", AUDIT_TABLE);
    text = text.replace("checkpoint:\n", &format!("checkpoint:\n  url: {}\n", cp.url()));
    let config = parse(&text);
    let store = open_store(&config).await;
    let before = snapshot(&db, "audit_log").await;
    let summary = run(&config, opts(2)).await;
    assert!(summary.all_finished(), "{summary}");
    let archived = assert_exactly_once(&before, &snapshot(&db, "audit_log").await, &*store).await;
    assert!(!archived.is_empty());
    assert!(store.list("").await.unwrap().iter().any(|k| k.ends_with(".jsonl.gz")));
    let (done,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.work_items WHERE state = 'done'")
        .fetch_one(&cp.pool)
        .await
        .unwrap();
    assert!(done > 0, "the checkpoints are in the separate database");
    let (schema,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'archiver')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!schema, "and not in the source database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_runs_never_overwrite_each_others_objects() {
    let db = TestDb::new().await;
    archiver_testkit::seed::create_audit_table(&db.pool, "public", "audit_log").await.unwrap();
    // Rows every 5 ms around the cutoff, so every run finds a few newly eligible rows in a last
    // range that ends within the same second as the previous run's.
    sqlx::query(
        "INSERT INTO audit_log (created_at, user_id, action, table_name, record_id)
         SELECT now() - interval '90 days' + g * interval '5 milliseconds', 1, 'A', 't', g FROM generate_series(-600, 1200) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("storage:\n  type: local\n  path: {}\n", dir.path().display());
    let config = parse(&yaml(&db, &storage, "", AUDIT_TABLE));
    let store = open_store(&config).await;
    let before = snapshot(&db, "audit_log").await;
    let mut archived_total = 0;
    for _ in 0..8 {
        let s = run(&config, opts(1)).await;
        assert!(s.all_finished(), "{s}");
        archived_total += s.rows();
    }
    let after = snapshot(&db, "audit_log").await;
    let archived = assert_exactly_once(&before, &after, &*store).await;
    assert_eq!(archived.len() as i64, archived_total, "the summaries count each archived row once");
    // At least the rows that were a second past the cutoff when inserted (g <= -200).
    assert!(archived.len() > 400, "{}", archived.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_deletes_nothing_more() {
    let db = TestDb::new().await;
    seeded(&db, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("storage:\n  type: local\n  path: {}\n", dir.path().display());
    let config = parse(&yaml(&db, &storage, "  range_interval: 4000d\n  batch_size: 100", AUDIT_TABLE));
    let pool = db.pool.clone();
    // While batch 2 is read, another worker takes the item over (as if our lease had expired).
    let steal = Arc::new(Once {
        point: Point::Extracted,
        fired: Default::default(),
        f: move || {
            let pool = pool.clone();
            async move {
                sqlx::query("UPDATE archiver.work_items SET lease_owner = 'thief', lease_until = now() + interval '1 hour' WHERE state = 'running'")
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        },
    });
    let before = snapshot(&db, "audit_log").await;
    let summary = run(&config, RunOptions { hooks: steal, ..opts(1) }).await;
    assert!(!summary.all_finished());
    let (recorded,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.batches").fetch_one(&db.pool).await.unwrap();
    assert_eq!(recorded, 0, "no batch recorded or deleted after the lease was gone");
    assert_eq!(snapshot(&db, "audit_log").await, before, "nothing deleted");
    let (owner,): (String,) =
        sqlx::query_as("SELECT lease_owner FROM archiver.work_items WHERE state = 'running'").fetch_one(&db.pool).await.unwrap();
    assert_eq!(owner, "thief", "the loser did not overwrite the new owner's claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_ever_printed_even_at_trace_level() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 500).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    // Trust authentication accepts any password, so the run succeeds with one configured.
    let text = yaml(&db, &s3.yaml(""), "", AUDIT_TABLE).replace("    tables:\n", "    password: hunter2-db-secret\n    tables:\n");
    std::fs::write(&path, text).unwrap();
    let bin = env!("CARGO_BIN_EXE_archiver-coordinator");
    for args in [vec!["run"], vec!["run", "--dry-run"], vec!["--log-format", "json", "run"]] {
        let out = tokio::process::Command::new(bin)
            .args(["--config", path.to_str().unwrap()])
            .args(&args)
            .env("RUST_LOG", "trace")
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(all.len() > 1000, "trace logging produced output");
        for secret in ["hunter2-db-secret", s3.secret_key.as_str()] {
            assert!(!all.contains(secret), "{args:?} printed a secret");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_runs_after_a_run_only_where_configured() {
    let db = TestDb::new().await;
    seed_vacuum_tables(&db, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("storage:\n  type: local\n  path: {}\n", dir.path().display());
    let config = parse(&yaml(&db, &storage, "", VACUUM_TABLES));
    assert_eq!(manual_vacuums(&db, "audit_vacuumed", 0).await, 0);
    let summary = run(&config, opts(2)).await;
    assert!(summary.all_finished() && summary.rows() > 0, "{summary}");
    assert_eq!(manual_vacuums(&db, "audit_vacuumed", 1).await, 1, "VACUUM (ANALYZE) ran once");
    assert_eq!(manual_vacuums(&db, "audit_plain", 0).await, 0, "no VACUUM where it is off");
    // A run that archives nothing vacuums nothing.
    run(&config, opts(2)).await;
    assert_eq!(manual_vacuums(&db, "audit_vacuumed", 2).await, 1);
}

/// A store made before versions were recorded is adopted as version 1; a store a newer archiver
/// upgraded is refused before anything is read or deleted, with a message naming both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_schema_versions_are_recorded_and_a_newer_store_is_refused() {
    let db = TestDb::new().await;
    seeded(&db, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("storage:\n  type: local\n  path: {}\n", dir.path().display());
    // A store as earlier builds left it: the tables, no version table.
    for stmt in archiver_proto::checkpoint_schema::create_statements("archiver") {
        sqlx::query(&stmt).execute(&db.pool).await.unwrap();
    }
    let config = parse(&yaml(&db, &storage, "  range_interval: 30d", AUDIT_TABLE));
    let first = run(&config, opts(2)).await;
    assert!(first.all_finished() && first.rows() > 0, "{first}");
    let versions: Vec<(i32,)> = sqlx::query_as("SELECT version FROM archiver.schema_version").fetch_all(&db.pool).await.unwrap();
    assert_eq!(versions, [(archiver_proto::checkpoint_schema::VERSION,)]);

    // Newer rows arrive; a newer archiver has upgraded the store meanwhile.
    archiver_testkit::seed::append_rows(&db.pool, "public", "audit_log", 500, 120.0, 100.0).await.unwrap();
    sqlx::query("INSERT INTO archiver.schema_version VALUES (99)").execute(&db.pool).await.unwrap();
    let before = snapshot(&db, "audit_log").await;
    let (items_before,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.work_items").fetch_one(&db.pool).await.unwrap();
    let err = standalone::run(&config, opts(2), CancellationToken::new()).await.err().expect("a newer store is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("version 99") && msg.contains(&format!("({})", archiver_proto::checkpoint_schema::VERSION)), "{msg}");
    assert_eq!(snapshot(&db, "audit_log").await, before, "nothing deleted");
    let (items_after,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.work_items").fetch_one(&db.pool).await.unwrap();
    assert_eq!(items_after, items_before, "nothing planned");
}
