//! Box: `BOX-SIGNATURE-PRIMARY` and `BOX-SIGNATURE-SECONDARY`, each the base64
//! HMAC-SHA256 of `body + BOX-DELIVERY-TIMESTAMP` under the app's primary and secondary
//! signature keys; `BOX-DELIVERY-TIMESTAMP` is RFC 3339 with an offset (Box developer
//! docs, "Signatures" → "Verify signatures manually"). Box keeps two keys so either can
//! be rotated: configure both as `secrets`; a request is accepted when either header
//! matches either key. `BOX-SIGNATURE-VERSION` must be `1` and `BOX-SIGNATURE-ALGORITHM`
//! `HmacSHA256` when present. Box's SDKs refuse deliveries older than 10 minutes: set
//! `tolerance = "10m"` for exactly that.
//!
//! Delivery id `BOX-DELIVERY-ID`; event type: the body's `trigger`.

use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use ring::hmac;

use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, ct_eq, decode_b64_exact, header_values, hmac_parts, parse_rfc3339, About,
    B64Buf, Defaults, KeyError, Keys, Options, Provider, ProviderSpec, Request, Verifier,
    VerifyError, MAX_SIG_LEN,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&BoxCom);

const PRIMARY: &str = "BOX-SIGNATURE-PRIMARY";
const SECONDARY: &str = "BOX-SIGNATURE-SECONDARY";
const TS: &str = "BOX-DELIVERY-TIMESTAMP";
static PRIMARY_NAME: HeaderName = HeaderName::from_static("box-signature-primary");
static SECONDARY_NAME: HeaderName = HeaderName::from_static("box-signature-secondary");
static TS_NAME: HeaderName = HeaderName::from_static("box-delivery-timestamp");
static VERSION_NAME: HeaderName = HeaderName::from_static("box-signature-version");
static ALGORITHM_NAME: HeaderName = HeaderName::from_static("box-signature-algorithm");

struct BoxCom;

/// `Ok(None)` when the header is absent; its decoded tag otherwise.
fn tag_of<'b>(
    value: Result<&[u8], VerifyError>,
    buf: &'b mut B64Buf,
) -> Result<Option<&'b [u8]>, VerifyError> {
    match value {
        Err(VerifyError::Missing) => Ok(None),
        Err(e) => Err(e),
        Ok(value) => decode_b64_exact(value, 32, buf).map(Some),
    }
}

/// An optional header that, when present, must hold exactly `expected`.
fn optional_is(value: Result<&[u8], VerifyError>, expected: &[u8]) -> Result<(), VerifyError> {
    match value {
        Err(VerifyError::Missing) => Ok(()),
        Ok(v) if v == expected => Ok(()),
        _ => Err(VerifyError::Malformed),
    }
}

impl ProviderSpec for BoxCom {
    fn name(&self) -> &'static str {
        "box"
    }

    fn about(&self) -> About {
        About {
            headers: &[PRIMARY, SECONDARY, TS],
            signed: "base64 HMAC-SHA256(body + delivery timestamp), one header per key",
            secret: "the primary and the secondary signature key",
            handshakes: &[],
            docs: "https://developer.box.com/guides/webhooks/v2/signatures-v2/",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let headers = req.headers;
        let (mut b1, mut b2): (B64Buf, B64Buf) = ([0u8; MAX_SIG_LEN + 8], [0u8; MAX_SIG_LEN + 8]);
        // Five headers, read in one pass (see `header_values`).
        let [primary, secondary, ts, version, algorithm] = header_values(
            headers,
            [
                &PRIMARY_NAME,
                &SECONDARY_NAME,
                &TS_NAME,
                &VERSION_NAME,
                &ALGORITHM_NAME,
            ],
        );
        let primary = tag_of(primary, &mut b1)?;
        let secondary = tag_of(secondary, &mut b2)?;
        if primary.is_none() && secondary.is_none() {
            return Err(VerifyError::Missing);
        }
        let ts_text = ts?;
        let timestamp = parse_rfc3339(ts_text)?;
        optional_is(version, b"1")?;
        optional_is(algorithm, b"HmacSHA256")?;
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        let matched = v.hmac_keys().iter().any(|key| {
            let tag = hmac_parts(key, &[req.body, ts_text]);
            [primary, secondary]
                .iter()
                .flatten()
                .any(|sig| ct_eq(tag.as_ref(), sig))
        });
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(&PRIMARY_NAME) || headers.contains_key(&SECONDARY_NAME)
    }

    /// The headers with the primary signature only (one key given).
    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let secs = u64::try_from(now).unwrap_or(0);
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let ts = humantime::format_rfc3339_seconds(t).to_string();
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let tag = hmac_parts(&key, &[body, ts.as_bytes()]);
        Ok(vec![
            (TS.to_string(), ts),
            (
                PRIMARY.to_string(),
                base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
            ),
        ])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::header("box-delivery-id"),
            Some(FieldSpec::pointer("/trigger")),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::VerifyError;

    /// Box's published sample, verbatim as in box/box-node-sdk `docs/webhooks.md` at 7dcf9c2
    /// ("Validate a Webhook Message", checked against that file; also Box's Python SDK
    /// unit test `test_validate_message`, from memory — not checked): keys
    /// `SamplePrimaryKey` / `SampleSecondaryKey`, the body as compact JSON, timestamp
    /// 2020-01-01T00:00:00-07:00.
    const BODY: &[u8] = br#"{"type":"webhook_event","webhook":{"id":"1234567890"},"trigger":"FILE.UPLOADED","source":{"id":"1234567890","type":"file","name":"Test.txt"}}"#;
    const AT: i64 = 1_577_862_000;

    fn headers() -> Vec<(String, String)> {
        [
            ("box-delivery-id", "f96bb54b-ee16-4fc5-aa65-8c2d9e5b546f"),
            ("box-delivery-timestamp", "2020-01-01T00:00:00-07:00"),
            ("box-signature-algorithm", "HmacSHA256"),
            ("box-signature-primary", "6TfeAW3A1PASkgboxxA5yqHNKOwFyMWuEXny/FPD5hI="),
            ("box-signature-secondary", "v+1CD1Jdo3muIcbpv5lxxgPglOqMfsNHPV899xWYydo="),
            ("box-signature-version", "1"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn box_sdk_sample_verifies_with_either_key() {
        let p = super::PROVIDER;
        for keys in [
            &["SamplePrimaryKey", "SampleSecondaryKey"][..],
            &["SamplePrimaryKey"],
            &["SampleSecondaryKey"],
        ] {
            let v = verifier(p, keys);
            assert_eq!(v.verify(&header_map(&headers()), BODY, AT), Ok(()), "{keys:?}");
            // Only the other key's header left: still accepted when that key is configured.
            let only_secondary = without(&headers(), "box-signature-primary");
            let expect = if keys.contains(&"SampleSecondaryKey") {
                Ok(())
            } else {
                Err(VerifyError::Invalid)
            };
            assert_eq!(v.verify(&only_secondary, BODY, AT), expect, "{keys:?}");
        }
        let v = verifier(p, &["IncorrectKey"]);
        assert_eq!(
            v.verify(&header_map(&headers()), BODY, AT),
            Err(VerifyError::Invalid)
        );
        let v = verifier(p, &["SamplePrimaryKey"]);
        // 10 minutes later with a 5-minute tolerance: too old.
        assert_eq!(
            v.verify(&header_map(&headers()), BODY, AT + 600),
            Err(VerifyError::Expired)
        );
        for (name, bad) in [
            ("box-signature-version", "2"),
            ("box-signature-algorithm", "XXX"),
            ("box-delivery-timestamp", "2020-01-01 00:00:00"),
        ] {
            let h = with(&headers(), name, bad);
            assert_eq!(v.verify(&h, BODY, AT), Err(VerifyError::Malformed), "{name}");
        }
        let neither = without(
            &headers()
                .into_iter()
                .filter(|(n, _)| n != "box-signature-secondary")
                .collect::<Vec<_>>(),
            "box-signature-primary",
        );
        assert_eq!(v.verify(&neither, BODY, AT), Err(VerifyError::Missing));
    }
}
