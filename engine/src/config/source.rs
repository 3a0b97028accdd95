//! The source databases and their tables (`databases[].tables[]`), and [`TableSettings`]: a
//! table's settings once its own values and the `defaults` are merged.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use archiver_proto::{Compression, Partition};
use serde::Deserialize;

use super::redact::redact_url;
use super::validate::Problems;
use super::{Config, GovernorConfig, ReadReplicaConfig, VacuumType};

/// One source database.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The database's name on the server; also its name in object keys and the checkpoint store.
    pub name: String,
    /// A full PostgreSQL URL, instead of host/port/user/password.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    /// Name of an environment variable that holds the password (read when connecting).
    #[serde(default)]
    pub password_env: Option<String>,
    /// The password itself; prefer `password_env`.
    #[serde(default)]
    pub password: Option<String>,
    /// Connections in this database's pool; overrides `defaults.connection_pool_size`.
    #[serde(default)]
    pub connection_pool_size: Option<u32>,
    /// A streaming replica to read batches from (deletes, leases and checkpoints stay on this,
    /// the primary).
    #[serde(default)]
    pub read_replica: Option<ReadReplicaConfig>,
    /// This database's load governor, over `defaults.governor`.
    #[serde(default)]
    pub governor: GovernorConfig,
    pub tables: Vec<TableConfig>,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("name", &self.name)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password_env", &self.password_env)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("read_replica", &self.read_replica)
            .field("governor", &self.governor)
            .field("tables", &self.tables)
            .finish()
    }
}

/// One table to archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    /// Default `public`. `schema_name` also works.
    #[serde(default = "default_schema", alias = "schema_name")]
    pub schema: String,
    /// Column whose age decides when a row is archived (timestamp, timestamptz or date). Rows
    /// where it is NULL are never archived.
    pub timestamp_column: String,
    /// The column that uniquely identifies a row; deletes name its values.
    pub primary_key: String,
    #[serde(default)]
    pub retention_days: Option<u32>,
    #[serde(default)]
    pub batch_size: Option<u32>,
    #[serde(default)]
    pub vacuum_after_archive: Option<bool>,
    #[serde(default)]
    pub vacuum_type: Option<VacuumType>,
    /// `day`, `month` or `year`: how finely this table's objects are partitioned by date.
    /// Default: `defaults.partition`.
    #[serde(default)]
    pub partition: Option<Partition>,
}

fn default_schema() -> String {
    "public".into()
}

/// A table's settings after its own values and the defaults were merged.
#[derive(Debug, Clone)]
pub struct TableSettings {
    pub database: String,
    pub schema: String,
    pub table: String,
    pub timestamp_column: String,
    pub primary_key: String,
    pub retention_days: u32,
    pub batch_size: u32,
    pub range_interval: Duration,
    pub sleep_between_batches: Duration,
    pub max_rows_per_second: Option<u32>,
    pub compression: Compression,
    pub compression_level: i32,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    pub vacuum: VacuumType,
    pub partition: Partition,
}

impl Config {
    /// Every configured table with its effective settings.
    pub fn tables(&self) -> Vec<TableSettings> {
        let d = &self.defaults;
        let vacuum_on = d.vacuum_after_archive || d.vacuum_after.unwrap_or(false);
        let vacuum_default = d.vacuum_type.or(d.vacuum_strategy).unwrap_or(VacuumType::Analyze);
        let mut out = Vec::new();
        for db in &self.databases {
            for t in &db.tables {
                let on = t.vacuum_after_archive.unwrap_or(vacuum_on);
                out.push(TableSettings {
                    database: db.name.clone(),
                    schema: t.schema.clone(),
                    table: t.name.clone(),
                    timestamp_column: t.timestamp_column.clone(),
                    primary_key: t.primary_key.clone(),
                    retention_days: t.retention_days.unwrap_or(d.retention_days),
                    batch_size: t.batch_size.unwrap_or(d.batch_size),
                    range_interval: d.range_interval.0,
                    sleep_between_batches: d.sleep_between_batches.0,
                    max_rows_per_second: d.max_rows_per_second,
                    compression: d.compression,
                    compression_level: d.compression_level.unwrap_or(match d.compression {
                        Compression::Zstd => 3,
                        Compression::Gzip => 6,
                    }),
                    lock_timeout: d.lock_timeout.0,
                    statement_timeout: d.statement_timeout.0,
                    vacuum: if on { t.vacuum_type.unwrap_or(vacuum_default) } else { VacuumType::None },
                    partition: t.partition.unwrap_or(d.partition),
                });
            }
        }
        out
    }
}

/// Records what is wrong with the `databases` list found at `path`: at least one database, each
/// named once, and each database valid.
pub(super) fn validate_databases(databases: &[DatabaseConfig], path: &str, problems: &mut Problems) {
    if databases.is_empty() {
        problems.add(path, "at least one database is required");
    }
    let mut names = BTreeSet::new();
    for (i, db) in databases.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if db.name.trim().is_empty() {
            problems.add(format!("{p}.name"), "must not be empty");
        } else if !names.insert(&db.name) {
            problems.add(format!("{p}.name"), format!("database {:?} is listed twice", db.name));
        }
        db.validate(&p, problems);
    }
}

/// A URL the PostgreSQL driver reads as one: anything else (`postgres//u:p@h`, `u:p@h/db`) it
/// would take for a socket path and a database named after the password.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl DatabaseConfig {
    /// Records what is wrong with this database (but its name) and its tables, found at `path`.
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.url.is_some() && (self.host.is_some() || self.user.is_some() || self.port.is_some()) {
            problems.add(format!("{path}.url"), "set either `url` or host/port/user, not both");
        }
        if self.url.is_none() && self.host.is_none() {
            problems.add(format!("{path}.host"), "either `url` or `host` is required");
        }
        for (key, url) in [("url", self.url.as_deref()), ("read_replica.url", self.read_replica.as_ref().and_then(|r| r.url.as_deref()))] {
            if url.is_some_and(|u| !is_postgres_url(u)) {
                problems.add(format!("{path}.{key}"), "must be a postgres:// or postgresql:// URL");
            }
        }
        if self.password.is_some() && self.password_env.is_some() {
            problems.add(format!("{path}.password"), "set either `password` or `password_env`, not both");
        }
        if self.connection_pool_size == Some(0) {
            problems.add(format!("{path}.connection_pool_size"), "must be at least 1");
        }
        if let Some(r) = &self.read_replica {
            if r.url.is_some() && (r.host.is_some() || r.user.is_some() || r.port.is_some()) {
                problems.add(format!("{path}.read_replica.url"), "set either `url` or host/port/user, not both");
            }
            if r.url.is_none() && r.host.is_none() && r.port.is_none() {
                problems.add(format!("{path}.read_replica"), "needs `url`, or `host` and/or `port`");
            }
        }
        self.governor.validate(&format!("{path}.governor"), problems);
        if self.tables.is_empty() {
            problems.add(format!("{path}.tables"), "at least one table is required");
        }
        let mut tables = BTreeSet::new();
        for (j, t) in self.tables.iter().enumerate() {
            let tp = format!("{path}.tables[{j}]");
            if t.validate_names(&tp, problems) && !tables.insert((&t.schema, &t.name)) {
                problems.add(format!("{tp}.name"), format!("table {}.{} is listed twice", t.schema, t.name));
            }
            t.validate_limits(&tp, problems);
        }
    }
}

impl TableConfig {
    /// Records empty or NUL-carrying names at `path`; true when all names are usable.
    fn validate_names(&self, path: &str, problems: &mut Problems) -> bool {
        let mut ok = true;
        for (key, val) in
            [("name", &self.name), ("schema", &self.schema), ("timestamp_column", &self.timestamp_column), ("primary_key", &self.primary_key)]
        {
            if val.is_empty() {
                problems.add(format!("{path}.{key}"), "must not be empty");
                ok = false;
            } else if val.contains('\0') {
                problems.add(format!("{path}.{key}"), "must not contain a NUL character");
                ok = false;
            }
        }
        ok
    }

    /// Records out-of-range numbers at `path`.
    fn validate_limits(&self, path: &str, problems: &mut Problems) {
        if self.batch_size == Some(0) {
            problems.add(format!("{path}.batch_size"), "must be at least 1");
        }
        if let Some(problem) = self.retention_days.and_then(super::defaults::retention_problem) {
            problems.add(format!("{path}.retention_days"), problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::config::tests::{env_none, MINIMAL};
    use crate::config::VacuumType;

    #[test]
    fn table_errors_name_the_key() {
        let text = MINIMAL.replace("primary_key: id", "primary_key: id\n        batch_size: 0");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "databases[0].tables[0].batch_size");
        let text = MINIMAL.replace("primary_key: id", "primary_key: \"\"");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "databases[0].tables[0].primary_key");
        let twice = "      - name: audit\n        timestamp_column: t\n        primary_key: id\n";
        let err = parse("c", &format!("{MINIMAL}{twice}"), &env_none).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("databases[0].tables[1].name", "table public.audit is listed twice"));
    }

    #[test]
    fn database_errors_name_the_key() {
        let err = parse("c", "databases: []\n", &env_none).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("databases", "at least one database is required"));
        let second = MINIMAL.replace("databases:\n", "");
        let err = parse("c", &format!("{MINIMAL}{second}"), &env_none).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("databases[1].name", "database \"app\" is listed twice"));
        let text = MINIMAL.replace("host: localhost", "url: postgres://h/db");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "databases[0].url");
        for mistyped in ["postgres//app:S3cretPW@h:5432/x", "app:S3cretPW@h:5432/x"] {
            let text = MINIMAL.replace("    host: localhost\n    user: u\n", &format!("    url: \"{mistyped}\"\n"));
            let err = parse("c", &text, &env_none).unwrap_err();
            assert_eq!(err.path, "databases[0].url", "{err}");
            assert!(err.to_string().contains("postgres://") && !err.to_string().contains("S3cretPW"), "{err}");
        }
        let text = MINIMAL.replace("    host: localhost\n    user: u\n", "");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "databases[0].host");
    }

    #[test]
    fn tables_merge_their_own_values_with_the_defaults() {
        let text = format!("defaults:\n  vacuum_after_archive: true\n  compression: gzip\n{MINIMAL}")
            .replace("primary_key: id", "primary_key: id\n        retention_days: 7\n        vacuum_type: full");
        let t = &parse("c", &text, &env_none).unwrap().config.tables()[0];
        assert_eq!((t.retention_days, t.batch_size, t.compression_level, t.vacuum), (7, 10_000, 6, VacuumType::Full));
        let t = &parse("c", MINIMAL, &env_none).unwrap().config.tables()[0];
        assert_eq!((t.schema.as_str(), t.compression_level, t.vacuum), ("public", 3, VacuumType::None));
    }
}
