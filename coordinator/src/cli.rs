//! The command line of `archiver-coordinator`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};

/// Moves old rows of PostgreSQL audit tables into object storage, then deletes them.
#[derive(Parser)]
#[command(name = "archiver-coordinator", version)]
pub struct Cli {
    /// The YAML configuration file.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Which configured tables a command acts on.
#[derive(Args, Clone, Default)]
pub struct ScopeArgs {
    /// Only this database (its `name` in the configuration).
    #[arg(long)]
    pub database: Option<String>,
    /// Only this table (`name` or `schema.name`).
    #[arg(long)]
    pub table: Option<String>,
}

impl From<ScopeArgs> for archiver_engine::setup::Scope {
    fn from(a: ScopeArgs) -> Self {
        archiver_engine::setup::Scope { database: a.database, table: a.table }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Plan and archive every eligible row of the configured tables.
    Run {
        #[command(flatten)]
        scope: ScopeArgs,
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
        /// With --wait: stop waiting after this long (e.g. 30m, 2h) and exit non-zero; the items
        /// go on in the workers.
        #[arg(long, value_parser = humantime::parse_duration, requires = "wait")]
        timeout: Option<Duration>,
        /// While the run works, serve /metrics, /healthz and /readyz here, e.g. 0.0.0.0:9101.
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
    },
    /// Publish an ad-hoc time range of one table, cut into `range_interval` items (needs `queue`).
    Enqueue {
        /// The database (its `name` in the configuration).
        #[arg(long)]
        database: String,
        /// The table (`name` or `schema.name`).
        #[arg(long)]
        table: String,
        /// Start of the range, inclusive: RFC 3339 (2024-01-01T00:00:00Z) or a date (2024-01-01,
        /// midnight UTC).
        #[arg(long, value_parser = parse_instant, allow_hyphen_values = true)]
        from: DateTime<Utc>,
        /// End of the range, exclusive, in the same formats; not past the table's retention cutoff.
        #[arg(long, value_parser = parse_instant, allow_hyphen_values = true)]
        to: DateTime<Utc>,
    },
    /// Per table: items pending, running, done and failed; rows and bytes archived; the oldest
    /// eligible row left; failed items with their last error.
    Status {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-enqueue failed items (needs `queue`).
    RetryFailed {
        #[command(flatten)]
        scope: ScopeArgs,
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
        /// In-process workers.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// While the demo works, serve /metrics, /healthz and /readyz here.
        #[arg(long)]
        metrics_addr: Option<SocketAddr>,
    },
}

/// An instant on the command line: RFC 3339, or a plain date meaning midnight UTC.
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    Err(format!("{s:?} is not a time: use RFC 3339 (2024-01-01T00:00:00Z) or a date (2024-01-01, midnight UTC)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn instants_take_rfc3339_or_a_date() {
        assert_eq!(parse_instant("2025-03-01").unwrap(), Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap());
        assert_eq!(parse_instant("2025-03-01T12:00:00+02:00").unwrap(), Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap());
        let e = parse_instant("-1d").unwrap_err();
        assert!(e.contains("\"-1d\"") && e.contains("RFC 3339") && e.contains("2024-01-01"), "{e}");
    }

    #[test]
    fn a_value_starting_with_a_hyphen_reaches_the_parser() {
        let e = Cli::try_parse_from(["x", "enqueue", "--database", "d", "--table", "t", "--from", "-5", "--to", "2025-01-01"])
            .err()
            .expect("rejected");
        assert!(e.to_string().contains("\"-5\" is not a time"), "{e}");
    }

    #[test]
    fn metrics_addr_is_offered_only_where_it_serves() {
        assert!(Cli::try_parse_from(["x", "run", "--metrics-addr", "127.0.0.1:0"]).is_ok());
        assert!(Cli::try_parse_from(["x", "status", "--metrics-addr", "127.0.0.1:0"]).is_err());
    }
}
