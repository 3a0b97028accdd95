//! `concurrency`: several tables archived in parallel by several `archiver-worker` processes
//! over RabbitMQ, each with its own connection pool; one `archiver-coordinator run --wait`.
//!
//! Pass criteria: throughput over 1,000,000 rows a minute on 2 cores (the guide: over 5,000), and
//! no pool exhaustion: no worker error, and never more connections than the pools allow. Judged
//! only on the guide's setup (5+ tables of 100,000+ rows) over a run of 10 s or more.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{days_for, finish, run_wait, sampler, seed_table, table_names, worker_errors, GRACE};
use crate::evidence::{Requirement, MIN_CONCURRENCY_ROWS, MIN_CONCURRENCY_TABLES, MIN_TIMED_S};
use crate::harness::{self, stop, wait_ready, Amqp, Common, Env};
use crate::report::{kv, thousands, Criterion, Report};
use crate::sample::{max, max_connections, mean};

#[derive(Debug, Clone, clap::Args)]
pub struct ConcurrencyArgs {
    #[arg(long, default_value_t = 5)]
    pub tables: usize,
    /// Rows per table, all past the cutoff.
    #[arg(long, default_value_t = 100_000)]
    pub rows: u64,
    /// archiver-worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Each worker's --concurrency.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: u32,
    /// Connections per process (`connection_pool_size`).
    #[arg(long, default_value_t = 5)]
    pub pool_size: u32,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub amqp: Amqp,
}

pub async fn concurrency(a: ConcurrencyArgs) -> anyhow::Result<Report> {
    let env = Arc::new(Env::new("concurrency", &a.common, Some(&a.amqp)).await?);
    let tables = table_names("audit_conc", a.tables);
    eprintln!("seeding {} tables of {} rows ...", a.tables, a.rows);
    for t in &tables {
        seed_table(&env.db.pool, t, a.rows, 91.0 + days_for(a.rows, a.batch_size), 91.0, false).await?;
    }
    sqlx::query("CHECKPOINT").execute(&env.db.pool).await?;
    let config = env.config(&tables)?.set_default("batch_size", a.batch_size).set_default("connection_pool_size", a.pool_size);
    let config = env.write_config(&config.queue(env.queue()?))?;
    let ports: Vec<u16> = (0..a.workers).map(|_| archiver_testkit::free_port()).collect();
    let mut workers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut w = env.spawn_worker(&config, i + 1, a.concurrency, *port)?;
        wait_ready(*port, &mut w, "archiver-worker").await?;
        workers.push(w);
    }
    let sampler = sampler(&env, Duration::from_millis(500));
    for w in &workers {
        sampler.watch(w.id());
    }
    eprintln!("archiving with {} workers × {} ...", a.workers, a.concurrency);
    let started = Instant::now();
    let run = run_wait(&env, &config).await?;
    let secs = started.elapsed().as_secs_f64();
    let errors = worker_errors(&ports).await?;
    let (samples, lock_waits) = sampler.finish().await;
    let mut clean = true;
    for mut w in workers {
        clean &= tokio::task::spawn_blocking(move || stop(&mut w, GRACE)).await?;
    }
    let correctness = harness::verify(&env, &config, &tables).await?;
    let failed_items = env.failed_items().await;

    let mut r = Report::new("concurrency", env.describe_storage());
    r.duration_s = secs;
    let rate = correctness.archived as f64 / secs * 60.0;
    let peak = max(samples.iter().map(|s| s.rss_mb));
    let cpu = mean(samples.iter().map(|s| s.cpu_pct));
    let max_conn = max_connections(&samples);
    // Every worker's pool, and the coordinator's.
    let limit = (a.workers as i64 + 1) * a.pool_size.max(2) as i64;
    let run_failed = run.is_err();
    if let Err(e) = &run {
        eprintln!("{e:#}");
    }
    r.errors = errors + failed_items as u64 + u64::from(run_failed) + u64::from(!clean);
    r.configuration = vec![
        kv("Records", format!("{} ({} per table)", thousands((a.rows * a.tables as u64) as f64), thousands(a.rows as f64))),
        kv("Batch size", thousands(a.batch_size as f64)),
        kv("Databases", 1),
        kv("Tables", a.tables),
        kv("Mode", format!("distributed: {} archiver-worker processes × --concurrency {}, pool {} each", a.workers, a.concurrency, a.pool_size)),
    ];
    r.performance = vec![
        kv("Throughput", format!("{} records/minute", thousands(rate))),
        kv("Memory usage", format!("{peak:.1} MB (peak RSS, all workers)")),
        kv("CPU usage", format!("{cpu:.1}% of one core (workers, average)")),
    ];
    r.stability = vec![
        kv("Worker errors", errors),
        kv("Failed work items", failed_items),
        kv("Archiver connections (max)", format!("{max_conn} of {limit} allowed")),
        kv("Crashes", u64::from(!clean)),
    ];
    r.criteria = criteria(&a, secs, rate, (errors, max_conn, limit));
    r.figure("records_per_minute", rate);
    r.figure("seconds", secs);
    r.figure("peak_rss_mb", peak);
    r.figure("max_connections", max_conn);
    Ok(finish(r, &env, correctness, (samples, lock_waits)))
}

/// Throughput and pool exhaustion, judged on the guide's setup (5+ tables of 100,000+ rows) over
/// a run of at least 10 s.
fn criteria(a: &ConcurrencyArgs, secs: f64, rate: f64, (errors, max_conn, limit): (u64, i64, i64)) -> Vec<Criterion> {
    let no_exhaustion = errors == 0 && max_conn <= limit;
    let needs = || {
        [
            Requirement::count("tables", a.tables as u64, MIN_CONCURRENCY_TABLES),
            Requirement::count("rows per table", a.rows, MIN_CONCURRENCY_ROWS),
            Requirement::secs("run", secs, MIN_TIMED_S),
        ]
    };
    vec![
        Criterion::new("throughput", format!("{} rows/min", thousands(rate)))
            .guide(">5,000 rows/min", Some(rate > 5_000.0))
            .ours(">1,000,000 rows/min on 2 cores", rate > 1_000_000.0)
            .needs(needs()),
        Criterion::new("pool exhaustion", format!("{errors} errors, {max_conn}/{limit} connections"))
            .guide("none", Some(no_exhaustion))
            .ours("zero errors", errors == 0)
            .needs(needs()),
    ]
}
