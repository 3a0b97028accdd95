//! The pipeline's traces and per-batch metrics: one span per item, one per batch, one per stage,
//! and the counters a batch adds to.

use std::time::Instant;

use archiver_proto::WorkItem;
use sqlx::PgPool;
use tracing::{field::Empty, Instrument, Span};

use crate::checkpoint::BatchRecord;
use crate::observe::names;

/// The span of one work item: a root (one trace per item) unless the caller gives it the parent
/// carried by the item's message (see [`crate::observe::telemetry::continue_trace`]).
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
pub(super) fn batch_span(item: &WorkItem, seq: i32, day: chrono::NaiveDate) -> Span {
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
        governor = Empty,
        resumed = false,
    )
}

/// Runs one stage of a batch in its own span below `batch`, timing it into
/// `archiver_batch_duration_seconds` and recording an error on the span.
pub(super) async fn stage<T, E: std::fmt::Display>(
    batch: &Span,
    name: &'static str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let span = tracing::debug_span!(parent: batch, "stage", otel.name = name);
    let started = Instant::now();
    let result = work.instrument(span.clone()).await;
    match &result {
        Ok(_) => metrics::histogram!(names::BATCH_DURATION, "stage" => name).record(started.elapsed().as_secs_f64()),
        Err(e) => crate::observe::telemetry::record_error(&span, e),
    }
    result
}

/// Adds a finished batch to the archive counters.
pub(super) fn count_batch(item: &WorkItem, b: &BatchRecord, pool: &PgPool) {
    let labels = [("database", item.database.clone()), ("table", item.table.clone())];
    metrics::counter!(names::RECORDS_ARCHIVED, &labels).increment(b.row_count as u64);
    metrics::counter!(names::BYTES_UPLOADED, &labels).increment(b.byte_size as u64);
    metrics::counter!(names::BATCHES, &labels).increment(1);
    let active = pool.size().saturating_sub(pool.num_idle() as u32);
    metrics::gauge!(names::DB_CONNECTIONS, "database" => item.database.clone()).set(active as f64);
}
