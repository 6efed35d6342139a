//! Chat sinks for hookgate: sink and route config, templates, the sinks (Telegram, Discord,
//! Slack, HTTP forward, LLM responder), retries, rate limits and the dispatcher that
//! delivers one event to every matching route and dead-letters what cannot be delivered.
//!
//! Entry points: [`ChatConfig`] (deserialize from the config file), [`check`] (for a
//! `check` command), [`Dispatcher`] (`new`, `dispatch`, `replay`) and [`DeadLetter`].

pub mod chat_in;
pub mod config;
pub mod discord;
pub mod dispatcher;
pub mod dlq;
pub mod error;
pub mod http;
pub mod llm;
pub mod markup;
pub mod metrics;
pub mod net;
pub mod ratelimit;
pub mod retry;
pub mod secret;
pub mod sink;
pub mod slack;
pub mod telegram;
pub mod template;

pub use chat_in::{ChatMessage, Platform};
pub use config::{
    ChatConfig, ChatId, DiscordConfig, HttpConfig, LlmConfig, ParseMode, RouteConfig, SinkConfig,
    SlackConfig, TelegramConfig,
};
pub use discord::DiscordSink;
pub use dispatcher::{check, Delivery, DeliveryOutcome, DispatchReport, Dispatcher};
pub use dlq::{DeadLetter, DeadLettered, MemoryDeadLetter};
pub use error::{ConfigError, DlqError, SinkError};
pub use http::HttpSink;
pub use llm::LlmSink;
pub use markup::Markup;
pub use retry::RetryPolicy;
pub use secret::Secret;
pub use sink::{Message, Sink, Target};
pub use slack::SlackSink;
pub use telegram::TelegramSink;
