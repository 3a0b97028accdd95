//! The scenarios of the load-testing guide, and `seed`, `compare` and `restore`: one file each,
//! and here what they share.
//!
//! Each one creates a scratch database and storage of its own, runs the real binaries
//! (`archiver-coordinator`, `archiver-worker`) as an operator would, samples the processes and the
//! database while they work, reads every archived row back to check that none was lost or
//! archived twice, and writes its report (see `report.rs`). Besides its own criteria, every
//! scenario fails (exit status 2) if a row was lost, archived twice, archived and left in its
//! table, or left eligible.

mod baseline;
mod compare;
mod concurrency;
mod db_impact;
mod large_batch;
mod pool_stability;
mod restore;
mod seed;
mod sustained;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use archiver_testkit::{pg_host, pg_port, pg_user};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::harness::{self, counter_sum, scrape, Env};
use crate::report::Report;
use crate::sample::{LockWait, Sample, Sampler};

pub use baseline::BaselineArgs;
pub use compare::compare;
pub use concurrency::{concurrency, ConcurrencyArgs};
pub use db_impact::{db_impact, DbImpactArgs};
pub use large_batch::large_batch;
pub use pool_stability::{pool_stability, PoolArgs};
pub use restore::{restore, RestoreArgs};
pub use seed::{seed, SeedArgs};
pub use sustained::{sustained, SustainedArgs};

/// How long a worker may take to stop after SIGTERM.
const GRACE: Duration = Duration::from_secs(90);

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

async fn seed_table(pool: &PgPool, table: &str, rows: u64, oldest: f64, newest: f64, wide: bool) -> anyhow::Result<()> {
    archiver_testkit::seed::create_audit_table(pool, "public", table).await?;
    if wide {
        archiver_testkit::seed::widen(pool, "public", table).await?;
    }
    archiver_testkit::seed::insert_rows(pool, "public", table, rows, oldest, newest).await?;
    Ok(())
}

/// Days to spread `rows` over so that a day holds about one batch and a half: batches never span
/// two days, so fewer rows per day would make every batch a partial one.
fn days_for(rows: u64, batch_size: u32) -> f64 {
    (rows as f64 / (batch_size as f64 * 1.5)).max(1.0)
}

/// Inserts `rate` rows a second until `stop`, `oldest..newest` days old; returns rows inserted.
fn spawn_inserter(
    pool: PgPool,
    table: String,
    rate: u64,
    (oldest, newest): (f64, f64),
    stop: CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    tokio::spawn(async move {
        let mut total = 0;
        if rate == 0 {
            return Ok(0);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            total += archiver_testkit::seed::append_rows(&pool, "public", &table, rate, oldest, newest).await?;
        }
        Ok(total)
    })
}

/// Errors counted by workers serving metrics on `ports`.
async fn worker_errors(ports: &[u16]) -> anyhow::Result<u64> {
    let mut n = 0.0;
    for p in ports {
        n += counter_sum(&scrape(*p).await.context("scraping a worker's /metrics")?, "archiver_errors_total");
    }
    Ok(n as u64)
}

fn pool_for(database: &str, size: u32) -> PgPool {
    let opts = PgConnectOptions::new().host(&pg_host()).port(pg_port()).username(&pg_user()).database(database);
    PgPoolOptions::new().max_connections(size).connect_lazy_with(opts.application_name("archiver_loadtest"))
}

pub fn table_names(prefix: &str, n: usize) -> Vec<String> {
    if n == 1 { vec![prefix.to_string()] } else { (1..=n).map(|i| format!("{prefix}_{i}")).collect() }
}

/// `archiver-coordinator run --wait` on a blocking thread: the run's own result, or an error if
/// the thread panicked.
async fn run_wait(env: &Arc<Env>, config: &Path) -> anyhow::Result<anyhow::Result<()>> {
    let (e, c) = (env.clone(), config.to_path_buf());
    Ok(tokio::task::spawn_blocking(move || e.run_coordinator(&c, &["run", "--wait"])).await?)
}

/// Samples the archiver's processes and database every `every`, counting rows archived.
fn sampler(env: &Arc<Env>, every: Duration) -> Sampler {
    let e = env.clone();
    Sampler::start(env.db.pool.clone(), every, move || {
        let e = e.clone();
        async move { e.archived_rows().await }
    })
}

/// Completes the report with what every scenario measured, prints it and writes it.
fn finish(mut r: Report, env: &Env, correctness: harness::Correctness, (samples, lock_waits): (Vec<Sample>, Vec<LockWait>)) -> Report {
    r.correctness = correctness;
    r.samples = samples;
    r.lock_waits = lock_waits;
    if let Err(e) = r.write(&env.out) {
        eprintln!("error: writing the report: {e:#}");
    }
    r
}

/// Waits for the child and returns its exit status and its peak resident set (KiB).
///
/// The peak is the child's own `VmHWM`, read every 10 ms while it runs, not wait4's `ru_maxrss`:
/// Linux carries the high-water mark of the memory a process replaced at exec into `ru_maxrss`,
/// and a child spawned with `posix_spawn` (as std does) replaces ours, so `ru_maxrss` is never
/// below this process's own peak (reading every archived object back, for one). wait4's figure is
/// used only when the child ended before a first reading.
pub fn wait_with_peak_rss(pid: libc::pid_t) -> anyhow::Result<(i32, i64)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(hwm_kb(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child; status and usage are valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    done.store(true, Ordering::Relaxed);
    let polled = watcher.join().unwrap_or(0);
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    Ok((code, if polled > 0 { polled } else { usage.ru_maxrss }))
}

/// The peak resident set (`VmHWM`, KiB) of a running process since its exec.
fn hwm_kb(pid: libc::pid_t) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by wait_with_peak_rss (wait4)
    fn the_peak_rss_is_the_childs_own_not_ours() {
        // This process holds 200 MB at its peak; a child that holds next to nothing must not
        // inherit that figure.
        let ballast = vec![1u8; 200 << 20];
        assert!(ballast.iter().step_by(4096).all(|b| *b == 1));
        drop(ballast);
        let child = std::process::Command::new("sleep").arg("0.3").spawn().unwrap();
        let (code, kb) = wait_with_peak_rss(child.id() as libc::pid_t).unwrap();
        assert_eq!(code, 0);
        assert!(kb > 0 && kb < 50 * 1024, "{kb} KiB");
    }

    #[test]
    fn table_names_number_only_several() {
        assert_eq!(table_names("t", 1), ["t"]);
        assert_eq!(table_names("t", 2), ["t_1", "t_2"]);
    }
}
