//! Why a work item did not finish, typed: the caller decides from the variant whether to retry,
//! hand the item back, or fail it, and the message names what went wrong and where.

use super::verify::Verification;
use crate::storage::StorageError;

/// Why a work item did not finish.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The object just stored is not what was encoded.
    #[error("verification failed: {}", .found.describe(.key))]
    Verify { key: String, found: Verification },
    /// A batch recorded by an earlier attempt cannot be finished: its object is gone or damaged,
    /// so its rows stay in the table.
    #[error("recorded batch {seq} cannot be finished, its rows stay in the table: {}", .found.describe(.key))]
    RecordedObjectDamaged { seq: i32, key: String, found: Verification },
    /// A batch record in the checkpoint store cannot be read back (edited by hand, or corrupt).
    #[error("batch record {seq} of item {item}: {what}")]
    CorruptRecord { item: i64, seq: i32, what: String },
    /// An object with other bytes already has the key of a batch about to be stored.
    #[error(
        "object {key} already exists and holds other rows: another checkpoint store has archived under this storage \
         prefix (was checkpoint.schema or checkpoint.url changed, or the store dropped?); nothing was overwritten and \
         this batch's rows stay in the table. Archive under a new storage.prefix, or go back to the checkpoint store \
         that wrote it"
    )]
    Occupied { key: String },
    #[error("{0} is not a configured table")]
    UnknownTable(String),
    #[error("database {0:?} is not configured")]
    UnknownDatabase(String),
    #[error("the lease on the work item was lost; another worker may own it now")]
    LeaseLost,
    #[error("stopped at a safe point")]
    Cancelled,
    /// Test-only crash emulation: the item stops dead, with no clean-up, as if the process died.
    #[cfg(feature = "fault-injection")]
    #[error("crash injected at {0:?}")]
    Crashed(super::faults::Point),
}

impl PipelineError {
    /// (stage, kind) labels of `archiver_errors_total`; None for stops that are not errors.
    pub fn metric_labels(&self) -> Option<(&'static str, &'static str)> {
        let kind = if self.is_retryable() { "transient" } else { "permanent" };
        Some(match self {
            PipelineError::Database(_) => ("database", kind),
            PipelineError::Storage(_) | PipelineError::Occupied { .. } => ("storage", kind),
            PipelineError::Verify { .. } | PipelineError::RecordedObjectDamaged { .. } => ("verify", kind),
            PipelineError::CorruptRecord { .. } => ("checkpoint", kind),
            PipelineError::LeaseLost => ("lease", "lost"),
            PipelineError::UnknownTable(_) | PipelineError::UnknownDatabase(_) => ("config", kind),
            PipelineError::Cancelled => return None,
            #[cfg(feature = "fault-injection")]
            PipelineError::Crashed(_) => return None,
        })
    }

    /// Worth another attempt later (connection trouble, timeouts, store hiccups).
    pub fn is_retryable(&self) -> bool {
        match self {
            PipelineError::Database(e) => db_retryable(e),
            PipelineError::Storage(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// Every other item would fail the same way (the object store refuses our credentials, the
    /// bucket is missing or invalid, ...): stop the run with this one error instead of failing
    /// item after item. The item is handed back, not failed: the fault is not the item's.
    pub fn stops_the_run(&self) -> bool {
        matches!(self, PipelineError::Storage(e) if e.is_permanent()) || matches!(self, PipelineError::Occupied { .. })
    }

    /// An emulated crash (test builds only): the caller must leave everything as a dead process
    /// would. Always false in a release build.
    pub fn is_injected_crash(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        if let PipelineError::Crashed(_) = self {
            return true;
        }
        false
    }
}

/// Connection trouble, timeouts, lock conflicts and overload: another attempt may succeed.
pub fn db_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            // lock_not_available, deadlock, serialization, query_canceled (statement_timeout),
            // admin shutdown, cannot connect now, too many connections
            Some("55P03" | "40P01" | "40001" | "57014" | "57P01" | "57P03" | "53300")
        ),
        _ => false,
    }
}
