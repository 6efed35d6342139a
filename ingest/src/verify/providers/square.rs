//! Square: `x-square-hmacsha256-signature: <base64 HMAC-SHA256(signature key,
//! notification URL + body)>` (Square developer docs, "Validate notifications"). The
//! notification URL is the subscription's URL exactly as registered: set it as the
//! source's `public_url` (the request's query string, if any, is appended as received).
//! No timestamp: replays are refused by the body-digest dedupe.
//!
//! Delivery id: the body's `event_id`; event type: `type`.

use http::HeaderMap;

use super::common::{example_url_options, require_public_url, signed_url, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{
    About, Defaults, HmacAlgorithm, KeyError, Keys, Options, Provider, ProviderSpec, Request,
    SigEncoding, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Square);

const SIG: SigHeader = SigHeader {
    header: "x-square-hmacsha256-signature",
    name: header_name!("x-square-hmacsha256-signature"),
    prefix: "",
    encoding: SigEncoding::Base64,
    algorithm: HmacAlgorithm::Sha256,
};

struct Square;

impl ProviderSpec for Square {
    fn name(&self) -> &'static str {
        "square"
    }

    fn about(&self) -> About {
        About {
            headers: &["x-square-hmacsha256-signature"],
            signed: "base64 HMAC-SHA256(`public_url` + body)",
            secret: "the subscription's signature key",
            handshakes: &[],
            docs: "https://developer.squareup.com/docs/webhooks/step3validate",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn url_signed(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], options: &Options) -> Result<Keys, KeyError> {
        require_public_url(options)?;
        Ok(SIG.keys(secrets))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let [url, sep, query] = signed_url(v, req.query)?;
        SIG.verify_parts(v.hmac_keys(), req.headers, &[url, sep, query, req.body])
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        SIG.present(headers)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        _: i64,
        options: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let url = require_public_url(options)?;
        Ok(vec![SIG.sign(secret, &[url.as_bytes(), body])])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::pointer("/event_id"), Some(FieldSpec::pointer("/type")))
    }

    fn example_options(&self) -> Options {
        example_url_options("https://hooks.example.com/hooks/square")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::{KeyError, Options, Request, Verifier, VerifyError};

    fn square(url: &str, key: &str) -> Verifier {
        Verifier::with_options(
            super::PROVIDER,
            &strings(&[key]),
            Options {
                public_url: Some(url.into()),
                ..Options::default()
            },
        )
        .unwrap()
    }

    /// The vectors of Square's SDK tests (square/square-go-sdk
    /// `TestWebhookSignatureValidation`; the same in the Node, Python, PHP, Java and Ruby
    /// SDKs' webhooks-helper tests).
    #[test]
    fn square_sdk_vectors() {
        let body = br#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#;
        let url = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9";
        let h = header_map(&[(
            "x-square-hmacsha256-signature".into(),
            "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=".into(),
        )]);
        assert_eq!(square(url, "Ibxx_5AKakO-3qeNVR61Dw").verify(&h, body, NOW), Ok(()));
        // Another URL (or a query the signature did not cover) is refused.
        let v = square("https://webhook.site/other", "Ibxx_5AKakO-3qeNVR61Dw");
        assert_eq!(v.verify(&h, body, NOW), Err(VerifyError::Invalid));
        let v = square(url, "Ibxx_5AKakO-3qeNVR61Dw");
        let with_query = Request {
            headers: &h,
            body,
            query: Some("x=1"),
            now: NOW,
        };
        assert_eq!(v.verify_request(&with_query), Err(VerifyError::Invalid));
        for (body, sig) in [
            (&br#"{"data":{"type":"webhooks","id":"fake_id"}}"#[..], "W3FlCNk5IA3ZQ2LHTWoajvzfaDu/OwY2tNHIHC3IUOA="),
            (br#"{"data":{"type":"webhooks","id":">id<"}}"#, "Cxt7+aTi4rKgcA0bC4g9EHdVtLSDWdqccmL5MvihU4U="),
        ] {
            let h = header_map(&[("x-square-hmacsha256-signature".into(), sig.into())]);
            let v = square("https://webhook.site/webhooks", "signature-key");
            assert_eq!(v.verify(&h, body, NOW), Ok(()), "{sig}");
        }
    }

    #[test]
    fn a_source_without_public_url_is_a_config_error() {
        let e = Verifier::with_options(super::PROVIDER, &strings(&["k"]), Options::default());
        assert_eq!(e.err(), Some(KeyError::MissingOption { name: "public_url" }));
    }
}
