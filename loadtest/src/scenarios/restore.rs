//! `restore`: `archiver-coordinator restore` against a raw baseline on the same archived rows, in
//! one run.
//!
//! The rows are seeded once, checksummed, and archived by the archiver (governor off, as in
//! `compare`). Then, from the same objects:
//! - the raw baseline: `zstdcat` of every archived object (read from the store's directory on
//!   disk, no download) into `psql` COPY of an unlogged staging table, then one `INSERT ... SELECT`
//!   with `json_populate_record` into a table created `LIKE` the source (indexes included), timed
//!   end to end;
//! - ours: `archiver-coordinator restore --into bench.restored`, timed as a child process with its
//!   peak RSS (its VmHWM). Its time includes everything the command does: reading the manifests,
//!   downloading and checking every object (size, SHA-256) before writing, then one transaction
//!   per object.
//!
//! Both targets must then hold the N rows exactly as the source held them (count, a checksum of
//! `row_to_json` and an `EXCEPT ALL` both ways); otherwise the scenario fails.
//!
//! Pass criteria: restore throughput at least 0.7 of the raw baseline's (judged only when both
//! timed runs took at least 10 s), peak RSS at most 64 MB (judged over at least four objects), and
//! the restored rows equal to the source's. A benchmark: no production-readiness verdict.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use archiver_testkit::{pg_host, pg_port, pg_user};

use super::{days_for, finish, seed_table, wait_with_peak_rss};
use crate::evidence::{Requirement, MIN_TIMED_S};
use crate::harness::{self, Common, Env};
use crate::report::{kv, thousands, Criterion, Report};
use crate::sample::{mean, LockWait, Sample, Sampler};

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// The archiver's batch size: rows per archived object.
    #[arg(long, default_value_t = 50_000)]
    pub batch_size: u32,
    /// Days the rows are spread over (all past the cutoff); default: a batch and a half a day.
    #[arg(long)]
    pub days: Option<f64>,
    /// In-process workers of the archiving run (not timed).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[command(flatten)]
    pub common: Common,
}

/// The archived table, and the two targets.
const SOURCE: &str = "audit_log";
const OURS: &str = "bench.restored";
const BASELINE: &str = "bench.baseline_target";

/// Least objects a peak-RSS verdict needs: memory must be seen to stay flat across objects.
const MIN_OBJECTS: u64 = 4;

/// Rows and a checksum of their `row_to_json` (the same column list in every table: the targets
/// are created `LIKE` the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Content {
    rows: i64,
    sum: i64,
}

/// What the run measured.
struct Timings {
    archive_secs: f64,
    objects: Vec<PathBuf>,
    object_bytes: u64,
    baseline_secs: f64,
    ours_secs: f64,
    peak_rss_mb: f64,
    /// CPU of the restore while it ran (average, % of one core).
    cpu_pct: f64,
    run_error: Option<String>,
}

/// Our timed restore.
struct Ours {
    secs: f64,
    peak_rss_mb: f64,
    run_error: Option<String>,
    samples: (Vec<Sample>, Vec<LockWait>),
}

/// Both targets against the source.
#[derive(Debug, Clone, Copy)]
struct Check {
    source: Content,
    ours: Option<Content>,
    baseline: Content,
    /// Rows of ours not in the baseline's target, and the other way round (EXCEPT ALL).
    differ: (i64, i64),
}

impl Check {
    fn equal(&self, n: u64) -> bool {
        let want = Content { rows: n as i64, sum: self.source.sum };
        self.source.rows == n as i64 && self.ours == Some(want) && self.baseline == want && self.differ == (0, 0)
    }

    fn describe(&self) -> String {
        match self.ours {
            Some(o) => format!(
                "ours {} rows, baseline {} rows, source {}; checksums {}; {} rows differ",
                thousands(o.rows as f64),
                thousands(self.baseline.rows as f64),
                thousands(self.source.rows as f64),
                if o.sum == self.source.sum && self.baseline.sum == self.source.sum { "equal" } else { "DIFFER" },
                self.differ.0 + self.differ.1
            ),
            None => format!("no {OURS} (the restore failed); baseline {} rows", thousands(self.baseline.rows as f64)),
        }
    }
}

pub async fn restore(a: RestoreArgs) -> anyhow::Result<Report> {
    let env = Env::new("restore", &a.common, None).await?;
    let mut builder = env.config(&[SOURCE.to_string()])?.set_default("batch_size", a.batch_size);
    if env.governor.is_none() {
        // Archiving is only the set-up here: no governor unless asked for.
        builder = builder.set_default("governor", harness::Governor::Off.yaml());
    }
    let config = env.write_config(&builder)?;
    let source = seed(&env, &a).await?;

    eprintln!("archiving {} rows with archiver-coordinator run --workers {} ...", a.rows, a.workers);
    let t = Instant::now();
    env.run_coordinator(&config, &["run", "--workers", &a.workers.to_string()])?;
    let archive_secs = t.elapsed().as_secs_f64();
    let correctness = harness::verify(&env, &config, &[SOURCE.to_string()]).await?;
    let objects = archived_objects(&env)?;
    if objects.is_empty() {
        bail!("the archive holds no object of {SOURCE}");
    }
    let object_bytes = objects.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    sqlx::query("CREATE SCHEMA bench").execute(&env.db.pool).await?;

    let baseline_secs = baseline(&env, &objects).await?;
    let o = ours(&env, &config).await?;
    let check = check(&env, source, o.run_error.is_none()).await?;
    let cpu_pct = mean(o.samples.0.iter().map(|s| s.cpu_pct));
    let (ours_secs, peak_rss_mb, run_error) = (o.secs, o.peak_rss_mb, o.run_error);
    let m = Timings { archive_secs, objects, object_bytes, baseline_secs, ours_secs, peak_rss_mb, cpu_pct, run_error };
    let mut r = report(&a, &env, &m, &check);
    r.errors = u64::from(m.run_error.is_some()) + env.failed_items().await as u64;
    Ok(finish(r, &env, correctness, o.samples))
}

/// Seeds `audit_log`, all of it past the cutoff; returns its rows and checksum before archiving.
async fn seed(env: &Env, a: &RestoreArgs) -> anyhow::Result<Content> {
    let days = a.days.unwrap_or_else(|| days_for(a.rows, a.batch_size));
    eprintln!("seeding {} rows ...", a.rows);
    let pool = &env.db.pool;
    seed_table(pool, SOURCE, a.rows, 91.0 + days, 91.0, false).await?;
    sqlx::query(&format!("VACUUM ANALYZE {SOURCE}")).execute(pool).await?;
    content(env, &format!("public.{SOURCE}")).await
}

async fn content(env: &Env, table: &str) -> anyhow::Result<Content> {
    let (rows, sum): (i64, i64) =
        sqlx::query_as(&format!("SELECT count(*), coalesce(sum(hashtext(row_to_json(t)::text)), 0)::bigint FROM {table} t"))
            .fetch_one(&env.db.pool)
            .await
            .with_context(|| format!("checksumming {table}"))?;
    Ok(Content { rows, sum })
}

/// The archived objects of the table, as files: the s3s-fs bucket's directory, or the local
/// storage's; in key order, manifests left out.
fn archived_objects(env: &Env) -> anyhow::Result<Vec<PathBuf>> {
    let root = match &env.s3 {
        Some(s3) => s3.bucket_dir(),
        None => env.archive_dir(),
    };
    let mut found = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "_manifests") {
                    dirs.push(path);
                }
            } else if path.to_string_lossy().ends_with(".zst") && path.to_string_lossy().contains(&format!("/public.{SOURCE}/")) {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The raw baseline, timed end to end: `zstdcat` of the objects into COPY of an unlogged staging
/// table, then one `INSERT ... SELECT` with `json_populate_record` into a table like the source.
async fn baseline(env: &Env, objects: &[PathBuf]) -> anyhow::Result<f64> {
    let conn = format!("host={} port={} user={} dbname={}", pg_host(), pg_port(), pg_user(), env.db.name);
    let script = format!(
        "set -euo pipefail
         psql '{conn}' -v ON_ERROR_STOP=1 -qc 'CREATE UNLOGGED TABLE bench.stage (line text NOT NULL)' \
           -c 'CREATE TABLE {BASELINE} (LIKE public.{SOURCE} INCLUDING ALL)'
         zstdcat -q -- \"$@\" | psql '{conn}' -v ON_ERROR_STOP=1 -qc \"COPY bench.stage (line) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')\"
         psql '{conn}' -v ON_ERROR_STOP=1 -qc 'INSERT INTO {BASELINE} SELECT r.* FROM bench.stage s, json_populate_record(NULL::public.{SOURCE}, s.line::json) r'"
    );
    sqlx::query("CHECKPOINT").execute(&env.db.pool).await?;
    eprintln!("raw baseline: zstdcat of {} objects | psql COPY, then INSERT ... SELECT json_populate_record ...", objects.len());
    let t = Instant::now();
    let status = tokio::process::Command::new("bash").arg("-c").arg(&script).arg("bash").args(objects).status().await?;
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the raw baseline (zstdcat | psql COPY, then INSERT) failed: {status}; are psql and zstd installed?");
    }
    sqlx::query("DROP TABLE bench.stage").execute(&env.db.pool).await?;
    Ok(secs)
}

/// `archiver-coordinator restore --into bench.restored`, timed, with its peak RSS; sampled (rows
/// written, from the restore log) while it runs.
async fn ours(env: &Env, config: &Path) -> anyhow::Result<Ours> {
    sqlx::query("CHECKPOINT").execute(&env.db.pool).await?;
    let pool = env.db.pool.clone();
    let sampler = Sampler::start(env.db.pool.clone(), Duration::from_millis(200), move || {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i64,)>("SELECT coalesce(sum(rows_written), 0)::bigint FROM archiver.restored")
                .fetch_one(&pool)
                .await
                .map(|r| r.0)
                .unwrap_or(0)
        }
    });
    let args = ["restore", "--database", &env.db.name, "--table", SOURCE, "--into", OURS];
    eprintln!("ours: archiver-coordinator {} ...", args.join(" "));
    let t = Instant::now();
    // std, not tokio: wait4 must reap the child (its peak RSS is read meanwhile).
    let child = env.coordinator(config, &args)?.stdin(Stdio::null()).spawn()?;
    sampler.watch(child.id());
    let pid = child.id() as libc::pid_t;
    let (code, peak_kb) = tokio::task::spawn_blocking(move || wait_with_peak_rss(pid)).await??;
    let secs = t.elapsed().as_secs_f64();
    let run_error = (code != 0).then(|| format!("archiver-coordinator restore exited with status {code}; see coordinator.log"));
    if let Some(e) = &run_error {
        eprintln!("{e}");
    }
    Ok(Ours { secs, peak_rss_mb: peak_kb as f64 / 1024.0, run_error, samples: sampler.finish().await })
}

/// Both targets against the source's checksum, and against each other.
async fn check(env: &Env, source: Content, restored: bool) -> anyhow::Result<Check> {
    let baseline = content(env, BASELINE).await?;
    if !restored {
        return Ok(Check { source, ours: None, baseline, differ: (0, 0) });
    }
    let ours = content(env, OURS).await?;
    let except = |a: &str, b: &str| format!("SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}) d");
    let (only_ours,): (i64,) = sqlx::query_as(&except(OURS, BASELINE)).fetch_one(&env.db.pool).await?;
    let (only_baseline,): (i64,) = sqlx::query_as(&except(BASELINE, OURS)).fetch_one(&env.db.pool).await?;
    Ok(Check { source, ours: Some(ours), baseline, differ: (only_ours, only_baseline) })
}

/// The timed runs a ratio verdict needs: each at least [`MIN_TIMED_S`].
fn timed_runs(ours_secs: f64, baseline_secs: f64) -> [Requirement; 2] {
    [Requirement::secs("restore run", ours_secs, MIN_TIMED_S), Requirement::secs("raw baseline run", baseline_secs, MIN_TIMED_S)]
}

fn criteria(ratio: f64, peak_rss_mb: f64, m: (f64, f64, u64), exact: (bool, String)) -> Vec<Criterion> {
    let (ours_secs, baseline_secs, objects) = m;
    vec![
        Criterion::new("restore / raw baseline", format!("{ratio:.2}")).ours("≥0.7", ratio >= 0.7).needs(timed_runs(ours_secs, baseline_secs)),
        Criterion::new("memory", format!("{peak_rss_mb:.1} MB peak RSS"))
            .ours("≤64 MB peak RSS", peak_rss_mb <= 64.0)
            .needs([Requirement::count("objects restored", objects, MIN_OBJECTS)]),
        Criterion::new("restored rows", exact.1).ours("every row, equal to the source's", exact.0),
    ]
}

fn report(a: &RestoreArgs, env: &Env, m: &Timings, check: &Check) -> Report {
    let mut r = Report::new("restore", env.describe_storage());
    r.duration_s = m.archive_secs + m.baseline_secs + m.ours_secs;
    let base_rate = a.rows as f64 / m.baseline_secs;
    let rate = check.ours.map_or(0, |o| o.rows) as f64 / m.ours_secs;
    let ratio = rate / base_rate;
    let n = m.objects.len() as u64;
    r.configuration = vec![
        kv("Records", thousands(a.rows as f64)),
        kv("Batch size", format!("{} ({n} objects, {} bytes of zstd JSON Lines)", thousands(a.batch_size as f64), thousands(m.object_bytes as f64))),
        kv("Databases", 1),
        kv("Tables", format!("public.{SOURCE} archived once; restored into {OURS} (ours) and {BASELINE} (raw baseline), both LIKE the source")),
        kv("Mode", format!("archiver-coordinator restore --database D --table {SOURCE} --into {OURS} (on-conflict skip)")),
    ];
    r.performance = vec![
        kv("Throughput", format!("{} records/minute ({rate:.0} rows/s; {:.1} s, objects downloaded and checked included)", thousands(rate * 60.0), m.ours_secs)),
        kv("Raw baseline", format!("{base_rate:.0} rows/s ({:.1} s: zstdcat of the objects from disk | psql COPY into an unlogged table, then one INSERT ... SELECT json_populate_record)", m.baseline_secs)),
        kv("Ratio restore / baseline", format!("{ratio:.2}")),
        kv("Memory usage", format!("{:.1} MB (peak RSS: the process's VmHWM)", m.peak_rss_mb)),
        kv("CPU usage", format!("{:.1}% of one core (average, the restore process)", m.cpu_pct)),
        kv("Archiving (set-up, not judged)", format!("{:.1} s, governor {}", m.archive_secs, if env.governor.is_none() { "off" } else { "as given" })),
    ];
    r.stability = vec![kv("Failed runs", u64::from(m.run_error.is_some()))];
    let exact = (check.equal(a.rows), check.describe());
    r.criteria = criteria(ratio, m.peak_rss_mb, (m.ours_secs, m.baseline_secs, n), exact);
    for (k, v) in [
        ("baseline_rows_per_second", base_rate),
        ("restore_rows_per_second", rate),
        ("ratio", ratio),
        ("peak_rss_mb", m.peak_rss_mb),
        ("restore_seconds", m.ours_secs),
        ("baseline_seconds", m.baseline_secs),
        ("archive_seconds", m.archive_secs),
    ] {
        r.figure(k, v);
    }
    r.figure("rows", a.rows);
    r.figure("batch_size", a.batch_size);
    r.figure("objects", n);
    r.figure("object_bytes", m.object_bytes);
    r.figure("restored_rows", check.ours.map_or(0, |o| o.rows));
    r.figure("restored_equal", check.equal(a.rows));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Correctness;
    use crate::report::Verdict;

    fn report(ratio: f64, rss: f64, secs: f64, exact: bool) -> Report {
        let mut r = Report::new("restore", "local directory");
        r.duration_s = 2.0 * secs;
        r.correctness = Correctness { inserted: 10_000, archived: 10_000, ..Correctness::default() };
        r.criteria = criteria(ratio, rss, (secs, secs, 20), (exact, "ours 10,000 rows".into()));
        r
    }

    #[test]
    fn a_short_restore_run_claims_no_verdict() {
        let r = report(0.9, 30.0, 1.5, true);
        assert_eq!(r.judge(), Verdict::Inconclusive);
        let md = r.markdown();
        assert!(md.contains("| restore / raw baseline | 0.90 | none set | n/a | ≥0.7 | met, not judged |"), "{md}");
        assert!(md.contains("No production-readiness verdict: restore is a benchmark"), "{md}");
    }

    #[test]
    fn a_long_run_passes_only_fast_small_and_exact() {
        assert_eq!(report(0.75, 40.0, 12.0, true).judge(), Verdict::Pass);
        assert_eq!(report(0.65, 40.0, 12.0, true).judge(), Verdict::Fail);
        assert_eq!(report(0.75, 70.0, 12.0, true).judge(), Verdict::Fail);
        // Rows that differ fail even a short run.
        assert_eq!(report(0.9, 30.0, 1.5, false).judge(), Verdict::Fail);
    }

    #[test]
    fn content_must_match_the_source_in_both_targets() {
        let c = Content { rows: 3, sum: 42 };
        let ok = Check { source: c, ours: Some(c), baseline: c, differ: (0, 0) };
        assert!(ok.equal(3));
        assert!(!ok.equal(4));
        assert!(!Check { ours: Some(Content { rows: 3, sum: 41 }), ..ok }.equal(3));
        assert!(!Check { differ: (0, 1), ..ok }.equal(3));
        assert!(!Check { ours: None, ..ok }.equal(3));
    }
}
