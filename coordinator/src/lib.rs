//! The coordinator: plans work items and runs them in-process (standalone mode), or records and
//! publishes them to RabbitMQ for `archiver-worker` processes (distributed mode).

pub mod archive;
pub mod cli;
pub mod demo;
pub mod distributed;
pub mod plan;
pub mod progress;
pub mod render;
pub mod standalone;
pub mod summary;
pub mod vacuum;
