//! `telegram` sink: Bot API `sendMessage`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::chat::chat_in::Platform;
use crate::chat::config::{ParseMode, RetryPolicy, TelegramConfig};
use crate::chat::error::{ConfigError, SinkError};
use crate::chat::markup::Markup;
use crate::chat::net;
use crate::chat::ratelimit::{KeyedSpacing, Limiter, TokenBucket};
use crate::chat::sink::{Message, Sink};
use crate::secret::Secret;

/// Telegram's `sendMessage` text limit in UTF-16 code units.
const MAX_TEXT: usize = 4096;

/// Sends to a Telegram chat; the bot token lives only in the request URL.
pub struct TelegramSink {
    name: String,
    token: Secret,
    chat_id: String,
    parse_mode: Option<ParseMode>,
    api_url: String,
    client: reqwest::Client,
    limiter: Limiter,
    retry: RetryPolicy,
}

impl TelegramSink {
    /// Builds the sink from its config.
    pub fn new(c: &TelegramConfig) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::Sink {
            sink: c.name.clone(),
            message,
        };
        let api = url::Url::parse(&c.api_url).map_err(|e| err(format!("api_url: {e}")))?;
        if !matches!(api.scheme(), "http" | "https") {
            return Err(err("api_url must be http or https".into()));
        }
        let token = c.bot_token().map_err(err)?;
        if token.expose().is_empty() || token.expose().contains('/') {
            return Err(err("bot_token is empty or malformed".into()));
        }
        let retry = c.retry(Duration::from_secs(10));
        Ok(TelegramSink {
            name: c.name.clone(),
            token,
            chat_id: c.chat_id.to_string(),
            parse_mode: c.parse_mode,
            api_url: c.api_url.trim_end_matches('/').to_owned(),
            client: net::client(retry.timeout).map_err(err)?,
            limiter: Limiter::new(
                Some(TokenBucket::new(c.bot_rate as f64, c.bot_rate as f64)),
                Some(KeyedSpacing::new(c.chat_interval)),
            ),
            retry,
        })
    }
}

#[async_trait]
impl Sink for TelegramSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn markup(&self) -> Option<Markup> {
        Some(match self.parse_mode {
            None => Markup::Plain,
            Some(ParseMode::Html) => Markup::TelegramHtml,
            Some(ParseMode::MarkdownV2) => Markup::TelegramMarkdownV2,
        })
    }

    fn max_len(&self) -> usize {
        MAX_TEXT
    }

    fn platform(&self) -> Option<Platform> {
        Some(Platform::Telegram)
    }

    fn configured_chat(&self) -> Option<&str> {
        Some(&self.chat_id)
    }

    fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    async fn send(&self, msg: &Message<'_>) -> Result<(), SinkError> {
        let chat = msg.chat.unwrap_or(&self.chat_id);
        self.limiter.acquire(&self.name, chat).await;
        let mut body = json!({ "chat_id": chat, "text": msg.text });
        if let Some(pm) = self.parse_mode {
            body["parse_mode"] = pm.as_str().into();
        }
        let url = format!("{}/bot{}/sendMessage", self.api_url, self.token.expose());
        let resp = self
            .client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| SinkError::from_reqwest("telegram", e).redacted(&self.token))?;
        let status = resp.status();
        let text = net::body_text(resp, 64 * 1024).await;
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status.is_success() && parsed["ok"].as_bool() != Some(false) {
            return Ok(());
        }
        let description = parsed["description"].as_str().unwrap_or(&text);
        let message = self.token.redact(&format!(
            "telegram: {}: {}",
            status.as_u16(),
            net::short(description)
        ));
        let retry_after = parsed["parameters"]["retry_after"]
            .as_f64()
            .and_then(net::secs);
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            // The limit is the bot's: hold back every message, not just this one.
            self.limiter
                .pause(retry_after.unwrap_or(Duration::from_secs(1)));
        }
        Err(SinkError::from_status(status, retry_after, message))
    }
}
