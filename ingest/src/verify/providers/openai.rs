//! OpenAI: webhooks (fine-tuning, batch, realtime…) follow the Standard Webhooks
//! specification (`webhook-id`, `webhook-timestamp`, `webhook-signature`; `whsec_`
//! secret); the official SDKs' `webhooks.verify_signature` uses a 300-second tolerance,
//! hookgate's default. No OpenAI-specific worked example is published.

use super::standard_webhooks::Named;
use crate::verify::Provider;

static SPEC: Named = Named {
    name: "openai",
    docs: "https://platform.openai.com/docs/guides/webhooks",
    secret: "the endpoint's signing secret (`whsec_…`, OPENAI_WEBHOOK_SECRET)",
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);
