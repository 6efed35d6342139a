//! `slack` sink: post through an incoming webhook.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::chat::chat_in::Platform;
use crate::chat::config::{RetryPolicy, SlackConfig};
use crate::chat::error::{ConfigError, SinkError};
use crate::chat::markup::Markup;
use crate::chat::net;
use crate::chat::ratelimit::{KeyedSpacing, Limiter};
use crate::chat::sink::{Message, Sink};
use crate::secret::Secret;

/// Slack truncates messages past 40,000 characters; split before that.
const MAX_TEXT: usize = 39_000;

/// Posts to a Slack incoming webhook. A per-message chat override is sent as `channel`,
/// which legacy webhooks honour and app webhooks ignore (they post to their own channel).
pub struct SlackSink {
    name: String,
    url: Secret,
    client: reqwest::Client,
    limiter: Limiter,
    retry: RetryPolicy,
}

impl SlackSink {
    /// Builds the sink from its config.
    pub fn new(c: &SlackConfig) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::Sink {
            sink: c.name.clone(),
            message,
        };
        let webhook_url = c.webhook_url().map_err(err)?;
        let url = url::Url::parse(webhook_url.expose())
            .map_err(|_| err("webhook_url is not a valid URL".into()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("webhook_url must be http or https".into()));
        }
        let retry = c.retry(Duration::from_secs(10));
        Ok(SlackSink {
            name: c.name.clone(),
            url: webhook_url,
            client: net::client(retry.timeout).map_err(err)?,
            limiter: Limiter::new(None, Some(KeyedSpacing::new(c.interval))),
            retry,
        })
    }
}

#[async_trait]
impl Sink for SlackSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn markup(&self) -> Option<Markup> {
        Some(Markup::Slack)
    }

    fn max_len(&self) -> usize {
        MAX_TEXT
    }

    fn platform(&self) -> Option<Platform> {
        Some(Platform::Slack)
    }

    fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    async fn send(&self, msg: &Message<'_>) -> Result<(), SinkError> {
        // One webhook = one channel, so one spacing key.
        self.limiter.acquire(&self.name, "").await;
        let mut body = json!({ "text": msg.text });
        if let Some(ch) = msg.chat {
            body["channel"] = ch.into();
        }
        let resp = self
            .client
            .post(self.url.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| SinkError::from_reqwest("slack", e).redacted(&self.url))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = net::header_secs(resp.headers(), "retry-after");
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.limiter
                .pause(retry_after.unwrap_or(Duration::from_secs(1)));
        }
        let text = net::body_text(resp, 16 * 1024).await;
        let message = self.url.redact(&format!(
            "slack: {}: {}",
            status.as_u16(),
            net::short(&text)
        ));
        Err(SinkError::from_status(status, retry_after, message))
    }
}
