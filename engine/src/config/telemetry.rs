//! The `telemetry` section: where OpenTelemetry traces go, and the protocols and samplers
//! understood.

use serde::Deserialize;

use super::validate::Problems;

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

impl TelemetryConfig {
    /// Records what is wrong with this section, found at `path`.
    pub(super) fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(p) = self.protocol.as_deref().filter(|p| !TRACE_PROTOCOLS.contains(p)) {
            problems.add(format!("{path}.protocol"), format!("unsupported {p:?}; expected one of {}", TRACE_PROTOCOLS.join(", ")));
        }
        if let Some(s) = self.sampler.as_deref().filter(|s| !TRACE_SAMPLERS.contains(s)) {
            problems.add(format!("{path}.sampler"), format!("unsupported {s:?}; expected one of {}", TRACE_SAMPLERS.join(", ")));
        }
        if let Some(a) = self.sampler_arg.filter(|a| !(0.0..=1.0).contains(a)) {
            problems.add(format!("{path}.sampler_arg"), format!("{a} is not a ratio between 0.0 and 1.0"));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::config::tests::{env_none, MINIMAL};

    #[test]
    fn telemetry_errors_name_the_key() {
        let text = format!("telemetry:\n  protocol: http/json\n{MINIMAL}");
        let err = parse("c", &text, &env_none).unwrap_err();
        assert!(err.path == "telemetry.protocol" && err.message.contains("grpc, http/protobuf"), "{err}");
        let text = format!("telemetry:\n  sampler_arg: 1.5\n{MINIMAL}");
        assert_eq!(parse("c", &text, &env_none).unwrap_err().path, "telemetry.sampler_arg");
        let text = format!("telemetry:\n  sampler: traceidratio\n  sampler_arg: 0.5\n{MINIMAL}");
        assert!(parse("c", &text, &env_none).is_ok());
    }
}
