//! Discord interactions: Ed25519 over `timestamp || body`.
//!
//! Per Discord's "Receiving and responding to interactions" (security and
//! authorization): `X-Signature-Ed25519` is the hex signature,
//! `X-Signature-Timestamp` the timestamp, and the message is the timestamp
//! text immediately followed by the raw body. The configured secret is the
//! application's public key (hex, 32 bytes), which is not secret at all; it
//! still goes through the same redaction as every other key.
//!
//! Discord's timestamp is unix seconds, so the tolerance applies to it too,
//! which Discord's own samples skip but which costs nothing and bounds replay.
//!
//! For `sign` the secret is a 32-byte Ed25519 private seed in hex instead,
//! because only the holder of the private key can produce a signature;
//! [`discord_public_key_hex`] tells the operator which public key to configure.
//!
//! Verification uses ed25519-dalek rather than ring: on the bench machine
//! ring's portable C verify took 86 µs per 1 KB request and dalek's AVX2
//! backend (chosen at run time, portable code elsewhere) 43 µs in the same
//! session (`verify/discord/1KB`, bench/RESULTS.md). The acceptance rule is
//! ring's, RFC 8032's cofactorless check with `S` required canonical (no
//! `S + L` malleation); in addition the key is decoded once at start-up, so
//! a value that is not a curve point, or is a point of small order, is a
//! config error. Signing (only `hookgate sign`, for tests and operators)
//! stays on ring.

use http::HeaderMap;
use ring::signature::{self, KeyPair as _};

use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, decode_hex_exact, header_str, parse_timestamp, About, Answer, Defaults, Doc,
    Ed25519PublicKey, KeyError, Keys, Options, Provider, ProviderSpec, Request, SecretKind, Verifier,
    VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&Discord);

static SIG_HEADER: http::HeaderName = http::HeaderName::from_static("x-signature-ed25519");
static TS_HEADER: http::HeaderName = http::HeaderName::from_static("x-signature-timestamp");

struct Discord;

impl ProviderSpec for Discord {
    fn name(&self) -> &'static str {
        "discord"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-Signature-Ed25519", "X-Signature-Timestamp"],
            signed: "hex Ed25519(timestamp + body)",
            secret: "the application's public key (64 hex digits)",
            handshakes: &["PING (type 1) answered with PONG"],
            docs: "https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-validating-security-request-headers",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn secret_kind(&self) -> SecretKind {
        SecretKind::Ed25519Seed
    }

    fn keys(&self, secrets: &[String], _: &Options) -> Result<Keys, KeyError> {
        Ok(Keys::Ed25519(
            secrets
                .iter()
                .enumerate()
                .map(|(index, s)| public_key(index, s))
                .collect::<Result<_, _>>()?,
        ))
    }

    /// Checks the timestamp, then the signature against every public key.
    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let sig_hex = header_str(req.headers, &SIG_HEADER)?;
        let ts_text = header_str(req.headers, &TS_HEADER)?;
        let timestamp = parse_timestamp(ts_text)?;
        let mut sig = [0u8; 64];
        decode_hex_exact(sig_hex, &mut sig)?;
        check_tolerance(timestamp, req.now, v.tolerance_secs())?;
        check_signature(v.ed25519_keys(), ts_text.as_bytes(), req.body, &sig)
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(&SIG_HEADER)
    }

    /// The headers Discord would send for `body` at `now`, signed with the private seed
    /// `seed_hex`.
    fn sign(&self, seed_hex: &str, body: &[u8], now: i64, _: &Options) -> Result<Vec<(String, String)>, KeyError> {
        let pair = key_pair(seed_hex)?;
        let ts = now.to_string();
        let mut message = Vec::with_capacity(ts.len() + body.len());
        message.extend_from_slice(ts.as_bytes());
        message.extend_from_slice(body);
        let sig = pair.sign(&message);
        Ok(vec![
            ("X-Signature-Ed25519".to_string(), hex::encode(sig.as_ref())),
            ("X-Signature-Timestamp".to_string(), ts),
        ])
    }

    fn config_secret(&self, seed_hex: &str) -> Result<String, KeyError> {
        discord_public_key_hex(seed_hex)
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::pointer("/id"), Some(FieldSpec::pointer("/type")))
    }

    fn has_body_handshake(&self) -> bool {
        true
    }

    /// An interaction of type 1 (PING) is answered with type 1 (PONG).
    fn body_handshake(
        &self,
        _: Option<&Verifier>,
        _: &HeaderMap,
        _: &[u8],
        doc: &Doc<'_, '_>,
    ) -> Option<Answer> {
        (doc.i64_at(&["type"]) == Some(1)).then(|| Answer::json("{\"type\":1}".into()))
    }

    fn example_secrets(&self) -> [&'static str; 2] {
        [
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        ]
    }
}

/// Decodes a configured application public key (64 hex digits).
fn public_key(index: usize, secret: &str) -> Result<Ed25519PublicKey, KeyError> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(secret, &mut bytes).map_err(|_| KeyError::BadSecret {
        index,
        reason: "expected the application's Ed25519 public key as 64 hex digits",
    })?;
    match ed25519_dalek::VerifyingKey::from_bytes(&bytes) {
        Ok(key) if !key.is_weak() => Ok(key),
        _ => Err(KeyError::BadSecret {
            index,
            reason: "not a usable Ed25519 public key: off the curve or of small order",
        }),
    }
}

fn key_pair(seed_hex: &str) -> Result<signature::Ed25519KeyPair, KeyError> {
    if seed_hex.is_empty() {
        return Err(KeyError::EmptySecret { index: 0 });
    }
    let mut seed = [0u8; 32];
    let bad = KeyError::BadSecret {
        index: 0,
        reason: "expected a 32-byte Ed25519 private seed as 64 hex digits",
    };
    hex::decode_to_slice(seed_hex, &mut seed).map_err(|_| bad.clone())?;
    signature::Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| bad)
}

/// The public key (hex) matching a private seed (hex), so `hookgate sign`
/// can tell the operator what to put in the Discord verifier's secrets.
pub fn discord_public_key_hex(seed_hex: &str) -> Result<String, KeyError> {
    Ok(hex::encode(key_pair(seed_hex)?.public_key().as_ref()))
}

/// The Ed25519 check proper, split out so it can be tested against RFC 8032
/// vectors whose messages are not valid Discord timestamps.
///
/// The signed message is `timestamp + body`; ed25519-dalek's stream verifier (feature
/// `hazmat`) hashes it in two pieces, so the body is not copied into one message per
/// request. It is `verify`'s computation (the signature's `s` checked canonical, then
/// `R` recomputed from SHA-512(R, A, message) and compared), fed in pieces. (ring's
/// `UnparsedPublicKey::verify` takes one slice and could not avoid the copy.)
fn check_signature(
    keys: &[Ed25519PublicKey],
    timestamp: &[u8],
    body: &[u8],
    sig: &[u8; 64],
) -> Result<(), VerifyError> {
    let sig = ed25519_dalek::Signature::from_bytes(sig);
    let verifies = |key: &Ed25519PublicKey| {
        key.verify_stream(&sig).is_ok_and(|mut stream| {
            stream.update(timestamp);
            stream.update(body);
            stream.finalize_and_verify().is_ok()
        })
    };
    if keys.iter().any(verifies) {
        Ok(())
    } else {
        Err(VerifyError::Invalid)
    }
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
    use crate::verify::{discord_public_key_hex, sign, KeyError, Provider, Verifier, VerifyError};

    const P: Provider = super::PROVIDER;
    const SEED: &str = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988";
    const SIG: &str = "x-signature-ed25519";
    const TS: &str = "x-signature-timestamp";

    // RFC 8032 section 7.1, TEST 1 (empty message).
    const RFC_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC_PUB: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC_SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";

    fn public(seed: &str) -> String {
        discord_public_key_hex(seed).unwrap()
    }

    fn discord(seeds: &[&str]) -> Verifier {
        let keys: Vec<String> = seeds.iter().map(|s| public(s)).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        verifier(P, &keys)
    }

    fn signed_at(seed: &str, t: i64) -> Vec<(String, String)> {
        sign(P, seed, BODY, t, None).unwrap()
    }

    fn signed() -> Vec<(String, String)> {
        signed_at(SEED, NOW)
    }

    /// Discord publishes no vector; RFC 8032's pins both the seed → public
    /// key derivation and the verification primitive with its key handling.
    #[test]
    fn rfc8032_vector() {
        assert_eq!(public(RFC_SEED), RFC_PUB);
        let key = super::public_key(0, RFC_PUB).unwrap();
        let mut sig = [0u8; 64];
        hex::decode_to_slice(RFC_SIG, &mut sig).unwrap();
        assert_eq!(super::check_signature(&[key], b"", b"", &sig), Ok(()));
        let key = super::public_key(0, RFC_PUB).unwrap();
        assert_eq!(
            super::check_signature(&[key], b"", b"x", &sig),
            Err(VerifyError::Invalid)
        );
    }

    /// The test key, the signature of the signed request, and the message it signs
    /// (timestamp || body).
    fn signed_message() -> (ed25519_dalek::VerifyingKey, [u8; 64], Vec<u8>) {
        let headers = signed();
        let key = super::public_key(0, &public(SEED)).unwrap();
        let mut sig = [0u8; 64];
        hex::decode_to_slice(value_of(&headers, SIG), &mut sig).unwrap();
        let mut whole = NOW.to_string().into_bytes();
        whole.extend_from_slice(BODY);
        (key, sig, whole)
    }

    /// The stream verifier answers what the one-slice `Verifier::verify` it replaced
    /// answers, for the signed message split anywhere and for every byte of the signature
    /// changed (non-canonical `s`, a different `R`, a bad point included).
    #[test]
    fn stream_verification_agrees_with_one_slice_verification() {
        use ed25519_dalek::Verifier as _;
        let (key, sig, whole) = signed_message();
        let one_slice = |msg: &[u8], sig: &[u8; 64]| {
            key.verify(msg, &ed25519_dalek::Signature::from_bytes(sig))
                .map_err(|_| VerifyError::Invalid)
        };
        let mut accepted = 0;
        for pos in 0..64 {
            for change in [0u8, 0x01, 0x80, 0xff] {
                let mut s = sig;
                s[pos] ^= change;
                if pos == 63 && change == 0x80 {
                    s[63] |= 0xf0; // s >= 2^252: never canonical
                }
                for split in [0, 3, 10, whole.len()] {
                    let (ts, body) = whole.split_at(split);
                    let got = super::check_signature(&[key], ts, body, &s);
                    assert_eq!(got, one_slice(&whole, &s), "byte {pos} ^ {change:#x}");
                    accepted += usize::from(got.is_ok());
                }
            }
        }
        assert_eq!(accepted, 64 * 4, "only the unchanged signature verifies");
    }

    /// The message is `timestamp || body` with no separator: splitting the
    /// same bytes differently between the two must give the same answer.
    #[test]
    fn message_is_timestamp_then_body() {
        let (key, sig, whole) = signed_message();
        // Only the concatenation is signed, so any split point verifies...
        for split in [0, 5, whole.len()] {
            let key = super::public_key(0, &public(SEED)).unwrap();
            let (ts, body) = whole.split_at(split);
            assert_eq!(super::check_signature(&[key], ts, body, &sig), Ok(()));
        }
        // ...but body-then-timestamp is a different message.
        let ts = NOW.to_string();
        assert_eq!(
            super::check_signature(&[key], BODY, ts.as_bytes(), &sig),
            Err(VerifyError::Invalid)
        );
    }



    #[test]
    fn flipped_signature_char_fails() {
        let v = discord(&[SEED]);
        let sig = value_of(&signed(), SIG);
        for index in [0, 63, 64, 127] {
            let bad = with(&signed(), SIG, &flip_char(&sig, index));
            assert_eq!(
                v.verify(&bad, BODY, NOW),
                Err(VerifyError::Invalid),
                "{index}"
            );
        }
    }

    #[test]
    fn changed_timestamp_fails() {
        let v = discord(&[SEED]);
        let r = v.verify(&with(&signed(), TS, &(NOW + 1).to_string()), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Invalid));
    }



    #[test]
    fn bad_keys_fail_closed() {
        for bad in [&RFC_PUB[..62], "zz", &format!("{RFC_PUB}00")] {
            let e = Verifier::new(P, &strings(&[RFC_PUB, bad]), Duration::from_secs(1), None)
                .err()
                .unwrap();
            assert!(matches!(e, KeyError::BadSecret { index: 1, .. }), "{bad}");
        }
        for bad in ["abc", &RFC_SEED[..10], "not hex at all"] {
            assert!(matches!(
                discord_public_key_hex(bad),
                Err(KeyError::BadSecret { index: 0, .. })
            ));
            assert!(matches!(
                sign(P, bad, BODY, NOW, None),
                Err(KeyError::BadSecret { index: 0, .. })
            ));
        }
        assert_eq!(
            discord_public_key_hex(""),
            Err(KeyError::EmptySecret { index: 0 })
        );
    }

    /// Keys that decode to no curve point (y = 2 has no x) or to a point of
    /// small order (the identity, and the point of order 2) are refused when
    /// the verifier is built, not discovered on the first request.
    #[test]
    fn keys_off_the_curve_or_of_small_order_are_config_errors() {
        for bad in [
            "0200000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ] {
            let e = Verifier::new(P, &strings(&[bad]), Duration::from_secs(1), None)
                .err()
                .unwrap();
            assert!(matches!(e, KeyError::BadSecret { index: 0, .. }), "{bad}");
        }
    }

    /// A signature whose `S` is replaced by `S + L` (the group order) is the
    /// classic malleated form: same curve equation, different bytes. It must
    /// not verify, or one delivery could be replayed under a second signature.
    #[test]
    fn non_canonical_s_is_refused() {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let v = discord(&[SEED]);
        let mut sig = [0u8; 64];
        hex::decode_to_slice(value_of(&signed(), SIG), &mut sig).unwrap();
        let mut carry = 0u16;
        for (s, l) in sig[32..].iter_mut().zip(L) {
            let sum = u16::from(*s) + u16::from(l) + carry;
            *s = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0, "S + L fits in 32 bytes");
        let malleated = with(&signed(), SIG, &hex::encode(sig));
        assert_eq!(v.verify(&malleated, BODY, NOW), Err(VerifyError::Invalid));
    }

    #[test]
    fn missing_headers() {
        let v = discord(&[SEED]);
        for name in [SIG, TS] {
            let r = v.verify(&without(&signed(), name), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Missing), "{name}");
        }
    }

    #[test]
    fn malformed_headers() {
        let v = discord(&[SEED]);
        let sig = value_of(&signed(), SIG);
        for bad in [
            sig[..126].to_string(),
            format!("{sig}00"),
            format!("{}qq", &sig[..126]),
            format!("0x{}", &sig[..126]),
        ] {
            let r = v.verify(&with(&signed(), SIG, &bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        for bad in ["now", "-1", "1700000000.000"] {
            let r = v.verify(&with(&signed(), TS, bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        for name in [SIG, TS] {
            let raw = with_raw(&signed(), name, b"\xe2\x80\x8b");
            assert_eq!(v.verify(&raw, BODY, NOW), Err(VerifyError::Malformed));
            let twice = duplicated(&signed(), name);
            assert_eq!(v.verify(&twice, BODY, NOW), Err(VerifyError::Malformed));
        }
    }

}
