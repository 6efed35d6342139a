//! Twitch EventSub (webhook transport): `Twitch-Eventsub-Message-Signature:
//! sha256=<hex HMAC-SHA256(secret, message id + message timestamp + body)>`, with
//! `Twitch-Eventsub-Message-Id` and `Twitch-Eventsub-Message-Timestamp` (RFC 3339, e.g.
//! `2023-07-19T10:11:12.634234626Z`) (Twitch docs, "Handling webhook events" →
//! "Verifying the event message"). Twitch asks receivers to refuse messages more than 10
//! minutes old: set `tolerance = "10m"` on the source for exactly that.
//!
//! Handshake: `Twitch-Eventsub-Message-Type: webhook_callback_verification` carries a
//! `challenge` in its (signed) body; after verification hookgate answers it as
//! `text/plain` (200, `nosniff`). `revocation` messages are ordinary events and are
//! recorded. Delivery id: the message id; event type:
//! `Twitch-Eventsub-Subscription-Type`. No complete worked example is published.

use http::HeaderMap;
use ring::hmac;

use super::meta::echoable;
use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, decode_hex_exact, header_values, hmac_parts, parse_rfc3339, About, Answer, Defaults, Doc,
    KeyError, Keys, Options, Provider, ProviderSpec, Request, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Twitch);

const ID: &str = "Twitch-Eventsub-Message-Id";
const TS: &str = "Twitch-Eventsub-Message-Timestamp";
const SIG: &str = "Twitch-Eventsub-Message-Signature";
const TYPE: &str = "Twitch-Eventsub-Message-Type";
static ID_NAME: http::HeaderName = http::HeaderName::from_static("twitch-eventsub-message-id");
static TS_NAME: http::HeaderName =
    http::HeaderName::from_static("twitch-eventsub-message-timestamp");
static SIG_NAME: http::HeaderName =
    http::HeaderName::from_static("twitch-eventsub-message-signature");

struct Twitch;

/// `now` as Twitch writes it (whole seconds, `Z`).
fn rfc3339(now: i64) -> String {
    let secs = u64::try_from(now).unwrap_or(0);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl ProviderSpec for Twitch {
    fn name(&self) -> &'static str {
        "twitch"
    }

    fn about(&self) -> About {
        About {
            headers: &[SIG, ID, TS],
            signed: "`sha256=` + hex HMAC-SHA256(message id + timestamp + body)",
            secret: "the subscription's `secret` (10-100 ASCII characters)",
            handshakes: &["`webhook_callback_verification` (challenge echoed as text/plain)"],
            docs: "https://dev.twitch.tv/docs/eventsub/handling-webhook-events/",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let [id, ts, sig] = header_values(req.headers, [&ID_NAME, &TS_NAME, &SIG_NAME]);
        let (id, ts_text, sig_value) = (id?, ts?, sig?);
        let timestamp = parse_rfc3339(ts_text)?;
        let sig_hex = sig_value
            .strip_prefix(b"sha256=")
            .ok_or(VerifyError::Malformed)?;
        let mut sig = [0u8; 32];
        decode_hex_exact(sig_hex, &mut sig)?;
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        let matched = v.hmac_keys().iter().any(|key| {
            let tag = hmac_parts(key, &[id, ts_text, req.body]);
            crate::verify::ct_eq(tag.as_ref(), &sig)
        });
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(&SIG_NAME)
    }

    /// Twitch's message id is a UUID; the signer derives one from the body and time so
    /// `hookgate sign` is deterministic.
    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let ts = rfc3339(now);
        let d = ring::digest::digest(&ring::digest::SHA256, &[ts.as_bytes(), body].concat());
        let h = hex::encode(d.as_ref().get(..16).unwrap_or_default());
        let id = format!(
            "{}-{}-{}-{}-{}",
            h.get(..8).unwrap_or_default(),
            h.get(8..12).unwrap_or_default(),
            h.get(12..16).unwrap_or_default(),
            h.get(16..20).unwrap_or_default(),
            h.get(20..32).unwrap_or_default()
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let tag = hmac_parts(&key, &[id.as_bytes(), ts.as_bytes(), body]);
        Ok(vec![
            (ID.to_string(), id),
            (TS.to_string(), ts),
            (SIG.to_string(), format!("sha256={}", hex::encode(tag.as_ref()))),
        ])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::header("twitch-eventsub-message-id"),
            Some(FieldSpec::header("twitch-eventsub-subscription-type")),
        )
    }

    fn has_body_handshake(&self) -> bool {
        true
    }

    fn body_handshake(
        &self,
        _: Option<&Verifier>,
        headers: &HeaderMap,
        _: &[u8],
        doc: &Doc<'_, '_>,
    ) -> Option<Answer> {
        let kind = headers.get(TYPE)?.to_str().ok()?;
        if kind != "webhook_callback_verification" {
            return None;
        }
        Some(match doc.str_at(&["challenge"]) {
            Some(c) if echoable(c) => Answer::text(c.to_string()),
            _ => Answer::refuse(
                400,
                "bad_handshake",
                "the challenge is missing, too long or not [A-Za-z0-9_-]",
            ),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::extract::{Extracted, Extractor};
    use crate::verify::test_support::*;
    use crate::verify::{Answer, VerifyError};

    /// The verification request of Twitch's "Responding to a challenge request" section
    /// (its challenge), signed here; answered with the challenge as text.
    #[test]
    fn callback_verification_echoes_the_challenge() {
        let p = super::PROVIDER;
        let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"webhook_callback_verification_pending","type":"channel.follow","version":"1"}}"#;
        let mut headers = header_map(&signed_by(p, "s3cre7-twitch-secret", body, NOW));
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert(
            "twitch-eventsub-message-type",
            "webhook_callback_verification".parse().unwrap(),
        );
        let v = verifier(p, &["s3cre7-twitch-secret"]);
        assert_eq!(v.verify(&headers, body, NOW), Ok(()));
        let x = Extractor::new(p, None, None, None);
        assert_eq!(
            x.extract(&headers, body).unwrap(),
            Extracted::Handshake(Answer::text("pogchamp-kappa-360noscope-vohiyo".into()))
        );
        // A notification with the same body shape is an event.
        headers.insert("twitch-eventsub-message-type", "notification".parse().unwrap());
        assert!(matches!(
            x.extract(&headers, body),
            Err(_) | Ok(Extracted::Event { .. })
        ));
    }

    #[test]
    fn the_timestamp_is_rfc3339() {
        let p = super::PROVIDER;
        let v = verifier(p, &["s3cre7-twitch-secret"]);
        let signed = signed_by(p, "s3cre7-twitch-secret", BODY, NOW);
        let ts = value_of(&signed, "twitch-eventsub-message-timestamp");
        assert!(ts.ends_with('Z') && ts.contains('T'), "{ts}");
        for bad in [NOW.to_string(), "2023-07-19 10:11:12".into(), "yesterday".into()] {
            let h = with(&signed, "twitch-eventsub-message-timestamp", &bad);
            assert_eq!(v.verify(&h, BODY, NOW), Err(VerifyError::Malformed), "{bad}");
        }
    }
}
