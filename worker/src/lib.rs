//! The distributed worker: a thin consumer of RabbitMQ work items over the engine's pipeline.

pub mod consumer;
