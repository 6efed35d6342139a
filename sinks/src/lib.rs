//! hookgate's sinks: where accepted events go.
//!
//! Layout:
//! - [`log`]: the durable log the ingest path appends to before answering 2xx; one enum
//!   over the kinds below, so the request path has a single `append` to await.
//! - [`kafka`]: the Kafka producer (idempotent, acks=all) and its topic checks.
//! - [`spool`]: the local segmented append-only log with group commit; the embedded
//!   default when no Kafka is configured.
//! - [`chat`]: the dispatcher and chatbot / HTTP sinks (Telegram, Discord, Slack, HTTP
//!   forward, LLM assistant) with retries, rate limits and dead-lettering.
//! - [`feed`]: what feeds the dispatcher from the log (Kafka consumer group or spool
//!   cursor), committing only after delivery, and the dead-letter stores with list/replay.
//! - [`units`]: config value types shared with the ingest crate (byte sizes).

pub mod chat;
pub mod feed;
pub mod kafka;
pub mod log;
pub mod spool;
pub mod units;

pub use log::{AppendError, Log};
