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

// Its cases are the shared suite's (`suite.rs`: round trip, missing, duplicated and
// malformed headers, the body not covered) and `suite::token_schemes_refuse_near_tokens`.
