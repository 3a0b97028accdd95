//! The checkpoint store's tables in PostgreSQL.
//!
//! `work_items` has one row per planned item; `batches` one row per uploaded object, recorded
//! before any of its rows is deleted. The primary keys and row versions (`xmin`) of a batch are
//! kept until its delete commits, so an interrupted batch is finished from this record, never by
//! selecting again.

/// The version of the tables below. `schema_version` records the version a store is at; a
/// binary refuses a store newer than it knows, and brings an older one up to date (the steps
/// from one version to the next go in [`UPGRADES`]).
pub const VERSION: i32 = 2;

/// The table that records the store's version: one row per version applied.
pub fn version_table(schema: &str) -> Vec<String> {
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.schema_version (
                version    integer     PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )"
        ),
    ]
}

/// The steps that bring a store from one version to the next: `UPGRADES[v - 1]` takes a store at
/// version `v` to `v + 1`, given the schema name. Version 1 is the first, so there is none yet;
/// [`VERSION`] is always `UPGRADES.len() + 1`. Every step is idempotent (`IF NOT EXISTS`): a store
/// made before versions were recorded gets all of them.
pub const UPGRADES: &[fn(&str) -> Vec<String>] = &[to_version_2];

/// Version 2: which rows of a batch were superseded (changed on the source after they were read,
/// so a later version exists), and legal holds.
fn to_version_2(schema: &str) -> Vec<String> {
    vec![format!("ALTER TABLE {schema}.batches ADD COLUMN IF NOT EXISTS superseded text"), holds_table(schema)]
}

/// Legal holds: a held range of a table is never archived or deleted. Released holds stay, with
/// who released them and when.
fn holds_table(schema: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {schema}.holds (
            id           bigserial   PRIMARY KEY,
            database     text        NOT NULL,
            schema_name  text        NOT NULL,
            table_name   text        NOT NULL,
            range_start  timestamptz NOT NULL,
            range_end    timestamptz NOT NULL,
            reason       text        NOT NULL CHECK (reason <> ''),
            created_by   text        NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            released_by  text,
            released_at  timestamptz,
            CHECK (range_start < range_end)
        )"
    )
}

/// Statements that create the checkpoint tables in `schema` (a plain identifier) if missing, at
/// [`VERSION`]. Safe to run concurrently when wrapped in the caller's advisory lock.
pub fn create_statements(schema: &str) -> Vec<String> {
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.work_items (
                id             bigserial PRIMARY KEY,
                database       text        NOT NULL,
                schema_name    text        NOT NULL,
                table_name     text        NOT NULL,
                range_start    timestamptz NOT NULL,
                range_end      timestamptz NOT NULL,
                generation     integer     NOT NULL DEFAULT 0,
                state          text        NOT NULL DEFAULT 'pending'
                               CHECK (state IN ('pending', 'running', 'done', 'failed')),
                lease_owner    text,
                lease_until    timestamptz,
                attempts       integer     NOT NULL DEFAULT 0,
                last_error     text,
                rows_archived  bigint      NOT NULL DEFAULT 0,
                bytes_archived bigint      NOT NULL DEFAULT 0,
                objects        integer     NOT NULL DEFAULT 0,
                rows_short     bigint      NOT NULL DEFAULT 0,
                manifest_key   text,
                published_at   timestamptz,
                created_at     timestamptz NOT NULL DEFAULT now(),
                updated_at     timestamptz NOT NULL DEFAULT now(),
                finished_at    timestamptz,
                CHECK (range_start < range_end),
                UNIQUE (database, schema_name, table_name, range_start, range_end, generation)
            )"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS work_items_open ON {schema}.work_items (database, schema_name, table_name)
             WHERE state <> 'done'"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {schema}.batches (
                item_id       bigint      NOT NULL REFERENCES {schema}.work_items (id),
                seq           integer     NOT NULL,
                object_key    text        NOT NULL,
                row_count     bigint      NOT NULL,
                byte_size     bigint      NOT NULL,
                sha256        text        NOT NULL,
                store_checksum text       NOT NULL,
                first_ts      text        NOT NULL,
                first_pk      text        NOT NULL,
                last_ts       text        NOT NULL,
                last_pk       text        NOT NULL,
                day           date        NOT NULL,
                window_end    timestamptz NOT NULL,
                pks           text        NOT NULL,  -- JSON array of the primary keys, as text
                xmins         text        NOT NULL,  -- JSON array of their xmin, same order
                state         text        NOT NULL CHECK (state IN ('uploaded', 'deleted')),
                deleted_count bigint,
                superseded    text,      -- JSON array of the keys whose row changed after it was read
                created_at    timestamptz NOT NULL DEFAULT now(),
                deleted_at    timestamptz,
                PRIMARY KEY (item_id, seq)
            )"
        ),
        holds_table(schema),
        // Item ids name objects (`…-i{id}-a{attempt}-b{seq}`). A new store starts its ids at a
        // random multiple of 2^20 (up to 2^44), never below an id it already has, so two stores
        // that archive under one storage prefix (a changed `checkpoint.schema` or `url`, a
        // dropped and re-created store, the demo run twice) do not name their objects alike:
        // the same names would overwrite the other's objects, and its stray clean-up delete them.
        format!(
            "SELECT setval(pg_get_serial_sequence('{schema}.work_items', 'id'),
                           greatest((1 + floor(random() * 16777216))::bigint * 1048576,
                                    (SELECT coalesce(max(id), 0) + 1 FROM {schema}.work_items)),
                           false)"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_after_the_first_has_its_upgrade_step() {
        assert_eq!(VERSION as usize, UPGRADES.len() + 1);
    }
}
