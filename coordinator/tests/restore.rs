//! Restore and validate, against a real PostgreSQL and S3 server: archived rows come
//! back exactly (every awkward type), in place under a hold, after a crash mid-restore, as their
//! last archived version, and never from a damaged object unless asked to skip it.

mod common;

use std::collections::BTreeMap;
use std::process::ExitCode;

use archiver_coordinator::archive;
use archiver_coordinator::cli::RestoreArgs;
use archiver_engine::config::Config;
use archiver_engine::setup::Scope;
use archiver_testkit::config::Storage;
use archiver_testkit::TestDb;
use common::restore_env::*;
use common::*;

/// Every column type restore must carry unchanged, under quoted mixed-case names.
const AWKWARD: &str = r#"
CREATE SCHEMA "Audit Zone";
CREATE TYPE "Audit Zone".pair AS (a integer, b text);
CREATE TABLE "Audit Zone"."EventLog" (
    "Id"        uuid PRIMARY KEY,
    "CreatedAt" timestamptz NOT NULL,
    local_at    timestamp,
    payload     bytea,
    amount      numeric(30, 10),
    tags        text[],
    doc         jsonb,
    pretty      json,
    pretties    json[],
    note        text,
    maybe       integer,
    -- Named as the archiver's statements once named the row itself.
    "__archiver_row" "Audit Zone".pair,
    twice       numeric GENERATED ALWAYS AS (amount * 2) STORED,
    serial_no   bigint GENERATED ALWAYS AS IDENTITY
);
INSERT INTO "Audit Zone"."EventLog" ("Id", "CreatedAt", local_at, payload, amount, tags, doc, pretty, pretties, note, maybe, "__archiver_row")
SELECT gen_random_uuid(),
       now() - interval '100 days' - g * interval '37 minutes',
       CASE WHEN g % 7 = 0 THEN NULL ELSE timestamp '2020-02-29 12:34:56.789' + g * interval '1 second' END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE decode(md5(g::text) || '00ff5c22', 'hex') END,
       CASE WHEN g % 6 = 0 THEN NULL ELSE (g * 12345.6789012345)::numeric(30, 10) END,
       CASE WHEN g % 4 = 0 THEN NULL ELSE ARRAY['a"b', NULL, 'c,d', E'e\\f', '{x}', ''] END,
       CASE WHEN g % 3 = 0 THEN NULL
            ELSE jsonb_build_object('k', g, 'nested', jsonb_build_array(1, 'two', NULL), 'q', E'say "hi"\n') END,
       -- `json` keeps its text as written: pretty-printed, its line breaks reach row_to_json raw.
       CASE WHEN g % 8 = 0 THEN NULL ELSE format(E'{\n  "k": %s,\r\n  "list": [1,\n 2]\n}', g)::json END,
       CASE WHEN g % 10 = 0 THEN NULL ELSE ARRAY[E'{"a":\n1}'::json, E'[\r\n]'::json] END,
       CASE WHEN g % 2 = 0 THEN E'line one\nline "two"\ttab \\ backslash' ELSE NULL END,
       CASE WHEN g % 9 = 0 THEN NULL ELSE g END,
       CASE WHEN g % 11 = 0 THEN NULL ELSE ROW(g, 'p' || g)::"Audit Zone".pair END
FROM generate_series(1, 1500) g;
"#;

/// Archives the awkward table (`governor`: the `governor` default, or None for the tests' own),
/// checks that a deep validate finds every object sound (one JSON row a line), restores it into
/// another table and checks every row came back; returns the config and the rows as they were.
async fn archive_awkward_and_restore_elsewhere(db: &TestDb, s3: &archiver_testkit::S3Server, governor: Option<&str>) -> (Config, BTreeMap<String, serde_json::Value>) {
    sqlx::raw_sql(AWKWARD).execute(&db.pool).await.unwrap();
    let table = r#""Audit Zone"."EventLog""#;
    let before = rows(db, table, r#""Id""#).await;
    assert_eq!(before.len(), 1500);
    let mut builder = test_config(db, Storage::s3(s3, ""))
        .table(Table::new("EventLog", "CreatedAt", "Id").schema("Audit Zone"));
    if let Some(governor) = governor {
        builder = builder.set_default("governor", governor);
    }
    let config = load(&builder);
    assert!(run(&config, opts(2)).await.all_finished());
    assert!(
        rows(db, table, r#""Id""#).await.is_empty(),
        "all rows archived"
    );
    assert_eq!(
        archive::validate(&config, &Scope::default(), true, false).await.unwrap(),
        ExitCode::SUCCESS,
        "a deep validate reads every archived row as one JSON line"
    );

    let into = RestoreArgs {
        into: Some("Restored.Events".into()),
        ..args(&db.name, "Audit Zone.EventLog")
    };
    assert_eq!(restore(&config, into).await, ExitCode::SUCCESS);
    let restored = rows(db, r#""Restored"."Events""#, r#""Id""#).await;
    assert_eq!(restored.len(), before.len());
    for (id, row) in &before {
        assert_eq!(restored.get(id), Some(row), "row {id} came back different");
    }
    (config, before)
}

#[tokio::test]
async fn every_awkward_type_comes_back_exactly_into_another_table_and_in_place_under_a_hold() {
    let (db, s3) = s3_and_db().await;
    let (config, before) = archive_awkward_and_restore_elsewhere(&db, &s3, None).await;
    let table = r#""Audit Zone"."EventLog""#;
    assert!(
        active_holds(&db).await.is_empty(),
        "a restore into another table holds nothing"
    );

    // In place: the rows are back, held, and the next run leaves them there.
    assert_eq!(
        restore(&config, args(&db.name, "EventLog")).await,
        ExitCode::SUCCESS
    );
    assert_eq!(rows(&db, table, r#""Id""#).await, before);
    let holds = active_holds(&db).await;
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert!(holds[0].1.starts_with("restored in place"), "{holds:?}");
    run(&config, opts(2)).await;
    assert_eq!(
        rows(&db, table, r#""Id""#).await,
        before,
        "held rows are not archived again"
    );
    // A second in-place restore changes nothing and places no second hold.
    assert_eq!(
        restore(&config, args(&db.name, "EventLog")).await,
        ExitCode::SUCCESS
    );
    assert_eq!(rows(&db, table, r#""Id""#).await, before);
    assert_eq!(active_holds(&db).await.len(), 1);
}

/// With the governor off a batch is one streamed read (each row's JSON pushed as it arrives),
/// not whole pages: the same rows, line breaks in `json` values included, come back.
#[tokio::test]
async fn every_awkward_type_comes_back_from_streamed_reads_with_the_governor_off() {
    let (db, s3) = s3_and_db().await;
    archive_awkward_and_restore_elsewhere(&db, &s3, Some("{enabled: false}")).await;
}

/// Schema `a.b` with table `c`, and schema `a` with table `b.c`: two tables whose names print
/// alike. Each keeps its own objects, validates alone and restores only its own rows.
#[tokio::test]
async fn tables_whose_names_print_alike_keep_apart() {
    let (db, s3) = s3_and_db().await;
    sqlx::raw_sql(
        r#"CREATE SCHEMA "a.b"; CREATE SCHEMA a;
           CREATE TABLE "a.b".c (id int PRIMARY KEY, ts timestamptz NOT NULL, who text);
           CREATE TABLE a."b.c" (id int PRIMARY KEY, ts timestamptz NOT NULL, who text);
           INSERT INTO "a.b".c SELECT g, now() - interval '100 days' - g * interval '1 hour', 'schema a.b' FROM generate_series(1, 20) g;
           INSERT INTO a."b.c" SELECT g, now() - interval '100 days' - g * interval '1 hour', 'table b.c' FROM generate_series(1, 30) g;"#,
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let tables = [Table::new("c", "ts", "id").schema("a.b"), Table::new("b.c", "ts", "id").schema("a")];
    let config = load(&test_config(&db, Storage::s3(&s3, "")).tables(tables));
    let summary = run(&config, opts(2)).await;
    assert!(summary.all_finished() && summary.rows() == 50, "{summary}");
    assert_eq!(summary.tables.len(), 2, "two tables in the summary: {summary}");
    assert_eq!(archive::validate(&config, &Scope::default(), true, false).await.unwrap(), ExitCode::SUCCESS);
    let into = RestoreArgs { into: Some("back.bc".into()), ..args(&db.name, "b.c") };
    assert_eq!(restore(&config, into).await, ExitCode::SUCCESS);
    let back: Vec<(String, i64)> = sqlx::query_as("SELECT who, count(*) FROM back.bc GROUP BY who").fetch_all(&db.pool).await.unwrap();
    assert_eq!(back, [("table b.c".to_string(), 30)]);
}

/// Tables change over the years an archive is kept: a column archived and dropped since comes
/// back in a table restored `--into`, which gets the column again.
#[tokio::test]
async fn a_column_dropped_since_archiving_comes_back_into_a_new_table() {
    let (db, s3) = s3_and_db().await;
    let (builder, archived) = archived_audit_log(&db, &s3, 600).await;
    let config = load(&builder);
    assert!(archived.values().any(|r| r["user_agent"].is_string()));
    sqlx::query("ALTER TABLE audit_log DROP COLUMN user_agent").execute(&db.pool).await.unwrap();
    let into = RestoreArgs { into: Some("back.audit_log".into()), ..args(&db.name, "audit_log") };
    assert_eq!(restore(&config, into).await, ExitCode::SUCCESS);
    same(&rows(&db, "back.audit_log", "id").await, &archived);
}

#[tokio::test]
async fn only_the_rows_of_the_range_come_back_by_their_own_timestamps() {
    let (db, s3) = s3_and_db().await;
    let (builder, before) = archived_audit_log(&db, &s3, 2000).await;
    let config = load(&builder);
    let (from, to) = (
        chrono::Utc::now() - chrono::Duration::days(150),
        chrono::Utc::now() - chrono::Duration::days(120),
    );
    let a = RestoreArgs {
        from: Some(from),
        to: Some(to),
        into: Some("back.audit_log".into()),
        ..args(&db.name, "audit_log")
    };
    assert_eq!(restore(&config, a).await, ExitCode::SUCCESS);
    let back = rows(&db, "back.audit_log", "id").await;
    let want: BTreeMap<_, _> = before
        .iter()
        .filter(|(_, r)| {
            let t = r["created_at"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
            t.is_some_and(|t| t >= from && t < to)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(!want.is_empty() && want.len() < before.len());
    same(&back, &want);
}

#[tokio::test]
async fn a_restore_killed_mid_way_and_run_again_ends_in_the_same_table_without_duplicates() {
    let (db, s3) = s3_and_db().await;
    let (builder, before) = archived_audit_log(&db, &s3, 3000).await;
    let config = load(&builder);
    let (_dir, path) = config_file(&builder);
    let bin = env!("CARGO_BIN_EXE_archiver-coordinator");
    let cmd = [
        "--config",
        &path,
        "restore",
        "--database",
        &db.name,
        "--table",
        "audit_log",
        "--into",
        "back.audit_log",
        "--on-conflict",
        "fail",
    ];
    // Killed inside the transaction of the third object: two are in, the third is not.
    crash_process(bin, &cmd, "restore:3").await;
    let partial = rows(&db, "back.audit_log", "id").await;
    assert!(
        !partial.is_empty() && partial.len() < before.len(),
        "{} of {}",
        partial.len(),
        before.len()
    );
    // Run again with `fail`: a rerun that wrote any object twice would hit a conflict and fail.
    let out = tokio::process::Command::new(bin)
        .args(cmd)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    same(&rows(&db, "back.audit_log", "id").await, &before);
    // Every object once in the restore log: the killed run's two, the rerun's the rest.
    let (logged,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.restored").fetch_one(&db.pool).await.unwrap();
    let objects = manifests(&*open_store(&config).await).await.iter().map(|m| m.objects.len()).sum::<usize>();
    assert_eq!(logged as usize, objects);
    let third = tokio::process::Command::new(bin)
        .args(cmd)
        .output()
        .await
        .unwrap();
    assert!(third.status.success());
    let said = String::from_utf8_lossy(&third.stdout);
    assert!(
        said.contains(&format!("{logged} objects restored by an earlier run")),
        "{said}"
    );
    same(&rows(&db, "back.audit_log", "id").await, &before);
}

#[tokio::test]
async fn a_row_archived_twice_comes_back_as_its_last_archived_version() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 500).await;
    let before = snapshot(&db, "audit_log").await;
    let config = load(&test_config(&db, Storage::s3(&s3, "")).table(audit_table()));
    let hooks = SqlAtFirstBatch::new(&db, CHANGE_FIRST_ROW);
    run(
        &config,
        archiver_coordinator::standalone::RunOptions {
            hooks: hooks.clone(),
            ..opts(1)
        },
    )
    .await;
    assert!(
        hooks.done.load(std::sync::atomic::Ordering::SeqCst),
        "the row was changed"
    );
    // Whether this run or the next archives the changed row's new version, both end up archived.
    assert!(run(&config, opts(1)).await.all_finished());
    let store = open_store(&config).await;
    let superseded: Vec<String> = manifests(&*store)
        .await
        .iter()
        .flat_map(|m| m.objects.iter().flat_map(|o| o.superseded.clone()))
        .collect();
    assert_eq!(
        superseded.len(),
        1,
        "the manifest names the superseded row: {superseded:?}"
    );
    let id = &superseded[0];
    let versions = archived(&*store)
        .await
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .filter(|r| r["id"].as_i64().map(|i| i.to_string()).as_ref() == Some(id))
        .count();
    assert_eq!(
        versions, 2,
        "the row is archived twice: as read, and as changed"
    );
    let mut last = before[id].clone();
    last["action"] = "changed after read".into();
    let a = RestoreArgs {
        into: Some("back.audit_log".into()),
        on_conflict: "fail".into(),
        ..args(&db.name, "audit_log")
    };
    assert_eq!(restore(&config, a).await, ExitCode::SUCCESS);
    let back = rows(&db, "back.audit_log", "id").await;
    assert_eq!(back.get(id), Some(&last), "the last archived version");
    assert_eq!(back.len(), archived_since(&db, &before).await.len());
}

/// Damages the largest object in place (same size, other bytes) and adds an object no manifest
/// lists; validate must name both, and exit non-zero. Returns every object and the damaged one.
async fn damage_and_validate(
    db: &TestDb,
    s3: &archiver_testkit::S3Server,
    config: &Config,
) -> (Vec<archiver_proto::manifest::ManifestObject>, archiver_proto::manifest::ManifestObject) {
    let everything = Scope::default();
    let store = open_store(config).await;
    let objects = manifests(&*store)
        .await
        .into_iter()
        .flat_map(|m| m.objects)
        .collect::<Vec<_>>();
    let victim = objects.iter().max_by_key(|o| o.rows).unwrap().clone();
    let file = s3.bucket_dir().join(&victim.key);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff; // same size, other bytes
    std::fs::write(&file, bytes).unwrap();
    // An object no manifest lists.
    let stray = format!(
        "{}/public.audit_log/year=2020/month=01/day=01/stray.jsonl.zst",
        db.name
    );
    store
        .put(&stray, bytes::Bytes::from_static(b"not ours"))
        .await
        .unwrap();

    let report = archiver_engine::archive::validate::validate(
        &*store,
        &[archiver_engine::archive::validate::TableRef {
            database: db.name.clone(),
            schema: "public".into(),
            table: "audit_log".into(),
        }],
        &archiver_engine::setup::checkpoint_stores(config, &everything).await,
        false,
    )
    .await
    .unwrap();
    assert!(!report.ok);
    let problems: Vec<(&str, &str)> = report.tables[0]
        .problems
        .iter()
        .map(|p| (p.kind, p.key.as_str()))
        .collect();
    assert_eq!(
        problems,
        vec![
            ("checksum", victim.key.as_str()),
            ("orphan", stray.as_str())
        ]
    );
    assert_eq!(
        archive::validate(config, &everything, false, true)
            .await
            .unwrap(),
        ExitCode::FAILURE
    );

    (objects, victim)
}

#[tokio::test]
async fn a_damaged_object_is_named_by_validate_and_refused_by_restore_unless_skipped() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 2000).await;
    let builder = test_config(&db, Storage::s3(&s3, "")).table(audit_table());
    let config = load(&builder);
    assert!(run(&config, opts(2)).await.all_finished());
    let everything = Scope::default();
    assert_eq!(
        archive::validate(&config, &everything, true, false)
            .await
            .unwrap(),
        ExitCode::SUCCESS
    );

    let (objects, victim) = damage_and_validate(&db, &s3, &config).await;

    // Refused as a whole: nothing restored.
    let a = RestoreArgs {
        into: Some("back.audit_log".into()),
        ..args(&db.name, "audit_log")
    };
    let e = archive::restore(&config, a.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&victim.key) && e.contains("SHA-256") && e.contains("--skip-damaged"),
        "{e}"
    );
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass('back.audit_log') IS NOT NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!exists, "nothing was written, not even the target");
    // Asked to skip it: everything else comes back, and the run still fails.
    assert_eq!(
        restore(
            &config,
            RestoreArgs {
                skip_damaged: true,
                ..a
            }
        )
        .await,
        ExitCode::FAILURE
    );
    let back = rows(&db, "back.audit_log", "id").await;
    let total: i64 = objects.iter().map(|o| o.rows).sum();
    assert_eq!(back.len() as i64, total - victim.rows);
}

#[tokio::test]
async fn validate_works_from_the_bucket_alone_when_the_checkpoint_store_is_gone() {
    let (db, s3) = s3_and_db().await;
    let (_, archived) = archived_audit_log(&db, &s3, 800).await;
    let archived_rows = archived.len() as i64;
    // The same archive, with the database unreachable.
    let gone = Database::new(
        &db.name,
        "127.0.0.1",
        archiver_testkit::free_port(),
        "postgres",
    )
    .table(audit_table());
    let config = load(&test_config(gone, Storage::s3(&s3, "")));
    let store = open_store(&config).await;
    let stores = archiver_engine::setup::checkpoint_stores(&config, &Scope::default()).await;
    let tables = [archiver_engine::archive::validate::TableRef {
        database: db.name.clone(),
        schema: "public".into(),
        table: "audit_log".into(),
    }];
    let report = archiver_engine::archive::validate::validate(&*store, &tables, &stores, true)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.tables[0].rows, archived_rows);
    assert!(
        report.tables[0]
            .checkpoint
            .as_deref()
            .is_some_and(|w| w.contains("cannot connect")),
        "{report:?}"
    );
}
