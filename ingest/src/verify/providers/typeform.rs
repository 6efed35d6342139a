//! Typeform: `Typeform-Signature: sha256=<base64 HMAC-SHA256(secret, body)>` — base64,
//! not hex ("Secure your webhooks", Typeform developer docs). Delivery id: the body's
//! `event_id`; event type: `event_type`. No worked example with its secret is published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: BodyHmac = BodyHmac {
    name: "typeform",
    aliases: &[],
    about: About {
        headers: &["Typeform-Signature"],
        signed: "`sha256=` + base64 HMAC-SHA256(body)",
        secret: "the webhook's secret",
        handshakes: &[],
        docs: "https://www.typeform.com/developers/webhooks/secure-your-webhooks/",
    },
    sig: SigHeader {
        header: "Typeform-Signature",
        name: header_name!("typeform-signature"),
        prefix: "sha256=",
        encoding: SigEncoding::Base64,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || {
        Defaults::new(
            FieldSpec::pointer("/event_id"),
            Some(FieldSpec::pointer("/event_type")),
        )
    },
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SPEC);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::VerifyError;

    /// Base64, not hex: the hex digest of the right MAC under the right prefix is refused.
    #[test]
    fn the_digest_is_base64() {
        let p = super::PROVIDER;
        let v = verifier(p, &["s3cret"]);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
        let tag = ring::hmac::sign(&key, BODY);
        let hex = header_map(&[(
            "Typeform-Signature".into(),
            format!("sha256={}", hex::encode(tag.as_ref())),
        )]);
        assert_eq!(v.verify(&hex, BODY, NOW), Err(VerifyError::Malformed));
        let b64 = header_map(&signed_by(p, "s3cret", BODY, NOW));
        assert_eq!(v.verify(&b64, BODY, NOW), Ok(()));
    }
}
