//! The load governor's settings (`defaults.governor`, overridable per database as
//! `databases[].governor`) and a database's read replica (`databases[].read_replica`).

use std::time::Duration;

use serde::Deserialize;

use super::validate::Problems;
use super::DurationSetting;

/// How gently the archiver treats a source database. Every field may be left out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernorConfig {
    /// Governs at all (default true). Off, the archiver runs as fast as the database lets it,
    /// held back only by `sleep_between_batches` and `max_rows_per_second`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The database time the archiver may use: seconds its statements run per second of wall
    /// time, summed over every archiver process on this database (each takes an equal share).
    /// Default 0.02, about 2 % of one CPU core on the database server.
    #[serde(default)]
    pub budget: Option<f64>,
    /// Above this replication lag (on the primary's `pg_stat_replication`, the read replica and
    /// `replicas`) the archiver stops writing (deletes, checkpoint writes) until the replicas catch
    /// up; a replica whose replay is paused counts as lagging. Default `30s`.
    #[serde(default)]
    pub max_replica_lag: Option<DurationSetting>,
    /// More replicas to watch, as PostgreSQL URLs (the read replica is always watched).
    #[serde(default)]
    pub replicas: Option<Vec<String>>,
    /// Target duration of one delete transaction: a batch's rows are deleted in chunks sized to
    /// take about this long, so locks and WAL bursts stay short. Default `10ms`.
    #[serde(default)]
    pub delete_chunk_time: Option<DurationSetting>,
    /// Target duration of one read statement: a batch is read in pages sized to take about this
    /// long, so no read holds a server core for long (on a small server a read of several
    /// milliseconds is what others' latency feels most). Default `2ms`.
    #[serde(default)]
    pub read_page_time: Option<DurationSetting>,
    /// How often the governor reads its signals. Default `1s`.
    #[serde(default)]
    pub interval: Option<DurationSetting>,
    /// The latency of the governor's probe over its idle baseline above which others are taken
    /// to suffer and the archiver backs off. Default 2.0.
    #[serde(default)]
    pub max_probe_ratio: Option<f64>,
}

/// The governor's effective settings for one database.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernorSettings {
    pub enabled: bool,
    pub budget: f64,
    pub max_replica_lag: Duration,
    pub replicas: Vec<String>,
    pub delete_chunk_time: Duration,
    pub read_page_time: Duration,
    pub interval: Duration,
    pub max_probe_ratio: f64,
}

impl GovernorConfig {
    /// `self` over `base` (a database's settings over the defaults), then the built-in defaults.
    pub fn over(&self, base: &GovernorConfig) -> GovernorSettings {
        GovernorSettings {
            enabled: self.enabled.or(base.enabled).unwrap_or(true),
            budget: self.budget.or(base.budget).unwrap_or(0.02),
            max_replica_lag: self.max_replica_lag.or(base.max_replica_lag).map_or(Duration::from_secs(30), |d| d.0),
            replicas: self.replicas.clone().or_else(|| base.replicas.clone()).unwrap_or_default(),
            delete_chunk_time: self.delete_chunk_time.or(base.delete_chunk_time).map_or(Duration::from_millis(10), |d| d.0),
            read_page_time: self.read_page_time.or(base.read_page_time).map_or(Duration::from_millis(2), |d| d.0),
            interval: self.interval.or(base.interval).map_or(Duration::from_secs(1), |d| d.0),
            max_probe_ratio: self.max_probe_ratio.or(base.max_probe_ratio).unwrap_or(2.0),
        }
    }

    pub(super) fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(b) = self.budget {
            if !(b > 0.0 && b <= 64.0) {
                problems.add(format!("{path}.budget"), "must be more than 0 and at most 64 (database seconds per second; 0.05 is 5 % of one core)");
            }
        }
        if let Some(r) = self.max_probe_ratio {
            if r.is_nan() || r <= 1.0 {
                problems.add(format!("{path}.max_probe_ratio"), "must be more than 1");
            }
        }
        if self.interval.is_some_and(|d| d.0 < Duration::from_millis(100)) {
            problems.add(format!("{path}.interval"), "must be at least 100ms");
        }
        for (name, time) in [("delete_chunk_time", self.delete_chunk_time), ("read_page_time", self.read_page_time)] {
            if time.is_some_and(|d| d.0.is_zero()) {
                problems.add(format!("{path}.{name}"), "must be more than 0");
            }
        }
        for (i, url) in self.replicas.iter().flatten().enumerate() {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                problems.add(format!("{path}.replicas[{i}]"), "must be a postgres:// URL");
            }
        }
    }
}

/// Where a database's batches are read (`databases[].read_replica`): a physical (streaming)
/// replica. Deletes, leases and checkpoints always go to the primary. Fields left out are taken
/// from the primary's settings.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadReplicaConfig {
    /// A full PostgreSQL URL, instead of host/port/user/password.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    /// Name of an environment variable that holds the replica's password.
    #[serde(default)]
    pub password_env: Option<String>,
}

impl std::fmt::Debug for ReadReplicaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadReplicaConfig")
            .field("url", &self.url.as_deref().map(super::redact_url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password_env", &self.password_env)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_overrides_the_defaults_which_override_the_built_in_values() {
        let base = GovernorConfig { budget: Some(0.2), max_replica_lag: Some(DurationSetting(Duration::from_secs(5))), ..Default::default() };
        let db = GovernorConfig { budget: Some(0.1), ..Default::default() };
        let s = db.over(&base);
        assert_eq!((s.enabled, s.budget, s.max_replica_lag), (true, 0.1, Duration::from_secs(5)));
        assert_eq!((s.delete_chunk_time, s.read_page_time), (Duration::from_millis(10), Duration::from_millis(2)));
        let off = GovernorConfig { enabled: Some(false), ..Default::default() }.over(&GovernorConfig::default());
        assert!(!off.enabled);
    }

    #[test]
    fn nonsense_is_named() {
        let mut p = Problems::default();
        GovernorConfig { budget: Some(0.0), replicas: Some(vec!["replica:5433".into()]), ..Default::default() }.validate("defaults.governor", &mut p);
        let text = format!("{p:?}");
        assert!(text.contains("defaults.governor.budget") && text.contains("defaults.governor.replicas[0]"), "{text}");
    }
}
