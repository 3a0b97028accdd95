//! The YAML configuration: what to archive, where to, and how fast.
//!
//! Input: a YAML file in the predecessor's format (`version: "2.0"`, `s3`, `defaults`,
//! `databases[].tables[]`) or with our additions (`storage`, `checkpoint`, `databases[].url`, ...).
//! Output: a validated [`Config`], plus the list of the predecessor's keys we read but do not
//! implement (they load with one warning naming them).
//! Invariant: any other key we do not know is an error naming its path, so a typo never silently
//! changes what is archived. Every error names the file, the key path and what is wrong, and never
//! contains a secret.
//!
//! The doc comment of each field is the configuration reference (docs/configuration.md says the
//! same).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use archiver_proto::Compression;
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;

/// A configuration that could not be loaded: which file, which key, and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {path}: {message}")]
pub struct ConfigError {
    pub file: String,
    /// Dotted key path, `databases[0].tables[1].batch_size`; `(root)` for the whole document.
    pub path: String,
    pub message: String,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version: "1.0" or "2.0" (the predecessor's); both read the same.
    #[serde(default)]
    pub version: Option<String>,
    /// S3-compatible object storage (the predecessor's section). Exclusive with `storage`.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// Object storage other than S3: `type: local` with a `path`. Without `s3` and `storage`,
    /// objects go to the local directory `./archive`.
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    /// Settings every table inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// Where progress (work items, batches, leases) is recorded.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// RabbitMQ, for the distributed mode. Without it, `run` works in-process (standalone).
    #[serde(default)]
    pub queue: Option<QueueConfig>,
    /// OpenTelemetry tracing; the standard `OTEL_*` environment variables take precedence.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The source databases and their tables.
    pub databases: Vec<DatabaseConfig>,
}

/// The work queue of the distributed mode.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// AMQP URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`. Its password is never logged.
    pub url: String,
    /// Name of the work queue (a durable quorum queue). `{name}.retry` holds items waiting to be
    /// retried and `{name}.dead` receives what cannot be processed. Default `archiver.items`.
    #[serde(default = "default_queue_name")]
    pub name: String,
    /// Attempts at one item before it is marked failed and dead-lettered. Default 5.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How long a failed attempt waits in `{name}.retry` before it is tried again. Default `30s`.
    #[serde(default = "default_retry_delay")]
    pub retry_delay: DurationSetting,
}

impl fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueConfig")
            .field("url", &redact_url(&self.url))
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("retry_delay", &self.retry_delay)
            .finish()
    }
}

fn default_queue_name() -> String {
    "archiver.items".into()
}
fn default_max_attempts() -> u32 {
    5
}
fn default_retry_delay() -> DurationSetting {
    DurationSetting(Duration::from_secs(30))
}

/// Where traces go. Each setting is used only when its standard environment variable is unset:
/// `endpoint` (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT`), `protocol`
/// (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`), `service_name`
/// (`OTEL_SERVICE_NAME`), `sampler` and `sampler_arg` (`OTEL_TRACES_SAMPLER`,
/// `OTEL_TRACES_SAMPLER_ARG`). Without an endpoint nothing is exported.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP collector, e.g. `http://jaeger:4317` (gRPC) or `http://jaeger:4318` (HTTP).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Default: the binary's name (`archiver-coordinator`, `archiver-worker`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on` (default),
    /// `parentbased_always_off` or `parentbased_traceidratio`.
    #[serde(default)]
    pub sampler: Option<String>,
    /// The ratio of the `*traceidratio` samplers, 0.0 to 1.0.
    #[serde(default)]
    pub sampler_arg: Option<f64>,
}

/// The trace protocols understood, as the OTLP specification spells them.
pub const TRACE_PROTOCOLS: &[&str] = &["grpc", "http/protobuf"];
/// The samplers understood, as `OTEL_TRACES_SAMPLER` spells them.
pub const TRACE_SAMPLERS: &[&str] =
    &["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"];

/// The predecessor's `s3` section, read unchanged.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Service URL for S3-compatible servers (MinIO, Ceph, ...); null or absent for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Bucket that receives the objects. It must exist.
    pub bucket: String,
    /// Key prefix for every object, e.g. `archives/`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub prefix: String,
    /// Region; `us-east-1` by default.
    #[serde(default = "default_region")]
    pub region: String,
    /// Storage class of the data objects, e.g. `STANDARD`, `STANDARD_IA`, `GLACIER_IR`.
    /// Absent: the bucket's default.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// Server-side encryption: `SSE-S3`, `SSE-KMS` (with `kms_key_id`) or `none`. Absent: none
    /// requested (the bucket's default applies).
    #[serde(default)]
    pub encryption: Option<String>,
    /// KMS key for `encryption: SSE-KMS`; absent uses the account's default key.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// Objects larger than this many MiB are uploaded in parts (of this size, at least 5 MiB).
    #[serde(default = "default_multipart_threshold_mb")]
    pub multipart_threshold_mb: u64,
    /// Path-style addressing (`endpoint/bucket/key`). Default: on when `endpoint` is set.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Access key; prefer the standard AWS variables or roles. `aws_access_key_id` also works.
    #[serde(default, alias = "aws_access_key_id")]
    pub access_key_id: Option<String>,
    /// Secret key; never logged. `aws_secret_access_key` also works.
    #[serde(default, alias = "aws_secret_access_key")]
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "<set>"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_multipart_threshold_mb() -> u64 {
    10
}

/// Our `storage` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum StorageConfig {
    /// A directory on this machine; objects are written atomically (temporary file, fsync, rename).
    Local {
        /// The directory; created if missing.
        path: PathBuf,
        /// Key prefix inside the directory.
        #[serde(default)]
        prefix: String,
    },
}

/// What a table inherits unless it sets its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Rows older than this many days (by the database's clock) are archived. Default 90.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Rows per batch, i.e. per object. Default 10,000.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Pause after each batch of a work item: a number of seconds or `500ms`. Default 0.
    #[serde(default)]
    pub sleep_between_batches: DurationSetting,
    /// Upper bound on rows archived per second per work item; absent: unbounded.
    #[serde(default)]
    pub max_rows_per_second: Option<u32>,
    /// Width of one work item's time range, aligned to the Unix epoch: `1d`, `6h`. Default `1d`.
    #[serde(default = "default_range_interval")]
    pub range_interval: DurationSetting,
    /// `zstd` (default) or `gzip`.
    #[serde(default)]
    pub compression: Compression,
    /// Compression level; default 3 for zstd, 6 for gzip.
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// `lock_timeout` of each delete transaction. Default `5s`.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: DurationSetting,
    /// `statement_timeout` of each delete and extract statement. Default `5min`.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout: DurationSetting,
    /// Run VACUUM on a table after a run archived rows from it. Default false.
    #[serde(default)]
    pub vacuum_after_archive: bool,
    /// The predecessor's older name of `vacuum_after_archive`.
    #[serde(default)]
    pub vacuum_after: Option<bool>,
    /// `none`, `analyze` (default), `standard` or `full`.
    #[serde(default)]
    pub vacuum_type: Option<VacuumType>,
    /// The predecessor's older name of `vacuum_type`.
    #[serde(default)]
    pub vacuum_strategy: Option<VacuumType>,
    /// Connections per database pool. Default 5.
    #[serde(default = "default_pool_size")]
    pub connection_pool_size: u32,
    /// How long an unused pooled connection stays open before it is closed. Default `60s`.
    #[serde(default = "default_idle_timeout")]
    pub connection_idle_timeout: DurationSetting,
}

impl Default for Defaults {
    fn default() -> Self {
        // One source of truth for defaults: the serde attributes above.
        serde_yaml_ng::from_str("{}").expect("empty defaults deserialize")
    }
}

fn default_retention_days() -> u32 {
    90
}
fn default_batch_size() -> u32 {
    10_000
}
fn default_range_interval() -> DurationSetting {
    DurationSetting(Duration::from_secs(86_400))
}
fn default_lock_timeout() -> DurationSetting {
    DurationSetting(Duration::from_secs(5))
}
fn default_statement_timeout() -> DurationSetting {
    DurationSetting(Duration::from_secs(300))
}
fn default_pool_size() -> u32 {
    5
}
fn default_idle_timeout() -> DurationSetting {
    DurationSetting(Duration::from_secs(60))
}

/// Which VACUUM runs after a table was archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VacuumType {
    None,
    Analyze,
    Standard,
    Full,
}

/// Where the checkpoint store lives.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// A PostgreSQL URL for one shared checkpoint database. Absent (the default): a schema inside
    /// each source database, so that a delete and its checkpoint commit in one transaction.
    #[serde(default)]
    pub url: Option<String>,
    /// Schema of the checkpoint tables. Default `archiver`.
    #[serde(default = "default_checkpoint_schema")]
    pub schema: String,
    /// How long a claimed work item stays claimed without a heartbeat. Default `60s`.
    #[serde(default = "default_lease")]
    pub lease_duration: DurationSetting,
}

impl fmt::Debug for CheckpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("schema", &self.schema)
            .field("lease_duration", &self.lease_duration)
            .finish()
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        serde_yaml_ng::from_str("{}").expect("empty checkpoint section deserializes")
    }
}

fn default_checkpoint_schema() -> String {
    "archiver".into()
}
fn default_lease() -> DurationSetting {
    DurationSetting(Duration::from_secs(60))
}

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
                });
            }
        }
        out
    }

    pub fn database(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases.iter().find(|d| d.name == name)
    }
}

/// A duration written as a number of seconds (`2`, `0.5`) or with units (`500ms`, `6h`, `1d`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DurationSetting(pub Duration);

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration: seconds as a number, or text like 500ms, 30s, 6h, 1d")
        })? {
            Raw::Secs(s) if s.is_finite() && s >= 0.0 => Ok(DurationSetting(Duration::from_secs_f64(s))),
            Raw::Secs(s) => Err(serde::de::Error::custom(format!("duration must be zero or positive, got {s}"))),
            Raw::Text(t) => humantime::parse_duration(t.trim())
                .map(DurationSetting)
                .map_err(|e| serde::de::Error::custom(format!("invalid duration {t:?}: {e}"))),
        }
    }
}

/// Keys of the predecessor's format that we read and do not implement. They load with one
/// warning that names them; everything else unknown is an error.
const PREDECESSOR_UNIMPLEMENTED: &[&str] = &[
    "s3.rate_limit_requests_per_second",
    "s3.local_fallback_dir",
    "s3.local_fallback_retention_days",
    "defaults.parallel_databases",
    "defaults.max_parallel_databases",
    "defaults.fail_on_schema_drift",
    "defaults.lock_type",
    "defaults.watermark_storage_type",
    "defaults.checkpoint_storage_type",
    "defaults.checkpoint_interval",
    "defaults.audit_trail_storage_type",
    "defaults.batch_retry_attempts",
    "defaults.batch_retry_delay",
    "defaults.skip_failed_batches",
    "defaults.max_failed_batches",
    "defaults.query_plan_analysis",
    "defaults.slow_query_threshold",
    "defaults.warn_on_seq_scan",
    "defaults.async_upload_pipeline",
    "defaults.max_concurrent_uploads",
    "databases[].read_replica",
    "databases[].tables[].critical",
    "legal_holds",
    "compliance",
    "monitoring",
    "notifications",
    "restore_watermark",
    "performance",
];

/// A loaded configuration and what it carried that we ignore.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Paths of the predecessor's keys that were present and are not implemented.
    pub ignored: Vec<String>,
}

impl Loaded {
    /// The one warning about ignored keys, if any.
    pub fn warning(&self, file: &Path) -> Option<String> {
        (!self.ignored.is_empty()).then(|| {
            format!(
                "config {}: these settings of the predecessor's format are not implemented and are ignored: {}",
                file.display(),
                self.ignored.join(", ")
            )
        })
    }
}

/// Reads, substitutes `${VAR}` / `${VAR:-default}`, and validates a configuration file.
pub fn load(file: &Path) -> Result<Loaded, ConfigError> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: name.clone(),
        path: "(root)".into(),
        message: format!("cannot read the file: {e}"),
    })?;
    parse(&name, &text, &|k| std::env::var(k).ok())
}

/// [`load`] on text already read; `env` looks up variables (tests pass their own).
pub fn parse(file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    let err = |path: &str, message: String| ConfigError { file: file.into(), path: path.into(), message };
    let mut value: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = e.location().map(|l| format!(" (line {}, column {})", l.line(), l.column())).unwrap_or_default();
        // The YAML parser's message never quotes scalar values, so no secret leaks here.
        err("(root)", format!("not valid YAML{at}: {e}"))
    })?;
    if value.is_null() {
        return Err(err("(root)", "the file is empty".into()));
    }
    substitute(&mut value, "", env).map_err(|(p, m)| err(&p, m))?;
    let mut ignored = Vec::new();
    strip_unimplemented(&mut value, "", &mut ignored);
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "(root)".to_string() } else { path };
        if is_secret_path(&path) {
            // serde's messages quote the offending value; this one may be a secret.
            return err(&path, "invalid value (not shown: it may be a secret); expected text".into());
        }
        err(&path, e.into_inner().to_string())
    })?;
    validate(&config).map_err(|(p, m)| err(&p, m))?;
    Ok(Loaded { config, ignored })
}

/// Keys whose values are secrets: never re-read, never echoed in an error.
const SECRET_KEYS: &[&str] = &["password", "secret_access_key", "aws_secret_access_key", "access_key_id", "aws_access_key_id", "url"];

fn is_secret_path(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    SECRET_KEYS.contains(&last)
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string value. A value that is exactly one
/// substitution is re-read as YAML, so `port: ${PGPORT:-5432}` is a number (secrets stay text).
fn substitute(v: &mut Value, path: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(), (String, String)> {
    match v {
        Value::String(s) if s.contains("${") => {
            let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
            let out = expand(s, env).map_err(|m| (path.to_string(), m))?;
            *v = if whole && !is_secret_path(path) {
                match serde_yaml_ng::from_str::<Value>(&out) {
                    Ok(scalar @ (Value::Number(_) | Value::Bool(_))) => scalar,
                    _ => Value::String(out),
                }
            } else {
                Value::String(out)
            };
        }
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let key = key_name(k);
                substitute(val, &join(path, &key), env)?;
            }
        }
        Value::Sequence(items) => {
            for (i, val) in items.iter_mut().enumerate() {
                substitute(val, &format!("{path}[{i}]"), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unterminated ${...} substitution".to_string())?;
        let inner = &after[..end];
        let (var, default) = match inner.split_once(":-") {
            Some((v, d)) => (v, Some(d)),
            None => (inner, None),
        };
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name {var:?} in ${{...}}"));
        }
        match (env(var), default) {
            (Some(val), _) => out.push_str(&val),
            (None, Some(d)) => out.push_str(d),
            (None, None) => return Err(format!("environment variable {var} is not set and has no default")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Removes the predecessor's unimplemented keys, recording where they were.
fn strip_unimplemented(v: &mut Value, path: &str, found: &mut Vec<String>) {
    let generic = generic_path(path);
    match v {
        Value::Mapping(m) => {
            let keys: Vec<Value> = m.keys().cloned().collect();
            for k in keys {
                let key = key_name(&k);
                let pattern = join(&generic, &key);
                let here = join(path, &key);
                if PREDECESSOR_UNIMPLEMENTED.contains(&pattern.as_str()) {
                    m.remove(&k);
                    found.push(here);
                } else if let Some(child) = m.get_mut(&k) {
                    strip_unimplemented(child, &here, found);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                strip_unimplemented(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// `databases[0].tables[3].x` -> `databases[].tables[].x`
fn generic_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

fn key_name(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn validate(c: &Config) -> Result<(), (String, String)> {
    let e = |p: &str, m: &str| Err((p.to_string(), m.to_string()));
    if let Some(v) = &c.version {
        if v != "1.0" && v != "2.0" {
            return e("version", &format!("unsupported version {v:?}; expected \"1.0\" or \"2.0\""));
        }
    }
    if c.s3.is_some() && c.storage.is_some() {
        return e("storage", "set either `s3` or `storage`, not both");
    }
    if let Some(s3) = &c.s3 {
        if s3.bucket.trim().is_empty() {
            return e("s3.bucket", "must not be empty");
        }
        if s3.multipart_threshold_mb == 0 {
            return e("s3.multipart_threshold_mb", "must be at least 1");
        }
        if let Some(enc) = &s3.encryption {
            if !matches!(enc.to_ascii_uppercase().as_str(), "SSE-S3" | "SSE-KMS" | "NONE" | "AES256" | "AWS:KMS") {
                return e("s3.encryption", &format!("unsupported {enc:?}; expected SSE-S3, SSE-KMS or none"));
            }
        }
        if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
            return e("s3.secret_access_key", "access_key_id and secret_access_key must be set together");
        }
    }
    let t = &c.telemetry;
    if let Some(p) = t.protocol.as_deref().filter(|p| !TRACE_PROTOCOLS.contains(p)) {
        return e("telemetry.protocol", &format!("unsupported {p:?}; expected one of {}", TRACE_PROTOCOLS.join(", ")));
    }
    if let Some(s) = t.sampler.as_deref().filter(|s| !TRACE_SAMPLERS.contains(s)) {
        return e("telemetry.sampler", &format!("unsupported {s:?}; expected one of {}", TRACE_SAMPLERS.join(", ")));
    }
    if let Some(a) = t.sampler_arg.filter(|a| !(0.0..=1.0).contains(a)) {
        return e("telemetry.sampler_arg", &format!("{a} is not a ratio between 0.0 and 1.0"));
    }
    let d = &c.defaults;
    if d.batch_size == 0 {
        return e("defaults.batch_size", "must be at least 1");
    }
    if d.retention_days == 0 {
        return e("defaults.retention_days", "must be at least 1");
    }
    if d.range_interval.0 < Duration::from_secs(60) || d.range_interval.0.subsec_nanos() != 0 {
        return e("defaults.range_interval", "must be whole seconds, at least one minute");
    }
    if d.max_rows_per_second == Some(0) {
        return e("defaults.max_rows_per_second", "must be at least 1 (leave it out for no limit)");
    }
    if let Some(level) = d.compression_level {
        let ok = match d.compression {
            Compression::Zstd => (1..=19).contains(&level),
            Compression::Gzip => (1..=9).contains(&level),
        };
        if !ok {
            return e("defaults.compression_level", &format!("{level} is out of range for {:?}", d.compression));
        }
    }
    if d.connection_pool_size == 0 {
        return e("defaults.connection_pool_size", "must be at least 1");
    }
    if !is_plain_identifier(&c.checkpoint.schema) {
        return e("checkpoint.schema", "must be a plain identifier (letters, digits, underscore)");
    }
    if c.checkpoint.lease_duration.0 < Duration::from_secs(3) {
        return e("checkpoint.lease_duration", "must be at least 3s");
    }
    if let Some(q) = &c.queue {
        if q.url.starts_with("amqps://") {
            return e("queue.url", "amqps:// (TLS) is not supported by this build; use amqp:// (e.g. inside a private network or through a TLS sidecar)");
        }
        if !q.url.starts_with("amqp://") {
            return e("queue.url", "must be an amqp:// URL");
        }
        if q.name.is_empty() || q.name.len() > 200 {
            return e("queue.name", "must be 1 to 200 characters");
        }
        if q.max_attempts == 0 {
            return e("queue.max_attempts", "must be at least 1");
        }
    }
    if c.databases.is_empty() {
        return e("databases", "at least one database is required");
    }
    let mut names = BTreeSet::new();
    for (i, db) in c.databases.iter().enumerate() {
        let p = format!("databases[{i}]");
        if db.name.trim().is_empty() {
            return e(&format!("{p}.name"), "must not be empty");
        }
        if !names.insert(&db.name) {
            return e(&format!("{p}.name"), &format!("database {:?} is listed twice", db.name));
        }
        if db.url.is_some() && (db.host.is_some() || db.user.is_some() || db.port.is_some()) {
            return e(&format!("{p}.url"), "set either `url` or host/port/user, not both");
        }
        if db.url.is_none() && db.host.is_none() {
            return e(&format!("{p}.host"), "either `url` or `host` is required");
        }
        if db.password.is_some() && db.password_env.is_some() {
            return e(&format!("{p}.password"), "set either `password` or `password_env`, not both");
        }
        if db.connection_pool_size == Some(0) {
            return e(&format!("{p}.connection_pool_size"), "must be at least 1");
        }
        if db.tables.is_empty() {
            return e(&format!("{p}.tables"), "at least one table is required");
        }
        let mut tables = BTreeSet::new();
        for (j, t) in db.tables.iter().enumerate() {
            let tp = format!("{p}.tables[{j}]");
            for (key, val) in [
                ("name", &t.name),
                ("schema", &t.schema),
                ("timestamp_column", &t.timestamp_column),
                ("primary_key", &t.primary_key),
            ] {
                if val.is_empty() {
                    return e(&format!("{tp}.{key}"), "must not be empty");
                }
                if val.contains('\0') {
                    return e(&format!("{tp}.{key}"), "must not contain a NUL character");
                }
            }
            if !tables.insert((&t.schema, &t.name)) {
                return e(&format!("{tp}.name"), &format!("table {}.{} is listed twice", t.schema, t.name));
            }
            if t.batch_size == Some(0) {
                return e(&format!("{tp}.batch_size"), "must be at least 1");
            }
            if t.retention_days == Some(0) {
                return e(&format!("{tp}.retention_days"), "must be at least 1");
            }
        }
    }
    Ok(())
}

fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`, for anything printed.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{}{}@{}", &url[..scheme_end + 3], masked, &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_none(_: &str) -> Option<String> {
        None
    }

    const MINIMAL: &str = "databases:\n  - name: app\n    host: localhost\n    user: u\n    tables:\n      - name: audit\n        timestamp_column: created_at\n        primary_key: id\n";

    #[test]
    fn predecessor_example_loads_with_one_warning_naming_ignored_keys() {
        let text = include_str!("../../tests/data/predecessor-config-simple.yaml");
        let loaded = parse("simple.yaml", text, &env_none).expect("the predecessor's example loads");
        let c = &loaded.config;
        let s3 = c.s3.as_ref().unwrap();
        assert_eq!(s3.bucket, "audit-archives");
        assert_eq!(s3.prefix, "archives/");
        assert_eq!(s3.endpoint, None);
        assert_eq!(s3.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(c.defaults.sleep_between_batches.0, Duration::from_secs(2));
        let t = &c.tables()[0];
        assert_eq!((t.database.as_str(), t.schema.as_str(), t.table.as_str()), ("production_db", "public", "audit_logs"));
        assert_eq!(t.retention_days, 90);
        assert_eq!(t.batch_size, 10_000);
        // vacuum_after: true with vacuum_strategy: standard is honoured, not ignored.
        assert_eq!(t.vacuum, VacuumType::Standard);
        assert_eq!(loaded.ignored, vec!["performance".to_string(), "restore_watermark".to_string()]);
        let warning = loaded.warning(Path::new("simple.yaml")).unwrap();
        assert!(warning.contains("performance") && warning.contains("restore_watermark"), "{warning}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_its_path() {
        let text = MINIMAL.replace("primary_key: id", "primary_key: id\n        retension_days: 3");
        let err = parse("c.yaml", &text, &env_none).unwrap_err();
        assert_eq!(err.path, "databases[0].tables[0].retension_days");
        assert!(err.message.contains("retension_days"), "{err}");
        assert!(err.to_string().starts_with("config c.yaml: "), "{err}");
    }

    #[test]
    fn wrong_type_names_path() {
        let text = MINIMAL.replace("primary_key: id", "primary_key: id\n        batch_size: lots");
        let err = parse("c.yaml", &text, &env_none).unwrap_err();
        assert_eq!(err.path, "databases[0].tables[0].batch_size", "{err}");
    }

    #[test]
    fn env_substitution_with_defaults_and_numbers() {
        let text = MINIMAL.replace("host: localhost", "host: ${PGHOST:-db.local}\n    port: ${PGPORT:-5433}")
            .replace("user: u", "user: ${PGUSER}-x");
        let env = |k: &str| (k == "PGUSER").then(|| "alice".to_string());
        let c = parse("c.yaml", &text, &env).unwrap().config;
        assert_eq!(c.databases[0].host.as_deref(), Some("db.local"));
        assert_eq!(c.databases[0].port, Some(5433));
        assert_eq!(c.databases[0].user.as_deref(), Some("alice-x"));
    }

    #[test]
    fn missing_variable_is_an_error_naming_it() {
        let text = MINIMAL.replace("user: u", "user: ${NOPE_NOT_SET}");
        let err = parse("c.yaml", &text, &env_none).unwrap_err();
        assert_eq!(err.path, "databases[0].user");
        assert!(err.message.contains("NOPE_NOT_SET"), "{err}");
    }

    #[test]
    fn secrets_do_not_appear_in_errors_or_debug() {
        let text = "databases:\n  - name: app\n    url: postgres://u:hunter2@h/db\n    host: h\n    tables: []\n";
        let err = parse("c.yaml", text, &env_none).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let text = MINIMAL.replace("user: u", "user: u\n    password: hunter2");
        let c = parse("c.yaml", &text, &env_none).unwrap().config;
        assert!(!format!("{c:?}").contains("hunter2"));
        // A bad value next to a secret: the error names the key, never echoes the secret.
        let text = MINIMAL.replace("user: u", "user: u\n    password: [hunter2]");
        let err = parse("c.yaml", &text, &env_none).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let text = MINIMAL.replace("user: u", "user: u\n    password: {hunter2: 1}");
        let err = parse("c.yaml", &text, &env_none).unwrap_err();
        assert!(!err.to_string().contains("hunter2") && err.path.ends_with("password"), "{err}");
        // A numeric password from the environment stays text instead of failing with its value.
        let text = MINIMAL.replace("user: u", "user: u\n    password: ${DB_PW}");
        let env = |k: &str| (k == "DB_PW").then(|| "123456".to_string());
        let c = parse("c.yaml", &text, &env).unwrap().config;
        assert_eq!(c.databases[0].password.as_deref(), Some("123456"));
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        let text = format!("defaults:\n  sleep_between_batches: 0.25\n  range_interval: 6h\n{MINIMAL}");
        let c = parse("c.yaml", &text, &env_none).unwrap().config;
        assert_eq!(c.defaults.sleep_between_batches.0, Duration::from_millis(250));
        assert_eq!(c.defaults.range_interval.0, Duration::from_secs(6 * 3600));
        let text = format!("defaults:\n  range_interval: soon\n{MINIMAL}");
        let err = parse("c.yaml", &text, &env_none).unwrap_err();
        assert_eq!(err.path, "defaults.range_interval");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let text = MINIMAL.replace("primary_key: id", "primary_key: id\n        batch_size: 0");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "databases[0].tables[0].batch_size");
        let text = format!("s3:\n  bucket: b\nstorage:\n  type: local\n  path: /tmp/x\n{MINIMAL}");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "storage");
        let err = parse("c", "", &env_none).unwrap_err();
        assert!(err.message.contains("empty"), "{err}");
        let err = parse("c", "databases: [\n", &env_none).unwrap_err();
        assert!(err.message.contains("not valid YAML"), "{err}");
    }

    #[test]
    fn redact_url_masks_password_only() {
        assert_eq!(redact_url("postgres://u:p@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
    }
}
