//! Mollie next-gen webhooks (event subscriptions): `X-Mollie-Signature` carries the hex
//! HMAC-SHA256 of the raw body under the subscription's shared secret (Mollie docs,
//! "Webhooks: Best practices" → "How to verify HMAC signature"). The docs' samples compare
//! the bare hex digest; a `sha256=` prefix is accepted too (it carries no secret).
//! Classic Mollie webhooks (`id=tr_…` form posts to a payment's `webhookUrl`) are not
//! signed at all — Mollie expects the receiver to fetch the payment — and are refused by
//! this provider.
//!
//! Delivery id: the event's `id`; event type: `type`. No worked example is published.

use http::HeaderMap;
use ring::hmac;

use crate::extract::FieldSpec;
use crate::verify::{
    decode_hex_exact, header_str, About, Defaults, KeyError, Keys, Options, Provider,
    ProviderSpec, Request, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Mollie);

const SIG: &str = "X-Mollie-Signature";
static SIG_NAME: http::HeaderName = http::HeaderName::from_static("x-mollie-signature");

struct Mollie;

impl ProviderSpec for Mollie {
    fn name(&self) -> &'static str {
        "mollie"
    }

    fn about(&self) -> About {
        About {
            headers: &[SIG],
            signed: "hex HMAC-SHA256(body) (`sha256=` prefix optional)",
            secret: "the webhook subscription's shared secret",
            handshakes: &[],
            docs: "https://docs.mollie.com/reference/webhooks-best-practices",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let value = header_str(req.headers, &SIG_NAME)?;
        let hex_sig = value.strip_prefix("sha256=").unwrap_or(value);
        let mut sig = [0u8; 32];
        decode_hex_exact(hex_sig, &mut sig)?;
        if v
            .hmac_keys()
            .iter()
            .any(|key| hmac::verify(key, req.body, &sig).is_ok())
        {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
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
        Ok(vec![(SIG.to_string(), hex::encode(tag.as_ref()))])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::pointer("/id"), Some(FieldSpec::pointer("/type")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::verify::test_support::*;

    #[test]
    fn the_sha256_prefix_is_optional() {
        let p = super::PROVIDER;
        let v = verifier(p, &["mollie-shared"]);
        let bare = value_of(&signed_by(p, "mollie-shared", BODY, NOW), "x-mollie-signature");
        for value in [bare.clone(), format!("sha256={bare}")] {
            let h = header_map(&[("X-Mollie-Signature".into(), value.clone())]);
            assert_eq!(v.verify(&h, BODY, NOW), Ok(()), "{value}");
        }
    }
}
