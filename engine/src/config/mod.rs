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
//! same). This file holds [`Config`] and loading; each section lives in its own file and
//! validates itself: `storage` (`s3`, `storage`), `defaults`, `source` (`databases[].tables[]`),
//! `checkpoint`, `queue`, `telemetry`. `substitute` expands `${VAR}`, `predecessor` sets aside the
//! predecessor's unimplemented keys, `redact` keeps secrets out of what is printed.

mod checkpoint;
mod defaults;
mod duration;
mod governor;
mod predecessor;
mod queue;
mod redact;
mod source;
mod storage;
mod substitute;
mod telemetry;
mod validate;

use std::path::Path;

use serde::Deserialize;
use serde_yaml_ng::Value;

pub use checkpoint::CheckpointConfig;
pub use defaults::{Defaults, VacuumType};
pub use duration::DurationSetting;
pub use governor::{GovernorConfig, GovernorSettings, ReadReplicaConfig};
pub use queue::QueueConfig;
pub use redact::redact_url;
pub use source::{DatabaseConfig, TableConfig, TableSettings};
pub use storage::{S3Config, StorageConfig};
pub use telemetry::{TelemetryConfig, TRACE_PROTOCOLS, TRACE_SAMPLERS};

use validate::Problems;

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
    #[serde(default, deserialize_with = "version_text")]
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

/// `version: "2.0"`, or `version: 2.0` unquoted (YAML reads a number; the predecessor's files
/// may have either).
fn version_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Version {
        Text(String),
        Number(f64),
    }
    Ok(Option::<Version>::deserialize(d)?.map(|v| match v {
        Version::Text(t) => t,
        Version::Number(n) => format!("{n:.1}"),
    }))
}

/// What is wrong with a storage key prefix, if anything: without its leading and trailing `/`
/// (which are dropped) it must pass the stores' own key rules (`storage::check_key`: no empty,
/// `.` or `..` segment, no backslash), so objects stay inside the bucket or directory.
pub(crate) fn prefix_problem(prefix: &str) -> Option<&'static str> {
    let p = prefix.trim_matches('/');
    (!p.is_empty() && crate::storage::check_key(p).is_err())
        .then_some("must not contain an empty, . or .. segment or a backslash: objects stay inside the bucket or directory")
}

impl Config {
    /// Records what is wrong with the whole file: its version and the rules between sections,
    /// then each section in turn.
    fn validate(&self, problems: &mut Problems) {
        if let Some(v) = self.version.as_deref().filter(|v| *v != "1.0" && *v != "2.0") {
            problems.add("version", format!("unsupported version {v:?}; expected \"1.0\" or \"2.0\""));
        }
        if self.s3.is_some() && self.storage.is_some() {
            problems.add("storage", "set either `s3` or `storage`, not both");
        }
        if let Some(s3) = &self.s3 {
            s3.validate("s3", problems);
        }
        if let Some(StorageConfig::Local { prefix, .. }) = &self.storage {
            if let Some(problem) = prefix_problem(prefix) {
                problems.add("storage.prefix", problem);
            }
        }
        self.telemetry.validate("telemetry", problems);
        self.defaults.validate("defaults", problems);
        self.checkpoint.validate("checkpoint", problems);
        if let Some(q) = &self.queue {
            q.validate("queue", problems);
        }
        source::validate_databases(&self.databases, "databases", problems);
    }
}

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
    substitute::substitute(&mut value, "", env).map_err(|(p, m)| err(&p, m))?;
    let mut ignored = Vec::new();
    predecessor::strip_unimplemented(&mut value, "", &mut ignored);
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "(root)".to_string() } else { path };
        if redact::is_secret_path(&path) {
            // serde's messages quote the offending value; this one may be a secret.
            return err(&path, "invalid value (not shown: it may be a secret); expected text".into());
        }
        err(&path, e.into_inner().to_string())
    })?;
    let mut problems = Problems::default();
    config.validate(&mut problems);
    problems.into_result().map_err(|(p, m)| err(&p, m))?;
    Ok(Loaded { config, ignored })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn env_none(_: &str) -> Option<String> {
        None
    }

    pub(crate) const MINIMAL: &str = "databases:\n  - name: app\n    host: localhost\n    user: u\n    tables:\n      - name: audit\n        timestamp_column: created_at\n        primary_key: id\n";

    #[test]
    fn version_may_be_written_unquoted() {
        for (v, ok) in [("2.0", true), ("\"2.0\"", true), ("1.0", true), ("3", false)] {
            let text = format!("version: {v}\n{MINIMAL}");
            assert_eq!(parse("c", &text, &env_none).is_ok(), ok, "version: {v}");
        }
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
    fn the_first_problem_in_document_order_is_reported() {
        let text = format!("version: \"3.0\"\ndefaults:\n  batch_size: 0\n{MINIMAL}");
        let err = parse("c", &text, &env_none).unwrap_err();
        assert_eq!(err.to_string(), "config c: version: unsupported version \"3.0\"; expected \"1.0\" or \"2.0\"");
        let text = format!("defaults:\n  batch_size: 0\ncheckpoint:\n  lease_duration: 1s\n{MINIMAL}");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "defaults.batch_size");
    }
}
