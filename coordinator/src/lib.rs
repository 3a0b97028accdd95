//! The coordinator: plans work items and runs them, in-process (standalone mode) or, later, over
//! RabbitMQ.

pub mod demo;
pub mod plan;
pub mod standalone;
pub mod summary;

/// Installs the log subscriber: `RUST_LOG` filters (default `info`), `json` or `text`.
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,aws=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
