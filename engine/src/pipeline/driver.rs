//! The per-item driver: claims an item, runs its batches through the stages, and ends the claim.
//!
//! Order per batch: extract (producer) -> encode -> upload -> verify -> record -> delete. An item
//! first finishes the batches an earlier attempt recorded (from their records, never by selecting
//! again), then reads the rest, then commits with its manifest. A crash at any point leaves either
//! an unrecorded object (overwritten under the same key by the retry, or removed as a stray when
//! the item finishes) or a recorded batch (finished on resume).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use archiver_proto::{layout, WorkItem};
use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use super::delete::{self, DeleteLimits};
use super::extract::{Extracted, TableSql, Window};
use super::faults::Point;
use super::producer::{Producer, Start};
use super::spans::{batch_span, count_batch, stage};
use super::verify::{self, Verification};
use super::{manifest, record, upload, ItemReport, Pipeline, PipelineError, Progress};
use crate::checkpoint::{BatchRecord, BatchState, CheckpointStore};
use crate::source::table::TableInfo;
use crate::source::Source;

/// One claimed item's run: what every stage of it needs.
pub(super) struct ItemRun<'a> {
    pub pipeline: &'a Pipeline,
    pub item: WorkItem,
    /// This claim's number (the item's `attempts` after claiming it): in every object key.
    pub attempt: i32,
    pub info: Arc<TableInfo>,
    pub source: &'a Source,
    pub sql: Arc<TableSql>,
    pub limits: DeleteLimits,
    pub stop: CancellationToken,
    pub lost: Arc<AtomicBool>,
    pub progress: &'a Progress,
}

impl ItemRun<'_> {
    /// The item's work once claimed.
    pub async fn archive(&self) -> Result<ItemReport, PipelineError> {
        let recorded = self.source.checkpoints.batches(self.item.id).await?;
        self.finish_recorded(&recorded).await?;
        if self.attempt > 1 {
            // Objects an earlier claim uploaded but never recorded: gone before this claim writes
            // its own, so no row is in two objects for longer than a crash leaves it.
            let partition = self.info.settings.partition;
            manifest::remove_strays(&*self.pipeline.store, &self.item, self.attempt - 1, partition, &recorded).await?;
        }
        self.archive_rest(&recorded).await?;
        self.stopped()?;
        self.commit().await
    }

    /// Cancelled: because the lease was lost, or at the caller's request.
    fn stopped(&self) -> Result<(), PipelineError> {
        if !self.stop.is_cancelled() {
            return Ok(());
        }
        Err(if self.lost.load(Ordering::SeqCst) { PipelineError::LeaseLost } else { PipelineError::Cancelled })
    }

    /// 1. Finishes what an earlier attempt recorded but did not delete.
    async fn finish_recorded(&self, recorded: &[BatchRecord]) -> Result<(), PipelineError> {
        for b in recorded.iter().filter(|b| b.state == BatchState::Uploaded) {
            let span = batch_span(&self.item, b.seq, b.day);
            span.record("rows", b.row_count).record("bytes", b.byte_size).record("resumed", true);
            tracing::info!(parent: &span, key = %b.object_key, seq = b.seq, "finishing a batch recorded by an earlier attempt");
            stage(&span, "verify", self.check_recorded(b)).await?;
            let deleted = stage(&span, "delete", self.delete(b)).await?;
            self.progress.add(&self.item, b, deleted);
            self.pipeline.fault(Point::Deleted, &self.item, b.seq).await?;
        }
        Ok(())
    }

    /// 2. Reads, stores and deletes the rest, reading batch n+1 while batch n is stored.
    async fn archive_rest(&self, recorded: &[BatchRecord]) -> Result<(), PipelineError> {
        let start = match recorded.last() {
            Some(b) => Start {
                window: Window {
                    start: b.day.and_hms_opt(0, 0, 0).unwrap().and_utc().max(self.item.range_start),
                    end: b.window_end,
                    partition: self.info.settings.partition,
                },
                after: Some((b.last_ts.clone(), b.last_pk.clone())),
                seq: b.seq + 1,
            },
            None => Start {
                window: Window::at(self.item.range_start, self.item.range_end, self.info.settings.partition),
                after: None,
                seq: 0,
            },
        };
        let producer = Producer {
            source: self.source.clone(),
            sql: self.sql.clone(),
            item: self.item.clone(),
            info: self.info.clone(),
            page: super::producer::FIRST_PAGE.into(),
        };
        let (tx, mut rx) = mpsc::channel(1);
        let reading = tokio::spawn(producer.run(start, tx, self.stop.clone()).instrument(Span::current()));
        let s = &self.info.settings;
        let started = Instant::now();
        let mut rows_done = 0u64;
        let outcome: Result<(), PipelineError> = async {
            while let Some(next) = rx.recv().await {
                let (seq, window, batch, span) = next?;
                self.pipeline.fault(Point::Extracted, &self.item, seq).await?;
                rows_done += self.store_batch(seq, window, batch, &span).await?;
                self.stopped()?;
                throttle(s.sleep_between_batches, s.max_rows_per_second, rows_done, started, &self.stop).await;
            }
            Ok(())
        }
        .await;
        drop(rx);
        reading.await.expect("producer task panicked");
        outcome
    }

    /// Upload, verify, record and delete one batch; returns its row count.
    async fn store_batch(&self, seq: i32, window: Window, batch: Extracted, span: &Span) -> Result<u64, PipelineError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(PipelineError::LeaseLost);
        }
        let place = layout::BatchPlace { item: &self.item, attempt: self.attempt, partition: window.partition, start: window.day(), seq };
        let key = layout::data_key(place, self.info.settings.compression);
        let size = batch.encoded.body.len() as u64;
        span.record("key", key.as_str());
        let store = &*self.pipeline.store;
        let checksum = stage(span, "upload", upload::upload_new(store, &key, batch.encoded.body.clone(), &batch.encoded.sha256)).await?;
        self.pipeline.fault(Point::Uploaded, &self.item, seq).await?;
        stage(span, "verify", verify_stored(store, &key, size, &checksum, &batch.encoded.sha256)).await?;
        let record = record::batch_record(&self.item, seq, window, key, checksum, batch);
        let cp = &self.source.checkpoints;
        // A checkpoint write is a write: paced like the others, and held while a replica gate is
        // closed (its keys make it the largest single write of a batch).
        let governor = &self.source.governor;
        governor.acquire(&self.stop).await;
        governor.writes_allowed(&self.stop).await;
        self.stopped()?;
        let started = Instant::now();
        let recorded = stage(span, "checkpoint", record::record(cp, &record, &self.pipeline.worker_id)).await;
        governor.spent(started.elapsed());
        recorded?;
        self.pipeline.fault(Point::Recorded, &self.item, seq).await?;
        let deleted = stage(span, "delete", self.delete(&record)).await?;
        span.record("deleted", deleted);
        self.progress.add(&self.item, &record, deleted);
        count_batch(&self.item, &record, &self.source.pool);
        self.pipeline.fault(Point::Deleted, &self.item, seq).await?;
        Ok(record.row_count as u64)
    }

    /// Deletes a recorded batch's rows, retrying transient errors; stops at once if the lease is lost.
    async fn delete(&self, batch: &BatchRecord) -> Result<i64, PipelineError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(PipelineError::LeaseLost);
        }
        let run = delete::DeleteRun {
            item: &self.item,
            source: self.source,
            sql: &self.sql,
            owner: &self.pipeline.worker_id,
            limits: &self.limits,
            stop: &self.stop,
            hooks: &*self.pipeline.hooks,
        };
        (|| async { delete::delete_batch(&run, batch).await })
            .retry(db_backoff())
            .when(PipelineError::is_retryable)
            .notify(|e, wait| tracing::warn!(key = %batch.object_key, error = %e, ?wait, "delete failed; retrying"))
            .await
    }

    /// A recorded batch is finished only if its object is still there, whole.
    async fn check_recorded(&self, b: &BatchRecord) -> Result<(), PipelineError> {
        let mut sha = [0u8; 32];
        hex::decode_to_slice(&b.sha256, &mut sha).map_err(|e| PipelineError::CorruptRecord {
            item: b.item_id,
            seq: b.seq,
            what: format!("sha256 {:?} is not 64 hex digits: {e}", b.sha256),
        })?;
        match verify::verify(&*self.pipeline.store, &b.object_key, b.byte_size as u64, &b.store_checksum, &sha).await? {
            Verification::Verified => Ok(()),
            found => Err(PipelineError::RecordedObjectDamaged { seq: b.seq, key: b.object_key.clone(), found }),
        }
    }

    /// 3. Removes strays, writes and verifies the manifest, and marks the item done.
    async fn commit(&self) -> Result<ItemReport, PipelineError> {
        let (item, cp) = (&self.item, &self.source.checkpoints);
        // A process taken over while it still ran must not remove or overwrite anything of the new
        // owner's: check the claim before touching the store, and remove only strays of this
        // claim or earlier ones.
        if !cp.heartbeat(item.id, &self.pipeline.worker_id, self.pipeline.lease).await? {
            return Err(PipelineError::LeaseLost);
        }
        let batches = cp.batches(item.id).await?;
        manifest::remove_strays(&*self.pipeline.store, item, self.attempt, self.info.settings.partition, &batches).await?;
        let manifest = manifest::build(item, &self.info, &batches)?;
        let key = layout::manifest_key(item);
        let body = bytes::Bytes::from(serde_json::to_vec_pretty(&manifest).expect("manifest serializes"));
        let size = body.len() as u64;
        let sha = crate::storage::sha256(&body);
        let span = tracing::debug_span!("manifest", key = %key, objects = manifest.objects.len(), rows = manifest.total_rows);
        let checksum = upload::upload(&*self.pipeline.store, &key, body).instrument(span.clone()).await?;
        verify_stored(&*self.pipeline.store, &key, size, &checksum, &sha).instrument(span).await?;
        self.pipeline.fault(Point::ManifestWritten, item, -1).await?;
        if !cp.finish(item.id, &self.pipeline.worker_id, &key).await? {
            return Err(PipelineError::LeaseLost);
        }
        let report = ItemReport {
            rows: manifest.total_rows,
            bytes: manifest.total_bytes,
            objects: manifest.objects.len() as i64,
            rows_short: batches.iter().map(|b| b.row_count - b.deleted_count.unwrap_or(b.row_count)).sum(),
        };
        tracing::debug!(item = %item.slug(), table = %item.table_label(), rows = report.rows, objects = report.objects, "work item done");
        Ok(report)
    }
}

/// The object just uploaded under `key` is there, whole; else a `Verify` error naming why.
async fn verify_stored(
    store: &dyn crate::storage::ObjectStore,
    key: &str,
    size: u64,
    checksum: &str,
    sha: &[u8; 32],
) -> Result<(), PipelineError> {
    match verify::verify(store, key, size, checksum, sha).await? {
        Verification::Verified => Ok(()),
        found => Err(PipelineError::Verify { key: key.to_string(), found }),
    }
}

fn db_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_max_times(5)
        .with_jitter()
}

/// Keeps extension promises: `sleep_between_batches` after each batch, and at most
/// `max_rows_per_second` on average since the item started.
async fn throttle(pause: Duration, max_rows_per_second: Option<u32>, rows_done: u64, started: Instant, stop: &CancellationToken) {
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
pub(super) async fn heartbeat(cp: CheckpointStore, id: i64, owner: String, lease: Duration, lost: Arc<AtomicBool>, stop: CancellationToken) {
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
