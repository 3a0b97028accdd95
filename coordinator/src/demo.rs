//! `archiver-coordinator demo`: the main job on embedded defaults.
//!
//! Creates the database `archiver_demo` on the local PostgreSQL if missing, seeds a fresh
//! `public.audit_log` spread over the last 365 days (dropping the demo database's old table and
//! checkpoint schema), and archives everything older than 90 days to `./archive` with the
//! embedded configuration (`demo.yaml`).

use std::time::Duration;

use archiver_engine::config::{self, Config};
use archiver_engine::source::db;

pub const CONFIG: &str = include_str!("demo.yaml");
/// The demo table (the embedded configuration names it).
const TABLE_SQL: &str = include_str!("demo_table.sql");
/// Its rows, spread over the last 365 days.
const ROWS_SQL: &str = include_str!("demo_rows.sql");

/// The embedded configuration, with `${VAR:-default}` resolved from the environment.
pub fn config() -> Config {
    config::parse("(embedded demo.yaml)", CONFIG, &|k| std::env::var(k).ok())
        .expect("the embedded demo configuration is valid")
        .config
}

/// Creates the demo database if needed and seeds `rows` rows.
pub async fn seed(config: &Config, rows: u64) -> anyhow::Result<()> {
    let dbc = &config.databases[0];
    let opts = db::source_options(dbc).map_err(anyhow::Error::msg)?;
    let admin = db::pool(opts.clone().database("postgres"), 1, Duration::from_secs(60));
    let (exists,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&dbc.name)
        .fetch_one(&admin)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach PostgreSQL for the demo: {e}"))?;
    if !exists {
        sqlx::query(&format!("CREATE DATABASE {}", db::quote_ident(&dbc.name))).execute(&admin).await?;
    }
    admin.close().await;
    let pool = db::pool(opts, 2, Duration::from_secs(60));
    // The table is created anew, so earlier demo checkpoints describe rows that no longer exist.
    let schema = db::quote_ident(&config.checkpoint.schema);
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await?;
    sqlx::raw_sql(&format!("DROP TABLE IF EXISTS public.audit_log; {TABLE_SQL}")).execute(&pool).await?;
    sqlx::query(ROWS_SQL).bind(rows as i64).execute(&pool).await?;
    sqlx::query("ANALYZE public.audit_log").execute(&pool).await?;
    pool.close().await;
    eprintln!("seeded {rows} rows into {}/public.audit_log (created_at spread over 365 days)", dbc.name);
    Ok(())
}

/// After the demo: where the objects went and what to try next.
pub fn next_steps(config: &Config) {
    let archive = match &config.storage {
        Some(archiver_engine::config::StorageConfig::Local { path, .. }) => path.display().to_string(),
        _ => "the configured store".to_string(),
    };
    eprintln!(
        "\nThe archived objects are under {archive}/ (one zstd JSON Lines file per batch, a manifest per work item), e.g.\n  \
         zstdcat \"$(find {archive} -name '*.jsonl.zst' | head -1)\" | head -2\n\
         Run the demo again to archive fresh rows; see docs/operations.md to archive your own tables."
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_config_loads() {
        let c = super::config();
        assert_eq!(c.tables().len(), 1);
    }
}
