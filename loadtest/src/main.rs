//! `archiver-loadtest`: the load-testing guide's scenarios as a tool, and benchmarks that print
//! figures.
//!
//! Every scenario creates a scratch database (on PGHOST/PGPORT/PGUSER) and storage of its own,
//! runs the real `archiver-coordinator` and `archiver-worker` binaries, checks that every row
//! is either archived exactly once or still in its table, and writes a report (Markdown, JSON,
//! SVG plots) with a PASS/FAIL per success criterion.
//!
//! Exit status: 0 if every criterion passed, 1 if a criterion failed, 2 if a row was lost or
//! archived twice or the scenario could not run.

mod bench;
mod harness;
mod report;
mod sample;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::harness::Common;
use crate::scenarios::{BaselineArgs, ConcurrencyArgs, DbImpactArgs, PoolArgs, SeedArgs, SustainedArgs};

#[derive(Parser)]
#[command(name = "archiver-loadtest", version)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create realistic audit tables with rows spread over a chosen age; optionally keep
    /// inserting fresh rows.
    Seed(SeedArgs),
    /// The archiver runs continuously while rows past the cutoff keep arriving; memory, CPU and
    /// connections are sampled over time (the guide's 24-hour test, any duration).
    Sustained(SustainedArgs),
    /// Several tables archived in parallel by several workers over RabbitMQ.
    Concurrency(ConcurrencyArgs),
    /// Memory and throughput at a large batch size, against the raw baseline.
    LargeBatch(BaselineArgs),
    /// Repeated runs against one long-lived worker; its connections must come back to the
    /// baseline after each.
    PoolStability(PoolArgs),
    /// A probe workload (inserts and indexed reads) measured before, during and after archiving.
    DbImpact(DbImpactArgs),
    /// The archiver against the raw baseline (psql COPY | zstd -3, then DELETE) on identical
    /// data, in one run.
    Compare(BaselineArgs),
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
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let c = cli.common;
    let report = match cli.command {
        Command::Seed(a) => return exit(scenarios::seed(a).await),
        Command::Distributed { rows, batch_size, days, workers, items, json } => {
            return exit(bench::distributed(rows, batch_size, days, workers, items, &c.amqp, json).await)
        }
        Command::Sustained(a) => scenarios::sustained(a, c).await,
        Command::Concurrency(a) => scenarios::concurrency(a, c).await,
        Command::LargeBatch(a) => scenarios::large_batch(a, c, false).await,
        Command::Compare(a) => scenarios::large_batch(a, c, true).await,
        Command::PoolStability(a) => scenarios::pool_stability(a, c).await,
        Command::DbImpact(a) => scenarios::db_impact(a, c).await,
    };
    match report {
        Ok(r) if !r.correctness.ok() => {
            eprintln!("error: rows were lost or archived twice: {:?}", r.correctness);
            ExitCode::from(2)
        }
        Ok(r) if r.verdict == "PASS" => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
