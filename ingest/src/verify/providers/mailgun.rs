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
//! `multipart/form-data` posts (what a route's `forward()` sends, always for messages with
//! attachments) are parsed over the raw body, bounded: at most [`MAX_PARTS`] parts, part
//! headers of at most [`MAX_PART_HEADERS`] bytes, the boundary as RFC 2046 allows (1-70
//! characters, quoted or not); the three fields must each appear exactly once, as for a
//! form. A body that does not parse (no boundary, no closing delimiter, a part without a
//! `Content-Disposition: form-data; name=…`) is `signature_malformed`. Delivery id: the
//! body's digest, as for forms. No worked example with its key is published.

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

/// The declared media type of the body (lowercase comparison by the caller) and the rest
/// of the `Content-Type` (its parameters).
fn content_type(headers: &HeaderMap) -> Option<(&str, &str)> {
    let value = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    let (media, params) = value.split_once(';').unwrap_or((value, ""));
    Some((media.trim(), params))
}

/// Whether the body is declared a URL-encoded form.
fn is_form(headers: &HeaderMap) -> bool {
    content_type(headers)
        .is_some_and(|(m, _)| m.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// Most parts read from a multipart body (a message with many attachments has a few
/// dozen).
const MAX_PARTS: usize = 256;
/// Longest header block of one part.
const MAX_PART_HEADERS: usize = 8 * 1024;

/// The `boundary` of a `multipart/form-data` body, if the body is declared one:
/// `Some(Err(Malformed))` when it is but the boundary is missing or not 1-70 characters.
fn multipart_boundary(headers: &HeaderMap) -> Option<Result<&str, VerifyError>> {
    let (media, params) = content_type(headers)?;
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("boundary").then(|| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
    });
    Some(match boundary {
        Some(b) if (1..=70).contains(&b.len()) => Ok(b),
        _ => Err(VerifyError::Malformed),
    })
}

/// Where `needle` first occurs in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The `name` of a part's `Content-Disposition: form-data; name="…"` header.
fn part_name(head: &str) -> Option<&str> {
    head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            return None;
        }
        let mut params = v.split(';');
        if !params.next()?.trim().eq_ignore_ascii_case("form-data") {
            return None;
        }
        params.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("name").then(|| {
                let v = v.trim();
                v.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v)
            })
        })
    })
}

/// The text fields `timestamp`, `token` and `signature` of a multipart body, each
/// required exactly once; every part is walked (bounded), so a repeated field anywhere is
/// `Malformed`.
fn multipart_fields<'b>(
    body: &'b [u8],
    boundary: &str,
) -> Result<[&'b str; 3], VerifyError> {
    const NAMES: [&str; 3] = ["timestamp", "token", "signature"];
    let dash = format!("--{boundary}");
    let delimiter = format!("\r\n--{boundary}");
    // The first delimiter opens the body or follows a preamble line.
    let mut at = if body.starts_with(dash.as_bytes()) {
        dash.len()
    } else {
        find(body, delimiter.as_bytes(), 0).ok_or(VerifyError::Malformed)? + delimiter.len()
    };
    let mut found: [Option<&str>; 3] = [None; 3];
    for _ in 0..=MAX_PARTS {
        match body.get(at..at + 2) {
            Some(b"--") => {
                return match found {
                    [Some(a), Some(b), Some(c)] => Ok([a, b, c]),
                    _ => Err(VerifyError::Missing),
                };
            }
            Some(b"\r\n") => at += 2,
            _ => return Err(VerifyError::Malformed),
        }
        let head_end = find(body, b"\r\n\r\n", at).ok_or(VerifyError::Malformed)?;
        if head_end - at > MAX_PART_HEADERS {
            return Err(VerifyError::Malformed);
        }
        let head = body
            .get(at..head_end)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or(VerifyError::Malformed)?;
        let name = part_name(head).ok_or(VerifyError::Malformed)?;
        let content_start = head_end + 4;
        let content_end =
            find(body, delimiter.as_bytes(), content_start).ok_or(VerifyError::Malformed)?;
        if let Some(slot) = NAMES.iter().position(|n| *n == name) {
            let value = body
                .get(content_start..content_end)
                .and_then(|v| std::str::from_utf8(v).ok())
                .ok_or(VerifyError::Malformed)?;
            let entry = found.get_mut(slot).ok_or(VerifyError::Malformed)?;
            if entry.replace(value).is_some() {
                return Err(VerifyError::Malformed);
            }
        }
        at = content_end + delimiter.len();
    }
    Err(VerifyError::Malformed)
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
            headers: &["(body) `signature.{timestamp,token,signature}`, or those form fields (URL-encoded or multipart)"],
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
        if let Some(boundary) = multipart_boundary(req.headers) {
            let [ts_text, token, sig_hex] = multipart_fields(req.body, boundary?)?;
            return check(v, req.now, ts_text, token, sig_hex);
        }
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
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::VerifyError;

    /// A multipart body as a route's `forward()` posts it: text fields, the three
    /// signature fields, an attachment with binary content, then the closing delimiter.
    fn multipart(boundary: &str, fields: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            if name.starts_with("attachment") {
                out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
                );
            } else {
                out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
            }
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        out
    }

    fn multipart_headers(content_type: &str) -> http::HeaderMap {
        header_map(&[("content-type".to_string(), content_type.to_string())])
    }

    #[test]
    fn multipart_forwards_verify_and_bad_ones_are_refused_cleanly() {
        let v = verifier(super::PROVIDER, &["key-mailgun"]);
        let ts = NOW.to_string();
        let token = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"key-mailgun");
        let sig = hex::encode(ring::hmac::sign(&key, format!("{ts}{token}").as_bytes()).as_ref());
        let b = "----WebKitFormBoundary7MA4YWxk";
        let binary: &[u8] = b"\x00\xff\r\n--not-the-boundary\r\n\xfe";
        let good = multipart(
            b,
            &[
                ("recipient", b"bob@example.com"),
                ("body-plain", "Hi\r\n\r\nBob".as_bytes()),
                ("attachment-1", binary),
                ("timestamp", ts.as_bytes()),
                ("token", token.as_bytes()),
                ("signature", sig.as_bytes()),
            ],
        );
        let ct = format!("multipart/form-data; boundary={b}");
        assert_eq!(v.verify(&multipart_headers(&ct), &good, NOW), Ok(()));
        let quoted = format!("Multipart/Form-Data; charset=utf-8; boundary=\"{b}\"");
        assert_eq!(v.verify(&multipart_headers(&quoted), &good, NOW), Ok(()));
        // A preamble before the first delimiter is allowed (RFC 2046).
        let mut preamble = b"ignored preamble\r\n".to_vec();
        preamble.extend_from_slice(&good);
        assert_eq!(v.verify(&multipart_headers(&ct), &preamble, NOW), Ok(()));

        let other_sig = "0".repeat(64);
        let wrong = multipart(
            b,
            &[("timestamp", ts.as_bytes()), ("token", token.as_bytes()), ("signature", other_sig.as_bytes())],
        );
        assert_eq!(v.verify(&multipart_headers(&ct), &wrong, NOW), Err(VerifyError::Invalid));
        let stale = multipart(
            b,
            &[("timestamp", b"1000"), ("token", token.as_bytes()), ("signature", sig.as_bytes())],
        );
        assert_eq!(v.verify(&multipart_headers(&ct), &stale, NOW), Err(VerifyError::Expired));
        let missing = multipart(b, &[("timestamp", ts.as_bytes()), ("token", token.as_bytes())]);
        assert_eq!(v.verify(&multipart_headers(&ct), &missing, NOW), Err(VerifyError::Missing));
        let twice = multipart(
            b,
            &[
                ("timestamp", ts.as_bytes()),
                ("token", token.as_bytes()),
                ("signature", sig.as_bytes()),
                ("token", b"another-token"),
            ],
        );
        assert_eq!(v.verify(&multipart_headers(&ct), &twice, NOW), Err(VerifyError::Malformed));
        // No or an overlong boundary; a part without Content-Disposition.
        for content_type in [
            "multipart/form-data".to_string(),
            "multipart/form-data; boundary=".to_string(),
            format!("multipart/form-data; boundary={}", "x".repeat(71)),
            "multipart/form-data; boundary=other".to_string(),
        ] {
            assert_eq!(
                v.verify(&multipart_headers(&content_type), &good, NOW),
                Err(VerifyError::Malformed),
                "{content_type}"
            );
        }
        // A boundary over RFC 2046's 70 characters is refused even when the body uses it.
        let long = "x".repeat(71);
        let long_body = multipart(
            &long,
            &[("timestamp", ts.as_bytes()), ("token", token.as_bytes()), ("signature", sig.as_bytes())],
        );
        assert_eq!(
            v.verify(
                &multipart_headers(&format!("multipart/form-data; boundary={long}")),
                &long_body,
                NOW
            ),
            Err(VerifyError::Malformed)
        );
        let no_disposition = format!("--{b}\r\nContent-Type: text/plain\r\n\r\nx\r\n--{b}--\r\n");
        assert_eq!(
            v.verify(&multipart_headers(&ct), no_disposition.as_bytes(), NOW),
            Err(VerifyError::Malformed)
        );
        // Every truncation of the good body is refused without a panic (none verifies:
        // the closing delimiter is what ends the fields).
        for end in 0..good.len() - 2 {
            let got = v.verify(&multipart_headers(&ct), &good[..end], NOW);
            assert!(
                matches!(got, Err(VerifyError::Malformed | VerifyError::Missing)),
                "cut at {end}: {got:?}"
            );
        }
        // Too many parts.
        let many: Vec<(&str, &[u8])> = (0..300).map(|_| ("x", &b"1"[..])).collect();
        assert_eq!(
            v.verify(&multipart_headers(&ct), &multipart(b, &many), NOW),
            Err(VerifyError::Malformed)
        );
    }

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
