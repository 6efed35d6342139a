//! The durable log the ingest path appends to. An append resolves only once the event is
//! durable (broker ack, local fsync, or — for a record Kafka refuses for good — the
//! quarantine's fsync), except in the explicit discard mode for benchmarks.
//!
//! Layout:
//! - here: [`Log`], one enum over the kinds of log, so the request path has one `append`.
//! - [`error`]: [`AppendError`], what an append can fail with (sorted once, in `kafka`).
//! - [`kafka`]: the Kafka producer (idempotent, acks=all), its error classes, its
//!   self-healing (a producer whose errors persist is replaced), and topic checks.
//! - [`spool`]: the local segmented append-only log with group commit.
//! - [`forwarder`]: drains the spool into Kafka in order.
//! - [`quarantine`]: records Kafka refuses for good, on disk, for list and replay.
//!
//! Spilling (`ack = "kafka"` with a spool) is decided at admission: while the broker is
//! known slow or down, or the spool holds a backlog, a new event goes to the spool and is
//! never handed to librdkafka. An event already handed to librdkafka is waited for until
//! its delivery report; only if that report is a failure is it spooled (it may then have
//! reached the broker after all: `hookgate_kafka_maybe_written_total` counts such failures).

pub mod error;
pub mod forwarder;
pub mod kafka;
pub mod quarantine;
pub mod spool;

use std::time::Duration;

use hookgate_proto::Event;

pub use self::error::{AppendError, Cause, RefuseReason};
use self::kafka::{AckMode, KafkaLog};
use self::quarantine::Quarantine;
use self::spool::{Spool, SpoolError};

/// Where an appended event was stored: what the console reads it back from. `Copy` and
/// small, so the request path carries it back from the append without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Position {
    /// Not stored where it can be read back (discard mode), or not known.
    #[default]
    Unknown,
    /// The record at `offset` in `partition` of the event's topic (the delivery report's).
    Kafka {
        /// The partition.
        partition: i32,
        /// The offset in the partition.
        offset: i64,
    },
    /// The spool record at this offset.
    Spool(u64),
    /// In the quarantine (Kafka refused it for good), under its `hookgate-id`.
    Quarantine,
}

/// Name of the spool cursor of the Kafka forwarder.
pub const FORWARDER: &str = "forwarder";

/// Kafka with the spool as safety net, and the quarantine beside the spool.
#[derive(Clone)]
pub struct Spilling {
    /// The producer.
    pub kafka: KafkaLog,
    /// The local spool events spill to (and, with `ack = "spool"`, all go to first).
    pub spool: Spool,
    /// Where records Kafka refuses for good are kept.
    pub quarantine: Quarantine,
}

/// Where accepted events are made durable.
#[derive(Clone)]
pub enum Log {
    /// Kafka only: a broker outage answers 503, a refused record 413/500.
    Kafka(KafkaLog),
    /// Kafka with the spool as safety net (`ack` decides which comes first).
    KafkaSpool(Spilling),
    /// The spool alone: the embedded default.
    Spool(Spool),
    /// Acknowledge without storing: only for measuring the request path.
    Discard,
}

const SPOOL_RETRY_AFTER: u32 = 5;

impl Log {
    /// Makes `ev` durable, per the log's mode; says where it went.
    pub async fn append(&self, ev: &Event) -> Result<Position, AppendError> {
        match self {
            Log::Discard => Ok(Position::Unknown),
            Log::Spool(s) => spool_append(s, ev).await,
            Log::Kafka(k) => k.append(ev).await,
            Log::KafkaSpool(sp) => match sp.kafka.config().ack {
                AckMode::Spool => spool_append(&sp.spool, ev).await,
                AckMode::Kafka => sp.append_kafka_first(ev).await,
            },
        }
    }

    /// Whether the log accepts writes now (`/readyz`).
    pub fn is_ready(&self) -> bool {
        match self {
            Log::Discard => true,
            Log::Spool(s) => !s.is_full(),
            Log::Kafka(k) => k.is_ready(),
            Log::KafkaSpool(sp) => sp.kafka.is_ready() || !sp.spool.is_full(),
        }
    }

    /// A word for `/readyz`: `ok`, `degraded` (spilling, a backlog, or records in the
    /// quarantine) or `unavailable`.
    pub fn status(&self) -> &'static str {
        match self {
            Log::KafkaSpool(sp) if self.is_ready() => {
                if !sp.kafka.is_ready() || sp.backlog() || !sp.quarantine.is_empty() {
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
            Log::KafkaSpool(sp) => Some(&sp.spool),
            Log::Spool(s) => Some(s),
            _ => None,
        }
    }

    /// The producer, when the log has one.
    pub fn kafka(&self) -> Option<&KafkaLog> {
        match self {
            Log::KafkaSpool(sp) => Some(&sp.kafka),
            Log::Kafka(k) => Some(k),
            _ => None,
        }
    }

    /// The quarantine, when the log has one.
    pub fn quarantine(&self) -> Option<&Quarantine> {
        match self {
            Log::KafkaSpool(sp) => Some(&sp.quarantine),
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

impl Spilling {
    /// Whether the spool holds events the forwarder has not sent yet.
    pub fn backlog(&self) -> bool {
        self.spool.end_offset() > self.spool.cursor_cached(FORWARDER)
    }

    /// `ack = "kafka"`: to Kafka, unless the broker is known slow or down or a backlog waits
    /// (then to the spool, behind it, so order per key is kept); a failed delivery is
    /// spooled, a refused one quarantined.
    async fn append_kafka_first(&self, ev: &Event) -> Result<Position, AppendError> {
        if self.backlog() || self.kafka.should_spill() {
            metrics::counter!("hookgate_spill_total", "reason" => "admission").increment(1);
            return spool_append(&self.spool, ev).await;
        }
        match self.kafka.append_watching(ev).await {
            Ok(at) => Ok(at),
            Err(AppendError::Refused { reason, error }) => self
                .quarantine
                .put(ev, reason, error.to_string())
                .await
                .map(|()| Position::Quarantine)
                .map_err(|e| {
                    tracing::error!(error = %e, "quarantine write failed");
                    AppendError::Unavailable {
                        retry_after: SPOOL_RETRY_AFTER,
                        cause: Cause::Spool("quarantine write failed"),
                    }
                }),
            Err(e) => {
                tracing::warn!(error = %e, "kafka delivery failed; spooling the event");
                metrics::counter!("hookgate_spill_total", "reason" => "failed_delivery")
                    .increment(1);
                spool_append(&self.spool, ev).await
            }
        }
    }
}

async fn spool_append(s: &Spool, ev: &Event) -> Result<Position, AppendError> {
    match s.append(ev).await {
        Ok(offset) => Ok(Position::Spool(offset)),
        Err(SpoolError::Full) => Err(AppendError::Full {
            retry_after: SPOOL_RETRY_AFTER,
        }),
        Err(SpoolError::TooLarge) => Err(AppendError::TooLarge),
        Err(e) => {
            tracing::error!(error = %e, "spool append failed");
            Err(AppendError::Unavailable {
                retry_after: SPOOL_RETRY_AFTER,
                cause: Cause::Spool("append failed"),
            })
        }
    }
}

/// What the log's unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::Arc;

    use bytes::Bytes;
    use hookgate_proto::Event;

    /// A GitHub push on `topic` with delivery id `d{n}`, key `k{n}` and a 100-byte body.
    pub(crate) fn event(topic: &str, n: u32) -> Event {
        Event {
            id: hookgate_proto::Ulid::new(),
            source: Arc::from("s"),
            provider: Arc::from("github"),
            topic: Arc::from(topic),
            event_type: "push".into(),
            delivery_id: format!("d{n}"),
            key: Bytes::from(format!("k{n}")),
            received_at_ms: 1,
            content_type: None,
            kept_headers: vec![],
            body: Bytes::from(vec![b'x'; 100]),
        }
    }
}
