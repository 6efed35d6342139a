//! Resend: webhooks delivered by Svix (`svix-id`, `svix-timestamp`, `svix-signature`;
//! `whsec_` signing secret), verified as Standard Webhooks — Resend's "Verify Webhooks
//! Requests" page passes exactly those three headers to its SDK or the Svix libraries.
//! No Resend-specific worked example is published.

use super::standard_webhooks::Named;
use crate::verify::Provider;

static SPEC: Named = Named {
    name: "resend",
    docs: "https://resend.com/docs/webhooks/verify-webhooks-requests",
    secret: "the webhook's signing secret (`whsec_…`)",
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
