//! Delete: remove exactly the rows a verified, recorded batch archived.
//!
//! Input: a recorded batch (primary keys and row versions). Output: the number of rows deleted.
//! Invariants: deletes name primary keys, never a time range, and match each row's version
//! (`xmin`), so a row inserted or updated after it was read is never deleted unarchived; a row in
//! a range under an active legal hold is never deleted (the holds are read in the transaction); the
//! transaction is short, with `lock_timeout` and `statement_timeout`; it first re-checks the
//! worker's lease (row-locked until commit), and when the checkpoint store is in the same database
//! the batch is marked deleted in the same transaction.
//!
//! A batch is deleted in chunks, one short transaction each, sized so that one takes about the
//! governor's `delete_chunk_time`, and paced by the governor: locks and WAL bursts stay small,
//! and writes wait while a replica gate is closed. The rows a chunk deletes are added to the
//! batch's `deleted_count` in the same transaction (store in the source database), so a resumed
//! attempt counts what an interrupted one deleted; the last chunk marks the batch deleted.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::extract::TableSql;
use super::PipelineError;
use crate::checkpoint::BatchRecord;
use crate::source::db::ms_setting;
use crate::source::Source;

pub struct DeleteLimits {
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
}

/// How a batch's delete goes: where, as whom, within which limits, until when.
pub struct DeleteRun<'a> {
    pub item: &'a archiver_proto::WorkItem,
    pub source: &'a Source,
    pub sql: &'a TableSql,
    pub owner: &'a str,
    pub limits: &'a DeleteLimits,
    pub stop: &'a CancellationToken,
    /// Called after each chunk that leaves more to delete (the crash tests stop there).
    pub hooks: &'a dyn super::Hooks,
}

/// Keys per delete transaction at the start: small, then sized to `delete_chunk_time`.
const FIRST_CHUNK: usize = 500;

/// Deletes the batch's rows, in chunks paced by the governor (one transaction each, sized to take
/// about `delete_chunk_time`; the whole batch at once with the governor off). Returns how many
/// rows the batch's delete removed in all (this attempt and any earlier one).
pub async fn delete_batch(run: &DeleteRun<'_>, batch: &BatchRecord) -> Result<i64, PipelineError> {
    let corrupt = |what: String| PipelineError::CorruptRecord { item: batch.item_id, seq: batch.seq, what };
    let pks: Vec<String> = serde_json::from_str(&batch.pks).map_err(|e| corrupt(format!("pks: {e}")))?;
    let xmins: Vec<String> = serde_json::from_str(&batch.xmins).map_err(|e| corrupt(format!("xmins: {e}")))?;
    if pks.len() != xmins.len() {
        return Err(corrupt(format!("{} keys but {} row versions", pks.len(), xmins.len())));
    }
    let governor = &run.source.governor;
    let mut size = if governor.enabled() { FIRST_CHUNK } else { pks.len().max(1) };
    let mut at = 0;
    loop {
        governor.acquire(run.stop).await;
        governor.writes_allowed(run.stop).await;
        if run.stop.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }
        let end = (at + size).min(pks.len());
        let started = Instant::now();
        let chunk = Chunk { pks: &pks[at..end], xmins: &xmins[at..end], all: (end == pks.len()).then_some(&pks[..]) };
        let outcome = delete_chunk(run, batch, chunk).instrument(tracing::debug_span!("delete_chunk", keys = end - at)).await;
        let took = started.elapsed();
        governor.spent(took);
        if let Some(total) = outcome? {
            return Ok(total);
        }
        run.hooks.at(super::Point::DeleteChunk, run.item, batch.seq).await?;
        at = end;
        if governor.enabled() {
            size = crate::governor::next_size(size, took, governor.delete_chunk_time(), (50, 20_000));
        }
    }
}

/// What recording a chunk's delete did.
enum Marked {
    /// Added to the batch's count; more chunks follow.
    Partial,
    /// The batch is marked deleted: its total, or None if an earlier attempt had marked it.
    Done(Option<i64>),
}

/// One delete transaction's keys and row versions; on the last chunk also all the batch's keys.
struct Chunk<'a> {
    pks: &'a [String],
    xmins: &'a [String],
    all: Option<&'a [String]>,
}

/// Counts a chunk's deleted rows in the checkpoint store, on `conn` (a transaction). The last
/// chunk marks the batch deleted and, when fewer rows went than were archived, records which of
/// its keys still have a row in the table (read after this chunk's delete: in its transaction
/// when the store is in the source database, else after its commit):
/// those rows changed after they were read, so their archived version is superseded. A resumed
/// attempt computes the same set, since the rows it deleted are gone either way.
async fn mark(run: &DeleteRun<'_>, conn: &mut sqlx::PgConnection, batch: &BatchRecord, deleted: i64, all: Option<&[String]>) -> Result<Marked, sqlx::Error> {
    let checkpoints = &run.source.checkpoints;
    let Some(all) = all else {
        checkpoints.add_deleted(conn, batch, deleted).await?;
        return Ok(Marked::Partial);
    };
    let total = checkpoints.mark_deleted(conn, batch, deleted).await?;
    if total.is_some_and(|t| t < batch.row_count) {
        let keys = serde_json::to_string(all).expect("strings serialize");
        let query = sqlx::query_scalar::<_, String>(&run.sql.present).bind(keys);
        let present = if checkpoints.in_source { query.fetch_all(&mut *conn).await? } else { query.fetch_all(&run.source.pool).await? };
        if !present.is_empty() {
            checkpoints.set_superseded(conn, batch, &serde_json::to_string(&present).expect("strings serialize")).await?;
        }
    }
    Ok(Marked::Done(total))
}

/// One delete transaction over the chunk's keys. On the last chunk the batch is marked deleted and
/// its total returned (None if an earlier attempt marked it: then nothing more is counted).
async fn delete_chunk(run: &DeleteRun<'_>, batch: &BatchRecord, chunk: Chunk<'_>) -> Result<Option<i64>, PipelineError> {
    let checkpoints = &run.source.checkpoints;
    if !checkpoints.in_source {
        // A separate store cannot share the transaction; check the lease just before instead.
        let mut conn = checkpoints.pool().acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        if !checkpoints.hold_lease(&mut tx, batch.item_id, run.owner).await? {
            return Err(PipelineError::LeaseLost);
        }
        tx.rollback().await?;
    }
    let mut tx = run.source.pool.begin().await?;
    sqlx::query("SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)")
        .bind(ms_setting(run.limits.lock_timeout))
        .bind(ms_setting(run.limits.statement_timeout))
        .execute(&mut *tx)
        .await?;
    if checkpoints.in_source && !checkpoints.hold_lease(&mut tx, batch.item_id, run.owner).await? {
        return Err(PipelineError::LeaseLost);
    }
    let json = |v: &[String]| serde_json::to_string(v).expect("strings serialize");
    // Legal holds, read by the delete itself (or just before it, from a store in another
    // database): a row in a held range is never deleted, even one read before the hold was
    // placed. It stays in the table, and the batch records it as superseded.
    let item = run.item;
    let delete = match &run.sql.delete_local {
        Some(sql) => sqlx::query(sql).bind(json(chunk.pks)).bind(json(chunk.xmins)).bind(&item.database).bind(&item.schema).bind(&item.table),
        None => {
            let (starts, ends): (Vec<_>, Vec<_>) = checkpoints.held_ranges(checkpoints.pool(), item).await?.into_iter().unzip();
            sqlx::query(&run.sql.delete).bind(json(chunk.pks)).bind(json(chunk.xmins)).bind(starts).bind(ends)
        }
    };
    let deleted = delete.execute(&mut *tx).await?.rows_affected() as i64;
    let marked = if checkpoints.in_source {
        let marked = mark(run, &mut tx, batch, deleted, chunk.all).await?;
        tx.commit().await?;
        marked
    } else {
        tx.commit().await?;
        let mut store = checkpoints.pool().begin().await?;
        let marked = mark(run, &mut store, batch, deleted, chunk.all).await?;
        store.commit().await?;
        marked
    };
    let Marked::Done(total) = marked else { return Ok(None) };
    match total {
        Some(total) => {
            if total < batch.row_count {
                tracing::warn!(
                    key = %batch.object_key,
                    archived = batch.row_count,
                    deleted = total,
                    "fewer rows deleted than archived: rows changed or were deleted by someone else since they were read, \
                     or are under a legal hold; rows still in the table are archived again by a later run"
                );
            }
            Ok(Some(total))
        }
        // Marked by an earlier attempt: count what it recorded.
        None => Ok(Some(batch.deleted_count.unwrap_or(batch.row_count))),
    }
}
