//! The `checkpoint` section: where progress (work items, batches, leases) is recorded.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::redact::redact_url;
use super::validate::Problems;
use super::DurationSetting;

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

impl CheckpointConfig {
    /// Records what is wrong with this section, found at `path`.
    pub(super) fn validate(&self, path: &str, problems: &mut Problems) {
        if !is_plain_identifier(&self.schema) {
            problems.add(format!("{path}.schema"), "must be a plain identifier (letters, digits, underscore)");
        }
        if self.url.as_deref().is_some_and(|u| !super::source::is_postgres_url(u)) {
            problems.add(format!("{path}.url"), "must be a postgres:// or postgresql:// URL");
        }
        if self.lease_duration.0 < Duration::from_secs(3) {
            problems.add(format!("{path}.lease_duration"), "must be at least 3s");
        }
    }
}

fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::tests::{env_none, MINIMAL};

    #[test]
    fn checkpoint_defaults_and_errors() {
        let c = CheckpointConfig::default();
        assert_eq!((c.url, c.schema.as_str(), c.lease_duration.0), (None, "archiver", Duration::from_secs(60)));
        assert!(is_plain_identifier("_arch1") && !is_plain_identifier("1a") && !is_plain_identifier("a-b"));
        let text = format!("checkpoint:\n  schema: \"my-schema\"\n{MINIMAL}");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "checkpoint.schema");
        let text = format!("checkpoint:\n  lease_duration: 2s\n{MINIMAL}");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "checkpoint.lease_duration");
    }
}
