//! Telegram: the `secret_token` given to `setWebhook` is echoed verbatim in
//! `X-Telegram-Bot-Api-Secret-Token`.
//!
//! Per the Bot API `setWebhook` docs the token is 1-256 characters from
//! `A-Z a-z 0-9 _ -`. A configured token outside that set could never be
//! registered with Telegram, so it is rejected at load time instead of
//! silently failing every request. Nothing is signed and there is no
//! timestamp; the comparison goes through [`super::TokenSet`].

use http::HeaderMap;

use crate::extract::FieldSpec;
use crate::verify::{
    header_str, About, Defaults, KeyError, Keys, Options, Provider, ProviderSpec, Request, SecretKind,
    TokenSet, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Telegram);

static HEADER: http::HeaderName = http::HeaderName::from_static("x-telegram-bot-api-secret-token");

struct Telegram;

/// Rejects a configured token Telegram itself would refuse.
fn check_token(index: usize, secret: &str) -> Result<(), KeyError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if secret.len() > 256 || !secret.bytes().all(allowed) {
        return Err(KeyError::BadSecret {
            index,
            reason: "Telegram secret tokens are 1-256 characters of A-Z, a-z, 0-9, _ and -",
        });
    }
    Ok(())
}

impl ProviderSpec for Telegram {
    fn name(&self) -> &'static str {
        "telegram"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-Telegram-Bot-Api-Secret-Token"],
            signed: "nothing: the `secret_token` given to setWebhook is sent",
            secret: "the setWebhook `secret_token` (1-256 of A-Z a-z 0-9 _ -)",
            handshakes: &[],
            docs: "https://core.telegram.org/bots/api#setwebhook",
        }
    }

    fn covers_body(&self) -> bool {
        false
    }

    fn secret_kind(&self) -> SecretKind {
        SecretKind::Token("[A-Za-z0-9_-]{1,256}")
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        for (index, s) in secrets.iter().enumerate() {
            check_token(index, s)?;
        }
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

    /// The header Telegram would send: the token itself.
    fn sign(&self, secret: &str, _: &[u8], _: i64, _: &Options) -> Result<Vec<(String, String)>, KeyError> {
        check_token(0, secret)?;
        Ok(vec![(
            "X-Telegram-Bot-Api-Secret-Token".to_string(),
            secret.to_string(),
        )])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::pointer("/update_id"), Some(FieldSpec::TelegramKind))
    }

    fn example_secrets(&self) -> [&'static str; 2] {
        ["hookgate_example-token-1", "hookgate_example-token-2"]
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
    use std::time::Duration;

    use crate::verify::test_support::*;
    use crate::verify::{sign, KeyError, Provider, Verifier, VerifyError};

    const P: Provider = super::PROVIDER;
    const SECRET: &str = "tg_Secret-Token_0123456789";
    const H: &str = "x-telegram-bot-api-secret-token";

    fn signed() -> Vec<(String, String)> {
        sign(P, SECRET, BODY, NOW, None).unwrap()
    }

    /// The token is compared byte for byte: another case is another token (the shared
    /// near-token cases are `suite::token_schemes_refuse_near_tokens`).
    #[test]
    fn the_token_is_case_sensitive() {
        let v = verifier(P, &[SECRET]);
        let lower = with(&signed(), H, &SECRET.to_lowercase());
        assert_eq!(v.verify(&lower, BODY, NOW), Err(VerifyError::Invalid));
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

}
