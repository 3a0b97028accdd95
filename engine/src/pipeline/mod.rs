//! The archive pipeline: one work item from claim to manifest.
//!
//! One stage a file, in the order a batch goes through them: `extract` (keyset read, streamed into
//! `encode`), `upload`, `verify`, `record` (the checkpoint), `delete`; then, once per item,
//! `manifest` (the commit marker). `producer` reads batches ahead of the stages, `driver` runs one
//! claimed item through them, `spans` holds its traces and counters, `faults` the test-only
//! crash points. Standalone mode and distributed workers both call [`Pipeline::run_item`].

pub mod delete;
mod driver;
pub mod encode;
mod error;
pub mod extract;
pub mod faults;
mod manifest;
mod producer;
mod record;
pub mod render;
mod spans;
pub mod upload;
pub mod verify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use archiver_proto::WorkItem;
use tokio_util::sync::CancellationToken;
use tracing::Span;

pub use self::error::{db_retryable, PipelineError};
pub use self::faults::{Hooks, NoHooks, Point};
pub use self::spans::item_span;

use self::delete::DeleteLimits;
use self::driver::ItemRun;
use self::extract::TableSql;
use crate::checkpoint::BatchRecord;
use crate::source::table::TableInfo;
use crate::source::Source;
use crate::storage::ObjectStore;

/// How an item ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemReport {
    pub rows: i64,
    pub bytes: i64,
    pub objects: i64,
    /// Rows archived but not deleted (changed or removed by someone else meanwhile).
    pub rows_short: i64,
}

/// What this process archived (rows deleted after their object was verified and recorded),
/// readable while items run: in total, and per table label.
#[derive(Debug, Default)]
pub struct Progress {
    pub rows: std::sync::atomic::AtomicU64,
    pub bytes: std::sync::atomic::AtomicU64,
    pub tables: dashmap::DashMap<String, ItemReport>,
}

impl Progress {
    fn add(&self, item: &WorkItem, b: &BatchRecord, deleted: i64) {
        self.rows.fetch_add(b.row_count as u64, Ordering::Relaxed);
        self.bytes.fetch_add(b.byte_size as u64, Ordering::Relaxed);
        let mut t = self.tables.entry(item.table_label()).or_default();
        t.rows += b.row_count;
        t.bytes += b.byte_size;
        t.objects += 1;
        t.rows_short += b.row_count - deleted;
    }
}

/// Everything needed to run work items.
pub struct Pipeline {
    pub store: Arc<dyn ObjectStore>,
    pub sources: HashMap<String, Source>,
    /// Inspected tables, by (database, schema, table).
    pub tables: HashMap<(String, String, String), Arc<TableInfo>>,
    pub worker_id: String,
    pub lease: Duration,
    hooks: Arc<dyn Hooks>,
    /// On a retryable error, hand the item back (pending, with its last error) instead of
    /// marking it failed: the distributed worker retries it later and marks it failed itself
    /// once `max_attempts` is reached.
    pub hand_back_transient: bool,
}

impl Pipeline {
    /// A pipeline over what `setup::prepare` connected and checked.
    pub fn new(prepared: &crate::setup::Prepared, config: &crate::config::Config, worker_id: String, hand_back_transient: bool) -> Self {
        Pipeline {
            store: prepared.store.clone(),
            sources: prepared.sources.clone(),
            tables: prepared
                .tables
                .iter()
                .map(|t| ((t.settings.database.clone(), t.settings.schema.clone(), t.settings.table.clone()), t.clone()))
                .collect(),
            worker_id,
            lease: config.checkpoint.lease_duration.0,
            hooks: Arc::new(NoHooks),
            hand_back_transient,
        }
    }

    /// The same pipeline with test hooks called at every [`Point`].
    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    async fn fault(&self, point: Point, item: &WorkItem, seq: i32) -> Result<(), PipelineError> {
        self.hooks.at(point, item, seq).await
    }

    fn table(&self, item: &WorkItem) -> Result<Arc<TableInfo>, PipelineError> {
        self.tables
            .get(&(item.database.clone(), item.schema.clone(), item.table.clone()))
            .cloned()
            .ok_or_else(|| PipelineError::UnknownTable(item.table_label()))
    }

    fn source(&self, database: &str) -> Result<&Source, PipelineError> {
        self.sources.get(database).ok_or_else(|| PipelineError::UnknownDatabase(database.to_string()))
    }

    /// Claims the item, archives it, and records how it ended: done, failed (with its error), or
    /// handed back (cancelled). Returns Ok(None) if another worker holds it or it is done already.
    /// Run it inside the item's [`item_span`]: batch spans hang below the current span.
    pub async fn run_item(
        &self,
        item_id: i64,
        database: &str,
        cancel: &CancellationToken,
        progress: &Progress,
    ) -> Result<Option<ItemReport>, PipelineError> {
        let source = self.source(database)?;
        let cp = &source.checkpoints;
        cp.ensure_presence(&self.worker_id).await?;
        let Some(row) = cp.claim(item_id, &self.worker_id, self.lease).await? else {
            return Ok(None);
        };
        let item = row.item();
        metrics::gauge!(crate::observe::names::ITEMS_IN_FLIGHT).increment(1.0);
        let lost = Arc::new(AtomicBool::new(false));
        let stop = cancel.child_token();
        let heartbeat = tokio::spawn(driver::heartbeat(cp.clone(), item.id, self.worker_id.clone(), self.lease, lost.clone(), stop.clone()));
        let result = match self.table(&item) {
            Ok(info) => {
                let s = &info.settings;
                let run = ItemRun {
                    pipeline: self,
                    item: item.clone(),
                    attempt: row.attempts,
                    sql: Arc::new(TableSql::new(&info, cp.in_source.then(|| cp.t("holds")).as_deref())),
                    limits: DeleteLimits { lock_timeout: s.lock_timeout, statement_timeout: s.statement_timeout },
                    info: info.clone(),
                    source,
                    stop,
                    lost,
                    progress,
                };
                run.archive().await
            }
            Err(e) => Err(e),
        };
        heartbeat.abort();
        metrics::gauge!(crate::observe::names::ITEMS_IN_FLIGHT).decrement(1.0);
        self.end_claim(&item, source, result).await
    }

    /// Records how a claimed item ended, and counts its error.
    async fn end_claim(
        &self,
        item: &WorkItem,
        source: &Source,
        result: Result<ItemReport, PipelineError>,
    ) -> Result<Option<ItemReport>, PipelineError> {
        let cp = &source.checkpoints;
        if let Err(e) = &result {
            if let Some((stage, kind)) = e.metric_labels() {
                crate::observe::count_error(stage, kind);
                crate::observe::telemetry::record_error(&Span::current(), e);
            }
        }
        match result {
            Ok(report) => {
                let now = chrono::Utc::now().timestamp() as f64;
                metrics::gauge!(crate::observe::names::LAST_SUCCESS, "database" => item.database.clone(), "table" => item.table.clone())
                    .set(now);
                Ok(Some(report))
            }
            Err(e) if e.is_injected_crash() => Err(e),
            Err(PipelineError::Cancelled) => {
                cp.release(item.id, &self.worker_id).await?;
                Err(PipelineError::Cancelled)
            }
            Err(PipelineError::LeaseLost) => Err(PipelineError::LeaseLost),
            Err(e) if e.stops_the_run() => {
                tracing::error!(item = %item.slug(), table = %item.table_label(), error = %e, "every item would fail the same way; handing the item back and stopping the run");
                cp.release_with_error(item.id, &self.worker_id, &e.to_string()).await?;
                Err(e)
            }
            Err(e) if self.hand_back_transient && e.is_retryable() => {
                tracing::warn!(item = %item.slug(), table = %item.table_label(), error = %e, "work item hit a transient error; handing it back");
                cp.release_with_error(item.id, &self.worker_id, &e.to_string()).await?;
                Err(e)
            }
            Err(e) => {
                tracing::error!(item = %item.slug(), table = %item.table_label(), error = %e, "work item failed");
                cp.fail(item.id, &self.worker_id, &e.to_string()).await?;
                Err(e)
            }
        }
    }
}
