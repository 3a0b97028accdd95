//! `distributed`: distributed mode with one worker against standalone mode on identical data, and
//! the coordinator's plan-and-publish rate.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context};
use archiver_testkit::config::{ConfigBuilder, Queue, Storage, Table};
use archiver_testkit::{S3Server, TestDb};
use tokio::process::Command;

use crate::harness::Amqp;

#[derive(Debug, Clone, clap::Args)]
pub struct DistributedArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    #[arg(long, default_value_t = 50_000)]
    pub batch_size: u32,
    #[arg(long, default_value_t = 19.0)]
    pub days: f64,
    /// In-process workers of standalone mode, and the worker's --concurrency.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Items for the publish-rate measurement (one-hour ranges).
    #[arg(long, default_value_t = 5_000)]
    pub items: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub amqp: Amqp,
}

pub fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name(name))
}

/// `bin --config config args…`, logging at `warn`, its stdout discarded.
fn command(bin: &Path, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config).args(args).env("RUST_LOG", "warn").stdout(Stdio::null());
    cmd
}

/// Runs a command to completion, failing with its name if it fails; returns seconds taken.
async fn timed(mut cmd: Command, what: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let status = cmd.status().await.with_context(|| format!("starting the {what}"))?;
    if !status.success() {
        bail!("{what} failed: {status}");
    }
    Ok(t.elapsed().as_secs_f64())
}

/// The same rows in `audit_standalone` and `audit_distributed`, and one row an hour for
/// `a.items` hours in `audit_publish` (one item an hour with `range_interval: 1h`).
async fn seed(db: &TestDb, a: &DistributedArgs) -> anyhow::Result<()> {
    eprintln!("seeding {} rows twice into {} ...", a.rows, db.name);
    archiver_testkit::seed::create_audit_table(&db.pool, "public", "audit_standalone").await?;
    archiver_testkit::seed::insert_rows(&db.pool, "public", "audit_standalone", a.rows, 91.0 + a.days, 91.0).await?;
    sqlx::query("CREATE TABLE audit_distributed (LIKE audit_standalone INCLUDING ALL)").execute(&db.pool).await?;
    sqlx::query("INSERT INTO audit_distributed SELECT * FROM audit_standalone").execute(&db.pool).await?;
    archiver_testkit::seed::create_audit_table(&db.pool, "public", "audit_publish").await?;
    archiver_testkit::seed::insert_rows(&db.pool, "public", "audit_publish", a.items, 91.0 + a.items as f64 / 24.0, 91.0).await?;
    for t in ["audit_standalone", "audit_distributed"] {
        sqlx::query(&format!("VACUUM ANALYZE {t}")).execute(&db.pool).await?;
    }
    sqlx::query("CHECKPOINT").execute(&db.pool).await?;
    Ok(())
}

/// What was measured.
struct Results {
    rows: u64,
    workers: usize,
    standalone_secs: f64,
    distributed_secs: f64,
    publish_secs: f64,
    published: i64,
}

pub async fn distributed(a: DistributedArgs) -> anyhow::Result<()> {
    let amqp = a.amqp.amqp.as_str();
    let coordinator = sibling_bin("archiver-coordinator")?;
    let worker_bin = sibling_bin("archiver-worker")?;
    for b in [&coordinator, &worker_bin] {
        if !b.is_file() {
            bail!("{} not found; build it with `cargo build --release --workspace`", b.display());
        }
    }
    let (db, s3) = tokio::join!(TestDb::new(), S3Server::start());
    seed(&db, &a).await?;

    let dir = tempfile::tempdir()?;
    let queue = format!("archiver.bench.{}", std::process::id());
    let config = |table: &str, interval: &str| {
        ConfigBuilder::new()
            .storage(Storage::s3(&s3, "bench"))
            .set_default("retention_days", 90)
            .set_default("batch_size", a.batch_size)
            .set_default("range_interval", interval)
            .database(&db)
            .table(Table::audit(table))
    };
    let standalone_cfg = config("audit_standalone", "1d").write(dir.path().join("standalone.yaml"))?;
    let distributed_cfg =
        config("audit_distributed", "1d").queue(Queue::new(amqp, &queue)).write(dir.path().join("distributed.yaml"))?;
    let publish_cfg = config("audit_publish", "1h")
        .queue(Queue::new(amqp, &format!("{queue}.publish")))
        .write(dir.path().join("publish.yaml"))?;
    let workers = a.workers.to_string();

    let standalone_secs = timed(command(&coordinator, &standalone_cfg, &["run", "--workers", &workers]), "standalone run").await?;

    let mut worker = command(&worker_bin, &distributed_cfg, &["--concurrency", &workers]).spawn()?;
    let distributed_secs = timed(command(&coordinator, &distributed_cfg, &["run", "--wait"]), "distributed run").await?;
    if let Some(pid) = worker.id() {
        // SAFETY: signalling our own child, not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    worker.wait().await?;

    let mut cmd = command(&coordinator, &publish_cfg, &["run"]);
    cmd.stderr(Stdio::null());
    let publish_secs = timed(cmd, "plan and publish").await?;
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
    let results = Results { rows: a.rows, workers: a.workers, standalone_secs, distributed_secs, publish_secs, published };
    print(&results, a.json.as_deref())
}

/// Prints the figures, and writes them as JSON to `json`.
fn print(r: &Results, json: Option<&Path>) -> anyhow::Result<()> {
    let Results { rows, workers, standalone_secs, distributed_secs, publish_secs, published } = *r;
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
