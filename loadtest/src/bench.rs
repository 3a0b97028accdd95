//! `distributed`: distributed mode with one worker against standalone mode on identical data, and
//! the coordinator's plan-and-publish rate.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use anyhow::bail;
use archiver_testkit::{S3Server, TestDb};

pub fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    Ok(me.with_file_name(name))
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

pub async fn distributed(
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
    archiver_testkit::seed::create_audit_table(&db.pool, "public", "audit_standalone").await?;
    archiver_testkit::seed::insert_rows(&db.pool, "public", "audit_standalone", rows, 91.0 + days, 91.0).await?;
    sqlx::query("CREATE TABLE audit_distributed (LIKE audit_standalone INCLUDING ALL)").execute(&db.pool).await?;
    sqlx::query("INSERT INTO audit_distributed SELECT * FROM audit_standalone").execute(&db.pool).await?;
    // One row per hour for `items` hours: one item per hour with `range_interval: 1h`.
    archiver_testkit::seed::create_audit_table(&db.pool, "public", "audit_publish").await?;
    archiver_testkit::seed::insert_rows(&db.pool, "public", "audit_publish", items, 91.0 + items as f64 / 24.0, 91.0).await?;
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

