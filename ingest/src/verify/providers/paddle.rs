//! Paddle Billing: `Paddle-Signature: ts=<unix seconds>;h1=<hex HMAC-SHA256(endpoint
//! secret key, "{ts}:{body}")>`; while a secret is being rotated Paddle sends one `h1`
//! per active secret and any may match (Paddle developer docs, "Verify webhook
//! signatures"). Entries of other versions or that do not decode are skipped; more than
//! 16 elements is malformed. Paddle's SDKs allow 5 seconds of skew by default; hookgate
//! uses the source's `tolerance` (5 minutes unless set).
//!
//! Delivery id: the body's `notification_id` (the same on retries); event type:
//! `event_type`. (Paddle Classic's `p_signature` form posts are a different scheme and
//! are not accepted.) No worked example with its secret is published.

use http::HeaderMap;
use ring::hmac;

use crate::extract::FieldSpec;
use super::common::read_kv_header;
use crate::verify::{
    check_tolerance, header_bytes, hmac_parts, parse_timestamp, About, Defaults, KeyError, Keys,
    Options, Provider, ProviderSpec, Request, Sigs, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Paddle);

const SIG: &str = "Paddle-Signature";
static SIG_NAME: http::HeaderName = http::HeaderName::from_static("paddle-signature");

struct Paddle;

impl ProviderSpec for Paddle {
    fn name(&self) -> &'static str {
        "paddle"
    }

    fn about(&self) -> About {
        About {
            headers: &[SIG],
            signed: "`ts=<unix>;h1=<hex>[;h1=…]`: HMAC-SHA256(ts + \":\" + body), any `h1` may match",
            secret: "the notification destination's secret key (`pdl_ntfset_…`)",
            handshakes: &[],
            docs: "https://developer.paddle.com/webhooks/signature-verification",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let value = header_bytes(req.headers, &SIG_NAME)?;
        let mut sigs = Sigs::new();
        let ts_text = read_kv_header(value, b';', Some(b"ts"), b"h1", &mut sigs)?
            .ok_or(VerifyError::Malformed)?;
        let timestamp = parse_timestamp(ts_text)?;
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        let tags = v
            .hmac_keys()
            .iter()
            .map(|key| hmac_parts(key, &[ts_text, b":", req.body]));
        sigs.matches(tags)
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
        let tag = hmac_parts(&key, &[ts.as_bytes(), b":", body]);
        Ok(vec![(
            SIG.to_string(),
            format!("ts={ts};h1={}", hex::encode(tag.as_ref())),
        )])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::pointer("/notification_id"),
            Some(FieldSpec::pointer("/event_type")),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::VerifyError;

    /// Several `h1` while a secret is rotated: any may match, in any position.
    #[test]
    fn any_h1_of_a_rotation_may_match() {
        let p = super::PROVIDER;
        let v = verifier(p, &["pdl_ntfset_new"]);
        let h1 = |secret: &str| {
            let value = value_of(&signed_by(p, secret, BODY, NOW), "paddle-signature");
            value.split_once(";h1=").unwrap().1.to_string()
        };
        let (good, old) = (h1("pdl_ntfset_new"), h1("pdl_ntfset_old"));
        for header in [
            format!("ts={NOW};h1={old};h1={good}"),
            format!("ts={NOW};h1={good};h1={old}"),
            format!("ts={NOW};h1=zz;h1={good}"),
            format!("ts={NOW};h2=abc;h1={good}"),
        ] {
            let h = header_map(&[("Paddle-Signature".into(), header.clone())]);
            assert_eq!(v.verify(&h, BODY, NOW), Ok(()), "{header}");
        }
        for (header, expected) in [
            (format!("ts={NOW};h1={old}"), VerifyError::Invalid),
            (format!("ts={NOW};ts={NOW};h1={good}"), VerifyError::Malformed),
            (format!("h1={good}"), VerifyError::Malformed),
            (format!("ts={NOW};h1=zz"), VerifyError::Malformed),
            (format!("ts={NOW}:h1={good}"), VerifyError::Malformed),
        ] {
            let h = header_map(&[("Paddle-Signature".into(), header.clone())]);
            assert_eq!(v.verify(&h, BODY, NOW), Err(expected), "{header}");
        }
    }
}
