//! WooCommerce: `X-WC-Webhook-Signature: <base64 HMAC-SHA256(secret, body)>` (WooCommerce
//! REST API docs, "Webhooks" → delivery headers). Delivery id `X-WC-Webhook-Delivery-ID`,
//! event type `X-WC-Webhook-Topic` (e.g. `order.created`). No timestamp: replays are
//! refused by the body-digest dedupe. No worked example is published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&BodyHmac {
    name: "woocommerce",
    aliases: &[],
    about: About {
        headers: &["X-WC-Webhook-Signature"],
        signed: "base64 HMAC-SHA256(body)",
        secret: "the webhook's secret",
        handshakes: &[],
        docs: "https://woocommerce.github.io/woocommerce-rest-api-docs/#webhooks",
    },
    sig: SigHeader {
        header: "X-WC-Webhook-Signature",
        prefix: "",
        encoding: SigEncoding::Base64,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || Defaults::new(FieldSpec::header("x-wc-webhook-delivery-id"), Some(FieldSpec::header("x-wc-webhook-topic"))),
});
