//! Zendesk webhooks: `X-Zendesk-Webhook-Signature: <base64 HMAC-SHA256(signing secret,
//! timestamp + body)>` with `X-Zendesk-Webhook-Signature-Timestamp` (ISO 8601 / RFC 3339,
//! e.g. `2021-07-14T19:24:42Z`) (Zendesk developer docs, "Verifying webhook
//! authenticity"). The timestamp is checked against the source's `tolerance`. (Zendesk
//! signs test deliveries from its admin UI with the fixed secret
//! `dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ==`; add it to `secrets` only while testing.)
//!
//! Delivery id `X-Zendesk-Webhook-Invocation-Id`; event type: the body's `type`. No
//! complete worked example is published.

use http::HeaderMap;
use ring::hmac;

use super::common::{check_parts, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, header_values, parse_rfc3339, About, Defaults, HmacAlgorithm, KeyError, Keys,
    Options, Provider, ProviderSpec, Request, SigEncoding, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Zendesk);

const SIG: SigHeader = SigHeader {
    header: "X-Zendesk-Webhook-Signature",
    name: header_name!("x-zendesk-webhook-signature"),
    prefix: "",
    encoding: SigEncoding::Base64,
    algorithm: HmacAlgorithm::Sha256,
};
const TS: &str = "X-Zendesk-Webhook-Signature-Timestamp";
static TS_NAME: http::HeaderName =
    http::HeaderName::from_static("x-zendesk-webhook-signature-timestamp");

struct Zendesk;

impl ProviderSpec for Zendesk {
    fn name(&self) -> &'static str {
        "zendesk"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-Zendesk-Webhook-Signature", TS],
            signed: "base64 HMAC-SHA256(timestamp + body)",
            secret: "the webhook's signing secret",
            handshakes: &[],
            docs: "https://developer.zendesk.com/documentation/webhooks/verifying/",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let [ts, sig] = header_values(req.headers, [&TS_NAME, SIG.name]);
        let ts_text = ts?;
        let timestamp = parse_rfc3339(ts_text)?;
        // Decode the signature before judging the time, so a garbled header says so.
        let mut buf = [0u8; crate::verify::MAX_SIG_LEN + 8];
        let sig = SIG.decode_value(sig?, &mut buf)?;
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        check_parts(v.hmac_keys(), sig, &[ts_text, req.body])
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        SIG.present(headers)
    }

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
        let sig = SIG.sign(secret, &[ts.as_bytes(), body]);
        Ok(vec![(TS.to_string(), ts), sig])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::header("x-zendesk-webhook-invocation-id"),
            Some(FieldSpec::pointer("/type")),
        )
    }
}
