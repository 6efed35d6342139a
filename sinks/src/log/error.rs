//! [`AppendError`]: why an event could not be made durable. Kafka's errors are sorted into
//! it once, in `kafka::classify`; the ingest crate maps it to HTTP at its boundary.

use rdkafka::error::KafkaError;

/// Why an event could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// Retriable: try again after `retry_after` seconds (503).
    #[error("the log cannot take the event now: {cause}")]
    Unavailable {
        /// Seconds for the `Retry-After` header.
        retry_after: u32,
        /// What failed.
        cause: Cause,
    },
    /// The spool is at `max_bytes` (and nothing can be dropped) or the disk is full (503).
    #[error("the spool is full")]
    Full {
        /// Seconds for the `Retry-After` header.
        retry_after: u32,
    },
    /// The record is larger than the spool takes (413).
    #[error("the event is larger than the log takes")]
    TooLarge,
    /// Final: Kafka refuses this record for good; sending it again as is cannot succeed.
    #[error("kafka refused the record for good ({reason}): {error}")]
    Refused {
        /// Why, as a metric label.
        reason: RefuseReason,
        /// librdkafka's error.
        error: KafkaError,
    },
}

/// What made a retriable append fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Cause {
    /// The Kafka producer (broker down or slow, queue full, a producer that was replaced).
    #[error("kafka: {0}")]
    Kafka(KafkaError),
    /// The spool (I/O error, writer stopped after an fsync error, shut down).
    #[error("spool: {0}")]
    Spool(&'static str),
}

/// Why Kafka refuses a record for good (the `reason` label of `hookgate_quarantined_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefuseReason {
    /// Larger than the producer's or the broker's `message.max.bytes`.
    #[error("too_large")]
    TooLarge,
    /// The topic does not exist (deleted while hookgate runs).
    #[error("unknown_topic")]
    UnknownTopic,
    /// The credentials may not write to the topic or cluster.
    #[error("not_authorized")]
    NotAuthorized,
    /// The broker calls the record or topic invalid.
    #[error("invalid")]
    Invalid,
}

impl RefuseReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::TooLarge => "too_large",
            RefuseReason::UnknownTopic => "unknown_topic",
            RefuseReason::NotAuthorized => "not_authorized",
            RefuseReason::Invalid => "invalid",
        }
    }
}

impl AppendError {
    /// Whether the record may reach Kafka all the same: its message timed out or was purged
    /// while a produce request carrying it may have been in flight.
    pub fn maybe_written(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        match self {
            AppendError::Unavailable {
                cause: Cause::Kafka(e),
                ..
            } => matches!(
                e,
                KafkaError::Canceled
                    | KafkaError::MessageProduction(
                        C::MessageTimedOut | C::PurgeInflight | C::RequestTimedOut
                    )
            ),
            _ => false,
        }
    }
}
