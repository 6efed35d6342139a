//! Jira Cloud admin webhooks (registered in Jira administration or with
//! `/rest/webhooks/1.0/webhook`) with a secret: `X-Hub-Signature: sha256=<hex
//! HMAC-SHA256(secret, body)>`, WebSub's `method=signature` form (Atlassian docs,
//! "Webhooks" → "Secure admin webhooks"). Webhooks registered by Connect or OAuth apps
//! are signed differently (a JWT) and are not accepted by this provider. Delivery id
//! `X-Atlassian-Webhook-Identifier` (the same on retries); event type: `webhookEvent`.
//! No worked example is published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: BodyHmac = BodyHmac {
    name: "jira",
    aliases: &[],
    about: About {
        headers: &["X-Hub-Signature"],
        signed: "`sha256=` + hex HMAC-SHA256(body) (WebSub `method=signature`)",
        secret: "the admin webhook's secret",
        handshakes: &[],
        docs: "https://developer.atlassian.com/cloud/jira/platform/webhooks/#secure-admin-webhooks",
    },
    sig: SigHeader {
        header: "X-Hub-Signature",
        name: header_name!("x-hub-signature"),
        prefix: "sha256=",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || Defaults::new(FieldSpec::header("x-atlassian-webhook-identifier"), Some(FieldSpec::pointer("/webhookEvent"))),
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
