//! What the archiver needs to know about a table, checked before any work.
//!
//! Input: a configured table. Output: [`TableInfo`] with its columns and the SQL types of the
//! timestamp and primary-key columns. Invariant: a table is accepted only if it exists, both
//! columns exist, the timestamp column is a date or timestamp, and the primary-key column is
//! NOT NULL and alone carries a unique index, so that deleting by its values deletes exactly the
//! rows named.

use archiver_proto::manifest::Column;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::config::TableSettings;

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub settings: TableSettings,
    pub columns: Vec<Column>,
    /// `format_type` of the timestamp column.
    pub ts_type: String,
    /// `format_type` of the primary-key column.
    pub pk_type: String,
    /// Each column's type (`pg_attribute.atttypid`), in the order of `columns`.
    pub type_oids: Vec<u32>,
    /// The table's `pg_class` oid.
    pub oid: u32,
}

/// Why a table cannot be archived.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{table}: {problem}")]
    Invalid { table: String, problem: String },
    #[error("{table}: cannot inspect the table: {source}")]
    Database { table: String, source: sqlx::Error },
}

impl TableInfo {
    pub async fn inspect(pool: &PgPool, settings: &TableSettings) -> Result<Self, TableError> {
        let label = archiver_proto::table_label(&settings.database, &settings.schema, &settings.table);
        let invalid = |problem: String| TableError::Invalid { table: label.clone(), problem };
        let db_err = |source| TableError::Database { table: label.clone(), source };

        let rel: Option<(sqlx::postgres::types::Oid, i8, i8)> = sqlx::query_as(
            "SELECT c.oid, c.relkind, c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2",
        )
        .bind(&settings.schema)
        .bind(&settings.table)
        .fetch_optional(pool)
        .await
        .map_err(db_err)?;
        let Some((oid, kind, persistence)) = rel else {
            return Err(invalid("table does not exist".into()));
        };
        if let Some(problem) = refusal(&settings.schema, kind as u8 as char, persistence as u8 as char) {
            return Err(invalid(problem));
        }
        if kind as u8 == b'r' {
            if let Some(problem) = inheritance_children(pool, oid).await.map_err(db_err)? {
                return Err(invalid(problem));
            }
        }
        let cols: Vec<(String, String, i16, bool, sqlx::postgres::types::Oid)> = sqlx::query_as(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnum, attnotnull, atttypid FROM pg_attribute
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        )
        .bind(oid)
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
        let find = |name: &str| cols.iter().find(|c| c.0 == name);
        let Some(ts) = find(&settings.timestamp_column) else {
            return Err(invalid(format!("timestamp_column {:?} does not exist", settings.timestamp_column)));
        };
        if !matches!(ts.1.as_str(), "timestamp with time zone" | "timestamp without time zone" | "date")
            && !ts.1.starts_with("timestamp(")
        {
            return Err(invalid(format!(
                "timestamp_column {:?} has type {}; expected timestamp, timestamptz or date",
                settings.timestamp_column, ts.1
            )));
        }
        let Some(pk) = find(&settings.primary_key) else {
            return Err(invalid(format!("primary_key {:?} does not exist", settings.primary_key)));
        };
        let (unique,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1 AND indisunique AND indisvalid
                AND indnkeyatts = 1 AND indkey[0] = $2 AND indpred IS NULL AND indexprs IS NULL)",
        )
        .bind(oid)
        .bind(pk.2)
        .fetch_one(pool)
        .await
        .map_err(db_err)?;
        if !unique {
            return Err(invalid(format!(
                "primary_key {:?} has no unique index of its own; the archiver deletes by this column's \
                 values and refuses a column that does not identify exactly one row",
                settings.primary_key
            )));
        }
        if !pk.3 {
            return Err(invalid(format!(
                "primary_key {:?} allows NULL; a row without a key could be archived but never deleted",
                settings.primary_key
            )));
        }
        Ok(TableInfo {
            settings: settings.clone(),
            ts_type: ts.1.clone(),
            pk_type: pk.1.clone(),
            columns: cols.iter().map(|c| Column { name: c.0.clone(), type_name: c.1.clone() }).collect(),
            type_oids: cols.iter().map(|c| c.4 .0).collect(),
            oid: oid.0,
        })
    }

    pub fn label(&self) -> String {
        archiver_proto::table_label(&self.settings.database, &self.settings.schema, &self.settings.table)
    }
}

/// Why an ordinary table with inheritance children cannot be archived, if it has any: a read of
/// it reads their rows too, without the columns they add, and a delete from it deletes theirs.
/// (A partitioned table's partitions have exactly its columns.)
async fn inheritance_children(pool: &PgPool, oid: sqlx::postgres::types::Oid) -> Result<Option<String>, sqlx::Error> {
    let (children,): (Vec<String>,) = sqlx::query_as(
        "SELECT coalesce(array_agg(inhrelid::regclass::text ORDER BY inhrelid), '{}') FROM pg_inherits WHERE inhparent = $1",
    )
    .bind(oid)
    .fetch_one(pool)
    .await?;
    Ok((!children.is_empty()).then(|| {
        format!(
            "has inheritance children ({}): reading it reads their rows too, without the columns they add, \
             and deleting from it deletes theirs; list each child as a table of its own",
            children.join(", ")
        )
    }))
}

/// Why a relation must never be archived, if it must not: only ordinary and partitioned user
/// tables qualify. System catalogs hold the database's own state (roles, password hashes), views
/// and foreign tables hold no rows of their own, and a temporary table belongs to one session.
pub fn refusal(schema: &str, relkind: char, persistence: char) -> Option<String> {
    let system = matches!(schema, "pg_catalog" | "information_schema" | "pg_toast")
        || schema.starts_with("pg_temp_")
        || schema.starts_with("pg_toast_temp_");
    if system {
        return Some(format!("schema {schema:?} belongs to PostgreSQL itself; system catalogs are never archived"));
    }
    if persistence == 't' {
        return Some("is a temporary table; only permanent tables are archived".into());
    }
    let what = match relkind {
        'r' | 'p' => return None,
        'v' => "a view",
        'm' => "a materialized view",
        'f' => "a foreign table",
        'S' => "a sequence",
        'i' | 'I' => "an index",
        'c' => "a composite type",
        't' => "a TOAST table",
        _ => "not a table",
    };
    Some(format!("is {what}; only ordinary and partitioned tables are archived"))
}

/// The retention cutoff by the database's clock, in whole seconds: rows older than this are
/// eligible. Whole seconds, so ranges and object names print the same and runs started within
/// the same second cut the same last range.
pub async fn cutoff(pool: &PgPool, retention_days: u32) -> Result<DateTime<Utc>, sqlx::Error> {
    let (c,): (DateTime<Utc>,) = sqlx::query_as("SELECT date_trunc('second', now() - make_interval(days => $1))")
        .bind(retention_days as i32)
        .fetch_one(pool)
        .await?;
    Ok(c)
}

#[cfg(test)]
mod refusal_tests {
    use super::refusal;

    #[test]
    fn only_permanent_user_tables_qualify() {
        assert_eq!(refusal("public", 'r', 'p'), None);
        assert_eq!(refusal("audit", 'p', 'p'), None);
        assert!(refusal("pg_catalog", 'r', 'p').unwrap().contains("system catalogs"));
        assert!(refusal("information_schema", 'r', 'p').is_some());
        assert!(refusal("pg_toast", 't', 'p').is_some());
        assert!(refusal("pg_temp_3", 'r', 't').is_some());
        assert!(refusal("public", 'r', 't').unwrap().contains("temporary"));
        assert!(refusal("public", 'v', 'p').unwrap().contains("a view"));
        assert!(refusal("public", 'm', 'p').unwrap().contains("materialized view"));
        assert!(refusal("public", 'f', 'p').unwrap().contains("foreign table"));
    }
}
