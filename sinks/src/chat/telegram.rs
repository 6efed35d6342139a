//! `telegram` sink: Bot API `sendMessage`.
//!
//! How the Bot API's answers are taken (each is tested against a fake that answers like
//! the real API, `tests/it/chat_lib.rs`):
//! - 429 with `parameters.retry_after` (whole seconds): retried no sooner than that, and
//!   the whole bot pauses (the limit is the bot's, not the chat's).
//! - 400 with `parameters.migrate_to_chat_id` (a group became a supergroup): sent again at
//!   once to the new chat id, which is remembered for later messages to the old id; a
//!   warning says to update `chat_id`.
//! - 400 "can't parse entities", 400 "message is too long", 403 "bot was blocked by the
//!   user", 400 "chat not found", 401: permanent (dead-lettered at once, with Telegram's
//!   own description and a hint of what to change).
//! - 5xx and transport errors: retried with backoff.

use std::collections::HashMap;
use std::sync::Mutex;
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
    /// Chats that became supergroups: old id -> new id, learned from
    /// `migrate_to_chat_id`. Bounded by [`MAX_MIGRATIONS`].
    migrated: Mutex<HashMap<String, String>>,
}

/// Migrations remembered per sink; past this the map is cleared (a later message to an
/// old id learns the new one again, at the cost of one extra request).
const MAX_MIGRATIONS: usize = 10_000;

/// What one `sendMessage` call came back with.
enum Outcome {
    Sent,
    /// The chat is now the supergroup with this id.
    Migrated(String),
    Failed(SinkError),
}

/// A hint appended to Telegram's own description of a permanent error, saying what the
/// user can change. Matched on the documented description texts.
fn hint(status: u16, description: &str) -> Option<&'static str> {
    let d = description.to_ascii_lowercase();
    Some(if d.contains("can't parse entities") {
        "the text is not valid for the sink's parse_mode: check the literal markup in the route template"
    } else if d.contains("message is too long") {
        "the text is over Telegram's 4096-character limit after entity parsing"
    } else if d.contains("bot was blocked by the user") {
        "the user blocked the bot; nothing reaches this chat until they unblock it"
    } else if d.contains("chat not found") {
        "check chat_id, and that the user started the bot or the bot is in the group"
    } else if status == 401 {
        "the bot token was rejected"
    } else {
        return None;
    })
}

/// Whether `id` has the form of a Telegram chat id: an integer, or `@username`.
pub fn is_chat_id(id: &str) -> bool {
    if let Some(name) = id.strip_prefix('@') {
        // Public usernames are 5-32 characters.
        return (5..=32).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    }
    let digits = id.strip_prefix('-').unwrap_or(id);
    (1..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
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
            migrated: Mutex::new(HashMap::new()),
        })
    }

    fn migrated_to(&self, chat: &str) -> Option<String> {
        self.migrated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(chat)
            .cloned()
    }

    fn remember_migration(&self, old: &str, new: &str) {
        let mut m = self.migrated.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_MIGRATIONS {
            m.clear();
        }
        m.insert(old.to_owned(), new.to_owned());
    }

    async fn send_to(&self, chat: &str, text: &str) -> Outcome {
        self.limiter.acquire(&self.name, chat).await;
        let mut body = json!({ "chat_id": chat, "text": text });
        if let Some(pm) = self.parse_mode {
            body["parse_mode"] = pm.as_str().into();
        }
        let url = format!("{}/bot{}/sendMessage", self.api_url, self.token.expose());
        let resp = match self.client.post(url).json(&body).send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Failed(
                    SinkError::from_reqwest("telegram", e).redacted(&self.token),
                )
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = net::body_text(resp, 64 * 1024).await;
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if status.is_success() && parsed["ok"].as_bool() != Some(false) {
            return Outcome::Sent;
        }
        let params = &parsed["parameters"];
        if let Some(new) = params["migrate_to_chat_id"].as_i64() {
            return Outcome::Migrated(new.to_string());
        }
        let description = parsed["description"].as_str().unwrap_or(&text);
        let mut message = format!("telegram: {}: {}", status.as_u16(), net::short(description));
        if let Some(h) = hint(status.as_u16(), description) {
            message.push_str(" (");
            message.push_str(h);
            message.push(')');
        }
        let message = self.token.redact(&message);
        // Telegram sends whole seconds in `parameters.retry_after`; the header is a fallback.
        let retry_after = params["retry_after"]
            .as_f64()
            .and_then(net::secs)
            .or_else(|| net::header_secs(&headers, "retry-after"));
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            // The limit is the bot's: hold back every message, not just this one.
            self.limiter
                .pause(retry_after.unwrap_or(Duration::from_secs(1)));
        }
        Outcome::Failed(SinkError::from_status(status, retry_after, message))
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
        let wanted = msg.chat.unwrap_or(&self.chat_id);
        let chat = self
            .migrated_to(wanted)
            .unwrap_or_else(|| wanted.to_owned());
        match self.send_to(&chat, msg.text).await {
            Outcome::Sent => Ok(()),
            Outcome::Failed(e) => Err(e),
            Outcome::Migrated(new) => {
                tracing::warn!(sink = %self.name, old_chat = %chat, new_chat = %new,
                    "telegram: the group is now a supergroup; sending to its new id (set chat_id = {new} in the config)");
                self.remember_migration(wanted, &new);
                match self.send_to(&new, msg.text).await {
                    Outcome::Sent => Ok(()),
                    Outcome::Failed(e) => Err(e),
                    // A second migration in a row is not something the API does; stop.
                    Outcome::Migrated(again) => Err(SinkError::permanent(format!(
                        "telegram: 400: chat {chat} migrated to {new}, which migrated again to {again}"
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_ids_are_integers_or_usernames() {
        for ok in ["5", "-1001234567890", "@my_channel"] {
            assert!(is_chat_id(ok), "{ok}");
        }
        for bad in [
            "",
            "-",
            "@abc",
            "1/../getMe",
            "12 3",
            "@bad-name",
            "1e5",
            &"9".repeat(21),
        ] {
            assert!(!is_chat_id(bad), "{bad}");
        }
    }
}
