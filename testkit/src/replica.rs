//! The streaming replica of the local PostgreSQL that the replica tests read from: made and
//! started (once, idempotently) by `testkit/replica.sh`, on 127.0.0.1:5433 unless
//! `ARCHIVER_REPLICA_PORT` says otherwise. Databases a test creates on the primary appear there
//! by replication.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub fn port() -> u16 {
    std::env::var("ARCHIVER_REPLICA_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(5433)
}

/// Makes sure the replica runs (running `testkit/replica.sh` if it does not), then connects to
/// `database` on it once replication has brought that database over.
pub async fn connect(database: &str) -> PgPool {
    ensure();
    let opts = PgConnectOptions::new_without_pgpass().host("127.0.0.1").port(port()).username(&crate::pg_user()).database(database);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PgPoolOptions::new().max_connections(2).connect_with(opts.clone()).await {
            Ok(p) => {
                // A test that paused replay and failed before resuming must not stall the next.
                sqlx::query("SELECT pg_wal_replay_resume()").execute(&p).await.expect("resume replay");
                return p;
            }
            Err(e) => assert!(Instant::now() < deadline, "database {database} never reached the replica: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ensure() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/replica.sh");
        let out = std::process::Command::new("bash").arg(script).output().expect("run testkit/replica.sh");
        assert!(out.status.success(), "testkit/replica.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    });
}

/// Waits until the replica has replayed everything the primary (`primary`) has committed.
pub async fn caught_up(primary: &PgPool, replica: &PgPool) {
    let (lsn,): (String,) = sqlx::query_as("SELECT pg_current_wal_lsn()::text").fetch_one(primary).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (done,): (bool,) = sqlx::query_as("SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)")
            .bind(&lsn)
            .fetch_one(replica)
            .await
            .unwrap();
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "the replica did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
