//! [`DurationSetting`]: a duration written as seconds (`2`, `0.5`) or with units (`500ms`, `6h`),
//! the form every duration of the configuration takes.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::parse;
    use crate::config::tests::{env_none, MINIMAL};

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
}
