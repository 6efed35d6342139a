//! The durable log the ingest path appends to. An append resolves only once the event is
//! durable (broker ack or local fsync), except in the explicit discard mode for benchmarks.
//!
//! Layout:
//! - here: [`Log`], one enum over the kinds of log, so the request path has one `append`.
//! - [`kafka`]: the Kafka producer (idempotent, acks=all), its error classes and topic checks.
//! - [`spool`]: the local segmented append-only log with group commit.
//! - [`forwarder`]: drains the spool into Kafka in order.

pub mod forwarder;
pub mod kafka;
pub mod spool;

use std::time::Duration;

use hookgate_proto::Event;

use self::kafka::{AckMode, KafkaLog, KafkaSinkError};
use self::spool::{Spool, SpoolError};

/// Name of the spool cursor of the Kafka forwarder.
pub const FORWARDER: &str = "forwarder";

/// Why an event could not be made durable. Maps to HTTP in the ingest crate only.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Retriable: try again after `retry_after` seconds (503).
    #[error("the log cannot take the event now")]
    Unavailable {
        /// Seconds for the `Retry-After` header.
        retry_after: u32,
    },
    /// The spool is at `max_bytes` or the disk is full (503).
    #[error("the spool is full")]
    Full {
        /// Seconds for the `Retry-After` header.
        retry_after: u32,
    },
    /// The record is too large for the log (413).
    #[error("the event is too large for the log")]
    TooLarge,
    /// The log refuses this record for good (500).
    #[error("the log rejected the event")]
    Rejected,
}

/// Where accepted events are made durable.
#[derive(Clone)]
pub enum Log {
    /// Kafka only: a broker outage answers 503.
    Kafka(KafkaLog),
    /// Kafka with the spool as safety net (`ack` decides which comes first).
    KafkaSpool(KafkaLog, Spool),
    /// The spool alone: the embedded default.
    Spool(Spool),
    /// Acknowledge without storing: only for measuring the request path.
    Discard,
}

const SPOOL_RETRY_AFTER: u32 = 5;

impl Log {
    /// Makes `ev` durable, per the log's mode.
    pub async fn append(&self, ev: &Event) -> Result<(), AppendError> {
        match self {
            Log::Discard => Ok(()),
            Log::Spool(s) => spool_append(s, ev).await,
            Log::Kafka(k) => k.append(ev).await.map_err(|e| kafka_err(k, e)),
            Log::KafkaSpool(k, s) => match k.config().ack {
                AckMode::Spool => spool_append(s, ev).await,
                AckMode::Kafka => {
                    // While the spool holds a backlog, new events go behind it so order per
                    // key is kept and a down broker is not waited on per request.
                    if s.end_offset() > s.cursor_cached(FORWARDER) {
                        metrics::counter!("hookgate_spill_total").increment(1);
                        return spool_append(s, ev).await;
                    }
                    match k.append_within(ev, k.config().spill_after).await {
                        Ok(()) => Ok(()),
                        Err(KafkaSinkError::Unavailable(e)) => {
                            tracing::warn!(error = %e, "kafka slow or down; spilling event to the spool");
                            metrics::counter!("hookgate_spill_total").increment(1);
                            spool_append(s, ev).await
                        }
                        Err(e) => Err(kafka_err(k, e)),
                    }
                }
            },
        }
    }

    /// Whether the log accepts writes now (`/readyz`).
    pub fn is_ready(&self) -> bool {
        match self {
            Log::Discard => true,
            Log::Spool(s) => !s.is_full(),
            Log::Kafka(k) => k.is_ready(),
            Log::KafkaSpool(k, s) => k.is_ready() || !s.is_full(),
        }
    }

    /// A word for `/readyz`: `ok`, `degraded` (spilling / backlog) or `unavailable`.
    pub fn status(&self) -> &'static str {
        match self {
            Log::KafkaSpool(k, s) if self.is_ready() => {
                if !k.is_ready() || s.end_offset() > s.cursor_cached(FORWARDER) {
                    "degraded"
                } else {
                    "ok"
                }
            }
            _ if self.is_ready() => "ok",
            _ => "unavailable",
        }
    }

    /// The spool, when the log has one.
    pub fn spool(&self) -> Option<&Spool> {
        match self {
            Log::KafkaSpool(_, s) | Log::Spool(s) => Some(s),
            _ => None,
        }
    }

    /// The producer, when the log has one.
    pub fn kafka(&self) -> Option<&KafkaLog> {
        match self {
            Log::KafkaSpool(k, _) | Log::Kafka(k) => Some(k),
            _ => None,
        }
    }

    /// Flushes whatever is in flight before exit.
    pub async fn shutdown(&self, timeout: Duration) {
        if let Some(k) = self.kafka() {
            k.flush(timeout).await;
        }
    }
}

async fn spool_append(s: &Spool, ev: &Event) -> Result<(), AppendError> {
    match s.append(ev).await {
        Ok(_) => Ok(()),
        Err(SpoolError::Full) => Err(AppendError::Full {
            retry_after: SPOOL_RETRY_AFTER,
        }),
        Err(e) => {
            tracing::error!(error = %e, "spool append failed");
            Err(AppendError::Unavailable {
                retry_after: SPOOL_RETRY_AFTER,
            })
        }
    }
}

fn kafka_err(k: &KafkaLog, e: KafkaSinkError) -> AppendError {
    match e {
        KafkaSinkError::TooLarge(_) => AppendError::TooLarge,
        KafkaSinkError::Rejected(e) => {
            tracing::error!(error = %e, "kafka rejected a record");
            AppendError::Rejected
        }
        e => {
            tracing::warn!(error = %e, "kafka could not take an event");
            AppendError::Unavailable {
                retry_after: k.config().retry_after_secs,
            }
        }
    }
}
