//! Sampling over time: the archiver processes' memory and CPU (from /proc), PostgreSQL's CPU
//! (its processes, when the server runs on this machine), the archiver's connections as
//! `pg_stat_activity` shows them (`application_name = 'audit_archiver'`), lock waits (the guide's
//! blocked-locks query) and rows archived so far.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub t: f64,
    /// Resident memory of the watched archiver processes, summed (MB).
    pub rss_mb: f64,
    /// Their CPU since the previous sample, in % of one core.
    pub cpu_pct: f64,
    /// PostgreSQL's processes' CPU since the previous sample, in % of one core; None if the
    /// server is not on this machine.
    pub pg_cpu_pct: Option<f64>,
    /// The archiver's connections (`application_name = 'audit_archiver'`).
    pub connections: i64,
    /// Sessions of the scratch database waiting for a lock held by another.
    pub lock_waiting: i64,
    /// Rows archived so far.
    pub archived_rows: i64,
}

/// A lock wait seen by the blocked-locks query: who waited, on what, for how long at most.
#[derive(Debug, Clone, Serialize)]
pub struct LockWait {
    pub blocked_pid: i32,
    pub blocking_pid: i32,
    pub blocked_query: String,
    pub waited_s: f64,
}

pub struct Sampler {
    stop: CancellationToken,
    pids: Arc<Mutex<Vec<u32>>>,
    task: tokio::task::JoinHandle<(Vec<Sample>, Vec<LockWait>)>,
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces; fields resume after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident set of a process, in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// Every process named `postgres` on this machine, with its CPU ticks.
fn postgres_ticks() -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres") {
            if let Some(t) = cpu_ticks(pid) {
                out.insert(pid, t);
            }
        }
    }
    out
}

/// Whether PostgreSQL runs here (PGHOST is loopback or a socket), so its processes can be read.
fn postgres_is_local() -> bool {
    let host = archiver_testkit::pg_host();
    matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1") || host.starts_with('/')
}

/// The archiver's connections to the pool's database, as `pg_stat_activity` shows them.
pub async fn archiver_connections(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_as::<_, (i64,)>(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'audit_archiver' AND datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .map(|r| r.0)
}

/// The highest connection count sampled.
pub fn max_connections(samples: &[Sample]) -> i64 {
    samples.iter().map(|s| s.connections).max().unwrap_or(0)
}

/// The guide's blocked-locks query, with how long each blocked statement has been waiting at most.
const BLOCKED: &str = "SELECT blocked_locks.pid AS blocked_pid, blocking_locks.pid AS blocking_pid,
        blocked_activity.query AS blocked_query,
        extract(epoch FROM now() - blocked_activity.query_start)::float8 AS waited
    FROM pg_catalog.pg_locks blocked_locks
    JOIN pg_catalog.pg_stat_activity blocked_activity ON blocked_activity.pid = blocked_locks.pid
    JOIN pg_catalog.pg_locks blocking_locks ON blocking_locks.locktype = blocked_locks.locktype
        AND blocking_locks.database IS NOT DISTINCT FROM blocked_locks.database
        AND blocking_locks.relation IS NOT DISTINCT FROM blocked_locks.relation
        AND blocking_locks.page IS NOT DISTINCT FROM blocked_locks.page
        AND blocking_locks.tuple IS NOT DISTINCT FROM blocked_locks.tuple
        AND blocking_locks.virtualxid IS NOT DISTINCT FROM blocked_locks.virtualxid
        AND blocking_locks.transactionid IS NOT DISTINCT FROM blocked_locks.transactionid
        AND blocking_locks.classid IS NOT DISTINCT FROM blocked_locks.classid
        AND blocking_locks.objid IS NOT DISTINCT FROM blocked_locks.objid
        AND blocking_locks.objsubid IS NOT DISTINCT FROM blocked_locks.objsubid
        AND blocking_locks.pid != blocked_locks.pid
    JOIN pg_catalog.pg_stat_activity blocking_activity ON blocking_activity.pid = blocking_locks.pid
    WHERE NOT blocked_locks.granted AND blocked_activity.datname = current_database()";

impl Sampler {
    /// Samples every `every` until `finish`; `archived` reads rows archived so far.
    pub fn start<F, Fut>(pool: PgPool, every: Duration, archived: F) -> Sampler
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = i64> + Send,
    {
        let stop = CancellationToken::new();
        let pids = Arc::new(Mutex::new(Vec::new()));
        let (s, p) = (stop.clone(), pids.clone());
        let task = tokio::spawn(async move {
            let tps = ticks_per_second();
            let local = postgres_is_local();
            let started = Instant::now();
            let mut samples = Vec::new();
            let mut waits: HashMap<(i32, String), LockWait> = HashMap::new();
            let mut last = Instant::now();
            let mut last_proc: HashMap<u32, u64> = HashMap::new();
            let mut last_pg = if local { postgres_ticks() } else { HashMap::new() };
            loop {
                let watched: Vec<u32> = p.lock().unwrap().clone();
                let dt = last.elapsed().as_secs_f64().max(1e-3);
                last = Instant::now();
                let mut rss = 0u64;
                let mut cpu = 0u64;
                let mut now_proc = HashMap::new();
                for pid in &watched {
                    rss += rss_kb(*pid).unwrap_or(0);
                    if let Some(t) = cpu_ticks(*pid) {
                        cpu += t.saturating_sub(*last_proc.get(pid).unwrap_or(&t));
                        now_proc.insert(*pid, t);
                    }
                }
                last_proc = now_proc;
                let pg_cpu_pct = local.then(|| {
                    let now = postgres_ticks();
                    // Processes that ended between samples are not counted; new ones from 0.
                    let used: u64 = now.iter().map(|(pid, t)| t.saturating_sub(*last_pg.get(pid).unwrap_or(&0))).sum();
                    let first = samples.is_empty();
                    last_pg = now;
                    if first { 0.0 } else { used as f64 / tps / dt * 100.0 }
                });
                let connections = archiver_connections(&pool).await.unwrap_or(-1);
                let blocked: Vec<(i32, i32, String, f64)> = sqlx::query_as(BLOCKED).fetch_all(&pool).await.unwrap_or_default();
                let blocked_pids: HashSet<i32> = blocked.iter().map(|b| b.0).collect();
                for (bp, bk, q, w) in blocked {
                    let e = waits.entry((bp, q.clone())).or_insert(LockWait { blocked_pid: bp, blocking_pid: bk, blocked_query: q, waited_s: 0.0 });
                    e.waited_s = e.waited_s.max(w);
                }
                samples.push(Sample {
                    t: started.elapsed().as_secs_f64(),
                    rss_mb: rss as f64 / 1024.0,
                    cpu_pct: cpu as f64 / tps / dt * 100.0,
                    pg_cpu_pct,
                    connections,
                    lock_waiting: blocked_pids.len() as i64,
                    archived_rows: archived().await,
                });
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = s.cancelled() => break,
                }
            }
            (samples, waits.into_values().collect())
        });
        Sampler { stop, pids, task }
    }

    /// Adds an archiver process to watch.
    pub fn watch(&self, pid: u32) {
        self.pids.lock().unwrap().push(pid);
    }

    pub async fn finish(self) -> (Vec<Sample>, Vec<LockWait>) {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

/// Summary figures of a series.
pub fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

pub fn max(xs: impl Iterator<Item = f64>) -> f64 {
    xs.fold(0.0, f64::max)
}

/// The median of unsorted values (the mean of the middle two of an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `q`-quantile (0..=1) of unsorted values, nearest rank.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_kb(me).is_some_and(|kb| kb > 0));
        assert!(cpu_ticks(me).is_some());
    }
}
