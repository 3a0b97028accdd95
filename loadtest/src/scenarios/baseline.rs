//! What `large-batch` and `compare` share: the archiver against the raw baseline (`psql` COPY of
//! `row_to_json` piped into `zstd -3`, then one DELETE) on two identical tables in one run. Each
//! scenario adds its own pass criteria to the report this measures.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use archiver_testkit::{pg_host, pg_port, pg_user};

use super::{days_for, finish, sampler, seed_table, wait_with_peak_rss};
use crate::evidence::{Requirement, MIN_TIMED_S};
use crate::harness::{self, Common, Correctness, Env};
use crate::report::{kv, thousands, Report};
use crate::sample::{mean, LockWait, Sample, Sampler};

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
    #[command(flatten)]
    pub common: Common,
}

struct VsBaseline {
    baseline_secs: f64,
    baseline_bytes: u64,
    archiver_secs: f64,
    peak_rss_mb: f64,
    run_error: Option<String>,
}

/// Seeds two identical tables, empties one with the raw baseline and the other with
/// `archiver-coordinator run`, timing both; the sampler watched the archiver.
async fn against_baseline(env: &Arc<Env>, a: &BaselineArgs, config: &Path) -> anyhow::Result<(VsBaseline, Sampler)> {
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
    // std, not tokio: wait4 must reap the child (its peak RSS is read meanwhile).
    let child = cmd.stdin(Stdio::null()).spawn()?;
    sampler.watch(child.id());
    let pid = child.id() as libc::pid_t;
    let (code, peak_kb) = tokio::task::spawn_blocking(move || wait_with_peak_rss(pid)).await??;
    let archiver_secs = t.elapsed().as_secs_f64();
    let run_error = (code != 0).then(|| format!("archiver-coordinator exited with status {code}"));
    Ok((VsBaseline { baseline_secs, baseline_bytes, archiver_secs, peak_rss_mb: peak_kb as f64 / 1024.0, run_error }, sampler))
}

/// A measured run: the report without its criteria, and what the criteria judge.
pub(super) struct Measured {
    pub report: Report,
    pub peak_rss_mb: f64,
    /// The archiver's rows a second over the baseline's.
    pub ratio: f64,
    /// The archiver's rows a minute.
    pub rows_per_minute: f64,
    /// How long the archiver's run and the baseline's took.
    pub archiver_secs: f64,
    pub baseline_secs: f64,
    env: Arc<Env>,
    correctness: Correctness,
    samples: (Vec<Sample>, Vec<LockWait>),
}

impl Measured {
    /// Completes the report with what was measured, prints it and writes it.
    pub fn finish(self) -> Report {
        finish(self.report, &self.env, self.correctness, self.samples)
    }
}

/// The timed runs a throughput or ratio verdict needs: each at least [`MIN_TIMED_S`].
pub(super) fn timed_runs(archiver_secs: f64, baseline_secs: f64) -> [Requirement; 2] {
    [Requirement::secs("archiver run", archiver_secs, MIN_TIMED_S), Requirement::secs("raw baseline run", baseline_secs, MIN_TIMED_S)]
}

/// Runs the archiver against the baseline as scenario `name`.
pub(super) async fn measure(name: &str, a: &BaselineArgs) -> anyhow::Result<Measured> {
    let env = Arc::new(Env::new(name, &a.common, None).await?);
    let table = "audit_archiver".to_string();
    let mut builder = env.config(std::slice::from_ref(&table))?.set_default("batch_size", a.batch_size);
    if env.governor.is_none() {
        // Raw speed against the raw baseline: no governor unless asked for.
        builder = builder.set_default("governor", harness::Governor::Off.yaml());
    }
    let config = env.write_config(&builder)?;
    let (m, sampler) = against_baseline(&env, a, &config).await?;
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
        kv("Memory usage", format!("{:.1} MB (peak RSS: the process's VmHWM)", m.peak_rss_mb)),
        kv("CPU usage", format!("{:.1}% of one core (average)", mean(samples.iter().map(|s| s.cpu_pct)))),
    ];
    r.stability = vec![kv("Failed runs", u64::from(m.run_error.is_some()))];
    r.figure("rows", a.rows);
    r.figure("batch_size", a.batch_size);
    r.figure("baseline_rows_per_second", base_rate);
    r.figure("archiver_rows_per_second", rate);
    r.figure("ratio", ratio);
    r.figure("peak_rss_mb", m.peak_rss_mb);
    r.figure("archiver_seconds", m.archiver_secs);
    r.figure("baseline_seconds", m.baseline_secs);
    let samples = (samples, lock_waits);
    let (archiver_secs, baseline_secs) = (m.archiver_secs, m.baseline_secs);
    Ok(Measured { report: r, peak_rss_mb: m.peak_rss_mb, ratio, rows_per_minute: rate * 60.0, archiver_secs, baseline_secs, env, correctness, samples })
}
