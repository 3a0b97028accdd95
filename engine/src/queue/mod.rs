//! RabbitMQ: the work queue, its retry queue and its dead-letter queue.
//!
//! Topology, declared idempotently by every process that connects:
//! - `{name}`: durable quorum queue of work-item messages;
//! - `{name}.retry`: durable queue where a message waits (per-message TTL) before the broker
//!   dead-letters it back to `{name}`: delayed retries without a plugin;
//! - `{name}.dead`: durable quorum queue of messages that cannot be processed, each with an
//!   `x-archiver-reason` header saying why.
//!
//! Every publish is persistent and waits for the broker's confirm; a nack is an error.

use std::time::Duration;

use archiver_proto::{message, WorkItem};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::config::{redact_url, QueueConfig};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("RabbitMQ at {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("RabbitMQ {op}: {source}")]
    Broker { op: &'static str, source: lapin::Error },
    #[error("RabbitMQ refused (nacked) a message published to {queue}")]
    Nacked { queue: String },
}

/// The queue names derived from `queue.name`.
#[derive(Debug, Clone)]
pub struct QueueNames {
    pub work: String,
    pub retry: String,
    pub dead: String,
}

impl QueueNames {
    pub fn new(name: &str) -> Self {
        QueueNames { work: name.to_string(), retry: format!("{name}.retry"), dead: format!("{name}.dead") }
    }
}

/// A connection with one confirming channel and the topology declared.
pub struct Broker {
    pub connection: Connection,
    pub channel: Channel,
    pub names: QueueNames,
}

fn broker_err(op: &'static str) -> impl FnOnce(lapin::Error) -> QueueError {
    move |source| QueueError::Broker { op, source }
}

impl Broker {
    /// Connects as `connection_name` (shown in the management UI), declares the queues and turns
    /// on publisher confirms.
    pub async fn connect(cfg: &QueueConfig, connection_name: &str) -> Result<Broker, QueueError> {
        let props = ConnectionProperties::default().with_connection_name(LongString::from(connection_name));
        let connection = Connection::connect(&cfg.url, props)
            .await
            .map_err(|source| QueueError::Connect { url: redact_url(&cfg.url), source })?;
        let channel = connection.create_channel().await.map_err(broker_err("open channel"))?;
        let names = QueueNames::new(&cfg.name);
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        let mut quorum = FieldTable::default();
        quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        // Whatever the broker itself drops from the work queue (e.g. past a quorum queue's
        // delivery limit) lands in the dead-letter queue rather than vanishing.
        let mut work = quorum.clone();
        work.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        work.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(names.dead.as_str().into()));
        channel
            .queue_declare(names.work.as_str().into(), durable, work)
            .await
            .map_err(broker_err("declare the work queue"))?;
        channel
            .queue_declare(names.dead.as_str().into(), durable, quorum)
            .await
            .map_err(broker_err("declare the dead-letter queue"))?;
        let mut retry = FieldTable::default();
        retry.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        retry.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(names.work.as_str().into()));
        channel
            .queue_declare(names.retry.as_str().into(), durable, retry)
            .await
            .map_err(broker_err("declare the retry queue"))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(broker_err("enable confirms"))?;
        Ok(Broker { connection, channel, names })
    }

    async fn publish(&self, queue: &str, body: &[u8], props: BasicProperties) -> Result<(), QueueError> {
        let confirm = self
            .channel
            .basic_publish(ShortString::from(""), queue.into(), BasicPublishOptions::default(), body, props.with_delivery_mode(2))
            .await
            .map_err(broker_err("publish"))?
            .await
            .map_err(broker_err("publish confirm"))?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err(QueueError::Nacked { queue: queue.to_string() })
        }
    }

    /// Publishes work items, with the confirms awaited together rather than one round trip each.
    /// Each message starts its item's trace: a root `publish_item` span whose W3C context
    /// travels in the message headers, so the worker's spans continue it.
    /// Returns when the broker confirmed every one; any nack is an error.
    pub async fn publish_items(&self, items: &[WorkItem]) -> Result<(), QueueError> {
        let mut pending = Vec::with_capacity(items.len());
        for item in items {
            let span = tracing::debug_span!(
                parent: None,
                "publish_item",
                otel.kind = "producer",
                item = %item.slug(),
                table = %item.table_label(),
                range_start = %item.range_start,
                range_end = %item.range_end,
                queue = %self.names.work,
            );
            let props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_headers(crate::observe::telemetry::inject(&span))
                .with_delivery_mode(2);
            let confirm = self
                .channel
                .basic_publish(
                    ShortString::from(""),
                    self.names.work.as_str().into(),
                    BasicPublishOptions::default(),
                    &message::encode(item),
                    props,
                )
                .await
                .map_err(broker_err("publish"))?;
            pending.push((span, confirm));
        }
        // Each span ends when its confirm arrived.
        for (span, confirm) in pending {
            let acked = confirm.await.map_err(broker_err("publish confirm"));
            match acked {
                Ok(c) if c.is_ack() => {}
                Ok(_) => {
                    let e = QueueError::Nacked { queue: self.names.work.clone() };
                    crate::observe::telemetry::record_error(&span, &e);
                    return Err(e);
                }
                Err(e) => {
                    crate::observe::telemetry::record_error(&span, &e);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Messages ready in the work and retry queues: 0 when nothing waits to be delivered.
    pub async fn waiting(&self) -> Result<u32, QueueError> {
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let mut n = 0;
        for q in [&self.names.work, &self.names.retry] {
            let q = self
                .channel
                .queue_declare(q.as_str().into(), passive, FieldTable::default())
                .await
                .map_err(broker_err("count a queue's messages"))?;
            n += q.message_count();
        }
        Ok(n)
    }

    /// Consumers attached to the work queue: 0 when no worker is there to take items.
    pub async fn consumers(&self) -> Result<u32, QueueError> {
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let q = self
            .channel
            .queue_declare(self.names.work.as_str().into(), passive, FieldTable::default())
            .await
            .map_err(broker_err("count the work queue's consumers"))?;
        Ok(q.consumer_count())
    }

    /// Parks a message in the retry queue for `delay`, after which it returns to the work queue.
    pub async fn publish_retry(&self, body: &[u8], headers: FieldTable, delay: Duration) -> Result<(), QueueError> {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(headers)
            .with_expiration(delay.as_millis().max(1).to_string().into());
        self.publish(&self.names.retry, body, props).await
    }

    /// Sends a message to the dead-letter queue with the reason it cannot be processed.
    pub async fn dead_letter(&self, body: &[u8], headers: FieldTable, reason: &str) -> Result<(), QueueError> {
        let mut headers = headers;
        headers.insert("x-archiver-reason".into(), AMQPValue::LongString(reason.into()));
        let props = BasicProperties::default().with_headers(headers);
        self.publish(&self.names.dead, body, props).await
    }

    pub async fn close(&self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}
