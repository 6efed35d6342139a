//! A built sink: [`Target`], and [`build`] from one `[[sinks]]` entry. Adding a sink type is
//! a new file, one [`SinkConfig`] variant and one arm here.

use std::sync::Arc;

use crate::chat::config::SinkConfig;
use crate::chat::discord::DiscordSink;
use crate::chat::error::ConfigError;
use crate::chat::http::HttpSink;
use crate::chat::llm::LlmSink;
use crate::chat::sink::Sink;
use crate::chat::slack::SlackSink;
use crate::chat::telegram::TelegramSink;

/// A built sink: a plain delivery target or an llm responder.
#[derive(Clone)]
pub enum Target {
    /// Delivers rendered messages.
    Deliver(Arc<dyn Sink>),
    /// Answers chat messages; the dispatcher sends the answer through its `reply_via` sink.
    Llm(Arc<LlmSink>),
}

/// Builds the runtime sink for one config entry.
pub fn build(cfg: &SinkConfig) -> Result<Target, ConfigError> {
    Ok(match cfg {
        SinkConfig::Telegram(c) => Target::Deliver(Arc::new(TelegramSink::new(c)?)),
        SinkConfig::Discord(c) => Target::Deliver(Arc::new(DiscordSink::new(c)?)),
        SinkConfig::Slack(c) => Target::Deliver(Arc::new(SlackSink::new(c)?)),
        SinkConfig::Http(c) => Target::Deliver(Arc::new(HttpSink::new(c)?)),
        SinkConfig::Llm(c) => Target::Llm(Arc::new(LlmSink::new(c)?)),
    })
}
