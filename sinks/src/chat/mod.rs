//! Talking to chat APIs: the sinks (Telegram, Discord, Slack, HTTP forward, LLM responder),
//! their config, markup, templates, outbound networking and client-side rate limits. What
//! delivers events to them (routes, retries, dead letters) is [`crate::dispatch`], which
//! uses this module; nothing here uses `dispatch`.
//!
//! Layout:
//! - [`config`]: the `[[sinks]]` and `[[routes]]` sections as users write them
//!   ([`ChatConfig`]), and each sink's [`RetryPolicy`].
//! - [`sink`]: the [`Sink`] trait (one delivery attempt) and its [`Message`].
//! - [`telegram`], [`discord`], [`slack`], [`http`]: one file per sink.
//! - [`llm`]: [`LlmSink`], which turns a chat message into a question and completes it;
//!   the dispatcher sends the answer through the `reply_via` sink.
//! - [`target`]: a built sink ([`target::Target`]) from one config entry.
//! - [`chat_in`]: reading an incoming chat message (Telegram, Discord, Slack) from a body.
//! - [`markup`]: escaping and splitting text per the sink's markup.
//! - [`template`]: route templates (minijinja), compiled per markup.
//! - [`ratelimit`]: token bucket, per-chat spacing and the 429 pause each sink applies in
//!   `send`, to its API's limits.
//! - [`net`]: HTTP clients, the public-only resolver, response body limits.
//! - [`error`], [`metrics`]: [`SinkError`] / [`ConfigError`],
//!   the delivery metrics.

pub mod chat_in;
pub mod config;
pub mod discord;
pub mod error;
pub mod http;
pub mod llm;
pub mod markup;
pub mod metrics;
pub mod net;
pub mod ratelimit;
pub mod sink;
pub mod slack;
pub mod target;
pub mod telegram;
pub mod template;

pub use crate::secret::Secret;
pub use chat_in::{ChatMessage, Platform};
pub use config::{
    ChatConfig, ChatId, DiscordConfig, HttpConfig, LlmConfig, ParseMode, RetryPolicy, RouteConfig,
    SinkConfig, SlackConfig, TelegramConfig,
};
pub use discord::DiscordSink;
pub use error::{ConfigError, SinkError};
pub use http::HttpSink;
pub use llm::LlmSink;
pub use markup::Markup;
pub use sink::{Message, Sink};
pub use slack::SlackSink;
pub use telegram::TelegramSink;
