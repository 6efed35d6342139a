//! GitLab: the configured secret token is echoed verbatim in `X-Gitlab-Token`.
//!
//! Per GitLab's webhook docs ("Validate payloads by using a secret token").
//! Nothing is signed and there is no timestamp, so this only proves the sender
//! knows the token; the comparison goes through [`super::TokenSet`] so it is
//! constant-time and does not leak the token's length.

use http::HeaderMap;

use super::{TokenSet, VerifyError};

pub(super) static HEADER: http::HeaderName = http::HeaderName::from_static("x-gitlab-token");

/// Checks the presented token against every configured token.
pub(super) fn verify(tokens: &TokenSet, headers: &HeaderMap) -> Result<(), VerifyError> {
    let value = super::header_str(headers, &HEADER)?;
    if tokens.matches(value.as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::Invalid)
    }
}

/// The header GitLab would send: the token itself.
pub(super) fn sign(secret: &str) -> Vec<(String, String)> {
    vec![("X-Gitlab-Token".to_string(), secret.to_string())]
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::super::test_support::*;
    use super::super::{sign, Provider, VerifyError};

    const P: Provider = Provider::Gitlab;
    const SECRET: &str = "glpat-like-token-0123";

    fn signed() -> Vec<(String, String)> {
        sign(P, SECRET, BODY, NOW, None).unwrap()
    }

    #[test]
    fn round_trip() {
        let v = verifier(P, &[SECRET]);
        assert_eq!(value_of(&signed(), "x-gitlab-token"), SECRET);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
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
    fn wrong_secret_fails() {
        let v = verifier(P, &["some-other-token"]);
        assert_eq!(
            v.verify(&header_map(&signed()), BODY, NOW),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn second_secret_matches_during_rotation() {
        let v = verifier(P, &["new-token", SECRET]);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
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
