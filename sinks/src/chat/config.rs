//! The `[[sinks]]` and `[[routes]]` config sections, as users write them.
//!
//! Doc comments on fields are the user documentation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::{inline_or_file, Secret};

/// The chat part of the config file: sinks and the routes that feed them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// Delivery targets.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Which events go to which sinks, rendered how.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// One delivery target, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum SinkConfig {
    /// A Telegram chat via the Bot API `sendMessage`.
    Telegram(TelegramConfig),
    /// A Discord channel via an incoming webhook.
    Discord(DiscordConfig),
    /// A Slack channel via an incoming webhook.
    Slack(SlackConfig),
    /// Forward the original body to an HTTP endpoint, re-signed (Standard Webhooks).
    Http(HttpConfig),
    /// Answer chat messages with an OpenAI-compatible model, replying through a chat sink.
    Llm(LlmConfig),
}

impl SinkConfig {
    /// The sink's name.
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Telegram(c) => &c.name,
            SinkConfig::Discord(c) => &c.name,
            SinkConfig::Slack(c) => &c.name,
            SinkConfig::Http(c) => &c.name,
            SinkConfig::Llm(c) => &c.name,
        }
    }

    /// The sink's retry/timeout policy, with per-type defaults applied.
    pub fn retry(&self) -> RetryPolicy {
        match self {
            SinkConfig::Telegram(c) => c.retry(DEFAULT_TIMEOUT),
            SinkConfig::Discord(c) => c.retry(DEFAULT_TIMEOUT),
            SinkConfig::Slack(c) => c.retry(DEFAULT_TIMEOUT),
            SinkConfig::Http(c) => c.retry(DEFAULT_TIMEOUT),
            SinkConfig::Llm(c) => c.retry(DEFAULT_LLM_TIMEOUT),
        }
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_LLM_TIMEOUT: Duration = Duration::from_secs(30);

fn default_max_attempts() -> u32 {
    8
}
fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}
fn default_backoff_base() -> Duration {
    Duration::from_millis(500)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}

/// Declares a sink config struct with the fields every sink shares appended, because
/// `deny_unknown_fields` does not work together with `#[serde(flatten)]`.
macro_rules! sink_config {
    (
        $(#[$m:meta])*
        pub struct $name:ident { $( $(#[$fm:meta])* pub $f:ident : $t:ty, )* }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Unique sink name; routes refer to it and it labels metrics.
            pub name: String,
            $( $(#[$fm])* pub $f: $t, )*
            /// Attempts per message before it is dead-lettered (default 8).
            #[serde(default = "default_max_attempts")]
            pub max_attempts: u32,
            /// Stop retrying once the event is this old, counted from its receipt (default "1h").
            #[serde(default = "default_max_age", with = "humantime_serde")]
            pub max_age: Duration,
            /// Per-request timeout (default "10s"; "30s" for `llm`).
            #[serde(default, with = "humantime_serde")]
            pub timeout: Option<Duration>,
            /// Retry delay ceiling for the first retry; it doubles per attempt and the
            /// actual delay is random below it (full jitter). Default "500ms".
            #[serde(default = "default_backoff_base", with = "humantime_serde")]
            pub backoff_base: Duration,
            /// The retry delay ceiling never grows past this (default "5m").
            #[serde(default = "default_backoff_max", with = "humantime_serde")]
            pub backoff_max: Duration,
        }

        impl $name {
            /// The retry policy from the shared fields; `default_timeout` fills an absent `timeout`.
            pub fn retry(&self, default_timeout: Duration) -> RetryPolicy {
                RetryPolicy {
                    max_attempts: self.max_attempts.max(1),
                    max_age: self.max_age,
                    timeout: self.timeout.unwrap_or(default_timeout),
                    backoff_base: self.backoff_base,
                    backoff_max: self.backoff_max,
                }
            }
        }
    };
}

/// How one sink retries: the flat retry fields of its config. The backoff and the retry
/// loop that use it are the dispatcher's (`dispatch::retry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per message, at least 1.
    pub max_attempts: u32,
    /// No retry is scheduled past this age of the event (from its receipt).
    pub max_age: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Delay ceiling for the first retry.
    pub backoff_base: Duration,
    /// Largest delay ceiling.
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            max_age: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Telegram's message formatting modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ParseMode {
    /// `HTML`: values are escaped for `&`, `<`, `>`.
    #[serde(rename = "HTML", alias = "html")]
    Html,
    /// `MarkdownV2`: values get every MarkdownV2 special character escaped.
    #[serde(rename = "MarkdownV2", alias = "markdownv2")]
    MarkdownV2,
}

impl ParseMode {
    /// The value of the Bot API `parse_mode` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            ParseMode::Html => "HTML",
            ParseMode::MarkdownV2 => "MarkdownV2",
        }
    }
}

/// A chat id given as a string or a number (`chat_id = -100123` or `"-100123"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ChatId {
    /// Numeric id.
    Int(i64),
    /// Text id or `@channelusername`.
    Text(String),
}

impl std::fmt::Display for ChatId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatId::Int(i) => write!(f, "{i}"),
            ChatId::Text(s) => f.write_str(s),
        }
    }
}

fn default_telegram_api() -> String {
    "https://api.telegram.org".into()
}
fn default_bot_rate() -> u32 {
    30
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}

sink_config! {
    /// `type = "telegram"`: sends to a chat with the Bot API.
    pub struct TelegramConfig {
        /// The bot token from @BotFather (secret); or `bot_token_file`.
        #[serde(default, deserialize_with = "crate::secret::field::bot_token")]
        pub bot_token: Option<Secret>,
        /// A file holding the bot token (read at start).
        #[serde(default)]
        pub bot_token_file: Option<PathBuf>,
        /// Target chat id (or `@channel`); a reply from an `llm` sink goes to the chat the message came from instead.
        pub chat_id: ChatId,
        /// `"HTML"`, `"MarkdownV2"`, or absent for plain text. Template values are escaped to match.
        #[serde(default)]
        pub parse_mode: Option<ParseMode>,
        /// Bot API base URL (default "https://api.telegram.org").
        #[serde(default = "default_telegram_api")]
        pub api_url: String,
        /// Messages per second across all chats of this bot (default 30).
        #[serde(default = "default_bot_rate")]
        pub bot_rate: u32,
        /// Minimum spacing of messages to one chat (default "1s").
        #[serde(default = "one_second", with = "humantime_serde")]
        pub chat_interval: Duration,
    }
}

sink_config! {
    /// `type = "discord"`: posts through a channel webhook.
    pub struct DiscordConfig {
        /// The webhook URL `https://discord.com/api/webhooks/ID/TOKEN` (secret); or `webhook_url_file`.
        #[serde(default, deserialize_with = "crate::secret::field::webhook_url")]
        pub webhook_url: Option<Secret>,
        /// A file holding the webhook URL (read at start).
        #[serde(default)]
        pub webhook_url_file: Option<PathBuf>,
        /// Overrides the webhook's display name.
        #[serde(default)]
        pub username: Option<String>,
    }
}

sink_config! {
    /// `type = "slack"`: posts through an incoming webhook.
    pub struct SlackConfig {
        /// The incoming-webhook URL `https://hooks.slack.com/services/...` (secret); or `webhook_url_file`.
        #[serde(default, deserialize_with = "crate::secret::field::webhook_url")]
        pub webhook_url: Option<Secret>,
        /// A file holding the webhook URL (read at start).
        #[serde(default)]
        pub webhook_url_file: Option<PathBuf>,
        /// Minimum spacing of messages (default "1s", Slack's documented webhook rate).
        #[serde(default = "one_second", with = "humantime_serde")]
        pub interval: Duration,
    }
}

sink_config! {
    /// `type = "http"`: forwards the original body bytes, re-signed with Standard Webhooks headers.
    pub struct HttpConfig {
        /// Destination URL (http or https). Redirects are not followed.
        pub url: String,
        /// `whsec_<base64>` key for the `webhook-signature` header (secret); absent = unsigned.
        #[serde(default, deserialize_with = "crate::secret::field::signing_secret")]
        pub signing_secret: Option<Secret>,
        /// A file holding the signing secret (read at start).
        #[serde(default)]
        pub signing_secret_file: Option<PathBuf>,
        /// Allow loopback, private, link-local and CGNAT destinations (default false).
        #[serde(default)]
        pub allow_private: bool,
    }
}

fn default_history() -> usize {
    20
}
fn default_max_chats() -> usize {
    1000
}

sink_config! {
    /// `type = "llm"`: answers chat messages (Telegram, Slack, Discord) with an
    /// OpenAI-compatible model and replies through a chat sink.
    pub struct LlmConfig {
        /// Base URL of the OpenAI-compatible API, e.g. "http://127.0.0.1:11434/v1".
        pub api_url: String,
        /// Model name sent in each request.
        pub model: String,
        /// Bearer token (secret), if the API needs one.
        #[serde(default, deserialize_with = "crate::secret::field::api_key")]
        pub api_key: Option<Secret>,
        /// A file holding the API key (read at start).
        #[serde(default)]
        pub api_key_file: Option<PathBuf>,
        /// System message put first in every request.
        #[serde(default)]
        pub system_prompt: Option<String>,
        /// Messages (user and assistant) remembered per chat (default 20; 0 = none).
        #[serde(default = "default_history")]
        pub history: usize,
        /// Chats whose history is remembered; the least recently used is forgotten first (default 1000).
        #[serde(default = "default_max_chats")]
        pub max_chats: usize,
        /// Name of the chat sink answers are sent through, into the chat the message came from.
        pub reply_via: String,
        /// Chats (ids as text or numbers) whose messages are answered; `"*"` = any chat.
        /// Absent: only the `reply_via` sink's own `chat_id` (Telegram); a Slack or Discord
        /// reply sink names no chat, so set this or `allow_users` there. A message from
        /// anywhere else costs nothing: no model call, no reply.
        #[serde(default)]
        pub allow_chats: Option<Vec<ChatId>>,
        /// Users (ids) whose messages are answered in any chat, in addition to `allow_chats`.
        #[serde(default)]
        pub allow_users: Vec<ChatId>,
    }
}

impl TelegramConfig {
    /// `bot_token` or the contents of `bot_token_file` (exactly one must be set).
    pub fn bot_token(&self) -> Result<Secret, String> {
        inline_or_file(
            "bot_token",
            self.bot_token.as_ref(),
            self.bot_token_file.as_deref(),
        )?
        .ok_or_else(|| "set `bot_token` or `bot_token_file`".into())
    }
}

impl DiscordConfig {
    /// `webhook_url` or the contents of `webhook_url_file` (exactly one must be set).
    pub fn webhook_url(&self) -> Result<Secret, String> {
        inline_or_file(
            "webhook_url",
            self.webhook_url.as_ref(),
            self.webhook_url_file.as_deref(),
        )?
        .ok_or_else(|| "set `webhook_url` or `webhook_url_file`".into())
    }
}

impl SlackConfig {
    /// `webhook_url` or the contents of `webhook_url_file` (exactly one must be set).
    pub fn webhook_url(&self) -> Result<Secret, String> {
        inline_or_file(
            "webhook_url",
            self.webhook_url.as_ref(),
            self.webhook_url_file.as_deref(),
        )?
        .ok_or_else(|| "set `webhook_url` or `webhook_url_file`".into())
    }
}

impl HttpConfig {
    /// `signing_secret` or the contents of `signing_secret_file`; neither = unsigned.
    pub fn signing_secret(&self) -> Result<Option<Secret>, String> {
        inline_or_file(
            "signing_secret",
            self.signing_secret.as_ref(),
            self.signing_secret_file.as_deref(),
        )
    }
}

impl LlmConfig {
    /// `api_key` or the contents of `api_key_file`; neither = no key.
    pub fn api_key(&self) -> Result<Option<Secret>, String> {
        inline_or_file(
            "api_key",
            self.api_key.as_ref(),
            self.api_key_file.as_deref(),
        )
    }
}

/// One routing rule: which events, to which sinks, rendered with which template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Source name the event arrived on (the `{source}` path segment).
    pub source: String,
    /// Event types to match; absent = all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// JSON-pointer equality predicates on the body, e.g. `{ "/ref" = "refs/heads/main" }`; all must hold.
    #[serde(default)]
    pub when: BTreeMap<String, serde_json::Value>,
    /// The sink to deliver to (or use `sinks`).
    #[serde(default)]
    pub sink: Option<String>,
    /// Several sinks to deliver to (or use `sink`).
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Minijinja template for the message: body keys are variables, plus `event`
    /// (`id`, `source`, `provider`, `type`, `delivery_id`, `received_at`) and `body`
    /// (the whole body). Values are escaped for the sink's markup, literal text is not.
    /// Absent = a built-in summary.
    #[serde(default)]
    pub template: Option<String>,
    /// Send to this chat instead of the sink's `chat_id`: a template rendered against the
    /// event like `template`, e.g. `"{{ data.object.metadata.telegram_chat_id }}"`. It must
    /// render a Telegram chat id (an integer or `@name`); rendered empty, the delivery is
    /// skipped. Telegram sinks only. The value comes from the payload, so whoever fills
    /// the payload (a customer's order form) chooses the chat.
    #[serde(default)]
    pub chat: Option<String>,
}

impl RouteConfig {
    /// The sink names this route delivers to (`sink` then `sinks`).
    pub fn sink_names(&self) -> Vec<&str> {
        self.sink
            .iter()
            .map(String::as_str)
            .chain(self.sinks.iter().map(String::as_str))
            .collect()
    }
}
