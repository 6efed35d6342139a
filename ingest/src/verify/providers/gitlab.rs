//! GitLab: the configured secret token is echoed verbatim in `X-Gitlab-Token`.
//!
//! Per GitLab's webhook docs ("Validate payloads by using a secret token").
//! Nothing is signed and there is no timestamp, so this only proves the sender
//! knows the token; the comparison goes through [`super::TokenSet`] so it is
//! constant-time and does not leak the token's length.

use http::HeaderMap;

use crate::extract::FieldSpec;
use crate::verify::{
    header_str, About, Defaults, KeyError, Keys, Options, Provider, ProviderSpec, Request, SecretKind,
    TokenSet, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Gitlab);

static HEADER: http::HeaderName = http::HeaderName::from_static("x-gitlab-token");

struct Gitlab;

impl ProviderSpec for Gitlab {
    fn name(&self) -> &'static str {
        "gitlab"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-Gitlab-Token"],
            signed: "nothing: the secret token itself is sent",
            secret: "the secret token",
            handshakes: &[],
            docs: "https://docs.gitlab.com/user/project/integrations/webhooks/#validate-payloads-by-using-a-secret-token",
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

    /// Checks the presented token against every configured token.
    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let value = header_str(req.headers, &HEADER)?;
        if v.token_matches(value.as_bytes()) {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(&HEADER)
    }

    /// The header GitLab would send: the token itself.
    fn sign(&self, secret: &str, _: &[u8], _: i64, _: &Options) -> Result<Vec<(String, String)>, KeyError> {
        Ok(vec![("X-Gitlab-Token".to_string(), secret.to_string())])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::Any(vec![
                FieldSpec::header("x-gitlab-event-uuid"),
                FieldSpec::header("idempotency-key"),
            ]),
            Some(FieldSpec::header("x-gitlab-event")),
        )
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::{sign, Provider, VerifyError};

    const P: Provider = super::PROVIDER;
    const SECRET: &str = "glpat-like-token-0123";

    fn signed() -> Vec<(String, String)> {
        sign(P, SECRET, BODY, NOW, None).unwrap()
    }


    /// The token does not cover the body: GitLab's scheme cannot detect a
    /// modified body, so a flipped bit still passes. This test pins that
    /// documented limitation so nobody assumes otherwise.
    #[test]
    fn body_is_not_covered_by_the_token() {
        let v = verifier(P, &[SECRET]);
        assert_eq!(
            v.verify(&header_map(&signed()), &flip_bit(BODY), NOW),
            Ok(())
        );
    }

    #[test]
    fn flipped_token_char_fails() {
        let v = verifier(P, &[SECRET]);
        for index in [0, 10, SECRET.len() - 1] {
            let bad = with(&signed(), "x-gitlab-token", &flip_char(SECRET, index));
            assert_eq!(
                v.verify(&bad, BODY, NOW),
                Err(VerifyError::Invalid),
                "{index}"
            );
        }
        // Prefixes and extensions of the token are not the token.
        for bad in [&SECRET[..SECRET.len() - 1], &format!("{SECRET}x")] {
            let r = v.verify(&with(&signed(), "x-gitlab-token", bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Invalid), "{bad}");
        }
    }



    #[test]
    fn missing_header() {
        let v = verifier(P, &[SECRET]);
        let r = v.verify(&without(&signed(), "x-gitlab-token"), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Missing));
    }

    #[test]
    fn malformed_header() {
        let v = verifier(P, &[SECRET]);
        for raw in [&b"caf\xe9"[..], b"tok\ten", b""] {
            let r = v.verify(&with_raw(&signed(), "x-gitlab-token", raw), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{raw:?}");
        }
        let twice = duplicated(&signed(), "x-gitlab-token");
        assert_eq!(v.verify(&twice, BODY, NOW), Err(VerifyError::Malformed));
    }
}
