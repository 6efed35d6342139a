//! Atlassian Connect apps (Jira, Confluence): webhooks registered in an app's descriptor
//! arrive with `Authorization: JWT <token>`, an HS256 JWT signed with the `sharedSecret`
//! the product handed to the app in its `installed` lifecycle callback (Atlassian docs,
//! "Understanding JWT for Connect apps" and "Query string hash"). Claims: `iss` (the
//! installation's `clientKey`), `iat`, `exp` (Atlassian issues tokens valid for a few
//! minutes) and `qsh`, the hex SHA-256 of the canonical request
//! `METHOD&canonical-URI&canonical-query`.
//!
//! What hookgate checks, in order: the token's three base64url parts (at most
//! [`MAX_TOKEN`] characters); a header whose `alg` is exactly `HS256` (`none` and every
//! other algorithm are refused as `signature_malformed`, before any MAC); the HMAC over
//! `header.claims` under each configured shared secret (one per installation), constant
//! time; then, the claims being authenticated: `iss` a string, `iat` within the source's
//! `tolerance` of now and `exp` not passed by more than the tolerance (clock skew)
//! (`timestamp_out_of_tolerance`); `qsh` equal to the hash of `POST`, the path of
//! `public_url` and the request's query string as received (`signature_invalid`
//! otherwise; the fixed `context-qsh` of context tokens is not accepted).
//!
//! Canonical form (atlassian-jwt, the npm SDK's `createCanonicalRequest`): the method in
//! upper case; the URI path relative to the app's `baseUrl`, `/` when empty, without a
//! trailing `/`, `&` written `%26`; the query parameters without `jwt`, percent-decoded
//! (`+` is a space), sorted by name, repeated names joined as their sorted values
//! separated by `,`, names and values re-encoded RFC 3986 style (everything but
//! `A-Z a-z 0-9 - . _ ~` as `%XX`, upper case), pairs joined by `&`.
//!
//! `public_url` is the URL the product calls. Its path is the canonical URI, so the
//! app's `baseUrl` must be the origin (`https://hooks.example.com`) with the webhook's
//! `url` the path (`/hooks/jira-app`): a `baseUrl` with a path of its own would be cut
//! from the canonical URI by Atlassian and the `qsh` would not match.
//!
//! What the token does NOT cover: the body. The JWT binds method, URL and a few minutes;
//! a token seen by a third party could be replayed with another body until `exp` (keep
//! the tolerance short). Delivery id: a digest of the body; event type: `webhookEvent`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use ring::{digest, hmac};

use super::common::{example_url_options, require_public_url};
use crate::extract::FieldSpec;
use crate::verify::{
    check_tolerance, ct_eq, header_str, About, Defaults, KeyError, Keys, Options, Provider,
    ProviderSpec, Request, Verifier, VerifyError,
};

/// The registry entry.
pub const PROVIDER: Provider = Provider::of(&AtlassianConnect);

/// Longest token accepted (a real one is 300-500 characters).
const MAX_TOKEN: usize = 4096;
/// Most query parameters hashed (more is refused as malformed).
const MAX_PARAMS: usize = 64;
/// How long the tokens `sign` makes are valid (Atlassian's SDKs use 3 minutes).
const SIGN_VALIDITY: i64 = 180;
/// Webhooks are POSTs; the method is part of the canonical request.
const METHOD: &str = "POST";

struct AtlassianConnect;

/// The token of an `Authorization: JWT <token>` header (scheme name in any case); any
/// other `Authorization` is `Malformed`.
fn token(headers: &HeaderMap) -> Result<&str, VerifyError> {
    let value = header_str(headers, AUTHORIZATION)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("JWT") => Ok(token.trim_start()),
        // Another scheme (Basic, Bearer) or no token: not what this source takes.
        _ => Err(VerifyError::Malformed),
    }
}

/// `%XX`-decodes one query component (`+` is a space). `None` on a broken escape.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// RFC 3986 encoding: unreserved characters as is, every other byte `%XX` (upper case).
fn encode_rfc3986(bytes: &[u8], out: &mut String) {
    use std::fmt::Write as _;
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The canonical URI of a path: `/` when empty, no trailing `/`, `&` as `%26`.
fn canonical_uri(path: &str) -> String {
    let path = path.strip_suffix('/').unwrap_or(path);
    let path = path.replace('&', "%26");
    if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    }
}

/// The canonical query string of a raw query (without `?`); `None` when it does not
/// decode or has more than [`MAX_PARAMS`] parameters.
fn canonical_query(query: Option<&str>) -> Option<String> {
    let mut params: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        if params.len() == MAX_PARAMS {
            return None;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?;
        if name == b"jwt" {
            continue;
        }
        params.push((name, percent_decode(value)?));
    }
    params.sort();
    let mut out = String::new();
    let mut i = 0;
    while let Some((name, _)) = params.get(i) {
        if !out.is_empty() {
            out.push('&');
        }
        encode_rfc3986(name, &mut out);
        out.push('=');
        // The values of one name, already sorted with it.
        let mut first = true;
        while let Some((n, value)) = params.get(i) {
            if n != name {
                break;
            }
            if !first {
                out.push(',');
            }
            encode_rfc3986(value, &mut out);
            first = false;
            i += 1;
        }
    }
    Some(out)
}

/// `METHOD&canonical-URI&canonical-query`.
fn canonical_request(method: &str, path: &str, query: Option<&str>) -> Option<String> {
    let query = canonical_query(query)?;
    Some(format!(
        "{}&{}&{query}",
        method.to_ascii_uppercase(),
        canonical_uri(path)
    ))
}

/// The hex `qsh` of a request.
fn qsh(method: &str, path: &str, query: Option<&str>) -> Option<String> {
    let canonical = canonical_request(method, path, query)?;
    Some(hex::encode(
        digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref(),
    ))
}

/// The path of an absolute `public_url` (`""` for `https://host`).
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("")
}

/// A JSON integer claim (JWT NumericDate; a fraction is refused).
fn seconds(claims: &serde_json::Value, name: &str) -> Result<i64, VerifyError> {
    claims
        .get(name)
        .and_then(serde_json::Value::as_i64)
        .ok_or(VerifyError::Malformed)
}

impl ProviderSpec for AtlassianConnect {
    fn name(&self) -> &'static str {
        "atlassian-connect"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["jira-connect"]
    }

    fn about(&self) -> About {
        About {
            headers: &["Authorization"],
            signed: "`JWT` HS256 with `iss`, `iat`, `exp` and `qsh` = hex SHA-256(POST&path&sorted query); the body is not covered",
            secret: "the installation's `sharedSecret` (one per installation)",
            handshakes: &[],
            docs: "https://developer.atlassian.com/cloud/jira/platform/understanding-jwt-for-connect-apps/",
        }
    }

    fn timestamped(&self) -> bool {
        true
    }

    fn url_signed(&self) -> bool {
        true
    }

    fn covers_body(&self) -> bool {
        false
    }

    fn keys(&self, secrets: &[String], options: &Options) -> Result<Keys, KeyError> {
        require_public_url(options)?;
        Ok(Keys::hmac(secrets, hmac::HMAC_SHA256))
    }

    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError> {
        let jwt = token(req.headers)?;
        if jwt.len() > MAX_TOKEN {
            return Err(VerifyError::Malformed);
        }
        let mut parts = jwt.split('.');
        let (Some(head), Some(claims), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let header: serde_json::Value = URL_SAFE_NO_PAD
            .decode(head)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or(VerifyError::Malformed)?;
        // Only HS256: `none` (no signature) and RS256 (a key we do not hold) are refused
        // before any MAC, whatever the rest says.
        if header.get("alg").and_then(serde_json::Value::as_str) != Some("HS256") {
            return Err(VerifyError::Malformed);
        }
        let mut buf = [0u8; 48];
        let tag = match URL_SAFE_NO_PAD.decode_slice(sig, &mut buf) {
            Ok(32) => buf.get(..32).ok_or(VerifyError::Malformed)?,
            _ => return Err(VerifyError::Malformed),
        };
        let signed = jwt
            .get(..head.len() + 1 + claims.len())
            .ok_or(VerifyError::Malformed)?;
        let matched = v
            .hmac_keys()
            .iter()
            .any(|key| ct_eq(hmac::sign(key, signed.as_bytes()).as_ref(), tag));
        if !matched {
            return Err(VerifyError::Invalid);
        }
        // The claims are authenticated from here on.
        let claims: serde_json::Value = URL_SAFE_NO_PAD
            .decode(claims)
            .ok()
            .and_then(|c| serde_json::from_slice(&c).ok())
            .ok_or(VerifyError::Malformed)?;
        if claims.get("iss").and_then(serde_json::Value::as_str).is_none() {
            return Err(VerifyError::Malformed);
        }
        let (iat, exp) = (seconds(&claims, "iat")?, seconds(&claims, "exp")?);
        let tolerance = v.tolerance_secs();
        check_tolerance(iat, req.now, tolerance)?;
        if i128::from(req.now) > i128::from(exp) + i128::from(tolerance) {
            return Err(VerifyError::Expired);
        }
        let url = v
            .options()
            .public_url
            .as_deref()
            .ok_or(VerifyError::Invalid)?;
        let expected = qsh(METHOD, url_path(url), req.query).ok_or(VerifyError::Malformed)?;
        let sent = claims
            .get("qsh")
            .and_then(serde_json::Value::as_str)
            .ok_or(VerifyError::Malformed)?;
        if ct_eq(sent.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(VerifyError::Invalid)
        }
    }

    fn signature_present(&self, _: &Verifier, headers: &HeaderMap) -> bool {
        headers.contains_key(AUTHORIZATION)
    }

    /// A token as the product issues it for a POST to `public_url` (no query), valid
    /// for 3 minutes from `now`; `iss` is a fixed test client key.
    fn sign(
        &self,
        secret: &str,
        _: &[u8],
        now: i64,
        options: &Options,
    ) -> Result<Vec<(String, String)>, KeyError> {
        let url = require_public_url(options)?;
        let qsh = qsh(METHOD, url_path(url), None).unwrap_or_default();
        Ok(vec![(
            "Authorization".to_string(),
            format!("JWT {}", encode(secret, now, &qsh)),
        )])
    }

    fn defaults(&self) -> Defaults {
        Defaults::new(FieldSpec::BodyHash, Some(FieldSpec::pointer("/webhookEvent")))
    }

    fn example_options(&self) -> Options {
        example_url_options("https://hooks.example.com/hooks/jira-app")
    }
}

/// An HS256 token with the Connect claims, signed with `secret`.
fn encode(secret: &str, now: i64, qsh: &str) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({
            "iss": "hookgate-test-client-key",
            "iat": now,
            "exp": now.saturating_add(SIGN_VALIDITY),
            "qsh": qsh,
        })
        .to_string(),
    );
    let signed = format!("{head}.{claims}");
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(hmac::sign(&key, signed.as_bytes()).as_ref());
    format!("{signed}.{sig}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ring::hmac;

    use super::{canonical_request, qsh};
    use crate::verify::test_support::*;
    use crate::verify::{Request, VerifyError};

    const P: crate::verify::Provider = super::PROVIDER;
    const SECRET: &str = "connect-shared-secret";

    /// A token over `claims` (raw JSON) with header `head` (raw JSON).
    fn token(head: &str, claims: &str, secret: &str) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(head),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(hmac::sign(&key, signed.as_bytes()).as_ref());
        format!("{signed}.{sig}")
    }

    fn claims(iat: i64, exp: i64, qsh: &str) -> String {
        format!(r#"{{"iss":"jira:abc","iat":{iat},"exp":{exp},"qsh":"{qsh}"}}"#)
    }

    fn verify_with(auth: &str, query: Option<&str>) -> Result<(), VerifyError> {
        let v = verifier(P, &[SECRET]);
        let headers = header_map(&[("Authorization".to_string(), auth.to_string())]);
        v.verify_request(&Request {
            headers: &headers,
            body: BODY,
            query,
            now: NOW,
        })
    }

    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    fn path_qsh(query: Option<&str>) -> String {
        qsh("POST", "/hooks/jira-app", query).unwrap()
    }

    /// A token Jira issued (GET to an add-on page, 2014), printed with its canonical
    /// request in <https://gist.github.com/moskrc/8453971>: the query string as Jira sent
    /// it, the `jwt` parameter dropped, and the `qsh` its claims carry. The shared
    /// secret is not published, so only the canonical request and `qsh` are checked.
    #[test]
    fn a_jira_issued_qsh_is_reproduced() {
        let query = "lic=none&tz=Europe%2FMoscow&cp=%2Fjira&user_key=admin&loc=en-US&user_id=admin&jwt=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjEzODk4NzQ1NjYsInN1YiI6ImFkbWluIiwiaXNzIjoiamlyYTo3YTNiNGM3Ny1jZmMzLTQwNzEtYWFlNS1hODg3ZDE5N2RjOWQiLCJxc2giOiIzYTZmZjFiNjZmNjBlYjI3NWQwZTRjYjZiZTQyNjFkNWQzYjAyMTZiOTFjNThkYzY1MjQ1MDkyMjdlZjM0NmRlIiwiaWF0IjoxMzg5ODc0Mzg2fQ.WFg8X0Ngxc4bmto0PbJ5JKhbn8fAbJMvmRo35V3cL6o&xdm_e=http%3A%2F%2Flocalhost%3A2990&xdm_c=channel-servlet-click-me&xdm_p=1";
        assert_eq!(
            canonical_request("GET", "/addon", Some(query)).unwrap(),
            "GET&/addon&cp=%2Fjira&lic=none&loc=en-US&tz=Europe%2FMoscow&user_id=admin&user_key=admin&xdm_c=channel-servlet-click-me&xdm_e=http%3A%2F%2Flocalhost%3A2990&xdm_p=1"
        );
        assert_eq!(
            qsh("GET", "/addon", Some(query)).unwrap(),
            "3a6ff1b66f60eb275d0e4cb6be4261d5d3b0216b91c58dc6524509227ef346de"
        );
    }

    /// The worked examples of Atlassian's documentation: the `QUERY_HASH` javadoc of
    /// atlassian-jwt (repeated names, spaces as `%20`), and the "Query string hash" page's
    /// table (`POST /user` → `POST&/user&`, `GET /?param=foo` → `GET&/&param=foo`).
    #[test]
    fn atlassians_documented_canonical_requests() {
        assert_eq!(
            canonical_request(
                "GET",
                "/path/to/service",
                Some("zee_last=param&repeated=parameter%201&first=param&repeated=parameter+2")
            )
            .unwrap(),
            "GET&/path/to/service&first=param&repeated=parameter%201,parameter%202&zee_last=param"
        );
        assert_eq!(canonical_request("post", "/user", None).unwrap(), "POST&/user&");
        assert_eq!(
            canonical_request("get", "", Some("param=foo")).unwrap(),
            "GET&/&param=foo"
        );
        // `&` in the path is escaped, a trailing `/` dropped; `*`, `!` escaped, `~` not.
        assert_eq!(
            canonical_request("GET", "/a&b/", Some("k=*!~'")).unwrap(),
            "GET&/a%26b&k=%2A%21~%27"
        );
    }

    #[test]
    fn a_token_for_this_url_and_time_verifies() {
        let t = token(HS256, &claims(NOW, NOW + 180, &path_qsh(None)), SECRET);
        assert_eq!(verify_with(&format!("JWT {t}"), None), Ok(()));
        assert_eq!(verify_with(&format!("jwt {t}"), None), Ok(()));
        // The query is hashed as received (minus `jwt`), whatever the order.
        let t = token(
            HS256,
            &claims(NOW, NOW + 180, &path_qsh(Some("b=2&a=1"))),
            SECRET,
        );
        assert_eq!(verify_with(&format!("JWT {t}"), Some("a=1&b=2&jwt=x")), Ok(()));
        assert_eq!(
            verify_with(&format!("JWT {t}"), Some("a=1&b=3")),
            Err(VerifyError::Invalid)
        );
    }

    #[test]
    fn a_token_for_another_url_or_method_is_refused() {
        let other = qsh("POST", "/hooks/other", None).unwrap();
        let get = qsh("GET", "/hooks/jira-app", None).unwrap();
        for q in [other.as_str(), get.as_str(), "context-qsh"] {
            let t = token(HS256, &claims(NOW, NOW + 180, q), SECRET);
            assert_eq!(
                verify_with(&format!("JWT {t}"), None),
                Err(VerifyError::Invalid),
                "{q}"
            );
        }
    }

    #[test]
    fn only_hs256_is_accepted() {
        let c = claims(NOW, NOW + 180, &path_qsh(None));
        for head in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"HS512"}"#,
            r#"{"typ":"JWT"}"#,
            "not json",
        ] {
            let t = token(head, &c, SECRET);
            assert_eq!(
                verify_with(&format!("JWT {t}"), None),
                Err(VerifyError::Malformed),
                "{head}"
            );
        }
        // `none` with an empty signature part, as an attacker would send it.
        let bare = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(&c)
        );
        assert_eq!(
            verify_with(&format!("JWT {bare}"), None),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn expiry_and_issue_time_are_checked() {
        let q = path_qsh(None);
        for (iat, exp, expected) in [
            (NOW - 100, NOW - 1, Ok(())),
            (NOW - TOL, NOW - TOL, Ok(())),
            (NOW - TOL, NOW - TOL - 1, Err(VerifyError::Expired)),
            (NOW - TOL - 1, NOW + 180, Err(VerifyError::Expired)),
            (NOW + TOL + 1, NOW + 600, Err(VerifyError::Expired)),
        ] {
            let t = token(HS256, &claims(iat, exp, &q), SECRET);
            assert_eq!(
                verify_with(&format!("JWT {t}"), None),
                expected,
                "iat {iat} exp {exp}"
            );
        }
    }

    #[test]
    fn broken_tokens_and_claims_are_refused_cleanly() {
        let q = path_qsh(None);
        let good = token(HS256, &claims(NOW, NOW + 180, &q), SECRET);
        assert_eq!(
            verify_with(&format!("JWT {}", token(HS256, &claims(NOW, NOW + 180, &q), "other")), None),
            Err(VerifyError::Invalid)
        );
        for (auth, expected) in [
            ("Bearer abc".to_string(), VerifyError::Malformed),
            ("JWT".to_string(), VerifyError::Malformed),
            ("JWT a.b".to_string(), VerifyError::Malformed),
            ("JWT a.b.c.d".to_string(), VerifyError::Malformed),
            (format!("JWT {good}x"), VerifyError::Malformed),
            (format!("JWT {}", "a".repeat(5000)), VerifyError::Malformed),
            (
                format!("JWT {}", token(HS256, r#"{"iat":1700000000}"#, SECRET)),
                VerifyError::Malformed,
            ),
            (
                format!(
                    "JWT {}",
                    token(HS256, &format!(r#"{{"iss":"k","iat":{NOW},"exp":"soon","qsh":"{q}"}}"#), SECRET)
                ),
                VerifyError::Malformed,
            ),
            (format!("JWT {}", token(HS256, "[]", SECRET)), VerifyError::Malformed),
        ] {
            assert_eq!(verify_with(&auth, None), Err(expected), "{auth}");
        }
        // A query that does not decode cannot be hashed.
        assert_eq!(
            verify_with(&format!("JWT {good}"), Some("a=%zz")),
            Err(VerifyError::Malformed)
        );
        let many = vec!["a=1"; 65].join("&");
        assert_eq!(
            verify_with(&format!("JWT {good}"), Some(&many)),
            Err(VerifyError::Malformed)
        );
    }
}
