//! Zoom (webhook-only and Marketplace apps): `x-zm-signature: v0=<hex
//! HMAC-SHA256(secret token, "v0:{x-zm-request-timestamp}:{body}")>` with
//! `x-zm-request-timestamp` in unix seconds (Zoom developer docs, "Using webhooks" →
//! "Verify webhook events"). Slack's layout with Zoom's header names.
//!
//! Handshake (`endpoint.url_validation`, "Validate your webhook endpoint"): Zoom POSTs
//! `{"event":"endpoint.url_validation","payload":{"plainToken":…}}`, signed like any
//! event; after verification hookgate answers `{"plainToken":…,"encryptedToken":<hex
//! HMAC-SHA256(secret token, plainToken)>}` with the secret that verified the request
//! (during a rotation, the one Zoom used). Not stored.
//!
//! Zoom sends no delivery id header: the body's digest is the delivery id (a retry is
//! the same body); event type: `event`. No complete worked example is published (the
//! docs show a `plainToken` and `encryptedToken` without the secret behind them).

use http::HeaderMap;
use ring::hmac;

use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, ct_eq, decode_hex_exact, header_str, hmac_parts, parse_timestamp, About,
    Answer, Defaults, Doc, KeyError, Keys, Options, Provider, ProviderSpec, Request, Verifier,
    VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Zoom);

const SIG: &str = "x-zm-signature";
const TS: &str = "x-zm-request-timestamp";
static SIG_NAME: http::HeaderName = http::HeaderName::from_static(SIG);
static TS_NAME: http::HeaderName = http::HeaderName::from_static(TS);

struct Zoom;

/// The `v0` tag the headers carry, and the timestamp text, after the cheap checks.
fn parse(headers: &HeaderMap) -> Result<([u8; 32], &str, i64), VerifyError> {
    let sig_value = header_str(headers, &SIG_NAME)?;
    let ts_text = header_str(headers, &TS_NAME)?;
    let timestamp = parse_timestamp(ts_text)?;
    let sig_hex = sig_value
        .strip_prefix("v0=")
        .ok_or(VerifyError::Malformed)?;
    let mut sig = [0u8; 32];
    decode_hex_exact(sig_hex, &mut sig)?;
    Ok((sig, ts_text, timestamp))
}

fn tag(key: &hmac::Key, ts: &str, body: &[u8]) -> hmac::Tag {
    hmac_parts(key, &[b"v0:", ts.as_bytes(), b":", body])
}

impl ProviderSpec for Zoom {
    fn name(&self) -> &'static str {
        "zoom"
    }

    fn about(&self) -> About {
        About {
            headers: &["x-zm-signature", "x-zm-request-timestamp"],
            signed: "`v0=` + hex HMAC-SHA256(\"v0:\" + ts + \":\" + body)",
            secret: "the app's secret token",
            handshakes: &["`endpoint.url_validation` (encryptedToken = HMAC of plainToken)"],
            docs: "https://developers.zoom.us/docs/api/webhooks/#verify-webhook-events",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let (sig, ts_text, timestamp) = parse(req.headers)?;
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        let matched = v
            .hmac_keys()
            .iter()
            .any(|key| ct_eq(tag(key, ts_text, req.body).as_ref(), &sig));
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(&SIG_NAME)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let ts = now.to_string();
        let tag = tag(&key, &ts, body);
        Ok(vec![
            (TS.to_string(), ts),
            (SIG.to_string(), format!("v0={}", hex::encode(tag.as_ref()))),
        ])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::BodyHash, Some(FieldSpec::pointer("/event")))
    }

    fn has_body_handshake(&self) -> bool {
        true
    }

    fn body_handshake(
        &self,
        v: Option<&Verifier>,
        headers: &HeaderMap,
        body: &[u8],
        doc: &Doc<'_, '_>,
    ) -> Option<Answer> {
        if doc.str_at(&["event"]) != Some("endpoint.url_validation") {
            return None;
        }
        let plain = doc.str_at(&["payload", "plainToken"])?;
        // The key that signed this (already verified) request.
        let (sig, ts_text, _) = parse(headers).ok()?;
        let key = v?
            .hmac_keys()
            .iter()
            .find(|key| ct_eq(tag(key, ts_text, body).as_ref(), &sig))?;
        let encrypted = hex::encode(hmac::sign(key, plain.as_bytes()).as_ref());
        Some(Answer::json(
            serde_json::json!({ "plainToken": plain, "encryptedToken": encrypted }).to_string(),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::extract::{Extracted, Extractor};
    use crate::verify::test_support::*;
    use crate::verify::Answer;

    /// The url_validation answer uses the secret that signed the request, also when it is
    /// the second of two during a rotation.
    #[test]
    fn url_validation_answers_with_the_hmac_of_the_plain_token() {
        let p = super::PROVIDER;
        let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
        let v = verifier(p, &["old-secret-token", "zoom-secret-token"]);
        let mut headers = header_map(&signed_by(p, "zoom-secret-token", body, NOW));
        headers.insert("content-type", "application/json".parse().unwrap());
        assert_eq!(v.verify(&headers, body, NOW), Ok(()));
        let x = Extractor::new(p, None, None, None);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"zoom-secret-token");
        let expected = hex::encode(ring::hmac::sign(&key, b"qgg8vlvZRS6UYooatFL8Aw").as_ref());
        let answer = serde_json::json!({
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": expected,
        });
        assert_eq!(
            x.extract_for(Some(&v), &headers, body).unwrap(),
            Extracted::Handshake(Answer::json(answer.to_string()))
        );
        // Without the verifier (extraction alone) no answer can be made: not an event
        // either, since it has no other meaning.
        assert!(!matches!(
            x.extract(&headers, body),
            Ok(Extracted::Handshake(_))
        ));
    }
}
