//! The shared, table-driven suite: every rule that holds for every provider, run over the
//! whole registry. A new provider gets all of it by being registered; its own file keeps
//! only its own cases (the vendor's worked example, its header's particular syntax).
//!
//! Each test walks [`Provider::ALL`] and names the provider in every failure message.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use http::{HeaderMap, HeaderName, HeaderValue};

use super::test_support::*;
use super::{sign_with, KeyError, Provider, ProviderSpec, Verifier, VerifyError};

#[test]
fn body_signed_schemes_build_a_body_that_carries_the_signature() {
    for &p in Provider::ALL {
        let req = signed_request(p, NOW);
        if in_headers(p) {
            assert_eq!(req.body, BODY, "{p}: the payload is sent as is");
        } else {
            assert_ne!(req.body, BODY, "{p}: the envelope carries the signature");
        }
    }
}

/// (signing secret, what the verifier is configured with) for both example secrets.
fn secrets(p: Provider) -> [(String, String); 2] {
    let spec = p.spec();
    spec.example_secrets().map(|s| {
        let config = spec.config_secret(s).expect("example secret");
        (s.to_string(), config)
    })
}

fn build(p: Provider, config: &[&str]) -> Verifier {
    verifier(p, config)
}

fn signed(p: Provider, at: i64) -> Vec<(String, String)> {
    signed_request(p, at).headers
}

/// The whole request (for schemes that sign inside the body, the body is built too).
fn signed_request(p: Provider, at: i64) -> super::Signed {
    signed_request_by(p, &secrets(p)[0].0, BODY, at)
}

/// Schemes whose signature travels in headers (the header-shape tests apply).
fn in_headers(p: Provider) -> bool {
    !p.spec().signature_in_body()
}

/// The names (lowercase) of the signature headers the provider's `about` lists that are
/// among what it signs: the ones whose tampering must be noticed.
fn listed_headers(p: Provider, pairs: &[(String, String)]) -> Vec<String> {
    let mut listed: Vec<String> = p
        .spec()
        .about()
        .headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    // generic-hmac's header is whatever the source configures.
    if let Some(generic) = &options(p).generic {
        listed.push(generic.header.as_str().to_string());
    }
    pairs
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .filter(|n| listed.contains(n))
        .collect()
}

#[test]
fn every_provider_round_trips() {
    for &p in Provider::ALL {
        let [(_, good), _] = secrets(p);
        let v = build(p, &[&good]);
        let req = signed_request(p, NOW);
        let headers = header_map(&req.headers);
        assert!(v.signature_present(&headers), "{p}");
        assert_eq!(v.verify(&headers, &req.body, NOW), Ok(()), "{p}");
        assert_eq!(v.provider(), p);
    }
}

#[test]
fn a_flipped_body_bit_is_refused() {
    for &p in Provider::ALL {
        if !in_headers(p) {
            continue; // the envelope's own tests flip its signed fields
        }
        let [(_, good), _] = secrets(p);
        let v = build(p, &[&good]);
        let got = v.verify(&header_map(&signed(p, NOW)), &flip_bit(BODY), NOW);
        if p.spec().covers_body() {
            assert_eq!(got, Err(VerifyError::Invalid), "{p}");
        } else {
            assert_eq!(got, Ok(()), "{p}: a token scheme does not cover the body");
        }
    }
}

#[test]
fn another_secret_is_refused() {
    for &p in Provider::ALL {
        let [_, (_, other)] = secrets(p);
        let v = build(p, &[&other]);
        let req = signed_request(p, NOW);
        assert_eq!(
            v.verify(&header_map(&req.headers), &req.body, NOW),
            Err(VerifyError::Invalid),
            "{p}"
        );
    }
}

#[test]
fn either_secret_is_accepted_during_a_rotation() {
    for &p in Provider::ALL {
        let [(sign_a, a), (sign_b, b)] = secrets(p);
        for order in [[&a, &b], [&b, &a]] {
            let v = build(p, &[order[0], order[1]]);
            for signer in [&sign_a, &sign_b] {
                let req = signed_request_by(p, signer, BODY, NOW);
                let headers = header_map(&req.headers);
                assert_eq!(v.verify(&headers, &req.body, NOW), Ok(()), "{p}");
            }
        }
    }
}

/// Without each signed header the request is refused as `Missing` whenever the cheap
/// presence check says absent (and that check never refuses what `verify` accepts);
/// removing the signature header itself is always noticed.
#[test]
fn missing_headers_are_missing() {
    for &p in Provider::ALL {
        if !in_headers(p) {
            continue;
        }
        let [(_, good), _] = secrets(p);
        let v = build(p, &[&good]);
        let pairs = signed(p, NOW);
        let all = header_map(&pairs);
        let mut saw_absent = false;
        for (name, _) in &pairs {
            let mut h = all.clone();
            h.remove(name.as_str());
            let got = v.verify(&h, BODY, NOW);
            assert!(got.is_err(), "{p} without {name}: {got:?}");
            if !v.signature_present(&h) {
                saw_absent = true;
                assert_eq!(got, Err(VerifyError::Missing), "{p} without {name}");
            }
        }
        assert!(saw_absent, "{p}: removing its signature header is noticed");
        assert!(!v.signature_present(&HeaderMap::new()), "{p}");
        assert_eq!(
            v.verify(&HeaderMap::new(), BODY, NOW),
            Err(VerifyError::Missing),
            "{p}"
        );
    }
}

#[test]
fn duplicated_signature_headers_are_malformed() {
    for &p in Provider::ALL {
        if !in_headers(p) {
            continue;
        }
        let [(_, good), _] = secrets(p);
        let v = build(p, &[&good]);
        let pairs = signed(p, NOW);
        let names = listed_headers(p, &pairs);
        assert!(
            !names.is_empty(),
            "{p}: `about().headers` names what it signs"
        );
        for name in names {
            let twice = duplicated(&pairs, &name);
            assert_eq!(
                v.verify(&twice, BODY, NOW),
                Err(VerifyError::Malformed),
                "{p}: {name} twice"
            );
        }
    }
}

/// A non-ASCII byte in any listed header is `Malformed`; an empty value or a few
/// characters of garbage never pass.
#[test]
fn malformed_headers_are_refused() {
    for &p in Provider::ALL {
        if !in_headers(p) {
            continue;
        }
        let [(_, good), _] = secrets(p);
        let v = build(p, &[&good]);
        let pairs = signed(p, NOW);
        for name in listed_headers(p, &pairs) {
            let raw = with_raw(&pairs, &name, b"\x80abc");
            assert_eq!(
                v.verify(&raw, BODY, NOW),
                Err(VerifyError::Malformed),
                "{p}: {name} non-ASCII"
            );
            for garbage in ["", "x", "!!!", "v1=,,,", "sha256="] {
                let got = v.verify(&with(&pairs, &name, garbage), BODY, NOW);
                assert!(
                    matches!(got, Err(VerifyError::Malformed | VerifyError::Invalid)),
                    "{p}: {name} = {garbage:?} gave {got:?}"
                );
            }
        }
    }
}

#[test]
fn timestamped_schemes_honour_the_tolerance_edges() {
    let mut timestamped = 0;
    for &p in Provider::ALL {
        if !p.spec().timestamped() {
            continue;
        }
        timestamped += 1;
        let [(_, good), _] = secrets(p);
        let v = build(p, &[&good]);
        for (t, expected) in [
            (NOW - TOL, Ok(())),
            (NOW + TOL, Ok(())),
            (NOW - TOL - 1, Err(VerifyError::Expired)),
            (NOW + TOL + 1, Err(VerifyError::Expired)),
            (NOW - 86_400, Err(VerifyError::Expired)),
        ] {
            let req = signed_request(p, t);
            let got = v.verify(&header_map(&req.headers), &req.body, NOW);
            assert_eq!(got, expected, "{p}: t = now {:+}", t - NOW);
        }
    }
    assert!(timestamped >= 4, "the timestamped schemes are marked so");
}

/// Schemes without a signed timestamp accept a request signed long ago (replay defence
/// for them is the body-digest dedupe, which `signs_body_only` turns on).
#[test]
fn schemes_without_a_timestamp_say_so() {
    for &p in Provider::ALL {
        let spec: &dyn ProviderSpec = p.spec();
        if spec.timestamped() {
            assert!(!spec.signs_body_only(), "{p}: timestamped yet body-only");
            continue;
        }
        let [(_, good), _] = secrets(p);
        let v = build(p, &[&good]);
        let req = signed_request(p, NOW - 10 * 86_400);
        assert_eq!(
            v.verify(&header_map(&req.headers), &req.body, NOW),
            Ok(()),
            "{p}"
        );
    }
}

#[test]
fn empty_secret_lists_and_empty_secrets_fail_closed() {
    for &p in Provider::ALL {
        let o = options(p);
        match Verifier::with_options(p, &[], o.clone()) {
            // A provider that learns its secret from a handshake starts with none, and
            // refuses every request until then.
            Ok(v) if p.spec().learns_secret() => {
                assert!(v.has_no_keys(), "{p}");
                let req = signed_request(p, NOW);
                assert_eq!(
                    v.verify(&header_map(&req.headers), &req.body, NOW),
                    Err(VerifyError::Invalid),
                    "{p}"
                );
            }
            other => assert_eq!(other.err(), Some(KeyError::NoSecrets), "{p}"),
        }
        let e = Verifier::with_options(p, &strings(&["x", ""]), o.clone()).err();
        assert_eq!(e, Some(KeyError::EmptySecret { index: 1 }), "{p}");
        assert_eq!(
            sign_with(p, "", b"", NOW, &o).err(),
            Some(KeyError::EmptySecret { index: 0 }),
            "{p}"
        );
    }
}

#[test]
fn debug_output_never_shows_secrets() {
    for &p in Provider::ALL {
        let [(_, good), _] = secrets(p);
        let v = build(p, &[&good]);
        let dbg = format!("{v:?}");
        assert!(!dbg.contains(&good), "{p}: {dbg}");
        assert!(dbg.contains("redacted"), "{dbg}");
        assert!(dbg.contains(p.as_str()), "{dbg}");
    }
}

/// The signature headers `sign` emits are valid header names and values (what `hookgate
/// sign --curl` prints and the e2e tests send).
#[test]
fn signed_headers_are_valid_http() {
    for &p in Provider::ALL {
        for (name, value) in signed(p, NOW) {
            assert!(
                HeaderName::from_bytes(name.as_bytes()).is_ok(),
                "{p}: {name}"
            );
            assert!(HeaderValue::from_str(&value).is_ok(), "{p}: {name}");
        }
    }
}

/// The shared-token schemes (the sender echoes the secret in a header): a token that
/// differs in one character, a prefix or an extension of it is `Invalid`; a tab inside is
/// `Malformed`. Each provider's file keeps only its own cases (Telegram's case sensitivity
/// and secret syntax).
#[test]
fn token_schemes_refuse_near_tokens() {
    use super::providers::{gitlab, telegram};
    for (p, header) in [
        (gitlab::PROVIDER, "x-gitlab-token"),
        (telegram::PROVIDER, "x-telegram-bot-api-secret-token"),
    ] {
        assert!(!p.spec().covers_body(), "{p}: a token scheme");
        let [(secret, config), _] = secrets(p);
        let v = build(p, &[&config]);
        let pairs = signed(p, NOW);
        assert_eq!(v.verify(&header_map(&pairs), BODY, NOW), Ok(()), "{p}");
        let mut near: Vec<String> = [0, secret.len() / 2, secret.len() - 1]
            .into_iter()
            .map(|i| flip_char(&secret, i))
            .collect();
        near.push(secret[..secret.len() - 1].to_string());
        near.push(format!("{secret}x"));
        for bad in near {
            assert_eq!(
                v.verify(&with(&pairs, header, &bad), BODY, NOW),
                Err(VerifyError::Invalid),
                "{p}: {bad}"
            );
        }
        let tab = format!("{}\t{}", &secret[..2], &secret[2..]);
        assert_eq!(
            v.verify(&with_raw(&pairs, header, tab.as_bytes()), BODY, NOW),
            Err(VerifyError::Malformed),
            "{p}: tab"
        );
    }
}
