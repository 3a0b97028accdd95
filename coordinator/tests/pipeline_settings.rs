//! Standalone mode's settings and refusals: dry runs, tables that cannot be archived safely,
//! awkward identifiers, the read connections' limits and deaths, throttles, gzip with a separate checkpoint
//! database, secrets never printed, VACUUM after a run, and checkpoint schema versions.

mod common;

use std::time::{Duration, Instant};

use archiver_coordinator::standalone::{self, Outcome, RunOptions};
use archiver_testkit::TestDb;
use common::*;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_touches_nothing() {
    let db = TestDb::new().await;
    seeded(&db, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = load(&test_config(&db, Storage::local(dir.path().join("out"))).table(audit_table()));
    let before = snapshot(&db, "audit_log").await;
    let outcome = standalone::run(&config, RunOptions { dry_run: true, ..opts(1) }, CancellationToken::new()).await.unwrap();
    let Outcome::DryRun { tables, .. } = outcome else { panic!("dry run expected") };
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
        "CREATE TABLE parent_log (id bigint PRIMARY KEY, created_at timestamptz)",
        "CREATE TABLE child_log (extra text NOT NULL) INHERITS (parent_log)",
    ] {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
    let cases = [
        ("no_key", "created_at", "id", "no unique index"),
        ("nullable_key", "created_at", "id", "allows NULL"),
        ("text_ts", "created_at", "id", "has type text"),
        ("parent_log", "created_at", "id", "has inheritance children (child_log)"),
        ("missing", "created_at", "id", "does not exist"),
        ("audit_log", "created", "id", "timestamp_column \"created\" does not exist"),
        ("audit_log", "created_at", "uid", "primary_key \"uid\" does not exist"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path());
    for (table, ts, pk, expected) in cases {
        let refused = Table::new(table, ts, pk);
        let with_valid = if table == "audit_log" { vec![refused] } else { vec![audit_table(), refused] };
        let config = load(&test_config(&db, storage.clone()).tables(with_valid));
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
    let table = Table::new("Event \"Log\"", "Created At", "Event ID").schema("Audit Data");
    let config = load(&test_config(&db, Storage::s3(&s3, "")).defaults("batch_size: 250").table(table));
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

/// A page is one statement with no transaction of its own: what keeps it from writing and from
/// running long is the read pool's connections, which this checks as the pipeline gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_read_on_read_only_connections_with_the_statement_timeout() {
    let db = TestDb::new().await;
    seeded(&db, 100).await;
    let dir = tempfile::tempdir().unwrap();
    let config = load(&test_config(&db, Storage::local(dir.path())).set_default("statement_timeout", "250ms").table(audit_table()));
    let prepared = archiver_engine::setup::prepare(&config, &Default::default(), false).await.unwrap();
    let source = prepared.sources.values().next().expect("one source database");
    let mut conn = source.read_pool.acquire().await.unwrap();
    let (timeout, read_only): (String, String) =
        sqlx::query_as("SELECT current_setting('statement_timeout'), current_setting('transaction_read_only')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!((timeout.as_str(), read_only.as_str()), ("250ms", "on"));
    let code = |e: sqlx::Error| e.as_database_error().and_then(|d| d.code()).map(|c| c.to_string());
    let write = sqlx::query("DELETE FROM audit_log").execute(&mut *conn).await.unwrap_err();
    assert_eq!(code(write).as_deref(), Some("25006"), "read_only_sql_transaction");
    let slow = sqlx::query("SELECT pg_sleep(2)").execute(&mut *conn).await.unwrap_err();
    assert_eq!(code(slow).as_deref(), Some("57014"), "query_canceled by statement_timeout");
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log").fetch_one(&db.pool).await.unwrap();
    assert_eq!(left, 100);
}

/// The read pool hands out connections without the liveness ping (`db::read_pool`): one that
/// died while idle fails its page, and the batch is read again on another. Here idle read
/// connections are killed while the run reads; every row is still archived exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_connection_that_died_while_idle_fails_its_page_and_the_batch_is_read_again() {
    let db = TestDb::new().await;
    seeded(&db, 20_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = load(&test_config(&db, Storage::local(dir.path())).table(audit_table()));
    let store = open_store(&config).await;
    let before = snapshot(&db, "audit_log").await;
    let done = CancellationToken::new();
    // Idle connections whose last statement was a page read: the read pool's, between pages.
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE datname = current_database() AND state = 'idle' AND query LIKE '%.xmin::text AS x, %'";
    let killer = tokio::spawn({
        let (pool, done) = (db.pool.clone(), done.clone());
        async move {
            let mut killed = 0;
            while killed < 4 && !done.is_cancelled() {
                let (n,): (i64,) = sqlx::query_as(kill).fetch_one(&pool).await.unwrap();
                killed += n;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            killed
        }
    });
    let summary = run(&config, opts(2)).await;
    done.cancel();
    let killed = killer.await.unwrap();
    assert!(killed > 0, "no read connection was killed while the run read: the test proved nothing");
    assert!(summary.all_finished(), "{summary}");
    let after = snapshot(&db, "audit_log").await;
    let archived = assert_exactly_once(&before, &after, &*store).await;
    assert_eq!(archived.len() + after.len(), before.len());
    assert!(archived.len() > 5_000, "the old rows were archived: {}", archived.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_really_throttle() {
    let db = TestDb::new().await;
    seeded(&db, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path());
    let config = load(&test_config(&db, storage.clone()).defaults("range_interval: 400d\nbatch_size: 200\nsleep_between_batches: 0.2").table(audit_table()));
    let started = Instant::now();
    let s = run(&config, opts(1)).await;
    let batches = s.tables.values().map(|t| t.objects).sum::<i64>();
    assert!(batches >= 4, "{s}");
    assert!(started.elapsed() >= Duration::from_millis(200 * (batches as u64 - 1)), "sleep_between_batches was ignored");

    let db = TestDb::new().await;
    seeded(&db, 2_000).await;
    let config = load(&test_config(&db, storage.clone()).defaults("range_interval: 400d\nbatch_size: 200\nmax_rows_per_second: 1000").table(audit_table()));
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
    let config = load(
        &test_config(&db, Storage::local(dir.path()))
            .defaults("compression: gzip")
            .checkpoint("url", cp.url())
            .table(audit_table()),
    );
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
async fn no_secret_is_ever_printed_even_at_trace_level() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 500).await;
    // Trust authentication accepts any password, so the run succeeds with one configured.
    let with_password = Database::of(&db).password("hunter2-db-secret");
    let (_dir, path) = test_config(with_password, Storage::s3(&s3, "")).table(audit_table()).write_temp();
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
    let config = load(&test_config(&db, Storage::local(dir.path())).tables(vacuum_tables()));
    assert_eq!(manual_vacuums(&db, "audit_vacuumed", 0).await, 0);
    let summary = run(&config, opts(2)).await;
    assert!(summary.all_finished() && summary.rows() > 0, "{summary}");
    assert_eq!(manual_vacuums(&db, "audit_vacuumed", 1).await, 1, "VACUUM (ANALYZE) ran once");
    assert_eq!(manual_vacuums(&db, "audit_plain", 0).await, 0, "no VACUUM where it is off");
    // A run that archives nothing vacuums nothing.
    run(&config, opts(2)).await;
    assert_eq!(manual_vacuums(&db, "audit_vacuumed", 2).await, 1);
}

/// The tables as version 1 had them: today's without what later versions added.
async fn version_one_store(db: &TestDb) {
    for stmt in archiver_proto::checkpoint_schema::create_statements("archiver") {
        sqlx::query(&stmt).execute(&db.pool).await.unwrap();
    }
    sqlx::raw_sql("ALTER TABLE archiver.batches DROP COLUMN superseded; DROP TABLE archiver.holds").execute(&db.pool).await.unwrap();
}

/// A store recorded at version 1 is upgraded in place: its items stay, and what version 2 added
/// (superseded keys, holds) works.
#[tokio::test]
async fn a_version_one_store_is_upgraded_and_keeps_its_items() {
    let db = TestDb::new().await;
    seeded(&db, 1_000).await;
    version_one_store(&db).await;
    sqlx::raw_sql(
        "CREATE TABLE archiver.schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO archiver.schema_version VALUES (1);
         INSERT INTO archiver.work_items (database, schema_name, table_name, range_start, range_end, state)
         VALUES (current_database(), 'public', 'audit_log', '2001-01-01', '2001-01-02', 'done')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = load(&test_config(&db, Storage::local(dir.path())).defaults("range_interval: 30d").table(audit_table()));
    let summary = run(&config, opts(2)).await;
    assert!(summary.all_finished() && summary.rows() > 0, "{summary}");
    let versions: Vec<(i32,)> = sqlx::query_as("SELECT version FROM archiver.schema_version ORDER BY 1").fetch_all(&db.pool).await.unwrap();
    assert_eq!(versions, [(1,), (2,)]);
    let (old,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.work_items WHERE range_start = '2001-01-01'").fetch_one(&db.pool).await.unwrap();
    assert_eq!(old, 1, "the item recorded before the upgrade is kept");
    let (holds,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.holds").fetch_one(&db.pool).await.unwrap();
    assert_eq!(holds, 0);
}

/// A store made before versions were recorded is adopted as version 1 and upgraded; a store a newer archiver
/// upgraded is refused before anything is read or deleted, with a message naming both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_schema_versions_are_recorded_and_a_newer_store_is_refused() {
    let db = TestDb::new().await;
    seeded(&db, 2_000).await;
    let dir = tempfile::tempdir().unwrap();
    // A store as earlier builds left it: the version-1 tables, no version table.
    version_one_store(&db).await;
    let config = load(&test_config(&db, Storage::local(dir.path())).defaults("range_interval: 30d").table(audit_table()));
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
