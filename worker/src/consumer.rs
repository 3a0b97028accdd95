//! The distributed worker: consume work items from RabbitMQ and run them through the pipeline.
//!
//! Input: deliveries of the work queue, at most `concurrency` unacknowledged at once (prefetch).
//! Output: each message acknowledged only after its item's final checkpoint committed, handed back
//! (nack + requeue) when shutdown stops it at a safe point, parked in the retry queue after a
//! transient failure, or dead-lettered with the reason. Invariants: the configuration is the
//! allowlist, so a message that cannot be parsed, names a table this worker does not archive, or
//! does not match its checkpoint record never touches a source table; a message is never acked on
//! hope.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use archiver_proto::{message, ItemState, WorkItem};
use backon::BackoffBuilder;
use dashmap::DashMap;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use archiver_engine::config::{Config, QueueConfig};
use archiver_engine::pipeline::{Hooks, NoHooks, Pipeline, PipelineError, Progress};
use archiver_engine::queue::Broker;
use archiver_engine::setup::{self, Scope};

pub struct WorkerOptions {
    /// Items processed at once; also the prefetch count.
    pub concurrency: usize,
    pub worker_id: String,
    pub hooks: Arc<dyn Hooks>,
    /// After shutdown is requested, how long in-flight items get to reach a safe point.
    pub shutdown_grace: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; None: not served.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl WorkerOptions {
    pub fn new(worker_id: String) -> Self {
        WorkerOptions {
            concurrency: 2,
            worker_id,
            hooks: Arc::new(NoHooks),
            shutdown_grace: Duration::from_secs(60),
            metrics_addr: None,
        }
    }
}

struct Shared {
    pipeline: Pipeline,
    queue: QueueConfig,
    allow: HashSet<(String, String, String)>,
    /// What this worker is doing right now, shared between its delivery tasks without a global lock.
    in_flight: DashMap<i64, WorkItem>,
    /// Cancelled on shutdown: items stop at their next safe point.
    items: CancellationToken,
    progress: Progress,
    /// Set, with the worker stopped, on an error every item would meet (the object store refuses
    /// us): the worker exits with it instead of failing item after item.
    fatal: std::sync::Mutex<Option<String>>,
    stop: CancellationToken,
}

/// Runs until `shutdown`: checks everything it needs first (fails fast naming what is wrong),
/// then consumes, reconnecting to the broker with backoff whenever the connection drops.
pub async fn run(config: Arc<Config>, opts: WorkerOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let queue = config.queue.clone().ok_or_else(|| anyhow::anyhow!("the configuration has no `queue` section"))?;
    let prepared = setup::prepare(&config, &Scope::default(), true).await?;
    // Fail fast on an unreachable broker too; later losses are retried.
    Broker::connect(&queue, &format!("archiver-worker {} (check)", opts.worker_id)).await?.close().await;
    if let Some(addr) = opts.metrics_addr {
        archiver_engine::observe::serve_for(addr, &prepared, Some(queue.clone()), shutdown.clone()).await?;
    }
    let pipeline = Pipeline::new(&prepared, &config, opts.worker_id.clone(), true).with_hooks(opts.hooks.clone());
    let shared = Arc::new(Shared {
        allow: pipeline.tables.keys().cloned().collect(),
        pipeline,
        queue,
        in_flight: DashMap::new(),
        items: CancellationToken::new(),
        progress: Progress::default(),
        fatal: Default::default(),
        stop: shutdown.child_token(),
    });
    let reporter = tokio::spawn(report_progress(shared.clone()));
    let mut tasks = JoinSet::new();
    consume(&shared, &opts, &mut tasks).await;
    drain(&shared, tasks, opts.shutdown_grace).await;
    reporter.abort();
    let fatal = shared.fatal.lock().expect("fatal lock").take();
    match fatal {
        Some(why) => anyhow::bail!("stopped: {why}"),
        None => Ok(()),
    }
}

/// Consumes until the worker stops, reconnecting with backoff whenever the connection drops.
async fn consume(shared: &Arc<Shared>, opts: &WorkerOptions, tasks: &mut JoinSet<()>) {
    let shutdown = shared.stop.clone();
    let mut backoff = reconnect_backoff();
    while !shutdown.is_cancelled() {
        let subscribed = subscribe(shared, opts).await;
        let (broker, mut consumer) = match subscribed {
            Ok(c) => c,
            Err(e) => {
                let wait = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %e, ?wait, "cannot consume from RabbitMQ; retrying");
                tokio::select! { _ = tokio::time::sleep(wait) => continue, _ = shutdown.cancelled() => return }
            }
        };
        backoff = reconnect_backoff();
        tracing::info!(queue = %broker.names.work, concurrency = opts.concurrency, "consuming");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = broker.channel.basic_cancel(opts.worker_id.as_str().into(), BasicCancelOptions::default()).await;
                    return;
                }
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        tasks.spawn(handle(shared.clone(), broker.clone(), delivery));
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "lost the broker connection; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("the broker cancelled the consumer; reconnecting");
                        break;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    }
}

/// Connects, sets the prefetch and starts consuming the work queue.
async fn subscribe(shared: &Shared, opts: &WorkerOptions) -> anyhow::Result<(Arc<Broker>, lapin::Consumer)> {
    let broker = Arc::new(Broker::connect(&shared.queue, &format!("archiver-worker {}", opts.worker_id)).await?);
    broker.channel.basic_qos(opts.concurrency.clamp(1, u16::MAX as usize) as u16, BasicQosOptions::default()).await?;
    let consumer = broker
        .channel
        .basic_consume(
            broker.names.work.as_str().into(),
            opts.worker_id.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((broker, consumer))
}

/// Shutdown: every item stops at its next safe point and is handed back, within `grace`.
async fn drain(shared: &Shared, mut tasks: JoinSet<()>, grace: Duration) {
    tracing::info!(in_flight = shared.in_flight.len(), "shutting down: bringing in-flight items to a safe point");
    shared.items.cancel();
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::error!(
            items = ?shared.in_flight.iter().map(|e| e.value().slug()).collect::<Vec<_>>(),
            "items did not reach a safe point in time; their leases will expire and another worker resumes them"
        );
    }
}

/// One INFO line a minute while work is done (per-item lines are at DEBUG).
async fn report_progress(shared: Arc<Shared>) {
    use std::sync::atomic::Ordering;
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        let rows = shared.progress.rows.load(Ordering::Relaxed);
        if rows != last {
            let mib = shared.progress.bytes.load(Ordering::Relaxed) / (1024 * 1024);
            tracing::info!(rows_archived = rows, rows_last_minute = rows - last, mib, in_flight = shared.in_flight.len(), "progress");
            last = rows;
        }
    }
}

fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn ack(d: &Delivery) {
    if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
        // The broker redelivers it; the checkpoint store makes the second delivery a no-op.
        tracing::warn!(error = %e, "ack failed");
    }
}

async fn requeue(d: &Delivery) {
    if let Err(e) = d.acker.nack(BasicNackOptions { requeue: true, ..Default::default() }).await {
        tracing::warn!(error = %e, "nack failed; the broker redelivers the message when the channel closes");
    }
}

fn headers(d: &Delivery) -> FieldTable {
    d.properties.headers().clone().unwrap_or_default()
}

async fn dead_letter(broker: &Broker, d: &Delivery, reason: &str) {
    tracing::warn!(reason, "dead-lettering a message");
    archiver_engine::observe::telemetry::record_error(&tracing::Span::current(), &reason);
    match broker.dead_letter(&d.data, headers(d), reason).await {
        Ok(()) => ack(d).await,
        Err(e) => {
            tracing::error!(error = %e, "cannot dead-letter; handing the message back");
            requeue(d).await
        }
    }
}

async fn retry_later(shared: &Shared, broker: &Broker, d: &Delivery) {
    match broker.publish_retry(&d.data, headers(d), shared.queue.retry_delay.0).await {
        Ok(()) => ack(d).await,
        Err(e) => {
            tracing::warn!(error = %e, "cannot park the message for a retry; handing it back");
            requeue(d).await
        }
    }
}

async fn handle(shared: Arc<Shared>, broker: Arc<Broker>, d: Delivery) {
    let item = match message::decode(&d.data) {
        Ok(item) => item,
        Err(reason) => return dead_letter(&broker, &d, &reason.to_string()).await,
    };
    // The item's trace began when the coordinator published it.
    let span = archiver_engine::pipeline::item_span(&item, &shared.pipeline.worker_id);
    archiver_engine::observe::telemetry::continue_trace(&span, &headers(&d));
    span.in_scope(|| tracing::debug!(redelivered = d.redelivered, "received"));
    handle_item(shared, broker, d, item).instrument(span).await
}

async fn handle_item(shared: Arc<Shared>, broker: Arc<Broker>, d: Delivery, item: WorkItem) {
    let key = (item.database.clone(), item.schema.clone(), item.table.clone());
    if !shared.allow.contains(&key) {
        let reason = format!("table {} is not in this worker's configuration", item.table_label());
        return dead_letter(&broker, &d, &reason).await;
    }
    let cp = &shared.pipeline.sources[&item.database].checkpoints;
    match cp.item(item.id).await {
        Ok(Some(row)) if row.item() == item => {}
        Ok(Some(_)) => return dead_letter(&broker, &d, "the message does not match its checkpoint record").await,
        Ok(None) => return dead_letter(&broker, &d, &format!("no work item {} in the checkpoint store", item.id)).await,
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint store unreachable; retrying later");
            return retry_later(&shared, &broker, &d).await;
        }
    }
    // The retention window may have been raised since the item was planned.
    let info = &shared.pipeline.tables[&key];
    match archiver_engine::source::table::cutoff(&shared.pipeline.sources[&item.database].pool, info.settings.retention_days).await {
        Ok(cutoff) if item.range_end > cutoff => {
            let reason = format!("range ends {} after the retention cutoff {cutoff}", item.range_end);
            return dead_letter(&broker, &d, &reason).await;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "source database unreachable; retrying later");
            return retry_later(&shared, &broker, &d).await;
        }
    }
    shared.in_flight.insert(item.id, item.clone());
    let result = shared.pipeline.run_item(item.id, &item.database, &shared.items, &shared.progress).await;
    shared.in_flight.remove(&item.id);
    match result {
        Ok(Some(_)) => ack(&d).await,
        Ok(None) => match cp.item(item.id).await {
            Ok(Some(row)) if row.state == ItemState::Done => ack(&d).await,
            // Held by another worker's live lease: come back later, in case that worker dies.
            _ => retry_later(&shared, &broker, &d).await,
        },
        Err(PipelineError::Cancelled) => requeue(&d).await,
        // The item was handed back; so is its message. Stop this worker: every item would fail.
        Err(e) if e.stops_the_run() => {
            // Stop consuming first, so the message does not come straight back to this worker.
            shared.fatal.lock().expect("fatal lock").get_or_insert_with(|| e.to_string());
            shared.stop.cancel();
            requeue(&d).await;
        }
        // Someone else owns the item now.
        Err(PipelineError::LeaseLost) => ack(&d).await,
        // Test-only crash emulation: leave the message unacknowledged, as a dead process would.
        Err(e) if e.is_injected_crash() => {}
        // Retryable: the pipeline handed the item back (pending); retry it later, or give up.
        Err(e) if e.is_retryable() => {
            let attempts = cp.item(item.id).await.ok().flatten().map(|r| r.attempts);
            if attempts.is_none_or(|a| a < shared.queue.max_attempts as i32) {
                retry_later(&shared, &broker, &d).await
            } else {
                let reason = format!("failed after {} attempts: {e}", attempts.unwrap_or(0));
                if let Err(e) = cp.fail_unclaimed(item.id, &reason).await {
                    tracing::warn!(error = %e, "cannot mark the item failed");
                }
                dead_letter(&broker, &d, &reason).await
            }
        }
        // Not retryable: the pipeline marked the item failed.
        Err(e) => dead_letter(&broker, &d, &format!("failed: {e}")).await,
    }
}
