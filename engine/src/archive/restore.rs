//! Restore: archived rows of a table, for a range of the rows' own timestamps, back into that
//! table or into another one.
//!
//! Input: the archive (manifests and objects), a source database, the range, the target and a
//! conflict strategy. Output: the rows in the target, a record per object in the restore log
//! (`{checkpoint schema}.restored` in that database) and, for a restore in place, a legal hold on
//! the range so the next run does not archive the rows again.
//!
//! Invariants:
//! - every object is checked against its manifest (size, SHA-256, row count) before a row of it is
//!   written; a missing or damaged object is named and nothing of it is written;
//! - each object is restored in one transaction together with its restore-log record, so a rerun,
//!   or a run after a crash, skips exactly the objects already restored and ends in the same state;
//! - rows stream: the compressed object is decompressed into COPY, never held as rows;
//! - superseded rows (changed on the source after they were read) are not restored, so a row
//!   archived twice comes back as its last archived version.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use archiver_proto::Compression;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use tokio::sync::mpsc;

use super::catalog::{self, Listed, Range};
use super::load::{self, OnConflict, TargetColumn};
use crate::checkpoint::holds::{Hold, NewHold};
use crate::source::db::qualified;
use crate::source::Source;
use crate::storage::{ObjectStore, StorageError};

/// What to restore, where, and how.
#[derive(Debug, Clone)]
pub struct Request {
    pub database: String,
    /// The archived table: `(schema, table)`.
    pub table: (String, String),
    /// Where the rows go; None: back into the archived table (a restore in place).
    pub into: Option<(String, String)>,
    pub range: Range,
    pub on_conflict: OnConflict,
    /// Restore the other objects when some are missing or damaged (they are reported).
    pub skip_damaged: bool,
    /// The checkpoint schema: the restore log lives under this name in the target's database.
    pub log_schema: String,
    /// Who restores, for the restore log and the hold.
    pub by: String,
}

impl Request {
    pub fn target(&self) -> (&str, &str) {
        let (s, t) = self.into.as_ref().unwrap_or(&self.table);
        (s, t)
    }

    pub fn in_place(&self) -> bool {
        self.into.as_ref().is_none_or(|i| *i == self.table)
    }
}

/// An object that cannot be restored, and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Damage {
    pub key: String,
    pub problem: String,
}

/// The objects a restore reads, each checked against its manifest.
#[derive(Debug, Default)]
pub struct Plan {
    pub objects: Vec<Listed>,
    /// Missing or damaged objects, and manifests that cannot be read.
    pub damaged: Vec<Damage>,
    /// The span of the chosen manifests' item ranges (where the range is open).
    pub span: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Plan {
    pub fn rows(&self) -> i64 {
        self.objects.iter().map(|o| o.object.rows).sum()
    }

    pub fn bytes(&self) -> i64 {
        self.objects.iter().map(|o| o.object.bytes).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{}; nothing of {} was restored (restore the others with --skip-damaged)", list(.0), if .0.len() == 1 { "it" } else { "them" })]
    Damaged(Vec<Damage>),
    #[error("{0}")]
    Target(String),
    #[error("{key}: a row is already in {target} ({detail}); nothing of this object was restored; choose --on-conflict skip or overwrite")]
    Conflict { key: String, target: String, detail: String },
}

fn list(d: &[Damage]) -> String {
    d.iter().map(|d| format!("{}: {}", d.key, d.problem)).collect::<Vec<_>>().join("; ")
}

/// Chooses the objects of `range` and checks each against its manifest (present, size, SHA-256),
/// so a damaged object is known before a single row is written. Objects are compressed and small
/// next to the rows they hold: reading each twice (here and when restoring it, checked again)
/// costs little beside inserting its rows.
pub async fn plan(store: &dyn ObjectStore, req: &Request) -> Result<Plan, StorageError> {
    pin_mmap_threshold();
    let cat = catalog::read(store, &req.database, &req.table.0, &req.table.1).await?;
    let mut plan = Plan { damaged: cat.unreadable.iter().map(|u| Damage { key: u.key.clone(), problem: u.problem.clone() }).collect(), ..Plan::default() };
    for (_, m) in cat.manifests.iter().filter(|(_, m)| req.range.overlaps(m.range_start, m.range_end)) {
        let (s, e) = plan.span.unwrap_or((m.range_start, m.range_end));
        plan.span = Some((s.min(m.range_start), e.max(m.range_end)));
    }
    for o in cat.objects_in(req.range) {
        match checked(&o, store.get(&o.object.key).await?) {
            Ok(_) => plan.objects.push(o),
            Err(d) => plan.damaged.push(d),
        }
    }
    // A row archived twice whose first object does not name it superseded (an archive written
    // before superseded keys were recorded): its last archived version must win. With `skip` and
    // `fail` the first row written wins, so the newest objects go first; with `overwrite` the
    // last one wins, so they go last.
    plan.objects.sort_by_key(|o| (o.archived_at, o.object.seq));
    if req.on_conflict != OnConflict::Overwrite {
        plan.objects.reverse();
    }
    Ok(plan)
}

/// Where a restore stands, after each object.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Objects this run restores (those an earlier run restored are not counted).
    pub todo: usize,
    pub objects: usize,
    pub bytes: i64,
    pub rows_written: u64,
}

/// What a restore did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub target: String,
    /// Objects restored by this run.
    pub restored: usize,
    /// Objects an earlier run had restored already (skipped).
    pub already: usize,
    /// Rows read from the restored objects, and rows written into the target.
    pub rows_read: u64,
    pub rows_written: u64,
    pub damaged: Vec<Damage>,
    pub hold: Option<Hold>,
}

/// Restores the planned objects into the request's target.
pub async fn run(source: &Source, store: Arc<dyn ObjectStore>, req: &Request, plan: Plan, progress: &(dyn Fn(Progress) + Sync)) -> Result<Report, RestoreError> {
    pin_mmap_threshold();
    if !plan.damaged.is_empty() && !req.skip_damaged {
        return Err(RestoreError::Damaged(plan.damaged));
    }
    let target = req.target();
    let mut report = Report { target: qualified(target.0, target.1), damaged: plan.damaged, ..Report::default() };
    if plan.objects.is_empty() {
        return Ok(report); // nothing archived in the range: no table made, no hold placed
    }
    let mut conn = source.pool.acquire().await?;
    prepare_session(&mut conn, req).await?;
    let archived: Vec<&archiver_proto::manifest::Column> = plan.objects.iter().flat_map(|o| o.columns.iter()).collect();
    let target_columns = ensure_target(&mut conn, req, &archived).await?;
    // Every insert is built (and every column checked) before anything is held or written.
    let mut statements: HashMap<*const Vec<archiver_proto::manifest::Column>, String> = HashMap::new();
    for o in &plan.objects {
        if let std::collections::hash_map::Entry::Vacant(e) = statements.entry(Arc::as_ptr(&o.columns)) {
            let sql = load::insert_sql(target, &o.columns, &target_columns, &o.timestamp_column, &o.primary_key, req.on_conflict);
            e.insert(sql.map_err(RestoreError::Target)?);
        }
    }
    let quiet_triggers = triggers_off(&mut conn, req).await?;
    if req.in_place() {
        report.hold = Some(hold(source, req, plan.span).await?);
    }
    let (from, to) = (req.range.from, req.range.to);
    let done: HashSet<String> = sqlx::query_scalar(&format!(
        "SELECT object_key FROM {}.restored WHERE target = $1 AND range_from = coalesce($2, '-infinity') AND range_to = coalesce($3, 'infinity')",
        req.log_schema
    ))
    .bind(&report.target)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let (todo, skipped): (Vec<Listed>, Vec<Listed>) = plan.objects.into_iter().partition(|o| !done.contains(&o.object.key));
    report.already = skipped.len();
    let mut at = Progress { todo: todo.len(), ..Progress::default() };
    progress(at);
    let mut fetched = prefetch(store, todo);
    while let Some((o, body)) = fetched.recv().await {
        let body = match checked(&o, body?) {
            Ok(b) => b,
            Err(d) if req.skip_damaged => {
                tracing::warn!(key = %d.key, problem = %d.problem, "skipping a damaged object");
                report.damaged.push(d);
                continue;
            }
            Err(d) => return Err(RestoreError::Damaged(vec![d])),
        };
        let sql = &statements[&Arc::as_ptr(&o.columns)];
        let object = ObjectLoad { listed: &o, body, sql, quiet_triggers, seq: report.restored as i32 + 1 };
        let (read, written) = match restore_object(&mut conn, req, &report.target, object).await? {
            Ok(counts) => counts,
            Err(d) if req.skip_damaged => {
                report.damaged.push(d);
                continue;
            }
            Err(d) => return Err(RestoreError::Damaged(vec![d])),
        };
        report.restored += 1;
        report.rows_read += read;
        report.rows_written += written;
        at = Progress { objects: at.objects + 1, bytes: at.bytes + o.object.bytes, rows_written: report.rows_written, ..at };
        progress(at);
    }
    Ok(report)
}

/// UTC, so timestamps without time zone compare as the archiver read them; the staging table and
/// the restore log.
async fn prepare_session(conn: &mut PgConnection, req: &Request) -> Result<(), sqlx::Error> {
    sqlx::query("SET TIME ZONE 'UTC'").execute(&mut *conn).await?;
    sqlx::query(load::CREATE_STAGE).execute(&mut *conn).await?;
    for stmt in load::log_statements(&req.log_schema) {
        sqlx::query(&stmt).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The target's columns; creates it `LIKE` the archived table (defaults, generated and identity
/// columns, constraints, indexes; never triggers), plus the `archived` columns the table has
/// dropped since, when it does not exist. The creation is one transaction, which also forgets
/// what the restore log says of an earlier table of that name.
async fn ensure_target(conn: &mut PgConnection, req: &Request, archived: &[&archiver_proto::manifest::Column]) -> Result<Vec<TargetColumn>, RestoreError> {
    let (schema, table) = req.target();
    let name = qualified(schema, table);
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass($1) IS NOT NULL").bind(&name).fetch_one(&mut *conn).await?;
    if !exists {
        if req.in_place() {
            return Err(RestoreError::Target(format!("{name} does not exist; restore into another table with --into")));
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        create_like(&mut tx, req, &name).await?;
        add_dropped_columns(&mut tx, &name, archived).await?;
        sqlx::query(&format!("DELETE FROM {}.restored WHERE target = $1", req.log_schema)).bind(&name).execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(table = %name, "created the target table like the archived one");
    }
    let rows = sqlx::query(
        "SELECT attname, attgenerated <> '' AS generated, format_type(atttypid, atttypmod) AS type_name FROM pg_attribute
         WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(&name)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok(TargetColumn { name: r.try_get("attname")?, generated: r.try_get("generated")?, type_name: r.try_get("type_name")? }))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// `CREATE TABLE name (LIKE archived ...)`, without the defaults drawn from the archived table's
/// sequences (they would tie the two tables together and hand out its ids; restored rows carry
/// their own values).
async fn create_like(tx: &mut PgConnection, req: &Request, name: &str) -> Result<(), sqlx::Error> {
    let schema = req.target().0;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {}", crate::source::db::quote_ident(schema))).execute(&mut *tx).await?;
    sqlx::query(&format!(
        "CREATE TABLE {name} (LIKE {} INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING IDENTITY INCLUDING CONSTRAINTS
         INCLUDING INDEXES INCLUDING STORAGE INCLUDING COMMENTS)",
        qualified(&req.table.0, &req.table.1)
    ))
    .execute(&mut *tx)
    .await?;
    let serial: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
         WHERE d.adrelid = $1::regclass AND pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%'",
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    for column in serial {
        sqlx::query(&format!("ALTER TABLE {name} ALTER COLUMN {} DROP DEFAULT", crate::source::db::quote_ident(&column)))
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Adds to a table just made `LIKE` the source the `archived` columns the source has dropped
/// since it was archived, so its old rows restore whole. A column's type is the one PostgreSQL
/// reads the manifest's type name as (`to_regtype`, without a length or precision): the
/// manifest's text never reaches the statement itself.
async fn add_dropped_columns(tx: &mut PgConnection, name: &str, archived: &[&archiver_proto::manifest::Column]) -> Result<(), RestoreError> {
    let present: Vec<String> =
        sqlx::query_scalar("SELECT attname::text FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped")
            .bind(name)
            .fetch_all(&mut *tx)
            .await?;
    let mut present: std::collections::BTreeSet<String> = present.into_iter().collect();
    for c in archived {
        if !present.insert(c.name.clone()) {
            continue;
        }
        let (ty,): (Option<String>,) = sqlx::query_as("SELECT to_regtype($1)::text").bind(&c.type_name).fetch_one(&mut *tx).await?;
        let Some(ty) = ty else {
            return Err(RestoreError::Target(format!("the archive holds column {:?} of type {}, which this database does not know", c.name, c.type_name)));
        };
        sqlx::query(&format!("ALTER TABLE {name} ADD COLUMN {} {ty}", crate::source::db::quote_ident(&c.name))).execute(&mut *tx).await?;
        tracing::info!(table = %name, column = %c.name, r#type = %ty, "added a column the source table has dropped since it was archived");
    }
    Ok(())
}

/// Whether the target's own triggers can be kept from firing for archived history
/// (`session_replication_role`, which needs a superuser). Warns when they will fire.
async fn triggers_off(conn: &mut PgConnection, req: &Request) -> Result<bool, sqlx::Error> {
    let (schema, table) = req.target();
    let (triggers, superuser): (i64, bool) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal),
                (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
    )
    .bind(qualified(schema, table))
    .fetch_one(&mut *conn)
    .await?;
    if triggers > 0 && !superuser {
        tracing::warn!(table = %qualified(schema, table), triggers, "the table's triggers fire for restored rows: keeping them quiet needs a superuser");
    }
    Ok(triggers > 0 && superuser)
}

/// The hold that keeps rows restored in place from being archived again: an active hold an
/// earlier in-place restore placed over the whole range, or a new one.
async fn hold(source: &Source, req: &Request, span: Option<(DateTime<Utc>, DateTime<Utc>)>) -> Result<Hold, RestoreError> {
    let cp = &source.checkpoints;
    cp.migrate().await.map_err(|e| RestoreError::Target(format!("checkpoint store: {e}")))?;
    let (start, end) = match (req.range.from, req.range.to, span) {
        (Some(f), Some(t), _) => (f, t),
        (f, t, Some((s, e))) => (f.unwrap_or(s), t.unwrap_or(e)),
        (f, t, None) => (f.unwrap_or(DateTime::<Utc>::MIN_UTC), t.unwrap_or(DateTime::<Utc>::MAX_UTC)),
    };
    let (schema, table) = (&req.table.0, &req.table.1);
    let same = |h: &Hold| {
        h.active() && h.database == req.database && h.schema_name == *schema && h.table_name == *table
            && h.range_start <= start && h.range_end >= end && h.reason.starts_with(RESTORE_REASON)
    };
    if let Some(h) = cp.holds().await?.into_iter().find(same) {
        return Ok(h);
    }
    let reason = format!("{RESTORE_REASON}: rows came back from the archive; release the hold when they may be archived again");
    let new = NewHold { database: &req.database, schema, table, range_start: start, range_end: end, reason: &reason, by: &req.by };
    let h = cp.add_hold(&new).await?;
    tracing::info!(hold = h.id, "placed a legal hold on the restored range, so the next run leaves these rows in place");
    Ok(h)
}

const RESTORE_REASON: &str = "restored in place";

/// Keeps glibc's malloc returning the memory of freed large buffers. A restore allocates and frees
/// buffers of megabytes once per object (a downloaded object, its copies in the S3 client), on
/// whichever thread fetched it. glibc raises its mmap threshold to the size of the first such
/// buffer freed and then serves them from per-thread heaps that keep the freed pages: 27 objects
/// of 3 MB peaked at 49 to 56 MB RSS. Pinned at its default (128 KiB), every large buffer is
/// mmapped and given back when freed: 38 MB. Process-wide and set once; a restore is a command
/// of its own.
fn pin_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            use std::ffi::c_int;
            const M_MMAP_THRESHOLD: c_int = -3;
            unsafe extern "C" {
                fn mallopt(param: c_int, value: c_int) -> c_int;
            }
            // SAFETY: mallopt only sets one of the allocator's tuning parameters; this one takes
            // any size, and glibc applies it under its own lock.
            unsafe { mallopt(M_MMAP_THRESHOLD, 128 * 1024) };
        });
    }
}

/// Fetches objects in order, up to two ahead of the one being restored.
fn prefetch(store: Arc<dyn ObjectStore>, objects: Vec<Listed>) -> mpsc::Receiver<(Listed, Result<Option<Bytes>, StorageError>)> {
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        for o in objects {
            let body = store.get(&o.object.key).await;
            if tx.send((o, body)).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The object's bytes if they are what its manifest says.
fn checked(o: &Listed, body: Option<Bytes>) -> Result<Bytes, Damage> {
    catalog::check(&o.object, body.as_deref()).map_err(|(_, problem)| Damage { key: o.object.key.clone(), problem })?;
    Ok(body.expect("checked present"))
}

struct ObjectLoad<'a> {
    listed: &'a Listed,
    body: Bytes,
    sql: &'a str,
    quiet_triggers: bool,
    /// This run's count of restored objects, this one included (for crash injection).
    seq: i32,
}

/// One object in one transaction: COPY into the staging table, one insert, the restore-log
/// record. Returns (rows read, rows written), or the damage that stopped it (rolled back).
async fn restore_object(conn: &mut PgConnection, req: &Request, target: &str, load: ObjectLoad<'_>) -> Result<Result<(u64, u64), Damage>, RestoreError> {
    let o = &load.listed.object;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    if load.quiet_triggers {
        sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await?;
    }
    let staged = match stage(&mut tx, load.listed.compression, &load.body).await? {
        Ok(n) => n,
        Err(problem) => return Ok(Err(Damage { key: o.key.clone(), problem })),
    };
    if staged as i64 != o.rows {
        return Ok(Err(Damage { key: o.key.clone(), problem: format!("{staged} rows, its manifest says {}", o.rows) }));
    }
    let written = sqlx::query(load.sql)
        .bind(req.range.from)
        .bind(req.range.to)
        .bind(&o.superseded)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, &o.key, target, req.on_conflict))?
        .rows_affected();
    sqlx::query(&format!(
        "INSERT INTO {}.restored (target, object_key, range_from, range_to, sha256, rows_read, rows_written, restored_by)
         VALUES ($1, $2, coalesce($3, '-infinity'), coalesce($4, 'infinity'), $5, $6, $7, $8)",
        req.log_schema
    ))
    .bind(target)
    .bind(&o.key)
    .bind(req.range.from)
    .bind(req.range.to)
    .bind(&o.sha256)
    .bind(staged as i64)
    .bind(written as i64)
    .bind(&req.by)
    .execute(&mut *tx)
    .await?;
    #[cfg(feature = "fault-injection")]
    crate::pipeline::faults::crash_from_env("restore", load.seq);
    let _ = load.seq;
    tx.commit().await?;
    Ok(Ok((staged, written)))
}

/// A unique violation under `fail` on the table's key is a conflict to name; anything else (a
/// violation of another unique index, under any strategy) is a database error as it came.
fn conflict(e: sqlx::Error, key: &str, target: &str, on_conflict: OnConflict) -> RestoreError {
    if let sqlx::Error::Database(d) = &e {
        if d.code().as_deref() == Some("23505") && on_conflict == OnConflict::Fail {
            let pg = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
            let detail = pg.and_then(|p| p.detail()).unwrap_or(d.message());
            let constraint = pg.and_then(|p| p.constraint()).map(|c| format!(", constraint {c}")).unwrap_or_default();
            return RestoreError::Conflict { key: key.to_string(), target: target.to_string(), detail: format!("{detail}{constraint}") };
        }
    }
    RestoreError::Database(e)
}

/// Decompresses `body` into the staging table through COPY, a piece at a time. Returns the rows
/// staged, or what is wrong with the body.
async fn stage(conn: &mut PgConnection, compression: Compression, body: &Bytes) -> Result<Result<u64, String>, sqlx::Error> {
    let mut reader: Box<dyn Read + Send + '_> = match compression {
        Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(&body[..]) {
            Ok(d) => Box::new(d),
            Err(e) => return Ok(Err(format!("not zstd: {e}"))),
        },
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&body[..])),
    };
    let mut copy = conn.copy_in_raw(load::COPY_STAGE).await?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                copy.abort("damaged object").await?;
                return Ok(Err(format!("cannot decompress: {e}")));
            }
        };
        copy.send(&buf[..n]).await?;
    }
    Ok(Ok(copy.finish().await?))
}
