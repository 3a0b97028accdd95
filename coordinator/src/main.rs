use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use archiver_coordinator::cli::{Cli, Command};
use archiver_coordinator::standalone::RunOptions;
use archiver_coordinator::{archive, demo, distributed, render, standalone};
use archiver_engine::config::{self, Config};
use archiver_engine::observe::telemetry;
use archiver_engine::setup::Scope;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, warning) = match &cli.command {
        Command::Demo { .. } => (demo::config(), None),
        _ => match load(&cli) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let writer = tracing_subscriber::fmt::writer::BoxMakeWriter::new(|| archiver_coordinator::progress::LogWriter);
    let telemetry = match telemetry::init_with_writer(&cli.log_format, &config.telemetry, "archiver-coordinator", writer) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(archiver_engine::shutdown_on_signals(shutdown.clone()));
    let code = run(cli.command, config, shutdown).await;
    // Also after SIGTERM: the command returned at its safe point, its spans are still buffered.
    telemetry.shutdown().await;
    code
}

/// The configuration, and a warning about settings it ignores.
fn load(cli: &Cli) -> Result<(Config, Option<String>), String> {
    let path = cli.config.as_ref().ok_or("--config FILE is required")?;
    let loaded = config::load(path).map_err(|e| e.to_string())?;
    let warning = loaded.warning(path);
    Ok((loaded.config, warning))
}

async fn run(command: Command, config: Config, shutdown: CancellationToken) -> ExitCode {
    match command {
        Command::Demo { rows, workers, metrics_addr } => {
            if let Err(e) = demo::seed(&config, rows).await {
                return render::fail(e);
            }
            let opts = RunOptions { workers, metrics_addr, ..RunOptions::default() };
            let code = render::standalone(standalone::run(&config, opts, shutdown).await);
            demo::next_steps(&config);
            code
        }
        Command::Run { scope, dry_run, workers, wait, timeout, metrics_addr } => {
            if config.queue.is_some() && !dry_run {
                let opts = distributed::RunOptions {
                    scope: scope.into(),
                    wait,
                    progress: true,
                    poll: Duration::from_millis(250),
                    timeout,
                    metrics_addr,
                };
                return render::distributed(distributed::run(&config, opts, shutdown).await);
            }
            let scope: Scope = scope.into();
            let opts = RunOptions { scope: scope.clone(), dry_run, workers, metrics_addr, ..RunOptions::default() };
            let code = render::standalone(standalone::run(&config, opts, shutdown).await);
            if dry_run {
                archive::show_holds(&config, &scope).await;
            }
            code
        }
        Command::Restore(args) => archive::restore(&config, args).await.unwrap_or_else(render::fail),
        Command::Validate { scope, deep, json } => {
            archive::validate(&config, &scope.into(), deep, json).await.unwrap_or_else(render::fail)
        }
        Command::Hold(command) => match archive::hold(&config, command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => render::fail(e),
        },
        Command::Enqueue { database, table, from, to } => match distributed::enqueue(&config, &database, &table, from, to).await {
            Ok((label, items)) => {
                println!("{} published for {label} [{from}, {to})", render::count(items.len(), "item"));
                ExitCode::SUCCESS
            }
            Err(e) => render::fail(e),
        },
        Command::Status { scope, json } => match distributed::status(&config, &scope.clone().into()).await {
            Ok(tables) => {
                render::status(&tables, json);
                if !json {
                    archive::show_holds(&config, &scope.into()).await;
                }
                ExitCode::SUCCESS
            }
            Err(e) => render::fail(e),
        },
        Command::RetryFailed { scope } => match distributed::retry_failed(&config, &scope.into()).await {
            Ok(n) => {
                println!("{} re-enqueued", render::count(n, "failed item"));
                ExitCode::SUCCESS
            }
            Err(e) => render::fail(e),
        },
        Command::Reconcile => match reconcile(&config).await {
            Ok(n) => {
                println!("{} re-published", render::count(n, "item"));
                ExitCode::SUCCESS
            }
            Err(e) => render::fail(e),
        },
    }
}

async fn reconcile(config: &Config) -> anyhow::Result<usize> {
    let queue = config.queue.as_ref().context("no `queue` section in the configuration")?;
    let prepared = archiver_engine::setup::prepare(config, &Scope::default(), true).await?;
    let broker = archiver_engine::queue::Broker::connect(queue, "archiver-coordinator reconcile").await?;
    let n = distributed::reconcile(&prepared, &broker, distributed::lost_message_grace(queue)).await?;
    broker.close().await;
    Ok(n)
}
