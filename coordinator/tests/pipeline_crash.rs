//! Standalone mode interrupted at every point of the pipeline, in-process and by killing the
//! process: after the lease runs out the next run resumes, and no row is lost or archived twice.

mod common;

use std::time::Duration;

use archiver_coordinator::standalone::RunOptions;
use archiver_engine::pipeline::Point;
use common::*;

/// Crash the worker at every point of the pipeline, then resume: no row lost or duplicated.
async fn crash_and_resume(point: Point, seq: i32) {
    // Several batches per item, so the crash lands mid-item.
    crash_and_resume_with(point, seq, "range_interval: 30d\nbatch_size: 200").await;
}

async fn crash_and_resume_with(point: Point, seq: i32, defaults: &str) {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 4_000).await;
    let config = load(&test_config(&db, Storage::s3(&s3, "p")).defaults(defaults).table(audit_table()));
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
    let (counted,): (i64,) = sqlx::query_as("SELECT coalesce(sum(deleted_count), 0)::bigint FROM archiver.batches").fetch_one(&db.pool).await.unwrap();
    assert_eq!(counted as usize, eligible, "the batches' deleted counts add up to the rows deleted, across attempts");
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

/// Between two delete transactions of one batch: month partitions make an item of each month and
/// batches of about 600 rows, deleted in chunks of 500 and the rest (the first full month's
/// batch 0 is the first to have two chunks). The resumed attempt deletes the rest and counts
/// what the interrupted one deleted (the manifests' totals are checked against the archive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_delete_chunks() {
    crash_and_resume_with(Point::DeleteChunk, 0, "range_interval: 400d\nbatch_size: 1000\npartition: month").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_delete() {
    crash_and_resume(Point::Deleted, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_manifest_before_done() {
    crash_and_resume(Point::ManifestWritten, -1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_objects_of_an_interrupted_attempt_are_removed() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 1_000).await;
    let config = load(&test_config(&db, Storage::s3(&s3, "")).defaults("range_interval: 400d\nbatch_size: 100").table(audit_table()));
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
    // An object of a later claim of the same item (as if another process had taken the item over
    // and uploaded it, not yet recorded): no earlier claim may remove it.
    assert!(stray.contains("-a1-b000003."), "{stray}");
    let later = stray.replace("-a1-b000003.", "-a9-b000003.");
    store.put(&later, bytes::Bytes::from_static(b"a later claim's object")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert!(run(&config, opts(1)).await.all_finished());
    assert!(store.head(&stray).await.unwrap().is_none(), "the stray object {stray} was removed");
    assert!(store.head(&later).await.unwrap().is_some(), "a later claim's object {later} was left alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_killed_mid_batch_resumes_without_loss_or_duplicates() {
    let (db, s3) = s3_and_db().await;
    seeded(&db, 3_000).await;
    let builder = test_config(&db, Storage::s3(&s3, "k")).defaults("range_interval: 400d\nbatch_size: 150").table(audit_table());
    let (_dir, path) = builder.write_temp();
    let config = parse(&std::fs::read_to_string(&path).unwrap());
    let store = open_store(&config).await;
    let before = snapshot(&db, "audit_log").await;
    let bin = env!("CARGO_BIN_EXE_archiver-coordinator");
    for crash_at in ["recorded:2", "uploaded:5"] {
        crash_process(bin, &["--config", path.to_str().unwrap(), "run", "--workers", "1"], crash_at).await;
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
