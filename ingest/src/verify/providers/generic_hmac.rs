//! generic-hmac: `<header>: <prefix><encoded HMAC(algorithm, secret, body)>`.
//!
//! For senders without a dedicated scheme. The prefix is stripped exactly and
//! case-sensitively (a missing prefix is `Malformed`, not `Invalid`, because
//! it means the header is not in the configured format at all). There is no
//! timestamp, so this scheme cannot stop replays on its own.

use base64::Engine as _;
use http::HeaderMap;
use ring::hmac;

use crate::extract::FieldSpec;
use crate::verify::{
    decode_b64_exact, decode_hex_exact, header_str, About, B64Buf, Defaults, GenericHmacOptions,
    HmacAlgorithm, KeyError, Keys, Options, Provider, ProviderSpec, Request, SigEncoding,
    Verifier, VerifyError, MAX_SIG_LEN,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&GenericHmac);

struct GenericHmac;

impl ProviderSpec for GenericHmac {
    fn name(&self) -> &'static str {
        "generic-hmac"
    }

    fn about(&self) -> About {
        About {
            headers: &["`signature_header`"],
            signed: "`prefix` + hex/base64 HMAC-SHA1/256/512(body), as configured",
            secret: "the shared HMAC secret",
            handshakes: &[],
            docs: "README: generic-hmac",
        }
    }

    fn signs_body_only(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], options: &Options) -> Result<Keys, KeyError> {
        let generic = options.generic.as_ref().ok_or(KeyError::MissingOptions)?;
        Ok(Keys::hmac(secrets, generic.algorithm.ring()))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let Some(options) = &v.options().generic else {
            return Err(VerifyError::Invalid);
        };
        verify(v.hmac_keys(), options, req.headers, req.body)
    }

    fn signature_present(&self, v: &Verifier, headers: &HeaderMap) -> bool {
        v.options()
            .generic
            .as_ref()
            .is_some_and(|o| headers.contains_key(&o.header))
    }

    /// The header this configuration expects for `body`.
    fn sign(&self, secret: &str, body: &[u8], _: i64, options: &Options) -> Result<Vec<(String, String)>, KeyError> {
        let options = options.generic.as_ref().ok_or(KeyError::MissingOptions)?;
        let key = hmac::Key::new(options.algorithm.ring(), secret.as_bytes());
        let tag = hmac::sign(&key, body);
        let encoded = match options.encoding {
            SigEncoding::Hex => hex::encode(tag.as_ref()),
            SigEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(tag.as_ref()),
        };
        Ok(vec![(
            options.header.as_str().to_string(),
            format!("{}{encoded}", options.prefix),
        )])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::BodyHash, None)
    }

    fn example_options(&self) -> Options {
        Options {
            generic: Some(GenericHmacOptions {
                header: http::HeaderName::from_static("x-signature"),
                algorithm: HmacAlgorithm::Sha256,
                encoding: SigEncoding::Hex,
                prefix: "sha256=".into(),
            }),
            ..Options::default()
        }
    }
}

/// Checks the configured header against every key.
fn verify(
    keys: &[hmac::Key],
    options: &GenericHmacOptions,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), VerifyError> {
    let value = header_str(headers, &options.header)?;
    let encoded = value
        .strip_prefix(options.prefix.as_str())
        .ok_or(VerifyError::Malformed)?;
    let len = options.algorithm.tag_len();
    let mut buf: B64Buf = [0u8; MAX_SIG_LEN + 8];
    let sig: &[u8] = match options.encoding {
        SigEncoding::Hex => {
            let out = buf.get_mut(..len).ok_or(VerifyError::Malformed)?;
            decode_hex_exact(encoded, out)?;
            out
        }
        SigEncoding::Base64 => decode_b64_exact(encoded, len, &mut buf)?,
    };
    if keys.iter().any(|key| hmac::verify(key, body, sig).is_ok()) {
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
    use base64::Engine as _;
    use http::HeaderName;

    use crate::verify::test_support::*;
    use crate::verify::{
        sign, GenericHmacOptions, HmacAlgorithm, Provider, SigEncoding, VerifyError,
    };

    const P: Provider = super::PROVIDER;
    const SECRET: &str = "generic-secret-1";
    const H: &str = "x-acme-signature";

    fn options(
        algorithm: HmacAlgorithm,
        encoding: SigEncoding,
        prefix: &str,
    ) -> GenericHmacOptions {
        GenericHmacOptions {
            header: HeaderName::from_static(H),
            algorithm,
            encoding,
            prefix: prefix.to_string(),
        }
    }

    fn default_options() -> GenericHmacOptions {
        options(HmacAlgorithm::Sha256, SigEncoding::Hex, "sha256=")
    }

    /// Every algorithm/encoding pair, with and without a prefix.
    fn all_options() -> Vec<GenericHmacOptions> {
        let mut out = Vec::new();
        for algorithm in [
            HmacAlgorithm::Sha1,
            HmacAlgorithm::Sha256,
            HmacAlgorithm::Sha512,
        ] {
            for encoding in [SigEncoding::Hex, SigEncoding::Base64] {
                for prefix in ["", "v1="] {
                    out.push(options(algorithm, encoding, prefix));
                }
            }
        }
        out
    }

    fn signed_with(o: &GenericHmacOptions, secret: &str) -> Vec<(String, String)> {
        sign(P, secret, BODY, NOW, Some(o)).unwrap()
    }

    /// RFC 4231 test case 2 (HMAC-SHA256/512) and RFC 2202 test case 2
    /// (HMAC-SHA1), key "Jefe": pins the algorithm mapping and both encodings
    /// to published digests rather than to our own signer.
    #[test]
    fn rfc_vectors() {
        let data = b"what do ya want for nothing?";
        for (algorithm, digest_hex) in [
            (HmacAlgorithm::Sha1, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
            (
                HmacAlgorithm::Sha256,
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                HmacAlgorithm::Sha512,
                "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
            ),
        ] {
            let digest = hex::decode(digest_hex).unwrap();
            for (encoding, text) in [
                (SigEncoding::Hex, digest_hex.to_string()),
                (
                    SigEncoding::Base64,
                    base64::engine::general_purpose::STANDARD.encode(&digest),
                ),
            ] {
                let o = options(algorithm, encoding, "pre:");
                let header = format!("pre:{text}");
                let ours = sign(P, "Jefe", data, NOW, Some(&o)).unwrap();
                assert_eq!(value_of(&ours, H), header, "{algorithm:?} {encoding:?}");
                let v = generic_verifier(&["Jefe"], &o);
                let headers = header_map(&[(H.into(), header)]);
                assert_eq!(v.verify(&headers, data, NOW), Ok(()), "{algorithm:?} {encoding:?}");
            }
        }
    }

    #[test]
    fn round_trip() {
        for o in all_options() {
            let v = generic_verifier(&[SECRET], &o);
            assert_eq!(
                v.verify(&header_map(&signed_with(&o, SECRET)), BODY, NOW),
                Ok(()),
                "{o:?}"
            );
        }
    }

    #[test]
    fn flipped_body_bit_fails() {
        for o in all_options() {
            let v = generic_verifier(&[SECRET], &o);
            let r = v.verify(&header_map(&signed_with(&o, SECRET)), &flip_bit(BODY), NOW);
            assert_eq!(r, Err(VerifyError::Invalid), "{o:?}");
        }
    }

    #[test]
    fn flipped_signature_char_fails() {
        for o in all_options() {
            let v = generic_verifier(&[SECRET], &o);
            let signed = signed_with(&o, SECRET);
            let sig = value_of(&signed, H);
            let start = o.prefix.len();
            for index in [start, start + 5, start + 17] {
                let bad = with(&signed, H, &flip_char(&sig, index));
                assert_eq!(
                    v.verify(&bad, BODY, NOW),
                    Err(VerifyError::Invalid),
                    "{o:?} {index}"
                );
            }
        }
    }

    /// The algorithm is part of the configuration: a SHA-256 verifier must
    /// not accept a SHA-512 signature even from the right secret (it is the
    /// wrong length, so it is rejected as malformed before any HMAC).
    #[test]
    fn other_algorithm_fails() {
        let o256 = options(HmacAlgorithm::Sha256, SigEncoding::Hex, "");
        let o512 = options(HmacAlgorithm::Sha512, SigEncoding::Hex, "");
        let v = generic_verifier(&[SECRET], &o256);
        let r = v.verify(&header_map(&signed_with(&o512, SECRET)), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Malformed));
    }

    #[test]
    fn wrong_secret_fails() {
        let o = default_options();
        let v = generic_verifier(&["other-secret"], &o);
        let r = v.verify(&header_map(&signed_with(&o, SECRET)), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Invalid));
    }

    #[test]
    fn second_secret_matches_during_rotation() {
        for o in all_options() {
            let v = generic_verifier(&["new-secret", SECRET], &o);
            assert_eq!(
                v.verify(&header_map(&signed_with(&o, SECRET)), BODY, NOW),
                Ok(()),
                "{o:?}"
            );
        }
    }

    #[test]
    fn missing_header() {
        let o = default_options();
        let v = generic_verifier(&[SECRET], &o);
        let r = v.verify(&without(&signed_with(&o, SECRET), H), BODY, NOW);
        assert_eq!(r, Err(VerifyError::Missing));
        // A signature under some other header name does not count.
        let elsewhere = header_map(&[("x-other".into(), value_of(&signed_with(&o, SECRET), H))]);
        assert_eq!(v.verify(&elsewhere, BODY, NOW), Err(VerifyError::Missing));
    }

    #[test]
    fn malformed_header() {
        let o = default_options();
        let v = generic_verifier(&[SECRET], &o);
        let signed = signed_with(&o, SECRET);
        let sig = value_of(&signed, H);
        let hex_part = &sig[7..];
        for bad in [
            hex_part.to_string(),          // prefix missing
            format!("SHA256={hex_part}"),  // prefix is case-sensitive
            format!(" sha256={hex_part}"), // prefix must be at the start
            format!("sha256={}", &hex_part[..62]),
            format!("sha256={hex_part}00"),
            format!(
                "sha256={}",
                base64::engine::general_purpose::STANDARD.encode(hex::decode(hex_part).unwrap())
            ),
        ] {
            let r = v.verify(&with(&signed, H, &bad), BODY, NOW);
            assert_eq!(r, Err(VerifyError::Malformed), "{bad}");
        }
        let raw = with_raw(&signed, H, b"sha256=\xaa");
        assert_eq!(v.verify(&raw, BODY, NOW), Err(VerifyError::Malformed));
        let twice = duplicated(&signed, H);
        assert_eq!(v.verify(&twice, BODY, NOW), Err(VerifyError::Malformed));

        // Base64 configuration rejects hex text and vice versa.
        let ob = options(HmacAlgorithm::Sha256, SigEncoding::Base64, "");
        let vb = generic_verifier(&[SECRET], &ob);
        let hex_headers = header_map(&[(H.into(), hex_part.to_string())]);
        assert_eq!(
            vb.verify(&hex_headers, BODY, NOW),
            Err(VerifyError::Malformed)
        );
    }
}
