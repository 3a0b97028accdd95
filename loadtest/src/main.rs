//! `archiver-loadtest`: the load-testing guide's scenarios as a tool, and benchmarks that print
//! figures.
//!
//! Every scenario creates a scratch database (on PGHOST/PGPORT/PGUSER) and storage of its own,
//! runs the real `archiver-coordinator` and `archiver-worker` binaries, checks that every row
//! is either archived exactly once or still in its table, and writes a report (Markdown, JSON,
//! SVG plots) with a verdict per success criterion, judged only where the run met the
//! criterion's minimums (duration, setup, samples). `verdict` reads the reports of the guide's
//! five scenarios and is the only command that can say "ready for production".
//!
//! Exit status: 0 if every criterion was judged and passed, 1 if a criterion failed, 2 if a row
//! was lost or archived twice or the scenario could not run, 3 if nothing failed but not every
//! criterion could be judged (no verdict).

mod bench;
mod evidence;
mod harness;
mod machine;
mod plot;
mod readiness;
mod report;
mod sample;
mod scenarios;
mod tradeoff;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::bench::DistributedArgs;
use crate::readiness::{Readiness, VerdictArgs};
use crate::report::Verdict;
use crate::scenarios::{BaselineArgs, ConcurrencyArgs, DbImpactArgs, PoolArgs, RestoreArgs, SeedArgs, SustainedArgs};

/// Exit status when nothing failed but not every criterion could be judged.
const NO_VERDICT: u8 = 3;

#[derive(Parser)]
#[command(name = "archiver-loadtest", version)]
struct Cli {
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
    /// `archiver-coordinator restore` against the raw baseline (zstdcat of the archived objects
    /// into psql COPY of a staging table, then one INSERT ... SELECT json_populate_record) on the
    /// same rows, in one run; peak RSS of the restore.
    Restore(RestoreArgs),
    /// Distributed mode with one worker against standalone mode on identical data, and the
    /// coordinator's plan-and-publish rate (items/s, with publisher confirms). Needs RabbitMQ.
    Distributed(DistributedArgs),
    /// The production-readiness verdict over the reports of the guide's five scenarios: ready
    /// only if each passed with every criterion judged.
    Verdict(VerdictArgs),
    /// Lays db-impact runs made with different governor settings side by side: a table and a
    /// plot of rows/s against the probe p99 ratio and the CPU increase.
    Tradeoff(tradeoff::TradeoffArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let report = match cli.command {
        Command::Seed(a) => return exit(scenarios::seed(a).await),
        Command::Distributed(a) => return exit(bench::distributed(a).await),
        Command::Verdict(a) => return readiness_exit(readiness::run(a)),
        Command::Tradeoff(a) => return exit(tradeoff::run(a)),
        Command::Sustained(a) => scenarios::sustained(a).await,
        Command::Concurrency(a) => scenarios::concurrency(a).await,
        Command::LargeBatch(a) => scenarios::large_batch(a).await,
        Command::Compare(a) => scenarios::compare(a).await,
        Command::Restore(a) => scenarios::restore(a).await,
        Command::PoolStability(a) => scenarios::pool_stability(a).await,
        Command::DbImpact(a) => scenarios::db_impact(a).await,
    };
    match report {
        Ok(r) if !r.correctness.ok() => {
            eprintln!("error: rows were lost or archived twice: {:?}", r.correctness);
            ExitCode::from(2)
        }
        Ok(r) => match r.verdict {
            Verdict::Pass => ExitCode::SUCCESS,
            Verdict::Fail => ExitCode::from(1),
            Verdict::Inconclusive => ExitCode::from(NO_VERDICT),
        },
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

fn readiness_exit(r: anyhow::Result<Readiness>) -> ExitCode {
    match r {
        Ok(Readiness::Ready) => ExitCode::SUCCESS,
        Ok(Readiness::NotReady) => ExitCode::from(1),
        Ok(Readiness::NoVerdict) => ExitCode::from(NO_VERDICT),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// The options (`--name`) a subcommand's help offers.
    fn options(sub: &str) -> Vec<String> {
        let mut cmd = Cli::command();
        let help = cmd.find_subcommand_mut(sub).unwrap().render_help().to_string();
        help.split_whitespace().filter(|w| w.starts_with("--")).map(|w| w.trim_end_matches([',', '=']).to_string()).collect()
    }

    #[test]
    fn each_subcommand_offers_only_the_options_it_uses() {
        let seed = options("seed");
        for ignored in ["--out", "--storage", "--amqp", "--bin-dir"] {
            assert!(!seed.iter().any(|o| o == ignored), "seed --help offers {ignored}, which seed ignores: {seed:?}");
        }
        assert!(seed.iter().any(|o| o == "--database"), "{seed:?}");
        // Workers over a queue: RabbitMQ. Standalone runs: none.
        for sub in ["sustained", "concurrency", "pool-stability"] {
            let o = options(sub);
            assert!(["--amqp", "--out", "--storage", "--bin-dir"].iter().all(|x| o.iter().any(|y| y == x)), "{sub}: {o:?}");
        }
        for sub in ["large-batch", "compare", "db-impact", "restore"] {
            let o = options(sub);
            assert!(!o.iter().any(|x| x == "--amqp") && o.iter().any(|x| x == "--out"), "{sub}: {o:?}");
        }
        let d = options("distributed");
        assert!(d.iter().any(|x| x == "--amqp") && !d.iter().any(|x| x == "--out" || x == "--storage" || x == "--bin-dir"), "{d:?}");
    }

    #[test]
    fn options_seed_ignores_are_refused_not_swallowed() {
        for args in [["archiver-loadtest", "seed", "--database", "d", "--out", "x"], ["archiver-loadtest", "--out", "x", "seed", "--database", "d"]] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["archiver-loadtest", "compare", "--out", "x", "--storage", "local"]).is_ok());
        assert!(Cli::try_parse_from(["archiver-loadtest", "compare", "--amqp", "amqp://x"]).is_err());
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
