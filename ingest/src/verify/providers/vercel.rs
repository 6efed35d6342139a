//! Vercel: `x-vercel-signature: <hex HMAC-SHA1(secret, body)>` (Vercel docs, "Webhooks
//! API" → "Securing webhooks"). Delivery id: the event's `id`; event type: `type`.
//! No worked example is published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: BodyHmac = BodyHmac {
    name: "vercel",
    aliases: &[],
    about: About {
        headers: &["x-vercel-signature"],
        signed: "hex HMAC-SHA1(body)",
        secret: "the webhook's secret (or the integration's client secret)",
        handshakes: &[],
        docs: "https://vercel.com/docs/webhooks/webhooks-api#securing-webhooks",
    },
    sig: SigHeader {
        header: "x-vercel-signature",
        name: header_name!("x-vercel-signature"),
        prefix: "",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha1,
    },
    defaults: || Defaults::new(FieldSpec::pointer("/id"), Some(FieldSpec::pointer("/type"))),
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
