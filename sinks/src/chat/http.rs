//! `http` sink: forward the original body, re-signed with Standard Webhooks headers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;

use crate::chat::config::{HttpConfig, RetryPolicy};
use crate::chat::error::{ConfigError, SinkError};
use crate::chat::markup::Markup;
use crate::chat::net::{self, PublicOnlyResolver, RefusedDestination};
use crate::chat::sink::{Message, Sink};

/// Forwards event bodies byte for byte to one URL.
pub struct HttpSink {
    name: String,
    url: url::Url,
    key: Option<Vec<u8>>,
    allow_private: bool,
    client: reqwest::Client,
    retry: RetryPolicy,
}

impl HttpSink {
    /// Builds the sink from its config; an IP-literal private destination is refused here.
    pub fn new(c: &HttpConfig) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::Sink {
            sink: c.name.clone(),
            message,
        };
        let url = url::Url::parse(&c.url).map_err(|e| err(format!("url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err("url must be http or https".into()));
        }
        if !c.allow_private {
            check_literal(&url).map_err(|e| err(e.to_string()))?;
        }
        let key = match &c.signing_secret().map_err(err)? {
            None => None,
            Some(s) => {
                let b64 = s.expose().strip_prefix("whsec_").unwrap_or(s.expose());
                let key = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| err("signing_secret is not whsec_<base64>".into()))?;
                Some(key)
            }
        };
        let retry = c.retry(Duration::from_secs(10));
        let mut b = reqwest::Client::builder()
            .timeout(retry.timeout)
            .connect_timeout(retry.timeout.min(Duration::from_secs(10)))
            // A redirect could lead past the destination check; 3xx is a failure.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookgate/", env!("CARGO_PKG_VERSION")));
        if !c.allow_private {
            // A proxy would resolve names itself and bypass the address filter.
            b = b.no_proxy().dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let client = b
            .build()
            .map_err(|e| err(format!("http client: {}", e.without_url())))?;
        Ok(HttpSink {
            name: c.name.clone(),
            url,
            key,
            allow_private: c.allow_private,
            client,
            retry,
        })
    }

    /// The `webhook-signature` value for this id, timestamp and body.
    pub fn signature(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
        let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
        let mut ctx = ring::hmac::Context::with_key(&k);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(ts.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        let tag = ctx.sign();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    }
}

fn check_literal(url: &url::Url) -> Result<(), RefusedDestination> {
    let ip: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(v4.into()),
        Some(url::Host::Ipv6(v6)) => Some(v6.into()),
        _ => None,
    };
    match ip {
        Some(ip) if net::is_refused_ip(ip) => Err(RefusedDestination(ip.to_string())),
        _ => Ok(()),
    }
}

#[async_trait]
impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn markup(&self) -> Option<Markup> {
        None
    }

    fn max_len(&self) -> usize {
        usize::MAX
    }

    fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    async fn send(&self, msg: &Message<'_>) -> Result<(), SinkError> {
        if !self.allow_private {
            check_literal(&self.url).map_err(|e| SinkError::permanent(format!("http: {e}")))?;
        }
        let ev = msg.event;
        let id = ev.id_string();
        let ts = hookgate_proto::now_ms() / 1000;
        let mut req = self
            .client
            .post(self.url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                ev.content_type
                    .as_deref()
                    .unwrap_or("application/octet-stream"),
            )
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string());
        if let Some(key) = &self.key {
            req = req.header("webhook-signature", Self::signature(key, &id, ts, &ev.body));
        }
        let resp = req
            .body(ev.body.clone())
            .send()
            .await
            .map_err(|e| SinkError::from_reqwest("http", e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_redirection() {
            return Err(SinkError::permanent(format!(
                "http: {}: redirects are not followed",
                status.as_u16()
            )));
        }
        let retry_after = net::header_secs(resp.headers(), "retry-after");
        let text = net::body_text(resp, 4 * 1024).await;
        Err(SinkError::from_status(
            status,
            retry_after,
            format!("http: {}: {}", status.as_u16(), net::short(&text)),
        ))
    }
}
