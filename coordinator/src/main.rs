use std::path::PathBuf;
use std::time::Duration;
use std::process::ExitCode;

use archiver_coordinator::standalone::{self, Outcome, RunOptions};
use archiver_coordinator::{demo, distributed};
use archiver_engine::config::{self, Config};
use archiver_engine::setup::Scope;
use archiver_engine::observe::telemetry;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// Moves old rows of PostgreSQL audit tables into object storage, then deletes them.
#[derive(Parser)]
#[command(name = "archiver-coordinator", version)]
struct Cli {
    /// The YAML configuration file.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// While `run` or `demo` works, serve /metrics, /healthz and /readyz here, e.g. 0.0.0.0:9101.
    #[arg(long, global = true)]
    metrics_addr: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plan and archive every eligible row of the configured tables.
    Run {
        /// Only this database (its `name` in the configuration).
        #[arg(long)]
        database: Option<String>,
        /// Only this table (`name` or `schema.name`).
        #[arg(long)]
        table: Option<String>,
        /// Print per table the eligible rows and planned items; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// In-process workers (standalone mode, i.e. without a `queue` section).
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// With a queue: follow the published items to the end, re-publish items whose lease
        /// expired, print the summary, and exit non-zero if any item failed.
        #[arg(long)]
        wait: bool,
    },
    /// Publish an ad-hoc time range of one table, cut into `range_interval` items (needs `queue`).
    Enqueue {
        #[arg(long)]
        database: String,
        #[arg(long)]
        table: String,
        /// Start of the range (RFC 3339, e.g. 2024-01-01T00:00:00Z), inclusive.
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// End of the range, exclusive; not past the table's retention cutoff.
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
    },
    /// Per table: items pending, running, done and failed; rows and bytes archived; the oldest
    /// eligible row left; failed items with their last error.
    Status {
        #[arg(long)]
        database: Option<String>,
        #[arg(long)]
        table: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-enqueue failed items (needs `queue`).
    RetryFailed {
        #[arg(long)]
        database: Option<String>,
        #[arg(long)]
        table: Option<String>,
    },
    /// Re-publish items whose worker's lease expired, and pending items whose message was lost
    /// (needs `queue`); `run --wait` does this continuously.
    Reconcile,
    /// Seed a sample audit table in the local PostgreSQL and archive it to ./archive with the
    /// embedded default configuration.
    Demo {
        /// Rows to seed.
        #[arg(long, default_value_t = 200_000)]
        rows: u64,
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
}

/// The configuration, and a warning about settings it ignores.
fn load(path: &Option<PathBuf>) -> Result<(Config, Option<String>), String> {
    let path = path.as_ref().ok_or("--config FILE is required")?;
    let loaded = config::load(path).map_err(|e| e.to_string())?;
    let warning = loaded.warning(path);
    Ok((loaded.config, warning))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, warning) = match &cli.command {
        Command::Demo { .. } => (demo::config(), None),
        _ => match load(&cli.config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let telemetry = match telemetry::init(&cli.log_format, &config.telemetry, "archiver-coordinator") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: telemetry: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(archiver_engine::shutdown_on_signals(shutdown.clone()));
    let code = run(cli, config, shutdown).await;
    // Also after SIGTERM: the command returned at its safe point, its spans are still buffered.
    telemetry.shutdown().await;
    code
}

async fn run(cli: Cli, config: Config, shutdown: CancellationToken) -> ExitCode {
    if let Command::Demo { rows, workers } = &cli.command {
        if let Err(e) = demo::seed(&config, *rows).await {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
        let opts = RunOptions { workers: *workers, ..RunOptions::default() };
        return report(standalone::run(&config, opts, shutdown).await);
    }
    let scope = |database: &Option<String>, table: &Option<String>| Scope { database: database.clone(), table: table.clone() };
    if let (Some(addr), Command::Run { database, table, .. }) = (cli.metrics_addr, &cli.command) {
        match archiver_engine::setup::prepare(&config, &scope(database, table), false).await {
            Ok(prepared) => {
                let checks = archiver_engine::observe::readiness(&prepared, config.queue.clone());
                if let Err(e) = archiver_engine::observe::serve(addr, checks, shutdown.clone()).await {
                    eprintln!("error: --metrics-addr {addr}: {e}");
                    return ExitCode::from(2);
                }
            }
            Err(e) => return fail(e.into()),
        }
    }
    match cli.command {
        Command::Demo { .. } => unreachable!("handled above"),
        Command::Run { database, table, dry_run, workers, wait } => {
            let scope = scope(&database, &table);
            if config.queue.is_some() && !dry_run {
                let opts = distributed::RunOptions { scope, wait, progress: true, poll: Duration::from_millis(250) };
                return report(distributed::run(&config, opts, shutdown).await.map(Outcome::Ran));
            }
            let opts = RunOptions { scope, dry_run, workers, ..RunOptions::default() };
            report(standalone::run(&config, opts, shutdown).await)
        }
        Command::Enqueue { database, table, from, to } => {
            match distributed::enqueue(&config, &database, &table, from, to).await {
                Ok(items) => {
                    println!("{} items published for {database}/{table} [{from}, {to})", items.len());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Status { database, table, json } => match distributed::status(&config, &scope(&database, &table)).await {
            Ok(tables) if json => {
                println!("{}", serde_json::to_string_pretty(&tables).expect("status serializes"));
                ExitCode::SUCCESS
            }
            Ok(tables) => {
                println!("{:<40} {:>8} {:>8} {:>8} {:>8} {:>12} {:>14}  oldest eligible row", "table", "pending", "running", "done", "failed", "rows", "bytes");
                for (name, t) in &tables {
                    println!(
                        "{:<40} {:>8} {:>8} {:>8} {:>8} {:>12} {:>14}  {}",
                        name, t.pending, t.running, t.done, t.failed, t.rows_archived, t.bytes_archived,
                        t.oldest_eligible_row.map_or("none".to_string(), |t| t.to_rfc3339())
                    );
                    for f in &t.failed_items {
                        println!("  failed item {} [{}, {}) after {} attempts: {}", f.id, f.range_start, f.range_end, f.attempts, f.last_error.as_deref().unwrap_or(""));
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::RetryFailed { database, table } => match distributed::retry_failed(&config, &scope(&database, &table)).await {
            Ok(n) => {
                println!("{n} failed items re-enqueued");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Reconcile => {
            let run = async {
                let queue = config.queue.as_ref().ok_or_else(|| anyhow::anyhow!("no `queue` section in the configuration"))?;
                let prepared = archiver_engine::setup::prepare(&config, &Scope::default(), true).await?;
                let broker = archiver_engine::queue::Broker::connect(queue, "archiver-coordinator reconcile").await?;
                let n = distributed::reconcile(&prepared, &broker, distributed::lost_message_grace(queue)).await?;
                broker.close().await;
                anyhow::Ok(n)
            };
            match run.await {
                Ok(n) => {
                    println!("{n} items re-published");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

fn report(result: anyhow::Result<Outcome>) -> ExitCode {
    match result {
        Ok(Outcome::DryRun(tables)) => {
            for t in tables {
                let p = &t.plan;
                println!(
                    "{}: {} eligible rows (older than {}), {} items to resume, {} new items{}",
                    p.label,
                    t.eligible_rows,
                    p.cutoff.format("%Y-%m-%d %H:%M:%S UTC"),
                    p.resumed.len(),
                    p.new.len(),
                    match (p.items().next(), p.items().last()) {
                        (Some(a), Some(b)) => format!(", from {} to {}", a.range_start, b.range_end),
                        _ => String::new(),
                    }
                );
            }
            println!("dry run: nothing was changed");
            ExitCode::SUCCESS
        }
        Ok(Outcome::Ran(summary)) => {
            println!("{summary}");
            if summary.all_finished() {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: not every work item finished (see above); run again to resume");
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(e),
    }
}

