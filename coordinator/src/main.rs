use std::path::PathBuf;
use std::process::ExitCode;

use archiver_coordinator::standalone::{self, Outcome, RunOptions};
use archiver_coordinator::{demo, init_logging};
use archiver_worker::config::{self, Config};
use archiver_worker::setup::Scope;
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
        /// In-process workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
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

fn load(path: &Option<PathBuf>) -> Result<Config, String> {
    let path = path.as_ref().ok_or("--config FILE is required")?;
    let loaded = config::load(path).map_err(|e| e.to_string())?;
    if let Some(w) = loaded.warning(path) {
        tracing::warn!("{w}");
    }
    Ok(loaded.config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    let (config, scope, dry_run, workers) = match &cli.command {
        Command::Run { database, table, dry_run, workers } => match load(&cli.config) {
            Ok(c) => (c, Scope { database: database.clone(), table: table.clone() }, *dry_run, *workers),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        Command::Demo { rows, workers } => {
            let c = demo::config();
            if let Err(e) = demo::seed(&c, *rows).await {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
            (c, Scope::default(), false, *workers)
        }
    };
    let opts = RunOptions { scope, dry_run, workers, ..RunOptions::default() };
    match standalone::run(&config, opts, shutdown).await {
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
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM: stop at the next safe point.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::warn!("shutdown requested: finishing current batches, then handing items back");
    shutdown.cancel();
}
