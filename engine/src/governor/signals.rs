//! Reading the governor's signals from PostgreSQL, on connections of its own (so pool waits never
//! count as latency): the probe and what it is measured against, others waiting on our locks, the
//! number of archiver processes governing this database, and replication.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};

/// `application_name` of the governor's own connection: other processes count these to share
/// the budget.
pub const APPLICATION_NAME: &str = "audit_archiver governor";

/// The probe: a minimal commit on a connection of its own, timed ([`Conn::probe`]). Its idle baseline is the lowest
/// latency seen over the last five minutes of readings; a reading is the median of the last
/// three. An overshoot of less than 1 ms is never counted as harm (loopback noise).
#[derive(Debug, Default)]
pub struct Probe {
    history: VecDeque<Duration>,
    recent: VecDeque<Duration>,
}

impl Probe {
    const HISTORY: usize = 300;

    /// Adds one measurement; returns the ratio of the recent median over the baseline.
    pub fn add(&mut self, latency: Duration) -> f64 {
        self.history.push_back(latency);
        if self.history.len() > Self::HISTORY {
            self.history.pop_front();
        }
        self.recent.push_back(latency);
        if self.recent.len() > 3 {
            self.recent.pop_front();
        }
        let baseline = self.history.iter().min().copied().unwrap_or(latency).max(Duration::from_micros(50));
        let mut r: Vec<Duration> = self.recent.iter().copied().collect();
        r.sort();
        let median = r[r.len() / 2];
        if median <= baseline + Duration::from_millis(1) {
            return 1.0;
        }
        median.as_secs_f64() / baseline.as_secs_f64()
    }
}

/// One connection the governor keeps open, reopened when it breaks.
pub struct Conn {
    opts: PgConnectOptions,
    conn: Option<PgConnection>,
    /// What it is, for errors: `primary` or the replica's host:port.
    pub name: String,
}

impl Conn {
    pub fn new(opts: PgConnectOptions, name: String) -> Self {
        Conn { opts: opts.application_name(APPLICATION_NAME), conn: None, name }
    }

    pub async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(self.opts.connect().await?);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Forgets a connection that failed, so the next use reconnects.
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// How long a minimal write transaction takes: one that only takes a transaction id, so its
    /// commit record must be flushed like anyone's. It writes no row; it waits where others'
    /// commits wait (WAL flush, CPU), which is where the archiver's deletes would hurt them.
    pub async fn probe(&mut self) -> Result<Duration, sqlx::Error> {
        let conn = self.get().await?;
        let t = Instant::now();
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query("SELECT txid_current()").execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(t.elapsed())
    }
}

/// What the primary says: sessions of others waiting on locks held by an archiver session, the
/// number of archiver processes governing this database, and the worst `replay_lag` of its
/// streaming physical replicas (logical subscribers and base backups are not replicas to wait
/// for).
pub async fn primary(conn: &mut PgConnection) -> Result<(u32, u32, Option<Duration>), sqlx::Error> {
    let (waiters, governors, lag): (i64, i64, Option<f64>) = sqlx::query_as(
        "SELECT
            (SELECT count(*) FROM pg_stat_activity a
              WHERE a.wait_event_type = 'Lock' AND a.application_name NOT LIKE 'audit_archiver%'
                AND EXISTS (SELECT 1 FROM unnest(pg_blocking_pids(a.pid)) AS b(pid)
                            JOIN pg_stat_activity o ON o.pid = b.pid
                            WHERE o.application_name LIKE 'audit_archiver%')),
            (SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()),
            (SELECT extract(epoch FROM max(r.replay_lag))::float8 FROM pg_stat_replication r
              WHERE r.state = 'streaming'
                AND NOT EXISTS (SELECT 1 FROM pg_replication_slots s WHERE s.active_pid = r.pid AND s.slot_type = 'logical'))",
    )
    .bind(APPLICATION_NAME)
    .fetch_one(conn)
    .await?;
    Ok((waiters as u32, governors.max(1) as u32, lag.map(Duration::from_secs_f64)))
}

/// What a replica says: whether replay is paused, and its lag (0 when it has replayed all it
/// received: an idle primary is not lag).
pub async fn replica(conn: &mut PgConnection) -> Result<(bool, Duration), sqlx::Error> {
    let (paused, lag): (bool, Option<f64>) = sqlx::query_as(
        "SELECT pg_is_wal_replay_paused(),
                CASE WHEN pg_last_wal_receive_lsn() IS NULL OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                     ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END",
    )
    .fetch_one(conn)
    .await?;
    Ok((paused, Duration::from_secs_f64(lag.unwrap_or(0.0).max(0.0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_compares_the_recent_median_with_the_best_seen() {
        let mut p = Probe::default();
        let ms = |n: u64| Duration::from_micros(n);
        for _ in 0..10 {
            assert_eq!(p.add(ms(200)), 1.0);
        }
        assert_eq!(p.add(ms(900)), 1.0, "under a millisecond over the baseline is noise");
        assert_eq!(p.add(ms(5_000)), 1.0, "one slow reading of three is not the median");
        let r = p.add(ms(5_000));
        assert!((r - 25.0).abs() < 1e-9, "{r}");
    }
}
