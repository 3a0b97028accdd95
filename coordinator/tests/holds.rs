//! Legal holds against a real PostgreSQL and S3 server: a held range is never archived or
//! deleted, not even rows read before the hold was placed, until the hold is released.

mod common;

use std::process::ExitCode;

use archiver_coordinator::archive;
use archiver_coordinator::cli::RestoreArgs;
use archiver_testkit::config::Storage;
use common::restore_env::*;
use common::*;
use serde_json::Value;

#[tokio::test]
async fn a_held_range_is_never_archived_until_released() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 1000).await;
    let config = load(&test_config(&db, Storage::s3(&s3, "")).table(audit_table()));
    let (from, to) = (
        chrono::Utc::now() - chrono::Duration::days(170),
        chrono::Utc::now() - chrono::Duration::days(130),
    );
    let held = |r: &Value| {
        let t = chrono::DateTime::parse_from_rfc3339(r["created_at"].as_str().unwrap_or("")).ok();
        t.is_some_and(|t| t >= from && t < to)
    };
    // Listing the holds of a database that never had a run reads, and creates nothing.
    let list = archiver_coordinator::cli::HoldCommand::List { database: None, all: true, json: false };
    archive::hold(&config, list).await.unwrap();
    let (store,): (bool,) = sqlx::query_as("SELECT to_regnamespace('archiver') IS NOT NULL").fetch_one(&db.pool).await.unwrap();
    assert!(!store, "hold list created the checkpoint store");
    // Placing one creates the checkpoint tables if a run has not.
    let hold = archiver_coordinator::cli::HoldCommand::Add {
        database: db.name.clone(),
        table: "audit_log".into(),
        from,
        to,
        reason: "case 42".into(),
    };
    archive::hold(&config, hold).await.unwrap();
    let before = snapshot(&db, "audit_log").await;
    let in_hold = before.values().filter(|r| held(r)).count();
    assert!(in_hold > 0);
    run(&config, opts(2)).await;
    let after = snapshot(&db, "audit_log").await;
    assert_eq!(
        after.values().filter(|r| held(r)).count(),
        in_hold,
        "held rows stay"
    );
    let archived_rows = assert_exactly_once(&before, &after, &*open_store(&config).await).await;
    assert!(
        archived_rows.values().all(|r| !held(r)),
        "no held row in the archive"
    );
    assert!(!archived_rows.is_empty());

    let (id,): (i64,) = sqlx::query_as("SELECT id FROM archiver.holds")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    archive::hold(
        &config,
        archiver_coordinator::cli::HoldCommand::Release { id, database: None },
    )
    .await
    .unwrap();
    let (by, at): (Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT released_by, released_at FROM archiver.holds")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        by.is_some() && at.is_some(),
        "who released it and when are kept"
    );
    assert!(run(&config, opts(2)).await.all_finished());
    let left: Vec<_> = snapshot(&db, "audit_log")
        .await
        .into_values()
        .filter(|r| held(r))
        .collect();
    assert!(left.is_empty(), "released: archived by the next run");
}

#[tokio::test]
async fn a_hold_placed_while_its_item_runs_keeps_even_rows_already_read() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 3000).await;
    let before = snapshot(&db, "audit_log").await;
    let config = load(&test_config(&db, Storage::s3(&s3, "")).set_default("batch_size", 20).table(audit_table()));
    let hooks = SqlAtFirstBatch::new(&db, HOLD_THE_ITEM);
    run(&config, archiver_coordinator::standalone::RunOptions { hooks: hooks.clone(), ..opts(1) }).await;
    assert!(hooks.done.load(std::sync::atomic::Ordering::SeqCst));
    let (start, end): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT range_start, range_end FROM archiver.holds").fetch_one(&db.pool).await.unwrap();
    let in_hold = |r: &Value| {
        let t = r["created_at"].as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
        t.is_some_and(|t| t >= start && t < end)
    };
    let held_before = before.values().filter(|r| in_hold(r)).count();
    let after = snapshot(&db, "audit_log").await;
    assert_eq!(after.values().filter(|r| in_hold(r)).count(), held_before, "no held row deleted, not even the batch read before the hold");
    // The batch read before the hold is archived, and named superseded: its rows are still here.
    let store = open_store(&config).await;
    let superseded: Vec<String> = manifests(&*store).await.iter().flat_map(|m| m.objects.iter().flat_map(|o| o.superseded.clone())).collect();
    assert!(!superseded.is_empty() && superseded.iter().all(|k| after.get(k).is_some_and(&in_hold)), "{superseded:?}");
    let mut ids: Vec<i64> = archived(&*store).await.into_iter().flat_map(|(_, rows)| rows).map(|r| r["id"].as_i64().unwrap()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "the held range was not read again after the hold: no row archived twice");

    // Released: the next run archives the held rows; a restore brings every row back once.
    sqlx::query("UPDATE archiver.holds SET released_at = now(), released_by = 'test'").execute(&db.pool).await.unwrap();
    assert!(run(&config, opts(1)).await.all_finished());
    let archived_rows = archived_since(&db, &before).await;
    let a = RestoreArgs { into: Some("back.audit_log".into()), on_conflict: "fail".into(), ..args(&db.name, "audit_log") };
    assert_eq!(restore(&config, a).await, ExitCode::SUCCESS);
    same(&rows(&db, "back.audit_log", "id").await, &archived_rows);
}
