//! Intercom: `X-Hub-Signature: sha1=<hex HMAC-SHA1(client secret, body)>` (Intercom
//! developer docs, "Setting up webhooks" → signed notifications). SHA-1 is what Intercom
//! sends; it is HMAC-SHA1, which has no known practical forgery. Delivery id: the
//! notification's `id`; event type: `topic`. No worked example is published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: BodyHmac = BodyHmac {
    name: "intercom",
    aliases: &[],
    about: About {
        headers: &["X-Hub-Signature"],
        signed: "`sha1=` + hex HMAC-SHA1(body)",
        secret: "the app's client secret",
        handshakes: &[],
        docs: "https://developers.intercom.com/docs/webhooks/setting-up-webhooks",
    },
    sig: SigHeader {
        header: "X-Hub-Signature",
        name: header_name!("x-hub-signature"),
        prefix: "sha1=",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha1,
    },
    defaults: || Defaults::new(FieldSpec::pointer("/id"), Some(FieldSpec::pointer("/topic"))),
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
