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
        #[arg(long, conflicts_with = "dry_run")]
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
    /// Bring archived rows back: the rows of [--from, --to) (by the rows' own timestamps) of one
    /// table, from the archive alone, into the table itself (then held) or into --into.
    Restore(RestoreArgs),
    /// Check the archive against its manifests (every object present, size and SHA-256) and,
    /// where reachable, against the checkpoint store; list orphans. Exit 0 only if all holds.
    Validate {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Also decompress every object and check its rows, JSON and key bounds.
        #[arg(long)]
        deep: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Legal holds: held ranges of a table are never archived or deleted.
    #[command(subcommand)]
    Hold(HoldCommand),
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

#[derive(Args, Clone)]
pub struct RestoreArgs {
    /// The database (its `name` in the configuration).
    #[arg(long)]
    pub database: String,
    /// The archived table (`name` or `schema.name`).
    #[arg(long)]
    pub table: String,
    /// Restore rows whose timestamp is at or after this (RFC 3339 or a date); default: the first.
    #[arg(long, value_parser = parse_instant, allow_hyphen_values = true)]
    pub from: Option<DateTime<Utc>>,
    /// Restore rows whose timestamp is before this; default: the last.
    #[arg(long, value_parser = parse_instant, allow_hyphen_values = true)]
    pub to: Option<DateTime<Utc>>,
    /// Restore into this table (`schema.name`, or `name` in the archived table's schema; a part
    /// may be double-quoted, e.g. `"a.b"."x y"`), created like the archived one if it does not exist. Default: back into the archived table, which
    /// then gets a legal hold on the range so the next run leaves the rows in place.
    #[arg(long)]
    pub into: Option<String>,
    /// A row whose key is already in the target: skip (keep the table's row), overwrite, or fail
    /// (nothing of that object is written).
    #[arg(long, default_value = "skip", value_parser = ["skip", "overwrite", "fail"])]
    pub on_conflict: String,
    /// Restore the other objects when some are missing or damaged (they are named; exit 1).
    #[arg(long)]
    pub skip_damaged: bool,
    /// Print the objects, rows and bytes it would restore; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Subcommand, Clone)]
pub enum HoldCommand {
    /// Place a hold on [--from, --to) of one table.
    Add {
        /// The database (its `name` in the configuration).
        #[arg(long)]
        database: String,
        /// The table (`name` or `schema.name`).
        #[arg(long)]
        table: String,
        /// Start of the held range, inclusive (RFC 3339 or a date).
        #[arg(long, value_parser = parse_instant, allow_hyphen_values = true)]
        from: DateTime<Utc>,
        /// End of the held range, exclusive.
        #[arg(long, value_parser = parse_instant, allow_hyphen_values = true)]
        to: DateTime<Utc>,
        /// Why (a case, a ticket): kept with the hold.
        #[arg(long)]
        reason: String,
    },
    /// List holds, active first, with who placed or released them, when and why.
    List {
        /// Only this database.
        #[arg(long)]
        database: Option<String>,
        /// Also released holds.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Release an active hold: its range is archived again by the next run.
    Release {
        /// The hold's id, as `hold list` shows it.
        id: i64,
        /// The database whose checkpoint store holds it (needed only when ids repeat across
        /// databases, i.e. without a shared `checkpoint.url`).
        #[arg(long)]
        database: Option<String>,
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
        // A dry run works nothing to watch: refused, not silently ignored.
        assert!(Cli::try_parse_from(["x", "run", "--dry-run", "--metrics-addr", "127.0.0.1:0"]).is_err());
    }
}
