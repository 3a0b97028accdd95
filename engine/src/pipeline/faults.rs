//! Fault injection points for the crash tests.
//!
//! The pipeline calls [`Hooks::at`] at each [`Point`]; production passes [`NoHooks`], which does
//! nothing. Only a build with the `fault-injection` feature (the test suites turn it on through
//! their dev-dependencies) can stop an item dead ([`PipelineError::Crashed`](super::PipelineError))
//! or abort the process from `ARCHIVER_CRASH_AT`: a release binary has no such switch.

use archiver_proto::WorkItem;
use async_trait::async_trait;

use super::PipelineError;

/// Points of the pipeline where tests inject faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A batch was read and encoded.
    Extracted,
    /// Its object was stored.
    Uploaded,
    /// Its record was committed to the checkpoint store.
    Recorded,
    /// One of its delete chunks committed and more follow (the governor deletes in chunks).
    DeleteChunk,
    /// Its rows were deleted.
    Deleted,
    /// The manifest was written, before the item is marked done.
    ManifestWritten,
}

impl Point {
    pub fn name(self) -> &'static str {
        match self {
            Point::Extracted => "extracted",
            Point::Uploaded => "uploaded",
            Point::Recorded => "recorded",
            Point::DeleteChunk => "delete_chunk",
            Point::Deleted => "deleted",
            Point::ManifestWritten => "manifest",
        }
    }
}

/// Called at every [`Point`]; an error stops the item there. Production uses [`NoHooks`].
#[async_trait]
pub trait Hooks: Send + Sync {
    async fn at(&self, point: Point, item: &WorkItem, seq: i32) -> Result<(), PipelineError>;
}

/// No faults (with `fault-injection`: the process aborts where `ARCHIVER_CRASH_AT` says).
pub struct NoHooks;

#[async_trait]
impl Hooks for NoHooks {
    async fn at(&self, _point: Point, _item: &WorkItem, _seq: i32) -> Result<(), PipelineError> {
        #[cfg(feature = "fault-injection")]
        crash_from_env(_point.name(), _seq);
        Ok(())
    }
}

/// Crash injection for the process-level tests: `ARCHIVER_CRASH_AT=uploaded:2` aborts the whole
/// process (no destructors, no clean-up) right after batch 2's upload; `restore:2` inside the
/// transaction that restores the second object, after its rows are inserted and before it commits.
#[cfg(feature = "fault-injection")]
pub(crate) fn crash_from_env(point: &str, seq: i32) {
    static SPEC: std::sync::OnceLock<Option<(String, i32)>> = std::sync::OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("ARCHIVER_CRASH_AT").ok()?;
        let (p, s) = v.split_once(':')?;
        Some((p.to_string(), s.parse().ok()?))
    });
    if let Some((p, s)) = spec {
        if p == point && *s == seq {
            eprintln!("ARCHIVER_CRASH_AT={p}:{s}: aborting the process");
            std::process::abort();
        }
    }
}
