//! The [`Sink`] trait every delivery target implements.

use async_trait::async_trait;
use hookgate_proto::Event;

use crate::chat::chat_in::Platform;
use crate::chat::config::RetryPolicy;
use crate::chat::error::SinkError;
use crate::chat::markup::Markup;

/// One message for one delivery attempt.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The event being delivered (the http sink forwards its body).
    pub event: &'a Event,
    /// The rendered text, already escaped for the sink's markup and within its length limit.
    pub text: &'a str,
    /// Send to this chat/channel instead of the configured one (replies from an llm sink).
    pub chat: Option<&'a str>,
}

/// A delivery target. `send` makes ONE attempt (after waiting for its rate limiter);
/// the dispatcher owns retries, splitting and dead-lettering.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The configured name.
    fn name(&self) -> &str;
    /// How template values are escaped; `None` = the sink sends no text (it forwards the body).
    fn markup(&self) -> Option<Markup>;
    /// Longest text per message in UTF-16 code units; longer texts are split.
    fn max_len(&self) -> usize;
    /// The chat platform, for sinks that accept a per-message chat override (`reply_via` targets).
    fn platform(&self) -> Option<Platform> {
        None
    }
    /// The chat this sink is configured to send to, when it names one (Telegram's
    /// `chat_id`); an `llm` sink replying through it answers only there by default.
    fn configured_chat(&self) -> Option<&str> {
        None
    }
    /// Retry, timeout and age limits.
    fn retry(&self) -> &RetryPolicy;
    /// One delivery attempt.
    async fn send(&self, msg: &Message<'_>) -> Result<(), SinkError>;
}
