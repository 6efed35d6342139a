//! Okta event hooks: each delivery carries the secret configured on the hook in its
//! `Authorization` header (the header name and value are set in Okta's "Authentication
//! field" / "Authentication secret"; hookgate checks `Authorization`), compared as a
//! shared token in constant time (Okta developer docs, "Event hooks" → "Add request
//! authentication"). There is no signature over the body: replays are refused by the
//! body-digest dedupe.
//!
//! Handshake ("one-time verification request"): when the hook is verified Okta sends
//! `GET` with `X-Okta-Verification-Challenge: <value>` (and the same `Authorization`
//! header); hookgate checks the token first and answers `{"verification": "<value>"}`
//! (403 `signature_invalid` with a wrong token). Nothing is stored.
//!
//! Delivery id: the body's `eventId`; event type: `eventType`.

use http::HeaderMap;

use super::meta::echoable;
use crate::extract::FieldSpec;
use crate::verify::{
    header_str, About, Answer, Defaults, Early, KeyError, Keys, Options, Provider,
    ProviderSpec, Request, SecretKind, TokenSet, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Okta);

const AUTH: &str = "Authorization";
const CHALLENGE: &str = "X-Okta-Verification-Challenge";

struct Okta;

fn check(v: &Verifier, headers: &HeaderMap) -> Result<(), VerifyError> {
    let value = header_str(headers, AUTH)?;
    if v.token_matches(value.as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::Invalid)
    }
}

impl ProviderSpec for Okta {
    fn name(&self) -> &'static str {
        "okta"
    }

    fn about(&self) -> About {
        About {
            headers: &[AUTH],
            signed: "nothing: the hook's authentication secret is sent as `Authorization`",
            secret: "the event hook's authentication secret",
            handshakes: &["`GET` with `X-Okta-Verification-Challenge` (answered after the token check)"],
            docs: "https://developer.okta.com/docs/concepts/event-hooks/",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn covers_body(&self) -> bool {
        false
    }

    fn secret_kind(&self) -> SecretKind {
        SecretKind::Token("[!-~]{1,64}")
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::Tokens(TokenSet::new(secrets)?))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        check(v, req.headers)
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(AUTH)
    }

    fn sign(
        &self,
        secret: &str,
        _: &[u8],
        _: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        Ok(vec![(AUTH.to_string(), secret.to_string())])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::pointer("/eventId"),
            Some(FieldSpec::pointer("/eventType")),
        )
    }

    fn early_handshake(&self, v: &Verifier, req: &Early<'_>) -> Option<Answer> {
        if req.method != http::Method::GET {
            return None;
        }
        if let Err(e) = check(v, req.headers) {
            return Some(Answer::refuse(
                if e == VerifyError::Missing { 401 } else { 403 },
                e.code(),
                "the verification request does not carry the hook's secret",
            ));
        }
        let challenge = req
            .headers
            .get(CHALLENGE)
            .and_then(|c| c.to_str().ok())
            .filter(|c| echoable(c));
        Some(match challenge {
            Some(c) => Answer::json(serde_json::json!({ "verification": c }).to_string()),
            None => Answer::refuse(
                400,
                "bad_handshake",
                "X-Okta-Verification-Challenge is missing, too long or not [A-Za-z0-9_-]",
            ),
        })
    }
}
