//! Distributed mode: worker processes that die mid-batch, are stopped with SIGTERM, or cannot
//! start; no row is lost or archived twice, and another worker finishes the work.

mod common;

use std::time::{Duration, Instant};

use archiver_coordinator::distributed;
use archiver_testkit::config::S3Storage;
use common::distributed_env::*;
use common::*;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_batch_is_finished_by_another_after_its_lease() {
    let env = Env::new().await;
    seeded(&env.db, 3_000).await;
    let builder = env.builder().defaults("range_interval: 400d\nbatch_size: 150").table(audit_table());
    let config = load(&builder);
    let (_dir, path) = config_file(&builder);
    let before = snapshot(&env.db, "audit_log").await;
    let bin = worker_bin();
    // Publish, then let a worker process die at several points, one after the other.
    distributed::run(&config, dist_opts(false, 300), CancellationToken::new()).await.unwrap();
    let store = open_store(&config).await;
    for crash_at in ["uploaded:1", "recorded:3", "deleted:5"] {
        crash_process(&bin, &["--config", &path, "--concurrency", "1"], crash_at).await;
        assert_nothing_lost(&before, &snapshot(&env.db, "audit_log").await, &*store).await;
    }
    // A healthy worker finishes the work once the dead one's lease (3 s) ran out.
    let summary = run_with_workers(&config, 1).await;
    assert!(summary.all_finished(), "{summary}");
    let after = snapshot(&env.db, "audit_log").await;
    let archived = assert_exactly_once(&before, &after, &*store).await;
    assert_eq!(archived.len(), before.len() - after.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_in_flight_items_back_and_exits_in_bounded_time() {
    let env = Env::new().await;
    seeded(&env.db, 3_000).await;
    let defaults = "range_interval: 400d\nbatch_size: 50\nsleep_between_batches: 0.2";
    let builder = env.builder().defaults(defaults).table(audit_table());
    let config = load(&builder);
    let (_dir, path) = config_file(&builder);
    let before = snapshot(&env.db, "audit_log").await;
    distributed::run(&config, dist_opts(false, 300), CancellationToken::new()).await.unwrap();
    let bin = worker_bin();
    let mut child = tokio::process::Command::new(&bin)
        .args(["--config", &path, "--concurrency", "2", "--shutdown-grace", "20"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it is mid-item, then ask it to stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM archiver.batches").fetch_one(&env.db.pool).await.unwrap();
        if n >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    libc_kill(child.id().unwrap() as i32);
    let status = tokio::time::timeout(Duration::from_secs(25), child.wait()).await.expect("exited in bounded time").unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    eprintln!("stopped {:.1}s after SIGTERM", t.elapsed().as_secs_f64());
    let (running,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM archiver.work_items WHERE state = 'running'").fetch_one(&env.db.pool).await.unwrap();
    assert_eq!(running, 0, "in-flight items were handed back, not left under a lease");
    assert_nothing_lost(&before, &snapshot(&env.db, "audit_log").await, &*open_store(&config).await).await;
    // Another worker picks the handed-back items up right away (no lease to wait for).
    let summary = run_with_workers(&config, 1).await;
    assert!(summary.all_finished(), "{summary}");
    assert_exactly_once(&before, &snapshot(&env.db, "audit_log").await, &*open_store(&config).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_fails_fast_naming_a_missing_bucket() {
    let env = Env::new().await;
    seeded(&env.db, 10).await;
    let missing = S3Storage { bucket: "no-such-bucket".into(), ..S3Storage::of(&env.s3, "") };
    let (_dir, path) = config_file(&env.builder().storage(missing).table(audit_table()));
    let bin = worker_bin();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&bin).args(["--config", &path]).output(),
    )
    .await
    .expect("failed fast")
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-bucket") && err.contains("does not exist"), "{err}");
    assert!(!err.contains(&env.s3.secret_key), "the secret key leaked: {err}");
}
