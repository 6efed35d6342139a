//! Property tests (proptest) of the request path's pure parts:
//! - sign-then-verify round trips for every provider (any body, any secret the provider
//!   takes, a timestamp anywhere within the tolerance) are accepted;
//! - tampering is always refused: a flipped bit of the body, a flipped bit of any signed
//!   header, or another secret;
//! - extraction never panics on arbitrary bytes and specs, never calls valid JSON invalid,
//!   and finds a field under any key through an escaped JSON pointer.
//!
//! 256 cases per property (proptest's default), so the suite stays quick.

use std::time::Duration;

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use crate::extract::{ExtractError, Extracted, Extractor, FieldSpec};
use crate::verify::{
    sign_request, GenericHmacOptions, HmacAlgorithm, Options, Provider, SecretKind, SigEncoding,
    Verifier, VerifyError,
};

const TOLERANCE: Duration = Duration::from_secs(300);
const TOL: i64 = 300;

/// One provider with key material for it: what `sign` takes and what the verifier takes.
#[derive(Debug, Clone)]
struct Keyed {
    provider: Provider,
    /// What `sign` takes (for Discord: the private seed, hex).
    signing: String,
    /// What the verifier's config takes (for Discord: the public key, hex).
    verifying: String,
    options: Options,
}

impl Keyed {
    fn verifier(&self) -> Verifier {
        Verifier::with_options(
            self.provider,
            std::slice::from_ref(&self.verifying),
            self.options.clone(),
        )
        .expect("verifier builds")
    }

    /// The signed request for the payload `body` (schemes that sign inside the body wrap
    /// it), as (headers, body).
    fn sign(&self, body: &[u8], at: i64) -> (Vec<(String, String)>, Vec<u8>) {
        let s = sign_request(self.provider, &self.signing, body, at, &self.options).expect("signs");
        (s.headers, s.body)
    }

    /// Whether the signature covers the body (GitLab and Telegram echo a token instead).
    fn signs_body(&self) -> bool {
        self.provider.spec().covers_body() && !self.provider.spec().signature_in_body()
    }
}

/// Secrets for the HMAC schemes: any non-empty text without control characters (a NUL
/// would make two secrets the same HMAC key, which is HMAC's padding, not a bug here).
fn text_secret() -> impl Strategy<Value = String> {
    "\\PC{1,48}"
}

fn generic_options() -> impl Strategy<Value = GenericHmacOptions> {
    (
        prop_oneof![
            Just(HmacAlgorithm::Sha1),
            Just(HmacAlgorithm::Sha256),
            Just(HmacAlgorithm::Sha512)
        ],
        prop_oneof![Just(SigEncoding::Hex), Just(SigEncoding::Base64)],
        "[a-z0-9=]{0,8}",
        "x-[a-z0-9-]{1,20}",
    )
        .prop_map(|(algorithm, encoding, prefix, header)| GenericHmacOptions {
            header: HeaderName::from_bytes(header.as_bytes()).unwrap(),
            algorithm,
            encoding,
            prefix,
        })
}

/// A provider and a secret it accepts, of the kind its file declares.
fn keyed(provider: Provider) -> BoxedStrategy<Keyed> {
    let spec = provider.spec();
    let mut base = spec.example_options();
    base.tolerance = TOLERANCE;
    let configurable = base.generic.is_some();
    let secrets: BoxedStrategy<String> = match spec.secret_kind() {
        SecretKind::Text => text_secret().boxed(),
        SecretKind::Token(pattern) => pattern.boxed(),
        SecretKind::WhsecBase64 => proptest::collection::vec(any::<u8>(), 1..64)
            .prop_map(|key| {
                format!(
                    "whsec_{}",
                    base64::engine::general_purpose::STANDARD.encode(key)
                )
            })
            .boxed(),
        SecretKind::Ed25519Seed => any::<[u8; 32]>().prop_map(hex::encode).boxed(),
        SecretKind::HexKey => proptest::collection::vec(any::<u8>(), 1..64)
            .prop_map(hex::encode)
            .boxed(),
        SecretKind::Examples => {
            prop::sample::select(spec.example_secrets().map(str::to_owned).to_vec()).boxed()
        }
    };
    (secrets, generic_options())
        .prop_map(move |(signing, generic)| {
            let mut options = base.clone();
            if configurable {
                options.generic = Some(generic);
            }
            Keyed {
                provider,
                verifying: provider.spec().config_secret(&signing).unwrap(),
                signing,
                options,
            }
        })
        .boxed()
}

fn any_keyed() -> impl Strategy<Value = Keyed> {
    prop::sample::select(Provider::ALL.to_vec()).prop_flat_map(keyed)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..2048)
}

/// A plausible "now": 2001 to 2096.
fn now() -> impl Strategy<Value = i64> {
    1_000_000_000i64..4_000_000_000
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in pairs {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// Flipping `bit` of byte `j` of header `name`'s `value` only changes the letter case of
/// the authentication scheme of an `Authorization` header (`Basic` / `basic`), which
/// RFC 7235 makes case-insensitive, so it is not a change of the credentials.
fn is_auth_scheme_case_flip(name: &str, value: &[u8], j: usize, bit: u8) -> bool {
    let scheme_len = value.iter().position(|b| *b == b' ').unwrap_or(value.len());
    name.eq_ignore_ascii_case("authorization")
        && j < scheme_len
        && bit == 5
        && value[j].is_ascii_alphabetic()
}

/// Flipping `bit` of `b` only changes the letter case of a hex digit (which hex decoding
/// rightly ignores), so it is not a change of the signature.
fn is_hex_case_flip(b: u8, bit: u8) -> bool {
    bit == 5 && b.is_ascii_hexdigit() && b.is_ascii_alphabetic()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn signed_requests_verify(k in any_keyed(), body in body(), now in now(), skew in -TOL..=TOL) {
        let (headers, body) = k.sign(&body, now + skew);
        prop_assert_eq!(k.verifier().verify(&header_map(&headers), &body, now), Ok(()), "{:?}", k.provider);
    }

    #[test]
    fn a_flipped_body_bit_is_refused(
        k in any_keyed(),
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        now in now(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        prop_assume!(k.signs_body());
        let (headers, body) = k.sign(&body, now);
        let headers = header_map(&headers);
        let mut tampered = body.clone();
        tampered[at.index(body.len())] ^= 1 << bit;
        prop_assert_eq!(
            k.verifier().verify(&headers, &tampered, now),
            Err(VerifyError::Invalid),
            "{:?}", k.provider
        );
    }

    #[test]
    fn a_flipped_header_bit_is_refused(
        k in any_keyed(),
        body in body(),
        now in now(),
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (pairs, body) = k.sign(&body, now);
        prop_assume!(!pairs.is_empty());
        let i = which.index(pairs.len());
        let mut value = pairs[i].1.clone().into_bytes();
        let j = at.index(value.len());
        prop_assume!(!is_hex_case_flip(value[j], bit));
        prop_assume!(!is_auth_scheme_case_flip(&pairs[i].0, &value, j, bit));
        value[j] ^= 1 << bit;
        let mut headers = header_map(&pairs);
        let name = HeaderName::from_bytes(pairs[i].0.as_bytes()).unwrap();
        // A byte hyper itself would refuse never reaches the verifier.
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            return Ok(());
        };
        headers.insert(name, value);
        let got = k.verifier().verify(&headers, &body, now);
        prop_assert!(got.is_err(), "{:?}: {} tampered and accepted", k.provider, pairs[i].0);
    }

    #[test]
    fn another_secret_is_refused(
        (signer, mut other) in prop::sample::select(Provider::ALL.to_vec())
            .prop_flat_map(|p| (keyed(p), keyed(p))),
        body in body(),
        now in now(),
    ) {
        prop_assume!(other.verifying != signer.verifying);
        // The same generic-hmac layout, so only the secret differs.
        other.options = signer.options.clone();
        let (headers, body) = signer.sign(&body, now);
        let headers = header_map(&headers);
        prop_assert_eq!(
            other.verifier().verify(&headers, &body, now),
            Err(VerifyError::Invalid),
            "{:?}", signer.provider
        );
    }

    #[test]
    fn a_stale_or_future_timestamp_is_refused(
        k in any_keyed(),
        body in body(),
        now in now(),
        off in (TOL + 1)..100_000,
        future in any::<bool>(),
    ) {
        prop_assume!(k.provider.spec().timestamped());
        let at = if future { now + off } else { now - off };
        let (headers, body) = k.sign(&body, at);
        let headers = header_map(&headers);
        prop_assert_eq!(k.verifier().verify(&headers, &body, now), Err(VerifyError::Expired));
    }
}

// ---------------------------------------------------------------------------------------
// Extraction
// ---------------------------------------------------------------------------------------

fn spec_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "(/[a-z0-9~_]{0,6}){0,4}",
        "/\\PC{0,12}",
        "header:[a-zA-Z0-9-]{0,12}",
        "\\PC{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("\\PC{0,8}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-github-delivery", HeaderValue::from_static("d-1"));
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn extraction_never_panics_on_bytes(
        provider in prop::sample::select(Provider::ALL.to_vec()),
        specs in proptest::collection::vec(proptest::option::of(spec_text()), 3),
        body in body(),
        json_ct in any::<bool>(),
    ) {
        let parse = |s: &Option<String>| s.as_deref().and_then(|s| FieldSpec::parse(s).ok());
        let x = Extractor::new(provider, parse(&specs[0]), parse(&specs[1]), parse(&specs[2]));
        let mut headers = HeaderMap::new();
        if json_ct {
            headers.insert("content-type", HeaderValue::from_static("application/json"));
        }
        match x.extract(&headers, &body) {
            Ok(Extracted::Event { delivery_id, .. }) => prop_assert!(!delivery_id.is_empty()),
            Ok(Extracted::Handshake(_)) | Err(_) => {}
        }
    }

    #[test]
    fn valid_json_is_never_invalid(
        provider in prop::sample::select(Provider::ALL.to_vec()),
        spec in proptest::option::of(spec_text()),
        doc in json_value(),
    ) {
        let key = spec.as_deref().and_then(|s| FieldSpec::parse(s).ok());
        let x = Extractor::new(provider, None, None, key);
        let body = serde_json::to_vec(&doc).unwrap();
        let got = x.extract(&json_headers(), &body);
        prop_assert_ne!(got, Err(ExtractError::InvalidJson), "{}", String::from_utf8_lossy(&body));
    }

    #[test]
    fn an_escaped_pointer_finds_any_key(
        key in "\\PC{0,12}",
        value in "\\PC{1,16}",
        doc in json_value(),
    ) {
        let pointer = format!("/outer/{}", key.replace('~', "~0").replace('/', "~1"));
        let body = serde_json::json!({ "noise": doc, "outer": { key.clone(): value.clone() } });
        let x = Extractor::new(
            crate::verify::providers::generic_hmac::PROVIDER,
            Some(FieldSpec::parse(&pointer).unwrap()),
            None,
            None,
        );
        let got = x.extract(&json_headers(), &serde_json::to_vec(&body).unwrap()).unwrap();
        match got {
            Extracted::Event { delivery_id, .. } => prop_assert_eq!(delivery_id, value),
            other => panic!("{other:?}"),
        }
    }
}
