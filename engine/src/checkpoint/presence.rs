//! Presence: a claim dies with the process that holds it.
//!
//! Each process that claims items holds, on one connection of its own to each checkpoint store,
//! a session-level advisory lock named after its worker id for as long as it lives. PostgreSQL
//! drops the lock the moment that connection ends, which a killed process's does at once, so
//! another process may take over a running item whose owner holds no presence lock without
//! waiting for its lease to expire (see `CheckpointStore::claim`). Two live processes still never
//! share an item: a live owner's lock is there. The lease stays the rule when the owner's
//! presence cannot be judged, e.g. a network partition that leaves its connection half open; and
//! every write of a worker checks that it still owns the item, so a process taken over (wrongly
//! believed dead) changes nothing.

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio_util::sync::CancellationToken;

/// The advisory lock key of `owner`'s presence, as SQL over a text parameter.
pub(super) const KEY_SQL: &str = "hashtextextended('audit_archiver:presence:' || $1, 0)";

/// SQL true when the owner named by `owner_expr` holds its presence lock in this database.
pub(super) fn alive_sql(owner_expr: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_locks l, (SELECT hashtextextended('audit_archiver:presence:' || {owner_expr}, 0) AS k) p
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.classid = ((p.k >> 32) & 4294967295)::oid AND l.objid = (p.k & 4294967295)::oid)"
    )
}

/// Holds `owner`'s presence lock until `stop` is cancelled or the process exits. Returns once the
/// lock is first held; a lost connection is reopened (and the lock taken again) in the background.
pub(super) async fn hold(opts: PgConnectOptions, owner: String, stop: CancellationToken) -> Result<(), sqlx::Error> {
    let conn = take(&opts, &owner).await?;
    tokio::spawn(keep(conn, opts, owner, stop));
    Ok(())
}

async fn take(opts: &PgConnectOptions, owner: &str) -> Result<PgConnection, sqlx::Error> {
    let mut conn = opts.clone().application_name("audit_archiver presence").connect().await?;
    sqlx::query(&format!("SELECT pg_advisory_lock({KEY_SQL})")).bind(owner).execute(&mut conn).await?;
    Ok(conn)
}

async fn keep(mut conn: PgConnection, opts: PgConnectOptions, owner: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = conn.close().await;
                return;
            }
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        if conn.ping().await.is_ok() {
            continue;
        }
        tracing::warn!(%owner, "the presence connection to the checkpoint store was lost; reopening it");
        loop {
            match take(&opts, &owner).await {
                Ok(c) => {
                    conn = c;
                    break;
                }
                Err(e) => {
                    tracing::warn!(%owner, error = %e, "cannot reopen the presence connection; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        }
    }
}
