//! Standalone mode: plan the work items and run them on in-process workers.
//!
//! The same pipeline the distributed workers run, on `workers` tokio tasks sharing one list of
//! items. Shutdown (the token) lets every worker bring its current batch to a safe point and hand
//! its item back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use archiver_proto::{ItemState, WorkItem};
use archiver_engine::config::Config;
use archiver_engine::observe::serve_for;
use archiver_engine::pipeline::{Hooks, ItemReport, NoHooks, Pipeline, PipelineError, Progress};
use archiver_engine::setup::{self, Scope};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::plan::{self, TablePlan};
use crate::progress::{progress_bar, tick};
use crate::summary::Summary;
use crate::vacuum::vacuum;

pub struct RunOptions {
    pub scope: Scope,
    pub dry_run: bool,
    pub workers: usize,
    /// Draw a progress bar (only on a terminal).
    pub progress: bool,
    pub hooks: Arc<dyn Hooks>,
    pub worker_id: String,
    /// Serve /metrics, /healthz and /readyz here while the run works.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            scope: Scope::default(),
            dry_run: false,
            workers: 2,
            progress: true,
            hooks: Arc::new(NoHooks),
            worker_id: default_worker_id(),
            metrics_addr: None,
        }
    }
}

pub use archiver_engine::default_worker_id;

/// What a dry run found for one table.
#[derive(Debug)]
pub struct DryRunTable {
    pub plan: TablePlan,
    pub eligible_rows: i64,
}

pub enum Outcome {
    /// The plans, and in `unplanned` the tables that could not be planned.
    DryRun { tables: Vec<DryRunTable>, unplanned: Summary },
    Ran(Summary),
}

pub async fn run(config: &Config, opts: RunOptions, shutdown: CancellationToken) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let prepared = setup::prepare(config, &opts.scope, !opts.dry_run).await?;
    if let Some(addr) = opts.metrics_addr.filter(|_| !opts.dry_run) {
        serve_for(addr, &prepared, None, shutdown.clone()).await?;
    }
    let mut summary = Summary::default();
    let plans = plan::plan_tables(&prepared, opts.dry_run, &mut summary).await;
    if opts.dry_run {
        return dry_run(&prepared, plans, summary).await;
    }
    plan::report_eligible(&prepared).await;
    let mut queue = VecDeque::new();
    for p in &plans {
        summary.planned(p);
        queue.extend(p.items().cloned());
    }
    let pipeline = Arc::new(Pipeline::new(&prepared, config, opts.worker_id.clone(), false).with_hooks(opts.hooks.clone()));
    let mut summary = run_items(pipeline, queue, summary, &opts, shutdown).await?;
    vacuum(&prepared, &summary).await;
    plan::report_eligible(&prepared).await;
    summary.duration = started.elapsed();
    Ok(Outcome::Ran(summary))
}

/// What a dry run reports: per table its plan and the rows eligible now, and the tables that
/// could not be planned.
async fn dry_run(prepared: &setup::Prepared, plans: Vec<TablePlan>, unplanned: Summary) -> anyhow::Result<Outcome> {
    let mut out = Vec::new();
    for plan in plans {
        let info = prepared.tables.iter().find(|t| t.label() == plan.label).expect("planned tables are prepared");
        let source = &prepared.sources[&info.settings.database];
        let eligible_rows = plan::eligible_rows(source, info, plan.cutoff).await?;
        out.push(DryRunTable { plan, eligible_rows });
    }
    Ok(Outcome::DryRun { tables: out, unplanned })
}

/// Runs `queue` on `opts.workers` tasks sharing it; adds how each item ended to `summary`.
async fn run_items(
    pipeline: Arc<Pipeline>,
    queue: VecDeque<WorkItem>,
    summary: Summary,
    opts: &RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Summary> {
    let progress = Arc::new(Progress::default());
    // Cancelled by shutdown, or by an error every other item would meet too.
    let stop = shutdown.child_token();
    let bar = progress_bar(opts.progress, queue.len() as u64);
    let ticker = tick(bar.clone(), progress.clone());
    let queue = Arc::new(Mutex::new(queue));
    let summary = Arc::new(Mutex::new(summary));
    let mut workers = Vec::new();
    for _ in 0..opts.workers.max(1) {
        let (queue, summary, pipeline, progress, bar, stop) =
            (queue.clone(), summary.clone(), pipeline.clone(), progress.clone(), bar.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            loop {
                // A statement of its own, so the lock is not held across the item.
                let next = queue.lock().expect("queue lock").pop_front();
                let Some(item) = next else { break };
                if stop.is_cancelled() {
                    summary.lock().expect("summary lock").table(&item.table_label()).items_not_run += 1;
                    continue;
                }
                let ended = run_one(&pipeline, &item, &stop, &progress).await;
                if let Err(e) = &ended.result {
                    if e.stops_the_run() && !stop.is_cancelled() {
                        summary.lock().expect("summary lock").stopped = Some(e.to_string());
                        stop.cancel();
                    }
                }
                record(&mut summary.lock().expect("summary lock"), &item, ended);
                bar.inc(1);
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    ticker.abort();
    crate::progress::finish(&bar);
    let mut summary = Arc::try_unwrap(summary).expect("workers done").into_inner().expect("summary lock");
    for entry in progress.tables.iter() {
        summary.add_archived(entry.key(), entry.value());
    }
    Ok(summary)
}

/// How one item ended, and for an item not run whether another process finished it meanwhile.
struct Ended {
    result: Result<Option<ItemReport>, PipelineError>,
    done_elsewhere: bool,
}

async fn run_one(pipeline: &Pipeline, item: &WorkItem, shutdown: &CancellationToken, progress: &Progress) -> Ended {
    let span = archiver_engine::pipeline::item_span(item, &pipeline.worker_id);
    let result = pipeline.run_item(item.id, &item.database, shutdown, progress).instrument(span).await;
    let done_elsewhere = match &result {
        Ok(None) => pipeline.sources[&item.database]
            .checkpoints
            .item(item.id)
            .await
            .ok()
            .flatten()
            .is_some_and(|r| r.state == ItemState::Done),
        _ => false,
    };
    Ended { result, done_elsewhere }
}

fn record(summary: &mut Summary, item: &WorkItem, ended: Ended) {
    let label = item.table_label();
    let done_elsewhere = ended.done_elsewhere;
    match ended.result {
        // Rows and bytes come from what this run deleted (Progress), not from the item's totals,
        // which include earlier attempts.
        Ok(Some(_)) => summary.table(&label).items_done += 1,
        Ok(None) if done_elsewhere => summary.table(&label).items_done += 1,
        Ok(None) => {
            let t = summary.table(&label);
            t.items_not_run += 1;
            t.errors.push(format!("{}: held by another live worker (or done meanwhile); not run", item.slug()));
        }
        Err(PipelineError::Cancelled) => summary.table(&label).items_not_run += 1,
        // Reported once, as why the run stopped.
        Err(e) if e.stops_the_run() => summary.table(&label).items_not_run += 1,
        Err(e) if e.is_injected_crash() => {
            let t = summary.table(&label);
            t.items_not_run += 1;
            t.errors.push(format!("{}: {e}", item.slug()));
        }
        Err(e) => {
            let t = summary.table(&label);
            t.items_failed += 1;
            t.errors.push(format!("{}: {e}", item.slug()));
        }
    }
}
