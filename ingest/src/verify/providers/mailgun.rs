//! Mailgun (webhooks, JSON): no header; the body's `signature` object holds `timestamp`
//! (unix seconds), `token` (50 random characters) and `signature`, the hex HMAC-SHA256 of
//! `timestamp + token` under the account's HTTP webhook signing key (Mailgun docs,
//! "Securing webhooks"). hookgate checks the timestamp against the source's `tolerance`
//! and uses the token as the delivery id, so a replayed token is a duplicate (Mailgun's
//! advice: cache tokens). Note what the scheme signs: not `event-data`, which Mailgun
//! leaves unauthenticated. Event type: `event-data.event`.
//!
//! The same three values also arrive as form fields (`timestamp`, `token`, `signature`)
//! in an `application/x-www-form-urlencoded` body: Mailgun still posts inbound messages
//! forwarded by a route that way (docs, "Receiving messages via HTTP through a forward()
//! action"), as did its legacy webhooks. Such a body is read as a form when its
//! `Content-Type` says so; each of the three fields must appear exactly once. Its delivery
//! id is the body's digest (it holds the token, so it is unique per delivery).
//! (`multipart/form-data` posts, which Mailgun sends for messages with attachments, are
//! not accepted.) No worked example with its key is published.

use http::HeaderMap;
use ring::hmac;
use serde_json::Value;

use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, ct_eq, decode_hex_exact, hmac_parts, parse_timestamp, percent_decode,
    About, Defaults, KeyError, Keys, Options, Provider, ProviderSpec, Request, Signed, Verifier,
    VerifyError,
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

/// The single value of form field `name`: `Missing` when absent, `Malformed` when
/// repeated or not decodable.
fn form_field(form: &str, name: &str) -> Result<String, VerifyError> {
    let mut found = None;
    for pair in form.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k).as_deref() != Some(name) {
            continue;
        }
        if found.is_some() {
            return Err(VerifyError::Malformed);
        }
        found = Some(percent_decode(v).ok_or(VerifyError::Malformed)?);
    }
    found.ok_or(VerifyError::Missing)
}

/// Whether the body is declared a URL-encoded form.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// Checks `timestamp`, `token` and the hex `signature` (whichever form they came in).
fn check(v: &Verifier, now: i64, ts_text: &str, token: &str, sig_hex: &str) -> Result<(), VerifyError> {
    let timestamp = parse_timestamp(ts_text)?;
    let mut tag = [0u8; 32];
    decode_hex_exact(sig_hex, &mut tag)?;
    check_tolerance(timestamp, now, v.tolerance_secs())?;
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

impl ProviderSpec for Mailgun {
    fn name(&self) -> &'static str {
        "mailgun"
    }

    fn about(&self) -> About {
        About {
            headers: &["(body) `signature.{timestamp,token,signature}`, or those form fields"],
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
        if is_form(req.headers) {
            let form = std::str::from_utf8(req.body).map_err(|_| VerifyError::Malformed)?;
            let ts_text = form_field(form, "timestamp")?;
            let token = form_field(form, "token")?;
            let sig_hex = form_field(form, "signature")?;
            return check(v, req.now, &ts_text, &token, &sig_hex);
        }
        let doc: Value = serde_json::from_slice(req.body).map_err(|_| VerifyError::Malformed)?;
        let sig = doc.get("signature").ok_or(VerifyError::Missing)?;
        check(
            v,
            req.now,
            text(sig, "timestamp")?,
            text(sig, "token")?,
            text(sig, "signature")?,
        )
    }

    super::common::signed_in_body!();

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
        Defaults {
            // Form posts: the body's digest (see the module documentation).
            non_json_body_hash: true,
            ..Defaults::new(
                FieldSpec::pointer("/signature/token"),
                Some(FieldSpec::pointer("/event-data/event")),
            )
        }
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

    /// The form-encoded post (route forwards, legacy webhooks): the same signature over
    /// form fields, declared by `Content-Type`; each field exactly once.
    #[test]
    fn form_posts_are_verified_from_their_fields() {
        let v = verifier(super::PROVIDER, &["key-mailgun"]);
        let ts = NOW.to_string();
        let token = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"key-mailgun");
        let sig = hex::encode(ring::hmac::sign(&key, format!("{ts}{token}").as_bytes()).as_ref());
        let form = |extra: &str| {
            format!(
                "recipient=bob%40example.com&timestamp={ts}&token={token}&signature={sig}\
                 &subject=Hello+there{extra}"
            )
        };
        let h = header_map(&[(
            "Content-Type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        )]);
        assert_eq!(v.verify(&h, form("").as_bytes(), NOW), Ok(()));
        assert_eq!(
            v.verify(&h, form("&body-plain=changed").as_bytes(), NOW),
            Ok(()),
            "the message fields are not signed (Mailgun's design)"
        );
        assert_eq!(
            v.verify(&h, form("").as_bytes(), NOW + 3600),
            Err(VerifyError::Expired)
        );
        assert_eq!(
            v.verify(&h, form(&format!("&token={token}")).as_bytes(), NOW),
            Err(VerifyError::Malformed),
            "a repeated field"
        );
        let other_token = form("").replace(token, &token.replace('a', "b"));
        assert_eq!(
            v.verify(&h, other_token.as_bytes(), NOW),
            Err(VerifyError::Invalid)
        );
        let no_sig = form("").replace(&format!("&signature={sig}"), "");
        assert_eq!(v.verify(&h, no_sig.as_bytes(), NOW), Err(VerifyError::Missing));
        assert_eq!(
            v.verify(&h, form("&x=%zz").as_bytes(), NOW),
            Ok(()),
            "an undecodable field that is not read does not matter"
        );
        assert_eq!(
            v.verify(&h, b"timestamp=%ff&token=a&signature=b", NOW),
            Err(VerifyError::Malformed)
        );
        assert_eq!(v.verify(&h, &[0xff, 0xfe], NOW), Err(VerifyError::Malformed));
    }
}
