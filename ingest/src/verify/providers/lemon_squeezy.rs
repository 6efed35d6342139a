//! Lemon Squeezy: `X-Signature: <hex HMAC-SHA256(signing secret, body)>` (Lemon Squeezy
//! docs, "Signing requests"). Event type: `X-Event-Name`. Lemon Squeezy sends no delivery
//! id, so the body's digest is the delivery id (a retry is the same body). No worked
//! example is published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: BodyHmac = BodyHmac {
    name: "lemon-squeezy",
    aliases: &[],
    about: About {
        headers: &["X-Signature"],
        signed: "hex HMAC-SHA256(body)",
        secret: "the webhook's signing secret",
        handshakes: &[],
        docs: "https://docs.lemonsqueezy.com/help/webhooks/signing-requests",
    },
    sig: SigHeader {
        header: "X-Signature",
        name: header_name!("x-signature"),
        prefix: "",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || Defaults::new(FieldSpec::BodyHash, Some(FieldSpec::header("x-event-name"))),
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
