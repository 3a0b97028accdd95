//! The backlog: rows older than their table's retention cutoff, still in the table.
//!
//! `archiver_rows_eligible{database,table}` is what dashboards and alerts watch to see that the
//! archiver keeps up. Coordinators set it when they plan and when a run ends; a long-running
//! worker serving metrics refreshes it every minute for its tables.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::setup::Prepared;
use crate::source::db::{qualified, quote_ident};
use crate::source::table::{cutoff, TableInfo};
use crate::source::Source;

/// Rows older than the cutoff that can be archived (NULL and `-infinity` timestamps excluded).
pub async fn eligible_rows(source: &Source, info: &TableInfo, cutoff: DateTime<Utc>) -> Result<i64, sqlx::Error> {
    let s = &info.settings;
    let (n,): (i64,) = sqlx::query_as(&format!(
        "SELECT count(*) FROM {} WHERE {ts} < $1 AND {ts} > '-infinity'",
        qualified(&s.schema, &s.table),
        ts = quote_ident(&s.timestamp_column)
    ))
    .bind(cutoff)
    .fetch_one(&source.pool)
    .await?;
    Ok(n)
}

/// Sets `archiver_rows_eligible` of every table in scope, if metrics are recorded (the count
/// costs a scan of the timestamp index, so it is skipped otherwise).
pub async fn report_eligible(prepared: &Prepared) {
    if !crate::observe::recording() {
        return;
    }
    for info in &prepared.tables {
        let s = &info.settings;
        let source = &prepared.sources[&s.database];
        let counted = async { eligible_rows(source, info, cutoff(&source.pool, s.retention_days).await?).await }.await;
        match counted {
            Ok(n) => metrics::gauge!(crate::observe::names::ROWS_ELIGIBLE, "database" => s.database.clone(), "table" => s.table.clone())
                .set(n as f64),
            Err(e) => tracing::warn!(table = %info.label(), error = %e, "cannot count the eligible rows"),
        }
    }
}


/// Refreshes the backlog gauge every `every` until `shutdown`.
pub async fn refresh(prepared: Prepared, every: Duration, shutdown: CancellationToken) {
    loop {
        report_eligible(&prepared).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
