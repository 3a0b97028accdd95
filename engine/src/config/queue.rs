//! The `queue` section: RabbitMQ for the distributed mode.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::redact::redact_url;
use super::validate::Problems;
use super::DurationSetting;

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

impl QueueConfig {
    /// Records what is wrong with this section, found at `path`.
    pub(super) fn validate(&self, path: &str, problems: &mut Problems) {
        if self.url.starts_with("amqps://") {
            problems.add(
                format!("{path}.url"),
                "amqps:// (TLS) is not supported by this build; use amqp:// (e.g. inside a private network or through a TLS sidecar)",
            );
        } else if !self.url.starts_with("amqp://") {
            problems.add(format!("{path}.url"), "must be an amqp:// URL");
        }
        if self.name.is_empty() || self.name.len() > 200 {
            problems.add(format!("{path}.name"), "must be 1 to 200 characters");
        }
        if self.max_attempts == 0 {
            problems.add(format!("{path}.max_attempts"), "must be at least 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::config::tests::{env_none, MINIMAL};

    #[test]
    fn queue_defaults_and_errors() {
        let text = format!("queue:\n  url: amqp://guest:guest@h:5672/%2f\n{MINIMAL}");
        let q = parse("c", &text, &env_none).unwrap().config.queue.unwrap();
        assert_eq!((q.name.as_str(), q.max_attempts, q.retry_delay.0.as_secs()), ("archiver.items", 5, 30));
        assert!(!format!("{q:?}").contains("guest:guest"));
        let text = format!("queue:\n  url: amqps://h\n{MINIMAL}");
        let err = parse("c", &text, &env_none).unwrap_err();
        assert!(err.path == "queue.url" && err.message.contains("TLS"), "{err}");
        let text = format!("queue:\n  url: amqp://h\n  max_attempts: 0\n{MINIMAL}");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "queue.max_attempts");
    }
}
