//! Standard Webhooks (and Svix, which it grew out of).
//!
//! Per the Standard Webhooks specification and Svix's "Verifying webhooks
//! manually": headers `webhook-id`, `webhook-timestamp`, `webhook-signature`
//! (or the same with the `svix-` prefix); signed content
//! `"{id}.{timestamp}.{body}"`; HMAC-SHA256, standard base64; the signature
//! header is a space-separated list of `<version>,<base64>` entries of which
//! only `v1` is symmetric HMAC (`v1a` is the asymmetric Ed25519 variant, which
//! this scheme does not handle, so it is ignored). The secret is
//! `whsec_<base64 key>`; the HMAC key is the decoded bytes, not the text.
//!
//! Header family: if any `webhook-*` header is present the `webhook-*` trio is
//! used, otherwise the `svix-*` trio. Never mixing the two means a request
//! cannot borrow an id from one family and a signature from the other.
//!
//! Parsing rules: an entry without a comma, or a `v1` entry that is not the
//! base64 of 32 bytes → `Malformed`; no `v1` entry at all → `Invalid` (same
//! reasoning as Stripe: nothing we accept was offered).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::HeaderMap;
use ring::{digest, hmac};

use super::{KeyError, VerifyError};

/// Secrets are typed or pasted by people and some generators drop base64
/// padding; being lenient about `=` here costs nothing, because it only
/// affects how the configured key is read, never what a request must carry.
const SECRET_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const SECRET_PREFIX: &str = "whsec_";

/// Builds the HMAC key from a `whsec_<base64>` secret (or bare base64).
pub(super) fn key(index: usize, secret: &str) -> Result<hmac::Key, KeyError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let bytes = SECRET_ENGINE
        .decode(encoded)
        .map_err(|_| KeyError::BadSecret {
            index,
            reason: "expected whsec_ followed by base64 (or bare base64)",
        })?;
    if bytes.is_empty() {
        return Err(KeyError::BadSecret {
            index,
            reason: "the base64 key is empty",
        });
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

struct Names {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

const WEBHOOK: Names = Names {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};

const SVIX: Names = Names {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};

fn names(headers: &HeaderMap) -> &'static Names {
    let webhook = [WEBHOOK.id, WEBHOOK.timestamp, WEBHOOK.signature];
    if webhook.iter().any(|name| headers.contains_key(*name)) {
        &WEBHOOK
    } else {
        &SVIX
    }
}

/// The base64 parts of the `v1` entries. Callers validate the list first with
/// [`check_entries`], so this only has to skip what that already judged.
fn v1_entries(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .map(|(_, sig)| sig)
}

/// Validates the whole signature list; returns whether it has any `v1`.
fn check_entries(value: &str) -> Result<bool, VerifyError> {
    let mut any_v1 = false;
    for entry in value.split(' ').filter(|e| !e.is_empty()) {
        let (version, sig) = entry.split_once(',').ok_or(VerifyError::Malformed)?;
        if version == "v1" {
            let mut buf = [0u8; super::MAX_SIG_LEN + 8];
            super::decode_b64_exact(sig, 32, &mut buf)?;
            any_v1 = true;
        }
    }
    Ok(any_v1)
}

/// Checks the timestamp, then every `v1` entry against every key.
pub(super) fn verify(
    keys: &[hmac::Key],
    tolerance_secs: u64,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let names = names(headers);
    let id = super::header_str(headers, names.id)?;
    let ts_text = super::header_str(headers, names.timestamp)?;
    let sig_value = super::header_str(headers, names.signature)?;
    let timestamp = super::parse_timestamp(ts_text)?;
    let any_v1 = check_entries(sig_value)?;
    super::check_tolerance(timestamp, now, tolerance_secs)?;
    if !any_v1 {
        return Err(VerifyError::Invalid);
    }
    for key in keys {
        let tag = super::hmac_parts(key, &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body]);
        for sig_b64 in v1_entries(sig_value) {
            let mut buf = [0u8; super::MAX_SIG_LEN + 8];
            if let Ok(sig) = super::decode_b64_exact(sig_b64, 32, &mut buf) {
                if super::ct_eq(tag.as_ref(), sig) {
                    return Ok(());
                }
            }
        }
    }
    Err(VerifyError::Invalid)
}

/// The headers a Standard Webhooks sender would emit for `body` at `now`.
///
/// The message id is derived from `now` and the body (`msg_` + 24 hex digits
/// of their SHA-256), so repeated runs print the same headers and distinct
/// payloads get distinct ids.
pub(super) fn sign(key: &hmac::Key, body: &[u8], now: i64) -> Vec<(String, String)> {
    let ts = now.to_string();
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(ts.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let digest = ctx.finish();
    let id = format!(
        "msg_{}",
        hex::encode(
            digest
                .as_ref()
                .iter()
                .take(12)
                .copied()
                .collect::<Vec<u8>>()
        )
    );
    let tag = super::hmac_parts(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    vec![
        ("webhook-id".to_string(), id),
        ("webhook-timestamp".to_string(), ts),
        ("webhook-signature".to_string(), format!("v1,{sig}")),
    ]
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::*;
    use super::super::{sign, KeyError, Provider, Verifier, VerifyError};

    const P: Provider = Provider::StandardWebhooks;
    // base64 of b"secret-key-for-hookgate-tests", with the whsec_ prefix.
    const SECRET: &str = "whsec_c2VjcmV0LWtleS1mb3ItaG9va2dhdGUtdGVzdHM=";
    const SIG: &str = "webhook-signature";
    const TS: &str = "webhook-timestamp";
    const ID: &str = "webhook-id";

    fn signed_at(secret: &str, t: i64) -> Vec<(String, String)> {
        sign(P, secret, BODY, t, None).unwrap()
    }

    fn signed() -> Vec<(String, String)> {
        signed_at(SECRET, NOW)
    }

    /// The same request with the `svix-` header names.
    fn as_svix(pairs: &[(String, String)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.replacen("webhook-", "svix-", 1), v.clone()))
            .collect()
    }

    // The example used by the Standard Webhooks spec's reference libraries
    // and by Svix's docs ("Verifying webhooks manually" / library examples):
    // secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id
    // msg_p5jXN8AQM9LWM0D4loKWxJek, timestamp 1614265330, body
    // {"test": 2432232314}.
    const DOC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const DOC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const DOC_TS: i64 = 1_614_265_330;
    const DOC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const DOC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn doc_headers(prefix: &str) -> http::HeaderMap {
        header_map(&[
            (format!("{prefix}-id"), DOC_ID.into()),
            (format!("{prefix}-timestamp"), DOC_TS.to_string()),
            (format!("{prefix}-signature"), DOC_SIG.into()),
        ])
    }

    #[test]
    fn standard_webhooks_documented_vector() {
        for secret in [DOC_SECRET, &DOC_SECRET[6..]] {
            let v = verifier(P, &[secret]);
            for prefix in ["webhook", "svix"] {
                assert_eq!(
                    v.verify(&doc_headers(prefix), DOC_BODY, DOC_TS),
                    Ok(()),
                    "{prefix} {secret}"
                );
            }
            assert_eq!(
                v.verify(&doc_headers("webhook"), b"{\"test\": 2432232315}", DOC_TS),
                Err(VerifyError::Invalid)
            );
        }
    }

    /// The base64 secret is decoded before use: keying the HMAC with the
    /// secret's text instead would not reproduce the documented signature.
    #[test]
    fn secret_text_is_not_the_key() {
        let v = verifier(P, &["whsec_TWZLUTlyOEdLWXFyVHdqVVBEOElMUFpJbzJMYUxhU3c="]);
        assert_eq!(
            v.verify(&doc_headers("webhook"), DOC_BODY, DOC_TS),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn bad_secrets_fail_closed() {
        for (secret, index) in [("whsec_not*base64", 1), ("whsec_", 1), ("%%%", 1)] {
            let e = Verifier::new(
                P,
                &strings(&[SECRET, secret]),
                Duration::from_secs(300),
                None,
            )
            .err()
            .unwrap();
            assert!(
                matches!(e, KeyError::BadSecret { index: i, .. } if i == index),
                "{secret}: {e:?}"
            );
        }
        assert!(matches!(
            sign(P, "whsec_***", BODY, NOW, None),
            Err(KeyError::BadSecret { index: 0, .. })
        ));
    }

    #[test]
    fn round_trip() {
        let v = verifier(P, &[SECRET]);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
        assert_eq!(
            v.verify(&header_map(&as_svix(&signed())), BODY, NOW),
            Ok(())
        );
        assert!(value_of(&signed(), ID).starts_with("msg_"));
    }

    #[test]
    fn flipped_body_bit_fails() {
        let v = verifier(P, &[SECRET]);
        let r = v.verify(&header_map(&signed()), &flip_bit(BODY), NOW);
        assert_eq!(r, Err(VerifyError::Invalid));
    }

    #[test]
    fn flipped_signature_char_fails() {
        let v = verifier(P, &[SECRET]);
        let sig = value_of(&signed(), SIG);
        for index in [3, 20, 40] {
            let bad = with(&signed(), SIG, &flip_char(&sig, index));
            assert_eq!(
                v.verify(&bad, BODY, NOW),
                Err(VerifyError::Invalid),
                "{index}"
            );
        }
    }

    #[test]
    fn changed_id_or_timestamp_fails() {
        let v = verifier(P, &[SECRET]);
        let r = v.verify(&with(&signed(), ID, "msg_other"), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Invalid));
        let r = v.verify(&with(&signed(), TS, &(NOW + 1).to_string()), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Invalid));
    }

    #[test]
    fn wrong_secret_fails() {
        let v = verifier(P, &["whsec_b3RoZXItc2VjcmV0LWtleS1ieXRlcw=="]);
        assert_eq!(
            v.verify(&header_map(&signed()), BODY, NOW),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn second_secret_matches_during_rotation() {
        let v = verifier(P, &["whsec_bmV3LWtleQ==", SECRET]);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
    }

    /// A list with other versions and non-matching v1 entries still passes
    /// when one v1 matches; a list with only `v1a` entries does not.
    #[test]
    fn any_v1_entry_may_match_and_other_versions_are_ignored() {
        let v = verifier(P, &[SECRET]);
        let good = value_of(&signed(), SIG);
        let other = value_of(&signed_at("whsec_bmV3LWtleQ==", NOW), SIG);
        let good_b64 = &good[3..];
        let list = format!("v1a,{good_b64} {other}  {good}");
        assert_eq!(v.verify(&with(&signed(), SIG, &list), BODY, NOW), Ok(()));
        let only_v1a = format!("v1a,{good_b64} v2,{good_b64}");
        assert_eq!(
            v.verify(&with(&signed(), SIG, &only_v1a), BODY, NOW),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn missing_headers() {
        let v = verifier(P, &[SECRET]);
        for name in [ID, TS, SIG] {
            let r = v.verify(&without(&signed(), name), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Missing), "{name}");
        }
        // Families are not mixed: webhook-id plus svix-* is incomplete.
        let mut mixed = as_svix(&signed());
        mixed.retain(|(n, _)| n != "svix-id");
        mixed.push((ID.into(), value_of(&signed(), ID)));
        assert_eq!(
            v.verify(&header_map(&mixed), BODY, NOW),
            Err(VerifyError::Missing)
        );
        assert_eq!(
            v.verify(&http::HeaderMap::new(), BODY, NOW),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn malformed_headers() {
        let v = verifier(P, &[SECRET]);
        let good = value_of(&signed(), SIG);
        let b64 = &good[3..];
        for bad in [
            b64.to_string(),                             // no version
            format!("v1;{b64}"),                         // wrong separator
            format!("v1,{}", &b64[..40]),                // truncated
            format!("v1,{}", b64.trim_end_matches('=')), // unpadded
            format!("v1,{}", hex::encode([1u8; 32])),    // hex, decodes to 48 bytes
            format!("v1,{b64} v1,***"),                  // one good, one broken
            "v1,".to_string(),
        ] {
            let r = v.verify(&with(&signed(), SIG, &bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        for bad in ["yesterday", "-1", "1614265330.0"] {
            let r = v.verify(&with(&signed(), TS, bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        for name in [ID, TS, SIG] {
            let raw = with_raw(&signed(), name, b"\x80abc");
            assert_eq!(v.verify(&raw, BODY, NOW), Err(VerifyError::Malformed));
            let twice = duplicated(&signed(), name);
            assert_eq!(v.verify(&twice, BODY, NOW), Err(VerifyError::Malformed));
        }
    }

    #[test]
    fn timestamp_tolerance() {
        let v = verifier(P, &[SECRET]);
        for (t, expected) in [
            (NOW - TOL, Ok(())),
            (NOW + TOL, Ok(())),
            (NOW - TOL - 1, Err(VerifyError::Expired)),
            (NOW + TOL + 1, Err(VerifyError::Expired)),
        ] {
            let r = v.verify(&header_map(&signed_at(SECRET, t)), BODY, NOW);
            assert_eq!(r, expected, "t = now {:+}", t - NOW);
        }
        // The documented vector is years old: replaying it today is refused.
        let v = verifier(P, &[DOC_SECRET]);
        assert_eq!(
            v.verify(&doc_headers("svix"), DOC_BODY, NOW),
            Err(VerifyError::Expired)
        );
    }
}
