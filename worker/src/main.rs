use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use archiver_worker::consumer::{self, WorkerOptions};
use archiver_engine::observe::telemetry;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Archives work items taken from RabbitMQ (distributed mode). Stateless: run as many as you like.
#[derive(Parser)]
#[command(name = "archiver-worker", version)]
struct Cli {
    /// The YAML configuration file (the same as the coordinator's; its tables are the allowlist).
    #[arg(long, short)]
    config: PathBuf,
    /// Work items processed at once (the prefetch count).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Seconds in-flight items get to reach a safe point after SIGTERM.
    #[arg(long, default_value_t = 60)]
    shutdown_grace: u64,
    /// Serve /metrics, /healthz and /readyz here, e.g. 0.0.0.0:9102.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = match archiver_engine::config::load(&cli.config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match telemetry::init(&cli.log_format, &loaded.config.telemetry, "archiver-worker") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: telemetry: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(w) = loaded.warning(&cli.config) {
        tracing::warn!("{w}");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(archiver_engine::shutdown_on_signals(shutdown.clone()));
    let mut opts = WorkerOptions::new(archiver_engine::default_worker_id());
    opts.concurrency = cli.concurrency.max(1);
    opts.shutdown_grace = Duration::from_secs(cli.shutdown_grace);
    opts.metrics_addr = cli.metrics_addr;
    let code = match consumer::run(Arc::new(loaded.config), opts, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}
