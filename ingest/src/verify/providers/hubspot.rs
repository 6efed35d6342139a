//! HubSpot (v3 request signatures): `X-HubSpot-Signature-v3: <base64
//! HMAC-SHA256(client secret, method + URI + body + timestamp)>` with
//! `X-HubSpot-Request-Timestamp` in milliseconds; requests older than 5 minutes are to be
//! refused (HubSpot developer docs, "Validating requests from HubSpot" → "Validate the v3
//! request signature"). The URI is the full URL HubSpot called: the source's
//! `public_url`, then `?` and the query string as received. Webhooks are POSTed, so the
//! method is `POST`. (HubSpot's older v1/v2 signatures, unkeyed SHA-256 of the secret and
//! the request, are not accepted: v3 is sent alongside them.)
//!
//! A delivery is a JSON array of events: the body's digest is the delivery id; event
//! type: the first event's `subscriptionType`. No worked example is published.

use http::HeaderMap;
use ring::hmac;

use super::common::{example_url_options, require_public_url, signed_url, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, header_str, parse_timestamp, About, Defaults, HmacAlgorithm, KeyError,
    Keys, Options, Provider, ProviderSpec, Request, SigEncoding, Verifier, VerifyError,
    MAX_SIG_LEN,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&HubSpot);

const SIG: SigHeader = SigHeader {
    header: "X-HubSpot-Signature-v3",
    prefix: "",
    encoding: SigEncoding::Base64,
    algorithm: HmacAlgorithm::Sha256,
};
const TS: &str = "X-HubSpot-Request-Timestamp";

struct HubSpot;

impl ProviderSpec for HubSpot {
    fn name(&self) -> &'static str {
        "hubspot"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-HubSpot-Signature-v3", TS],
            signed: "base64 HMAC-SHA256(\"POST\" + `public_url`?query + body + timestamp ms)",
            secret: "the app's client secret",
            handshakes: &[],
            docs: "https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn url_signed(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], options: &Options) -> Result<Keys, KeyError> {
        require_public_url(options)?;
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let ts_text = header_str(req.headers, TS)?;
        let ms = parse_timestamp(ts_text)?;
        let mut buf = [0u8; MAX_SIG_LEN + 8];
        SIG.decode(req.headers, &mut buf)?;
        check_tolerance(ms / 1000, req.now, v.tolerance_secs())?;
        let [url, sep, query] = signed_url(v, req.query)?;
        SIG.verify_parts(
            v.hmac_keys(),
            req.headers,
            &[b"POST", url, sep, query, req.body, ts_text.as_bytes()],
        )
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        SIG.present(headers)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        options: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let url = require_public_url(options)?;
        let ts = now.saturating_mul(1000).to_string();
        let sig = SIG.sign(secret, &[b"POST", url.as_bytes(), body, ts.as_bytes()]);
        Ok(vec![(TS.to_string(), ts), sig])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::BodyHash,
            Some(FieldSpec::pointer("/0/subscriptionType")),
        )
    }

    fn example_options(&self) -> Options {
        example_url_options("https://hooks.example.com/hooks/hubspot")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use base64::Engine as _;

    use crate::verify::test_support::*;
    use crate::verify::{Request, VerifyError};

    /// The signed string is method, URI (with the query as received), body, then the
    /// millisecond timestamp, written out by hand here.
    #[test]
    fn the_signed_string_is_method_uri_body_timestamp() {
        let p = super::PROVIDER;
        let v = verifier(p, &["hs-client-secret"]);
        let ts = (NOW * 1000 + 123).to_string();
        let body = br#"[{"eventId":1,"subscriptionType":"contact.creation"}]"#;
        let text = format!(
            "POSThttps://hooks.example.com/hooks/hubspot?a=1&b=%20{}{ts}",
            std::str::from_utf8(body).unwrap()
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"hs-client-secret");
        let sig = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&key, text.as_bytes()).as_ref());
        let h = header_map(&[
            ("X-HubSpot-Signature-v3".into(), sig),
            ("X-HubSpot-Request-Timestamp".into(), ts),
        ]);
        let req = |query| Request {
            headers: &h,
            body,
            query,
            now: NOW,
        };
        assert_eq!(v.verify_request(&req(Some("a=1&b=%20"))), Ok(()));
        assert_eq!(v.verify_request(&req(Some("a=1"))), Err(VerifyError::Invalid));
        assert_eq!(v.verify_request(&req(None)), Err(VerifyError::Invalid));
    }
}
