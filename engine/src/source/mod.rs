//! Source databases: connection options and pools (`db`), the inspection of each configured table
//! (`table`), and [`Source`], a database together with the checkpoint store that records its work.

pub mod db;
pub mod table;

use sqlx::PgPool;

use crate::checkpoint::CheckpointStore;

/// A source database: its primary (deletes, leases), where batches are read (the primary, or a
/// read replica), where its checkpoints live, and its load governor.
#[derive(Clone)]
pub struct Source {
    pub pool: PgPool,
    /// Where batches are read: read-only connections with `statement_timeout` set
    /// ([`db::read_pool`]), to the primary or to the read replica.
    pub read_pool: PgPool,
    /// Batches are read on a replica (`read_pool` is not the primary).
    pub replica: bool,
    pub checkpoints: CheckpointStore,
    pub governor: std::sync::Arc<crate::governor::Governor>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("replica", &self.replica).field("checkpoints", &self.checkpoints).finish()
    }
}
