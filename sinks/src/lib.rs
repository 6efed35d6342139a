//! hookgate's sinks: where accepted events go.
//!
//! Layout:
//! - [`log`]: the durable log the ingest path appends to before answering 2xx: the Kafka
//!   producer, the local spool (the embedded default when no Kafka is configured), the
//!   forwarder from one to the other, and the quarantine of records Kafka refuses for good.
//! - [`chat`]: the dispatcher and chatbot / HTTP sinks (Telegram, Discord, Slack, HTTP
//!   forward, LLM assistant) with retries, rate limits and dead-lettering.
//! - [`feed`]: what feeds the dispatcher from the log (Kafka consumer group or spool
//!   cursor), committing only after delivery, and the dead-letter stores with list/replay.
//! - [`units`]: config value types shared with the ingest crate (byte sizes).

pub mod chat;
pub mod feed;
pub mod log;
pub mod units;

pub use log::{AppendError, Log};
