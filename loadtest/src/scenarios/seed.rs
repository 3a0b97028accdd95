//! `seed`: creates realistic audit tables with rows spread over a chosen age, and optionally
//! keeps inserting fresh rows. Not a measured scenario: it has no pass criteria and succeeds when
//! every table is seeded (and the inserters stopped without an error).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{pool_for, seed_table, spawn_inserter, table_names};

#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Database on PGHOST/PGPORT/PGUSER (PGPASSWORD) to seed; created if missing.
    #[arg(long)]
    pub database: String,
    /// Tables to create: `PREFIX` for one, `PREFIX_1` … `PREFIX_N` for more. Existing ones are
    /// dropped.
    #[arg(long, default_value_t = 1)]
    pub tables: usize,
    #[arg(long, default_value = "audit_load")]
    pub prefix: String,
    /// Rows per table.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Age of the oldest row, in days.
    #[arg(long, default_value_t = 120.0)]
    pub oldest_days: f64,
    /// Age of the newest row, in days.
    #[arg(long, default_value_t = 0.0)]
    pub newest_days: f64,
    /// Add a `details` column of 0 to 3 KB of text per row.
    #[arg(long)]
    pub wide: bool,
    /// Then keep inserting fresh rows at this rate (rows/s per table) …
    #[arg(long)]
    pub keep_inserting: Option<u64>,
    /// … for this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub insert_for: Option<Duration>,
}

pub async fn seed(a: SeedArgs) -> anyhow::Result<()> {
    let admin = pool_for("postgres", 1);
    let exists: Option<(i32,)> =
        sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1").bind(&a.database).fetch_optional(&admin).await?;
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE {}", archiver_engine::source::db::quote_ident(&a.database))).execute(&admin).await?;
    }
    let pool = pool_for(&a.database, 4);
    let t = Instant::now();
    let tables = table_names(&a.prefix, a.tables);
    for table in &tables {
        seed_table(&pool, table, a.rows, a.oldest_days, a.newest_days, a.wide).await?;
        eprintln!("{}.public.{table}: {} rows from {} to {} days old", a.database, a.rows, a.oldest_days, a.newest_days);
    }
    eprintln!("seeded in {:.1}s ({:.0} rows/s)", t.elapsed().as_secs_f64(), (a.rows * tables.len() as u64) as f64 / t.elapsed().as_secs_f64());
    if let Some(rate) = a.keep_inserting {
        let stop = CancellationToken::new();
        let inserters: Vec<_> =
            tables.iter().map(|t| spawn_inserter(pool.clone(), t.clone(), rate, (0.0, 0.0), stop.clone())).collect();
        eprintln!("inserting {rate} fresh rows/s into each table; Ctrl-C stops");
        match a.insert_for {
            Some(d) => tokio::select! { _ = tokio::time::sleep(d) => {}, _ = tokio::signal::ctrl_c() => {} },
            None => tokio::signal::ctrl_c().await?,
        }
        stop.cancel();
        let mut total = 0;
        for i in inserters {
            total += i.await??;
        }
        eprintln!("inserted {total} fresh rows");
    }
    Ok(())
}
