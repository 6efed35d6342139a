//! Notion: `X-Notion-Signature: sha256=<hex HMAC-SHA256(verification_token, body)>`
//! (Notion developer docs, "Webhooks" → "Step 2: Verifying the subscription" and
//! "Validating event payloads").
//!
//! Handshake: when a subscription is created, Notion POSTs a one-time, unsigned body
//! `{"verification_token": "secret_…"}`. The user pastes that token back into the
//! integration's settings to activate the subscription, and Notion signs every event with
//! it. hookgate accepts the handshake only while the source has no secret (none in
//! `secrets`, none learned): it stores the token durably under the spool directory (read it
//! with `cat <spool>/learned-secrets/<source>.secret` to paste it into Notion; it is never logged),
//! verifies with it from then on, and answers 200; a later verification request is
//! unsigned, so it is refused like any unsigned request (401) and changes nothing (delete
//! the learned file and restart to accept a new subscription). Trust on first use, as with Asana: create the subscription right
//! after deploying the source, or set `secrets` to the token yourself. Nothing is stored
//! as an event.
//!
//! Delivery id: the event's `/id`; event type: `/type` (`page.content_updated`, …).
//! No worked example is published.

use http::HeaderMap;

use super::common::{no_request_handover, BodyHmac, LearnedBodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Answer, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: LearnedBodyHmac = LearnedBodyHmac {
    hook: HOOK,
    from_request: no_request_handover,
    from_body: handover,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);

const HOOK: BodyHmac = BodyHmac {
    name: "notion",
    aliases: &[],
    about: About {
        headers: &["X-Notion-Signature"],
        signed: "`sha256=` + hex HMAC-SHA256(body) under the subscription's verification_token",
        secret: "none (learned from the verification request) or the verification_token",
        handshakes: &["`verification_token` POST (stored on first contact; trust on first use)"],
        docs: "https://developers.notion.com/reference/webhooks",
    },
    sig: SigHeader {
        header: "X-Notion-Signature",
        name: header_name!("x-notion-signature"),
        prefix: "sha256=",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || Defaults::new(FieldSpec::pointer("/id"), Some(FieldSpec::pointer("/type"))),
};

/// Longest token accepted from a verification request.
const MAX_TOKEN: usize = 256;
/// Largest verification request body looked at.
const MAX_HANDSHAKE_BODY: usize = 1024;

/// The verification request: an unsigned body holding only the token.
fn handover(headers: &HeaderMap, body: &[u8]) -> Option<(String, Answer)> {
    // The verification request is unsigned and holds nothing but the token.
    if headers.contains_key(HOOK.sig.name) || body.len() > MAX_HANDSHAKE_BODY {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let token = obj.get("verification_token")?;
    let usable = obj.len() == 1
        && token.as_str().is_some_and(|t| {
            !t.is_empty() && t.len() <= MAX_TOKEN && t.bytes().all(|b| b.is_ascii_graphic())
        });
    let Some(token) = token.as_str().filter(|_| usable) else {
        return Some((
            String::new(),
            Answer::refuse(400, "bad_handshake", "verification_token is not a usable secret"),
        ));
    };
    Some((
        token.to_owned(),
        Answer::json("{\"verification_token\":\"stored\"}".to_owned()),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_unsigned_token_is_a_verification_request() {
        let none = HeaderMap::new();
        let (t, a) = handover(&none, br#"{"verification_token":"secret_abc123"}"#)
            .unwrap();
        assert_eq!((t.as_str(), a.status), ("secret_abc123", 200));
        // An event is not a handshake.
        assert!(handover(&none, br#"{"id":"e1","type":"page.created"}"#)
            .is_none());
        // A signed request is not one either.
        let mut signed = HeaderMap::new();
        signed.insert("x-notion-signature", "sha256=00".parse().unwrap());
        assert!(handover(&signed, br#"{"verification_token":"secret_abc123"}"#)
            .is_none());
        // A token with more fields, or not a usable string, is refused.
        for bad in [
            &br#"{"verification_token":"secret_x","type":"page.created"}"#[..],
            br#"{"verification_token":""}"#,
            br#"{"verification_token":"has space"}"#,
            br#"{"verification_token":7}"#,
        ] {
            let (t, a) = handover(&none, bad).unwrap();
            assert!(t.is_empty() && a.status == 400, "{}", String::from_utf8_lossy(bad));
        }
    }
}
