//! PagerDuty (v3 webhook subscriptions): `X-PagerDuty-Signature: v1=<hex
//! HMAC-SHA256(secret, body)>`, and during a secret rotation several, comma-separated
//! (`v1=…,v1=…`); "verify that at least one matches" (PagerDuty developer docs, "Verifying
//! Signatures"). Entries of other versions or that do not decode are skipped; more than
//! 16 entries is malformed. No timestamp: replays are refused by the body-digest dedupe.
//!
//! Delivery id: the event's `id`; event type: `event_type`. No worked example is published.

use http::HeaderMap;
use ring::hmac;

use super::common::read_kv_header;
use crate::extract::FieldSpec;
use crate::verify::{
    header_bytes, About, Defaults, KeyError, Keys, Options, Provider, ProviderSpec, Request,
    Sigs, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&PagerDuty);

const SIG: &str = "X-PagerDuty-Signature";
static SIG_NAME: http::HeaderName = http::HeaderName::from_static("x-pagerduty-signature");

struct PagerDuty;

impl ProviderSpec for PagerDuty {
    fn name(&self) -> &'static str {
        "pagerduty"
    }

    fn about(&self) -> About {
        About {
            headers: &[SIG],
            signed: "`v1=<hex>[,v1=<hex>…]` HMAC-SHA256(body), any `v1` may match",
            secret: "the webhook subscription's secret",
            handshakes: &[],
            docs: "https://developer.pagerduty.com/docs/verifying-signatures",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let value = header_bytes(req.headers, &SIG_NAME)?;
        let mut sigs = Sigs::new();
        read_kv_header(value, b',', None, b"v1", &mut sigs)?;
        let tags = v.hmac_keys().iter().map(|key| hmac::sign(key, req.body));
        sigs.matches(tags)
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(&SIG_NAME)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        _: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), body);
        Ok(vec![(SIG.to_string(), format!("v1={}", hex::encode(tag.as_ref())))])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::pointer("/event/id"),
            Some(FieldSpec::pointer("/event/event_type")),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::VerifyError;

    #[test]
    fn any_v1_of_a_rotation_list_may_match() {
        let p = super::PROVIDER;
        let v = verifier(p, &["pd-secret"]);
        let good = value_of(&signed_by(p, "pd-secret", BODY, NOW), "x-pagerduty-signature");
        let other = value_of(&signed_by(p, "pd-old", BODY, NOW), "x-pagerduty-signature");
        for list in [
            format!("{other},{good}"),
            format!("{good},{other}"),
            format!("v1=zz,{good}"),
            format!("v2=abc,{good}"),
        ] {
            let h = header_map(&[("X-PagerDuty-Signature".into(), list.clone())]);
            assert_eq!(v.verify(&h, BODY, NOW), Ok(()), "{list}");
        }
        let h = header_map(&[("X-PagerDuty-Signature".into(), other)]);
        assert_eq!(v.verify(&h, BODY, NOW), Err(VerifyError::Invalid));
        let many = format!("{}{good}", "v0=x,".repeat(16));
        let h = header_map(&[("X-PagerDuty-Signature".into(), many)]);
        assert_eq!(v.verify(&h, BODY, NOW), Err(VerifyError::Malformed));
    }
}
