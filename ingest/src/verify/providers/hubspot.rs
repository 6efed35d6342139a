//! HubSpot request signatures (HubSpot developer docs, "Validating requests from
//! HubSpot"). Three versions, chosen by the headers a request carries:
//!
//! * v3 (`X-HubSpot-Signature-v3`): base64 HMAC-SHA256(client secret, method, URI, body,
//!   timestamp, concatenated) with `X-HubSpot-Request-Timestamp` in milliseconds; requests older than
//!   5 minutes are to be refused. When a request carries it, only v3 is checked (HubSpot
//!   sends the older versions beside it "for backwards compatibility", and they carry no
//!   timestamp: a request cannot be downgraded by a wrong v3 and a right v1).
//! * v1 and v2 (`X-HubSpot-Signature`, selected by `X-HubSpot-Signature-Version: v1|v2`):
//!   hex SHA-256 — unkeyed — of `client secret + body` (v1, CRM webhook subscriptions) or
//!   `client secret + method + URI + body` (v2, workflow actions and CRM cards). No
//!   timestamp: a replay of the same body is refused by the body-digest delivery id. A
//!   missing version header is `signature_missing`, any other version `malformed`.
//!
//! The URI is the full URL HubSpot called: the source's `public_url`, then `?` and the
//! query string as received. Webhooks are POSTed, so the method is `POST`.
//!
//! A delivery is a JSON array of events: the body's digest is the delivery id; event
//! type: the first event's `subscriptionType`. HubSpot publishes worked v1 and v2 examples
//! (used in the tests); none for v3.

use http::{HeaderMap, HeaderName};
use ring::{digest, hmac};

use super::common::{check_parts, example_url_options, require_public_url, signed_url, SigHeader};
use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, ct_eq, decode_hex_exact, header_str, header_values, parse_timestamp, About, Defaults,
    HmacAlgorithm, KeyError, Keys, Options, Provider, ProviderSpec, Request, SigEncoding,
    Verifier, VerifyError, MAX_SIG_LEN,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&HubSpot);

const SIG: SigHeader = SigHeader {
    header: "X-HubSpot-Signature-v3",
    name: header_name!("x-hubspot-signature-v3"),
    prefix: "",
    encoding: SigEncoding::Base64,
    algorithm: HmacAlgorithm::Sha256,
};
const TS: &str = "X-HubSpot-Request-Timestamp";
static TS_NAME: HeaderName = HeaderName::from_static("x-hubspot-request-timestamp");
static LEGACY_NAME: HeaderName = HeaderName::from_static("x-hubspot-signature");
static VERSION_NAME: HeaderName = HeaderName::from_static("x-hubspot-signature-version");

struct HubSpot;

/// The v1/v2 hash: `ctx` has absorbed the client secret; v2 adds the method and the URI
/// (as pieces, never copied), then the body.
fn legacy_digest(
    ctx: &digest::Context,
    v2: Option<(&[u8], &[&[u8]])>,
    body: &[u8],
) -> digest::Digest {
    let mut ctx = ctx.clone();
    if let Some((method, uri)) = v2 {
        ctx.update(method);
        for piece in uri {
            ctx.update(piece);
        }
    }
    ctx.update(body);
    ctx.finish()
}

/// `sig_value` and `ts`: the v3 headers' values (read once, by [`HubSpot::verify`]).
fn verify_v3(
    v: &Verifier,
    req: &Request<'_>,
    sig_value: &[u8],
    ts: Result<&[u8], VerifyError>,
) -> Result<(), VerifyError> {
    let ts_text = ts?;
    let ms = parse_timestamp(ts_text)?;
    let mut buf = [0u8; MAX_SIG_LEN + 8];
    let sig = SIG.decode_value(sig_value, &mut buf)?;
    check_tolerance(ms / 1000, req.now, v.tolerance_secs())?;
    let [url, sep, query] = signed_url(v, req.query)?;
    check_parts(
        v.hmac_keys(),
        sig,
        &[b"POST", url, sep, query, req.body, ts_text],
    )
}

fn verify_legacy(v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
    let value = header_str(req.headers, &LEGACY_NAME)?;
    let version = header_str(req.headers, &VERSION_NAME)?;
    let v2 = match version {
        "v1" => false,
        "v2" => true,
        _ => return Err(VerifyError::Malformed),
    };
    let mut sig = [0u8; 32];
    decode_hex_exact(value, &mut sig)?;
    let [url, sep, query] = signed_url(v, req.query)?;
    let request_line: (&[u8], &[&[u8]]) = (b"POST", &[url, sep, query]);
    let matched = v.secret_digests().iter().any(|ctx| {
        let hash = legacy_digest(ctx, v2.then_some(request_line), req.body);
        ct_eq(hash.as_ref(), &sig)
    });
    if matched {
        Ok(())
    } else {
        Err(VerifyError::Invalid)
    }
}

impl ProviderSpec for HubSpot {
    fn name(&self) -> &'static str {
        "hubspot"
    }

    fn about(&self) -> About {
        About {
            headers: &["X-HubSpot-Signature-v3", TS, "X-HubSpot-Signature(-Version)"],
            signed: "v3: base64 HMAC-SHA256(\"POST\" + `public_url`?query + body + timestamp ms); v1/v2: hex SHA-256(secret + [\"POST\" + URI +] body)",
            secret: "the app's client secret",
            handshakes: &[],
            docs: "https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn url_signed(&self) -> bool {
        true
    }

    fn keys(&self, secrets: &[String], options: &Options) -> Result<Keys, KeyError> {
        require_public_url(options)?;
        let digests = secrets
            .iter()
            .map(|s| {
                let mut ctx = digest::Context::new(&digest::SHA256);
                ctx.update(s.as_bytes());
                ctx
            })
            .collect();
        let Keys::Hmac(hmac_keys) = Keys::hmac(secrets, hmac::HMAC_SHA256) else {
            return Err(KeyError::NoSecrets);
        };
        Ok(Keys::HmacAndDigest(hmac_keys, digests))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        // One lookup both picks the version and reads the v3 value; a repeated or
        // garbled v3 header is v3's error, as before (the timestamp is still judged
        // first).
        let [sig, ts] = header_values(req.headers, [SIG.name, &TS_NAME]);
        match sig {
            Err(VerifyError::Missing) => verify_legacy(v, req),
            Ok(value) => verify_v3(v, req, value, ts),
            Err(e) => {
                parse_timestamp(ts?)?;
                Err(e)
            }
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        SIG.present(headers) || headers.contains_key(&LEGACY_NAME)
    }

    /// The v3 headers (what HubSpot sends today; the older versions are checked only
    /// when v3 is absent).
    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        options: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let url = require_public_url(options)?;
        let ts = now.saturating_mul(1000).to_string();
        let sig = SIG.sign(secret, &[b"POST", url.as_bytes(), body, ts.as_bytes()]);
        Ok(vec![(TS.to_string(), ts), sig])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(
            FieldSpec::BodyHash,
            Some(FieldSpec::pointer("/0/subscriptionType")),
        )
    }

    fn example_options(&self) -> Options {
        example_url_options("https://hooks.example.com/hooks/hubspot")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use base64::Engine as _;

    use crate::verify::test_support::*;
    use crate::verify::{Request, VerifyError};

    /// The signed string is method, URI (with the query as received), body, then the
    /// millisecond timestamp, written out by hand here.
    #[test]
    fn the_signed_string_is_method_uri_body_timestamp() {
        let p = super::PROVIDER;
        let v = verifier(p, &["hs-client-secret"]);
        let ts = (NOW * 1000 + 123).to_string();
        let body = br#"[{"eventId":1,"subscriptionType":"contact.creation"}]"#;
        let text = format!(
            "POSThttps://hooks.example.com/hooks/hubspot?a=1&b=%20{}{ts}",
            std::str::from_utf8(body).unwrap()
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"hs-client-secret");
        let sig = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&key, text.as_bytes()).as_ref());
        let h = header_map(&[
            ("X-HubSpot-Signature-v3".into(), sig),
            ("X-HubSpot-Request-Timestamp".into(), ts),
        ]);
        let req = |query| Request {
            headers: &h,
            body,
            query,
            now: NOW,
        };
        assert_eq!(v.verify_request(&req(Some("a=1&b=%20"))), Ok(()));
        assert_eq!(v.verify_request(&req(Some("a=1"))), Err(VerifyError::Invalid));
        assert_eq!(v.verify_request(&req(None)), Err(VerifyError::Invalid));
    }
    /// HubSpot's own v1 example ("Validate requests using the v1 request signature",
    /// https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests,
    /// also https://developers.hubspot.com/docs/faq/v1-request-validation), verbatim.
    const DOC_SECRET: &str = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const DOC_V1_BODY: &[u8] = br#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;
    const DOC_V1_HASH: &str = "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de";

    fn legacy(sig: &str, version: &str) -> http::HeaderMap {
        header_map(&[
            ("X-HubSpot-Signature".into(), sig.into()),
            ("X-HubSpot-Signature-Version".into(), version.into()),
        ])
    }

    #[test]
    fn hubspots_v1_example_verifies() {
        let v = verifier(super::PROVIDER, &["another-secret", DOC_SECRET]);
        assert_eq!(v.verify(&legacy(DOC_V1_HASH, "v1"), DOC_V1_BODY, NOW), Ok(()));
        assert_eq!(
            v.verify(&legacy(&DOC_V1_HASH.to_uppercase(), "v1"), DOC_V1_BODY, NOW),
            Ok(()),
            "hex of either case"
        );
        assert_eq!(
            v.verify(&legacy(DOC_V1_HASH, "v1"), &flip_bit(DOC_V1_BODY), NOW),
            Err(VerifyError::Invalid)
        );
        assert_eq!(
            v.verify(&legacy(&flip_char(DOC_V1_HASH, 5), "v1"), DOC_V1_BODY, NOW),
            Err(VerifyError::Invalid)
        );
        assert_eq!(
            v.verify(&legacy(DOC_V1_HASH, "v2"), DOC_V1_BODY, NOW),
            Err(VerifyError::Invalid),
            "as v2 the method and URI are signed too"
        );
        let other = verifier(super::PROVIDER, &["another-secret"]);
        assert_eq!(
            other.verify(&legacy(DOC_V1_HASH, "v1"), DOC_V1_BODY, NOW),
            Err(VerifyError::Invalid)
        );
    }

    /// HubSpot's v2 example is a GET with no body
    /// (https://developers.hubspot.com/docs/faq/v2-request-validation), verbatim: the hash
    /// function itself against it.
    #[test]
    fn hubspots_v2_example_hashes_as_published() {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(DOC_SECRET.as_bytes());
        let uri: &[&[u8]] = &[b"https://www.example.com/webhook_uri"];
        let hash = super::legacy_digest(&ctx, Some((b"GET", uri)), b"");
        assert_eq!(
            hex::encode(hash.as_ref()),
            "eee2dddcc73c94d699f5e395f4b9d454a069a6855fbfa152e91e88823087200e"
        );
    }

    /// A v2 POST: secret + "POST" + the URL with its query as received + body, by hand.
    #[test]
    fn v2_signs_method_uri_and_body() {
        let v = verifier(super::PROVIDER, &[DOC_SECRET]);
        let text = format!(
            "{DOC_SECRET}POSThttps://hooks.example.com/hooks/hubspot?a=1{}",
            std::str::from_utf8(DOC_V1_BODY).unwrap()
        );
        let sig = hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()));
        let h = legacy(&sig, "v2");
        let req = |query| Request {
            headers: &h,
            body: DOC_V1_BODY,
            query,
            now: NOW,
        };
        assert_eq!(v.verify_request(&req(Some("a=1"))), Ok(()));
        assert_eq!(v.verify_request(&req(Some("a=2"))), Err(VerifyError::Invalid));
        assert_eq!(v.verify_request(&req(None)), Err(VerifyError::Invalid));
    }

    #[test]
    fn legacy_headers_are_judged_strictly() {
        let v = verifier(super::PROVIDER, &[DOC_SECRET]);
        let sig_only = header_map(&[("X-HubSpot-Signature".into(), DOC_V1_HASH.into())]);
        assert!(v.signature_present(&sig_only));
        assert_eq!(
            v.verify(&sig_only, DOC_V1_BODY, NOW),
            Err(VerifyError::Missing),
            "no version header"
        );
        for version in ["v3", "V1", "1", "v1 "] {
            assert_eq!(
                v.verify(&legacy(DOC_V1_HASH, version), DOC_V1_BODY, NOW),
                Err(VerifyError::Malformed),
                "{version:?}"
            );
        }
        for sig in [&DOC_V1_HASH[..62], "zz", &format!("{DOC_V1_HASH}00")] {
            assert_eq!(
                v.verify(&legacy(sig, "v1"), DOC_V1_BODY, NOW),
                Err(VerifyError::Malformed),
                "{sig:?}"
            );
        }
        assert!(!v.signature_present(&http::HeaderMap::new()));
    }

    /// With a v3 signature present only v3 counts: a right v1 beside a wrong v3 is refused
    /// (the older versions carry no timestamp).
    #[test]
    fn a_v3_header_rules_out_the_legacy_versions() {
        let v = verifier(super::PROVIDER, &[DOC_SECRET]);
        let mut h = legacy(DOC_V1_HASH, "v1");
        h.insert("x-hubspot-signature-v3", "AAAA".parse().unwrap());
        h.insert("x-hubspot-request-timestamp", (NOW * 1000).to_string().parse().unwrap());
        assert_eq!(v.verify(&h, DOC_V1_BODY, NOW), Err(VerifyError::Malformed));
        let good = signed_by(super::PROVIDER, DOC_SECRET, DOC_V1_BODY, NOW);
        let mut h = header_map(&good);
        h.insert(
            "x-hubspot-signature-v3",
            flip_char(&value_of(&good, "X-HubSpot-Signature-v3"), 3).parse().unwrap(),
        );
        h.insert("x-hubspot-signature", DOC_V1_HASH.parse().unwrap());
        h.insert("x-hubspot-signature-version", "v1".parse().unwrap());
        assert_eq!(v.verify(&h, DOC_V1_BODY, NOW), Err(VerifyError::Invalid));
    }

    /// The v3 header is looked up once: a repeated or garbled v3 header is still v3's
    /// `Malformed` (never a fall-back to the legacy versions), and the timestamp is still
    /// judged before it (missing → `Missing`, not digits → `Malformed`).
    #[test]
    fn a_repeated_or_garbled_v3_header_is_v3s_error_after_the_timestamp() {
        let v = verifier(super::PROVIDER, &[DOC_SECRET]);
        let good = signed_by(super::PROVIDER, DOC_SECRET, DOC_V1_BODY, NOW);
        let mut twice = legacy(DOC_V1_HASH, "v1");
        for (n, val) in &good {
            twice.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                val.parse().unwrap(),
            );
        }
        twice.append(
            "x-hubspot-signature-v3",
            value_of(&good, "X-HubSpot-Signature-v3").parse().unwrap(),
        );
        assert_eq!(v.verify(&twice, DOC_V1_BODY, NOW), Err(VerifyError::Malformed));
        let mut no_ts = twice.clone();
        no_ts.remove("x-hubspot-request-timestamp");
        assert_eq!(v.verify(&no_ts, DOC_V1_BODY, NOW), Err(VerifyError::Missing));
        let garbled = with_raw(&good, "x-hubspot-signature-v3", b"caf\xc3\xa9");
        assert_eq!(v.verify(&garbled, DOC_V1_BODY, NOW), Err(VerifyError::Malformed));
        let mut bad_ts = garbled.clone();
        bad_ts.insert("x-hubspot-request-timestamp", "soon".parse().unwrap());
        assert_eq!(v.verify(&bad_ts, DOC_V1_BODY, NOW), Err(VerifyError::Malformed));
        let mut garbled_no_ts = garbled;
        garbled_no_ts.remove("x-hubspot-request-timestamp");
        assert_eq!(
            v.verify(&garbled_no_ts, DOC_V1_BODY, NOW),
            Err(VerifyError::Missing)
        );
    }
}
