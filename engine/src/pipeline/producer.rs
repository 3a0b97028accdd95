//! The producer: reads an item's batches in order and hands them to the driver one at a time.
//!
//! Input: a work item and where to start (its range start, or just after the last recorded
//! batch). Output: (seq, window, batch, span) in keyset order over a channel of one, so the next
//! batch is read and encoded while the previous one is stored and deleted. Invariant: each read is
//! one statement on a read-only connection with `statement_timeout` (`db::read_pool`); nothing
//! is locked.

use std::sync::Arc;

use archiver_proto::WorkItem;
use backon::Retryable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span};

use super::encode::Encoder;
use super::extract::{Batch, Extracted, Page, TableSql, Window};
use super::spans::{batch_span, stage};
use super::PipelineError;
use crate::source::table::TableInfo;
use crate::source::Source;

/// Rows of the first read statement while the governor runs; later pages are sized to take about
/// the governor's `read_page_time` each (from 50 rows up to the batch), each a short burst the
/// governor paces.
pub(super) const FIRST_PAGE: usize = 250;

pub(super) type Produced = Result<(i32, Window, Extracted, Span), PipelineError>;

fn read_backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_max_times(5)
        .with_jitter()
}

/// Where reading starts: a window, the last (timestamp, key) already taken from it, and the
/// sequence number of the next batch.
pub(super) struct Start {
    pub window: Window,
    pub after: Option<(String, String)>,
    pub seq: i32,
}

/// What the producer reads from.
pub(super) struct Producer {
    pub source: Source,
    pub sql: Arc<TableSql>,
    pub item: WorkItem,
    pub info: Arc<TableInfo>,
    /// Rows of the next read page (governor on), sized from the last page's duration.
    pub page: std::sync::atomic::AtomicUsize,
}

impl Producer {
    /// Reads until the item's range is exhausted, the receiver is gone, or `stop` is cancelled.
    /// A read error is sent to the receiver, which stops the item.
    pub async fn run(self, start: Start, tx: mpsc::Sender<Produced>, stop: CancellationToken) {
        let Start { mut window, mut after, mut seq } = start;
        let batch_size = self.info.settings.batch_size;
        loop {
            if stop.is_cancelled() {
                return;
            }
            // `after` is kept across windows: the last row read bounds every later read, so rows
            // read before a hold moved the window are never read again.
            match self.unheld(window).await {
                Ok(Some(w)) => window = w,
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
            if let Err(e) = self.pace(&stop).await {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
            if stop.is_cancelled() {
                return;
            }
            let span = batch_span(&self.item, seq, window.day());
            span.record("window_start", tracing::field::display(window.start))
                .record("window_end", tracing::field::display(window.end));
            // A read on a replica may be cancelled by a recovery conflict: read again.
            let attempt = || self.read(window, after.as_ref(), &span, &stop);
            let retried = attempt.retry(read_backoff()).when(super::db_retryable).notify(|e, wait| {
                tracing::warn!(item = %self.item.slug(), error = %e, ?wait, "reading a batch failed; reading it again")
            });
            let read = stage(&span, "extract", retried).await;
            if self.source.governor.enabled() {
                let status = self.source.governor.status();
                span.record("governor", tracing::field::display(format_args!("{} x{:.2}", status.decision.state.as_str(), status.decision.factor)));
            } else {
                span.record("governor", "off");
            }
            let batch = match read {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            match batch {
                Some(b) => {
                    let full = b.rows() as u32 >= batch_size;
                    let last = b.last.clone();
                    span.record("rows", b.rows()).record("bytes", b.encoded.body.len()).record("raw_bytes", b.encoded.raw_bytes);
                    if tx.send(Ok((seq, window, b, span))).await.is_err() {
                        return; // the driver stopped
                    }
                    seq += 1;
                    after = Some(last);
                    if full {
                        continue;
                    }
                }
                None => {
                    span.record("rows", 0);
                    crate::observe::telemetry::rename(&span, "scan_empty");
                }
            }
            if window.end >= self.item.range_end {
                return;
            }
            window = Window::at(window.end, self.item.range_end, window.partition);
        }
    }

    /// The window to read next: `window` cut short before an active legal hold, or moved past
    /// one; None when holds cover the rest of the item. Holds are read again before every batch,
    /// so one placed while the item runs takes effect from its next batch on.
    async fn unheld(&self, mut window: Window) -> Result<Option<Window>, sqlx::Error> {
        let end = self.item.range_end;
        let cp = &self.source.checkpoints;
        let holds = cp.held_ranges(cp.pool(), &self.item).await?;
        loop {
            match crate::checkpoint::holds::unheld(window.start, window.end, &holds) {
                Some((from, to)) if from == window.start => return Ok(Some(Window { end: to, ..window })),
                Some((from, _)) => window = Window::at(from, end, window.partition),
                None if window.end >= end => return Ok(None),
                None => window = Window::at(window.end, end, window.partition),
            }
        }
    }

    /// Waits for the governor, and with a read replica until it has replayed everything the
    /// primary has committed so far (our own deletes included), so a batch never holds a row
    /// that is already archived and deleted.
    async fn pace(&self, stop: &CancellationToken) -> Result<(), sqlx::Error> {
        self.source.governor.acquire(stop).await;
        if !self.source.replica {
            return Ok(());
        }
        let (lsn,): (String,) = sqlx::query_as("SELECT pg_current_wal_lsn()::text").fetch_one(&self.source.pool).await?;
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            let (done,): (bool,) = sqlx::query_as("SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)")
                .bind(&lsn)
                .fetch_one(&self.source.read_pool)
                .await?;
            if done || stop.is_cancelled() {
                return Ok(());
            }
            if !told && started.elapsed() > std::time::Duration::from_secs(5) {
                tracing::warn!(database = %self.item.database, %lsn, "waiting for the read replica to replay up to the primary's position before reading");
                told = true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// One batch of `window` after `after`, read in pages (see [`FIRST_PAGE`]), each its own
    /// read-only statement paced by the governor: no read holds a core for long.
    async fn read(&self, window: Window, after: Option<&(String, String)>, span: &Span, stop: &CancellationToken) -> Result<Option<Extracted>, sqlx::Error> {
        let s = &self.info.settings;
        let governor = &self.source.governor;
        use std::sync::atomic::Ordering::Relaxed;
        let mut batch = Batch::new(Encoder::new(s.compression, s.compression_level));
        loop {
            let page = if governor.enabled() { self.page.load(Relaxed) as u32 } else { s.batch_size };
            let want = page.min(s.batch_size - batch.rows() as u32);
            let started = std::time::Instant::now();
            let rows = Page { window, after, limit: want };
            // One statement, its own transaction: read-only and with the timeout by the read
            // pool's connection settings (`db::read_pool`), one round trip.
            let page_read = async {
                let mut conn = self.source.read_pool.acquire().await?;
                Ok::<_, sqlx::Error>(if governor.enabled() {
                    Fetched::Whole(batch.fetch_page(&mut conn, &self.sql, rows).await?)
                } else {
                    Fetched::Streamed(batch.read_page(&mut conn, &self.sql, rows).await?)
                })
            };
            let fetched = page_read.instrument(tracing::debug_span!("page", rows = want)).await?;
            let took = started.elapsed();
            let read = match fetched {
                Fetched::Whole(page) => batch.add_page(&self.sql, &page)?,
                Fetched::Streamed(read) => read,
            };
            governor.spent(took);
            // Sized only from a full page: a batch's last, shorter page says nothing of how long
            // a full one takes.
            if governor.enabled() && want == page && read == want as usize {
                self.page.store(crate::governor::next_size(read, took, governor.read_page_time(), (50, s.batch_size as usize)), Relaxed);
            }
            if read < want as usize || batch.rows() as u32 >= s.batch_size || stop.is_cancelled() {
                return Ok(batch.finish(span));
            }
            governor.acquire(stop).await;
        }
    }
}

/// A page read: whole (the governor's small pages, decoded after the read's statement) or
/// streamed into the batch (governor off).
enum Fetched {
    Whole(Vec<sqlx::postgres::PgRow>),
    Streamed(usize),
}
