//! Slack: `X-Slack-Signature: v0=<hex>` over `"v0:{timestamp}:{body}"`.
//!
//! Per Slack's "Verifying requests from Slack": the timestamp comes from
//! `X-Slack-Request-Timestamp`, the MAC is hex HMAC-SHA256 keyed with the
//! signing secret as UTF-8 text (not hex-decoded), and the timestamp must be
//! close to now to stop replays.

use http::HeaderMap;
use ring::hmac;

use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, ct_eq, decode_hex_exact, header_str, hmac_parts, parse_timestamp, About,
    Answer, Defaults, Doc, KeyError, Keys, Options, Provider, ProviderSpec, Request, Verifier,
    VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Slack);

static SIG_HEADER: http::HeaderName = http::HeaderName::from_static("x-slack-signature");
static TS_HEADER: http::HeaderName = http::HeaderName::from_static("x-slack-request-timestamp");
const VERSION: &[u8] = b"v0";

struct Slack;

impl ProviderSpec for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-Slack-Signature", "X-Slack-Request-Timestamp"],
            signed: "`v0=` + hex HMAC-SHA256(\"v0:\" + ts + \":\" + body)",
            secret: "the app's signing secret",
            handshakes: &["`url_verification` (challenge echoed)"],
            docs: "https://api.slack.com/authentication/verifying-requests-from-slack",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    /// Checks the timestamp, then the `v0` signature against every key.
    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let headers = req.headers;
        let ts_text = header_str(headers, &TS_HEADER)?;
        let sig_value = header_str(headers, &SIG_HEADER)?;
        let timestamp = parse_timestamp(ts_text)?;
        let sig_hex = sig_value
            .strip_prefix("v0=")
            .ok_or(VerifyError::Malformed)?;
        let mut sig = [0u8; 32];
        decode_hex_exact(sig_hex, &mut sig)?;
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        let matched = v.hmac_keys().iter().any(|key| {
            let tag = hmac_parts(key, &[VERSION, b":", ts_text.as_bytes(), b":", req.body]);
            ct_eq(tag.as_ref(), &sig)
        });
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(&SIG_HEADER)
    }

    /// The headers Slack would send for `body` at `now`.
    fn sign(&self, secret: &str, body: &[u8], now: i64, _: &Options) -> Result<Vec<(String, String)>, KeyError> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let ts = now.to_string();
        let tag = hmac_parts(&key, &[VERSION, b":", ts.as_bytes(), b":", body]);
        Ok(vec![
            ("X-Slack-Request-Timestamp".to_string(), ts),
            (
                "X-Slack-Signature".to_string(),
                format!("v0={}", hex::encode(tag.as_ref())),
            ),
        ])
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            delivery: FieldSpec::pointer("/event_id"),
            event: Some(FieldSpec::Any(vec![
                FieldSpec::pointer("/event/type"),
                FieldSpec::pointer("/type"),
            ])),
            // Slash commands and interactivity are form-encoded and carry no event id:
            // the body's digest dedupes exact re-sends.
            non_json_body_hash: true,
        }
    }

    fn has_body_handshake(&self) -> bool {
        true
    }

    /// `{"type":"url_verification","challenge":…}` is answered with the challenge.
    fn body_handshake(
        &self,
        _: Option<&Verifier>,
        _: &HeaderMap,
        _: &[u8],
        doc: &Doc<'_, '_>,
    ) -> Option<Answer> {
        if doc.str_at(&["type"]) != Some("url_verification") {
            return None;
        }
        let challenge = doc.str_at(&["challenge"]).unwrap_or("");
        Some(Answer::json(
            serde_json::json!({ "challenge": challenge }).to_string(),
        ))
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
    const SECRET: &str = "slack-signing-secret-1";
    const SIG: &str = "x-slack-signature";
    const TS: &str = "x-slack-request-timestamp";

    fn signed_at(secret: &str, t: i64) -> Vec<(String, String)> {
        sign(P, secret, BODY, t, None).unwrap()
    }

    fn signed() -> Vec<(String, String)> {
        signed_at(SECRET, NOW)
    }

    /// Slack's worked example from "Verifying requests from Slack" (slash
    /// command body, signing secret `8f742231b10e8888abcd99yyyzzz85a5`).
    #[test]
    fn slack_documented_vector() {
        const DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
        const DOC_TS: i64 = 1_531_420_618;
        const DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        const DOC_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        let v = verifier(P, &[DOC_SECRET]);
        let headers = header_map(&[
            ("X-Slack-Request-Timestamp".into(), DOC_TS.to_string()),
            ("X-Slack-Signature".into(), DOC_SIG.into()),
        ]);
        assert_eq!(v.verify(&headers, DOC_BODY.as_bytes(), DOC_TS + 10), Ok(()));
        let ours = sign(P, DOC_SECRET, DOC_BODY.as_bytes(), DOC_TS, None).unwrap();
        assert_eq!(value_of(&ours, SIG), DOC_SIG);
        // The same request today is a replay.
        assert_eq!(
            v.verify(&headers, DOC_BODY.as_bytes(), NOW),
            Err(VerifyError::Expired)
        );
    }



    #[test]
    fn flipped_signature_char_fails() {
        let v = verifier(P, &[SECRET]);
        let sig = value_of(&signed(), SIG);
        for index in [3, 35, sig.len() - 1] {
            let bad = with(&signed(), SIG, &flip_char(&sig, index));
            assert_eq!(
                v.verify(&bad, BODY, NOW),
                Err(VerifyError::Invalid),
                "{index}"
            );
        }
    }

    #[test]
    fn changed_timestamp_fails() {
        let v = verifier(P, &[SECRET]);
        let moved = with(&signed(), TS, &(NOW + 1).to_string());
        assert_eq!(v.verify(&moved, BODY, NOW), Err(VerifyError::Invalid));
    }



    #[test]
    fn missing_headers() {
        let v = verifier(P, &[SECRET]);
        for name in [SIG, TS] {
            let r = v.verify(&without(&signed(), name), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Missing), "{name}");
        }
    }

    #[test]
    fn malformed_headers() {
        let v = verifier(P, &[SECRET]);
        let sig = value_of(&signed(), SIG);
        let hex_part = &sig[3..];
        for bad in [
            hex_part.to_string(),
            format!("v1={hex_part}"),
            format!("V0={hex_part}"),
            format!("v0={}", &hex_part[..60]),
            format!("v0={hex_part}0"),
            format!("v0={}xy", &hex_part[..62]),
        ] {
            let r = v.verify(&with(&signed(), SIG, &bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        for bad in ["soon", "-1", "1531420618.5", " 1700000000"] {
            let r = v.verify(&with(&signed(), TS, bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        for name in [SIG, TS] {
            let raw = with_raw(&signed(), name, b"\xc3\xa9");
            assert_eq!(v.verify(&raw, BODY, NOW), Err(VerifyError::Malformed));
            let twice = duplicated(&signed(), name);
            assert_eq!(v.verify(&twice, BODY, NOW), Err(VerifyError::Malformed));
        }
    }


    #[test]
    fn timestamp_is_checked_before_the_signature() {
        let v = verifier(P, &[SECRET]);
        let stale = header_map(&[
            (TS.into(), (NOW - 10_000).to_string()),
            (SIG.into(), format!("v0={}", "0".repeat(64))),
        ]);
        assert_eq!(v.verify(&stale, BODY, NOW), Err(VerifyError::Expired));
    }
}
