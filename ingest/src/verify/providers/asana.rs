//! Asana: `X-Hook-Signature: <hex HMAC-SHA256(secret, body)>`, where the secret is the one
//! Asana sent in the `X-Hook-Secret` header of the webhook's handshake (Asana developer
//! docs, "Webhooks" → "The webhook handshake" and "Security").
//!
//! Handshake: when a webhook is created Asana POSTs `X-Hook-Secret: <secret>` and expects
//! 200 (or 204) with that header echoed. hookgate accepts it only while the source has no
//! secret (none in `secrets`, none learned): it stores the secret durably under the spool
//! directory (see `learned.rs`), starts verifying with it, and echoes it; later handshakes
//! are refused (409 `secret_already_set`). This is trust on first use: whoever reaches
//! the URL first sets the secret — create the webhook right after deploying the source,
//! or configure `secrets` yourself if you obtained the secret otherwise. Nothing is stored
//! as an event.
//!
//! Delivery id: a digest of the body; event type: the first event's `action`.

use super::common::{no_body_handover, BodyHmac, LearnedBodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Answer, Defaults, Early, HmacAlgorithm, Provider, SigEncoding};

static SPEC: LearnedBodyHmac = LearnedBodyHmac {
    hook: HOOK,
    from_request: handover,
    from_body: no_body_handover,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);

const HOOK: BodyHmac = BodyHmac {
    name: "asana",
    aliases: &[],
    about: About {
        headers: &["X-Hook-Signature"],
        signed: "hex HMAC-SHA256(body) under the secret of the `X-Hook-Secret` handshake",
        secret: "none (learned from the handshake) or the `X-Hook-Secret` value",
        handshakes: &["`X-Hook-Secret` (stored on first contact, echoed; trust on first use)"],
        docs: "https://developers.asana.com/docs/webhooks-guide",
    },
    sig: SigHeader {
        header: "X-Hook-Signature",
        name: header_name!("x-hook-signature"),
        prefix: "",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || {
        Defaults::new(
            FieldSpec::BodyHash,
            Some(FieldSpec::pointer("/events/0/action")),
        )
    },
};

/// Longest secret accepted from a handshake.
const MAX_SECRET: usize = 256;

/// The `X-Hook-Secret` handshake.
fn handover(req: &Early<'_>) -> Option<(String, Answer)> {
    if req.method != http::Method::POST {
        return None;
    }
    let secret = req.headers.get("x-hook-secret")?;
    let ok = !secret.is_empty()
        && secret.len() <= MAX_SECRET
        && secret.as_bytes().iter().all(|b| b.is_ascii_graphic());
    if !ok {
        return Some((
            String::new(),
            Answer::refuse(400, "bad_handshake", "X-Hook-Secret is not a usable secret"),
        ));
    }
    let secret = secret.to_str().ok()?.to_owned();
    let answer = Answer {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        body: String::new(),
        headers: vec![("x-hook-secret", secret.clone())],
    };
    Some((secret, answer))
}
