//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`.
//!
//! Per Stripe's "Verify webhook signatures manually": the signed payload is
//! `"{t}.{body}"` (with `t` exactly as it appears in the header), the MAC is
//! hex HMAC-SHA256, only the `v1` scheme is trusted, and any `v1` matching
//! any secret accepts the request (Stripe sends several during its own secret
//! rolls). Other schemes (`v0` is Stripe's test-mode legacy scheme) are ignored.
//!
//! Parsing rules, chosen to fail closed where it matters:
//! * a missing or repeated `t`, or a `t` that is not plain digits → `Malformed`;
//! * `v1` entries that do not decode (not 64 hex digits), elements without `=`, and
//!   other schemes are skipped; when `v1` entries were sent and none decodes →
//!   `Malformed`; more than 16 elements → `Malformed`;
//! * a well-formed header with no `v1` at all → `Invalid`: it carries no signature we
//!   accept, which to the caller is the same as a signature that does not match (the
//!   Stripe libraries also treat it as a verification failure rather than a parse error).

use super::common::StripeLike;
use crate::extract::FieldSpec;
use crate::verify::{About, Defaults, Provider};

static SPEC: StripeLike = StripeLike {
    name: "stripe",
    about: About {
        headers: &["Stripe-Signature"],
        signed: "`t=<unix>,v1=<hex>`: HMAC-SHA256(t + \".\" + body); any `v1` may match",
        secret: "the endpoint's signing secret (`whsec_…`, used as text)",
        handshakes: &[],
        docs: "https://docs.stripe.com/webhooks#verify-manually",
    },
    header: "Stripe-Signature",
    header_name: header_name!("stripe-signature"),
    defaults: || Defaults::new(FieldSpec::pointer("/id"), Some(FieldSpec::pointer("/type"))),
};

/// The registry entry: Stripe's is the shape [`StripeLike`] is named after.
pub const PROVIDER: Provider = Provider::of(&SPEC);

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use crate::verify::test_support::*;
    use crate::verify::{sign, Provider, VerifyError};

    const P: Provider = super::PROVIDER;
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

    /// Several `v1` (Stripe sends one per active secret during a roll): entries that do
    /// not decode and elements without `=` are skipped beside the one that matches; more
    /// than 16 elements are refused before any HMAC.
    #[test]
    fn undecodable_v1_entries_beside_a_matching_one_are_skipped() {
        let v = verifier(P, &[SECRET]);
        let sig = v1_of(&signed());
        for header in [
            format!("t={NOW},v1={sig},garbage"),
            format!("t={NOW},v1=zz,v1={sig}"),
            format!("t={NOW},v1={},v1={sig}", &sig[..62]),
            format!("t={NOW},v1={sig},v1=not-hex"),
        ] {
            let r = v.verify(&header_map(&[(H.into(), header.clone())]), BODY, NOW);
            assert_eq!(r, Ok(()), "{header}");
        }
        let at_cap = format!("t={NOW},{}v1={sig}", "v0=00,".repeat(14));
        let r = v.verify(&header_map(&[(H.into(), at_cap)]), BODY, NOW);
        assert_eq!(r, Ok(()));
        let over_cap = format!("t={NOW},{}v1={sig}", "v0=00,".repeat(15));
        let r = v.verify(&header_map(&[(H.into(), over_cap)]), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Malformed));
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
        ] {
            let r = v.verify(&header_map(&[(H.into(), bad.clone())]), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        let twice = duplicated(&signed(), H);
        assert_eq!(v.verify(&twice, BODY, NOW), Err(VerifyError::Malformed));
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
