//! Coinbase Commerce: `X-CC-Webhook-Signature: <hex HMAC-SHA256(shared secret, body)>`
//! (Coinbase Commerce docs, "Webhooks security"). Delivery id: the body's `id` (one per
//! delivery of an event); event type: `event.type`. No worked example is published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: BodyHmac = BodyHmac {
    name: "coinbase",
    aliases: &[],
    about: About {
        headers: &["X-CC-Webhook-Signature"],
        signed: "hex HMAC-SHA256(body)",
        secret: "the webhook's shared secret",
        handshakes: &[],
        docs: "https://docs.cdp.coinbase.com/commerce/docs/webhooks-security",
    },
    sig: SigHeader {
        header: "X-CC-Webhook-Signature",
        name: header_name!("x-cc-webhook-signature"),
        prefix: "",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || Defaults::new(FieldSpec::pointer("/id"), Some(FieldSpec::pointer("/event/type"))),
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
