//! The coordinator: plans work items and runs them, in-process (standalone mode) or, later, over
//! RabbitMQ.

pub mod demo;
pub mod distributed;
pub mod plan;
pub mod standalone;
pub mod summary;

pub use archiver_worker::init_logging;
