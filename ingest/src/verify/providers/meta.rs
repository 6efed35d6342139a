//! Meta (Facebook, WhatsApp Cloud API, Instagram, Messenger — the Graph API webhooks):
//! `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>` (Meta for
//! Developers, "Webhooks" → "Validate payloads"; the legacy SHA-1 `X-Hub-Signature` is
//! ignored, as for GitHub).
//!
//! Handshake (Meta's "Verification Requests"): when the endpoint is registered, Meta
//! sends `GET ?hub.mode=subscribe&hub.challenge=<n>&hub.verify_token=<token you chose>`
//! and expects the challenge echoed with 200. hookgate answers it when `hub.verify_token`
//! equals the source's `verify_token` (compared in constant time), with the challenge as
//! `text/plain` and `nosniff` (only up to 256 characters of `[A-Za-z0-9_-]`, so nothing
//! a browser could run is reflected); a wrong or missing token, or no `verify_token`
//! configured, is 403 `verify_token_mismatch`. Nothing is stored.
//!
//! Meta sends no delivery id: the body's digest is the delivery id (a retry is the same
//! body); event type: the body's `object` (`page`, `whatsapp_business_account`,
//! `instagram`…).

use ring::digest;

use super::common::{BodyHmac, BodyHmacWithEarly, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{
    ct_eq, About, Answer, Defaults, Early, HmacAlgorithm, Provider, SigEncoding, Verifier,
};

static SPEC: BodyHmacWithEarly = BodyHmacWithEarly {
    hook: BodyHmac {
        name: "meta",
        aliases: &["facebook", "whatsapp", "instagram", "messenger"],
        about: About {
            headers: &["X-Hub-Signature-256"],
            signed: "`sha256=` + hex HMAC-SHA256(body)",
            secret: "the app secret (`verify_token`: the token typed in the subscription)",
            handshakes: &["`GET ?hub.mode=subscribe&hub.verify_token=…` (challenge echoed; 403 on a wrong token)"],
            docs: "https://developers.facebook.com/docs/graph-api/webhooks/getting-started",
        },
        sig: SigHeader {
            header: "X-Hub-Signature-256",
            name: header_name!("x-hub-signature-256"),
            prefix: "sha256=",
            encoding: SigEncoding::Hex,
            algorithm: HmacAlgorithm::Sha256,
        },
        defaults: || Defaults::new(FieldSpec::BodyHash, Some(FieldSpec::pointer("/object"))),
    },
    early: subscribe,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);

/// The longest challenge echoed back.
const MAX_CHALLENGE: usize = 256;

/// Meta's verification request (see the module documentation).
fn subscribe(v: &Verifier, req: &Early<'_>) -> Option<Answer> {
    if req.method != http::Method::GET {
        return None;
    }
    let refused = Answer::refuse(
        403,
        "verify_token_mismatch",
        "hub.verify_token does not match the source's verify_token",
    );
    if req.param("hub.mode").as_deref() != Some("subscribe") {
        return Some(Answer::refuse(
            400,
            "bad_handshake",
            "a GET must be a subscription handshake (hub.mode=subscribe)",
        ));
    }
    let (Some(expected), Some(presented)) =
        (&v.options().verify_token, req.param("hub.verify_token"))
    else {
        return Some(refused);
    };
    // Digests first, so the comparison is over equal lengths whatever was sent.
    let a = digest::digest(&digest::SHA256, expected.as_bytes());
    let b = digest::digest(&digest::SHA256, presented.as_bytes());
    if !ct_eq(a.as_ref(), b.as_ref()) {
        return Some(refused);
    }
    match req.param("hub.challenge") {
        Some(c) if echoable(&c) => Some(Answer::text(c)),
        _ => Some(Answer::refuse(
            400,
            "bad_handshake",
            "hub.challenge is missing, too long or not [A-Za-z0-9_-]",
        )),
    }
}

/// A challenge safe to echo: short, and nothing but letters, digits, `_` and `-`.
pub(crate) fn echoable(challenge: &str) -> bool {
    !challenge.is_empty()
        && challenge.len() <= MAX_CHALLENGE
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use http::{HeaderMap, Method};

    use crate::verify::test_support::*;
    use crate::verify::{Early, Options, Verifier};

    fn with_token(token: Option<&str>) -> Verifier {
        Verifier::with_options(
            super::PROVIDER,
            &strings(&["app-secret"]),
            Options {
                verify_token: token.map(str::to_owned),
                ..Options::default()
            },
        )
        .unwrap()
    }

    fn get(v: &Verifier, query: &str) -> Option<(u16, String)> {
        let headers = HeaderMap::new();
        let req = Early {
            method: &Method::GET,
            headers: &headers,
            query: Some(query),
        };
        v.early_handshake(&req).map(|a| (a.status, a.body))
    }

    /// Meta's "Verification Requests" example query, with its challenge.
    #[test]
    fn the_subscription_handshake_echoes_the_challenge_for_the_right_token() {
        let v = with_token(Some("meatyhamhock"));
        let q = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock";
        assert_eq!(get(&v, q), Some((200, "1158201444".into())));
        let wrong = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhocks";
        assert_eq!(get(&v, wrong).map(|a| a.0), Some(403));
        let none = "hub.mode=subscribe&hub.challenge=1158201444";
        assert_eq!(get(&v, none).map(|a| a.0), Some(403));
        // Without a configured token nothing is accepted.
        assert_eq!(get(&with_token(None), q).map(|a| a.0), Some(403));
        // Only subscribe handshakes; a challenge that is not plain text is not echoed.
        assert_eq!(
            get(&v, "hub.mode=unsubscribe&hub.verify_token=meatyhamhock").map(|a| a.0),
            Some(400)
        );
        for bad in ["%3Cscript%3E", "", &"1".repeat(257)] {
            let q = format!("hub.mode=subscribe&hub.verify_token=meatyhamhock&hub.challenge={bad}");
            assert_eq!(get(&v, &q).map(|a| a.0), Some(400), "{bad}");
        }
        // A POST is an ordinary webhook.
        let headers = HeaderMap::new();
        let post = Early {
            method: &Method::POST,
            headers: &headers,
            query: Some(q),
        };
        assert!(v.early_handshake(&post).is_none());
    }

    #[test]
    fn debug_output_never_shows_the_verify_token() {
        let v = with_token(Some("meatyhamhock"));
        assert!(!format!("{v:?} {:?}", v.options()).contains("meatyhamhock"));
    }
}
