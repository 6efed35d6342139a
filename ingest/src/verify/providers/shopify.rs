//! Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(secret, body)>`.
//!
//! Per Shopify's webhook docs ("Verify webhooks"): the key is the app's client
//! secret, the MAC covers the raw body only, and the digest is standard base64
//! (not hex). No timestamp is signed, so replay protection is the caller's
//! business (e.g. de-duplicating on `X-Shopify-Webhook-Id`).

use base64::Engine as _;
use http::HeaderMap;
use ring::hmac;

use crate::extract::FieldSpec;
use crate::verify::{
    decode_b64_exact, header_str, About, B64Buf, MAX_SIG_LEN, Defaults, KeyError, Keys, Options, Provider,
    ProviderSpec, Request, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Shopify);

static HEADER: http::HeaderName = http::HeaderName::from_static("x-shopify-hmac-sha256");

struct Shopify;

impl ProviderSpec for Shopify {
    fn name(&self) -> &'static str {
        "shopify"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-Shopify-Hmac-Sha256"],
            signed: "base64 HMAC-SHA256(body)",
            secret: "the app's client secret (or the store's webhook signing secret)",
            handshakes: &[],
            docs: "https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-5-verify-the-webhook",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    /// Checks the base64 body MAC against every configured key.
    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let value = header_str(req.headers, &HEADER)?;
        let mut buf: B64Buf = [0u8; MAX_SIG_LEN + 8];
        let sig = decode_b64_exact(value, 32, &mut buf)?;
        if v.hmac_keys().iter().any(|key| hmac::verify(key, req.body, sig).is_ok()) {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(&HEADER)
    }

    /// The header Shopify would send for `body`.
    fn sign(&self, secret: &str, body: &[u8], _: i64, _: &Options) -> Result<Vec<(String, String)>, KeyError> {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), body);
        Ok(vec![(
            "X-Shopify-Hmac-Sha256".to_string(),
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        )])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::header("x-shopify-webhook-id"),
            Some(FieldSpec::header("x-shopify-topic")),
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
    use base64::Engine as _;

    use crate::verify::test_support::*;
    use crate::verify::{sign, Provider, VerifyError};

    const P: Provider = super::PROVIDER;
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
