//! End-to-end tests of standalone mode against real PostgreSQL and a real S3 server (s3s-fs):
//! every old row archived exactly once, re-runs, late and changed rows, concurrent runs and lost
//! leases. Each test has its own database and its own S3 server, so they run in parallel.
//! Crashes: `pipeline_crash.rs`; settings and refusals: `pipeline_settings.rs`.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use archiver_coordinator::standalone::{self, RunOptions};
use archiver_engine::pipeline::{Hooks, PipelineError, Point};
use archiver_testkit::TestDb;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_every_old_row_exactly_once_and_nothing_else() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 12_000).await;
    sqlx::query("INSERT INTO audit_log (created_at, user_id, action, table_name, record_id) VALUES (NULL, 1, 'X', 't', 1), (NULL, 2, 'Y', 't', 2)")
        .execute(&db.pool)
        .await
        .unwrap();
    let config = load(&test_config(&db, Storage::s3(&s3, "archives/")).table(audit_table()));
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
    let config = load(&test_config(&db, Storage::s3(&s3, "")).table(audit_table()));
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
    let config = load(&test_config(&db, Storage::s3(&s3, "")).defaults("range_interval: 400d\nbatch_size: 100").table(audit_table()));
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
async fn two_runs_at_once_never_archive_a_row_twice() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 6_000).await;
    let config = load(&test_config(&db, Storage::s3(&s3, "")).defaults("batch_size: 300").table(audit_table()));
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
    let config = load(&test_config(&db, Storage::local(dir.path())).table(audit_table()));
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

/// Asserts a store's listing (keys and checksums) is what it was, naming only what differs.
fn assert_unchanged(was: &BTreeSet<(String, Option<String>)>, is: &BTreeSet<(String, Option<String>)>, what: &str) {
    let gone: Vec<_> = was.difference(is).take(3).collect();
    let new: Vec<_> = is.difference(was).take(3).collect();
    assert!(gone.is_empty() && new.is_empty(), "{what}: gone or changed {gone:?}, new or changed {new:?}");
}

/// Runs once with one worker; the error, or the summary and why it stopped.
async fn how_it_stopped(config: &archiver_engine::config::Config) -> String {
    match standalone::run(config, opts(1), tokio_util::sync::CancellationToken::new()).await {
        Err(e) => e.to_string(),
        Ok(standalone::Outcome::Ran(summary)) => format!("{summary} {:?}", summary.stopped),
        Ok(_) => "a dry run".into(),
    }
}

/// A checkpoint store as stores made before random item ids were: its ids count from 1.
async fn store_counting_from_one(db: &TestDb, schema: &str) {
    use archiver_proto::checkpoint_schema as cs;
    for stmt in cs::version_table(schema).into_iter().chain(cs::create_statements(schema)) {
        sqlx::query(&stmt).execute(&db.pool).await.unwrap();
    }
    sqlx::query(&format!("INSERT INTO {schema}.schema_version (version) VALUES ($1)")).bind(cs::VERSION).execute(&db.pool).await.unwrap();
    sqlx::query(&format!("SELECT setval(pg_get_serial_sequence('{schema}.work_items', 'id'), 1, false)")).execute(&db.pool).await.unwrap();
}

/// Two checkpoint stores under one storage prefix (`checkpoint.schema` changed between runs, a
/// store dropped, the demo run twice) plan the same ranges for late rows of the same days. A new
/// store's objects never take the names of another's; where names do meet (two stores whose ids
/// both count from 1) the batch is refused. Nothing of the first store's is overwritten or
/// removed, and every row is in the table or archived exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_checkpoint_store_under_the_same_prefix_never_overwrites_the_first_ones_objects() {
    let db = TestDb::new().await;
    seeded(&db, 3_000).await;
    sqlx::query("CREATE TABLE late AS SELECT created_at, user_id, table_name, record_id FROM audit_log WHERE created_at < now() - interval '91 days'")
        .execute(&db.pool)
        .await
        .unwrap();
    let late = "INSERT INTO audit_log (created_at, user_id, action, table_name, record_id) SELECT created_at, user_id, 'LATE', table_name, record_id FROM late";
    let dir = tempfile::tempdir().unwrap();
    let with_store = |schema: &str| load(&test_config(&db, Storage::local(dir.path())).checkpoint("schema", schema).table(audit_table()));
    let store = open_store(&with_store("first")).await;
    store_counting_from_one(&db, "first").await;
    let mut before = snapshot(&db, "audit_log").await;
    assert!(run(&with_store("first"), opts(2)).await.all_finished());
    let first_objects = listing(&*store).await;

    // A new store: its own names.
    sqlx::query(late).execute(&db.pool).await.unwrap();
    before.extend(snapshot(&db, "audit_log").await);
    let second = run(&with_store("second"), opts(2)).await;
    assert!(second.all_finished() && second.rows() > 1_000, "{second}");
    let both = listing(&*store).await;
    assert!(first_objects.is_subset(&both), "the first store's objects are all there, unchanged");

    // Another store counting from 1, as the first: its first batch would take a name of the
    // first store's.
    store_counting_from_one(&db, "third").await;
    sqlx::query(late).execute(&db.pool).await.unwrap();
    before.extend(snapshot(&db, "audit_log").await);
    let refused = how_it_stopped(&with_store("third")).await;
    assert!(refused.contains("already exists and holds other rows"), "{refused}");
    assert_unchanged(&both, &listing(&*store).await, "nothing was overwritten, added or removed");

    // The same, with the first item on its second claim (its first crashed): its names differ
    // (`-a2-`), and its start would remove the first store's `-a1-` objects as its own strays.
    store_counting_from_one(&db, "fourth").await;
    sqlx::query(
        "INSERT INTO fourth.work_items (id, database, schema_name, table_name, range_start, range_end, generation, attempts)
         SELECT id, database, schema_name, table_name, range_start, range_end, generation, 1 FROM first.work_items WHERE id = 1",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("SELECT setval('fourth.work_items_id_seq', 2, false)").execute(&db.pool).await.unwrap();
    let refused = how_it_stopped(&with_store("fourth")).await;
    assert!(refused.contains("already exists and holds other rows"), "{refused}");
    assert_unchanged(&both, &listing(&*store).await, "nothing was removed");
    let after = snapshot(&db, "audit_log").await;
    assert_exactly_once(&before, &after, &*store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_deletes_nothing_more() {
    let db = TestDb::new().await;
    seeded(&db, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        load(&test_config(&db, Storage::local(dir.path())).defaults("range_interval: 4000d\nbatch_size: 100").table(audit_table()));
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

/// The governor's pages come whole (one row each, decoded after the read) and, with the governor
/// off, a batch streams in one read: both archive every row exactly once, in (timestamp, key)
/// order within each object, also where hundreds of rows share a timestamp across page and batch
/// boundaries (the keyset's tie-break on the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_and_streamed_pages_archive_every_row_once_in_order_across_ties() {
    for governor in ["{budget: 8.0, interval: 200ms}", "{enabled: false}"] {
        let (db, s3) = s3_and_db().await;
        seeded(&db, 6_000).await;
        // About 210 rows a week share the Monday midnight of their week.
        sqlx::query("UPDATE audit_log SET created_at = date_trunc('week', created_at)").execute(&db.pool).await.unwrap();
        let config = load(&test_config(&db, Storage::s3(&s3, "archives/")).table(audit_table()).set_default("governor", governor));
        let before = snapshot(&db, "audit_log").await;
        let summary = run(&config, opts(2)).await;
        assert!(summary.all_finished(), "{governor}: {summary}");
        let store = open_store(&config).await;
        let archived_rows = assert_exactly_once(&before, &snapshot(&db, "audit_log").await, &*store).await;
        assert!(archived_rows.len() > 2_500, "{governor}: {} archived", archived_rows.len());
        for (key, rows) in archived(&*store).await {
            let order: Vec<(String, i64)> = rows.iter().map(|r| (r["created_at"].as_str().unwrap().to_string(), r["id"].as_i64().unwrap())).collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{governor}: {key} is not in (timestamp, key) order");
        }
    }
}
