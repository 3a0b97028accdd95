//! The archive pipeline and what it needs: configuration, storage, database access.
//!
//! `pipeline` runs one work item through extract, encode, upload, verify, checkpoint and delete;
//! the coordinator's standalone mode and the distributed worker both call it unchanged.

pub mod config;
pub mod consumer;
pub mod db;
pub mod observe;
pub mod pipeline;
pub mod queue;
pub mod seed;
pub mod setup;
pub mod storage;
pub mod table;
pub mod telemetry;

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
