//! WooCommerce: `X-WC-Webhook-Signature: <base64 HMAC-SHA256(secret, body)>` (WooCommerce
//! REST API docs, "Webhooks" → delivery headers). Delivery id `X-WC-Webhook-Delivery-ID`,
//! event type `X-WC-Webhook-Topic` (e.g. `order.created`). No timestamp: replays are
//! refused by the body-digest dedupe. No worked example is published.
//!
//! Handshake: when a webhook is created (or re-activated) WooCommerce POSTs a ping,
//! `webhook_id=<id>` as the body, with its `WooCommerce/<version> Hookshot
//! (WordPress/<version>)` user agent and no signature, and keeps the webhook only if the
//! answer is exactly 200 (`WC_Webhook::deliver_ping` in woocommerce/woocommerce,
//! `includes/class-wc-webhook.php`). hookgate answers it 200 and stores nothing. It is
//! recognised before the body is read (the server looks at the headers only there): a
//! POST without `X-WC-Webhook-Signature`, with that user agent and a `Content-Length` no
//! longer than such a body. Nothing unsigned is ever stored, so a forged "ping" gains a
//! 200 and nothing else.

use http::header::{CONTENT_LENGTH, USER_AGENT};
use http::Method;

use super::common::{BodyHmac, BodyHmacWithEarly, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{
    About, Answer, Defaults, Early, HmacAlgorithm, Provider, SigEncoding, Verifier,
};

static SPEC: BodyHmacWithEarly = BodyHmacWithEarly {
    hook: BodyHmac {
        name: "woocommerce",
        aliases: &[],
        about: About {
            headers: &["X-WC-Webhook-Signature"],
            signed: "base64 HMAC-SHA256(body)",
            secret: "the webhook's secret",
            handshakes: &["the creation ping (`webhook_id=<id>`, unsigned): 200, not stored"],
            docs: "https://woocommerce.github.io/woocommerce-rest-api-docs/#webhooks",
        },
        sig: SIG,
        defaults: || {
            Defaults::new(
                FieldSpec::header("x-wc-webhook-delivery-id"),
                Some(FieldSpec::header("x-wc-webhook-topic")),
            )
        },
    },
    early: ping,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);

const SIG: SigHeader = SigHeader {
    header: "X-WC-Webhook-Signature",
    name: header_name!("x-wc-webhook-signature"),
    prefix: "",
    encoding: SigEncoding::Base64,
    algorithm: HmacAlgorithm::Sha256,
};

/// `webhook_id=` and the 20 digits of the largest 64-bit id.
const MAX_PING_BODY: u64 = 31;

/// WooCommerce's creation ping (see the module documentation), answered 200.
fn ping(_: &Verifier, req: &Early<'_>) -> Option<Answer> {
    let agent = req
        .headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let short_body = req
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= MAX_PING_BODY);
    let is_ping = *req.method == Method::POST
        && !SIG.present(req.headers)
        && agent.starts_with("WooCommerce/")
        && agent.contains(" Hookshot (WordPress/")
        && short_body;
    is_ping.then(|| Answer::json("{\"ping\":\"ok\"}".to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use http::{HeaderMap, Method};

    use crate::verify::test_support::*;
    use crate::verify::Early;

    const UA: &str = "WooCommerce/9.4.2 Hookshot (WordPress/6.7.1)";

    fn ping_headers(agent: &str, length: &str) -> HeaderMap {
        header_map(&[
            ("User-Agent".into(), agent.into()),
            ("Content-Length".into(), length.into()),
            (
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
        ])
    }

    fn answer(method: &Method, headers: &HeaderMap) -> Option<u16> {
        let v = verifier(super::PROVIDER, &["wc-secret"]);
        let early = Early {
            method,
            headers,
            query: None,
        };
        v.early_handshake(&early).map(|a| a.status)
    }

    #[test]
    fn the_creation_ping_is_answered_200() {
        // `webhook_id=123` is 14 bytes.
        assert_eq!(answer(&Method::POST, &ping_headers(UA, "14")), Some(200));
        assert_eq!(answer(&Method::POST, &ping_headers(UA, "31")), Some(200));
    }

    #[test]
    fn anything_else_is_not_a_ping() {
        let post = Method::POST;
        assert_eq!(answer(&post, &ping_headers(UA, "32")), None, "too long");
        assert_eq!(answer(&post, &ping_headers(UA, "x")), None, "bad length");
        assert_eq!(answer(&Method::GET, &ping_headers(UA, "14")), None);
        assert_eq!(answer(&post, &ping_headers("curl/8.5.0", "14")), None);
        assert_eq!(answer(&post, &ping_headers("WooCommerce/9.4.2", "14")), None);
        let mut no_length = ping_headers(UA, "14");
        no_length.remove("content-length");
        assert_eq!(answer(&post, &no_length), None, "chunked: no length");
        // A signed delivery from the same agent is an event, never a ping.
        let mut signed = ping_headers(UA, "14");
        signed.insert("x-wc-webhook-signature", "AAAA".parse().unwrap());
        assert_eq!(answer(&post, &signed), None);
    }
}
