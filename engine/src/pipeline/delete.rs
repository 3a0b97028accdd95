//! Delete: remove exactly the rows a verified, recorded batch archived.
//!
//! Input: a recorded batch (primary keys and row versions). Output: the number of rows deleted.
//! Invariants: deletes name primary keys, never a time range, and match each row's version
//! (`xmin`), so a row inserted or updated after it was read is never deleted unarchived; the
//! transaction is short, with `lock_timeout` and `statement_timeout`; it first re-checks the
//! worker's lease (row-locked until commit), and when the checkpoint store is in the same database
//! the batch is marked deleted in the same transaction.

use std::time::Duration;

use sqlx::PgPool;

use crate::checkpoint::{BatchRecord, CheckpointStore};
use super::extract::TableSql;
use super::PipelineError;

pub struct DeleteLimits {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Deletes the batch's rows; returns how many were deleted.
pub async fn delete_batch(
    source: &PgPool,
    checkpoints: &CheckpointStore,
    sql: &TableSql,
    batch: &BatchRecord,
    owner: &str,
    limits: &DeleteLimits,
) -> Result<i64, PipelineError> {
    if !checkpoints.in_source {
        // A separate store cannot share the transaction; check the lease just before instead.
        let mut conn = checkpoints.pool().acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        if !checkpoints.hold_lease(&mut tx, batch.item_id, owner).await? {
            return Err(PipelineError::LeaseLost);
        }
        tx.rollback().await?;
    }
    let mut tx = source.begin().await?;
    sqlx::query("SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)")
        .bind(ms(limits.lock_timeout))
        .bind(ms(limits.statement_timeout))
        .execute(&mut *tx)
        .await?;
    if checkpoints.in_source && !checkpoints.hold_lease(&mut tx, batch.item_id, owner).await? {
        return Err(PipelineError::LeaseLost);
    }
    let deleted = sqlx::query(&sql.delete).bind(&batch.pks).bind(&batch.xmins).execute(&mut *tx).await?.rows_affected()
        as i64;
    let first_time = if checkpoints.in_source {
        let marked = checkpoints.mark_deleted(&mut tx, batch, deleted).await?;
        tx.commit().await?;
        marked
    } else {
        tx.commit().await?;
        let mut conn = checkpoints.pool().acquire().await?;
        checkpoints.mark_deleted(&mut conn, batch, deleted).await?
    };
    if first_time && deleted < batch.row_count {
        tracing::warn!(
            key = %batch.object_key,
            archived = batch.row_count,
            deleted,
            "fewer rows deleted than archived: rows changed or were deleted by someone else since they were read; \
             changed rows stay in the table and are archived again by a later run"
        );
    }
    Ok(deleted)
}
