//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
//!
//! Per GitHub's "Validating webhook deliveries" docs. There is no timestamp,
//! so replay protection is out of GitHub's scheme (the delivery id header is
//! the caller's tool for de-duplication). The legacy SHA-1 `X-Hub-Signature`
//! header is ignored: accepting it would let a downgrade bypass SHA-256.

use http::HeaderMap;
use ring::hmac;

use super::VerifyError;

pub(super) static HEADER: http::HeaderName = http::HeaderName::from_static("x-hub-signature-256");
const PREFIX: &str = "sha256=";

/// Checks the SHA-256 signature header against every configured key.
pub(super) fn verify(
    keys: &[hmac::Key],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), VerifyError> {
    let value = super::header_str(headers, &HEADER)?;
    let hex_sig = value.strip_prefix(PREFIX).ok_or(VerifyError::Malformed)?;
    let mut sig = [0u8; 32];
    super::decode_hex_exact(hex_sig, &mut sig)?;
    if keys.iter().any(|key| hmac::verify(key, body, &sig).is_ok()) {
        Ok(())
    } else {
        Err(VerifyError::Invalid)
    }
}

/// The header GitHub would send for `body`.
pub(super) fn sign(key: &hmac::Key, body: &[u8]) -> Vec<(String, String)> {
    let tag = hmac::sign(key, body);
    vec![(
        "X-Hub-Signature-256".to_string(),
        format!("{PREFIX}{}", hex::encode(tag.as_ref())),
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
    use super::super::test_support::*;
    use super::super::{sign, Provider, VerifyError};

    const P: Provider = Provider::Github;
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
    fn round_trip() {
        let v = verifier(P, &[SECRET]);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
    }

    #[test]
    fn flipped_body_bit_fails() {
        let v = verifier(P, &[SECRET]);
        let r = v.verify(&header_map(&signed()), &flip_bit(BODY), NOW);
        assert_eq!(r, Err(VerifyError::Invalid));
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
    fn wrong_secret_fails() {
        let v = verifier(P, &["another-secret"]);
        assert_eq!(
            v.verify(&header_map(&signed()), BODY, NOW),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn second_secret_matches_during_rotation() {
        let v = verifier(P, &["new-secret", SECRET]);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
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
