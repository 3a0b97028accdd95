//! What an operator sees: Prometheus metrics and the health endpoints (`metrics`), logs and
//! OpenTelemetry traces (`telemetry`).

pub mod backlog;
pub mod metrics;
pub mod telemetry;

pub use self::metrics::*;
