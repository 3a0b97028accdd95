//! `archiver-loadtest`: benchmarks that print figures.
//!
//! `compare` seeds one realistic audit table twice (identical rows), archives one copy with
//! `archiver-coordinator run` to a real S3 server, and in the same run measures the raw baseline
//! on the other: `psql` COPY of `row_to_json` rows piped to `zstd -3` into a file, then one
//! DELETE. It prints both rows/s, their ratio, and the archiver's peak RSS.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use anyhow::bail;
use archiver_testkit::{pg_host, pg_port, pg_user, S3Server, TestDb};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "archiver-loadtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The archiver against the raw psql + zstd baseline on identical data, in one run.
    Compare {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 50_000)]
        batch_size: u32,
        /// Days the rows are spread over (all older than the 90-day retention). Batches never
        /// span two days, so rows per day should exceed the batch size.
        #[arg(long, default_value_t = 19.0)]
        days: f64,
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// The archiver-coordinator binary; default: next to this one.
        #[arg(long)]
        archiver_bin: Option<PathBuf>,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Distributed mode with one worker against standalone mode on identical data, and the
    /// coordinator's plan-and-publish rate (items/s, with publisher confirms). Needs RabbitMQ.
    Distributed {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 50_000)]
        batch_size: u32,
        #[arg(long, default_value_t = 19.0)]
        days: f64,
        /// In-process workers of standalone mode, and the worker's --concurrency.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Items for the publish-rate measurement (one-hour ranges).
        #[arg(long, default_value_t = 5_000)]
        items: u64,
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        amqp: String,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Compare { rows, batch_size, days, workers, archiver_bin, json } => {
            compare(rows, batch_size, days, workers, archiver_bin, json).await
        }
        Command::Distributed { rows, batch_size, days, workers, items, amqp, json } => {
            distributed(rows, batch_size, days, workers, items, &amqp, json).await
        }
    }
}

fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name(name))
}

async fn compare(
    rows: u64,
    batch_size: u32,
    days: f64,
    workers: usize,
    archiver_bin: Option<PathBuf>,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let archiver = match archiver_bin {
        Some(p) => p,
        None => sibling_bin("archiver-coordinator")?,
    };
    if !archiver.is_file() {
        bail!("{} not found; build it with `cargo build --release -p archiver-coordinator`", archiver.display());
    }
    let (db, s3) = tokio::join!(TestDb::new(), S3Server::start());
    eprintln!("seeding {rows} rows twice into {} ...", db.name);
    let t = Instant::now();
    archiver_worker::seed::create_audit_table(&db.pool, "public", "audit_archiver").await?;
    archiver_worker::seed::insert_rows(&db.pool, "public", "audit_archiver", rows, 91.0 + days, 91.0).await?;
    sqlx::query("CREATE TABLE audit_baseline (LIKE audit_archiver INCLUDING ALL)").execute(&db.pool).await?;
    sqlx::query("INSERT INTO audit_baseline SELECT * FROM audit_archiver").execute(&db.pool).await?;
    sqlx::query("VACUUM ANALYZE audit_archiver").execute(&db.pool).await?;
    sqlx::query("VACUUM ANALYZE audit_baseline").execute(&db.pool).await?;
    sqlx::query("CHECKPOINT").execute(&db.pool).await?;
    eprintln!("seeded in {:.1}s", t.elapsed().as_secs_f64());

    // The raw baseline: what a shell one-liner does, with no safety at all.
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("baseline.jsonl.zst");
    let conn = format!("host={} port={} user={} dbname={}", pg_host(), pg_port(), pg_user(), db.name);
    let script = format!(
        "set -euo pipefail; psql '{conn}' -v ON_ERROR_STOP=1 -qAtc \"COPY (SELECT row_to_json(t) FROM audit_baseline t WHERE created_at < now() - interval '90 days') TO STDOUT\" | zstd -3 -q -o '{}'; psql '{conn}' -v ON_ERROR_STOP=1 -qc \"DELETE FROM audit_baseline WHERE created_at < now() - interval '90 days'\"",
        out.display()
    );
    let t = Instant::now();
    let status = tokio::process::Command::new("bash").arg("-c").arg(&script).status().await?;
    let baseline_secs = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("the baseline failed: {status}");
    }
    let baseline_bytes = std::fs::metadata(&out)?.len();

    // The archiver, as an operator runs it.
    let config = dir.path().join("bench.yaml");
    std::fs::write(
        &config,
        format!(
            "{}defaults:\n  retention_days: 90\n  batch_size: {batch_size}\ndatabases:\n  - {}\n    tables:\n      - name: audit_archiver\n        timestamp_column: created_at\n        primary_key: id\n",
            s3.yaml("bench"),
            db.yaml_connection()
        ),
    )?;
    let t = Instant::now();
    // std, not tokio: tokio would reap the child itself, and wait4 must see it to report rusage.
    let child = std::process::Command::new(&archiver)
        .args(["--config", config.to_str().unwrap(), "run", "--workers", &workers.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let (status, peak_kb) = tokio::task::spawn_blocking(move || wait_with_peak_rss(pid)).await??;
    let archiver_secs = t.elapsed().as_secs_f64();
    if status != 0 {
        bail!("archiver-coordinator exited with status {status}");
    }
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_archiver WHERE created_at < now() - interval '90 days'")
        .fetch_one(&db.pool)
        .await?;
    let (archived,): (Option<i64>,) = sqlx::query_as("SELECT sum(rows_archived)::bigint FROM archiver.work_items WHERE state = 'done'")
        .fetch_one(&db.pool)
        .await?;
    let archived = archived.unwrap_or(0);
    if left != 0 || archived as u64 != rows {
        bail!("the archiver left {left} eligible rows and archived {archived} of {rows}");
    }
    let base_rate = rows as f64 / baseline_secs;
    let arch_rate = rows as f64 / archiver_secs;
    let figures = serde_json::json!({
        "rows": rows,
        "batch_size": batch_size,
        "workers": workers,
        "baseline_seconds": baseline_secs,
        "baseline_rows_per_second": base_rate,
        "baseline_bytes": baseline_bytes,
        "archiver_seconds": archiver_secs,
        "archiver_rows_per_second": arch_rate,
        "ratio": arch_rate / base_rate,
        "archiver_peak_rss_mb": peak_kb as f64 / 1024.0,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    println!("rows                      {rows}");
    println!("batch size                {batch_size}");
    println!("raw baseline              {base_rate:>10.0} rows/s  ({baseline_secs:.2}s, psql COPY | zstd -3, DELETE)");
    println!("archiver                  {arch_rate:>10.0} rows/s  ({archiver_secs:.2}s, {workers} workers, S3 s3s-fs)");
    println!("ratio archiver/baseline   {:>10.2}", arch_rate / base_rate);
    println!("archiver peak RSS         {:>10.1} MB", peak_kb as f64 / 1024.0);
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    Ok(())
}

fn table_yaml(name: &str) -> String {
    format!("      - name: {name}\n        timestamp_column: created_at\n        primary_key: id\n")
}

/// Runs a command to completion, failing with its name if it fails; returns seconds taken.
fn timed(cmd: &mut std::process::Command, what: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let status = cmd.status()?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(t.elapsed().as_secs_f64())
}

async fn distributed(
    rows: u64,
    batch_size: u32,
    days: f64,
    workers: usize,
    items: u64,
    amqp: &str,
    json: Option<PathBuf>,
) -> anyhow::Result<()> {
    let coordinator = sibling_bin("archiver-coordinator")?;
    let worker_bin = sibling_bin("archiver-worker")?;
    for b in [&coordinator, &worker_bin] {
        if !b.is_file() {
            bail!("{} not found; build it with `cargo build --release --workspace`", b.display());
        }
    }
    let (db, s3) = tokio::join!(TestDb::new(), S3Server::start());
    eprintln!("seeding {rows} rows twice into {} ...", db.name);
    archiver_worker::seed::create_audit_table(&db.pool, "public", "audit_standalone").await?;
    archiver_worker::seed::insert_rows(&db.pool, "public", "audit_standalone", rows, 91.0 + days, 91.0).await?;
    sqlx::query("CREATE TABLE audit_distributed (LIKE audit_standalone INCLUDING ALL)").execute(&db.pool).await?;
    sqlx::query("INSERT INTO audit_distributed SELECT * FROM audit_standalone").execute(&db.pool).await?;
    // One row per hour for `items` hours: one item per hour with `range_interval: 1h`.
    archiver_worker::seed::create_audit_table(&db.pool, "public", "audit_publish").await?;
    archiver_worker::seed::insert_rows(&db.pool, "public", "audit_publish", items, 91.0 + items as f64 / 24.0, 91.0).await?;
    for t in ["audit_standalone", "audit_distributed"] {
        sqlx::query(&format!("VACUUM ANALYZE {t}")).execute(&db.pool).await?;
    }
    sqlx::query("CHECKPOINT").execute(&db.pool).await?;

    let dir = tempfile::tempdir()?;
    let queue = format!("archiver.bench.{}", std::process::id());
    let write = |name: &str, queue: Option<&str>, interval: &str, table: &str| -> anyhow::Result<PathBuf> {
        let q = queue.map(|q| format!("queue:\n  url: {amqp}\n  name: {q}\n")).unwrap_or_default();
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "{}{q}defaults:\n  retention_days: 90\n  batch_size: {batch_size}\n  range_interval: {interval}\ndatabases:\n  - {}\n    tables:\n{}",
                s3.yaml("bench"),
                db.yaml_connection(),
                table_yaml(table)
            ),
        )?;
        Ok(path)
    };
    let standalone_cfg = write("standalone.yaml", None, "1d", "audit_standalone")?;
    let distributed_cfg = write("distributed.yaml", Some(&queue), "1d", "audit_distributed")?;
    let publish_cfg = write("publish.yaml", Some(&format!("{queue}.publish")), "1h", "audit_publish")?;
    let quiet = |cmd: &mut std::process::Command| {
        cmd.env("RUST_LOG", "warn").stdout(Stdio::null());
    };

    let mut cmd = std::process::Command::new(&coordinator);
    cmd.args(["--config", standalone_cfg.to_str().unwrap(), "run", "--workers", &workers.to_string()]);
    quiet(&mut cmd);
    let standalone_secs = timed(&mut cmd, "standalone run")?;

    let mut worker = std::process::Command::new(&worker_bin);
    worker.args(["--config", distributed_cfg.to_str().unwrap(), "--concurrency", &workers.to_string()]);
    quiet(&mut worker);
    let mut worker = worker.spawn()?;
    let mut cmd = std::process::Command::new(&coordinator);
    cmd.args(["--config", distributed_cfg.to_str().unwrap(), "run", "--wait"]);
    quiet(&mut cmd);
    let distributed_secs = timed(&mut cmd, "distributed run")?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(worker.id() as libc::pid_t, libc::SIGTERM) };
    worker.wait()?;

    let mut cmd = std::process::Command::new(&coordinator);
    cmd.args(["--config", publish_cfg.to_str().unwrap(), "run"]);
    quiet(&mut cmd);
    cmd.stderr(Stdio::null());
    let publish_secs = timed(&mut cmd, "plan and publish")?;
    let (published,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM archiver.work_items WHERE table_name = 'audit_publish' AND published_at IS NOT NULL")
            .fetch_one(&db.pool)
            .await?;
    for t in ["audit_standalone", "audit_distributed"] {
        let (left,): (i64,) =
            sqlx::query_as(&format!("SELECT count(*) FROM {t} WHERE created_at < now() - interval '90 days'"))
                .fetch_one(&db.pool)
                .await?;
        if left != 0 {
            bail!("{t}: {left} eligible rows left");
        }
    }
    let s_rate = rows as f64 / standalone_secs;
    let d_rate = rows as f64 / distributed_secs;
    let p_rate = published as f64 / publish_secs;
    println!("rows                          {rows}");
    println!("standalone ({workers} workers)        {s_rate:>10.0} rows/s  ({standalone_secs:.2}s)");
    println!("distributed (1 worker, {workers} at once) {d_rate:>10.0} rows/s  ({distributed_secs:.2}s)");
    println!("ratio distributed/standalone  {:>10.2}", d_rate / s_rate);
    println!("plan + publish with confirms  {p_rate:>10.0} items/s ({published} items in {publish_secs:.2}s, whole command)");
    if let Some(path) = json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&serde_json::json!({
                "rows": rows, "standalone_rows_per_second": s_rate, "distributed_rows_per_second": d_rate,
                "ratio": d_rate / s_rate, "published_items": published, "publish_items_per_second": p_rate,
            }))?,
        )?;
    }
    Ok(())
}

/// Waits for the child and returns its exit status and peak resident set (KiB) from wait4.
fn wait_with_peak_rss(pid: libc::pid_t) -> anyhow::Result<(i32, i64)> {
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child; status and usage are valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 };
    Ok((code, usage.ru_maxrss))
}
