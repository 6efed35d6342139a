//! `discord` sink: execute a channel webhook.
//!
//! How Discord's answers are taken (tested against a fake that answers like the real API):
//! - 429: the wait is the `Retry-After` header (seconds, in every API version), else
//!   `X-RateLimit-Reset-After` (seconds), else the body's `retry_after`. That body field is
//!   seconds (a float) from API v8 on, but milliseconds on unversioned and v6/v7 URLs, and
//!   the webhook URLs Discord hands out are unversioned (`/api/webhooks/…`); see
//!   [`body_retry_after`]. The whole webhook pauses too, as it does when
//!   `X-RateLimit-Remaining` reaches 0.
//! - 404 `Unknown Webhook` (code 10015), 400 form errors such as content over 2000
//!   characters, 401/403: permanent, with Discord's message, code and field errors.
//! - 5xx and transport errors: retried with backoff.

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
    /// The API version in the URL path (`/api/v10/…`), `None` when unversioned.
    api_version: Option<u32>,
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
        let api_version = api_version(&url);
        url.query_pairs_mut().append_pair("wait", "true");
        let retry = c.retry(Duration::from_secs(10));
        Ok(DiscordSink {
            name: c.name.clone(),
            url: Secret::new(url.to_string()),
            api_version,
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
        let retry_after = net::header_secs(&headers, "retry-after")
            .or_else(|| net::header_secs(&headers, "x-ratelimit-reset-after"))
            .or_else(|| body_retry_after(&parsed, self.api_version));
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.limiter
                .pause(retry_after.unwrap_or(Duration::from_secs(1)));
        }
        let detail = describe(&parsed).unwrap_or_else(|| text.clone());
        let message = self.url.redact(&format!(
            "discord: {}: {}",
            status.as_u16(),
            net::short(&detail)
        ));
        Err(SinkError::from_status(status, retry_after, message))
    }
}

/// `N` of a `/api/vN/…` path.
fn api_version(url: &url::Url) -> Option<u32> {
    let mut p = url.path_segments()?;
    if p.next()? != "api" {
        return None;
    }
    p.next()?.strip_prefix('v')?.parse().ok()
}

/// The body's `retry_after` as a duration: seconds from API v8 on, milliseconds before
/// (and on unversioned URLs, which get the old default).
fn body_retry_after(body: &serde_json::Value, api_version: Option<u32>) -> Option<Duration> {
    let v = body["retry_after"].as_f64()?;
    match api_version {
        Some(n) if n >= 8 => net::secs(v),
        _ => net::secs(v / 1000.0),
    }
}

/// Discord's error body as one line: `message (code N)`, then each field error
/// (`content: Must be 2000 or fewer in length.`), in both the v10 form
/// (`errors.content._errors[].message`) and the older flat form (`{"content": ["…"]}`).
fn describe(body: &serde_json::Value) -> Option<String> {
    let obj = body.as_object()?;
    let mut parts = Vec::new();
    if let Some(m) = obj.get("message").and_then(|m| m.as_str()) {
        match obj.get("code").and_then(|c| c.as_i64()) {
            Some(c) if c != 0 => parts.push(format!("{m} (code {c})")),
            _ => parts.push(m.to_owned()),
        }
    }
    let mut fields = Vec::new();
    if let Some(errors) = obj.get("errors") {
        field_errors("", errors, &mut fields);
    }
    for (k, v) in obj {
        if let Some(list) = v.as_array() {
            for m in list.iter().filter_map(|m| m.as_str()) {
                fields.push(format!("{k}: {m}"));
            }
        }
    }
    parts.extend(fields.into_iter().take(5));
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn field_errors(path: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    let Some(obj) = v.as_object() else { return };
    for (k, v) in obj {
        if k == "_errors" {
            for e in v.as_array().into_iter().flatten() {
                if let Some(m) = e["message"].as_str() {
                    out.push(format!("{path}: {m}"));
                }
            }
        } else if out.len() < 5 {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            field_errors(&p, v, out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing test should panic
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_retry_after_units_follow_the_api_version() {
        let b = json!({"retry_after": 1.5});
        assert_eq!(
            body_retry_after(&b, Some(10)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            body_retry_after(&b, Some(8)),
            Some(Duration::from_millis(1500))
        );
        let ms = json!({"retry_after": 1500});
        assert_eq!(
            body_retry_after(&ms, None),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            body_retry_after(&ms, Some(6)),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(body_retry_after(&json!({}), Some(10)), None);
        let u = |s: &str| api_version(&url::Url::parse(s).unwrap());
        assert_eq!(u("https://discord.com/api/v10/webhooks/1/t"), Some(10));
        assert_eq!(u("https://discord.com/api/webhooks/1/t"), None);
    }

    #[test]
    fn errors_are_described_in_both_forms() {
        let v10 = json!({"code": 50035, "message": "Invalid Form Body", "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}});
        assert_eq!(
            describe(&v10).unwrap(),
            "Invalid Form Body (code 50035); content: Must be 2000 or fewer in length."
        );
        let flat = json!({"content": ["Must be 2000 or fewer in length."]});
        assert_eq!(
            describe(&flat).unwrap(),
            "content: Must be 2000 or fewer in length."
        );
        let unknown = json!({"message": "Unknown Webhook", "code": 10015});
        assert_eq!(describe(&unknown).unwrap(), "Unknown Webhook (code 10015)");
        assert_eq!(describe(&json!("text")), None);
    }
}
