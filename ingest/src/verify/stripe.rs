//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`.
//!
//! Per Stripe's "Verify webhook signatures manually": the signed payload is
//! `"{t}.{body}"` (with `t` exactly as it appears in the header), the MAC is
//! hex HMAC-SHA256, only the `v1` scheme is trusted, and any `v1` matching
//! any secret accepts the request (Stripe sends several during its own secret
//! rolls). Other schemes (`v0` is Stripe's test-mode legacy scheme) are ignored.
//!
//! Parsing rules, chosen to fail closed:
//! * an element without `=`, a missing or repeated `t`, or a `v1` that is not
//!   64 hex digits → `Malformed`;
//! * a well-formed header with no `v1` at all → `Invalid`: the header parsed,
//!   it simply carries no signature we accept, which to the caller is the same
//!   as a signature that does not match (the Stripe libraries also treat it as
//!   a verification failure rather than a parse error).

use http::HeaderMap;
use ring::hmac;

use super::VerifyError;

pub(super) static HEADER: http::HeaderName = http::HeaderName::from_static("stripe-signature");

/// The `t` value of a syntactically valid header.
fn parse(value: &str) -> Result<&str, VerifyError> {
    let mut timestamp = None;
    for element in value.split(',') {
        let (key, val) = element.split_once('=').ok_or(VerifyError::Malformed)?;
        match key {
            "t" if timestamp.is_some() => return Err(VerifyError::Malformed),
            "t" => timestamp = Some(val),
            "v1" => super::decode_hex_exact(val, &mut [0u8; 32])?,
            _ => {}
        }
    }
    timestamp.ok_or(VerifyError::Malformed)
}

/// The `v1` signatures in a header that [`parse`] accepted. Re-splitting the
/// string keeps the request path allocation-free.
fn v1_signatures(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .filter_map(|element| element.split_once('='))
        .filter(|(key, _)| *key == "v1")
        .map(|(_, val)| val)
}

/// Checks the header's timestamp, then every `v1` against every key.
pub(super) fn verify(
    keys: &[hmac::Key],
    tolerance_secs: u64,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), VerifyError> {
    let value = super::header_str(headers, &HEADER)?;
    let t = parse(value)?;
    super::check_tolerance(super::parse_timestamp(t)?, now, tolerance_secs)?;
    if v1_signatures(value).next().is_none() {
        return Err(VerifyError::Invalid);
    }
    for key in keys {
        let tag = super::hmac_parts(key, &[t.as_bytes(), b".", body]);
        for sig_hex in v1_signatures(value) {
            let mut sig = [0u8; 32];
            if super::decode_hex_exact(sig_hex, &mut sig).is_ok()
                && super::ct_eq(tag.as_ref(), &sig)
            {
                return Ok(());
            }
        }
    }
    Err(VerifyError::Invalid)
}

/// The header Stripe would send for `body` at `now`.
pub(super) fn sign(key: &hmac::Key, body: &[u8], now: i64) -> Vec<(String, String)> {
    let t = now.to_string();
    let tag = super::hmac_parts(key, &[t.as_bytes(), b".", body]);
    vec![(
        "Stripe-Signature".to_string(),
        format!("t={t},v1={}", hex::encode(tag.as_ref())),
    )]
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::super::test_support::*;
    use super::super::{sign, Provider, VerifyError};

    const P: Provider = Provider::Stripe;
    const SECRET: &str = "whsec_stripe_test_secret";
    const H: &str = "stripe-signature";

    fn signed_at(secret: &str, t: i64) -> Vec<(String, String)> {
        sign(P, secret, BODY, t, None).unwrap()
    }

    fn signed() -> Vec<(String, String)> {
        signed_at(SECRET, NOW)
    }

    /// `v1=<hex>` of a header produced by `sign`.
    fn v1_of(pairs: &[(String, String)]) -> String {
        let value = value_of(pairs, H);
        value.split_once(",v1=").unwrap().1.to_string()
    }

    /// Independent of `sign`: the HMAC of `"{t}.{body}"` written out by hand
    /// with ring's one-shot API, so a bug in the signed-payload layout would
    /// not be hidden by signing and verifying with the same code.
    #[test]
    fn signed_payload_layout_is_t_dot_body() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let manual = ring::hmac::sign(
            &key,
            format!("{NOW}.")
                .as_bytes()
                .iter()
                .chain(BODY)
                .copied()
                .collect::<Vec<u8>>()
                .as_slice(),
        );
        let header = format!("t={NOW},v1={}", hex::encode(manual.as_ref()));
        assert_eq!(value_of(&signed(), H), header);
        let v = verifier(P, &[SECRET]);
        assert_eq!(
            v.verify(&header_map(&[(H.into(), header)]), BODY, NOW),
            Ok(())
        );
    }

    #[test]
    fn round_trip() {
        let v = verifier(P, &[SECRET]);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
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
        let value = value_of(&signed(), H);
        let start = value.find("v1=").unwrap() + 3;
        for index in [start, start + 31, value.len() - 1] {
            let bad = with(&signed(), H, &flip_char(&value, index));
            assert_eq!(
                v.verify(&bad, BODY, NOW),
                Err(VerifyError::Invalid),
                "{index}"
            );
        }
    }

    /// `t` is part of the signed payload: moving it (even within tolerance)
    /// must break the signature.
    #[test]
    fn changed_timestamp_fails() {
        let v = verifier(P, &[SECRET]);
        let header = format!("t={},v1={}", NOW + 1, v1_of(&signed()));
        let r = v.verify(&header_map(&[(H.into(), header)]), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Invalid));
    }

    #[test]
    fn wrong_secret_fails() {
        let v = verifier(P, &["whsec_other"]);
        assert_eq!(
            v.verify(&header_map(&signed()), BODY, NOW),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn second_secret_matches_during_rotation() {
        let v = verifier(P, &["whsec_new", SECRET]);
        assert_eq!(v.verify(&header_map(&signed()), BODY, NOW), Ok(()));
    }

    /// Stripe sends one `v1` per active secret; any of them may match, in any
    /// position, and unknown schemes are skipped.
    #[test]
    fn any_v1_may_match_and_other_schemes_are_ignored() {
        let v = verifier(P, &[SECRET]);
        let good = v1_of(&signed());
        let other = v1_of(&signed_at("whsec_other", NOW));
        let header = format!("t={NOW},v1={other},v0={other},v2=whatever,v1={good}");
        let r = v.verify(&header_map(&[(H.into(), header)]), BODY, NOW);
        assert_eq!(r, Ok(()));
        // Only a v0 that would match is not enough.
        let header = format!("t={NOW},v0={good}");
        let r = v.verify(&header_map(&[(H.into(), header)]), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Invalid));
        // Keys are exact: " v1" (with a space) is an unknown scheme.
        let header = format!("t={NOW}, v1={good}");
        let r = v.verify(&header_map(&[(H.into(), header)]), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Invalid));
    }

    #[test]
    fn missing_header() {
        let v = verifier(P, &[SECRET]);
        assert_eq!(
            v.verify(&without(&signed(), H), BODY, NOW),
            Err(VerifyError::Missing)
        );
    }

    #[test]
    fn malformed_header() {
        let v = verifier(P, &[SECRET]);
        let sig = v1_of(&signed());
        for bad in [
            format!("v1={sig}"),                  // no t
            format!("t={NOW},t={NOW},v1={sig}"),  // two t
            format!("t=abc,v1={sig}"),            // t not an integer
            format!("t=-{NOW},v1={sig}"),         // negative
            format!("t={NOW}.5,v1={sig}"),        // fraction
            format!("t={NOW},v1={}", &sig[..63]), // odd length
            format!("t={NOW},v1={}", &sig[..62]), // short
            format!("t={NOW},v1={sig}ff"),        // long
            format!("t={NOW},v1=g{}", &sig[1..]), // not hex
            format!("t={NOW},v1={sig},garbage"),  // element without '='
        ] {
            let r = v.verify(&header_map(&[(H.into(), bad.clone())]), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        let twice = duplicated(&signed(), H);
        assert_eq!(v.verify(&twice, BODY, NOW), Err(VerifyError::Malformed));
    }

    #[test]
    fn timestamp_tolerance() {
        let v = verifier(P, &[SECRET]);
        for (t, expected) in [
            (NOW - TOL, Ok(())),
            (NOW + TOL, Ok(())),
            (NOW - TOL + 1, Ok(())),
            (NOW - TOL - 1, Err(VerifyError::Expired)),
            (NOW + TOL + 1, Err(VerifyError::Expired)),
            (NOW - 86_400, Err(VerifyError::Expired)),
        ] {
            let r = v.verify(&header_map(&signed_at(SECRET, t)), BODY, NOW);
            assert_eq!(r, expected, "t = now {:+}", t - NOW);
        }
    }

    /// The timestamp is judged before any signature work: a stale request
    /// with a garbage-but-well-formed signature reports Expired, not Invalid.
    #[test]
    fn timestamp_is_checked_before_the_signature() {
        let v = verifier(P, &[SECRET]);
        let header = format!("t={},v1={}", NOW - 10_000, "0".repeat(64));
        let r = v.verify(&header_map(&[(H.into(), header)]), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Expired));
    }
}
