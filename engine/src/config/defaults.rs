//! The `defaults` section: what every table inherits unless it sets its own, and [`VacuumType`].

use std::time::Duration;

use archiver_proto::{Compression, Partition};
use serde::Deserialize;

use super::validate::Problems;
use super::{DurationSetting, GovernorConfig};

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
    /// `day` (default), `month` or `year`: objects are grouped under `year=/month=/day=`,
    /// `year=/month=` or `year=` folders by the rows' own dates, and no object spans two. Coarser
    /// partitions give quiet tables fewer, larger objects.
    #[serde(default)]
    pub partition: Partition,
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
    /// The load governor of every source database (each may override it): see
    /// [`GovernorConfig`].
    #[serde(default)]
    pub governor: GovernorConfig,
}

impl Default for Defaults {
    fn default() -> Self {
        // One source of truth for defaults: the serde attributes above.
        serde_yaml_ng::from_str("{}").expect("empty defaults deserialize")
    }
}

/// What is wrong with a retention, if anything: at least a day, and a cutoff PostgreSQL can
/// name (its timestamps start in 4713 BC, about 2.4 million days ago; a million days is ample).
pub(super) fn retention_problem(days: u32) -> Option<&'static str> {
    match days {
        0 => Some("must be at least 1"),
        1_000_001.. => Some("must be at most 1000000 (days; PostgreSQL's timestamps begin in 4713 BC)"),
        _ => None,
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

impl Defaults {
    /// Records what is wrong with this section, found at `path`.
    pub(super) fn validate(&self, path: &str, problems: &mut Problems) {
        if self.batch_size == 0 {
            problems.add(format!("{path}.batch_size"), "must be at least 1");
        }
        if let Some(problem) = retention_problem(self.retention_days) {
            problems.add(format!("{path}.retention_days"), problem);
        }
        if self.range_interval.0 < Duration::from_secs(60) || self.range_interval.0.subsec_nanos() != 0 {
            problems.add(format!("{path}.range_interval"), "must be whole seconds, at least one minute");
        }
        if self.max_rows_per_second == Some(0) {
            problems.add(format!("{path}.max_rows_per_second"), "must be at least 1 (leave it out for no limit)");
        }
        if let Some(level) = self.compression_level {
            let ok = match self.compression {
                Compression::Zstd => (1..=19).contains(&level),
                Compression::Gzip => (1..=9).contains(&level),
            };
            if !ok {
                problems.add(format!("{path}.compression_level"), format!("{level} is out of range for {:?}", self.compression));
            }
        }
        if self.connection_pool_size == 0 {
            problems.add(format!("{path}.connection_pool_size"), "must be at least 1");
        }
        self.governor.validate(&format!("{path}.governor"), problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use crate::config::tests::{env_none, MINIMAL};

    #[test]
    fn defaults_come_from_the_serde_attributes() {
        let d = Defaults::default();
        assert_eq!((d.retention_days, d.batch_size, d.connection_pool_size), (90, 10_000, 5));
        assert_eq!(d.range_interval.0, Duration::from_secs(86_400));
        assert_eq!((d.lock_timeout.0, d.statement_timeout.0), (Duration::from_secs(5), Duration::from_secs(300)));
        assert!(!d.vacuum_after_archive && d.vacuum_type.is_none());
    }

    #[test]
    fn defaults_errors_name_the_key() {
        for (yaml, path) in [
            ("range_interval: 30s", "defaults.range_interval"),
            ("range_interval: 1500ms", "defaults.range_interval"),
            ("max_rows_per_second: 0", "defaults.max_rows_per_second"),
            ("compression: gzip\n  compression_level: 12", "defaults.compression_level"),
            ("connection_pool_size: 0", "defaults.connection_pool_size"),
            ("retention_days: 99999999", "defaults.retention_days"),
        ] {
            let text = format!("defaults:\n  {yaml}\n{MINIMAL}");
            assert_eq!(parse("c", &text, &env_none).unwrap_err().path, path, "{yaml}");
        }
        let text = format!("defaults:\n  compression_level: 12\n{MINIMAL}");
        assert!(parse("c", &text, &env_none).is_ok(), "12 is a valid zstd level");
    }
}
