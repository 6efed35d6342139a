//! What one provider file supplies: the [`ProviderSpec`] trait.
//!
//! A provider is one file under `providers/` holding a unit struct that implements this
//! trait, plus one line in the registry (`providers/mod.rs`). Everything hookgate knows
//! about a sender lives there: names, secret kinds and their validation, `verify` (pure,
//! constant time), `sign`, the default delivery id / event type, the timestamp rule,
//! whether the signature covers only the body, the presence check made before the body
//! is read, handshakes and their answers, and the example secrets the shared tests,
//! fuzzing and benchmarks use.

use http::HeaderMap;
use simd_json::prelude::*;
use simd_json::tape::Value as TapeValue;

use super::{KeyError, Keys, Options, Request, Verifier, VerifyError};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_and_decoded() {
        let q = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=a%20b+c&x";
        assert_eq!(
            query_param(q, "hub.challenge").as_deref(),
            Some("1158201444")
        );
        assert_eq!(query_param(q, "hub.verify_token").as_deref(), Some("a b c"));
        assert_eq!(query_param(q, "x").as_deref(), Some(""));
        assert_eq!(query_param(q, "hub"), None);
        assert_eq!(query_param("a=%zz", "a"), None);
        assert_eq!(query_param("a=%", "a"), None);
        assert_eq!(query_param("a=%ff", "a"), None, "not UTF-8");
        assert_eq!(query_param("a=1&a=2", "a").as_deref(), Some("1"));
    }
}
use crate::extract::FieldSpec;

/// A provider's description, for `hookgate providers` and the README table.
#[derive(Debug, Clone, Copy)]
pub struct About {
    /// The header(s) the signature (or token) travels in, in the provider's spelling.
    pub headers: &'static [&'static str],
    /// What is signed, in a few words (e.g. `HMAC-SHA256(t + "." + body), hex`).
    pub signed: &'static str,
    /// What to put in `secrets`.
    pub secret: &'static str,
    /// Handshakes answered directly, never stored (empty: none).
    pub handshakes: &'static [&'static str],
    /// Where the scheme is documented.
    pub docs: &'static str,
}

/// Where a provider's fields come from by default (a source's own `dedupe_key`,
/// `event_type` and `partition_key` override them).
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The delivery id (dedupe key).
    pub delivery: FieldSpec,
    /// The event type, if the provider sends one.
    pub event: Option<FieldSpec>,
    /// Bodies that are not JSON (e.g. Slack's form-encoded slash commands) get the
    /// body's digest as their delivery id instead of a 415.
    pub non_json_body_hash: bool,
}

impl Defaults {
    /// The delivery id from `delivery`, the event type from `event`.
    pub fn new(delivery: FieldSpec, event: Option<FieldSpec>) -> Defaults {
        Defaults {
            delivery,
            event,
            non_json_body_hash: false,
        }
    }
}

/// A request as its sender would send it: the signature headers and the body (which
/// schemes that sign inside the body build around the payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Headers to send (signature, timestamp, id…).
    pub headers: Vec<(String, String)>,
    /// The body to send.
    pub body: Vec<u8>,
}

/// A handshake's answer: sent instead of storing an event (status 200 unless the
/// handshake was refused, e.g. a wrong `verify_token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type` of the answer.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// Extra response headers.
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    /// A 200 JSON answer.
    pub fn json(body: String) -> Answer {
        Answer {
            status: 200,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    /// A 200 `text/plain` answer, with `X-Content-Type-Options: nosniff` so a browser
    /// never sniffs an echoed challenge as HTML.
    pub fn text(body: String) -> Answer {
        Answer {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body,
            headers: vec![("x-content-type-options", "nosniff".to_string())],
        }
    }

    /// A refusal with hookgate's JSON error body (`code` is stable).
    pub fn refuse(status: u16, code: &'static str, message: &'static str) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: serde_json::json!({ "error": code, "message": message }).to_string(),
            headers: Vec::new(),
        }
    }
}

/// What a handshake answered before the body is read or verified can see: the method,
/// headers and query string (e.g. Meta's `GET ?hub.challenge=…`, Dropbox's `GET
/// ?challenge=…`, Trello's `HEAD`).
#[derive(Debug, Clone, Copy)]
pub struct Early<'a> {
    /// The request method.
    pub method: &'a http::Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The query string as received (without `?`).
    pub query: Option<&'a str>,
}

impl Early<'_> {
    /// The first value of query parameter `name`, percent-decoded (`+` is a space);
    /// `None` when absent or not valid UTF-8 once decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        query_param(self.query?, name)
    }
}

/// The first value of `name` in a `application/x-www-form-urlencoded` string.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k)? == name).then(|| percent_decode(v))
        })
        .next()
        .flatten()
}

/// Decodes `%XX` and `+`; `None` on a bad escape or invalid UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A parsed JSON body, as handshake detection sees it (read-only, no value tree built).
#[derive(Clone, Copy)]
pub struct Doc<'t, 'i>(pub(crate) TapeValue<'t, 'i>);

impl<'t, 'i> Doc<'t, 'i> {
    fn at(&self, path: &[&str]) -> Option<TapeValue<'t, 'i>> {
        let mut v = self.0;
        for key in path {
            v = v.get(*key)?;
        }
        Some(v)
    }

    /// The string at `path` (object keys from the root), if there is one.
    pub fn str_at(&self, path: &[&str]) -> Option<&'i str> {
        self.at(path)?.into_string()
    }

    /// The integer at `path`, if there is one.
    pub fn i64_at(&self, path: &[&str]) -> Option<i64> {
        self.at(path)?.as_i64()
    }
}

/// What a provider's secrets look like: documents them and lets the shared property
/// tests generate valid ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// Any text; the HMAC key is its UTF-8 bytes.
    Text,
    /// A token echoed as a header value, matching this regex (proptest syntax).
    Token(&'static str),
    /// `whsec_` + base64 of the key bytes.
    WhsecBase64,
    /// Signing takes an Ed25519 private seed (64 hex digits); config takes the public key.
    Ed25519Seed,
    /// Hex digits of a binary key (an even number of them).
    HexKey,
    /// Key pairs that cannot be made up from random bytes in a test (ECDSA): generated
    /// tests use the provider's two example secrets.
    Examples,
}

/// One webhook sender. See the module documentation.
pub trait ProviderSpec: Sync {
    /// The canonical config name, kebab-case.
    fn name(&self) -> &'static str;

    /// Other names config may use for this provider.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// The description shown by `hookgate providers`.
    fn about(&self) -> About;

    /// Whether nothing that changes per delivery is signed with the body (no timestamp,
    /// no id): such sources also dedupe on the body's digest (replay defence).
    fn signs_body_only(&self) -> bool {
        false
    }

    /// Whether a signed timestamp is checked against the source's `tolerance`.
    fn timestamped(&self) -> bool {
        false
    }

    /// Whether the signature covers the URL the provider called (then the source needs
    /// `public_url`).
    fn url_signed(&self) -> bool {
        false
    }

    /// Whether the body is covered by the signature (false for shared-token schemes).
    fn covers_body(&self) -> bool {
        true
    }

    /// What the secrets look like.
    fn secret_kind(&self) -> SecretKind {
        SecretKind::Text
    }

    /// Validates the secrets and prepares the key material (once, at config load). The
    /// list is non-empty and holds no empty string. Errors never quote a secret.
    fn keys(&self, secrets: &[String], options: &Options) -> Result<Keys, KeyError>;

    /// Verifies one request. Pure and constant-time in the secrets.
    fn verify(&self, v: &Verifier, req: &Request<'_>) -> Result<(), VerifyError>;

    /// The cheap check made before the body is read: whether the header the signature
    /// travels in is there. `false` must imply that `verify` says `Missing`.
    fn signature_present(&self, v: &Verifier, headers: &HeaderMap) -> bool;

    /// The headers the sender would send for `body` at `now`, signed with `secret` (see
    /// [`ProviderSpec::config_secret`] for asymmetric schemes). `secret` is not empty.
    /// Only headers `verify` reads are returned, so tampering with any of them must
    /// fail verification.
    fn sign(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        options: &Options,
    ) -> Result<Vec<(String, String)>, KeyError>;

    /// Whether the secret is learned on first contact (Asana's `X-Hook-Secret`) rather than
    /// configured: then a source may have no `secrets`, and
    /// [`ProviderSpec::learn_handshake`] says which request delivers it.
    fn learns_secret(&self) -> bool {
        false
    }

    /// A request that hands over the secret to use from now on, with the answer to send
    /// once it is stored durably. Only consulted for providers that
    /// [`ProviderSpec::learns_secret`], and only honoured while the source has no secret.
    fn learn_handshake(&self, _req: &Early<'_>) -> Option<(String, Answer)> {
        None
    }

    /// A request whose BODY hands over the secret (Notion's unsigned
    /// `{"verification_token": …}`), with the answer to send once it is stored durably.
    /// Looked at after the body is read, only for providers that
    /// [`ProviderSpec::learns_secret`] and only while the source has no secret; `None`: not
    /// such a request.
    fn learn_from_body(&self, _headers: &HeaderMap, _body: &[u8]) -> Option<(String, Answer)> {
        None
    }

    /// Whether the signature travels inside the body (Mailgun, Adyen) rather than in
    /// headers; then [`ProviderSpec::sign_request`] builds the body.
    fn signature_in_body(&self) -> bool {
        false
    }

    /// The whole request the sender would send for the payload `body`: by default the
    /// headers of [`ProviderSpec::sign`] and `body` unchanged; schemes that sign inside
    /// the body wrap the payload in their envelope.
    fn sign_request(
        &self,
        secret: &str,
        body: &[u8],
        now: i64,
        options: &Options,
    ) -> Result<Signed, KeyError> {
        Ok(Signed {
            headers: self.sign(secret, body, now, options)?,
            body: body.to_vec(),
        })
    }

    /// A fixed `text/plain` body to answer accepted events (and their duplicates) with,
    /// instead of hookgate's JSON (Adyen expects `[accepted]`).
    fn accepted_body(&self) -> Option<&'static str> {
        None
    }

    /// What the source's `secrets` must hold for requests signed with `sign_secret`: the
    /// same string, except for asymmetric schemes (the public key of a private key).
    fn config_secret(&self, sign_secret: &str) -> Result<String, KeyError> {
        Ok(sign_secret.to_owned())
    }

    /// Default delivery id and event type.
    fn defaults(&self) -> Defaults;

    /// Whether [`ProviderSpec::body_handshake`] can answer anything (then the body is
    /// always parsed).
    fn has_body_handshake(&self) -> bool {
        false
    }

    /// A verified JSON request that is a handshake rather than an event, and its answer.
    /// `v` is the source's verifier (absent when extraction runs alone, in fuzzing and
    /// benches): a handshake whose answer needs the key (Zoom) answers nothing then.
    fn body_handshake(
        &self,
        _v: Option<&Verifier>,
        _headers: &HeaderMap,
        _body: &[u8],
        _doc: &Doc<'_, '_>,
    ) -> Option<Answer> {
        None
    }

    /// A request answered before its body is read or its signature checked: handshakes
    /// that are not signed (Meta's `GET` with `hub.verify_token`, Dropbox's `GET
    /// ?challenge=`, Trello's `HEAD`…). Only these requests may skip verification, and
    /// none of them is stored. `None`: an ordinary webhook.
    fn early_handshake(&self, _v: &Verifier, _req: &Early<'_>) -> Option<Answer> {
        None
    }

    /// Two signing secrets the shared tests, the fuzz targets and the benchmarks use
    /// (the second one stands for a rotated-out or foreign secret).
    fn example_secrets(&self) -> [&'static str; 2] {
        ["hookgate-example-secret-1", "hookgate-example-secret-2"]
    }

    /// The options the shared tests, fuzz targets and benchmarks build this provider
    /// with (e.g. a `public_url` for URL-signing schemes).
    fn example_options(&self) -> Options {
        Options::default()
    }
}
