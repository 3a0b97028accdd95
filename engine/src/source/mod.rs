//! Source databases: connection options and pools (`db`), the inspection of each configured table
//! (`table`), and [`Source`], a database together with the checkpoint store that records its work.

pub mod db;
pub mod table;

use sqlx::PgPool;

use crate::checkpoint::CheckpointStore;

/// A source database and where its checkpoints live.
#[derive(Debug, Clone)]
pub struct Source {
    pub pool: PgPool,
    pub checkpoints: CheckpointStore,
}
