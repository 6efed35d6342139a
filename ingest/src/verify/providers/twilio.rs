//! Twilio: `X-Twilio-Signature: <base64 HMAC-SHA1(auth token, signed string)>` (Twilio
//! docs, "Webhooks security" → "Validating signatures from Twilio"):
//! * form posts (`application/x-www-form-urlencoded`): the full URL Twilio called
//!   (`public_url` + `?` + the query string as received), then every POST parameter
//!   sorted by name (then value), each name immediately followed by its value, decoded;
//! * JSON bodies: Twilio adds `bodySHA256=<hex SHA-256 of the body>` to the URL and signs
//!   only the URL; hookgate checks both the signature and that the body has that digest.
//!
//! No timestamp: replays are refused by the body-digest dedupe. Delivery id: the
//! `I-Twilio-Idempotency-Token` header when present, else a digest of the body.

use base64::Engine as _;
use http::HeaderMap;
use ring::{digest, hmac};

use super::common::{example_url_options, require_public_url, signed_url};
use crate::extract::FieldSpec;
use crate::verify::{
    ct_eq, decode_b64_exact, decode_hex_exact, header_str, query_param, About, B64Buf, Defaults,
    KeyError, Keys, Options, Provider, ProviderSpec, Request, Verifier, VerifyError,
    MAX_SIG_LEN,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Twilio);

const SIG: &str = "X-Twilio-Signature";

struct Twilio;

/// `%XX` and `+` decoded as bytes; a malformed escape is kept as written (the request
/// then simply fails to verify).
fn form_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        let hex = |j: usize| text.get(j).and_then(|c| (*c as char).to_digit(16));
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push(((h << 4) | l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    out
}

/// The POST parameters of a form body, decoded and sorted by name, then value.
fn sorted_params(body: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = body
        .split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let name = it.next().unwrap_or_default();
            let value = it.next().unwrap_or_default();
            (form_decode(name), form_decode(value))
        })
        .collect();
    params.sort();
    params
}

/// The tag over URL (+ sorted parameters unless the URL carries `bodySHA256`).
fn tag(key: &hmac::Key, url: [&[u8]; 3], params: Option<&[(Vec<u8>, Vec<u8>)]>) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    for part in url {
        ctx.update(part);
    }
    for (name, value) in params.unwrap_or_default() {
        ctx.update(name);
        ctx.update(value);
    }
    ctx.sign()
}

impl ProviderSpec for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn about(&self) -> About {
        About {
            headers: &[SIG],
            signed: "base64 HMAC-SHA1(`public_url`?query + sorted POST params; JSON: URL with `bodySHA256`)",
            secret: "the account's auth token",
            handshakes: &[],
            docs: "https://www.twilio.com/docs/usage/webhooks/webhooks-security",
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
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let value = header_str(req.headers, SIG)?;
        let mut buf: B64Buf = [0u8; MAX_SIG_LEN + 8];
        let sig = decode_b64_exact(value, 20, &mut buf)?;
        let url = signed_url(v, req.query)?;
        let body_sha = req.query.and_then(|q| query_param(q, "bodySHA256"));
        let params = match &body_sha {
            Some(hex_digest) => {
                let mut expected = [0u8; 32];
                decode_hex_exact(hex_digest, &mut expected)?;
                let actual = digest::digest(&digest::SHA256, req.body);
                if !ct_eq(actual.as_ref(), &expected) {
                    return Err(VerifyError::Invalid);
                }
                None
            }
            None => Some(sorted_params(req.body)),
        };
        let matched = v
            .hmac_keys()
            .iter()
            .any(|key| ct_eq(tag(key, url, params.as_deref()).as_ref(), sig));
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(SIG)
    }

    /// The signature of `body` posted as a form to `public_url` (no query).
    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        _: i64,
        options: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let url = require_public_url(options)?;
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
        let params = sorted_params(body);
        let tag = tag(&key, [url.as_bytes(), b"", b""], Some(&params));
        Ok(vec![(
            SIG.to_string(),
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        )])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::Any(vec![
                FieldSpec::header("i-twilio-idempotency-token"),
                FieldSpec::BodyHash,
            ]),
            None,
        )
    }

    fn example_options(&self) -> Options {
        example_url_options("https://hooks.example.com/hooks/twilio")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::{Options, Request, Verifier, VerifyError};

    fn twilio(url: &str) -> Verifier {
        Verifier::with_options(
            super::PROVIDER,
            &strings(&["12345"]),
            Options {
                public_url: Some(url.into()),
                ..Options::default()
            },
        )
        .unwrap()
    }

    fn request<'a>(h: &'a http::HeaderMap, body: &'a [u8], query: &'a str) -> Request<'a> {
        Request {
            headers: h,
            body,
            query: Some(query),
            now: NOW,
        }
    }

    /// Twilio's worked example ("Webhooks security": auth token 12345, URL
    /// https://example.com/myapp.php?foo=1&bar=2, POST parameters CallSid, Caller, Digits,
    /// From, To), posted with its parameters in another order than the sorted one it is
    /// signed in. The expected signature was also reproduced by an independent
    /// computation (Python's hmac over the documented string).
    #[test]
    fn twilio_documented_example() {
        let body = b"To=%2B18005551212&From=%2B14158675310&Digits=1234&CallSid=CA1234567890ABCDE&Caller=%2B14158675310";
        let h = header_map(&[("X-Twilio-Signature".into(), "L/OH5YylLD5NRKLltdqwSvS0BnU=".into())]);
        let v = twilio("https://example.com/myapp.php");
        assert_eq!(v.verify_request(&request(&h, body, "foo=1&bar=2")), Ok(()));
        // The query string is signed.
        assert_eq!(
            v.verify_request(&request(&h, body, "foo=1&bar=3")),
            Err(VerifyError::Invalid)
        );
        // So are the parameters.
        let tampered = b"To=%2B18005551212&From=%2B14158675310&Digits=1235&CallSid=CA1234567890ABCDE&Caller=%2B14158675310";
        assert_eq!(
            v.verify_request(&request(&h, tampered, "foo=1&bar=2")),
            Err(VerifyError::Invalid)
        );
    }

    /// twilio-python's own test vectors (twilio/twilio-python,
    /// `tests/unit/test_request_validator.py` at 306691e: token `12345`, URI
    /// `https://mycompany.com/myapp.php?foo=1&bar=2`, the five call parameters, expected
    /// `RSOYDt4T1cUTdK1PDd93/VVr8B8=`; the JSON body with its `bodySHA256`, expected
    /// `a9nBmqA0ju/hNViExpshrM61xv4=`; and `IK+Dwps556ElfBT0I3Rgjkr1wJU=` for
    /// `Sid`, `SidAccount` and two `Digits`, whose values are signed sorted), verbatim.
    #[test]
    fn twilio_python_sdk_vectors() {
        let v = twilio("https://mycompany.com/myapp.php");
        let form = b"CallSid=CA1234567890ABCDE&Digits=1234&From=%2B14158675309&To=%2B18005551212&Caller=%2B14158675309";
        let h = header_map(&[("X-Twilio-Signature".into(), "RSOYDt4T1cUTdK1PDd93/VVr8B8=".into())]);
        assert_eq!(v.verify_request(&request(&h, form, "foo=1&bar=2")), Ok(()));

        let body = br#"{"property": "value", "boolean": true}"#;
        let query = "foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let h = header_map(&[("X-Twilio-Signature".into(), "a9nBmqA0ju/hNViExpshrM61xv4=".into())]);
        assert_eq!(v.verify_request(&request(&h, body, query)), Ok(()));
        assert_eq!(
            v.verify_request(&request(&h, br#"{"property": "value", "boolean": false}"#, query)),
            Err(VerifyError::Invalid)
        );

        // The SDK's MultiDict case also sends an exact duplicate (`Digits=1234` twice), which
        // the SDK signs once; hookgate signs parameters as received, so the duplicate is
        // left out here and the vector checks the sorting of keys and of values.
        let form = b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234";
        let h = header_map(&[("X-Twilio-Signature".into(), "IK+Dwps556ElfBT0I3Rgjkr1wJU=".into())]);
        assert_eq!(v.verify_request(&request(&h, form, "foo=1&bar=2")), Ok(()));
    }

    /// JSON bodies: the URL carries `bodySHA256` and only the URL is signed; the body must
    /// have that digest.
    #[test]
    fn json_bodies_are_bound_by_body_sha256() {
        let body = br#"{"event":"ping"}"#;
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, body).as_ref());
        let query = format!("bodySHA256={digest}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"12345");
        let signed = format!("https://example.com/hook?{query}");
        let sig = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            ring::hmac::sign(&key, signed.as_bytes()).as_ref(),
        );
        let h = header_map(&[("X-Twilio-Signature".into(), sig)]);
        let v = twilio("https://example.com/hook");
        assert_eq!(v.verify_request(&request(&h, body, &query)), Ok(()));
        assert_eq!(
            v.verify_request(&request(&h, br#"{"event":"pong"}"#, &query)),
            Err(VerifyError::Invalid)
        );
        let bad = "bodySHA256=xyz";
        assert_eq!(
            v.verify_request(&request(&h, body, bad)),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn form_decoding_never_panics_and_keeps_bad_escapes() {
        assert_eq!(super::form_decode(b"a%2Bb+c%"), b"a+b c%");
        assert_eq!(super::form_decode(b"%zz%4"), b"%zz%4");
        assert_eq!(
            super::sorted_params(b"b=2&a=1&&a=0"),
            vec![
                (b"a".to_vec(), b"0".to_vec()),
                (b"a".to_vec(), b"1".to_vec()),
                (b"b".to_vec(), b"2".to_vec())
            ]
        );
    }
}
