//! `pool-stability`: repeated coordinator runs against one long-lived `archiver-worker`; after
//! each run its connections must come back to the baseline once the idle timeout closed them.
//!
//! Pass criteria: no connection error; the pools stay within their limits (the worker's and the
//! coordinator's); the archiver's connection count is exactly the baseline after every run.
//! Judged only over 10+ runs with the guide's large pool (10+ connections).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::{bar, finish, run_wait, sampler, seed_table, worker_errors, GRACE};
use crate::evidence::{Requirement, MIN_POOL_RUNS, MIN_POOL_SIZE};
use crate::harness::{self, stop, wait_ready, Amqp, Common, Env};
use crate::report::{kv, thousands, Criterion, Report};
use crate::sample::{archiver_connections, max_connections};

#[derive(Debug, Clone, clap::Args)]
pub struct PoolArgs {
    /// Coordinator runs against the one worker (a verdict needs 10 or more).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Rows arriving past the cutoff before each run.
    #[arg(long, default_value_t = 20_000)]
    pub rows: u64,
    /// `connection_pool_size` (the guide: 10+).
    #[arg(long, default_value_t = 10)]
    pub pool_size: u32,
    /// The worker's --concurrency.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 5_000)]
    pub batch_size: u32,
    /// `connection_idle_timeout`: how soon unused connections close.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub idle_timeout: Duration,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub amqp: Amqp,
}

/// The archiver's connection count once it stopped changing: unchanged for two idle timeouts
/// (at most ten timeouts and 30 s).
async fn settled_connections(pool: &PgPool, idle: Duration) -> anyhow::Result<i64> {
    let count = || archiver_connections(pool);
    let deadline = Instant::now() + idle * 10 + Duration::from_secs(30);
    let mut last = count().await?;
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < idle * 2 + Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = count().await?;
        if n != last {
            (last, since) = (n, Instant::now());
        }
    }
    Ok(last)
}

pub async fn pool_stability(a: PoolArgs) -> anyhow::Result<Report> {
    let env = Arc::new(Env::new("pool-stability", &a.common, Some(&a.amqp)).await?);
    let table = "audit_pool".to_string();
    seed_table(&env.db.pool, &table, 0, 91.0, 91.0, false).await?;
    let config = env
        .config(std::slice::from_ref(&table))?
        .set_default("batch_size", a.batch_size)
        .set_default("connection_pool_size", a.pool_size)
        .set_default("connection_idle_timeout", format!("{}ms", a.idle_timeout.as_millis()))
        .queue(env.queue()?);
    let config = env.write_config(&config)?;
    let port = archiver_testkit::free_port();
    let mut worker = env.spawn_worker(&config, 1, a.concurrency, port)?;
    wait_ready(port, &mut worker, "archiver-worker").await?;
    let baseline = settled_connections(&env.db.pool, a.idle_timeout).await?;
    let sampler = sampler(&env, Duration::from_millis(250));
    sampler.watch(worker.id());
    let started = Instant::now();
    let progress = bar(a.runs as u64, "runs");
    let mut after = Vec::new();
    let mut failed_runs = 0;
    for run in 0..a.runs {
        // Each run's rows on days of their own, so each run plans new items.
        let oldest = 92.0 + run as f64 * 2.0;
        archiver_testkit::seed::append_rows(&env.db.pool, "public", &table, a.rows, oldest + 1.5, oldest).await?;
        if let Err(e) = run_wait(&env, &config).await? {
            eprintln!("run {}: {e:#}", run + 1);
            failed_runs += 1;
        }
        after.push(settled_connections(&env.db.pool, a.idle_timeout).await?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let errors = worker_errors(&[port]).await?;
    let (samples, lock_waits) = sampler.finish().await;
    let clean = tokio::task::spawn_blocking(move || stop(&mut worker, GRACE)).await?;
    let correctness = harness::verify(&env, &config, std::slice::from_ref(&table)).await?;
    let failed_items = env.failed_items().await;

    let mut r = Report::new("pool-stability", env.describe_storage());
    r.duration_s = secs;
    let max_conn = max_connections(&samples);
    // The worker's pool and the coordinator's.
    let limit = 2 * a.pool_size as i64;
    let returned = after.iter().all(|n| *n == baseline);
    r.errors = errors + failed_items as u64 + failed_runs + u64::from(!clean);
    r.configuration = vec![
        kv("Records", format!("{} per run, {} runs", thousands(a.rows as f64), a.runs)),
        kv("Batch size", thousands(a.batch_size as f64)),
        kv("Databases", 1),
        kv("Tables", 1),
        kv("Mode", format!("one archiver-worker --concurrency {} (pool {}, idle timeout {:?}) throughout; `run --wait` per run", a.concurrency, a.pool_size, a.idle_timeout)),
    ];
    r.performance = vec![kv("Throughput", format!("{} records/minute", thousands(correctness.archived as f64 / secs * 60.0)))];
    r.stability = vec![
        kv("Connection count at baseline (worker idle)", baseline),
        kv("Connection count after each run, settled", format!("{after:?}")),
        kv("Archiver connections (max during runs)", format!("{max_conn} of {limit} allowed")),
        kv("Connection errors / worker errors", errors),
        kv("Failed runs", failed_runs),
    ];
    let needs = || [Requirement::count("runs", a.runs as u64, MIN_POOL_RUNS), Requirement::count("pool size", a.pool_size.into(), MIN_POOL_SIZE)];
    r.criteria = vec![
        Criterion::new("connection errors", errors.to_string()).guide("none", Some(errors == 0)).ours("none", errors == 0).needs(needs()),
        Criterion::new("pool stable", format!("max {max_conn} of {limit}"))
            .guide("stable, connections released", Some(max_conn <= limit))
            .ours("within the pools' limits", max_conn <= limit)
            .needs(needs()),
        Criterion::new("back to baseline", format!("baseline {baseline}, after runs {after:?}")).ours("exactly the baseline after every run", returned).needs(needs()),
    ];
    r.figure("baseline_connections", baseline);
    r.figure("connections_after_runs", serde_json::json!(after));
    r.figure("max_connections", max_conn);
    Ok(finish(r, &env, correctness, (samples, lock_waits)))
}
