//! Telegram: the `secret_token` given to `setWebhook` is echoed verbatim in
//! `X-Telegram-Bot-Api-Secret-Token`.
//!
//! Per the Bot API `setWebhook` docs the token is 1-256 characters from
//! `A-Z a-z 0-9 _ -`. A configured token outside that set could never be
//! registered with Telegram, so it is rejected at load time instead of
//! silently failing every request. Nothing is signed and there is no
//! timestamp; the comparison goes through [`super::TokenSet`].

use http::HeaderMap;

use super::{KeyError, TokenSet, VerifyError};

pub(super) static HEADER: http::HeaderName =
    http::HeaderName::from_static("x-telegram-bot-api-secret-token");

/// Rejects a configured token Telegram itself would refuse.
pub(super) fn check_token(index: usize, secret: &str) -> Result<(), KeyError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if secret.len() > 256 || !secret.bytes().all(allowed) {
        return Err(KeyError::BadSecret {
            index,
            reason: "Telegram secret tokens are 1-256 characters of A-Z, a-z, 0-9, _ and -",
        });
    }
    Ok(())
}

/// Checks the presented token against every configured token.
pub(super) fn verify(tokens: &TokenSet, headers: &HeaderMap) -> Result<(), VerifyError> {
    let value = super::header_str(headers, &HEADER)?;
    if tokens.matches(value.as_bytes()) {
        Ok(())
    } else {
        Err(VerifyError::Invalid)
    }
}

/// The header Telegram would send: the token itself.
pub(super) fn sign(secret: &str) -> Vec<(String, String)> {
    vec![(
        "X-Telegram-Bot-Api-Secret-Token".to_string(),
        secret.to_string(),
    )]
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::*;
    use super::super::{sign, KeyError, Provider, Verifier, VerifyError};

    const P: Provider = Provider::Telegram;
    const SECRET: &str = "tg_Secret-Token_0123456789";
    const H: &str = "x-telegram-bot-api-secret-token";

    fn signed() -> Vec<(String, String)> {
        sign(P, SECRET, BODY, NOW, None).unwrap()
    }

    #[test]
    fn round_trip() {
        let v = verifier(P, &[SECRET]);
        assert_eq!(value_of(&signed(), H), SECRET);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
    }

    /// Like GitLab, the token does not cover the body; pinned so nobody
    /// assumes Telegram deliveries are integrity-protected by it.
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
        for index in [0, 12, SECRET.len() - 1] {
            let bad = with(&signed(), H, &flip_char(SECRET, index));
            assert_eq!(
                v.verify(&bad, BODY, NOW),
                Err(VerifyError::Invalid),
                "{index}"
            );
        }
        let lower = with(&signed(), H, &SECRET.to_lowercase());
        assert_eq!(v.verify(&lower, BODY, NOW), Err(VerifyError::Invalid));
    }

    #[test]
    fn wrong_secret_fails() {
        let v = verifier(P, &["another_token"]);
        assert_eq!(
            v.verify(&header_map(&signed()), BODY, NOW),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn second_secret_matches_during_rotation() {
        let v = verifier(P, &["new_token", SECRET]);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
    }

    #[test]
    fn tokens_telegram_would_refuse_fail_closed() {
        let long = "a".repeat(257);
        for bad in ["has space", "semi;colon", "ünïcode", long.as_str()] {
            let e = Verifier::new(P, &strings(&[SECRET, bad]), Duration::ZERO, None).err();
            assert!(
                matches!(e, Some(KeyError::BadSecret { index: 1, .. })),
                "{bad}: {e:?}"
            );
            assert!(matches!(
                sign(P, bad, BODY, NOW, None),
                Err(KeyError::BadSecret { index: 0, .. })
            ));
        }
        assert!(Verifier::new(
            P,
            &strings(&["a".repeat(256).as_str()]),
            Duration::ZERO,
            None
        )
        .is_ok());
    }

    #[test]
    fn missing_header() {
        let v = verifier(P, &[SECRET]);
        assert_eq!(
            v.verify(&without(&signed(), H), BODY, NOW),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn malformed_header() {
        let v = verifier(P, &[SECRET]);
        for raw in [&b"tg_\xff"[..], b"tab\there", b""] {
            let r = v.verify(&with_raw(&signed(), H, raw), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{raw:?}");
        }
        let twice = duplicated(&signed(), H);
        assert_eq!(v.verify(&twice, BODY, NOW), Err(VerifyError::Malformed));
    }
}
