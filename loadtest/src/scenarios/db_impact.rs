//! `db-impact`: a probe workload (inserts and indexed reads on the audit table) measured before,
//! during and after `archiver-coordinator run`, with PostgreSQL's CPU and lock waits sampled.
//!
//! Pass criteria: probe p99 latency during archiving within +20% of its idle baseline (the guide:
//! stable), and no lock wait over 1 s (the guide: no significant contention). The guide's CPU
//! increase under 5% of the machine is reported where PostgreSQL runs on this machine (we set no
//! CPU threshold of our own). Judged only over phases of 10 s or more, each p99 from 100+ probes;
//! a percentile from fewer samples or a shorter phase is printed with a small-sample warning.
//!
//! The p99 judged is the typical one: the median of the p99s of consecutive 10-second windows,
//! during archiving against the windows before and after it (the idle baseline). A p99 over a
//! whole phase moves with one stall of the host (a virtual machine's 80 ms pause lifts the p99
//! of a 20-second phase of 1,000 probes by itself); an archiver that slows the probes slows them
//! in most windows. `--without-archiver` runs the same phases with no archiver (an A/A run): the
//! ratio it reports is the measurement's own noise on this machine. The probes run `--settle`
//! (20 s) before the before phase without being counted: right after seeding, the server's first
//! seconds are slower than any idle phase later.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{days_for, finish, pool_for, sampler, seed_table, wait_with_peak_rss};
use crate::evidence::{Percentile, Requirement, MIN_PHASE_S};
use crate::harness::{self, Common, Env};
use crate::plot::Plot;
use crate::report::{kv, thousands, Criterion, Report};
use crate::sample::{max_connections, mean, median, quantile, LockWait, Sample, Sampler};

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
    /// The probes run this long before the before phase, not counted: right after seeding the
    /// server is still settling (the first 10 seconds' p99 was the highest of the whole run in
    /// four runs of 2026-12-06), which would lift the idle baseline.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub settle: Duration,
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
    /// An A/A run: the middle phase probes for as long as `--phase` (times three) with no archiver
    /// running, so the report's ratios are the measurement's own noise.
    #[arg(long)]
    pub without_archiver: bool,
    /// Logs the archiver's spans (each batch, stage, read page and delete chunk, with its
    /// duration) as JSON to `coordinator.log`, to lay them beside the probes (see
    /// loadtest/probe-experiments/timeline.py). The logging costs a little CPU itself.
    #[arg(long)]
    pub timeline: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Insert,
    Read,
}

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::Insert => "insert",
            Probe::Read => "read",
        }
    }
}

const PROBES: [Probe; 2] = [Probe::Insert, Probe::Read];
const PHASES: [&str; 3] = ["before", "during", "after"];
/// The windows a typical p99 is taken over (see the module's documentation).
const WINDOW_S: f64 = 10.0;

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

pub async fn db_impact(a: DbImpactArgs) -> anyhow::Result<Report> {
    let sharing = tokio::task::spawn_blocking(crate::machine::core_sharing).await?;
    let env = Arc::new(Env::new("db-impact", &a.common, None).await?);
    let table = "audit_impact".to_string();
    eprintln!("seeding {} rows ...", a.rows);
    seed_table(&env.db.pool, &table, a.rows, 91.0 + days_for(a.rows, a.batch_size), 91.0, false).await?;
    archiver_testkit::seed::insert_rows(&env.db.pool, "public", &table, a.rows / 5, 89.0, 0.0).await?;
    sqlx::query("VACUUM ANALYZE audit_impact").execute(&env.db.pool).await?;
    sqlx::query("CHECKPOINT").execute(&env.db.pool).await?;
    let mut config = env.config(std::slice::from_ref(&table))?.set_default("batch_size", a.batch_size);
    if let Some(d) = &a.sleep_between_batches {
        config = config.set_default("sleep_between_batches", d);
    }
    if let Some(r) = a.max_rows_per_second {
        config = config.set_default("max_rows_per_second", r);
    }
    let config = env.write_config(&config)?;
    let sampler = sampler(&env, Duration::from_millis(250));
    let phases = probe_around_archiving(&env, &a, &config, &sampler).await?;
    let (samples, lock_waits) = sampler.finish().await;
    let correctness = harness::verify(&env, &config, std::slice::from_ref(&table)).await?;
    let mut r = report(&a, &env, &phases, correctness.archived, (&samples, &lock_waits));
    r.configuration.push(kv("CPU sharing", match sharing {
        Some(ratio) => format!("work on CPU 0 runs {ratio:.2}× as long while CPU 1 is busy (about 1: separate cores; 1.5 and up: one core, and every probe that meets the archiver is slower)"),
        None => "not measured (one CPU, or threads cannot be pinned)".into(),
    }));
    if let Some(ratio) = sharing {
        r.figure("cpu_sharing_ratio", ratio);
    }
    r.errors = u64::from(phases.code != 0) + env.failed_items().await as u64;
    Ok(finish(r, &env, correctness, (samples, lock_waits)))
}

/// The archiver's throttle settings, in words.
fn throttle(a: &DbImpactArgs) -> String {
    if a.without_archiver {
        return "no archiver (an A/A run: the probes' own noise)".to_string();
    }
    match (&a.sleep_between_batches, a.max_rows_per_second) {
        (None, None) => "the default throttle".to_string(),
        (sleep, rate) => format!(
            "sleep_between_batches {}, max_rows_per_second {}",
            sleep.as_deref().unwrap_or("default"),
            rate.map_or("default".to_string(), |r| r.to_string())
        ),
    }
}

/// The probes' latencies (seconds since `t0`, kind, ms), when archiving ran, when probing
/// stopped, and how archiving ended.
struct Phases {
    t0: Instant,
    /// Seconds from the sampler's start to `t0` (the settling), to place the sampler's samples.
    settled: f64,
    latencies: Vec<(f64, Probe, f64)>,
    during: (f64, f64),
    end: f64,
    code: i32,
}

impl Phases {
    /// 0 before archiving, 1 during, 2 after.
    fn phase_of(&self, t: f64) -> usize {
        if t < self.during.0 { 0 } else if t < self.during.1 { 1 } else { 2 }
    }

    /// How long each phase lasted, in seconds.
    fn windows(&self) -> [f64; 3] {
        [self.during.0, self.during.1 - self.during.0, self.end - self.during.1]
    }

    /// Quantile `q` of the latencies of `kind` in `phase`, with the samples behind it.
    fn pct(&self, kind: Probe, phase: usize, q: f64) -> Percentile {
        let v: Vec<f64> =
            self.latencies.iter().filter(|(t, k, _)| *k == kind && self.phase_of(*t) == phase).map(|x| x.2).collect();
        let name = format!("{} p{:.0} {}", kind.name(), q * 100.0, PHASES[phase]);
        Percentile::of(&name, &v, q, self.windows()[phase])
    }

    /// The p99s of `kind` over consecutive [`WINDOW_S`] windows of the phases in `phases` (a
    /// phase's last window only if at least half as long), and their median.
    fn typical_p99(&self, kind: Probe, phases: &[usize]) -> (f64, Vec<f64>) {
        let starts = [0.0, self.during.0, self.during.1];
        let lengths = self.windows();
        let mut windows: BTreeMap<(usize, u64), Vec<f64>> = BTreeMap::new();
        for (t, k, ms) in &self.latencies {
            let phase = self.phase_of(*t);
            let into = t - starts[phase];
            let n = (into / WINDOW_S) as u64;
            // A phase shorter than half a window (archiving with the governor off) is one window.
            let full = lengths[phase] < WINDOW_S / 2.0 || lengths[phase] - n as f64 * WINDOW_S >= WINDOW_S / 2.0;
            if *k == kind && phases.contains(&phase) && full {
                windows.entry((phase, n)).or_default().push(*ms);
            }
        }
        let p99s: Vec<f64> = windows.values().map(|v| quantile(v, 0.99)).collect();
        (median(&p99s), p99s)
    }
}

/// Probes for `a.phase`, archives (the sampler watching), and probes for `a.phase` again.
async fn probe_around_archiving(env: &Arc<Env>, a: &DbImpactArgs, config: &Path, sampler: &Sampler) -> anyhow::Result<Phases> {
    let probes = pool_for(&env.db.name, 4);
    let started = Instant::now();
    let stop_probes = CancellationToken::new();
    let tasks = PROBES.map(|k| spawn_probe(probes.clone(), k, a.probe_rate, started, stop_probes.clone()));
    eprintln!("settling: probing for {:?}, not counted ...", a.settle);
    tokio::time::sleep(a.settle).await;
    let t0 = Instant::now();
    let settled = (t0 - started).as_secs_f64();
    eprintln!("before: probing for {:?} ...", a.phase);
    tokio::time::sleep(a.phase).await;
    let during_start = t0.elapsed().as_secs_f64();
    let mut code = 0;
    if a.without_archiver {
        eprintln!("during: probing for {:?} with no archiver (A/A) ...", a.phase * 3);
        tokio::time::sleep(a.phase * 3).await;
    } else {
        eprintln!("during: archiving with {} ...", throttle(a));
        code = archive(env, a, config, sampler).await?;
    }
    let during_end = t0.elapsed().as_secs_f64();
    eprintln!("after: probing for {:?} ...", a.phase);
    tokio::time::sleep(a.phase).await;
    stop_probes.cancel();
    let end = t0.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?.into_iter().filter(|(t, ..)| *t >= settled).map(|(t, k, ms)| (t - settled, k, ms)));
    }
    if a.without_archiver {
        eprintln!("archiving, unmeasured, so the archive can be checked ...");
        code = archive(env, a, config, sampler).await?;
    }
    Ok(Phases { t0, settled, latencies, during: (during_start, during_end), end, code })
}

/// Runs `archiver-coordinator run` (the sampler watching it) and returns its exit status.
async fn archive(env: &Arc<Env>, a: &DbImpactArgs, config: &Path, sampler: &Sampler) -> anyhow::Result<i32> {
    let mut cmd = env.coordinator(config, &["run", "--workers", &a.workers.to_string()])?;
    if a.timeline {
        cmd.args(["--log-format", "json"]).env("RUST_LOG", "warn,archiver_engine=debug");
    }
    let child = cmd.spawn()?;
    sampler.watch(child.id());
    let pid = child.id() as libc::pid_t;
    let (code, _) = tokio::task::spawn_blocking(move || wait_with_peak_rss(pid)).await??;
    Ok(code)
}

/// What the criteria judge.
struct Impact {
    /// Whether PostgreSQL's CPU was measured (it runs on this machine).
    local: bool,
    /// PostgreSQL's CPU by phase, % of one core.
    pg_cpu: [f64; 3],
    /// From before to during, % of the machine.
    cpu_increase: f64,
    long_waits: usize,
    /// The worse of insert and read: the typical p99 during over the typical p99 of the idle
    /// baseline (before and after).
    p99_ratio: f64,
    /// The worse of insert and read: the p99 over the whole phase during over the one before.
    whole_phase_ratio: f64,
    /// Insert and read: the typical p99 of the baseline and during, in ms.
    typical: [(f64, f64); 2],
    /// The p99s the ratio compares: insert and read, before and during.
    p99s: Vec<Percentile>,
    /// How long each phase lasted, in seconds.
    windows: [f64; 3],
    /// Rows archived a second while archiving (None in an A/A run).
    rows_per_s: Option<f64>,
}

/// The least throughput the governor's defaults must keep while being gentle (rows a second).
const MIN_ROWS_PER_S: f64 = 5_000.0;

fn impact(p: &Phases, archived: Option<u64>, samples: &[Sample], lock_waits: &[LockWait]) -> Impact {
    let settled = samples.iter().filter(|s| s.t >= p.settled);
    let pg_cpu = [0, 1, 2].map(|phase| mean(settled.clone().filter(|s| p.phase_of(s.t - p.settled) == phase).filter_map(|s| s.pg_cpu_pct)));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let typical = PROBES.map(|k| (p.typical_p99(k, &[0, 2]).0, p.typical_p99(k, &[1]).0));
    Impact {
        local: samples.iter().any(|s| s.pg_cpu_pct.is_some()),
        cpu_increase: (pg_cpu[1] - pg_cpu[0]) / cores,
        pg_cpu,
        long_waits: lock_waits.iter().filter(|w| w.waited_s > 1.0).count(),
        p99_ratio: typical.iter().map(|(base, during)| during / base.max(1e-6)).fold(0.0, f64::max),
        whole_phase_ratio: PROBES.map(|k| p.pct(k, 1, 0.99).value / p.pct(k, 0, 0.99).value.max(1e-6)).into_iter().fold(0.0, f64::max),
        typical,
        p99s: PROBES.iter().flat_map(|k| [p.pct(*k, 0, 0.99), p.pct(*k, 1, 0.99)]).collect(),
        windows: p.windows(),
        rows_per_s: archived.map(|n| n as f64 / (p.during.1 - p.during.0).max(1e-3)),
    }
}

fn report(a: &DbImpactArgs, env: &Env, p: &Phases, archived: u64, (samples, lock_waits): (&[Sample], &[LockWait])) -> Report {
    let i = impact(p, (!a.without_archiver).then_some(archived), samples, lock_waits);
    let mut r = Report::new("db-impact", env.describe_storage());
    r.duration_s = p.t0.elapsed().as_secs_f64();
    let took = p.during.1 - p.during.0;
    r.configuration = vec![
        kv("Records", format!("{} past the cutoff, {} recent", thousands(a.rows as f64), thousands((a.rows / 5) as f64))),
        kv("Batch size", thousands(a.batch_size as f64)),
        kv("Databases", 1),
        kv("Tables", 1),
        kv("Probe", format!("{} inserts/s and {} indexed reads/s on the audit table, before, during and after archiving", a.probe_rate, a.probe_rate)),
        kv("Mode", format!("standalone: archiver-coordinator run --workers {}, {}", a.workers, throttle(a))),
    ];
    r.performance = match i.rows_per_s {
        Some(rate) => vec![kv("Archiving took", format!("{took:.1} s")), kv("Throughput", format!("{} records/minute", thousands(rate * 60.0)))],
        None => vec![kv("Archiving", "after the probes stopped (an A/A run), not measured")],
    };
    r.stability = vec![kv("Archiver exit status", p.code)];
    let mut lines = latency_lines(p, &mut r);
    if i.local {
        lines.push(kv(
            "PostgreSQL CPU (before/during/after)",
            format!("{:.1}% / {:.1}% / {:.1}% of one core; increase {:.1}% of the machine", i.pg_cpu[0], i.pg_cpu[1], i.pg_cpu[2], i.cpu_increase),
        ));
    } else {
        lines.push(kv("PostgreSQL CPU", "not measured: the server is not on this machine"));
    }
    lines.push(kv(
        "Typical probe p99 (median of 10 s windows), idle baseline (before and after) → during",
        format!(
            "insert {:.2} → {:.2} ms, read {:.2} → {:.2} ms; over whole phases, before → during: {:.2}× (worst)",
            i.typical[0].0, i.typical[0].1, i.typical[1].0, i.typical[1].1, i.whole_phase_ratio
        ),
    ));
    lines.push(kv("Connection count", format!("{} archiver connections at most", max_connections(samples))));
    lines.push(kv("Lock contention", format!("{} lock waits seen, {} over 1 s", lock_waits.len(), i.long_waits)));
    r.database_impact = lines;
    r.criteria = criteria(&i, lock_waits.len());
    r.figure("p99_ratio", i.p99_ratio);
    if let Some(rate) = i.rows_per_s {
        r.figure("rows_per_second", rate);
    }
    r.figure("p99_ratio_whole_phase", i.whole_phase_ratio);
    for (k, (base, during)) in PROBES.iter().zip(i.typical) {
        r.figure(&format!("{}_typical_p99_ms_baseline", k.name()), base);
        r.figure(&format!("{}_typical_p99_ms_during", k.name()), during);
    }
    let t0_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()) - p.t0.elapsed().as_secs_f64();
    r.figure("probes_t0_unix", t0_unix);
    r.figure("probes", p.latencies.iter().map(|(t, k, ms)| serde_json::json!([t, k.name(), ms])).collect::<Vec<_>>());
    r.figure("pg_cpu_increase_pct", i.cpu_increase);
    r.figure("lock_waits_over_1s", i.long_waits as u64);
    r.extra_plots.push(latency_plot(p, a.probe_rate));
    r
}

/// The probes' p50/p95/p99 by phase, each flagged when it stands on too few samples or too short
/// a phase (the report lists the warnings); the p99s are figures too.
fn latency_lines(p: &Phases, r: &mut Report) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for (i, name) in PHASES.iter().enumerate() {
        let mut text = Vec::new();
        for kind in PROBES {
            let label = kind.name();
            let [p50, p95, p99] = [0.5, 0.95, 0.99].map(|q| r.percentile(p.pct(kind, i, q)));
            r.figure(&format!("{label}_p99_ms_{name}"), p99.value);
            text.push(format!("{label} {}/{}/{} from {} probes", p50.ms(), p95.ms(), p99.ms(), p99.samples));
        }
        lines.push(kv(&format!("Probe latency {name}, {:.1} s (p50/p95/p99 ms)", p.windows()[i]), text.join(", ")));
    }
    lines
}

/// The guide's CPU increase (we set no threshold of our own), the probes' p99 (judged only on
/// enough samples over long enough phases), and lock waits over the archiving phase.
fn criteria(i: &Impact, lock_waits: usize) -> Vec<Criterion> {
    let (local, cpu_increase, p99_ratio, long_waits) = (i.local, i.cpu_increase, i.p99_ratio, i.long_waits);
    let phase = |n: usize| Requirement::secs(&format!("{} phase", PHASES[n]), i.windows[n], MIN_PHASE_S);
    let throughput = i.rows_per_s.map(|rate| {
        Criterion::new("throughput while gentle", format!("{} rows/s", thousands(rate)))
            .ours(&format!("≥ {} rows/s", thousands(MIN_ROWS_PER_S)), rate >= MIN_ROWS_PER_S)
            .needs([phase(1)])
    });
    let mut all = vec![
        Criterion::new("CPU increase", if local { format!("{cpu_increase:.1}% of the machine") } else { "not measured: PostgreSQL is not on this machine".into() })
            .guide("<5%", local.then_some(cpu_increase < 5.0))
            .needs([phase(0), phase(1)]),
        Criterion::new("probe p99 latency", format!("{p99_ratio:.2}× the idle baseline (worst of insert and read, typical p99 of 10 s windows)"))
            .guide_says("\"query duration stable\" (no threshold)")
            .ours("within +20% (≤1.2×)", p99_ratio <= 1.2)
            .needs(i.p99s.iter().map(Requirement::percentile)),
        Criterion::new("lock waits", format!("{lock_waits} seen, {long_waits} over 1 s"))
            .guide("no significant contention", Some(long_waits == 0))
            .ours("zero over 1 s", long_waits == 0)
            .needs([phase(1)]),
    ];
    all.extend(throughput);
    all
}

/// Each probe's p99 per second, with the archiving phase in the title; the per-second maximum
/// instead when fewer than 100 probes a second make a p99 meaningless.
fn latency_plot(p: &Phases, probe_rate: u64) -> Plot {
    let mut series = Vec::new();
    let (q, stat) = if probe_rate >= crate::evidence::min_samples(0.99) { (0.99, "p99") } else { (1.0, "max") };
    for kind in PROBES {
        let name = format!("{} {stat}", kind.name());
        let mut per_second: BTreeMap<u64, Vec<f64>> = Default::default();
        for (t, k, ms) in &p.latencies {
            if *k == kind {
                per_second.entry(*t as u64).or_default().push(*ms);
            }
        }
        series.push((name, per_second.into_iter().map(|(s, v)| (s as f64, quantile(&v, q))).collect()));
    }
    let (start, end) = p.during;
    Plot { file: "latency.svg".into(), title: format!("Probe latency per second (archiving from {start:.0} s to {end:.0} s)"), y_label: "ms".into(), series }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::Correctness;

    /// `n` probes of each kind in each phase, the phases `window` seconds long.
    fn phases(n: usize, window: f64) -> Phases {
        let mut latencies = Vec::new();
        for phase in 0..3 {
            for i in 0..n {
                let t = phase as f64 * window + i as f64 * window / n as f64;
                latencies.extend(PROBES.map(|k| (t, k, 1.0 + i as f64 / 10.0)));
            }
        }
        Phases { t0: Instant::now(), settled: 0.0, latencies, during: (window, 2.0 * window), end: 3.0 * window, code: 0 }
    }

    fn impact_report(p: &Phases) -> Report {
        let mut r = Report::new("db-impact", "local directory");
        r.correctness = Correctness { inserted: 1, archived: 1, ..Correctness::default() };
        r.database_impact = latency_lines(p, &mut r);
        r.criteria = criteria(&impact(p, Some(1_000_000), &[], &[]), 0);
        r
    }

    #[test]
    fn a_p99_from_20_samples_is_printed_with_a_warning_and_flagged_in_the_json() {
        let r = impact_report(&phases(20, 30.0));
        let md = r.markdown();
        assert!(md.contains("- Probe latency before, 30.0 s (p50/p95/p99 ms): insert 1.90/2.80/2.90 (WARNING: small sample) from 20 probes, read "), "{md}");
        assert!(md.contains("### Warnings\n- WARNING: insert p99 before is from 20 samples (fewer than 100)"), "{md}");
        let json = serde_json::to_value(&r).unwrap();
        let p99 = json["percentiles"].as_array().unwrap().iter().find(|p| p["name"] == "insert p99 before").unwrap();
        assert_eq!(p99["small_sample"], true, "{p99}");
        assert_eq!(p99["samples"], 20);
        let k = r.criteria.iter().find(|k| k.name == "probe p99 latency").unwrap();
        assert!(!k.conclusive, "a p99 from 20 samples judges nothing: {k:?}");
        assert!(md.contains("| probe p99 latency | insert p99 before ≥ 100 samples over ≥ 10.0 s | 20 samples over 30.0 s | NOT MET |"), "{md}");
    }

    #[test]
    fn a_short_phase_flags_its_percentiles_however_many_samples() {
        let r = impact_report(&phases(250, 5.0));
        assert!(r.percentiles.iter().all(|p| p.small_sample), "{:?}", r.percentiles);
        assert!(r.markdown().contains("a 5.0 s window (shorter than 10.0 s)"));
        let long = impact_report(&phases(1000, 20.0));
        assert!(long.warnings.is_empty() && long.percentiles.iter().all(|p| !p.small_sample), "{:?}", long.warnings);
        assert!(long.criteria.iter().all(|k| k.conclusive), "{:?}", long.criteria);
    }

    #[test]
    fn cpu_increase_is_the_guide_s_criterion_only() {
        let md = impact_report(&phases(1000, 20.0)).markdown();
        let row = md.lines().find(|l| l.starts_with("| CPU increase |")).unwrap();
        assert!(row.ends_with("| <5% | not measured | none set | n/a |"), "{row}");
        assert!(md.contains("| probe p99 latency | 1.00× the idle baseline (worst of insert and read, typical p99 of 10 s windows) | \"query duration stable\" (no threshold) | n/a | within +20% (≤1.2×) | PASS |"), "{md}");
    }

    /// 60 s phases, 50 probes a second of each kind at 1 ms; `slow(t)` gives a probe's latency
    /// instead where it returns one.
    fn steady(slow: impl Fn(f64) -> Option<f64>) -> Phases {
        let mut latencies = Vec::new();
        for i in 0..(180 * 50) {
            let t = i as f64 / 50.0;
            latencies.extend(PROBES.map(|k| (t, k, slow(t).unwrap_or(1.0))));
        }
        Phases { t0: Instant::now(), settled: 0.0, latencies, during: (60.0, 120.0), end: 180.0, code: 0 }
    }

    #[test]
    fn one_stall_of_the_host_moves_the_whole_phase_p99_but_not_the_typical_one() {
        // Two seconds of 80 ms probes before archiving (1/30 of the phase), nothing else.
        let p = steady(|t| (10.0..12.0).contains(&t).then_some(80.0));
        let i = impact(&p, Some(1), &[], &[]);
        assert!(i.whole_phase_ratio < 0.1, "the stall made the before p99 80 ms: {}", i.whole_phase_ratio);
        assert!((i.p99_ratio - 1.0).abs() < 1e-9, "{}", i.p99_ratio);
    }

    #[test]
    fn an_archiver_that_slows_two_probes_in_a_hundred_fails_in_every_window() {
        // During archiving, every 50th probe takes 3 ms: 2 % of them, in every window.
        let p = steady(|t| ((60.0..120.0).contains(&t) && ((t * 50.0).round() as u64).is_multiple_of(50)).then_some(3.0));
        let i = impact(&p, Some(1), &[], &[]);
        assert!((i.p99_ratio - 3.0).abs() < 1e-9, "{}", i.p99_ratio);
        let (_, windows) = p.typical_p99(Probe::Insert, &[1]);
        assert_eq!(windows, vec![3.0; 6]);
        let k = criteria(&i, 0).into_iter().find(|k| k.name == "probe p99 latency").unwrap();
        assert!(k.failed(), "{k:?}");
    }

    #[test]
    fn a_phase_shorter_than_half_a_window_is_one_window_not_none() {
        // Archiving took 3 s (the governor off), every probe 4 ms meanwhile.
        let mut p = steady(|t| (60.0..63.0).contains(&t).then_some(4.0));
        p.during = (60.0, 63.0);
        assert_eq!(p.typical_p99(Probe::Read, &[1]).1, vec![4.0]);
        assert!((impact(&p, Some(1), &[], &[]).p99_ratio - 4.0).abs() < 1e-9);
    }

    #[test]
    fn throughput_is_judged_against_the_floor_and_not_at_all_in_an_a_a_run() {
        let p = steady(|_| None);
        let judged = |archived| criteria(&impact(&p, archived, &[], &[]), 0).into_iter().find(|k| k.name == "throughput while gentle");
        assert!(judged(Some(60 * 4_999)).unwrap().failed());
        assert!(judged(Some(60 * 5_000)).unwrap().shown());
        assert!(judged(None).is_none(), "an A/A run archives nothing while probing");
    }
}
