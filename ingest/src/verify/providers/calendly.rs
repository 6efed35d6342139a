//! Calendly: `Calendly-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(signing
//! key, "{t}.{body}")>` (Calendly developer docs, "Webhook Signatures"). Calendly's docs
//! suggest a 3-minute tolerance; set `tolerance = "3m"` on the source for that (hookgate's
//! default is 5 minutes). Delivery id: a digest of the body (Calendly sends no delivery
//! id, and an invitee's `uri` is shared by its `invitee.created` and `invitee.canceled`);
//! event type: `event`. No worked example is published.

use super::common::StripeLike;
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, Provider};

static SPEC: StripeLike = StripeLike {
    name: "calendly",
    about: About {
        headers: &["Calendly-Webhook-Signature"],
        signed: "`t=<unix>,v1=<hex>`: HMAC-SHA256(t + \".\" + body)",
        secret: "the webhook signing key",
        handshakes: &[],
        docs: "https://developer.calendly.com/api-docs/overview/webhooks/webhook-signatures",
    },
    header: "Calendly-Webhook-Signature",
    header_name: header_name!("calendly-webhook-signature"),
    defaults: || Defaults::new(FieldSpec::BodyHash, Some(FieldSpec::pointer("/event"))),
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
