//! Bitbucket Cloud (and Data Center): a webhook with a secret carries
//! `X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, body)>` ("Enhanced webhook
//! security", Bitbucket blog; Data Center's "Managing webhooks": `X-Hub-Signature`,
//! default algorithm HMAC-SHA256). Note the name: GitHub's `X-Hub-Signature` is SHA-1,
//! Bitbucket's is SHA-256 with the algorithm as prefix; only `sha256=` is accepted.
//! No timestamp: replays are refused by the body-digest dedupe.
//!
//! Delivery id: `X-Request-UUID` (Cloud) or `X-Request-Id` (Data Center); event type:
//! `X-Event-Key`. No worked example is published.

use super::common::{BodyHmac, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, HmacAlgorithm, Provider, SigEncoding};

static SPEC: BodyHmac = BodyHmac {
    name: "bitbucket",
    aliases: &[],
    about: About {
        headers: &["X-Hub-Signature"],
        signed: "`sha256=` + hex HMAC-SHA256(body)",
        secret: "the webhook's secret",
        handshakes: &[],
        docs: "https://support.atlassian.com/bitbucket-cloud/docs/manage-webhooks/",
    },
    sig: SigHeader {
        header: "X-Hub-Signature",
        name: header_name!("x-hub-signature"),
        prefix: "sha256=",
        encoding: SigEncoding::Hex,
        algorithm: HmacAlgorithm::Sha256,
    },
    defaults: || {
        Defaults::new(
            FieldSpec::Any(vec![
                FieldSpec::header("x-request-uuid"),
                FieldSpec::header("x-request-id"),
            ]),
            Some(FieldSpec::header("x-event-key")),
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

    /// The signature is GitHub's `sha256=` form under another header name: GitHub's
    /// published example ("It's a Secret to Everybody" / "Hello, World!") carries over.
    #[test]
    fn sha256_prefix_under_x_hub_signature() {
        let v = verifier(super::PROVIDER, &["It's a Secret to Everybody"]);
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let h = header_map(&[("X-Hub-Signature".into(), sig.into())]);
        assert_eq!(v.verify(&h, b"Hello, World!", NOW), Ok(()));
        // GitHub's SHA-256 header name is not Bitbucket's.
        let h = header_map(&[("X-Hub-Signature-256".into(), sig.into())]);
        assert_eq!(v.verify(&h, b"Hello, World!", NOW), Err(VerifyError::Missing));
        // A SHA-1 signature (GitHub's legacy meaning of this header) is refused.
        let h = header_map(&[("X-Hub-Signature".into(), format!("sha1={}", "0".repeat(40)))]);
        assert_eq!(v.verify(&h, b"Hello, World!", NOW), Err(VerifyError::Malformed));
    }
}
