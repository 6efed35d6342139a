//! Razorpay: `X-Razorpay-Signature: <hex HMAC-SHA256(webhook secret, body)>` (Razorpay
//! docs, "Validate and test webhooks"). Delivery id `x-razorpay-event-id` (the same on
//! retries, per Razorpay's idempotency advice); event type: `event`. No worked example
//! is published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: BodyHmac = BodyHmac {
    name: "razorpay",
    aliases: &[],
    about: About {
        headers: &["X-Razorpay-Signature"],
        signed: "hex HMAC-SHA256(body)",
        secret: "the webhook's secret",
        handshakes: &[],
        docs: "https://razorpay.com/docs/webhooks/validate-test/",
    },
    sig: SigHeader {
        header: "X-Razorpay-Signature",
        name: header_name!("x-razorpay-signature"),
        prefix: "",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || Defaults::new(FieldSpec::header("x-razorpay-event-id"), Some(FieldSpec::pointer("/event"))),
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
