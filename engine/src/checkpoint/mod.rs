//! The checkpoint store: work items, leases and batch records in PostgreSQL.
//!
//! Input: state changes of items and batches. Output: durable rows in `{schema}.work_items`,
//! `{schema}.batches` and `{schema}.holds` (legal holds, see [`holds`]). Invariants: a batch is
//! recorded (key, rows, checksum, key bounds, primary
//! keys and row versions) before any of its rows is deleted; every write on behalf of a worker
//! checks that it still holds the item's lease, so a worker that lost its lease changes nothing.

use std::time::Duration;

use archiver_proto::{checkpoint_schema, WorkItem};

pub use archiver_proto::{BatchState, ItemState};

pub mod holds;
mod presence;
mod rows;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres};

pub use rows::{BatchRecord, ItemRow};

const ITEM_COLUMNS: &str = "id, database, schema_name, table_name, range_start, range_end, generation, state, \
     lease_owner, lease_until, attempts, last_error, rows_archived, bytes_archived, objects, rows_short";

/// Waits for the transaction-scoped advisory lock named `audit_archiver:{name}`. Its id is the
/// server's hash of the name, the same in every process, so two archivers planning the same table
/// (or migrating the same store) exclude each other; it is released when the transaction ends.
pub async fn advisory_xact_lock(conn: &mut sqlx::PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("audit_archiver:{name}"))
        .execute(conn)
        .await
        .map(drop)
}

/// The checkpoint tables of one database (a source database, or the shared `checkpoint.url`).
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    pool: PgPool,
    schema: String,
    /// True when these tables live in the source database itself, so that a delete and its
    /// checkpoint commit in one transaction.
    pub in_source: bool,
    /// Set once this process holds its presence lock here (shared by every clone).
    present: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

/// Why the checkpoint tables could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(
        "checkpoint schema {schema:?} is at version {found}, newer than this archiver understands ({supported}); \
         run the newer archiver, or upgrade this one"
    )]
    TooNew { schema: String, found: i32, supported: i32 },
}

impl CheckpointStore {
    pub fn new(pool: PgPool, schema: &str, in_source: bool) -> Self {
        CheckpointStore { pool, schema: schema.to_string(), in_source, present: Default::default() }
    }

    /// Holds `owner`'s presence lock in this store for the rest of the process (once; later
    /// calls return at once), so that when the process dies its claims can be taken over at once.
    pub async fn ensure_presence(&self, owner: &str) -> Result<(), sqlx::Error> {
        self.present
            .get_or_try_init(|| presence::hold((*self.pool.connect_options()).clone(), owner.to_string(), Default::default()))
            .await
            .map(drop)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `schema.name`; the schema is validated as a plain identifier when the config loads.
    pub fn t(&self, name: &str) -> String {
        format!("{}.{}", self.schema, name)
    }

    /// Creates the tables if missing, or brings them up to [`checkpoint_schema::VERSION`]; refuses
    /// a store a newer archiver has upgraded. Concurrent callers serialize on an advisory lock
    /// whose id is derived from the schema name (the same in every process).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        let mut tx = self.pool.begin().await?;
        advisory_xact_lock(&mut tx, &format!("migrate:{}", self.schema)).await?;
        for stmt in checkpoint_schema::version_table(&self.schema) {
            sqlx::query(&stmt).execute(&mut *tx).await?;
        }
        let (found,): (Option<i32>,) = sqlx::query_as(&format!("SELECT max(version) FROM {}", self.t("schema_version")))
            .fetch_one(&mut *tx)
            .await?;
        let supported = checkpoint_schema::VERSION;
        match found {
            Some(v) if v > supported => {
                return Err(MigrateError::TooNew { schema: self.schema.clone(), found: v, supported });
            }
            Some(v) => {
                for from in v..supported {
                    let step = checkpoint_schema::UPGRADES[(from - 1) as usize];
                    for stmt in step(&self.schema) {
                        sqlx::query(&stmt).execute(&mut *tx).await?;
                    }
                    self.record_version(&mut tx, from + 1).await?;
                }
            }
            // A new store, or one made before versions were recorded (its tables are version 1):
            // create what is missing, then apply every step (each is idempotent), which brings
            // version-1 tables up to date and changes nothing in new ones.
            None => {
                let steps = checkpoint_schema::UPGRADES.iter().flat_map(|step| step(&self.schema));
                for stmt in checkpoint_schema::create_statements(&self.schema).into_iter().chain(steps) {
                    sqlx::query(&stmt).execute(&mut *tx).await?;
                }
                self.record_version(&mut tx, supported).await?;
            }
        }
        Ok(tx.commit().await?)
    }

    async fn record_version(&self, tx: &mut sqlx::PgConnection, version: i32) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("INSERT INTO {} (version) VALUES ($1)", self.t("schema_version")))
            .bind(version)
            .execute(tx)
            .await
            .map(drop)
    }

    /// Whether the tables exist (a dry run must not create them).
    pub async fn exists(&self) -> Result<bool, sqlx::Error> {
        let (found,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL")
            .bind(self.t("work_items"))
            .fetch_one(&self.pool)
            .await?;
        Ok(found)
    }

    /// Items of a table that are not done.
    pub async fn unfinished(&self, database: &str, schema: &str, table: &str) -> Result<Vec<ItemRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {ITEM_COLUMNS} FROM {} WHERE database = $1 AND schema_name = $2 AND table_name = $3
             AND state <> 'done' ORDER BY range_start",
            self.t("work_items")
        ))
        .bind(database)
        .bind(schema)
        .bind(table)
        .fetch_all(&self.pool)
        .await
    }

    /// Every item of a table.
    pub async fn items_of(&self, database: &str, schema: &str, table: &str) -> Result<Vec<ItemRow>, sqlx::Error> {
        self.select_items("database = $1 AND schema_name = $2 AND table_name = $3", &[database, schema, table]).await
    }

    /// Pending items the broker never confirmed.
    pub async fn unpublished(&self) -> Result<Vec<ItemRow>, sqlx::Error> {
        self.select_items("state = 'pending' AND published_at IS NULL", &[]).await
    }

    /// Running items whose lease expired and that were not re-published since.
    pub async fn expired_leases(&self) -> Result<Vec<ItemRow>, sqlx::Error> {
        self.select_items(
            "state = 'running' AND lease_until < now() AND (published_at IS NULL OR published_at < lease_until)",
            &[],
        )
        .await
    }

    /// Pending items published more than `age` ago: if no message waits in the queues, theirs
    /// was lost (a purged or deleted queue, a broker that lost its data).
    pub async fn stale_pending(&self, age: Duration) -> Result<Vec<ItemRow>, sqlx::Error> {
        let age = format!("{} milliseconds", age.as_millis());
        self.select_items("state = 'pending' AND published_at < now() - $1::interval", &[&age]).await
    }

    pub async fn items_by_id(&self, ids: &[i64]) -> Result<Vec<ItemRow>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {ITEM_COLUMNS} FROM {} WHERE id = ANY($1)", self.t("work_items")))
            .bind(ids)
            .fetch_all(&self.pool)
            .await
    }

    pub async fn failed(&self) -> Result<Vec<ItemRow>, sqlx::Error> {
        self.select_items("state = 'failed'", &[]).await
    }

    async fn select_items(&self, filter: &str, args: &[&str]) -> Result<Vec<ItemRow>, sqlx::Error> {
        let sql = format!("SELECT {ITEM_COLUMNS} FROM {} WHERE {filter} ORDER BY id", self.t("work_items"));
        let mut q = sqlx::query_as(&sql);
        for a in args {
            q = q.bind(*a);
        }
        q.fetch_all(&self.pool).await
    }

    /// Records that the broker confirmed these items' messages.
    pub async fn mark_published(&self, ids: &[i64]) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("UPDATE {} SET published_at = now() WHERE id = ANY($1)", self.t("work_items")))
            .bind(ids)
            .execute(&self.pool)
            .await
            .map(drop)
    }

    pub async fn item(&self, id: i64) -> Result<Option<ItemRow>, sqlx::Error> {
        sqlx::query_as(&format!("SELECT {ITEM_COLUMNS} FROM {} WHERE id = $1", self.t("work_items")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Inserts pending items for many ranges in one statement (each with the next free
    /// generation of its range) and returns them ordered by range.
    pub async fn insert_items<'e, E>(
        &self,
        exec: E,
        database: &str,
        schema: &str,
        table: &str,
        ranges: &[(DateTime<Utc>, DateTime<Utc>)],
    ) -> Result<Vec<WorkItem>, sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = Postgres>,
    {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let wi = self.t("work_items");
        let starts: Vec<DateTime<Utc>> = ranges.iter().map(|r| r.0).collect();
        let ends: Vec<DateTime<Utc>> = ranges.iter().map(|r| r.1).collect();
        let rows: Vec<(i64, i32, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(&format!(
            "INSERT INTO {wi} (database, schema_name, table_name, range_start, range_end, generation)
             SELECT $1, $2, $3, r.s, r.e, coalesce((SELECT max(w.generation) + 1 FROM {wi} w
                 WHERE w.database = $1 AND w.schema_name = $2 AND w.table_name = $3
                   AND w.range_start = r.s AND w.range_end = r.e), 0)
             FROM unnest($4::timestamptz[], $5::timestamptz[]) AS r(s, e)
             RETURNING id, generation, range_start, range_end"
        ))
        .bind(database)
        .bind(schema)
        .bind(table)
        .bind(&starts)
        .bind(&ends)
        .fetch_all(exec)
        .await?;
        let mut items: Vec<WorkItem> = rows
            .into_iter()
            .map(|(id, generation, range_start, range_end)| WorkItem {
                id,
                database: database.into(),
                schema: schema.into(),
                table: table.into(),
                range_start,
                range_end,
                generation,
            })
            .collect();
        items.sort_by_key(|i| i.range_start);
        Ok(items)
    }

    /// Claims an item for `owner` if it is pending, failed, or running under a lease that expired
    /// or whose owner is gone (holds no presence lock: its process died). Returns None if it is
    /// done or another live worker holds it. Call [`CheckpointStore::ensure_presence`] first.
    pub async fn claim(&self, id: i64, owner: &str, lease: Duration) -> Result<Option<ItemRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "UPDATE {} SET state = 'running', lease_owner = $2, lease_until = now() + $3,
                attempts = attempts + 1, updated_at = now()
             WHERE id = $1 AND (state IN ('pending', 'failed')
                 OR (state = 'running' AND (lease_until < now() OR (lease_owner <> $2 AND NOT {}))))
             RETURNING {ITEM_COLUMNS}",
            self.t("work_items"),
            presence::alive_sql("lease_owner")
        ))
        .bind(id)
        .bind(owner)
        .bind(lease)
        .fetch_optional(&self.pool)
        .await
    }

    /// Extends the lease; false if it was lost (expired and taken, or the item is no longer ours).
    pub async fn heartbeat(&self, id: i64, owner: &str, lease: Duration) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(&format!(
            "UPDATE {} SET lease_until = now() + $3 WHERE id = $1 AND lease_owner = $2 AND state = 'running'
             AND lease_until > now()",
            self.t("work_items")
        ))
        .bind(id)
        .bind(owner)
        .bind(lease)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The lease check used inside a delete transaction: locks the item row until commit, so the
    /// lease cannot expire and be taken between the check and the delete's commit.
    pub async fn hold_lease(
        &self,
        conn: &mut sqlx::PgConnection,
        id: i64,
        owner: &str,
    ) -> Result<bool, sqlx::Error> {
        let row: Option<(i64,)> = sqlx::query_as(&format!(
            "SELECT id FROM {} WHERE id = $1 AND lease_owner = $2 AND state = 'running' AND lease_until > now()
             FOR UPDATE",
            self.t("work_items")
        ))
        .bind(id)
        .bind(owner)
        .fetch_optional(conn)
        .await?;
        Ok(row.is_some())
    }

    /// Hands an unfinished item back (graceful shutdown): pending again, lease cleared.
    pub async fn release(&self, id: i64, owner: &str) -> Result<(), sqlx::Error> {
        self.end_claim(id, owner, ItemState::Pending, None).await
    }

    /// Hands an item back after a transient error, keeping the error for `status`.
    pub async fn release_with_error(&self, id: i64, owner: &str, error: &str) -> Result<(), sqlx::Error> {
        self.end_claim(id, owner, ItemState::Pending, Some(error)).await
    }

    pub async fn fail(&self, id: i64, owner: &str, error: &str) -> Result<(), sqlx::Error> {
        self.end_claim(id, owner, ItemState::Failed, Some(error)).await
    }

    /// Ends `owner`'s claim on a running item: new state, lease cleared, `error` (if any) kept
    /// as `last_error`. Does nothing if `owner` no longer holds the item.
    async fn end_claim(&self, id: i64, owner: &str, state: ItemState, error: Option<&str>) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "UPDATE {} SET state = $3, last_error = coalesce($4, last_error), lease_owner = NULL, lease_until = NULL,
                updated_at = now()
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            self.t("work_items")
        ))
        .bind(id)
        .bind(owner)
        .bind(state.as_str())
        .bind(error)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Marks an item failed that nobody holds (a worker gave up after `max_attempts`).
    pub async fn fail_unclaimed(&self, id: i64, error: &str) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "UPDATE {} SET state = 'failed', last_error = $2, updated_at = now() WHERE id = $1 AND state = 'pending'",
            self.t("work_items")
        ))
        .bind(id)
        .bind(error)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// A failed item an operator retries (`retry-failed`): pending again with a fresh count of
    /// attempts, its last error kept for `status`.
    pub async fn requeue(&self, id: i64) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "UPDATE {} SET state = 'pending', attempts = 0, updated_at = now() WHERE id = $1 AND state = 'failed'",
            self.t("work_items")
        ))
        .bind(id)
        .execute(&self.pool)
        .await
        .map(drop)
    }

    /// Marks the item done after its manifest was written. False if the lease was lost first.
    pub async fn finish(&self, id: i64, owner: &str, manifest_key: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(&format!(
            "UPDATE {} SET state = 'done', manifest_key = $3, lease_owner = NULL, lease_until = NULL,
                last_error = NULL, finished_at = now(), updated_at = now()
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            self.t("work_items")
        ))
        .bind(id)
        .bind(owner)
        .bind(manifest_key)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn batches(&self, item_id: i64) -> Result<Vec<BatchRecord>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT item_id, seq, object_key, row_count, byte_size, sha256, store_checksum, first_ts, first_pk,
                last_ts, last_pk, day, window_end, pks, xmins, state, deleted_count, superseded
             FROM {} WHERE item_id = $1 ORDER BY seq",
            self.t("batches")
        ))
        .bind(item_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Records an uploaded, verified batch, if `owner` still holds the item. False if not. The
    /// item row is locked for the insert, so a claim by another worker waits for it and then sees
    /// the record.
    pub async fn record_batch(&self, b: &BatchRecord, owner: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(&format!(
            "WITH lease AS (
                 SELECT id FROM {} WHERE id = $1 AND lease_owner = $16 AND state = 'running' AND lease_until > now()
                 FOR UPDATE)
             INSERT INTO {} (item_id, seq, object_key, row_count, byte_size, sha256, store_checksum, first_ts,
                first_pk, last_ts, last_pk, day, window_end, pks, xmins, state)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'uploaded' FROM lease",
            self.t("work_items"),
            self.t("batches")
        ))
        .bind(b.item_id)
        .bind(b.seq)
        .bind(&b.object_key)
        .bind(b.row_count)
        .bind(b.byte_size)
        .bind(&b.sha256)
        .bind(&b.store_checksum)
        .bind(&b.first_ts)
        .bind(&b.first_pk)
        .bind(&b.last_ts)
        .bind(&b.last_pk)
        .bind(b.day)
        .bind(b.window_end)
        .bind(&b.pks)
        .bind(&b.xmins)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Adds `deleted` rows to the count of a batch still being deleted chunk by chunk, so a
    /// resumed attempt knows what the earlier one deleted.
    pub async fn add_deleted(&self, conn: &mut sqlx::PgConnection, b: &BatchRecord, deleted: i64) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "UPDATE {} SET deleted_count = coalesce(deleted_count, 0) + $3 WHERE item_id = $1 AND seq = $2 AND state = 'uploaded'",
            self.t("batches")
        ))
        .bind(b.item_id)
        .bind(b.seq)
        .bind(deleted)
        .execute(conn)
        .await
        .map(drop)
    }

    /// Marks a batch deleted, with `deleted` more rows (its last chunk), and adds it to the item's
    /// totals. Returns the batch's total of deleted rows, or None if it was marked already.
    /// Runs on the caller's connection so that, with the store inside the source database, it
    /// commits with the delete itself.
    pub async fn mark_deleted(
        &self,
        conn: &mut sqlx::PgConnection,
        b: &BatchRecord,
        deleted: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let total: Option<(i64,)> = sqlx::query_as(&format!(
            "UPDATE {} SET state = 'deleted', deleted_count = coalesce(deleted_count, 0) + $3, deleted_at = now(),
                pks = '[]', xmins = '[]'
             WHERE item_id = $1 AND seq = $2 AND state = 'uploaded'
             RETURNING deleted_count",
            self.t("batches")
        ))
        .bind(b.item_id)
        .bind(b.seq)
        .bind(deleted)
        .fetch_optional(&mut *conn)
        .await?;
        // None: marked by an earlier attempt whose commit we did not hear of: count it once.
        let Some((total,)) = total else { return Ok(None) };
        sqlx::query(&format!(
            "UPDATE {} SET rows_archived = rows_archived + $2, bytes_archived = bytes_archived + $3,
                objects = objects + 1, rows_short = rows_short + $4, updated_at = now()
             WHERE id = $1",
            self.t("work_items")
        ))
        .bind(b.item_id)
        .bind(b.row_count)
        .bind(b.byte_size)
        .bind(b.row_count - total)
        .execute(&mut *conn)
        .await?;
        Ok(Some(total))
    }

    /// Records which keys of a deleted batch were superseded (`keys`, a JSON array of strings).
    pub async fn set_superseded(&self, conn: &mut sqlx::PgConnection, b: &BatchRecord, keys: &str) -> Result<(), sqlx::Error> {
        sqlx::query(&format!("UPDATE {} SET superseded = $3 WHERE item_id = $1 AND seq = $2", self.t("batches")))
            .bind(b.item_id)
            .bind(b.seq)
            .bind(keys)
            .execute(conn)
            .await
            .map(drop)
    }
}
