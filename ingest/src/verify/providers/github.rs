//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
//!
//! Per GitHub's "Validating webhook deliveries" docs. There is no timestamp,
//! so replay protection is out of GitHub's scheme (the delivery id header is
//! the caller's tool for de-duplication). The legacy SHA-1 `X-Hub-Signature`
//! header is ignored: accepting it would let a downgrade bypass SHA-256.

use http::HeaderMap;
use ring::hmac;

use crate::extract::FieldSpec;
use crate::verify::{
    decode_hex_exact, header_str, About, Defaults, KeyError, Keys, Options, Provider,
    ProviderSpec, Request, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Github);

static HEADER: http::HeaderName = http::HeaderName::from_static("x-hub-signature-256");
const PREFIX: &str = "sha256=";

struct Github;

impl ProviderSpec for Github {
    fn name(&self) -> &'static str {
        "github"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-Hub-Signature-256"],
            signed: "`sha256=` + hex HMAC-SHA256(body)",
            secret: "the webhook secret",
            handshakes: &[],
            docs: "https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        verify(v.hmac_keys(), req.headers, req.body)
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(&HEADER)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        _now: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), body);
        Ok(vec![(
            "X-Hub-Signature-256".to_string(),
            format!("{PREFIX}{}", hex::encode(tag.as_ref())),
        )])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::header("x-github-delivery"),
            Some(FieldSpec::header("x-github-event")),
        )
    }
}

/// Checks the SHA-256 signature header against every configured key.
fn verify(keys: &[hmac::Key], headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    let value = header_str(headers, &HEADER)?;
    let hex_sig = value.strip_prefix(PREFIX).ok_or(VerifyError::Malformed)?;
    let mut sig = [0u8; 32];
    decode_hex_exact(hex_sig, &mut sig)?;
    if keys.iter().any(|key| hmac::verify(key, body, &sig).is_ok()) {
        Ok(())
    } else {
        Err(VerifyError::Invalid)
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
    const SECRET: &str = "gh-secret-one";

    fn signed() -> Vec<(String, String)> {
        sign(P, SECRET, BODY, NOW, None).unwrap()
    }

    /// GitHub's published example ("Validating webhook deliveries", section
    /// "Testing the webhook payload validation").
    #[test]
    fn github_documented_vector() {
        let v = verifier(P, &["It's a Secret to Everybody"]);
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let headers = header_map(&[("X-Hub-Signature-256".into(), expected.into())]);
        assert_eq!(v.verify(&headers, b"Hello, World!", NOW), Ok(()));
        // And our signer produces the same header from the same inputs.
        let ours = sign(P, "It's a Secret to Everybody", b"Hello, World!", 0, None).unwrap();
        assert_eq!(value_of(&ours, "x-hub-signature-256"), expected);
        // Uppercase hex is the same bytes.
        let upper = header_map(&[(
            "X-Hub-Signature-256".into(),
            format!("sha256={}", &expected[7..].to_uppercase()),
        )]);
        assert_eq!(v.verify(&upper, b"Hello, World!", NOW), Ok(()));
    }



    #[test]
    fn flipped_signature_char_fails() {
        let v = verifier(P, &[SECRET]);
        let sig = value_of(&signed(), "x-hub-signature-256");
        for index in [7, 30, sig.len() - 1] {
            let bad = with(&signed(), "x-hub-signature-256", &flip_char(&sig, index));
            assert_eq!(
                v.verify(&bad, BODY, NOW),
                Err(VerifyError::Invalid),
                "{index}"
            );
        }
    }



    #[test]
    fn missing_header() {
        let v = verifier(P, &[SECRET]);
        let r = v.verify(&without(&signed(), "x-hub-signature-256"), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Missing));
        // The legacy SHA-1 header alone does not count.
        let legacy = header_map(&[("X-Hub-Signature".into(), "sha1=00".into())]);
        assert_eq!(v.verify(&legacy, BODY, NOW), Err(VerifyError::Missing));
    }

    #[test]
    fn malformed_header() {
        let v = verifier(P, &[SECRET]);
        let sig = value_of(&signed(), "x-hub-signature-256");
        let hex_part = &sig[7..];
        for bad in [
            hex_part.to_string(),                    // no prefix
            format!("SHA256={hex_part}"),            // prefix is case-sensitive
            format!("sha1={hex_part}"),              // other algorithm
            format!("sha256={}", &hex_part[..62]),   // short
            format!("sha256={hex_part}00"),          // long
            format!("sha256={}zz", &hex_part[..62]), // not hex
            "sha256=".to_string(),
        ] {
            let r = v.verify(&with(&signed(), "x-hub-signature-256", &bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        let raw = with_raw(&signed(), "x-hub-signature-256", b"sha256=\xe9\xe9");
        assert_eq!(v.verify(&raw, BODY, NOW), Err(VerifyError::Malformed));
        let twice = duplicated(&signed(), "x-hub-signature-256");
        assert_eq!(v.verify(&twice, BODY, NOW), Err(VerifyError::Malformed));
    }
}
