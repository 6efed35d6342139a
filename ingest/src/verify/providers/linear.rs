//! Linear: `Linear-Signature: <hex HMAC-SHA256(signing secret, body)>` (Linear developer
//! docs, "Webhooks" → "Securing webhooks"). The body's `webhookTimestamp` (ms) is not
//! signed separately, so the scheme signs only the body: replays are refused by the
//! body-digest dedupe (the timestamp is inside the signed body, so a replay is the same
//! body). Delivery id `Linear-Delivery`, event type `Linear-Event`.
//! No worked example is published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: BodyHmac = BodyHmac {
    name: "linear",
    aliases: &[],
    about: About {
        headers: &["Linear-Signature"],
        signed: "hex HMAC-SHA256(body)",
        secret: "the webhook's signing secret",
        handshakes: &[],
        docs: "https://linear.app/developers/webhooks",
    },
    sig: SigHeader {
        header: "Linear-Signature",
        name: header_name!("linear-signature"),
        prefix: "",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || {
        Defaults::new(
            FieldSpec::header("linear-delivery"),
            Some(FieldSpec::header("linear-event")),
        )
    },
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
