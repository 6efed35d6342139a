//! Netlify (outgoing deploy notifications with a JWS secret token): `X-Webhook-Signature`
//! is a JWS (compact JWT) signed with HS256 under the token, whose claims are
//! `{"iss":"netlify","sha256":"<hex SHA-256 of the body>"}` (Netlify docs, "Deploy
//! notifications" → "Payload signature"). hookgate checks, in order: three base64url
//! parts; a header with `"alg":"HS256"`; the HMAC over `header.payload`; `iss` is
//! `netlify`; `sha256` is the body's digest.
//!
//! Delivery id: a digest of the body (one deploy sends several notifications with the
//! same deploy `id`); event type: `X-Netlify-Event`. No worked example is published.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderMap;
use ring::{digest, hmac};

use crate::extract::FieldSpec;
use crate::verify::{
    ct_eq, header_str, About, Defaults, KeyError, Keys, Options, Provider, ProviderSpec,
    Request, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Netlify);

const SIG: &str = "X-Webhook-Signature";
/// Longest JWS accepted (the real one is about 200 characters).
const MAX_JWS: usize = 2048;

struct Netlify;

fn b64url(text: &str) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| VerifyError::Malformed)
}

impl ProviderSpec for Netlify {
    fn name(&self) -> &'static str {
        "netlify"
    }

    fn about(&self) -> About {
        About {
            headers: &[SIG],
            signed: "JWS HS256 with claims `iss`=netlify and `sha256`=hex SHA-256(body)",
            secret: "the notification's JWS secret token",
            handshakes: &[],
            docs: "https://docs.netlify.com/site-deploys/deploy-notifications/#payload-signature",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let jws = header_str(req.headers, SIG)?;
        if jws.len() > MAX_JWS {
            return Err(VerifyError::Malformed);
        }
        let mut parts = jws.split('.');
        let (Some(head), Some(claims), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let header: serde_json::Value =
            serde_json::from_slice(&b64url(head)?).map_err(|_| VerifyError::Malformed)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(VerifyError::Malformed);
        }
        let sig = b64url(sig)?;
        if sig.len() != 32 {
            return Err(VerifyError::Malformed);
        }
        let signed = jws.get(..head.len() + 1 + claims.len()).unwrap_or_default();
        let matched = v
            .hmac_keys()
            .iter()
            .any(|key| ct_eq(hmac::sign(key, signed.as_bytes()).as_ref(), &sig));
        if !matched {
            return Err(VerifyError::Invalid);
        }
        // Only now, with the claims authenticated, read them.
        let claims: serde_json::Value =
            serde_json::from_slice(&b64url(claims)?).map_err(|_| VerifyError::Invalid)?;
        let body_digest = hex::encode(digest::digest(&digest::SHA256, req.body).as_ref());
        let iss_ok = claims.get("iss").and_then(|i| i.as_str()) == Some("netlify");
        let sha_ok = claims.get("sha256").and_then(|s| s.as_str()) == Some(body_digest.as_str());
        if iss_ok && sha_ok {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(SIG)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        _: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body_digest = hex::encode(digest::digest(&digest::SHA256, body).as_ref());
        let claims = URL_SAFE_NO_PAD.encode(
            serde_json::json!({ "iss": "netlify", "sha256": body_digest }).to_string(),
        );
        let signed = format!("{head}.{claims}");
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(hmac::sign(&key, signed.as_bytes()).as_ref());
        Ok(vec![(SIG.to_string(), format!("{signed}.{sig}"))])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::BodyHash,
            Some(FieldSpec::header("x-netlify-event")),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    use crate::verify::test_support::*;
    use crate::verify::VerifyError;

    fn jws(secret: &[u8], header: &str, claims: &str) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let sig = URL_SAFE_NO_PAD.encode(ring::hmac::sign(&key, signed.as_bytes()).as_ref());
        format!("{signed}.{sig}")
    }

    #[test]
    fn claims_bind_the_issuer_and_the_body() {
        let v = verifier(super::PROVIDER, &["jws-secret"]);
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, BODY).as_ref());
        let h = |token: String| header_map(&[("X-Webhook-Signature".into(), token)]);
        let good = format!(r#"{{"iss":"netlify","sha256":"{digest}"}}"#);
        assert_eq!(
            v.verify(&h(jws(b"jws-secret", r#"{"alg":"HS256"}"#, &good)), BODY, NOW),
            Ok(())
        );
        for (header, claims, expected) in [
            (r#"{"alg":"none"}"#, good.clone(), VerifyError::Malformed),
            (r#"{"alg":"HS512"}"#, good.clone(), VerifyError::Malformed),
            (
                r#"{"alg":"HS256"}"#,
                format!(r#"{{"iss":"other","sha256":"{digest}"}}"#),
                VerifyError::Invalid,
            ),
            (
                r#"{"alg":"HS256"}"#,
                r#"{"iss":"netlify","sha256":"00"}"#.to_string(),
                VerifyError::Invalid,
            ),
        ] {
            let token = jws(b"jws-secret", header, &claims);
            assert_eq!(v.verify(&h(token), BODY, NOW), Err(expected), "{header} {claims}");
        }
        for bad in ["a.b", "a.b.c.d", "!!.??.**"] {
            assert_eq!(
                v.verify(&h(bad.into()), BODY, NOW),
                Err(VerifyError::Malformed),
                "{bad}"
            );
        }
    }
}
