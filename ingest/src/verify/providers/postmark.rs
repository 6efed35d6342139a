//! Postmark: webhooks carry no signature; Postmark's docs secure them with HTTP Basic
//! authentication credentials embedded in the webhook URL
//! (`https://user:password@hooks.example.com/hooks/postmark`), sent as
//! `Authorization: Basic base64(user:password)` (Postmark developer docs, "Webhooks
//! overview" → "Protecting your webhook"). Configure `secrets = ["user:password"]`; the
//! presented credentials are compared in constant time (as a shared token), several
//! during a rotation. No timestamp and no signature over the body: replays are refused by
//! the body-digest dedupe.
//!
//! Postmark sends no delivery id and one message has several events (Delivery, Open,
//! Click…): the body's digest is the delivery id; event type: `RecordType`.

use base64::Engine as _;
use http::HeaderMap;

use crate::extract::FieldSpec;
use crate::verify::{
    header_str, About, Defaults, KeyError, Keys, Options, Provider, ProviderSpec, Request,
    SecretKind, TokenSet, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Postmark);

const AUTH: &str = "Authorization";

struct Postmark;

impl ProviderSpec for Postmark {
    fn name(&self) -> &'static str {
        "postmark"
    }

    fn about(&self) -> About {
        About {
            headers: &[AUTH],
            signed: "nothing: HTTP Basic credentials (`Authorization: Basic …`)",
            secret: "`user:password` of the webhook URL's credentials",
            handshakes: &[],
            docs: "https://postmarkapp.com/developer/webhooks/webhooks-overview",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn covers_body(&self) -> bool {
        false
    }

    fn secret_kind(&self) -> SecretKind {
        SecretKind::Token("[!-9;-~]{1,24}:[!-~]{1,24}")
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        for (index, s) in secrets.iter().enumerate() {
            if !s.contains(':') {
                return Err(KeyError::BadSecret {
                    index,
                    reason: "expected `user:password` (Basic authentication credentials)",
                });
            }
        }
        Ok(Keys::Tokens(TokenSet::new(secrets)?))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let value = header_str(req.headers, AUTH)?;
        let (scheme, encoded) = value.split_once(' ').ok_or(VerifyError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(VerifyError::Malformed);
        }
        let credentials = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| VerifyError::Malformed)?;
        if v.token_matches(&credentials) {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(AUTH)
    }

    /// The header Postmark sends: the credentials themselves.
    fn sign(
        &self,
        secret: &str,
        _: &[u8],
        _: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        Ok(vec![(
            AUTH.to_string(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(secret)
            ),
        )])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::BodyHash, Some(FieldSpec::pointer("/RecordType")))
    }

    fn example_secrets(&self) -> [&'static str; 2] {
        ["postmark:hook-password-1", "postmark:hook-password-2"]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::{KeyError, Options, Verifier, VerifyError};

    /// RFC 7617's example credentials (`Aladdin:open sesame`).
    #[test]
    fn basic_credentials_as_in_rfc_7617() {
        let v = verifier(super::PROVIDER, &["Aladdin:open sesame"]);
        for value in [
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            "basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        ] {
            let h = header_map(&[("Authorization".into(), value.into())]);
            assert_eq!(v.verify(&h, BODY, NOW), Ok(()), "{value}");
        }
        for (value, expected) in [
            ("Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==", VerifyError::Malformed),
            ("Basic !!!", VerifyError::Malformed),
            ("Basic", VerifyError::Malformed),
            ("Basic QWxhZGRpbjpvcGVuIHNlc2FtZg==", VerifyError::Invalid),
        ] {
            let h = header_map(&[("Authorization".into(), value.into())]);
            assert_eq!(v.verify(&h, BODY, NOW), Err(expected), "{value}");
        }
        let e = Verifier::with_options(super::PROVIDER, &strings(&["no-colon"]), Options::default());
        assert!(matches!(e.err(), Some(KeyError::BadSecret { index: 0, .. })));
    }
}
