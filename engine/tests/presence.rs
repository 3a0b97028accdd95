//! A claim dies with the process that holds it: a running item whose owner's presence is gone is
//! taken over at once, while a live owner's item is never taken, whatever its lease says.

use std::time::Duration;

use archiver_engine::checkpoint::CheckpointStore;
use archiver_testkit::TestDb;
use chrono::{TimeZone, Utc};

/// Ends the connection that holds `owner`'s presence, as the death of its process would.
async fn kill_presence(db: &TestDb, owner: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l,
                (SELECT hashtextextended('audit_archiver:presence:' || $1, 0) AS k) p
         WHERE l.locktype = 'advisory' AND l.granted
           AND l.classid = ((p.k >> 32) & 4294967295)::oid AND l.objid = (p.k & 4294967295)::oid",
    )
    .bind(owner)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    n
}

#[tokio::test]
async fn a_dead_owners_item_is_taken_over_at_once_and_a_live_owners_never() {
    let db = TestDb::new().await;
    let a = CheckpointStore::new(db.pool.clone(), "archiver", true);
    a.migrate().await.unwrap();
    let range = (Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap());
    let item = a.insert_items(a.pool(), &db.name, "public", "audit_log", &[range]).await.unwrap().remove(0);
    // Two processes: each its own store value, so each holds its own presence.
    let b = CheckpointStore::new(db.pool.clone(), "archiver", true);
    let lease = Duration::from_secs(600);
    a.ensure_presence("worker-a").await.unwrap();
    b.ensure_presence("worker-b").await.unwrap();
    assert!(a.claim(item.id, "worker-a", lease).await.unwrap().is_some());
    assert!(b.claim(item.id, "worker-b", lease).await.unwrap().is_none(), "a live owner's item is not taken");
    assert_eq!(kill_presence(&db, "worker-a").await, 1);
    // The server drops the lock when the backend ends; give it a moment to finish.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let taken = loop {
        if let Some(row) = b.claim(item.id, "worker-b", lease).await.unwrap() {
            break row;
        }
        assert!(std::time::Instant::now() < deadline, "the dead owner's item was never taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(taken.lease_owner.as_deref(), Some("worker-b"));
    assert_eq!(taken.attempts, 2);
    // The taken-over owner can no longer act on the item: every write checks the owner.
    assert!(!a.heartbeat(item.id, "worker-a", lease).await.unwrap());
    assert!(!a.finish(item.id, "worker-a", "k").await.unwrap());
}
