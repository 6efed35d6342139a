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
//! Parsing rules (the spec's multi-signature form): the request is accepted when one
//! `v1` entry matches; entries of other versions, entries without a comma and `v1`
//! entries that are not the base64 of 32 bytes are skipped. When `v1` entries were sent
//! and none decodes → `Malformed`; more than 16 entries → `Malformed`; no `v1` entry at
//! all → `Invalid` (same reasoning as Stripe: nothing we accept was offered).
//!
//! The functions here are shared with the senders that use this scheme under their own
//! name (Clerk, Resend, OpenAI…), each a file of its own.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use http::{HeaderMap, HeaderName};
use ring::{digest, hmac};

use crate::extract::FieldSpec;
use crate::verify::{
    b64_entry, check_tolerance, header_values, hmac_parts, parse_timestamp, Sigs, About, Defaults, KeyError, Keys, Options, Provider, ProviderSpec, Request, SecretKind,
    Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&StandardWebhooks);

struct StandardWebhooks;

impl ProviderSpec for StandardWebhooks {
    fn name(&self) -> &'static str {
        "standard-webhooks"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["svix"]
    }

    fn about(&self) -> About {
        ABOUT
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn secret_kind(&self) -> SecretKind {
        SecretKind::WhsecBase64
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        keys(secrets)
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        verify(v, req)
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        signature_present(headers)
    }

    fn sign(&self, secret: &str, body: &[u8], now: i64, _: &Options) -> Result<Vec<(String, String)>, KeyError> {
        sign(secret, body, now)
    }

    fn defaults(&self) -> Defaults {
        defaults()
    }

    fn example_secrets(&self) -> [&'static str; 2] {
        EXAMPLE_SECRETS
    }
}

/// A sender that uses Standard Webhooks under its own name (Clerk, Resend, OpenAI…):
/// the same verification, its own config name, docs and label on events.
pub(crate) struct Named {
    /// Config name.
    pub name: &'static str,
    /// Where the sender documents its webhooks.
    pub docs: &'static str,
    /// What the sender calls the secret.
    pub secret: &'static str,
}

impl ProviderSpec for Named {
    fn name(&self) -> &'static str {
        self.name
    }

    fn about(&self) -> About {
        About {
            docs: self.docs,
            secret: self.secret,
            signed: "Standard Webhooks: `v1,<base64>` HMAC-SHA256(id + \".\" + ts + \".\" + body)",
            ..ABOUT
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn secret_kind(&self) -> SecretKind {
        SecretKind::WhsecBase64
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        keys(secrets)
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        verify(v, req)
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        signature_present(headers)
    }

    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        _: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        sign(secret, body, now)
    }

    fn defaults(&self) -> Defaults {
        defaults()
    }

    fn example_secrets(&self) -> [&'static str; 2] {
        EXAMPLE_SECRETS
    }
}

/// The description of the scheme (senders using it under their own name adjust `docs`).
pub(crate) const ABOUT: About = About {
    headers: &["webhook-signature", "webhook-id", "webhook-timestamp"],
    signed: "`v1,<base64>` HMAC-SHA256(id + \".\" + ts + \".\" + body), any `v1` may match; `svix-*` headers too",
    secret: "`whsec_<base64 key>` (the decoded bytes are the key)",
    handshakes: &[],
    docs: "https://www.standardwebhooks.com/",
};

/// Example secrets for the shared tests (`whsec_` + base64).
pub(crate) const EXAMPLE_SECRETS: [&str; 2] = [
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0",
];

/// Secrets are typed or pasted by people and some generators drop base64
/// padding; being lenient about `=` here costs nothing, because it only
/// affects how the configured key is read, never what a request must carry.
const SECRET_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const SECRET_PREFIX: &str = "whsec_";

/// Builds the HMAC key from a `whsec_<base64>` secret (or bare base64).
fn key(index: usize, secret: &str) -> Result<hmac::Key, KeyError> {
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

/// The HMAC keys of `whsec_` secrets.
pub(crate) fn keys(secrets: &[String]) -> Result<Keys, KeyError> {
    Ok(Keys::Hmac(
        secrets
            .iter()
            .enumerate()
            .map(|(index, s)| key(index, s))
            .collect::<Result<_, _>>()?,
    ))
}

struct Names {
    id: &'static HeaderName,
    timestamp: &'static HeaderName,
    signature: &'static HeaderName,
}

const WEBHOOK: Names = Names {
    id: header_name!("webhook-id"),
    timestamp: header_name!("webhook-timestamp"),
    signature: header_name!("webhook-signature"),
};

const SVIX: Names = Names {
    id: header_name!("svix-id"),
    timestamp: header_name!("svix-timestamp"),
    signature: header_name!("svix-signature"),
};

/// The signature, id and timestamp headers' values, of the `webhook-*` family when any of
/// its three headers is present, else of the `svix-*` family: one pass over the headers
/// for the first, a second only for Svix senders (see `header_values`).
fn family(headers: &HeaderMap) -> [Result<&[u8], VerifyError>; 3] {
    let webhook = header_values(headers, [WEBHOOK.signature, WEBHOOK.id, WEBHOOK.timestamp]);
    if webhook.iter().any(|r| *r != Err(VerifyError::Missing)) {
        webhook
    } else {
        header_values(headers, [SVIX.signature, SVIX.id, SVIX.timestamp])
    }
}

/// Every entry of the header, as the base64 part of a `v1` entry or `None` for any other.
/// (`v1,` opens the entry exactly when the text before its first comma is `v1`.)
fn v1_entries(value: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    value
        .split(|b| *b == b' ')
        .filter(|e| !e.is_empty())
        .map(|entry| entry.strip_prefix(b"v1,"))
}

/// Whether either family's signature header is there.
pub(crate) fn signature_present(headers: &HeaderMap) -> bool {
    headers.contains_key(WEBHOOK.signature) || headers.contains_key(SVIX.signature)
}

/// Checks the timestamp, then every `v1` entry against every key.
pub(crate) fn verify(v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
    let [sig_value, id, ts_text] = family(req.headers);
    let (id, ts_text, sig_value) = (id?, ts_text?, sig_value?);
    let timestamp = parse_timestamp(ts_text)?;
    let mut sigs = Sigs::new();
    sigs.read(v1_entries(sig_value), b64_entry(32))?;
    check_tolerance(timestamp, req.now, v.tolerance_secs())?;
    let tags = v.hmac_keys().iter().map(|key| {
        hmac_parts(key, &[id, b".", ts_text, b".", req.body])
    });
    sigs.matches(tags)
}

/// The headers a Standard Webhooks sender would emit for `body` at `now`.
///
/// The message id is derived from `now` and the body (`msg_` + 24 hex digits
/// of their SHA-256), so repeated runs print the same headers and distinct
/// payloads get distinct ids.
pub(crate) fn sign(secret: &str, body: &[u8], now: i64) -> Result<Vec<(String, String)>, KeyError> {
    let key = key(0, secret)?;
    let ts = now.to_string();
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(ts.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let digest = ctx.finish();
    let id = format!(
        "msg_{}",
        hex::encode(digest.as_ref().iter().take(12).copied().collect::<Vec<u8>>())
    );
    let tag = hmac_parts(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    Ok(vec![
        ("webhook-id".to_string(), id),
        ("webhook-timestamp".to_string(), ts),
        ("webhook-signature".to_string(), format!("v1,{sig}")),
    ])
}

/// Delivery id from `webhook-id` (or `svix-id`), event type from the body's `type`.
pub(crate) fn defaults() -> Defaults {
    Defaults::new(
        FieldSpec::Any(vec![FieldSpec::header("webhook-id"), FieldSpec::header("svix-id")]),
        Some(FieldSpec::pointer("/type")),
    )
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

    use crate::verify::test_support::*;
    use crate::verify::{sign, KeyError, Provider, Verifier, VerifyError};

    const P: Provider = super::PROVIDER;
    // base64 of b"secret-key-for-hookgate-tests", with the whsec_ prefix.
    const SECRET: &str = "whsec_c2VjcmV0LWtleS1mb3ItaG9va2dhdGUtdGVzdHM=";
    const SIG: &str = "webhook-signature";
    const TS: &str = "webhook-timestamp";
    const ID: &str = "webhook-id";

    /// The byte-level entry split picks what the `str` one it replaced picked: the text
    /// after `v1,` exactly when the text before the first comma is `v1`.
    #[test]
    fn v1_entries_are_the_entries_whose_version_is_v1() {
        for value in [
            "v1,abc", "v1,", "v1", "v1a,abc", "v2,x v1,y", "  v1,a  v1,b,c ", ",v1,a", "V1,a",
            "v1,a,b", "v10,a", "v,1", "",
        ] {
            let ours: Vec<Option<&[u8]>> = super::v1_entries(value.as_bytes()).collect();
            let reference: Vec<Option<&[u8]>> = value
                .split(' ')
                .filter(|e| !e.is_empty())
                .map(|e| {
                    e.split_once(',')
                        .filter(|(version, _)| *version == "v1")
                        .map(|(_, sig)| sig.as_bytes())
                })
                .collect();
            assert_eq!(ours, reference, "{value:?}");
        }
    }

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
    fn round_trip_both_header_families() {
        let v = verifier(P, &[SECRET]);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
        assert_eq!(
            v.verify(&header_map(&as_svix(&signed())), BODY, NOW),
            Ok(())
        );
        assert!(value_of(&signed(), ID).starts_with("msg_"));
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

    /// The spec's multi-signature form: entries this verifier cannot read (another
    /// version, a broken or foreign encoding) beside the one that matches are skipped, in
    /// any position; a list longer than 16 entries is refused before any HMAC.
    #[test]
    fn undecodable_entries_beside_a_matching_one_are_skipped() {
        let v = verifier(P, &[SECRET]);
        let good = value_of(&signed(), SIG);
        let b64 = &good[3..];
        for list in [
            format!("{good} v1,***"),
            format!("v1,*** {good}"),
            format!("v1,{} {good} v1a,{b64}", &b64[..40]),
            format!("{b64} {good}"),
            format!("v2,abc v1,{} {good}", hex::encode([1u8; 32])),
        ] {
            let r = v.verify(&with(&signed(), SIG, &list), BODY, NOW);
            assert_eq!(r, Ok(()), "{list}");
        }
        let at_cap = format!("{}{good}", "v1a,x ".repeat(15));
        assert_eq!(v.verify(&with(&signed(), SIG, &at_cap), BODY, NOW), Ok(()));
        let over_cap = format!("{}{good}", "v1a,x ".repeat(16));
        assert_eq!(
            v.verify(&with(&signed(), SIG, &over_cap), BODY, NOW),
            Err(VerifyError::Malformed)
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
        // Only v1 entries that do not decode: nothing readable was offered.
        for bad in [
            format!("v1,{}", &b64[..40]),                // truncated
            format!("v1,{}", b64.trim_end_matches('=')), // unpadded
            format!("v1,{}", hex::encode([1u8; 32])),    // hex, decodes to 48 bytes
            format!("v1,*** v1,{}", &b64[..40]),         // two broken ones
            "v1,".to_string(),
        ] {
            let r = v.verify(&with(&signed(), SIG, &bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        // No v1 entry at all (entries without a version are not v1 ones).
        for bad in [
            b64.to_string(),     // no version
            format!("v1;{b64}"), // wrong separator
        ] {
            let r = v.verify(&with(&signed(), SIG, &bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Invalid), "{bad}");
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
