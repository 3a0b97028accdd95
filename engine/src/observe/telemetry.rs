//! Logs and traces: the `tracing` subscriber, the optional OpenTelemetry exporter, and the W3C
//! trace context carried in AMQP headers.
//!
//! Without an OTLP endpoint (neither `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` nor
//! `telemetry.endpoint`) no OpenTelemetry layer is installed: spans cost what plain `tracing`
//! spans cost and nothing is exported. With one, spans go out in batches over gRPC (default) or
//! HTTP/protobuf, and [`Telemetry::shutdown`] flushes what is left.

use lapin::types::{AMQPValue, FieldTable, LongString};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::TelemetryConfig;

/// What `init` installed; call `shutdown` before the process exits so no span is lost.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// The trace exporter's settings after the environment and the configuration are merged.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// None: nothing is exported.
    pub endpoint: Option<String>,
    /// True when the endpoint came from the configuration (the exporter reads the environment's
    /// itself, appending `/v1/traces` for HTTP as the specification says).
    pub endpoint_from_config: bool,
    pub protocol: String,
    /// The name to set; None when `OTEL_SERVICE_NAME` is set (the SDK reads it itself).
    pub service_name: Option<String>,
    pub sampler: Option<(String, Option<f64>)>,
}

impl TraceSettings {
    /// The environment wins over the configuration, so a deployment can redirect traces without
    /// editing the file.
    pub fn resolve(cfg: &TelemetryConfig, default_service: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let env_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
        let endpoint_from_config = env_endpoint.is_none() && cfg.endpoint.is_some();
        let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .or_else(|| cfg.protocol.clone())
            .unwrap_or_else(|| "grpc".into());
        if !crate::config::TRACE_PROTOCOLS.contains(&protocol.as_str()) {
            return Err(format!(
                "OTLP protocol {protocol:?} is not supported; expected one of {}",
                crate::config::TRACE_PROTOCOLS.join(", ")
            ));
        }
        // The SDK reads OTEL_TRACES_SAMPLER itself; the configuration's applies only without it.
        let sampler = match (env("OTEL_TRACES_SAMPLER"), &cfg.sampler) {
            (None, Some(s)) => Some((s.clone(), cfg.sampler_arg)),
            _ => None,
        };
        Ok(TraceSettings {
            endpoint: env_endpoint.or_else(|| cfg.endpoint.clone()),
            endpoint_from_config,
            protocol,
            service_name: match env("OTEL_SERVICE_NAME") {
                Some(_) => None,
                None => Some(cfg.service_name.clone().unwrap_or_else(|| default_service.to_string())),
            },
            sampler,
        })
    }
}

fn sampler(name: &str, arg: Option<f64>) -> Sampler {
    let ratio = arg.unwrap_or(1.0);
    match name {
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio),
        "parentbased_always_off" => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        "parentbased_traceidratio" => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
        _ => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    }
}

/// Why logging or tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry settings: {0}")]
    Settings(String),
    #[error("OTLP trace exporter ({protocol}): {source}")]
    Exporter { protocol: String, source: opentelemetry_otlp::ExporterBuildError },
    #[error("logging was set up twice: {0}")]
    Init(#[from] tracing_subscriber::util::TryInitError),
}

fn exporter(s: &TraceSettings) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let endpoint = s.endpoint.clone().filter(|_| s.endpoint_from_config);
    let built = if s.protocol == "grpc" {
        let mut b = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(e) = endpoint {
            b = b.with_endpoint(e);
        }
        b.build()
    } else {
        let mut b = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
        if let Some(e) = endpoint {
            // A programmatic endpoint is used verbatim; give it the signal path as the
            // environment variable would get.
            let e = e.trim_end_matches('/');
            b = b.with_endpoint(if e.ends_with("/v1/traces") { e.to_string() } else { format!("{e}/v1/traces") });
        }
        b.build()
    };
    built.map_err(|source| TelemetryError::Exporter { protocol: s.protocol.clone(), source })
}

/// Installs logging (`RUST_LOG` filters, default `info`; `json` or `text` on stderr) and, when an
/// OTLP endpoint is configured, the trace exporter. Call it inside the Tokio runtime.
pub fn init(log_format: &str, cfg: &TelemetryConfig, default_service: &str) -> Result<Telemetry, TelemetryError> {
    init_with_writer(log_format, cfg, default_service, BoxMakeWriter::new(std::io::stderr))
}

/// Colour codes only for a person at a terminal: never into a file or a pipe, nor with `NO_COLOR`.
pub fn colour_wanted() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// [`init`], with log lines written through `writer` (stderr, or a writer that keeps them clear
/// of a progress bar).
pub fn init_with_writer(
    log_format: &str,
    cfg: &TelemetryConfig,
    default_service: &str,
    writer: BoxMakeWriter,
) -> Result<Telemetry, TelemetryError> {
    let settings = TraceSettings::resolve(cfg, default_service, &|k| std::env::var(k).ok()).map_err(TelemetryError::Settings)?;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,aws=warn,lapin=warn,opentelemetry=warn"))
    };
    // A span's close is logged with its busy and idle time: at DEBUG (our spans' level) the log
    // shows how long each batch, stage, read page and delete chunk took, and when.
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(colour_wanted()).with_span_events(FmtSpan::CLOSE);
    let fmt = if log_format == "json" { fmt.json().boxed() } else { fmt.boxed() };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter()));
    let Some(endpoint) = settings.endpoint.clone() else {
        registry.try_init()?;
        return Ok(Telemetry { provider: None });
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if let Some(name) = settings.service_name.clone() {
        resource = resource.with_service_name(name);
    }
    let mut provider = SdkTracerProvider::builder().with_resource(resource.build()).with_batch_exporter(exporter(&settings)?);
    if let Some((name, arg)) = &settings.sampler {
        provider = provider.with_sampler(sampler(name, *arg));
    }
    let provider = provider.build();
    // Our spans are at DEBUG, so the log (INFO by default) does not repeat their fields on every
    // line; traces take them, and our events from DEBUG up. The dependencies' spans stay out.
    let otel_filter = tracing_subscriber::EnvFilter::new("warn,archiver=debug");
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("audit-archiver")).with_filter(otel_filter);
    registry.with(otel).try_init()?;
    tracing::info!(endpoint = %crate::config::redact_url(&endpoint), protocol = %settings.protocol, "exporting traces over OTLP");
    Ok(Telemetry { provider: Some(provider) })
}

impl Telemetry {
    /// Exports the spans still buffered; waits for the exporter, off the async worker threads.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = done {
                eprintln!("warning: exporting the last spans failed: {e}");
            }
        }
    }
}

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
}

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

/// The W3C trace context (`traceparent`, `tracestate`) of `span`, as AMQP headers; empty when no
/// trace is being exported.
pub fn inject(span: &tracing::Span) -> FieldTable {
    let mut headers = FieldTable::default();
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(&mut headers));
    headers
}

/// The trace context carried by a message's headers (an empty context if none).
pub fn extract(headers: &FieldTable) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes `span` continue the trace carried by `headers`. Call before the span is first entered.
pub fn continue_trace(span: &tracing::Span, headers: &FieldTable) {
    // Without the OpenTelemetry layer there is nothing to continue.
    let _ = span.set_parent(extract(headers));
}

/// Renames `span` in its trace (logs keep the name it was created with); works after it started.
pub fn rename(span: &tracing::Span, name: &'static str) {
    use opentelemetry::trace::TraceContextExt;
    span.context().span().update_name(name);
}

/// Marks `span` failed with `error` as its status message.
pub fn record_error(span: &tracing::Span, error: &dyn std::fmt::Display) {
    span.set_status(opentelemetry::trace::Status::error(error.to_string()));
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The trace headers as plain pairs.
    fn header_pairs(headers: &FieldTable) -> HashMap<String, String> {
        let x = HeaderExtractor(headers);
        x.keys().into_iter().filter_map(|k| Some((k.to_string(), x.get(k)?.to_string()))).collect()
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        let s = TraceSettings::resolve(&TelemetryConfig::default(), "svc", &env(&[])).unwrap();
        assert_eq!(s.endpoint, None);
        assert_eq!(s.protocol, "grpc");
    }

    #[test]
    fn the_environment_wins_over_the_configuration() {
        let cfg = TelemetryConfig {
            endpoint: Some("http://file:4317".into()),
            protocol: Some("grpc".into()),
            service_name: Some("from-file".into()),
            sampler: Some("traceidratio".into()),
            sampler_arg: Some(0.5),
        };
        let s = TraceSettings::resolve(&cfg, "svc", &env(&[])).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://file:4317"));
        assert!(s.endpoint_from_config);
        assert_eq!(s.service_name.as_deref(), Some("from-file"));
        assert_eq!(s.sampler, Some(("traceidratio".into(), Some(0.5))));

        let s = TraceSettings::resolve(
            &cfg,
            "svc",
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_SERVICE_NAME", "from-env"),
                ("OTEL_TRACES_SAMPLER", "always_off"),
            ]),
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://env:4318"));
        assert!(!s.endpoint_from_config);
        assert_eq!(s.protocol, "http/protobuf");
        assert_eq!(s.service_name, None, "the SDK reads OTEL_SERVICE_NAME itself");
        assert_eq!(s.sampler, None, "the SDK reads OTEL_TRACES_SAMPLER itself");
    }

    #[test]
    fn an_unknown_protocol_is_named() {
        let err = TraceSettings::resolve(&TelemetryConfig::default(), "svc", &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
            .unwrap_err();
        assert!(err.contains("\"http/json\""), "{err}");
    }

    #[test]
    fn trace_context_round_trips_through_amqp_headers() {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut headers = FieldTable::default();
        headers.insert("traceparent".into(), AMQPValue::LongString(traceparent.into()));
        let cx = extract(&headers);
        let mut out = FieldTable::default();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut out));
        assert_eq!(header_pairs(&out).get("traceparent").map(String::as_str), Some(traceparent));
    }
}
