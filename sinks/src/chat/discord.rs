//! `discord` sink: execute a channel webhook.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::chat::chat_in::Platform;
use crate::chat::config::{DiscordConfig, RetryPolicy};
use crate::chat::error::{ConfigError, SinkError};
use crate::chat::markup::Markup;
use crate::chat::net;
use crate::chat::ratelimit::{Limiter, TokenBucket};
use crate::chat::sink::{Message, Sink};
use crate::secret::Secret;

/// Discord's `content` limit (characters; counting UTF-16 units is never more lenient).
const MAX_CONTENT: usize = 2000;

/// Posts to a Discord webhook. Webhooks are bound to one channel, so a per-message chat
/// override (an llm reply) still lands in the webhook's channel.
pub struct DiscordSink {
    name: String,
    url: Secret,
    username: Option<String>,
    client: reqwest::Client,
    limiter: Limiter,
    retry: RetryPolicy,
}

impl DiscordSink {
    /// Builds the sink from its config.
    pub fn new(c: &DiscordConfig) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::Sink {
            sink: c.name.clone(),
            message,
        };
        // Never echo the URL or url's error text for it: the URL is the credential.
        let webhook_url = c.webhook_url().map_err(err)?;
        let mut url = url::Url::parse(webhook_url.expose())
            .map_err(|_| err("webhook_url is not a valid URL".into()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("webhook_url must be http or https".into()));
        }
        url.query_pairs_mut().append_pair("wait", "true");
        let retry = c.retry(Duration::from_secs(10));
        Ok(DiscordSink {
            name: c.name.clone(),
            url: Secret::new(url.to_string()),
            username: c.username.clone(),
            client: net::client(retry.timeout).map_err(err)?,
            // Webhooks allow about 5 requests per 2 s; the headers refine this.
            limiter: Limiter::new(Some(TokenBucket::new(2.5, 5.0)), None),
            retry,
        })
    }
}

#[async_trait]
impl Sink for DiscordSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn markup(&self) -> Option<Markup> {
        Some(Markup::Discord)
    }

    fn max_len(&self) -> usize {
        MAX_CONTENT
    }

    fn platform(&self) -> Option<Platform> {
        Some(Platform::Discord)
    }

    fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    async fn send(&self, msg: &Message<'_>) -> Result<(), SinkError> {
        self.limiter.acquire(&self.name, "").await;
        // No pings from webhook content: values come from untrusted payloads.
        let mut body = json!({ "content": msg.text, "allowed_mentions": { "parse": [] } });
        if let Some(u) = &self.username {
            body["username"] = u.as_str().into();
        }
        let resp = self
            .client
            .post(self.url.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| SinkError::from_reqwest("discord", e).redacted(&self.url))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if headers
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "0")
        {
            let reset = net::header_secs(&headers, "x-ratelimit-reset-after")
                .unwrap_or(Duration::from_secs(1));
            self.limiter.pause(reset);
        }
        if status.is_success() {
            return Ok(());
        }
        let text = net::body_text(resp, 64 * 1024).await;
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let retry_after = parsed["retry_after"]
            .as_f64()
            .and_then(net::secs)
            .or_else(|| net::header_secs(&headers, "retry-after"));
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.limiter
                .pause(retry_after.unwrap_or(Duration::from_secs(1)));
        }
        let detail = parsed["message"].as_str().unwrap_or(&text);
        let message = self.url.redact(&format!(
            "discord: {}: {}",
            status.as_u16(),
            net::short(detail)
        ));
        Err(SinkError::from_status(status, retry_after, message))
    }
}
