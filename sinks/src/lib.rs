//! hookgate's sinks: where accepted events go.
//!
//! Layout:
//! - [`log`]: the durable log the ingest path appends to before answering 2xx: the Kafka
//!   producer, the local spool (the embedded default when no Kafka is configured), the
//!   forwarder from one to the other, and the quarantine of records Kafka refuses for good.
//! - [`dispatch`]: the dispatcher (routes, retries, dead-lettering), the feeds that hand it
//!   events from the log (Kafka consumer group or spool cursor), committing only after
//!   delivery, and the dead-letter stores with list/replay.
//! - [`chat`]: talking to chat APIs: the sinks (Telegram, Discord, Slack, HTTP forward,
//!   LLM assistant), their config, markup, templates, rate limits and networking.
//! - [`units`]: config value types shared with the ingest crate (byte sizes).
//! - [`secret`]: [`Secret`], the one type of every secret in config (redacted `Debug`,
//!   value-free serde errors), and reading secrets from files.
//!
//! Dependencies run one way: `dispatch` uses `chat` and `log`; `chat` and `log` use
//! neither.

pub mod chat;
pub mod dispatch;
pub mod log;
pub mod secret;
pub mod units;

pub use log::{AppendError, Log};
pub use secret::Secret;
