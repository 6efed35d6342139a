//! Clerk: webhooks delivered by Svix, verified as Standard Webhooks (`svix-id`,
//! `svix-timestamp`, `svix-signature`; `whsec_` secret). Clerk's docs and its
//! `verifyWebhook()` (@clerk/backend) map the `svix-*` headers onto the Standard Webhooks
//! ones and verify with the `standardwebhooks` library, with its 5-minute tolerance.
//! No Clerk-specific worked example is published; the scheme's own vector is in
//! `standard_webhooks.rs`.

use super::standard_webhooks::Named;
use crate::verify::Provider;

static SPEC: Named = Named {
    name: "clerk",
    docs: "https://clerk.com/docs/reference/backend/verify-webhook",
    secret: "the endpoint's signing secret (`whsec_…`, CLERK_WEBHOOK_SIGNING_SECRET)",
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
