//! Sentry (integration platform): `Sentry-Hook-Signature: <hex HMAC-SHA256(client
//! secret, body)>` (Sentry docs, "Webhooks" → headers and "Sentry Hook Signature").
//! `Sentry-Hook-Timestamp` is sent but not signed, so it is not checked: replays are
//! refused by the body-digest dedupe. Delivery id `Request-ID`, event type
//! `Sentry-Hook-Resource` (`issue`, `error`, `installation`…). No worked example is
//! published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: BodyHmac = BodyHmac {
    name: "sentry",
    aliases: &[],
    about: About {
        headers: &["Sentry-Hook-Signature"],
        signed: "hex HMAC-SHA256(body)",
        secret: "the integration's client secret",
        handshakes: &[],
        docs: "https://docs.sentry.io/integrations/integration-platform/webhooks/",
    },
    sig: SigHeader {
        header: "Sentry-Hook-Signature",
        name: header_name!("sentry-hook-signature"),
        prefix: "",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || Defaults::new(FieldSpec::header("request-id"), Some(FieldSpec::header("sentry-hook-resource"))),
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
