//! SendGrid (Twilio SendGrid signed Event Webhook): `X-Twilio-Email-Event-Webhook-Signature`
//! is the base64 DER ECDSA P-256 / SHA-256 signature of `timestamp + body`, with
//! `X-Twilio-Email-Event-Webhook-Timestamp` in unix seconds (SendGrid docs, "Getting
//! started with the Event Webhook security features"). The secret is the verification
//! key SendGrid shows: base64 of the DER SubjectPublicKeyInfo of a P-256 key. The
//! timestamp is checked against the source's `tolerance` (SendGrid's own helpers do not
//! check it; the timestamp is signed, so hookgate does).
//!
//! A delivery is a JSON array of events: the body's digest is the delivery id; event
//! type: the first event's `event`.

use base64::Engine as _;
use http::HeaderMap;
use ring::signature::{self, KeyPair as _};

use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, header_str, parse_timestamp, About, Defaults, KeyError, Keys, Options,
    Provider, ProviderSpec, Request, SecretKind, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&SendGrid);

const SIG: &str = "X-Twilio-Email-Event-Webhook-Signature";
const TS: &str = "X-Twilio-Email-Event-Webhook-Timestamp";
/// A DER ECDSA P-256 signature is at most 72 bytes: 96 base64 characters.
const MAX_SIG_B64: usize = 96;

/// The DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, and the
/// BIT STRING header of a 65-byte uncompressed point).
const SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
    0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

struct SendGrid;

/// The uncompressed point of a base64 P-256 SubjectPublicKeyInfo.
fn public_key(index: usize, secret: &str) -> Result<[u8; 65], KeyError> {
    let bad = KeyError::BadSecret {
        index,
        reason: "expected SendGrid's verification key: base64 of a P-256 public key (SubjectPublicKeyInfo)",
    };
    let der = base64::engine::general_purpose::STANDARD
        .decode(secret.trim())
        .map_err(|_| bad.clone())?;
    let point = der.strip_prefix(&SPKI_PREFIX[..]).ok_or(bad.clone())?;
    let point: [u8; 65] = point.try_into().map_err(|_| bad.clone())?;
    if point[0] != 0x04 {
        return Err(bad);
    }
    Ok(point)
}

fn key_pair(pkcs8_b64: &str) -> Result<signature::EcdsaKeyPair, KeyError> {
    let bad = KeyError::BadSecret {
        index: 0,
        reason: "expected a base64 PKCS#8 P-256 private key",
    };
    let der = base64::engine::general_purpose::STANDARD
        .decode(pkcs8_b64.trim())
        .map_err(|_| bad.clone())?;
    signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &der,
        &ring::rand::SystemRandom::new(),
    )
    .map_err(|_| bad)
}

impl ProviderSpec for SendGrid {
    fn name(&self) -> &'static str {
        "sendgrid"
    }

    fn about(&self) -> About {
        About {
            headers: &[SIG, TS],
            signed: "base64 DER ECDSA P-256/SHA-256(timestamp + body)",
            secret: "the Event Webhook verification key (base64 public key)",
            handshakes: &[],
            docs: "https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn secret_kind(&self) -> SecretKind {
        SecretKind::Examples
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::EcdsaP256(
            secrets
                .iter()
                .enumerate()
                .map(|(index, s)| public_key(index, s))
                .collect::<Result<_, _>>()?,
        ))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let sig_b64 = header_str(req.headers, SIG)?;
        let ts_text = header_str(req.headers, TS)?;
        let timestamp = parse_timestamp(ts_text)?;
        if sig_b64.len() > MAX_SIG_B64 {
            return Err(VerifyError::Malformed);
        }
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig_b64)
            .map_err(|_| VerifyError::Malformed)?;
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        // ECDSA verifies one contiguous message: this scheme copies the body.
        let mut message = Vec::with_capacity(ts_text.len() + req.body.len());
        message.extend_from_slice(ts_text.as_bytes());
        message.extend_from_slice(req.body);
        let matched = v.ecdsa_p256_keys().iter().any(|point| {
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point)
                .verify(&message, &sig)
                .is_ok()
        });
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(SIG)
    }

    /// Signs with a base64 PKCS#8 P-256 private key (the config takes its public key:
    /// see [`ProviderSpec::config_secret`]).
    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let pair = key_pair(secret)?;
        let ts = now.to_string();
        let mut message = ts.as_bytes().to_vec();
        message.extend_from_slice(body);
        let sig = pair
            .sign(&ring::rand::SystemRandom::new(), &message)
            .map_err(|_| KeyError::BadSecret {
                index: 0,
                reason: "the private key could not sign",
            })?;
        Ok(vec![
            (
                SIG.to_string(),
                base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
            ),
            (TS.to_string(), ts),
        ])
    }

    fn config_secret(&self, pkcs8_b64: &str) -> Result<String, KeyError> {
        let pair = key_pair(pkcs8_b64)?;
        let mut spki = SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        Ok(base64::engine::general_purpose::STANDARD.encode(spki))
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::BodyHash, Some(FieldSpec::pointer("/0/event")))
    }

    fn example_secrets(&self) -> [&'static str; 2] {
        [
            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgRYnE8ZkNN9i4LLnZ4LY+g7F0VshRoKBGrtqt1AtL1DGhRANCAAS5/hVBGkK6uZRlqvUII4eAtSzjUAvi/JO6hV6nL0Xjn7rBcOb3bUVvwsxCeoaZPsJTzkFnmGHEQMd5LAO9zMPs",
            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgWvFCF9eFc/Xpj29OJM9jTgF+XF/fTvAktdW32vwJRZahRANCAAQMauIXQO3AMpeW77HafP66YJT4OC1OVwQAn8epBkeKxGj3HBLswcyGfesOYUvScZxSMbBhqWSENRube6ywOQ6l",
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::{KeyError, Options, Verifier, VerifyError};

    const PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
    const SIGNATURE: &str = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
    const PAYLOAD: &[u8] = br#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;
    const TIMESTAMP: i64 = 1_588_788_367;

    fn headers(sig: &str, ts: &str) -> http::HeaderMap {
        header_map(&[
            ("X-Twilio-Email-Event-Webhook-Signature".into(), sig.into()),
            ("X-Twilio-Email-Event-Webhook-Timestamp".into(), ts.into()),
        ])
    }

    /// The vector of SendGrid's SDK tests (sendgrid/sendgrid-java `EventWebhookTest`; the
    /// same in the Python, PHP, Ruby, Go and Node SDKs), with their bad key, bad payload
    /// and bad signature cases.
    #[test]
    fn sendgrid_sdk_vector() {
        let v = verifier(super::PROVIDER, &[PUBLIC_KEY]);
        let ts = TIMESTAMP.to_string();
        assert_eq!(v.verify(&headers(SIGNATURE, &ts), PAYLOAD, TIMESTAMP), Ok(()));
        assert_eq!(
            v.verify(&headers(SIGNATURE, &ts), b"payload", TIMESTAMP),
            Err(VerifyError::Invalid)
        );
        let failing_sig = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=";
        assert_eq!(
            v.verify(&headers(failing_sig, &ts), PAYLOAD, TIMESTAMP),
            Err(VerifyError::Invalid)
        );
        let bad_key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==";
        let other = verifier(super::PROVIDER, &[bad_key]);
        assert_eq!(
            other.verify(&headers(SIGNATURE, &ts), PAYLOAD, TIMESTAMP),
            Err(VerifyError::Invalid)
        );
        // The SDKs' invalid case: another timestamp under the same signature.
        assert_eq!(
            v.verify(&headers(SIGNATURE, "1588788368"), PAYLOAD, 1_588_788_368),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn keys_that_are_not_p256_public_keys_are_config_errors() {
        for bad in ["", "not base64!", "MFkw", &PUBLIC_KEY.replace("MFkwEw", "MFkwEx")] {
            let e = Verifier::with_options(super::PROVIDER, &strings(&[bad]), Options::default());
            assert!(
                matches!(e.err(), Some(KeyError::EmptySecret { .. } | KeyError::BadSecret { .. })),
                "{bad}"
            );
        }
    }
}
