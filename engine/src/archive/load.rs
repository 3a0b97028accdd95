//! The SQL of a restore: a staging table fed by COPY, and one set-based insert per object.
//!
//! Input: an object's JSON Lines (each line a row as `row_to_json` rendered it, on one line) and its manifest's
//! columns and types. Output: the rows inserted into the target, in the same transaction as the
//! restore log's record of the object. Invariants: the lines are parsed by PostgreSQL with the
//! archived types (`json_to_record`), never by us; generated columns are left out (recomputed),
//! identity columns keep their archived values (`OVERRIDING SYSTEM VALUE`); rows outside the range
//! and superseded rows are not inserted.

use archiver_proto::manifest::Column;

use crate::source::db::{qualified, quote_ident};

/// The session's staging table: one text column, emptied at every commit.
pub const STAGE: &str = "pg_temp.archiver_restore_stage";

pub const CREATE_STAGE: &str =
    "CREATE TEMP TABLE IF NOT EXISTS archiver_restore_stage (line text NOT NULL) ON COMMIT DELETE ROWS";

/// COPY of JSON Lines as they are: CSV with quote and delimiter bytes that JSON text never holds
/// raw (it escapes every control character), so no byte of a line is interpreted.
pub const COPY_STAGE: &str =
    "COPY pg_temp.archiver_restore_stage (line) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')";

/// What to do with a row whose key is already in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnConflict {
    /// Keep the row in the table; the archived one is not written.
    #[default]
    Skip,
    /// Replace the row in the table with the archived one.
    Overwrite,
    /// Stop: nothing of the object is written.
    Fail,
}

impl std::str::FromStr for OnConflict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(OnConflict::Skip),
            "overwrite" => Ok(OnConflict::Overwrite),
            "fail" => Ok(OnConflict::Fail),
            _ => Err(format!("{s:?} is not a conflict strategy: use skip, overwrite or fail")),
        }
    }
}

/// The target's columns as the insert needs them.
#[derive(Debug, Clone)]
pub struct TargetColumn {
    pub name: String,
    /// Its type as `format_type` prints it.
    pub type_name: String,
    /// A generated column: PostgreSQL computes it; never inserted.
    pub generated: bool,
}

/// The insert of one staged object into `target`: `$1`/`$2` bound the rows' timestamps (NULL:
/// open), `$3` the superseded keys (text[]). Errors name a column the target lacks. Values are
/// typed by the target's own column types (read from the catalog, never from the archive, so a
/// manifest cannot put SQL into the statement); a type the archive recorded differently is logged.
pub fn insert_sql(
    target: (&str, &str),
    columns: &[Column],
    target_columns: &[TargetColumn],
    ts: &str,
    pk: &str,
    on_conflict: OnConflict,
) -> Result<String, String> {
    let mut names = Vec::new();
    let mut record = Vec::new();
    for c in columns {
        let Some(t) = target_columns.iter().find(|t| t.name == c.name) else {
            return Err(format!("{} has no column {:?}, which the archive holds", qualified(target.0, target.1), c.name));
        };
        if t.generated {
            continue;
        }
        if t.type_name != c.type_name {
            tracing::warn!(column = %c.name, archived = %c.type_name, now = %t.type_name, "the column's type changed since it was archived; restoring as its type now");
        }
        names.push(quote_ident(&c.name));
        record.push(format!("{} {}", quote_ident(&c.name), t.type_name));
    }
    for key in [ts, pk] {
        if !columns.iter().any(|c| c.name == key) {
            return Err(format!("the archive's columns do not include {key:?}"));
        }
    }
    let (ts, pk) = (quote_ident(ts), quote_ident(pk));
    let list = names.join(", ");
    let selected = names.iter().map(|n| format!("r.{n}")).collect::<Vec<_>>().join(", ");
    let conflict = match on_conflict {
        OnConflict::Skip => format!(" ON CONFLICT ({pk}) DO NOTHING"),
        OnConflict::Overwrite => {
            let set = names.iter().filter(|n| **n != pk).map(|n| format!("{n} = EXCLUDED.{n}")).collect::<Vec<_>>();
            if set.is_empty() {
                format!(" ON CONFLICT ({pk}) DO NOTHING")
            } else {
                format!(" ON CONFLICT ({pk}) DO UPDATE SET {}", set.join(", "))
            }
        }
        OnConflict::Fail => String::new(),
    };
    Ok(format!(
        "INSERT INTO {} ({list}) OVERRIDING SYSTEM VALUE
         SELECT {selected} FROM {STAGE} AS s, json_to_record(s.line::json) AS r({})
         WHERE ($1::timestamptz IS NULL OR r.{ts} >= $1) AND ($2::timestamptz IS NULL OR r.{ts} < $2)
           AND NOT (r.{pk}::text = ANY($3::text[])){conflict}",
        qualified(target.0, target.1),
        record.join(", ")
    ))
}

/// The restore log: one row per object restored into a target for a range, written in the
/// object's own transaction, so a rerun or a resumed run skips exactly what is done.
pub fn log_statements(schema: &str) -> Vec<String> {
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.restored (
                target      text        NOT NULL,
                object_key  text        NOT NULL,
                range_from  timestamptz NOT NULL,
                range_to    timestamptz NOT NULL,
                sha256      text        NOT NULL,
                rows_read   bigint      NOT NULL,
                rows_written bigint     NOT NULL,
                restored_by text        NOT NULL,
                restored_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (target, object_key, range_from, range_to)
            )"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str) -> Column {
        Column { name: name.into(), type_name: t.into() }
    }

    fn tcol(name: &str, generated: bool) -> TargetColumn {
        let type_name = match name {
            "Id" => "uuid",
            "at" => "timestamp with time zone",
            _ => "numeric",
        };
        TargetColumn { name: name.into(), generated, type_name: type_name.into() }
    }

    #[test]
    fn the_insert_types_rows_by_the_target_and_leaves_generated_columns_out() {
        let cols = [col("Id", "uuid"), col("at", "timestamp with time zone"), col("total", "numeric"), col("twice", "numeric")];
        let target = [tcol("Id", false), tcol("at", false), tcol("total", false), tcol("twice", true)];
        let sql = insert_sql(("a", "T"), &cols, &target, "at", "Id", OnConflict::Overwrite).unwrap();
        assert!(sql.contains(r#"INSERT INTO "a"."T" ("Id", "at", "total") OVERRIDING SYSTEM VALUE"#), "{sql}");
        assert!(sql.contains(r#"AS r("Id" uuid, "at" timestamp with time zone, "total" numeric)"#), "{sql}");
        assert!(sql.contains(r#"r."at" >= $1"#) && sql.contains(r#"NOT (r."Id"::text = ANY($3::text[]))"#), "range and superseded: {sql}");
        assert!(sql.contains(r#"ON CONFLICT ("Id") DO UPDATE SET "at" = EXCLUDED."at", "total" = EXCLUDED."total""#), "{sql}");
        let skip = insert_sql(("a", "T"), &cols, &target, "at", "Id", OnConflict::Skip).unwrap();
        assert!(skip.ends_with(r#"ON CONFLICT ("Id") DO NOTHING"#), "{skip}");
        let fail = insert_sql(("a", "T"), &cols, &target, "at", "Id", OnConflict::Fail).unwrap();
        assert!(!fail.contains("ON CONFLICT"), "{fail}");
        // The target's types, not the archive's: a manifest cannot put SQL into the statement.
        let hostile = [col("Id", "uuid) ; DROP TABLE x; --"), col("at", "timestamp with time zone"), col("total", "numeric")];
        let sql = insert_sql(("a", "T"), &hostile, &target, "at", "Id", OnConflict::Skip).unwrap();
        assert!(!sql.contains("DROP TABLE"), "{sql}");
    }

    #[test]
    fn a_column_the_target_lacks_is_named() {
        let e = insert_sql(("a", "t"), &[col("id", "int"), col("gone", "text")], &[tcol("id", false)], "id", "id", OnConflict::Skip)
            .unwrap_err();
        assert!(e.contains("\"a\".\"t\" has no column \"gone\""), "{e}");
        assert_eq!("merge".parse::<OnConflict>().unwrap_err(), "\"merge\" is not a conflict strategy: use skip, overwrite or fail");
    }
}
