//! Metrics and health endpoints: `/metrics` (Prometheus text), `/healthz`, `/readyz`.
//!
//! Input: the metric events the pipeline records through the `metrics` facade, and readiness
//! checks (database, broker, object store). Output: an HTTP listener on `--metrics-addr`.
//! Invariant: `/readyz` answers 200 only if every check passed, and names each check's result.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Metric names, one place for all of them.
pub mod names {
    pub const RECORDS_ARCHIVED: &str = "archiver_records_archived_total";
    pub const BYTES_UPLOADED: &str = "archiver_bytes_uploaded_total";
    pub const BATCHES: &str = "archiver_batches_total";
    pub const BATCH_DURATION: &str = "archiver_batch_duration_seconds";
    pub const ERRORS: &str = "archiver_errors_total";
    pub const ITEMS_IN_FLIGHT: &str = "archiver_items_in_flight";
    pub const MEMORY: &str = "archiver_memory_usage_bytes";
    pub const DB_CONNECTIONS: &str = "archiver_db_connections_active";
    pub const LAST_SUCCESS: &str = "archiver_last_success_timestamp_seconds";
    pub const ROWS_ELIGIBLE: &str = "archiver_rows_eligible";
    pub const DB_STATEMENT: &str = "archiver_db_statement_seconds";
    pub const GOVERNOR_RATE: &str = "archiver_governor_rate";
    pub const GOVERNOR_FACTOR: &str = "archiver_governor_factor";
    pub const GOVERNOR_STATE: &str = "archiver_governor_state";
    pub const GOVERNOR_REASON: &str = "archiver_governor_reason";
    pub const GOVERNOR_PROBE_RATIO: &str = "archiver_governor_probe_ratio";
    pub const REPLICA_LAG: &str = "archiver_replica_lag_seconds";
}

/// The `# HELP` text of every metric.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(names::RECORDS_ARCHIVED, "Rows archived: stored, verified, recorded and deleted from the source table.");
    describe_counter!(names::BYTES_UPLOADED, Unit::Bytes, "Compressed bytes of batch objects stored and verified.");
    describe_counter!(names::BATCHES, "Batch objects archived (manifests are not counted).");
    describe_histogram!(names::BATCH_DURATION, Unit::Seconds, "Time a batch spends in each pipeline stage, by stage.");
    describe_counter!(names::ERRORS, "Work items that stopped on an error, by stage and kind (transient, permanent, lost).");
    describe_gauge!(names::ITEMS_IN_FLIGHT, "Work items this process is archiving now.");
    describe_gauge!(names::MEMORY, Unit::Bytes, "Resident memory of this process.");
    describe_gauge!(names::DB_CONNECTIONS, "Source database connections in use, by database.");
    describe_gauge!(names::LAST_SUCCESS, Unit::Seconds, "Unix time the last work item of a table finished.");
    describe_gauge!(names::ROWS_ELIGIBLE, "Rows older than the table's retention cutoff still in the table (the backlog).");
    describe_histogram!(names::DB_STATEMENT, Unit::Seconds, "Database time of the archiver's batch reads and delete chunks, by database (the sum is what the governor's budget bounds).");
    describe_gauge!(names::GOVERNOR_RATE, "Database seconds per second this process may use now: budget x factor / processes.");
    describe_gauge!(names::GOVERNOR_FACTOR, "The governor's factor on the budget (0.05 to 1).");
    describe_gauge!(names::GOVERNOR_STATE, "1 for the governor's current state (running, throttled, paused), else 0.");
    describe_gauge!(names::GOVERNOR_REASON, "1 for the reason of the governor's state (healthy, probe_latency, lock_waits, replica_lag, replica_stalled), else 0.");
    describe_gauge!(names::GOVERNOR_PROBE_RATIO, "The governor's probe latency over its idle baseline.");
    describe_gauge!(names::REPLICA_LAG, Unit::Seconds, "The worst replication lag the governor sees (primary's replay_lag and watched replicas).");
}

/// Every (stage, kind) pair `archiver_errors_total` can carry.
pub const ERROR_LABELS: [(&str, &str); 8] = [
    ("database", "transient"),
    ("database", "permanent"),
    ("storage", "transient"),
    ("storage", "permanent"),
    ("verify", "permanent"),
    ("checkpoint", "permanent"),
    ("lease", "lost"),
    ("config", "permanent"),
];

/// Exports every counter and gauge at 0 for the labels known at start-up (each table, each error
/// kind), so dashboards and alerts see 0 rather than "no data" until the first event.
pub fn zero(prepared: &crate::setup::Prepared) {
    for info in &prepared.tables {
        let labels = [("database", info.settings.database.clone()), ("table", info.settings.table.clone())];
        metrics::counter!(names::RECORDS_ARCHIVED, &labels).absolute(0);
        metrics::counter!(names::BYTES_UPLOADED, &labels).absolute(0);
        metrics::counter!(names::BATCHES, &labels).absolute(0);
    }
    for (stage, kind) in ERROR_LABELS {
        metrics::counter!(names::ERRORS, "stage" => stage, "kind" => kind).absolute(0);
    }
    metrics::gauge!(names::ITEMS_IN_FLIGHT).set(0.0);
}

/// Serves the endpoints for a prepared process: readiness of its databases, store and broker,
/// every metric exported from the start, and the backlog gauge kept fresh (every minute) for as
/// long as the process serves.
pub async fn serve_for(
    addr: SocketAddr,
    prepared: &crate::setup::Prepared,
    queue: Option<crate::config::QueueConfig>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let bound = serve(addr, readiness(prepared, queue), shutdown.clone()).await?;
    zero(prepared);
    tokio::spawn(super::backlog::refresh(prepared.clone(), Duration::from_secs(60), shutdown));
    Ok(bound)
}

/// One readiness check: its name and, if it failed, why.
pub type CheckResult = (String, Result<(), String>);
pub type Readiness = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<CheckResult>> + Send>> + Send + Sync>;

static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();

/// Whether metrics are recorded (a recorder is installed), i.e. worth the cost of measuring.
pub fn recording() -> bool {
    HANDLE.get().is_some()
}

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle).
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(names::BATCH_DURATION.into()),
                    &buckets,
                )
                .expect("valid buckets")
                .set_buckets_for_metric(metrics_exporter_prometheus::Matcher::Full(names::DB_STATEMENT.into()), &buckets)
                .expect("valid buckets")
                .install_recorder()
                .expect("no other metrics recorder is installed");
            describe();
            handle
        })
        .clone()
}

#[derive(Clone)]
struct AppState {
    handle: PrometheusHandle,
    readiness: Readiness,
}

/// Serves the endpoints on `addr` until `shutdown`; also samples the process's memory.
pub async fn serve(addr: SocketAddr, readiness: Readiness, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
    let handle = install_recorder();
    let state = AppState { handle, readiness };
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(sample_memory(shutdown.clone()));
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

async fn metrics_page(State(s): State<AppState>) -> String {
    s.handle.render()
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let results = (s.readiness)().await;
    let ok = results.iter().all(|(_, r)| r.is_ok());
    let body = results
        .iter()
        .map(|(name, r)| match r {
            Ok(()) => format!("{name}: ok\n"),
            Err(e) => format!("{name}: {e}\n"),
        })
        .collect::<String>();
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}

/// Resident memory, from /proc/self/statm, every 5 seconds.
async fn sample_memory(shutdown: CancellationToken) {
    let page = 4096.0;
    loop {
        if let Ok(statm) = tokio::fs::read_to_string("/proc/self/statm").await {
            if let Some(rss) = statm.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()) {
                metrics::gauge!(names::MEMORY).set(rss * page);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Records a pipeline error, by stage and kind.
pub fn count_error(stage: &'static str, kind: &'static str) {
    metrics::counter!(names::ERRORS, "stage" => stage, "kind" => kind).increment(1);
}

/// `/readyz` checks: every source database, the object store, and the broker if any.
pub fn readiness(prepared: &crate::setup::Prepared, queue: Option<crate::config::QueueConfig>) -> Readiness {
    let pools: Vec<(String, sqlx::PgPool)> = prepared.sources.iter().map(|(n, s)| (n.clone(), s.pool.clone())).collect();
    let store = prepared.store.clone();
    Arc::new(move || {
        let (pools, store, queue) = (pools.clone(), store.clone(), queue.clone());
        Box::pin(async move {
            let mut out = Vec::new();
            for (name, pool) in &pools {
                let r = sqlx::query("SELECT 1").execute(pool).await.map(drop).map_err(|e| e.to_string());
                out.push((format!("database {name}"), r));
            }
            out.push(("object store".to_string(), store.check().await.map_err(|e| e.to_string())));
            if let Some(q) = queue {
                let r = match crate::queue::Broker::connect(&q, "archiver readiness check").await {
                    Ok(b) => {
                        b.close().await;
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                };
                out.push(("broker".to_string(), r));
            }
            out
        })
    })
}
