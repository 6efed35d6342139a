//! Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>`.
//!
//! Per Shopify's webhook docs ("Verify webhooks"): the key is the app's client
//! secret, the MAC covers the raw body only, and the digest is standard base64
//! (not hex). No timestamp is signed, so replay protection is the caller's
//! business (e.g. de-duplicating on `X-Shopify-Webhook-Id`).

use base64::Engine as _;
use http::HeaderMap;
use ring::hmac;

use super::VerifyError;

pub(super) static HEADER: http::HeaderName = http::HeaderName::from_static("x-shopify-hmac-sha256");

/// Checks the base64 body MAC against every configured key.
pub(super) fn verify(
    keys: &[hmac::Key],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), VerifyError> {
    let value = super::header_str(headers, &HEADER)?;
    let mut buf = [0u8; super::MAX_SIG_LEN + 8];
    let sig = super::decode_b64_exact(value, 32, &mut buf)?;
    if keys.iter().any(|key| hmac::verify(key, body, sig).is_ok()) {
        Ok(())
    } else {
        Err(VerifyError::Invalid)
    }
}

/// The header Shopify would send for `body`.
pub(super) fn sign(key: &hmac::Key, body: &[u8]) -> Vec<(String, String)> {
    let tag = hmac::sign(key, body);
    vec![(
        "X-Shopify-Hmac-Sha256".to_string(),
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
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
    use base64::Engine as _;

    use super::super::test_support::*;
    use super::super::{sign, Provider, VerifyError};

    const P: Provider = Provider::Shopify;
    const SECRET: &str = "shpss_client_secret_1";
    const H: &str = "x-shopify-hmac-sha256";

    fn signed() -> Vec<(String, String)> {
        sign(P, SECRET, BODY, NOW, None).unwrap()
    }

    /// Shopify publishes no complete vector, so pin the encoding against the
    /// RFC 4231 test case 2 HMAC (key "Jefe"): this proves the header is the
    /// base64 of the raw digest, not of its hex.
    #[test]
    fn encoding_is_base64_of_raw_digest() {
        let digest =
            hex::decode("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
                .unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode(digest);
        let ours = sign(P, "Jefe", b"what do ya want for nothing?", NOW, None).unwrap();
        assert_eq!(value_of(&ours, H), expected);
        let v = verifier(P, &["Jefe"]);
        let headers = header_map(&[(H.into(), expected)]);
        assert_eq!(
            v.verify(&headers, b"what do ya want for nothing?", NOW),
            Ok(())
        );
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
        let sig = value_of(&signed(), H);
        for index in [0, 20, 40] {
            let bad = with(&signed(), H, &flip_char(&sig, index));
            assert_eq!(
                v.verify(&bad, BODY, NOW),
                Err(VerifyError::Invalid),
                "{index}"
            );
        }
    }

    #[test]
    fn wrong_secret_fails() {
        let v = verifier(P, &["shpss_other"]);
        assert_eq!(
            v.verify(&header_map(&signed()), BODY, NOW),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn second_secret_matches_during_rotation() {
        let v = verifier(P, &["shpss_new", SECRET]);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
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
        let sig = value_of(&signed(), H);
        let digest = base64::engine::general_purpose::STANDARD
            .decode(&sig)
            .unwrap();
        let hex_form = hex::encode(&digest);
        for bad in [
            hex_form.clone(),                 // hex instead of base64
            sig.trim_end_matches('=').into(), // padding stripped
            format!("{sig}AAAA"),             // decodes to 35 bytes
            sig[..40].to_string(),            // truncated
            "not*base64!".into(),
            "A".repeat(200), // oversized
        ] {
            let r = v.verify(&with(&signed(), H, &bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        let raw = with_raw(&signed(), H, b"\xff\xfe");
        assert_eq!(v.verify(&raw, BODY, NOW), Err(VerifyError::Malformed));
        let twice = duplicated(&signed(), H);
        assert_eq!(v.verify(&twice, BODY, NOW), Err(VerifyError::Malformed));
    }
}
