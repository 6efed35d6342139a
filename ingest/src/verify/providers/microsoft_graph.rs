//! Microsoft Graph change notifications: no signature; every notification in the body's
//! `value` array carries the `clientState` the subscription was created with, a shared
//! secret the receiver must compare (Microsoft Graph docs, "Receive change notifications
//! through webhooks" → "Processing the change notification"). hookgate requires every
//! item's `clientState` to equal one of `secrets` (constant-time); at most 256 items.
//! (Rich notifications' `validationTokens` JWTs are not checked.)
//!
//! Handshake ("Notification endpoint validation"): on subscription creation Graph POSTs
//! `?validationToken=<token>` with an empty body and expects, within 10 seconds, 200 with
//! the decoded token as `text/plain`. hookgate answers it before reading any body (it is
//! unauthenticated by design) — only up to 1024 characters of visible ASCII and space
//! without `<>&"'`, with `nosniff`, so nothing a browser could run is reflected; anything
//! else is 400. Nothing is stored.
//!
//! Delivery id: a digest of the body; event type: the first item's `changeType`.

use serde_json::Value;

use crate::extract::FieldSpec;
use crate::verify::{
    About, Answer, Defaults, Early, KeyError, Keys, Options, Provider, ProviderSpec, Request,
    SecretKind, Signed, TokenSet, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&MicrosoftGraph);

/// Most notifications one POST may carry.
const MAX_ITEMS: usize = 256;
/// Longest validation token echoed.
const MAX_TOKEN: usize = 1024;

struct MicrosoftGraph;

/// A validation token safe to echo as text.
fn echoable_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN
        && token
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && !b"<>&\"'".contains(&b))
}

impl ProviderSpec for MicrosoftGraph {
    fn name(&self) -> &'static str {
        "microsoft-graph"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["graph"]
    }

    fn about(&self) -> About {
        About {
            headers: &["(body) `value[].clientState`"],
            signed: "nothing: each notification's `clientState` must equal the secret",
            secret: "the subscription's `clientState`",
            handshakes: &["`POST ?validationToken=…` (token echoed as text/plain, nosniff)"],
            docs: "https://learn.microsoft.com/en-us/graph/change-notifications-delivery-webhooks",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn covers_body(&self) -> bool {
        false
    }

    fn signature_in_body(&self) -> bool {
        true
    }

    fn secret_kind(&self) -> SecretKind {
        SecretKind::Token("[!-~]{1,64}")
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::Tokens(TokenSet::new(secrets)?))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let doc: Value = serde_json::from_slice(req.body).map_err(|_| VerifyError::Malformed)?;
        let items = doc
            .get("value")
            .and_then(Value::as_array)
            .ok_or(VerifyError::Missing)?;
        if items.is_empty() || items.len() > MAX_ITEMS {
            return Err(VerifyError::Malformed);
        }
        for item in items {
            let state = item
                .get("clientState")
                .ok_or(VerifyError::Missing)?
                .as_str()
                .ok_or(VerifyError::Malformed)?;
            if !v.token_matches(state.as_bytes()) {
                return Err(VerifyError::Invalid);
            }
        }
        Ok(())
    }

    super::common::signed_in_body!();

    /// One notification carrying `secret` as its `clientState`, the payload (as text) as
    /// its `resource`.
    fn sign_request(
        &self,
        secret: &str,
        body: &[u8],
        _: i64,
        _: &Options,
    ) -> Result<Signed, KeyError> {
        let doc = serde_json::json!({"value": [{
            "subscriptionId": "00000000-0000-0000-0000-000000000000",
            "clientState": secret,
            "changeType": "created",
            "resource": String::from_utf8_lossy(body),
        }]});
        Ok(Signed {
            headers: Vec::new(),
            body: doc.to_string().into_bytes(),
        })
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::BodyHash,
            Some(FieldSpec::pointer("/value/0/changeType")),
        )
    }

    fn early_handshake(&self, _: &Verifier, req: &Early<'_>) -> Option<Answer> {
        if req.method != http::Method::POST {
            return None;
        }
        let token = req.param("validationToken")?;
        Some(if echoable_token(&token) {
            Answer::text(token)
        } else {
            Answer::refuse(
                400,
                "bad_handshake",
                "validationToken is too long or holds characters that are not echoed",
            )
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use http::{HeaderMap, Method};

    use crate::verify::test_support::*;
    use crate::verify::{Early, VerifyError};

    #[test]
    fn every_notification_must_carry_the_client_state() {
        let v = verifier(super::PROVIDER, &["secretClientValue"]);
        let h = HeaderMap::new();
        let one = |state: &str| {
            format!(r#"{{"value":[{{"clientState":"{state}","changeType":"created","resource":"Users/1/messages/2"}}]}}"#)
        };
        assert_eq!(v.verify(&h, one("secretClientValue").as_bytes(), NOW), Ok(()));
        assert_eq!(
            v.verify(&h, one("guess").as_bytes(), NOW),
            Err(VerifyError::Invalid)
        );
        let mixed = r#"{"value":[{"clientState":"secretClientValue"},{"clientState":"guess"}]}"#;
        assert_eq!(v.verify(&h, mixed.as_bytes(), NOW), Err(VerifyError::Invalid));
        for (body, expected) in [
            (r#"{"value":[{"changeType":"created"}]}"#, VerifyError::Missing),
            (r#"{"value":[]}"#, VerifyError::Malformed),
            (r#"{"other":1}"#, VerifyError::Missing),
            ("", VerifyError::Malformed),
        ] {
            assert_eq!(v.verify(&h, body.as_bytes(), NOW), Err(expected), "{body}");
        }
    }

    #[test]
    fn the_validation_token_is_echoed_only_when_harmless() {
        let v = verifier(super::PROVIDER, &["secretClientValue"]);
        let h = HeaderMap::new();
        let post = |q: &'static str| {
            v.early_handshake(&Early {
                method: &Method::POST,
                headers: &h,
                query: Some(q),
            })
            .map(|a| (a.status, a.body))
        };
        assert_eq!(
            post("validationToken=Validation%3a+Testing+client+application+reachability"),
            Some((200, "Validation: Testing client application reachability".into()))
        );
        assert_eq!(post("validationToken=%3Cscript%3E").map(|a| a.0), Some(400));
        assert_eq!(post("other=1"), None, "an ordinary notification");
    }
}
