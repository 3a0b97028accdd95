//! The scenarios of the load-testing guide, and `seed` and `compare`.
//!
//! Each one creates a scratch database and storage of its own, runs the real binaries
//! (`archiver-coordinator`, `archiver-worker`) as an operator would, samples the processes and the
//! database while they work, reads every archived row back to check that none was lost or
//! archived twice, and writes its report (see `report.rs`).

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use archiver_testkit::{pg_host, pg_port, pg_user};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::harness::{self, counter_sum, free_port, scrape, stop, wait_ready, Common, Env};
use crate::report::{kv, thousands, Criterion, Plot, Report};
use crate::sample::{archiver_connections, max, max_connections, mean, quantile, LockWait, Sample, Sampler};

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

// ---------------------------------------------------------------------------------------------
// seed

#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Database on PGHOST/PGPORT/PGUSER (PGPASSWORD) to seed; created if missing.
    #[arg(long)]
    pub database: String,
    /// Tables to create: `PREFIX` for one, `PREFIX_1` … `PREFIX_N` for more. Existing ones are
    /// dropped.
    #[arg(long, default_value_t = 1)]
    pub tables: usize,
    #[arg(long, default_value = "audit_load")]
    pub prefix: String,
    /// Rows per table.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Age of the oldest row, in days.
    #[arg(long, default_value_t = 120.0)]
    pub oldest_days: f64,
    /// Age of the newest row, in days.
    #[arg(long, default_value_t = 0.0)]
    pub newest_days: f64,
    /// Add a `details` column of 0 to 3 KB of text per row.
    #[arg(long)]
    pub wide: bool,
    /// Then keep inserting fresh rows at this rate (rows/s per table) …
    #[arg(long)]
    pub keep_inserting: Option<u64>,
    /// … for this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub insert_for: Option<Duration>,
}

pub fn table_names(prefix: &str, n: usize) -> Vec<String> {
    if n == 1 { vec![prefix.to_string()] } else { (1..=n).map(|i| format!("{prefix}_{i}")).collect() }
}

pub async fn seed(a: SeedArgs) -> anyhow::Result<()> {
    let admin = pool_for("postgres", 1);
    let exists: Option<(i32,)> =
        sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1").bind(&a.database).fetch_optional(&admin).await?;
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE {}", archiver_engine::source::db::quote_ident(&a.database))).execute(&admin).await?;
    }
    let pool = pool_for(&a.database, 4);
    let t = Instant::now();
    let tables = table_names(&a.prefix, a.tables);
    for table in &tables {
        seed_table(&pool, table, a.rows, a.oldest_days, a.newest_days, a.wide).await?;
        eprintln!("{}.public.{table}: {} rows from {} to {} days old", a.database, a.rows, a.oldest_days, a.newest_days);
    }
    eprintln!("seeded in {:.1}s ({:.0} rows/s)", t.elapsed().as_secs_f64(), (a.rows * tables.len() as u64) as f64 / t.elapsed().as_secs_f64());
    if let Some(rate) = a.keep_inserting {
        let stop = CancellationToken::new();
        let inserters: Vec<_> =
            tables.iter().map(|t| spawn_inserter(pool.clone(), t.clone(), rate, (0.0, 0.0), stop.clone())).collect();
        eprintln!("inserting {rate} fresh rows/s into each table; Ctrl-C stops");
        match a.insert_for {
            Some(d) => tokio::select! { _ = tokio::time::sleep(d) => {}, _ = tokio::signal::ctrl_c() => {} },
            None => tokio::signal::ctrl_c().await?,
        }
        stop.cancel();
        let mut total = 0;
        for i in inserters {
            total += i.await??;
        }
        eprintln!("inserted {total} fresh rows");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// sustained

#[derive(Debug, Clone, clap::Args)]
pub struct SustainedArgs {
    /// How long the archiver runs while rows keep arriving (the guide: 24h).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub duration: Duration,
    /// Rows seeded before the start (all past the retention cutoff).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Rows a second that arrive past the cutoff while it runs.
    #[arg(long, default_value_t = 500)]
    pub insert_rate: u64,
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: u32,
    /// The worker's --concurrency.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Pause between two coordinator runs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub interval: Duration,
    /// Share of the duration counted as warm-up before memory growth is measured.
    #[arg(long, default_value_t = 0.2)]
    pub warm_up: f64,
}

/// Memory growth after warm-up, in %: the mean RSS over the last tenth of the run against the
/// mean over the tenth that follows the warm-up.
pub fn memory_growth(samples: &[crate::sample::Sample], warm_up: f64) -> f64 {
    let Some(end) = samples.last().map(|s| s.t) else { return 0.0 };
    let (w, tenth) = (end * warm_up, end / 10.0);
    let base = mean(samples.iter().filter(|s| s.t >= w && s.t <= w + tenth).map(|s| s.rss_mb));
    let last = mean(samples.iter().filter(|s| s.t >= end - tenth).map(|s| s.rss_mb));
    if base > 0.0 { (last - base) / base * 100.0 } else { 0.0 }
}

pub async fn sustained(a: SustainedArgs, common: Common) -> anyhow::Result<Report> {
    let env = Env::new("sustained", &common).await?;
    let table = "audit_sustained".to_string();
    eprintln!("seeding {} rows ...", a.rows);
    seed_table(&env.db.pool, &table, a.rows, 91.0 + days_for(a.rows, a.batch_size), 91.0, false).await?;
    archiver_testkit::seed::append_rows(&env.db.pool, "public", &table, a.rows / 10, 89.0, 0.0).await?;
    let defaults = [format!("batch_size: {}", a.batch_size)];
    let config = env.config("config.yaml", std::slice::from_ref(&table), &defaults, true)?;
    let port = free_port();
    let mut worker = env.spawn_worker(&config, 1, a.concurrency, port)?;
    wait_ready(port, &mut worker, "archiver-worker").await?;
    let env = Arc::new(env);
    let sampler = sampler(&env, (a.duration / 300).clamp(Duration::from_millis(500), Duration::from_secs(30)));
    sampler.watch(worker.id());
    let stop_inserting = CancellationToken::new();
    let inserter = spawn_inserter(env.db.pool.clone(), table.clone(), a.insert_rate, (90.5, 90.05), stop_inserting.clone());
    let started = Instant::now();
    let progress = bar(a.duration.as_secs(), "s of sustained load");
    let (mut runs, mut failed_runs) = (0u64, 0u64);
    while started.elapsed() < a.duration {
        let (e, c) = (env.clone(), config.clone());
        let ok = tokio::task::spawn_blocking(move || e.run_coordinator(&c, &["run", "--wait"])).await?;
        runs += 1;
        if let Err(e) = ok {
            eprintln!("run {runs}: {e:#}");
            failed_runs += 1;
        }
        progress.set_position(started.elapsed().as_secs().min(a.duration.as_secs()));
        progress.set_message(format!("s; {} rows archived, run {runs}", thousands(env.archived_rows().await as f64)));
        tokio::time::sleep(a.interval).await;
    }
    progress.finish_and_clear();
    stop_inserting.cancel();
    let inserted = inserter.await??;
    let (e, c) = (env.clone(), config.clone());
    if tokio::task::spawn_blocking(move || e.run_coordinator(&c, &["run", "--wait"])).await?.is_err() {
        failed_runs += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let worker_errors = worker_errors(&[port]).await?;
    let (samples, lock_waits) = sampler.finish().await;
    let clean_exit = tokio::task::spawn_blocking(move || stop(&mut worker, GRACE)).await?;
    let correctness = harness::verify(&env, &config, std::slice::from_ref(&table)).await?;

    let mut r = Report::new("sustained", env.describe_storage());
    r.duration_s = elapsed;
    let growth = memory_growth(&samples, a.warm_up);
    let peak = max(samples.iter().map(|s| s.rss_mb));
    let cpu = mean(samples.iter().map(|s| s.cpu_pct));
    let max_conn = max_connections(&samples);
    let failed_items = env.failed_items().await;
    r.errors = worker_errors + failed_runs + failed_items as u64 + u64::from(!clean_exit);
    let rate = correctness.archived as f64 / elapsed * 60.0;
    r.configuration = vec![
        kv("Records", format!("{} seeded, {} arriving past the cutoff while it ran ({}/s)", thousands(a.rows as f64), thousands(inserted as f64), a.insert_rate)),
        kv("Batch size", thousands(a.batch_size as f64)),
        kv("Databases", 1),
        kv("Tables", 1),
        kv("Mode", format!("distributed: one archiver-worker --concurrency {} running throughout; `archiver-coordinator run --wait` every {:?}", a.concurrency, a.interval)),
    ];
    r.performance = vec![
        kv("Throughput", format!("{} records/minute", thousands(rate))),
        kv("Memory usage", format!("{peak:.1} MB (peak RSS of the worker)")),
        kv("CPU usage", format!("{cpu:.1}% of one core (worker, average)")),
        kv("Coordinator runs", runs + 1),
    ];
    r.stability = vec![
        kv("Memory growth after warm-up", format!("{growth:+.1}% (warm-up: first {:.0}% of the run)", a.warm_up * 100.0)),
        kv("Connection errors / worker errors", worker_errors),
        kv("Crashes", if clean_exit { "0 (the worker exited cleanly on SIGTERM)" } else { "1 (the worker did not exit cleanly)" }),
        kv("Failed runs", failed_runs),
        kv("Failed work items", failed_items),
        kv("Archiver connections (max)", max_conn),
    ];
    r.criteria = vec![
        Criterion::new("memory growth", format!("{growth:+.1}%"), "<50% over the run", Some(growth < 50.0), "<5% after warm-up", growth < 5.0),
        Criterion::new("crashes and hangs", format!("{}", u64::from(!clean_exit) + failed_runs), "none", Some(clean_exit && failed_runs == 0), "none", clean_exit && failed_runs == 0),
    ];
    r.figure("records_per_minute", rate);
    r.figure("memory_growth_pct", growth);
    r.figure("peak_rss_mb", peak);
    r.figure("cpu_pct_mean", cpu);
    r.figure("rows_inserted_during_run", inserted);
    r.figure("coordinator_runs", runs + 1);
    Ok(finish(r, &env, correctness, (samples, lock_waits)))
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

// ---------------------------------------------------------------------------------------------
// concurrency

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
}

pub async fn concurrency(a: ConcurrencyArgs, common: Common) -> anyhow::Result<Report> {
    let env = Arc::new(Env::new("concurrency", &common).await?);
    let tables = table_names("audit_conc", a.tables);
    eprintln!("seeding {} tables of {} rows ...", a.tables, a.rows);
    for t in &tables {
        seed_table(&env.db.pool, t, a.rows, 91.0 + days_for(a.rows, a.batch_size), 91.0, false).await?;
    }
    sqlx::query("CHECKPOINT").execute(&env.db.pool).await?;
    let defaults = [format!("batch_size: {}", a.batch_size), format!("connection_pool_size: {}", a.pool_size)];
    let config = env.config("config.yaml", &tables, &defaults, true)?;
    let ports: Vec<u16> = (0..a.workers).map(|_| free_port()).collect();
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
    let (e, c) = (env.clone(), config.clone());
    let run = tokio::task::spawn_blocking(move || e.run_coordinator(&c, &["run", "--wait"])).await?;
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
    let no_exhaustion = errors == 0 && max_conn <= limit;
    r.criteria = vec![
        Criterion::new("throughput", format!("{} rows/min", thousands(rate)), ">5,000 rows/min", Some(rate > 5_000.0), ">1,000,000 rows/min on 2 cores", rate > 1_000_000.0),
        Criterion::new("pool exhaustion", format!("{errors} errors, {max_conn}/{limit} connections"), "none", Some(no_exhaustion), "zero errors", errors == 0),
    ];
    r.figure("records_per_minute", rate);
    r.figure("seconds", secs);
    r.figure("peak_rss_mb", peak);
    r.figure("max_connections", max_conn);
    Ok(finish(r, &env, correctness, (samples, lock_waits)))
}

// ---------------------------------------------------------------------------------------------
// large-batch and compare: the archiver against the raw baseline on identical data

#[derive(Debug, Clone, clap::Args)]
pub struct BaselineArgs {
    #[arg(long, default_value_t = 200_000)]
    pub rows: u64,
    #[arg(long, default_value_t = 50_000)]
    pub batch_size: u32,
    /// Days the rows are spread over (all past the cutoff); default: a batch and a half a day.
    #[arg(long)]
    pub days: Option<f64>,
    /// In-process workers of `archiver-coordinator run`.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

struct VsBaseline {
    baseline_secs: f64,
    baseline_bytes: u64,
    archiver_secs: f64,
    peak_rss_mb: f64,
    run_error: Option<String>,
}

async fn against_baseline(env: &Arc<Env>, a: &BaselineArgs, config: &std::path::Path) -> anyhow::Result<(VsBaseline, Sampler)> {
    let days = a.days.unwrap_or_else(|| days_for(a.rows, a.batch_size));
    eprintln!("seeding {} rows twice ...", a.rows);
    let pool = &env.db.pool;
    seed_table(pool, "audit_archiver", a.rows, 91.0 + days, 91.0, false).await?;
    sqlx::query("CREATE TABLE audit_baseline (LIKE audit_archiver INCLUDING ALL)").execute(pool).await?;
    sqlx::query("INSERT INTO audit_baseline SELECT * FROM audit_archiver").execute(pool).await?;
    for t in ["audit_archiver", "audit_baseline"] {
        sqlx::query(&format!("VACUUM ANALYZE {t}")).execute(pool).await?;
    }
    sqlx::query("CHECKPOINT").execute(pool).await?;

    // The raw baseline: what a shell one-liner does, with no safety at all.
    let out = env.out.join("baseline.jsonl.zst");
    let conn = format!("host={} port={} user={} dbname={}", pg_host(), pg_port(), pg_user(), env.db.name);
    let script = format!(
        "set -euo pipefail; psql '{conn}' -v ON_ERROR_STOP=1 -qAtc \"COPY (SELECT row_to_json(t) FROM audit_baseline t WHERE created_at < now() - interval '90 days') TO STDOUT\" | zstd -3 -q -f -o '{}'; psql '{conn}' -v ON_ERROR_STOP=1 -qc \"DELETE FROM audit_baseline WHERE created_at < now() - interval '90 days'\"",
        out.display()
    );
    let t = Instant::now();
    let status = tokio::process::Command::new("bash").arg("-c").arg(&script).status().await?;
    let baseline_secs = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the baseline (psql | zstd) failed: {status}; are psql and zstd installed?");
    }
    let baseline_bytes = std::fs::metadata(&out)?.len();
    std::fs::remove_file(&out)?;

    let sampler = sampler(env, Duration::from_millis(200));
    eprintln!("archiving with archiver-coordinator run --workers {} ...", a.workers);
    let t = Instant::now();
    let mut cmd = env.coordinator(config, &["run", "--workers", &a.workers.to_string()])?;
    // std, not tokio: wait4 must reap the child to report its peak RSS.
    let child = cmd.stdin(Stdio::null()).spawn()?;
    sampler.watch(child.id());
    let pid = child.id() as libc::pid_t;
    let (code, peak_kb) = tokio::task::spawn_blocking(move || wait_with_peak_rss(pid)).await??;
    let archiver_secs = t.elapsed().as_secs_f64();
    let run_error = (code != 0).then(|| format!("archiver-coordinator exited with status {code}"));
    Ok((VsBaseline { baseline_secs, baseline_bytes, archiver_secs, peak_rss_mb: peak_kb as f64 / 1024.0, run_error }, sampler))
}

pub async fn large_batch(a: BaselineArgs, common: Common, compare: bool) -> anyhow::Result<Report> {
    let name = if compare { "compare" } else { "large-batch" };
    let env = Arc::new(Env::new(name, &common).await?);
    let table = "audit_archiver".to_string();
    let config = env.config("config.yaml", std::slice::from_ref(&table), &[format!("batch_size: {}", a.batch_size)], false)?;
    let (m, sampler) = against_baseline(&env, &a, &config).await?;
    let (samples, lock_waits) = sampler.finish().await;
    let correctness = harness::verify(&env, &config, std::slice::from_ref(&table)).await?;

    let mut r = Report::new(name, env.describe_storage());
    r.duration_s = m.baseline_secs + m.archiver_secs;
    let base_rate = a.rows as f64 / m.baseline_secs;
    let rate = correctness.archived as f64 / m.archiver_secs;
    let ratio = rate / base_rate;
    if let Some(e) = &m.run_error {
        eprintln!("{e}");
    }
    r.errors = u64::from(m.run_error.is_some()) + env.failed_items().await as u64;
    r.configuration = vec![
        kv("Records", thousands(a.rows as f64)),
        kv("Batch size", thousands(a.batch_size as f64)),
        kv("Databases", 1),
        kv("Tables", "2 identical copies: one for the archiver, one for the raw baseline"),
        kv("Mode", format!("standalone: archiver-coordinator run --workers {}", a.workers)),
    ];
    r.performance = vec![
        kv("Throughput", format!("{} records/minute ({:.0} rows/s)", thousands(rate * 60.0), rate)),
        kv("Raw baseline", format!("{:.0} rows/s (psql COPY of row_to_json | zstd -3, then DELETE; {} bytes)", base_rate, thousands(m.baseline_bytes as f64))),
        kv("Ratio archiver / baseline", format!("{ratio:.2}")),
        kv("Memory usage", format!("{:.1} MB (peak RSS, from wait4)", m.peak_rss_mb)),
        kv("CPU usage", format!("{:.1}% of one core (average)", mean(samples.iter().map(|s| s.cpu_pct)))),
    ];
    r.stability = vec![kv("Failed runs", u64::from(m.run_error.is_some()))];
    let rpm = rate * 60.0;
    r.criteria = if compare {
        vec![Criterion::new("archiver / raw baseline", format!("{ratio:.2}"), "–", None, ">0.8", ratio > 0.8)]
    } else {
        vec![
            Criterion::new("memory", format!("{:.1} MB peak RSS", m.peak_rss_mb), "<2 GB at batch 50,000", Some(m.peak_rss_mb < 2048.0), "<64 MB peak RSS", m.peak_rss_mb < 64.0),
            Criterion::new("throughput", format!("{} rows/min, {ratio:.2} of the baseline", thousands(rpm)), ">10,000 rows/min", Some(rpm > 10_000.0), ">0.8 of the raw baseline", ratio > 0.8),
        ]
    };
    r.figure("rows", a.rows);
    r.figure("batch_size", a.batch_size);
    r.figure("baseline_rows_per_second", base_rate);
    r.figure("archiver_rows_per_second", rate);
    r.figure("ratio", ratio);
    r.figure("peak_rss_mb", m.peak_rss_mb);
    Ok(finish(r, &env, correctness, (samples, lock_waits)))
}

/// Waits for the child and returns its exit status and peak resident set (KiB) from wait4.
pub fn wait_with_peak_rss(pid: libc::pid_t) -> anyhow::Result<(i32, i64)> {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child; status and usage are valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    Ok((code, usage.ru_maxrss))
}

// ---------------------------------------------------------------------------------------------
// pool-stability

#[derive(Debug, Clone, clap::Args)]
pub struct PoolArgs {
    #[arg(long, default_value_t = 5)]
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

pub async fn pool_stability(a: PoolArgs, common: Common) -> anyhow::Result<Report> {
    let env = Arc::new(Env::new("pool-stability", &common).await?);
    let table = "audit_pool".to_string();
    seed_table(&env.db.pool, &table, 0, 91.0, 91.0, false).await?;
    let defaults = [
        format!("batch_size: {}", a.batch_size),
        format!("connection_pool_size: {}", a.pool_size),
        format!("connection_idle_timeout: {}ms", a.idle_timeout.as_millis()),
    ];
    let config = env.config("config.yaml", std::slice::from_ref(&table), &defaults, true)?;
    let port = free_port();
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
        let (e, c) = (env.clone(), config.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || e.run_coordinator(&c, &["run", "--wait"])).await? {
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
    r.criteria = vec![
        Criterion::new("connection errors", errors.to_string(), "none", Some(errors == 0), "none", errors == 0),
        Criterion::new("pool stable", format!("max {max_conn} of {limit}"), "stable, connections released", Some(max_conn <= limit), "within the pools' limits", max_conn <= limit),
        Criterion::new("back to baseline", format!("baseline {baseline}, after runs {after:?}"), "–", None, "exactly the baseline after every run", returned),
    ];
    r.figure("baseline_connections", baseline);
    r.figure("connections_after_runs", serde_json::json!(after));
    r.figure("max_connections", max_conn);
    Ok(finish(r, &env, correctness, (samples, lock_waits)))
}

// ---------------------------------------------------------------------------------------------
// db-impact

#[derive(Debug, Clone, clap::Args)]
pub struct DbImpactArgs {
    /// Rows past the cutoff (plus a fifth as many recent rows the probes read).
    #[arg(long, default_value_t = 500_000)]
    pub rows: u64,
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: u32,
    /// Length of the before and after phases.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub phase: Duration,
    /// Probe operations a second, of each kind (insert, indexed read).
    #[arg(long, default_value_t = 50)]
    pub probe_rate: u64,
    /// In-process workers of `archiver-coordinator run`.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// The archiver's `sleep_between_batches`, e.g. `500ms`; default: the archiver's default.
    #[arg(long)]
    pub sleep_between_batches: Option<String>,
    /// The archiver's `max_rows_per_second` (per work item); default: the archiver's default.
    #[arg(long)]
    pub max_rows_per_second: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Insert,
    Read,
}

/// Runs one kind of probe at `rate` a second until `stop`: (seconds since `t0`, kind, ms).
fn spawn_probe(pool: PgPool, kind: Probe, rate: u64, t0: Instant, stop: CancellationToken) -> tokio::task::JoinHandle<Vec<(f64, Probe, f64)>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let insert = "INSERT INTO audit_impact (created_at, user_id, action, table_name, record_id, new_values)
                      VALUES (now(), 1, 'PROBE', 'probes', 1, '{\"probe\": true}')";
        let read = "SELECT id, action FROM audit_impact WHERE created_at >= now() - interval '10 minutes'
                    ORDER BY created_at DESC, id DESC LIMIT 20";
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            let t = Instant::now();
            let r = match kind {
                Probe::Insert => sqlx::query(insert).execute(&pool).await.map(drop),
                Probe::Read => sqlx::query(read).fetch_all(&pool).await.map(drop),
            };
            if r.is_ok() {
                out.push((t0.elapsed().as_secs_f64(), kind, t.elapsed().as_secs_f64() * 1000.0));
            }
        }
        out
    })
}

pub async fn db_impact(a: DbImpactArgs, common: Common) -> anyhow::Result<Report> {
    let env = Arc::new(Env::new("db-impact", &common).await?);
    let table = "audit_impact".to_string();
    eprintln!("seeding {} rows ...", a.rows);
    seed_table(&env.db.pool, &table, a.rows, 91.0 + days_for(a.rows, a.batch_size), 91.0, false).await?;
    archiver_testkit::seed::insert_rows(&env.db.pool, "public", &table, a.rows / 5, 89.0, 0.0).await?;
    sqlx::query("VACUUM ANALYZE audit_impact").execute(&env.db.pool).await?;
    sqlx::query("CHECKPOINT").execute(&env.db.pool).await?;
    let mut defaults = vec![format!("batch_size: {}", a.batch_size)];
    defaults.extend(a.sleep_between_batches.as_ref().map(|d| format!("sleep_between_batches: {d}")));
    defaults.extend(a.max_rows_per_second.map(|r| format!("max_rows_per_second: {r}")));
    let throttle = match (&a.sleep_between_batches, a.max_rows_per_second) {
        (None, None) => "the default throttle".to_string(),
        (sleep, rate) => format!(
            "sleep_between_batches {}, max_rows_per_second {}",
            sleep.as_deref().unwrap_or("default"),
            rate.map_or("default".to_string(), |r| r.to_string())
        ),
    };
    let config = env.config("config.yaml", std::slice::from_ref(&table), &defaults, false)?;
    let probes = pool_for(&env.db.name, 4);
    let sampler = sampler(&env, Duration::from_millis(250));
    let t0 = Instant::now();
    let stop_probes = CancellationToken::new();
    let tasks = [Probe::Insert, Probe::Read].map(|k| spawn_probe(probes.clone(), k, a.probe_rate, t0, stop_probes.clone()));
    eprintln!("before: probing for {:?} ...", a.phase);
    tokio::time::sleep(a.phase).await;
    let during_start = t0.elapsed().as_secs_f64();
    eprintln!("during: archiving with {throttle} ...");
    let child = env.coordinator(&config, &["run", "--workers", &a.workers.to_string()])?.spawn()?;
    sampler.watch(child.id());
    let pid = child.id() as libc::pid_t;
    let (code, _) = tokio::task::spawn_blocking(move || wait_with_peak_rss(pid)).await??;
    let during_end = t0.elapsed().as_secs_f64();
    eprintln!("after: probing for {:?} ...", a.phase);
    tokio::time::sleep(a.phase).await;
    stop_probes.cancel();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let (samples, lock_waits) = sampler.finish().await;
    let correctness = harness::verify(&env, &config, std::slice::from_ref(&table)).await?;

    let phase_of = |t: f64| if t < during_start { 0 } else if t < during_end { 1 } else { 2 };
    let phases = ["before", "during", "after"];
    let pct = |kind: Probe, phase: usize, q: f64| {
        let v: Vec<f64> = lat.iter().filter(|(t, k, _)| *k == kind && phase_of(*t) == phase).map(|x| x.2).collect();
        quantile(&v, q)
    };
    let pg_cpu = |phase: usize| mean(samples.iter().filter(|s| phase_of(s.t) == phase).filter_map(|s| s.pg_cpu_pct));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let local = samples.iter().any(|s| s.pg_cpu_pct.is_some());
    let cpu_increase = (pg_cpu(1) - pg_cpu(0)) / cores;
    let long_waits = lock_waits.iter().filter(|w| w.waited_s > 1.0).count();
    let max_conn = max_connections(&samples);
    let p99_ratio = [Probe::Insert, Probe::Read].map(|k| pct(k, 1, 0.99) / pct(k, 0, 0.99).max(1e-6)).into_iter().fold(0.0, f64::max);

    let mut r = Report::new("db-impact", env.describe_storage());
    r.duration_s = t0.elapsed().as_secs_f64();
    r.errors = u64::from(code != 0) + env.failed_items().await as u64;
    r.configuration = vec![
        kv("Records", format!("{} past the cutoff, {} recent", thousands(a.rows as f64), thousands((a.rows / 5) as f64))),
        kv("Batch size", thousands(a.batch_size as f64)),
        kv("Databases", 1),
        kv("Tables", 1),
        kv("Probe", format!("{} inserts/s and {} indexed reads/s on the audit table, before, during and after archiving", a.probe_rate, a.probe_rate)),
        kv("Mode", format!("standalone: archiver-coordinator run --workers {}, {throttle}", a.workers)),
    ];
    r.performance = vec![
        kv("Archiving took", format!("{:.1} s", during_end - during_start)),
        kv("Throughput", format!("{} records/minute", thousands(correctness.archived as f64 / (during_end - during_start) * 60.0))),
    ];
    r.stability = vec![kv("Archiver exit status", code)];
    let mut impact = Vec::new();
    for (i, name) in phases.iter().enumerate() {
        impact.push(kv(
            &format!("Probe latency {name} (p50/p95/p99 ms)"),
            format!(
                "insert {:.2}/{:.2}/{:.2}, read {:.2}/{:.2}/{:.2}",
                pct(Probe::Insert, i, 0.5),
                pct(Probe::Insert, i, 0.95),
                pct(Probe::Insert, i, 0.99),
                pct(Probe::Read, i, 0.5),
                pct(Probe::Read, i, 0.95),
                pct(Probe::Read, i, 0.99)
            ),
        ));
        r.figure(&format!("insert_p99_ms_{name}"), pct(Probe::Insert, i, 0.99));
        r.figure(&format!("read_p99_ms_{name}"), pct(Probe::Read, i, 0.99));
    }
    if local {
        impact.push(kv(
            "PostgreSQL CPU (before/during/after)",
            format!("{:.1}% / {:.1}% / {:.1}% of one core; increase {:.1}% of the machine", pg_cpu(0), pg_cpu(1), pg_cpu(2), cpu_increase),
        ));
    } else {
        impact.push(kv("PostgreSQL CPU", "not measured: the server is not on this machine"));
    }
    impact.push(kv("Connection count", format!("{max_conn} archiver connections at most")));
    impact.push(kv("Lock contention", format!("{} lock waits seen, {long_waits} over 1 s", lock_waits.len())));
    r.database_impact = impact;
    r.criteria = vec![
        Criterion::new(
            "CPU increase",
            if local { format!("{cpu_increase:.1}% of the machine") } else { "not measured".into() },
            "<5%",
            local.then_some(cpu_increase < 5.0),
            "–",
            true,
        ),
        Criterion::new("probe p99 latency", format!("{p99_ratio:.2}× before (worst of insert and read)"), "stable", None, "within +20% (≤1.2×)", p99_ratio <= 1.2),
        Criterion::new("lock waits", format!("{} seen, {long_waits} over 1 s", lock_waits.len()), "no significant contention", Some(long_waits == 0), "zero over 1 s", long_waits == 0),
    ];
    r.figure("p99_ratio", p99_ratio);
    r.figure("pg_cpu_increase_pct", cpu_increase);
    r.figure("lock_waits_over_1s", long_waits as u64);
    let mut series = Vec::new();
    for (kind, name) in [(Probe::Insert, "insert p99"), (Probe::Read, "read p99")] {
        let mut per_second: std::collections::BTreeMap<u64, Vec<f64>> = Default::default();
        for (t, k, ms) in &lat {
            if *k == kind {
                per_second.entry(*t as u64).or_default().push(*ms);
            }
        }
        series.push((name.to_string(), per_second.into_iter().map(|(s, v)| (s as f64, quantile(&v, 0.99))).collect()));
    }
    r.extra_plots.push(Plot { file: "latency.svg".into(), title: format!("Probe latency per second (archiving from {during_start:.0} s to {during_end:.0} s)"), y_label: "ms".into(), series });
    Ok(finish(r, &env, correctness, (samples, lock_waits)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Sample;

    #[test]
    fn memory_growth_compares_the_end_with_the_end_of_warm_up() {
        // 100 s: a climb during warm-up, then flat at 50 MB, then 55 MB over the last tenth.
        let samples: Vec<Sample> = (0..=100)
            .map(|t| Sample { t: t as f64, rss_mb: if t < 20 { 10.0 + t as f64 * 2.0 } else if t >= 90 { 55.0 } else { 50.0 }, ..Sample::default() })
            .collect();
        let g = memory_growth(&samples, 0.2);
        assert!((g - 10.0).abs() < 0.01, "{g}");
    }

    #[test]
    fn table_names_number_only_several() {
        assert_eq!(table_names("t", 1), ["t"]);
        assert_eq!(table_names("t", 2), ["t_1", "t_2"]);
    }
}
