//! `sustained`: the guide's 24-hour test, any duration. One `archiver-worker` runs throughout
//! while rows past the retention cutoff keep arriving and `archiver-coordinator run --wait` runs
//! every `--interval`; the worker's memory, CPU and connections are sampled over time.
//!
//! Pass criteria: memory growth after warm-up under 5% (the guide: under 50% over the run), and
//! no crash or hang: every coordinator run succeeds and the worker exits cleanly on SIGTERM.
//! Judged only over the guide's 24 hours on its 1M+ rows; a shorter run has no verdict.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{bar, days_for, finish, run_wait, sampler, seed_table, spawn_inserter, worker_errors, GRACE};
use crate::evidence::{Requirement, MIN_SUSTAINED_ROWS, MIN_SUSTAINED_S, MIN_SUSTAINED_SAMPLES};
use crate::harness::{self, stop, wait_ready, Amqp, Common, Env};
use crate::report::{kv, thousands, Criterion, Report};
use crate::sample::{max, max_connections, mean, Sample};

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
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub amqp: Amqp,
}

/// Memory growth after warm-up, in %: the mean RSS over the last tenth of the run against the
/// mean over the tenth that follows the warm-up.
pub fn memory_growth(samples: &[Sample], warm_up: f64) -> f64 {
    let Some(end) = samples.last().map(|s| s.t) else { return 0.0 };
    let (w, tenth) = (end * warm_up, end / 10.0);
    let base = mean(samples.iter().filter(|s| s.t >= w && s.t <= w + tenth).map(|s| s.rss_mb));
    let last = mean(samples.iter().filter(|s| s.t >= end - tenth).map(|s| s.rss_mb));
    if base > 0.0 { (last - base) / base * 100.0 } else { 0.0 }
}

/// What a sustained run counted, besides the samples.
struct Counted {
    elapsed: f64,
    runs: u64,
    failed_runs: u64,
    inserted: u64,
    worker_errors: u64,
    clean_exit: bool,
    failed_items: i64,
}

pub async fn sustained(a: SustainedArgs) -> anyhow::Result<Report> {
    let env = Env::new("sustained", &a.common, Some(&a.amqp)).await?;
    let table = "audit_sustained".to_string();
    eprintln!("seeding {} rows ...", a.rows);
    seed_table(&env.db.pool, &table, a.rows, 91.0 + days_for(a.rows, a.batch_size), 91.0, false).await?;
    archiver_testkit::seed::append_rows(&env.db.pool, "public", &table, a.rows / 10, 89.0, 0.0).await?;
    let config = env.config(std::slice::from_ref(&table))?.set_default("batch_size", a.batch_size).queue(env.queue()?);
    let config = env.write_config(&config)?;
    let port = archiver_testkit::free_port();
    let mut worker = env.spawn_worker(&config, 1, a.concurrency, port)?;
    wait_ready(port, &mut worker, "archiver-worker").await?;
    let env = Arc::new(env);
    let sampler = sampler(&env, (a.duration / 300).clamp(Duration::from_millis(500), Duration::from_secs(30)));
    sampler.watch(worker.id());
    let stop_inserting = CancellationToken::new();
    let inserter = spawn_inserter(env.db.pool.clone(), table.clone(), a.insert_rate, (90.5, 90.05), stop_inserting.clone());
    let started = Instant::now();
    let (runs, mut failed_runs) = run_for(&env, &config, &a).await?;
    stop_inserting.cancel();
    let inserted = inserter.await??;
    if run_wait(&env, &config).await?.is_err() {
        failed_runs += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let worker_errors = worker_errors(&[port]).await?;
    let (samples, lock_waits) = sampler.finish().await;
    let clean_exit = tokio::task::spawn_blocking(move || stop(&mut worker, GRACE)).await?;
    let correctness = harness::verify(&env, &config, std::slice::from_ref(&table)).await?;
    let failed_items = env.failed_items().await;
    let counted = Counted { elapsed, runs, failed_runs, inserted, worker_errors, clean_exit, failed_items };
    let r = report(&a, &env, &counted, correctness.archived, &samples);
    Ok(finish(r, &env, correctness, (samples, lock_waits)))
}

/// Runs the coordinator every `a.interval` for `a.duration`; returns the runs and the failed runs.
async fn run_for(env: &Arc<Env>, config: &Path, a: &SustainedArgs) -> anyhow::Result<(u64, u64)> {
    let started = Instant::now();
    let progress = bar(a.duration.as_secs(), "s of sustained load");
    let (mut runs, mut failed_runs) = (0u64, 0u64);
    while started.elapsed() < a.duration {
        let ok = run_wait(env, config).await?;
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
    Ok((runs, failed_runs))
}

fn report(a: &SustainedArgs, env: &Env, c: &Counted, archived: u64, samples: &[Sample]) -> Report {
    let mut r = Report::new("sustained", env.describe_storage());
    r.duration_s = c.elapsed;
    let growth = memory_growth(samples, a.warm_up);
    let peak = max(samples.iter().map(|s| s.rss_mb));
    let cpu = mean(samples.iter().map(|s| s.cpu_pct));
    let max_conn = max_connections(samples);
    r.errors = c.worker_errors + c.failed_runs + c.failed_items as u64 + u64::from(!c.clean_exit);
    let rate = archived as f64 / c.elapsed * 60.0;
    r.configuration = vec![
        kv("Records", format!("{} seeded, {} arriving past the cutoff while it ran ({}/s)", thousands(a.rows as f64), thousands(c.inserted as f64), a.insert_rate)),
        kv("Batch size", thousands(a.batch_size as f64)),
        kv("Databases", 1),
        kv("Tables", 1),
        kv("Mode", format!("distributed: one archiver-worker --concurrency {} running throughout; `archiver-coordinator run --wait` every {:?}", a.concurrency, a.interval)),
    ];
    r.performance = vec![
        kv("Throughput", format!("{} records/minute", thousands(rate))),
        kv("Memory usage", format!("{peak:.1} MB (peak RSS of the worker)")),
        kv("CPU usage", format!("{cpu:.1}% of one core (worker, average)")),
        kv("Coordinator runs", c.runs + 1),
    ];
    r.stability = vec![
        kv("Memory growth after warm-up", format!("{growth:+.1}% (warm-up: first {:.0}% of the run)", a.warm_up * 100.0)),
        kv("Connection errors / worker errors", c.worker_errors),
        kv("Crashes", if c.clean_exit { "0 (the worker exited cleanly on SIGTERM)" } else { "1 (the worker did not exit cleanly)" }),
        kv("Failed runs", c.failed_runs),
        kv("Failed work items", c.failed_items),
        kv("Archiver connections (max)", max_conn),
    ];
    r.criteria = criteria(a, c, growth, samples.len());
    r.figure("records_per_minute", rate);
    r.figure("memory_growth_pct", growth);
    r.figure("peak_rss_mb", peak);
    r.figure("cpu_pct_mean", cpu);
    r.figure("rows_inserted_during_run", c.inserted);
    r.figure("coordinator_runs", c.runs + 1);
    r
}

/// Memory growth, crashes and hangs, judged over the guide's 24 hours on its 1M+ rows.
fn criteria(a: &SustainedArgs, c: &Counted, growth: f64, samples: usize) -> Vec<Criterion> {
    let healthy = c.clean_exit && c.failed_runs == 0;
    let needs = || {
        [
            Requirement::secs("run", c.elapsed, MIN_SUSTAINED_S),
            Requirement::count("rows seeded", a.rows, MIN_SUSTAINED_ROWS),
            Requirement::count("memory samples", samples as u64, MIN_SUSTAINED_SAMPLES),
        ]
    };
    vec![
        Criterion::new("memory growth", format!("{growth:+.1}%")).guide("<50% over 24 h", Some(growth < 50.0)).ours("<5% after warm-up", growth < 5.0).needs(needs()),
        Criterion::new("crashes and hangs", format!("{}", u64::from(!c.clean_exit) + c.failed_runs)).guide("none over 24 h", Some(healthy)).ours("none", healthy).needs(needs()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The args of a `sustained` command line.
    fn args(argv: &[&str]) -> SustainedArgs {
        use clap::{Args, FromArgMatches};
        let m = SustainedArgs::augment_args(clap::Command::new("sustained")).try_get_matches_from(argv).unwrap();
        SustainedArgs::from_arg_matches(&m).unwrap()
    }

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
    fn memory_growth_is_judged_over_24_hours_only() {
        let a = args(&["sustained", "--rows", "1000000"]);
        let counted = |elapsed| Counted { elapsed, runs: 10, failed_runs: 0, inserted: 0, worker_errors: 0, clean_exit: true, failed_items: 0 };
        let short = criteria(&a, &counted(300.0), 0.0, 300);
        assert!(short.iter().all(|k| !k.conclusive && !k.shown()), "{short:?}");
        assert!(short[0].requirements.iter().any(|r| r.what == "run" && r.actual == "5 min" && r.needed == "≥ 24 h" && !r.met));
        let day = criteria(&a, &counted(86_400.0), 0.0, 300);
        assert!(day.iter().all(|k| k.conclusive && k.shown()), "{day:?}");
    }
}
