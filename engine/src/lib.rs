//! The archiving engine: everything both binaries (`archiver-coordinator`, `archiver-worker`) run.
//!
//! - `archive`: the archive read back: catalog of manifests, restore, validate.
//! - `config`: the YAML configuration (the predecessor's format), one file per section.
//! - `source`: source databases: connections, quoting, table inspection.
//! - `storage`: the object store trait and its backends (S3, local directory).
//! - `checkpoint`: the checkpoint store in PostgreSQL (items, batches, leases).
//! - `pipeline`: one work item from claim to manifest, one stage a file.
//! - `governor`: how fast the pipeline may go on each source database (load governor).
//! - `queue`: RabbitMQ topology and publishing.
//! - `observe`: metrics, health endpoints, logs and traces.
//! - `setup`: connects to all of the above and checks it before any work.
//!
//! Arrows run one way: binaries -> engine -> proto. Nothing here knows a binary.

pub mod archive;
pub mod checkpoint;
pub mod config;
pub mod governor;
pub mod observe;
pub mod pipeline;
pub mod queue;
pub mod setup;
pub mod source;
pub mod storage;

/// `host-pid-random`: unique per process, readable in the checkpoint store.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Cancels `shutdown` on SIGINT or SIGTERM: loops stop at their next safe point.
pub async fn shutdown_on_signals(shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::warn!("shutdown requested: finishing current batches, then handing items back");
    shutdown.cancel();
}
