//! Mux: `Mux-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(signing secret,
//! "{t}.{body}")>`; "currently, the only valid signature scheme is v1" and other schemes
//! are skipped (Mux docs, "Verify webhook signatures"). Delivery id: the event's `id`;
//! event type: `type`. Mux's page shows a header but not the secret and body behind it,
//! so there is no complete worked example to test against.

use super::common::StripeLike;
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, Provider};

static SPEC: StripeLike = StripeLike {
    name: "mux",
    about: About {
        headers: &["Mux-Signature"],
        signed: "`t=<unix>,v1=<hex>`: HMAC-SHA256(t + \".\" + body)",
        secret: "the webhook's signing secret",
        handshakes: &[],
        docs: "https://www.mux.com/docs/core/verify-webhook-signatures",
    },
    header: "Mux-Signature",
    header_name: header_name!("mux-signature"),
    defaults: || Defaults::new(FieldSpec::pointer("/id"), Some(FieldSpec::pointer("/type"))),
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
