//! Standalone mode: plan the work items and run them on in-process workers.
//!
//! The same pipeline the distributed workers run, on `workers` tokio tasks sharing one list of
//! items. Shutdown (the token) lets every worker bring its current batch to a safe point and hand
//! its item back.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use archiver_proto::{ItemState, WorkItem};
use archiver_engine::config::{Config, VacuumType};
use archiver_engine::source::db::qualified;
use archiver_engine::pipeline::{Hooks, NoHooks, Pipeline, PipelineError, Progress};
use archiver_engine::setup::{self, Scope};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::plan::{self, TablePlan};
use crate::summary::Summary;

pub struct RunOptions {
    pub scope: Scope,
    pub dry_run: bool,
    pub workers: usize,
    /// Draw a progress bar (only on a terminal).
    pub progress: bool,
    pub hooks: Arc<dyn Hooks>,
    pub worker_id: String,
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
    DryRun(Vec<DryRunTable>),
    Ran(Summary),
}

pub async fn run(config: &Config, opts: RunOptions, shutdown: CancellationToken) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let prepared = setup::prepare(config, &opts.scope, !opts.dry_run).await?;
    let mut plans = Vec::new();
    for info in &prepared.tables {
        let source = &prepared.sources[&info.settings.database];
        let plan = plan::plan_table(source, info, opts.dry_run)
            .await
            .map_err(|e| anyhow::anyhow!("{}: planning failed: {e}", info.label()))?;
        plans.push(plan);
    }
    if opts.dry_run {
        let mut out = Vec::new();
        for (info, plan) in prepared.tables.iter().zip(plans) {
            let source = &prepared.sources[&info.settings.database];
            let eligible_rows = plan::eligible_rows(source, info, plan.cutoff).await?;
            out.push(DryRunTable { plan, eligible_rows });
        }
        return Ok(Outcome::DryRun(out));
    }

    plan::report_eligible(&prepared).await;
    let mut summary = Summary::default();
    let mut queue = VecDeque::new();
    for p in &plans {
        let t = summary.table(&p.label);
        t.items_not_run += p.skipped.len() as u64;
        for (item, why) in &p.skipped {
            t.errors.push(format!("{} not run: {why}", item.slug()));
        }
        queue.extend(p.items().cloned());
    }
    let total_items = queue.len() as u64;
    let pipeline = Arc::new(Pipeline::new(&prepared, config, opts.worker_id.clone(), false).with_hooks(opts.hooks.clone()));
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(opts.progress, total_items);
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            loop {
                bar.set_message(format!(
                    "{} rows, {} MiB",
                    progress.rows.load(Ordering::Relaxed),
                    progress.bytes.load(Ordering::Relaxed) / (1024 * 1024)
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let queue = Arc::new(Mutex::new(queue));
    let summary = Arc::new(Mutex::new(summary));
    let mut workers = Vec::new();
    for _ in 0..opts.workers.max(1) {
        let (queue, summary, pipeline, progress, bar, shutdown) =
            (queue.clone(), summary.clone(), pipeline.clone(), progress.clone(), bar.clone(), shutdown.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(item) = queue.lock().expect("queue lock").pop_front() else { break };
                let label = item.table_label();
                if shutdown.is_cancelled() {
                    summary.lock().expect("summary lock").table(&label).items_not_run += 1;
                    continue;
                }
                let span = archiver_engine::pipeline::item_span(&item, &pipeline.worker_id);
                let result = pipeline.run_item(item.id, &item.database, &shutdown, &progress).instrument(span).await;
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
                record(&mut summary.lock().expect("summary lock"), &item, result, done_elsewhere);
                bar.inc(1);
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    ticker.abort();
    bar.finish_and_clear();
    let mut summary = Arc::try_unwrap(summary).expect("workers done").into_inner().expect("summary lock");
    for entry in progress.tables.iter() {
        summary.add_archived(entry.key(), entry.value());
    }
    vacuum(&prepared, &summary).await;
    plan::report_eligible(&prepared).await;
    summary.duration = started.elapsed();
    Ok(Outcome::Ran(summary))
}

fn record(
    summary: &mut Summary,
    item: &WorkItem,
    result: Result<Option<archiver_engine::pipeline::ItemReport>, PipelineError>,
    done_elsewhere: bool,
) {
    let label = item.table_label();
    match result {
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

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_bar(wanted: bool, total: u64) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} items, {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// VACUUM / ANALYZE the tables rows were deleted from, as configured.
pub(crate) async fn vacuum(prepared: &setup::Prepared, summary: &Summary) {
    let by_label: HashMap<String, &Arc<archiver_engine::source::table::TableInfo>> =
        prepared.tables.iter().map(|t| (t.label(), t)).collect();
    for (label, totals) in &summary.tables {
        let Some(info) = by_label.get(label) else { continue };
        if totals.rows == 0 {
            continue;
        }
        let s = &info.settings;
        let t = qualified(&s.schema, &s.table);
        let stmt = match s.vacuum {
            VacuumType::None => continue,
            VacuumType::Analyze => format!("ANALYZE {t}"),
            VacuumType::Standard => format!("VACUUM (ANALYZE) {t}"),
            VacuumType::Full => format!("VACUUM (FULL, ANALYZE) {t}"),
        };
        let pool = &prepared.sources[&s.database].pool;
        match sqlx::query(&stmt).execute(pool).await {
            Ok(_) => tracing::info!(table = %label, statement = %stmt, "vacuumed"),
            Err(e) => tracing::warn!(table = %label, error = %e, "vacuum failed (the archived data is safe)"),
        }
    }
}
