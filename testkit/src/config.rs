//! Config builders: the archiver's YAML configuration file, for the integration tests and the
//! load tests, written in one place.
//!
//! ```ignore
//! let yaml = ConfigBuilder::new()
//!     .storage(Storage::s3(&s3, "archives/"))
//!     .queue(Queue::new(amqp, "archiver.test").set("retry_delay", "1s"))
//!     .set_default("retention_days", 90)
//!     .defaults("batch_size: 500\nrange_interval: 30d")
//!     .checkpoint("lease_duration", "3s")
//!     .database(&db)
//!     .table(Table::audit("audit_log"))
//!     .yaml();
//! ```
//!
//! Names, hosts, URLs, keys and paths are quoted as YAML needs; settings (`defaults`,
//! `checkpoint`, a queue's or a table's own) are written as given, so `30d` or `true` stay what
//! they are. Setting a key again replaces its value in place.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use crate::{pg_host, pg_port, pg_user, S3Server, TestDb};

/// `key: value` settings in the order they were first set; values are raw YAML.
#[derive(Debug, Clone, Default)]
struct Settings(Vec<(String, String)>);

impl Settings {
    fn set(&mut self, key: &str, value: impl Display) {
        let value = value.to_string();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
    }

    /// `key: value` lines; blank lines are skipped, indentation is ignored.
    fn set_lines(&mut self, lines: &str) {
        for line in lines.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once(':').unwrap_or_else(|| panic!("not a `key: value` line: {line:?}"));
            self.set(key.trim(), value.trim());
        }
    }

    fn render(&self, out: &mut String, indent: &str) {
        for (k, v) in &self.0 {
            out.push_str(&format!("{indent}{k}: {v}\n"));
        }
    }
}

/// `s` as a YAML string scalar: plain where that reads back as the same string, else single-quoted.
pub fn scalar(s: &str) -> String {
    let safe_char = |c: char| c.is_ascii_alphanumeric() || "_./:@%+-".contains(c);
    let safe_start = s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '/' || c == '_');
    let retyped = s.parse::<f64>().is_ok()
        || ["true", "false", "null", "yes", "no", "on", "off", "y", "n"].contains(&s.to_ascii_lowercase().as_str());
    if safe_start && s.chars().all(safe_char) && !retyped {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The `s3:` section's settings.
#[derive(Debug, Clone)]
pub struct S3Storage {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Storage {
    /// The bucket of `server`, objects under `prefix`.
    pub fn of(server: &S3Server, prefix: &str) -> S3Storage {
        S3Storage {
            endpoint: server.endpoint.clone(),
            bucket: server.bucket.clone(),
            prefix: prefix.to_string(),
            region: "us-east-1".into(),
            access_key_id: server.access_key.clone(),
            secret_access_key: server.secret_key.clone(),
        }
    }

    /// The `s3:` section with `prefix` given as YAML already.
    pub(crate) fn section(&self, prefix_yaml: &str) -> String {
        format!(
            "s3:\n  endpoint: {}\n  bucket: {}\n  prefix: {prefix_yaml}\n  region: {}\n  access_key_id: {}\n  secret_access_key: {}\n",
            scalar(&self.endpoint),
            scalar(&self.bucket),
            scalar(&self.region),
            scalar(&self.access_key_id),
            scalar(&self.secret_access_key)
        )
    }
}

/// Where archived objects go: an `s3:` section or `storage: {type: local}`.
#[derive(Debug, Clone)]
pub enum Storage {
    S3(S3Storage),
    Local(PathBuf),
}

impl Storage {
    pub fn s3(server: &S3Server, prefix: &str) -> Storage {
        Storage::S3(S3Storage::of(server, prefix))
    }

    pub fn local(path: impl AsRef<Path>) -> Storage {
        Storage::Local(path.as_ref().to_path_buf())
    }

    fn render(&self, out: &mut String) {
        match self {
            Storage::S3(s3) => out.push_str(&s3.section(&scalar(&s3.prefix))),
            Storage::Local(path) => {
                out.push_str(&format!("storage:\n  type: local\n  path: {}\n", scalar(&path.display().to_string())))
            }
        }
    }
}

impl From<S3Storage> for Storage {
    fn from(s3: S3Storage) -> Storage {
        Storage::S3(s3)
    }
}

/// The `queue:` section: a broker URL, a queue name and optional settings (`retry_delay`, …).
#[derive(Debug, Clone)]
pub struct Queue {
    pub url: String,
    pub name: String,
    settings: Settings,
}

impl Queue {
    pub fn new(url: &str, name: &str) -> Queue {
        Queue { url: url.to_string(), name: name.to_string(), settings: Settings::default() }
    }

    /// A setting of the queue, its value raw YAML.
    pub fn set(mut self, key: &str, value: impl Display) -> Queue {
        self.settings.set(key, value);
        self
    }

    fn render(&self, out: &mut String) {
        out.push_str(&format!("queue:\n  url: {}\n  name: {}\n", scalar(&self.url), scalar(&self.name)));
        self.settings.render(out, "  ");
    }
}

/// One table of a database: its name, key columns and own settings.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub schema: Option<String>,
    pub timestamp_column: String,
    pub primary_key: String,
    settings: Settings,
}

impl Table {
    pub fn new(name: &str, timestamp_column: &str, primary_key: &str) -> Table {
        Table {
            name: name.to_string(),
            schema: None,
            timestamp_column: timestamp_column.to_string(),
            primary_key: primary_key.to_string(),
            settings: Settings::default(),
        }
    }

    /// A table made by `seed::create_audit_table`: `created_at` and `id`.
    pub fn audit(name: &str) -> Table {
        Table::new(name, "created_at", "id")
    }

    pub fn schema(mut self, schema: &str) -> Table {
        self.schema = Some(schema.to_string());
        self
    }

    /// A setting of the table's own (`vacuum_after_archive`, `batch_size`, …), its value raw YAML.
    pub fn set(mut self, key: &str, value: impl Display) -> Table {
        self.settings.set(key, value);
        self
    }

    fn render(&self, out: &mut String) {
        out.push_str(&format!("      - name: {}\n", scalar(&self.name)));
        if let Some(schema) = &self.schema {
            out.push_str(&format!("        schema: {}\n", scalar(schema)));
        }
        out.push_str(&format!("        timestamp_column: {}\n", scalar(&self.timestamp_column)));
        out.push_str(&format!("        primary_key: {}\n", scalar(&self.primary_key)));
        self.settings.render(out, "        ");
    }
}

/// A `databases[]` entry.
#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// More settings of the entry (`read_replica`, `governor`, ...), values raw YAML.
    pub extra: Vec<(String, String)>,
    pub tables: Vec<Table>,
}

impl Database {
    pub fn new(name: &str, host: &str, port: u16, user: &str) -> Database {
        Database { name: name.into(), host: host.into(), port, user: user.into(), password: None, extra: Vec::new(), tables: Vec::new() }
    }

    /// Another setting of this database, its value raw YAML (a flow mapping for a section).
    pub fn set(mut self, key: &str, value: impl Display) -> Database {
        self.extra.push((key.to_string(), value.to_string()));
        self
    }

    /// `db` on the tests' server (PGHOST/PGPORT/PGUSER).
    pub fn of(db: &TestDb) -> Database {
        Database::new(&db.name, &pg_host(), pg_port(), &pg_user())
    }

    pub fn password(mut self, password: &str) -> Database {
        self.password = Some(password.to_string());
        self
    }

    pub fn table(mut self, table: Table) -> Database {
        self.tables.push(table);
        self
    }

    fn render(&self, out: &mut String) {
        out.push_str(&format!("  - name: {}\n    host: {}\n", scalar(&self.name), scalar(&self.host)));
        out.push_str(&format!("    port: {}\n    user: {}\n", self.port, scalar(&self.user)));
        if let Some(password) = &self.password {
            out.push_str(&format!("    password: {}\n", scalar(password)));
        }
        for (k, v) in &self.extra {
            out.push_str(&format!("    {k}: {v}\n"));
        }
        if self.tables.is_empty() {
            out.push_str("    tables: []\n");
            return;
        }
        out.push_str("    tables:\n");
        for t in &self.tables {
            t.render(out);
        }
    }
}

impl From<&TestDb> for Database {
    fn from(db: &TestDb) -> Database {
        Database::of(db)
    }
}

/// The whole configuration file; see the module's documentation.
#[derive(Debug, Clone, Default)]
pub struct ConfigBuilder {
    storage: Option<Storage>,
    queue: Option<Queue>,
    defaults: Settings,
    checkpoint: Settings,
    databases: Vec<Database>,
}

impl ConfigBuilder {
    pub fn new() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Sets (or replaces) the storage section.
    pub fn storage(mut self, storage: impl Into<Storage>) -> ConfigBuilder {
        self.storage = Some(storage.into());
        self
    }

    pub fn queue(mut self, queue: Queue) -> ConfigBuilder {
        self.queue = Some(queue);
        self
    }

    /// A `defaults:` setting, its value raw YAML.
    pub fn set_default(mut self, key: &str, value: impl Display) -> ConfigBuilder {
        self.defaults.set(key, value);
        self
    }

    /// `defaults:` settings as raw YAML `key: value` lines (indentation ignored).
    pub fn defaults(mut self, lines: &str) -> ConfigBuilder {
        self.defaults.set_lines(lines);
        self
    }

    /// A `checkpoint:` setting, its value raw YAML.
    pub fn checkpoint(mut self, key: &str, value: impl Display) -> ConfigBuilder {
        self.checkpoint.set(key, value);
        self
    }

    /// Adds a database; `table` adds to the last one added.
    pub fn database(mut self, database: impl Into<Database>) -> ConfigBuilder {
        self.databases.push(database.into());
        self
    }

    /// Adds a table to the last database added.
    pub fn table(mut self, table: Table) -> ConfigBuilder {
        self.databases.last_mut().expect("a database before its tables").tables.push(table);
        self
    }

    pub fn tables(self, tables: impl IntoIterator<Item = Table>) -> ConfigBuilder {
        tables.into_iter().fold(self, ConfigBuilder::table)
    }

    /// The configuration file's text.
    pub fn yaml(&self) -> String {
        let mut out = String::new();
        if let Some(storage) = &self.storage {
            storage.render(&mut out);
        }
        if let Some(queue) = &self.queue {
            queue.render(&mut out);
        }
        for (section, settings) in [("defaults", &self.defaults), ("checkpoint", &self.checkpoint)] {
            if !settings.0.is_empty() {
                out.push_str(&format!("{section}:\n"));
                settings.render(&mut out, "  ");
            }
        }
        if self.databases.is_empty() {
            out.push_str("databases: []\n");
        } else {
            out.push_str("databases:\n");
        }
        for db in &self.databases {
            db.render(&mut out);
        }
        out
    }

    /// Writes the file to `path`; returns `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> std::io::Result<PathBuf> {
        std::fs::write(path.as_ref(), self.yaml())?;
        Ok(path.as_ref().to_path_buf())
    }

    /// Writes the file as `config.yaml` into a new temporary directory, removed when dropped.
    pub fn write_temp(&self) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = self.write(dir.path().join("config.yaml")).expect("write the configuration");
        (dir, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_quoted_only_where_needed() {
        for plain in ["audit_log", "http://127.0.0.1:9000", "amqp://guest:guest@127.0.0.1:5672/%2f", "/tmp/.tmpX/out", "us-east-1"] {
            assert_eq!(scalar(plain), plain);
        }
        assert_eq!(scalar(""), "''");
        assert_eq!(scalar("Audit Data"), "'Audit Data'");
        assert_eq!(scalar("Event \"Log\""), "'Event \"Log\"'");
        assert_eq!(scalar("it's"), "'it''s'");
        assert_eq!(scalar("123"), "'123'");
        assert_eq!(scalar("true"), "'true'");
    }

    #[test]
    fn sections_come_in_order_and_settings_replace_in_place() {
        let yaml = ConfigBuilder::new()
            .storage(Storage::local("/data/archive"))
            .queue(Queue::new("amqp://h/%2f", "q").set("retry_delay", "1s"))
            .set_default("retention_days", 90)
            .set_default("batch_size", 1000)
            .defaults("  range_interval: 30d\n  batch_size: 200")
            .checkpoint("lease_duration", "3s")
            .database(Database::new("app", "localhost", 5432, "u").password("pw"))
            .table(Table::audit("audit_log").schema("Audit Data").set("vacuum_after_archive", true))
            .yaml();
        assert_eq!(
            yaml,
            "storage:\n  type: local\n  path: /data/archive\nqueue:\n  url: amqp://h/%2f\n  name: q\n  retry_delay: 1s\n\
             defaults:\n  retention_days: 90\n  batch_size: 200\n  range_interval: 30d\ncheckpoint:\n  lease_duration: 3s\n\
             databases:\n  - name: app\n    host: localhost\n    port: 5432\n    user: u\n    password: pw\n    tables:\n\
             \x20     - name: audit_log\n        schema: 'Audit Data'\n        timestamp_column: created_at\n        primary_key: id\n\
             \x20       vacuum_after_archive: true\n"
        );
    }

    #[test]
    fn without_databases_the_list_is_empty() {
        assert_eq!(ConfigBuilder::new().yaml(), "databases: []\n");
    }
}
