//! The archive pipeline: one work item from claim to manifest.
//!
//! For each batch: extract -> encode -> upload -> verify -> checkpoint (record) -> delete. The
//! next batch is read and encoded while the previous one uploads and deletes. A crash at any point
//! leaves either an unrecorded object (overwritten by the retry under the same key, or removed when
//! the item finishes) or a recorded batch (finished from its record on resume, never by selecting
//! again). Standalone mode and distributed workers both call [`Pipeline::run_item`].

pub mod checkpoint;
pub mod delete;
pub mod encode;
pub mod extract;
pub mod upload;
pub mod verify;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archiver_proto::manifest::{KeyBound, Manifest, ManifestObject, FORMAT};
use archiver_proto::{layout, WorkItem};
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{field::Empty, Instrument, Span};

use self::checkpoint::{BatchRecord, CheckpointStore};
use self::delete::DeleteLimits;
use self::encode::Encoder;
use self::extract::{Extracted, TableSql, Window};
use self::verify::Verification;
use crate::storage::{ObjectStore, StorageError};
use crate::table::TableInfo;

/// Why a work item did not finish.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("the lease on the work item was lost; another worker may own it now")]
    LeaseLost,
    #[error("stopped at a safe point")]
    Cancelled,
    #[error("{0}")]
    Invalid(String),
    /// Test-only crash emulation: the item stops dead, with no clean-up, as if the process died.
    #[error("crash injected at {0:?}")]
    Crashed(Point),
}

impl PipelineError {
    /// (stage, kind) labels of `archiver_errors_total`; None for stops that are not errors.
    pub fn metric_labels(&self) -> Option<(&'static str, &'static str)> {
        let kind = if self.is_retryable() { "transient" } else { "permanent" };
        Some(match self {
            PipelineError::Database(_) => ("database", kind),
            PipelineError::Storage(_) => ("storage", kind),
            PipelineError::Verify(_) => ("verify", kind),
            PipelineError::LeaseLost => ("lease", "lost"),
            PipelineError::Invalid(_) => ("config", kind),
            PipelineError::Cancelled | PipelineError::Crashed(_) => return None,
        })
    }

    /// Worth another attempt later (connection trouble, timeouts, store hiccups).
    pub fn is_retryable(&self) -> bool {
        match self {
            PipelineError::Database(e) => db_retryable(e),
            PipelineError::Storage(e) => e.is_retryable(),
            _ => false,
        }
    }
}

fn db_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            // lock_not_available, deadlock, serialization, query_canceled (statement_timeout),
            // admin shutdown, cannot connect now, too many connections
            Some("55P03" | "40P01" | "40001" | "57014" | "57P01" | "57P03" | "53300")
        ),
        _ => false,
    }
}

/// Points of the pipeline where tests inject faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A batch was read and encoded.
    Extracted,
    /// Its object was stored.
    Uploaded,
    /// Its record was committed to the checkpoint store.
    Recorded,
    /// Its rows were deleted.
    Deleted,
    /// The manifest was written, before the item is marked done.
    ManifestWritten,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::Extracted => "extracted",
            Point::Uploaded => "uploaded",
            Point::Recorded => "recorded",
            Point::Deleted => "deleted",
            Point::ManifestWritten => "manifest",
        }
    }
}

/// Called at every [`Point`]; an error stops the item there. Production uses [`NoHooks`].
#[async_trait]
pub trait Hooks: Send + Sync {
    async fn at(&self, point: Point, item: &WorkItem, seq: i32) -> Result<(), PipelineError>;
}

pub struct NoHooks;

#[async_trait]
impl Hooks for NoHooks {
    async fn at(&self, point: Point, _item: &WorkItem, seq: i32) -> Result<(), PipelineError> {
        crash_from_env(point, seq);
        Ok(())
    }
}

/// Crash injection for the process-level tests: `ARCHIVER_CRASH_AT=uploaded:2` aborts the whole
/// process (no destructors, no clean-up) right after batch 2's upload.
fn crash_from_env(point: Point, seq: i32) {
    static SPEC: std::sync::OnceLock<Option<(String, i32)>> = std::sync::OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("ARCHIVER_CRASH_AT").ok()?;
        let (p, s) = v.split_once(':')?;
        Some((p.to_string(), s.parse().ok()?))
    });
    if let Some((p, s)) = spec {
        if p == point.name() && *s == seq {
            eprintln!("ARCHIVER_CRASH_AT={p}:{s}: aborting the process");
            std::process::abort();
        }
    }
}

/// A source database and where its checkpoints live.
#[derive(Debug, Clone)]
pub struct Source {
    pub pool: PgPool,
    pub checkpoints: CheckpointStore,
}

/// How an item ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemReport {
    pub rows: i64,
    pub bytes: i64,
    pub objects: i64,
    /// Rows archived but not deleted (changed or removed by someone else meanwhile).
    pub rows_short: i64,
}

/// Everything needed to run work items.
pub struct Pipeline {
    pub store: Arc<dyn ObjectStore>,
    pub sources: HashMap<String, Source>,
    /// Inspected tables, by (database, schema, table).
    pub tables: HashMap<(String, String, String), Arc<TableInfo>>,
    pub worker_id: String,
    pub lease: Duration,
    pub hooks: Arc<dyn Hooks>,
    /// On a retryable error, hand the item back (pending, with its last error) instead of
    /// marking it failed: the distributed worker retries it later and marks it failed itself
    /// once `max_attempts` is reached.
    pub hand_back_transient: bool,
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

impl Pipeline {
    /// A pipeline over what `setup::prepare` connected and checked.
    pub fn new(
        prepared: &crate::setup::Prepared,
        config: &crate::config::Config,
        worker_id: String,
        hooks: Arc<dyn Hooks>,
        hand_back_transient: bool,
    ) -> Self {
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
            hooks,
            hand_back_transient,
        }
    }

    fn table(&self, item: &WorkItem) -> Result<Arc<TableInfo>, PipelineError> {
        self.tables
            .get(&(item.database.clone(), item.schema.clone(), item.table.clone()))
            .cloned()
            .ok_or_else(|| PipelineError::Invalid(format!("{} is not a configured table", item.table_label())))
    }

    fn source(&self, item: &WorkItem) -> Result<&Source, PipelineError> {
        self.sources
            .get(&item.database)
            .ok_or_else(|| PipelineError::Invalid(format!("database {:?} is not configured", item.database)))
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
        let source = self
            .sources
            .get(database)
            .ok_or_else(|| PipelineError::Invalid(format!("database {database:?} is not configured")))?;
        let cp = &source.checkpoints;
        let Some(row) = cp.claim(item_id, &self.worker_id, self.lease).await? else {
            return Ok(None);
        };
        let item = row.item();
        metrics::gauge!(crate::observe::names::ITEMS_IN_FLIGHT).increment(1.0);
        let lost = Arc::new(AtomicBool::new(false));
        let stop = cancel.child_token();
        let heartbeat = tokio::spawn(heartbeat(cp.clone(), item.id, self.worker_id.clone(), self.lease, lost.clone(), stop.clone()));
        let result = self.archive(&item, &stop, &lost, progress).await;
        heartbeat.abort();
        metrics::gauge!(crate::observe::names::ITEMS_IN_FLIGHT).decrement(1.0);
        if let Err(e) = &result {
            if let Some((stage, kind)) = e.metric_labels() {
                crate::observe::count_error(stage, kind);
                crate::telemetry::record_error(&Span::current(), e);
            }
        }
        match result {
            Ok(report) => {
                let now = chrono::Utc::now().timestamp() as f64;
                metrics::gauge!(crate::observe::names::LAST_SUCCESS, "database" => item.database.clone(), "table" => item.table.clone())
                    .set(now);
                Ok(Some(report))
            }
            Err(PipelineError::Crashed(p)) => Err(PipelineError::Crashed(p)),
            Err(PipelineError::Cancelled) => {
                cp.release(item.id, &self.worker_id).await?;
                Err(PipelineError::Cancelled)
            }
            Err(PipelineError::LeaseLost) => Err(PipelineError::LeaseLost),
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

    /// The item's work once claimed.
    async fn archive(
        &self,
        item: &WorkItem,
        stop: &CancellationToken,
        lost: &AtomicBool,
        progress: &Progress,
    ) -> Result<ItemReport, PipelineError> {
        let info = self.table(item)?;
        let source = self.source(item)?;
        let cp = &source.checkpoints;
        let sql = Arc::new(TableSql::new(&info));
        let s = &info.settings;
        let limits = DeleteLimits { lock_timeout: s.lock_timeout, statement_timeout: s.statement_timeout };

        // 1. Finish what an earlier attempt recorded but did not delete.
        let recorded = cp.batches(item.id).await?;
        for b in recorded.iter().filter(|b| b.state == "uploaded") {
            let span = batch_span(item, b.seq, b.day);
            span.record("rows", b.row_count).record("bytes", b.byte_size).record("resumed", true);
            tracing::info!(parent: &span, key = %b.object_key, seq = b.seq, "finishing a batch recorded by an earlier attempt");
            stage(&span, "verify", self.check_recorded(b)).await?;
            let deleted = stage(&span, "delete", self.delete(source, &sql, b, &limits, lost)).await?;
            progress.add(item, b, deleted);
            self.hooks.at(Point::Deleted, item, b.seq).await?;
        }

        // 2. Read, store and delete the rest, reading batch n+1 while batch n is stored.
        let resume = recorded.last().map(|b| {
            (Window { start: b.day.and_hms_opt(0, 0, 0).unwrap().and_utc().max(item.range_start), end: b.window_end }, (b.last_ts.clone(), b.last_pk.clone()))
        });
        let next_seq = recorded.last().map_or(0, |b| b.seq + 1);
        let (tx, mut rx) = mpsc::channel(1);
        let producer = tokio::spawn(produce(
            source.pool.clone(),
            sql.clone(),
            item.clone(),
            info.clone(),
            resume,
            next_seq,
            tx,
            stop.clone(),
        )
        .instrument(Span::current()));
        let started = Instant::now();
        let mut rows_done = 0u64;
        let outcome: Result<(), PipelineError> = async {
            while let Some(next) = rx.recv().await {
                let (seq, window, batch, span) = next?;
                self.hooks.at(Point::Extracted, item, seq).await?;
                self.store_batch(item, &info, source, &sql, &limits, seq, window, batch, &span, lost, progress, &mut rows_done)
                    .await?;
                if stop.is_cancelled() {
                    return Err(if lost.load(Ordering::SeqCst) { PipelineError::LeaseLost } else { PipelineError::Cancelled });
                }
                throttle(s.sleep_between_batches, s.max_rows_per_second, rows_done, started, stop).await;
            }
            Ok(())
        }
        .await;
        drop(rx);
        let produced = producer.await.expect("producer task panicked");
        outcome?;
        produced?;
        if stop.is_cancelled() {
            return Err(if lost.load(Ordering::SeqCst) { PipelineError::LeaseLost } else { PipelineError::Cancelled });
        }

        // 3. Remove objects of interrupted attempts that no record names, then commit with the manifest.
        let batches = cp.batches(item.id).await?;
        self.remove_strays(item, &batches).await?;
        let manifest = manifest(item, &info, &batches);
        let key = layout::manifest_key(item);
        let body = bytes::Bytes::from(serde_json::to_vec_pretty(&manifest).expect("manifest serializes"));
        let size = body.len() as u64;
        let sha = crate::storage::sha256(&body);
        let span = tracing::debug_span!("manifest", key = %key, objects = manifest.objects.len(), rows = manifest.total_rows);
        let checksum = stage(&span, "upload", upload::upload(&*self.store, &key, body)).await?;
        stage(&span, "verify", self.verify_stored(&key, size, &checksum, &sha)).await?;
        drop(span);
        self.hooks.at(Point::ManifestWritten, item, -1).await?;
        if !cp.finish(item.id, &self.worker_id, &key).await? {
            return Err(PipelineError::LeaseLost);
        }
        let report = ItemReport {
            rows: manifest.total_rows,
            bytes: manifest.total_bytes,
            objects: manifest.objects.len() as i64,
            rows_short: batches.iter().map(|b| b.row_count - b.deleted_count.unwrap_or(b.row_count)).sum(),
        };
        tracing::info!(item = %item.slug(), table = %item.table_label(), rows = report.rows, objects = report.objects, "work item done");
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    async fn store_batch(
        &self,
        item: &WorkItem,
        info: &TableInfo,
        source: &Source,
        sql: &TableSql,
        limits: &DeleteLimits,
        seq: i32,
        window: Window,
        batch: Extracted,
        span: &Span,
        lost: &AtomicBool,
        progress: &Progress,
        rows_done: &mut u64,
    ) -> Result<(), PipelineError> {
        if lost.load(Ordering::SeqCst) {
            return Err(PipelineError::LeaseLost);
        }
        let key = layout::data_key(item, window.day(), seq, info.settings.compression);
        let size = batch.encoded.body.len() as u64;
        span.record("key", key.as_str());
        let checksum = stage(span, "upload", upload::upload(&*self.store, &key, batch.encoded.body.clone())).await?;
        self.hooks.at(Point::Uploaded, item, seq).await?;
        stage(span, "verify", self.verify_stored(&key, size, &checksum, &batch.encoded.sha256)).await?;
        let record = BatchRecord {
            item_id: item.id,
            seq,
            object_key: key,
            row_count: batch.rows() as i64,
            byte_size: size as i64,
            sha256: hex::encode(batch.encoded.sha256),
            store_checksum: checksum,
            first_ts: batch.first.0,
            first_pk: batch.first.1,
            last_ts: batch.last.0,
            last_pk: batch.last.1,
            day: window.day(),
            window_end: window.end,
            pks: batch.pks,
            xmins: batch.xmins,
            state: "uploaded".into(),
            deleted_count: None,
        };
        stage(span, "checkpoint", async {
            match source.checkpoints.record_batch(&record, &self.worker_id).await? {
                true => Ok(()),
                false => Err(PipelineError::LeaseLost),
            }
        })
        .await?;
        self.hooks.at(Point::Recorded, item, seq).await?;
        let deleted = stage(span, "delete", self.delete(source, sql, &record, limits, lost)).await?;
        span.record("deleted", deleted);
        progress.add(item, &record, deleted);
        count_batch(item, &record, &source.pool);
        self.hooks.at(Point::Deleted, item, seq).await?;
        *rows_done += record.row_count as u64;
        Ok(())
    }

    async fn delete(
        &self,
        source: &Source,
        sql: &TableSql,
        batch: &BatchRecord,
        limits: &DeleteLimits,
        lost: &AtomicBool,
    ) -> Result<i64, PipelineError> {
        if lost.load(Ordering::SeqCst) {
            return Err(PipelineError::LeaseLost);
        }
        (|| async { delete::delete_batch(&source.pool, &source.checkpoints, sql, batch, &self.worker_id, limits).await })
            .retry(db_backoff())
            .when(PipelineError::is_retryable)
            .notify(|e, wait| tracing::warn!(key = %batch.object_key, error = %e, ?wait, "delete failed; retrying"))
            .await
    }

    /// The object just uploaded under `key` is there, whole; else a `Verify` error naming why.
    async fn verify_stored(&self, key: &str, size: u64, checksum: &str, sha: &[u8; 32]) -> Result<(), PipelineError> {
        match verify::verify(&*self.store, key, size, checksum, sha).await? {
            Verification::Verified => Ok(()),
            other => Err(PipelineError::Verify(other.describe(key))),
        }
    }

    /// A recorded batch is finished only if its object is still there, whole.
    async fn check_recorded(&self, b: &BatchRecord) -> Result<(), PipelineError> {
        let mut sha = [0u8; 32];
        hex::decode_to_slice(&b.sha256, &mut sha).map_err(|e| PipelineError::Invalid(format!("batch record sha256: {e}")))?;
        match verify::verify(&*self.store, &b.object_key, b.byte_size as u64, &b.store_checksum, &sha).await? {
            Verification::Verified => Ok(()),
            other => Err(PipelineError::Verify(format!(
                "recorded batch {} cannot be finished, its rows stay in the table: {}",
                b.seq,
                other.describe(&b.object_key)
            ))),
        }
    }

    /// Deletes this item's data objects that no batch record names: left by an attempt that
    /// crashed between upload and record, or overtaken by a retry that cut batches differently.
    async fn remove_strays(&self, item: &WorkItem, batches: &[BatchRecord]) -> Result<(), PipelineError> {
        let keep: BTreeSet<&str> = batches.iter().map(|b| b.object_key.as_str()).collect();
        let name_prefix = layout::data_name_prefix(item);
        let mut day = item.range_start.date_naive();
        let last = (item.range_end - chrono::Duration::microseconds(1)).date_naive();
        while day <= last {
            let prefix = format!("{}{}", layout::day_prefix(item, day), name_prefix);
            for key in self.store.list(&prefix).await? {
                if !keep.contains(key.as_str()) {
                    tracing::info!(%key, "removing an object of an interrupted attempt that no batch record names");
                    self.store.delete(&key).await?;
                }
            }
            day = day.succ_opt().expect("date in range");
        }
        Ok(())
    }
}

fn stage_time(stage: &'static str, since: Instant) {
    metrics::histogram!(crate::observe::names::BATCH_DURATION, "stage" => stage).record(since.elapsed().as_secs_f64());
}

/// The span of one work item: a root (one trace per item) unless the caller gives it the parent
/// carried by the item's message (see [`crate::telemetry::continue_trace`]).
pub fn item_span(item: &WorkItem, worker: &str) -> Span {
    tracing::debug_span!(
        parent: None,
        "archive_item",
        otel.kind = "consumer",
        item = %item.slug(),
        database = %item.database,
        table = %item.table_label(),
        range_start = %item.range_start,
        range_end = %item.range_end,
        worker = %worker,
    )
}

/// The span of one batch, below the current (item) span; rows and bytes are recorded once known.
/// A read that finds its window exhausted is renamed `scan_empty`, so `batch` spans are batches.
fn batch_span(item: &WorkItem, seq: i32, day: chrono::NaiveDate) -> Span {
    tracing::debug_span!(
        "batch",
        seq,
        table = %item.table_label(),
        day = %day,
        window_start = Empty,
        window_end = Empty,
        rows = Empty,
        bytes = Empty,
        raw_bytes = Empty,
        deleted = Empty,
        key = Empty,
        resumed = false,
    )
}

/// Runs one stage of a batch in its own span below `batch`, timing it into
/// `archiver_batch_duration_seconds` and recording an error on the span.
async fn stage<T, E: std::fmt::Display>(
    batch: &Span,
    name: &'static str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = tracing::debug_span!(parent: batch, "stage", otel.name = name);
    let started = Instant::now();
    let result = work.instrument(span.clone()).await;
    match &result {
        Ok(_) => stage_time(name, started),
        Err(e) => crate::telemetry::record_error(&span, e),
    }
    result
}

fn count_batch(item: &WorkItem, b: &BatchRecord, pool: &PgPool) {
    use crate::observe::names;
    let labels = [("database", item.database.clone()), ("table", item.table.clone())];
    metrics::counter!(names::RECORDS_ARCHIVED, &labels).increment(b.row_count as u64);
    metrics::counter!(names::BYTES_UPLOADED, &labels).increment(b.byte_size as u64);
    metrics::counter!(names::BATCHES, &labels).increment(1);
    let active = pool.size().saturating_sub(pool.num_idle() as u32);
    metrics::gauge!(names::DB_CONNECTIONS, "database" => item.database.clone()).set(active as f64);
}

fn db_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(5)
        .with_jitter()
}

type Produced = Result<(i32, Window, Extracted, Span), PipelineError>;

/// Reads the item's batches in order and hands them over one at a time.
#[allow(clippy::too_many_arguments)]
async fn produce(
    pool: PgPool,
    sql: Arc<TableSql>,
    item: WorkItem,
    info: Arc<TableInfo>,
    resume: Option<(Window, (String, String))>,
    mut seq: i32,
    tx: mpsc::Sender<Produced>,
    stop: CancellationToken,
) -> Result<(), PipelineError> {
    let s = &info.settings;
    let (mut window, mut after) = match resume {
        Some((w, last)) => (w, Some(last)),
        None => (Window::at(item.range_start, item.range_end), None),
    };
    loop {
        if stop.is_cancelled() {
            return Ok(());
        }
        let encoder = Encoder::new(s.compression, s.compression_level);
        let span = batch_span(&item, seq, window.day());
        span.record("window_start", tracing::field::display(window.start)).record("window_end", tracing::field::display(window.end));
        let read = async {
            // A read-only transaction, so the timeout stays with this statement and leaves the
            // pooled connection as it was.
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT set_config('statement_timeout', $1, true), set_config('transaction_read_only', 'on', true)")
                .bind(format!("{}ms", s.statement_timeout.as_millis()))
                .execute(&mut *tx)
                .await?;
            let batch = extract::next_batch(&mut tx, &sql, window, after.as_ref(), s.batch_size, encoder, &span).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(batch)
        };
        let batch = match stage(&span, "extract", read).await {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return Ok(());
            }
        };
        match batch {
            Some(b) => {
                let full = b.rows() as u32 >= s.batch_size;
                let last = b.last.clone();
                span.record("rows", b.rows()).record("bytes", b.encoded.body.len()).record("raw_bytes", b.encoded.raw_bytes);
                if tx.send(Ok((seq, window, b, span))).await.is_err() {
                    return Ok(()); // the consumer stopped
                }
                seq += 1;
                if full {
                    after = Some(last);
                    continue;
                }
            }
            None => {
                span.record("rows", 0);
                crate::telemetry::rename(&span, "scan_empty");
            }
        }
        if window.end >= item.range_end {
            return Ok(());
        }
        window = Window::at(window.end, item.range_end);
        after = None;
    }
}

/// Keeps extension promises: `sleep_between_batches` after each batch, and at most
/// `max_rows_per_second` on average since the item started.
async fn throttle(
    pause: Duration,
    max_rows_per_second: Option<u32>,
    rows_done: u64,
    started: Instant,
    stop: &CancellationToken,
) {
    let mut wait = pause;
    if let Some(rate) = max_rows_per_second {
        let due = Duration::from_secs_f64(rows_done as f64 / rate as f64);
        wait = wait.max(due.saturating_sub(started.elapsed()));
    }
    if !wait.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// Renews the lease every third of its duration; on loss, flags it and stops the item.
async fn heartbeat(
    cp: CheckpointStore,
    id: i64,
    owner: String,
    lease: Duration,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        match cp.heartbeat(id, &owner, lease).await {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(item = id, error = %e, "lease renewal failed");
                if last_ok.elapsed() < lease {
                    continue;
                }
                break;
            }
        }
    }
    tracing::error!(item = id, "lease lost; stopping the item before its next delete");
    lost.store(true, Ordering::SeqCst);
    stop.cancel();
}

fn manifest(item: &WorkItem, info: &TableInfo, batches: &[BatchRecord]) -> Manifest {
    let objects: Vec<ManifestObject> = batches
        .iter()
        .map(|b| ManifestObject {
            key: b.object_key.clone(),
            seq: b.seq,
            rows: b.row_count,
            bytes: b.byte_size,
            sha256: b.sha256.clone(),
            first_key: KeyBound { ts: b.first_ts.clone(), pk: b.first_pk.clone() },
            last_key: KeyBound { ts: b.last_ts.clone(), pk: b.last_pk.clone() },
        })
        .collect();
    Manifest {
        format: FORMAT,
        database: item.database.clone(),
        schema: item.schema.clone(),
        table: item.table.clone(),
        range_start: item.range_start,
        range_end: item.range_end,
        generation: item.generation,
        created_at: Utc::now(),
        compression: info.settings.compression,
        timestamp_column: info.settings.timestamp_column.clone(),
        primary_key: info.settings.primary_key.clone(),
        columns: info.columns.clone(),
        total_rows: objects.iter().map(|o| o.rows).sum(),
        total_bytes: objects.iter().map(|o| o.bytes).sum(),
        objects,
    }
}
