//! Mailgun (webhooks, JSON): no header; the body's `signature` object holds `timestamp`
//! (unix seconds), `token` (50 random characters) and `signature`, the hex HMAC-SHA256 of
//! `timestamp + token` under the account's HTTP webhook signing key (Mailgun docs,
//! "Securing webhooks"). hookgate checks the timestamp against the source's `tolerance`
//! and uses the token as the delivery id, so a replayed token is a duplicate (Mailgun's
//! advice: cache tokens). Note what the scheme signs: not `event-data`, which Mailgun
//! leaves unauthenticated. Event type: `event-data.event`. Mailgun's legacy
//! form-encoded webhooks are not accepted. No worked example with its key is published.

use http::HeaderMap;
use ring::hmac;
use serde_json::Value;

use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, ct_eq, decode_hex_exact, hmac_parts, parse_timestamp, About, Defaults,
    KeyError, Keys, Options, Provider, ProviderSpec, Request, Signed, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Mailgun);

struct Mailgun;

fn text<'a>(sig: &'a Value, name: &str) -> Result<&'a str, VerifyError> {
    sig.get(name)
        .ok_or(VerifyError::Missing)?
        .as_str()
        .ok_or(VerifyError::Malformed)
}

impl ProviderSpec for Mailgun {
    fn name(&self) -> &'static str {
        "mailgun"
    }

    fn about(&self) -> About {
        About {
            headers: &["(body) `signature.{timestamp,token,signature}`"],
            signed: "hex HMAC-SHA256(timestamp + token) — not the event data",
            secret: "the HTTP webhook signing key",
            handshakes: &[],
            docs: "https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn covers_body(&self) -> bool {
        false
    }

    fn signature_in_body(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let doc: Value = serde_json::from_slice(req.body).map_err(|_| VerifyError::Malformed)?;
        let sig = doc.get("signature").ok_or(VerifyError::Missing)?;
        let ts_text = text(sig, "timestamp")?;
        let token = text(sig, "token")?;
        let sig_hex = text(sig, "signature")?;
        let timestamp = parse_timestamp(ts_text)?;
        let mut tag = [0u8; 32];
        decode_hex_exact(sig_hex, &mut tag)?;
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        let matched = v.hmac_keys().iter().any(|key| {
            ct_eq(
                hmac_parts(key, &[ts_text.as_bytes(), token.as_bytes()]).as_ref(),
                &tag,
            )
        });
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    /// The signature is in the body: nothing to look for before it is read.
    fn signature_present(&self, _: &Verifier, _: &HeaderMap) -> bool {
        true
    }

    fn sign(
        &self,
        _: &str,
        _: &[u8],
        _: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        Ok(Vec::new())
    }

    /// `{"signature":{…},"event-data":<payload>}` with a token derived from the payload
    /// and the time (deterministic); a payload that is not JSON is sent as a string.
    fn sign_request(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        _: &Options,
    ) -> Result<Signed, KeyError> {
        let ts = now.to_string();
        let d = ring::digest::digest(&ring::digest::SHA256, &[ts.as_bytes(), body].concat());
        let token = hex::encode(d.as_ref()).get(..50).unwrap_or_default().to_string();
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let sig = hex::encode(hmac_parts(&key, &[ts.as_bytes(), token.as_bytes()]).as_ref());
        let event: Value = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let doc = serde_json::json!({
            "signature": {"timestamp": ts, "token": token, "signature": sig},
            "event-data": event,
        });
        Ok(Signed {
            headers: Vec::new(),
            body: doc.to_string().into_bytes(),
        })
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::pointer("/signature/token"),
            Some(FieldSpec::pointer("/event-data/event")),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::VerifyError;

    /// The signed string is timestamp then token, written out by hand; the event data is
    /// not part of it (Mailgun's design), the timestamp is checked.
    #[test]
    fn signature_over_timestamp_and_token() {
        let v = verifier(super::PROVIDER, &["key-mailgun"]);
        let ts = NOW.to_string();
        let token = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"key-mailgun");
        let sig = hex::encode(ring::hmac::sign(&key, format!("{ts}{token}").as_bytes()).as_ref());
        let body = |event: &str, sig: &str| {
            serde_json::json!({
                "signature": {"timestamp": ts, "token": token, "signature": sig},
                "event-data": {"event": event, "id": "CPgfbmQMTCKtHW6uIWtuVe"}
            })
            .to_string()
        };
        let h = http::HeaderMap::new();
        assert_eq!(v.verify(&h, body("delivered", &sig).as_bytes(), NOW), Ok(()));
        assert_eq!(v.verify(&h, body("opened", &sig).as_bytes(), NOW), Ok(()));
        assert_eq!(
            v.verify(&h, body("delivered", &sig).as_bytes(), NOW + 3600),
            Err(VerifyError::Expired)
        );
        let wrong = "0".repeat(64);
        assert_eq!(
            v.verify(&h, body("delivered", &wrong).as_bytes(), NOW),
            Err(VerifyError::Invalid)
        );
        assert_eq!(
            v.verify(&h, br#"{"event-data":{}}"#, NOW),
            Err(VerifyError::Missing)
        );
        assert_eq!(v.verify(&h, b"token=x&timestamp=1", NOW), Err(VerifyError::Malformed));
    }
}
