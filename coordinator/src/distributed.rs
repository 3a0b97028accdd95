//! Distributed mode: record work items in the checkpoint store and publish them to RabbitMQ.
//!
//! Input: plans (the same planning as standalone mode), ad-hoc ranges, or failed items. Output:
//! one persistent, broker-confirmed message per item. Invariants: an item is recorded before it is
//! published and marked published only after the broker confirmed it, so an item recorded but not
//! confirmed is published again by the next run; the reconciler re-publishes items whose lease
//! expired, so a dead worker stalls an item no longer than a lease.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use archiver_proto::WorkItem;
use archiver_engine::config::Config;
use archiver_engine::checkpoint::{CheckpointStore, ItemRow, ItemState};
use archiver_engine::queue::Broker;
use archiver_engine::setup::{self, Prepared, Scope};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::plan;
use crate::summary::Summary;

/// The distinct checkpoint stores behind the prepared sources (one if `checkpoint.url` is set).
fn stores(prepared: &Prepared) -> Vec<CheckpointStore> {
    let mut seen = Vec::<CheckpointStore>::new();
    for s in prepared.sources.values() {
        let fresh = s.checkpoints.in_source || !seen.iter().any(|c| !c.in_source);
        if fresh {
            seen.push(s.checkpoints.clone());
        }
    }
    seen
}

fn in_scope(prepared: &Prepared, row: &ItemRow) -> bool {
    prepared.tables.iter().any(|t| {
        t.settings.database == row.database && t.settings.schema == row.schema_name && t.settings.table == row.table_name
    })
}

/// The items of `rows` that belong to the tables in scope.
fn items_in_scope(prepared: &Prepared, rows: Vec<ItemRow>) -> Vec<WorkItem> {
    rows.into_iter().filter(|r| in_scope(prepared, r)).map(|r| r.item()).collect()
}

/// Publishes every pending item of the tables in scope that was never confirmed by the broker.
pub async fn publish_unpublished(prepared: &Prepared, broker: &Broker) -> anyhow::Result<usize> {
    let mut n = 0;
    for cp in stores(prepared) {
        let items = items_in_scope(prepared, cp.unpublished().await?);
        publish(&cp, broker, &items).await?;
        n += items.len();
    }
    Ok(n)
}

/// Publishes in chunks; each chunk is marked published only after the broker confirmed all of it.
async fn publish(cp: &CheckpointStore, broker: &Broker, items: &[WorkItem]) -> anyhow::Result<()> {
    for chunk in items.chunks(500) {
        broker.publish_items(chunk).await?;
        cp.mark_published(&chunk.iter().map(|i| i.id).collect::<Vec<_>>()).await?;
    }
    Ok(())
}

/// Re-publishes items whose worker's lease expired (the worker died), once per expiry; and, when
/// no message waits in the work and retry queues, pending items published more than `grace` ago,
/// whose message was lost. A message published twice is harmless: only one worker can claim the
/// item.
pub async fn reconcile(prepared: &Prepared, broker: &Broker, grace: Duration) -> anyhow::Result<usize> {
    let mut n = 0;
    for cp in stores(prepared) {
        for row in cp.expired_leases().await? {
            if in_scope(prepared, &row) {
                tracing::warn!(item = %row.item().slug(), table = %row.item().table_label(), owner = ?row.lease_owner, "lease expired; re-publishing");
                publish(&cp, broker, &[row.item()]).await?;
                n += 1;
            }
        }
    }
    if broker.waiting().await? > 0 {
        return Ok(n);
    }
    for cp in stores(prepared) {
        let lost = items_in_scope(prepared, cp.stale_pending(grace).await?);
        for item in &lost {
            tracing::warn!(item = %item.slug(), table = %item.table_label(), "pending, but no message waits for it; re-publishing");
        }
        publish(&cp, broker, &lost).await?;
        n += lost.len();
    }
    Ok(n)
}

/// How long a published item may stay pending, with no message waiting in the queues, before
/// its message counts as lost: a few retry delays, at least 5 s.
pub fn lost_message_grace(queue: &archiver_engine::config::QueueConfig) -> Duration {
    (queue.retry_delay.0 * 3).max(Duration::from_secs(5))
}

pub struct RunOptions {
    pub scope: Scope,
    pub wait: bool,
    pub progress: bool,
    /// How often `--wait` polls and reconciles.
    pub poll: Duration,
    /// With `wait`: stop waiting after this long (the items go on in the workers).
    pub timeout: Option<Duration>,
    /// Serve /metrics, /healthz and /readyz here while the run works.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// How a distributed `run` ended.
pub enum Outcome {
    /// Without `--wait`: items planned (new or resumed) and messages published to `queue`; in
    /// `unplanned`, what planning left in the tables (and why).
    Published { planned: usize, published: usize, queue: String, unplanned: Summary },
    /// With `--wait`: how every planned item ended (or stood when the wait stopped).
    Waited { summary: Summary, timed_out: bool },
}

/// One planned item: its checkpoint store, id and table label.
type Planned = (CheckpointStore, i64, String);

/// `run` with a queue: plan, record, publish; with `wait`, follow the items to the end.
pub async fn run(config: &Config, opts: RunOptions, shutdown: CancellationToken) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let queue = config.queue.as_ref().ok_or_else(|| anyhow::anyhow!("no `queue` section in the configuration"))?;
    let prepared = setup::prepare(config, &opts.scope, true).await?;
    if let Some(addr) = opts.metrics_addr {
        archiver_engine::observe::serve_for(addr, &prepared, Some(queue.clone()), shutdown.clone()).await?;
    }
    let broker = Broker::connect(queue, "archiver-coordinator").await?;
    let mut summary = Summary::default();
    let mut planned: Vec<Planned> = Vec::new();
    for p in plan::plan_tables(&prepared, false, &mut summary).await {
        summary.planned(&p);
        for item in p.items() {
            planned.push((prepared.sources[&item.database].checkpoints.clone(), item.id, p.label.clone()));
        }
    }
    let planned_in = started.elapsed();
    plan::report_eligible(&prepared).await;
    let published = publish_unpublished(&prepared, &broker).await?;
    tracing::info!(items = planned.len(), published, ?planned_in, total = ?started.elapsed(), "planned and published");
    if !opts.wait {
        broker.close().await;
        return Ok(Outcome::Published { planned: planned.len(), published, queue: broker.names.work.clone(), unplanned: summary });
    }
    let waited = wait_for(&prepared, &broker, queue, &planned, &opts, &shutdown).await;
    broker.close().await;
    let (rows, timed_out) = waited?;
    tally(&mut summary, rows);
    // As in standalone mode: the tables this run deleted rows from, once their items ended.
    crate::vacuum::vacuum(&prepared, &summary).await;
    plan::report_eligible(&prepared).await;
    summary.duration = started.elapsed();
    Ok(Outcome::Waited { summary, timed_out })
}

/// Polls the planned items until each is done or failed (or shutdown, or the timeout), and
/// reconciles every 5 s. Warns, once a minute, while no worker consumes the work queue.
async fn wait_for(
    prepared: &Prepared,
    broker: &Broker,
    queue: &archiver_engine::config::QueueConfig,
    planned: &[Planned],
    opts: &RunOptions,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Vec<(String, ItemRow)>, bool)> {
    let started = Instant::now();
    let bar = crate::progress::progress_bar(opts.progress, planned.len() as u64);
    let by_store = group_by_store(planned);
    let labels: std::collections::HashMap<i64, String> = planned.iter().map(|(_, id, l)| (*id, l.clone())).collect();
    let mut last_reconcile = Instant::now();
    let mut last_idle_warning: Option<Instant> = None;
    loop {
        if last_reconcile.elapsed() >= Duration::from_secs(5) {
            if let Err(e) = reconcile(prepared, broker, lost_message_grace(queue)).await {
                tracing::warn!(error = %e, "reconcile failed");
            }
            last_reconcile = Instant::now();
        }
        let mut rows = Vec::with_capacity(planned.len());
        for (cp, ids) in &by_store {
            for r in cp.items_by_id(ids).await? {
                rows.push((labels[&r.id].clone(), r));
            }
        }
        let finished = rows.iter().filter(|(_, r)| matches!(r.state, ItemState::Done | ItemState::Failed)).count();
        bar.set_position(finished as u64);
        bar.set_message(format!("{} rows", rows.iter().map(|(_, r)| r.rows_archived).sum::<i64>()));
        let timed_out = opts.timeout.is_some_and(|t| started.elapsed() >= t);
        if finished == planned.len() || shutdown.is_cancelled() || timed_out {
            crate::progress::finish(&bar);
            return Ok((rows, timed_out));
        }
        if last_idle_warning.is_none_or(|w| w.elapsed() >= Duration::from_secs(60)) && broker.consumers().await.unwrap_or(1) == 0 {
            bar.suspend(|| {
                tracing::warn!(
                    queue = %broker.names.work,
                    items_left = planned.len() - finished,
                    "no worker consumes the work queue: start archiver-worker with the same configuration (run --wait keeps waiting; --timeout bounds it)"
                )
            });
            last_idle_warning = Some(Instant::now());
        }
        tokio::time::sleep(opts.poll).await;
    }
}

/// The planned items grouped by checkpoint store: one query per store and poll.
fn group_by_store(planned: &[Planned]) -> Vec<(CheckpointStore, Vec<i64>)> {
    let mut by_store: Vec<(CheckpointStore, Vec<i64>)> = Vec::new();
    for (cp, id, _) in planned {
        let same = |c: &CheckpointStore| {
            c.t("work_items") == cp.t("work_items")
                && c.pool().connect_options().get_database() == cp.pool().connect_options().get_database()
        };
        match by_store.iter_mut().find(|(c, _)| same(c)) {
            Some((_, ids)) => ids.push(*id),
            None => by_store.push((cp.clone(), vec![*id])),
        }
    }
    by_store
}

/// Adds how each item stands to the summary.
fn tally(summary: &mut Summary, rows: Vec<(String, ItemRow)>) {
    for (label, r) in rows {
        let t = summary.table(&label);
        match r.state {
            ItemState::Done => {
                t.items_done += 1;
                t.rows += r.rows_archived;
                t.bytes += r.bytes_archived;
                t.objects += r.objects as i64;
                t.rows_short += r.rows_short;
            }
            ItemState::Failed => {
                t.items_failed += 1;
                t.errors.push(format!("{}: {}", r.item().slug(), r.last_error.unwrap_or_default()));
            }
            ItemState::Pending | ItemState::Running => t.items_not_run += 1,
        }
    }
}

/// `enqueue`: an ad-hoc range of one configured table, cut into `range_interval` items.
pub async fn enqueue(
    config: &Config,
    database: &str,
    table: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<(String, Vec<WorkItem>)> {
    let queue = config.queue.as_ref().ok_or_else(|| anyhow::anyhow!("no `queue` section in the configuration"))?;
    // Whole seconds, like planned ranges.
    let (from, to) = (trunc_secs(from), trunc_secs(to));
    if from >= to {
        anyhow::bail!("--from {from} is not before --to {to}");
    }
    let scope = Scope { database: Some(database.into()), table: Some(table.into()) };
    if !config.tables().iter().any(|t| t.database == database && (t.table == table || format!("{}.{}", t.schema, t.table) == table)) {
        anyhow::bail!("table {table} of database {database} is not in the configuration");
    }
    let prepared = setup::prepare(config, &scope, true).await?;
    let info = prepared.tables.first().expect("scope matched a table").clone();
    let source = &prepared.sources[database];
    let cutoff = plan::cutoff(source, info.settings.retention_days).await?;
    if to > cutoff {
        anyhow::bail!(
            "--to {to} is past the retention cutoff {cutoff} of {} ({} days): those rows are not old enough",
            info.label(),
            info.settings.retention_days
        );
    }
    let items = plan::plan_range(source, &info, from, to).await?;
    let broker = Broker::connect(queue, "archiver-coordinator enqueue").await?;
    publish(&source.checkpoints, &broker, &items).await?;
    broker.close().await;
    Ok((info.label(), items))
}

fn trunc_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("in range")
}

/// `retry-failed`: failed items of the tables in scope back to pending, and published.
pub async fn retry_failed(config: &Config, scope: &Scope) -> anyhow::Result<usize> {
    let queue = config.queue.as_ref().ok_or_else(|| anyhow::anyhow!("no `queue` section in the configuration"))?;
    let prepared = setup::prepare(config, scope, true).await?;
    let broker = Broker::connect(queue, "archiver-coordinator retry-failed").await?;
    let mut n = 0;
    for cp in stores(&prepared) {
        for row in cp.failed().await? {
            if in_scope(&prepared, &row) {
                cp.requeue(row.id).await?;
                publish(&cp, &broker, &[row.item()]).await?;
                n += 1;
            }
        }
    }
    broker.close().await;
    Ok(n)
}

/// One table's line of `status`.
#[derive(Debug, Default, Serialize)]
pub struct TableStatus {
    pub pending: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
    pub rows_archived: i64,
    pub bytes_archived: i64,
    pub oldest_eligible_row: Option<DateTime<Utc>>,
    pub failed_items: Vec<FailedItem>,
    /// The load governor of the table's database, as its signals read now (None: turned off).
    pub governor: Option<GovernorView>,
}

/// What the governors of a database see now: the state and reason a governor would take from
/// these signals, how many archiver processes share the budget, and the signals in words.
#[derive(Debug, Clone, Serialize)]
pub struct GovernorView {
    pub state: &'static str,
    pub reason: &'static str,
    pub budget: f64,
    pub processes: u32,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct FailedItem {
    pub id: i64,
    pub range_start: DateTime<Utc>,
    pub range_end: DateTime<Utc>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// `status`: per table, items by state, what was archived, and the oldest row still eligible.
pub async fn status(config: &Config, scope: &Scope) -> anyhow::Result<BTreeMap<String, TableStatus>> {
    let prepared = setup::prepare(config, scope, false).await?;
    let mut governors = BTreeMap::new();
    for (name, source) in &prepared.sources {
        if source.governor.enabled() {
            let seen = source.governor.look().await;
            let view = GovernorView {
                state: seen.decision.state.as_str(),
                reason: seen.decision.reason.as_str(),
                budget: source.governor.budget(),
                processes: seen.processes,
                detail: seen.detail,
            };
            governors.insert(name.clone(), view);
        }
    }
    let mut out = BTreeMap::new();
    for info in &prepared.tables {
        let s = &info.settings;
        let source = &prepared.sources[&s.database];
        let mut st = TableStatus { governor: governors.get(&s.database).cloned(), ..Default::default() };
        if source.checkpoints.exists().await? {
            for row in source.checkpoints.items_of(&s.database, &s.schema, &s.table).await? {
                match row.state {
                    ItemState::Pending => st.pending += 1,
                    ItemState::Running => st.running += 1,
                    ItemState::Done => st.done += 1,
                    ItemState::Failed => {
                        st.failed += 1;
                        st.failed_items.push(FailedItem {
                            id: row.id,
                            range_start: row.range_start,
                            range_end: row.range_end,
                            attempts: row.attempts,
                            last_error: row.last_error.clone(),
                        });
                    }
                }
                st.rows_archived += row.rows_archived;
                st.bytes_archived += row.bytes_archived;
            }
        }
        let cutoff = plan::cutoff(source, s.retention_days).await?;
        st.oldest_eligible_row = plan::oldest_before(source, info, cutoff).await?;
        out.insert(info.label(), st);
    }
    Ok(out)
}
