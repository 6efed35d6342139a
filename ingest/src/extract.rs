//! Field extraction: delivery id, event type and partition key, per provider defaults or
//! per-source overrides (`header:NAME` or a JSON pointer), plus the in-line provider
//! handshakes found in a verified JSON body (Slack `url_verification`, Discord `PING`…;
//! each provider's file says what its handshakes are).
//!
//! The body is parsed only when a field lives in it, with simd-json, into a per-thread
//! scratch buffer and tape that are reused across requests (the tape is walked for the
//! few fields needed; no value tree is built); the body itself is never modified or
//! re-serialized.

use std::cell::RefCell;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use simd_json::prelude::*;
use simd_json::tape::Value as TapeValue;
use simd_json::Tape;

use crate::verify::{Answer, Doc, Provider, Verifier};

/// Where a field's value comes from.
#[derive(Debug, Clone)]
pub enum FieldSpec {
    /// A request header.
    Header(HeaderName),
    /// A JSON pointer into the body (RFC 6901), pre-split into tokens.
    Pointer(Vec<String>),
    /// The first of these that is present.
    Any(Vec<FieldSpec>),
    /// Hex SHA-256 of the body: a content-addressed id for senders that give none.
    BodyHash,
    /// Telegram's update kind: the update's field other than `update_id`.
    TelegramKind,
}

impl FieldSpec {
    /// The header this field is read from first, if any (the console records it for a
    /// refused request).
    pub fn first_header(&self) -> Option<&HeaderName> {
        match self {
            FieldSpec::Header(h) => Some(h),
            FieldSpec::Any(v) => v.iter().find_map(FieldSpec::first_header),
            _ => None,
        }
    }

    /// Parses `header:NAME` or `/json/pointer`.
    pub fn parse(s: &str) -> Result<FieldSpec, String> {
        if let Some(name) = s.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().as_bytes())
                .map(FieldSpec::Header)
                .map_err(|_| format!("`{name}` is not a header name"));
        }
        if s.is_empty() || s.starts_with('/') {
            return Ok(FieldSpec::Pointer(
                s.split('/')
                    .skip(1)
                    .map(|t| t.replace("~1", "/").replace("~0", "~"))
                    .collect(),
            ));
        }
        Err(format!(
            "`{s}` is neither `header:NAME` nor a JSON pointer starting with `/`"
        ))
    }

    /// A header, by its lowercase static name.
    pub fn header(name: &'static str) -> FieldSpec {
        FieldSpec::Header(HeaderName::from_static(name))
    }

    /// A JSON pointer written in the source (never fails for pointers starting with `/`;
    /// anything else falls back to the body's digest).
    pub fn pointer(ptr: &str) -> FieldSpec {
        FieldSpec::parse(ptr).unwrap_or(FieldSpec::BodyHash)
    }

    /// A short description for docs: `` `X-Header` ``, `` `/json/pointer` ``, `a or b`.
    pub fn describe(&self) -> String {
        match self {
            FieldSpec::Header(h) => format!("`{h}`"),
            FieldSpec::Pointer(tokens) => {
                let escaped: Vec<String> = tokens
                    .iter()
                    .map(|t| t.replace('~', "~0").replace('/', "~1"))
                    .collect();
                format!("`/{}`", escaped.join("/"))
            }
            FieldSpec::Any(list) => list
                .iter()
                .map(FieldSpec::describe)
                .collect::<Vec<_>>()
                .join(" or "),
            FieldSpec::BodyHash => "body hash".into(),
            FieldSpec::TelegramKind => "update kind".into(),
        }
    }

    fn needs_body(&self) -> bool {
        match self {
            FieldSpec::Header(_) | FieldSpec::BodyHash => false,
            FieldSpec::Pointer(_) | FieldSpec::TelegramKind => true,
            FieldSpec::Any(v) => v.iter().any(FieldSpec::needs_body),
        }
    }
}

/// The extraction plan of one source.
#[derive(Debug, Clone)]
pub struct Extractor {
    delivery: FieldSpec,
    event: Option<FieldSpec>,
    key: Option<FieldSpec>,
    /// The provider whose body handshakes are looked for, if it has any.
    handshake: Option<Provider>,
    /// Non-JSON bodies get the body's digest as delivery id (Slack's forms).
    non_json_body_hash: bool,
    needs_body: bool,
}

/// What extraction found.
#[derive(Debug, PartialEq, Eq)]
pub enum Extracted {
    /// An event to accept.
    Event {
        /// The provider's delivery id (dedupe key).
        delivery_id: String,
        /// The provider's event type, empty if none.
        event_type: String,
        /// The partition key.
        key: Bytes,
    },
    /// A handshake: answer 200 with this and produce nothing.
    Handshake(Answer),
}

/// Why fields could not be extracted (400 / 415).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// The delivery id the provider always sends is absent.
    #[error("the request has no delivery id where this provider always sends one")]
    MissingDeliveryId,
    /// A field lives in the body and the body is not JSON.
    #[error("the body is not valid JSON")]
    InvalidJson,
    /// A field lives in the body and the content type says it is not JSON.
    #[error("this source needs a JSON body (Content-Type: application/json)")]
    UnsupportedMediaType,
}

impl ExtractError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::MissingDeliveryId => "missing_delivery_id",
            ExtractError::InvalidJson => "invalid_json",
            ExtractError::UnsupportedMediaType => "unsupported_media_type",
        }
    }
}

impl Extractor {
    /// The header the delivery id comes from, when it comes from one.
    pub fn delivery_header(&self) -> Option<&HeaderName> {
        self.delivery.first_header()
    }

    /// The plan for `provider`, with the source's overrides.
    pub fn new(
        provider: Provider,
        dedupe_key: Option<FieldSpec>,
        event_type: Option<FieldSpec>,
        partition_key: Option<FieldSpec>,
    ) -> Extractor {
        let spec = provider.spec();
        let defaults = spec.defaults();
        let (delivery, event) = (defaults.delivery, defaults.event);
        let handshake = spec.has_body_handshake().then_some(provider);
        let delivery = dedupe_key.unwrap_or(delivery);
        let event = event_type.or(event);
        let needs_body = delivery.needs_body()
            || event.as_ref().is_some_and(FieldSpec::needs_body)
            || partition_key.as_ref().is_some_and(FieldSpec::needs_body)
            || handshake.is_some();
        Extractor {
            delivery,
            event,
            key: partition_key,
            handshake,
            non_json_body_hash: defaults.non_json_body_hash,
            needs_body,
        }
    }

    /// Extracts the fields of one verified request (handshakes whose answer needs the
    /// source's key, like Zoom's, are answered only by [`Extractor::extract_for`]).
    pub fn extract(&self, headers: &HeaderMap, body: &[u8]) -> Result<Extracted, ExtractError> {
        self.extract_for(None, headers, body)
    }

    /// Extracts the fields of one request `verifier` accepted.
    pub fn extract_for(
        &self,
        verifier: Option<&Verifier>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Extracted, ExtractError> {
        if !self.needs_body {
            return self.fields(headers, body, None);
        }
        if let Some(ct) = headers.get(http::header::CONTENT_TYPE) {
            let ct = ct.as_bytes();
            let json = ct.len() >= 16 && ct[..16].eq_ignore_ascii_case(b"application/json")
                || ct.windows(5).any(|w| w.eq_ignore_ascii_case(b"+json"));
            if !json {
                // Slack sends form-encoded bodies for slash commands and interactivity;
                // they carry no event id, so hash the body (dedupes exact re-sends).
                if self.non_json_body_hash {
                    let key = hash_hex(body);
                    return Ok(Extracted::Event {
                        delivery_id: key.clone(),
                        event_type: String::new(),
                        key: Bytes::from(key),
                    });
                }
                return Err(ExtractError::UnsupportedMediaType);
            }
        }
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let Scratch { buf, buffers, tape } = &mut *scratch;
            buf.clear();
            buf.extend_from_slice(body);
            let mut t = std::mem::replace(tape, Tape::null()).reset();
            let parsed = simd_json::fill_tape(buf, buffers, &mut t);
            let result = match parsed {
                Ok(()) => self.read_doc(verifier, headers, body, t.as_value()),
                Err(_) => Err(ExtractError::InvalidJson),
            };
            // Keep the tape's allocation for the next request.
            *tape = t.reset();
            result
        })
    }

    fn read_doc(
        &self,
        verifier: Option<&Verifier>,
        headers: &HeaderMap,
        body: &[u8],
        doc: TapeValue<'_, '_>,
    ) -> Result<Extracted, ExtractError> {
        if let Some(provider) = self.handshake {
            let answer = provider
                .spec()
                .body_handshake(verifier, headers, body, &Doc(doc));
            if let Some(answer) = answer {
                return Ok(Extracted::Handshake(answer));
            }
        }
        self.fields(headers, body, Some(doc))
    }

    fn fields(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        doc: Option<TapeValue<'_, '_>>,
    ) -> Result<Extracted, ExtractError> {
        let delivery_id = eval(&self.delivery, headers, body, doc)
            .filter(|s| !s.is_empty())
            .ok_or(ExtractError::MissingDeliveryId)?;
        let event_type = self
            .event
            .as_ref()
            .and_then(|f| eval(f, headers, body, doc))
            .unwrap_or_default();
        let key = match &self.key {
            Some(f) => eval(f, headers, body, doc)
                .map(Bytes::from)
                .unwrap_or_else(|| Bytes::copy_from_slice(delivery_id.as_bytes())),
            None => Bytes::copy_from_slice(delivery_id.as_bytes()),
        };
        Ok(Extracted::Event {
            delivery_id,
            event_type,
            key,
        })
    }
}

struct Scratch {
    buf: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Tape<'static>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        buf: Vec::with_capacity(64 << 10),
        buffers: simd_json::Buffers::new(64 << 10),
        tape: Tape::null(),
    });
}

fn eval(
    f: &FieldSpec,
    headers: &HeaderMap,
    body: &[u8],
    doc: Option<TapeValue<'_, '_>>,
) -> Option<String> {
    match f {
        FieldSpec::Header(name) => headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_owned()),
        FieldSpec::Pointer(tokens) => {
            let mut v = doc?;
            for t in tokens {
                v = match v.as_array() {
                    Some(a) => a.get(t.parse::<usize>().ok()?)?,
                    None => v.get(t.as_str())?,
                };
            }
            scalar_text(v)
        }
        FieldSpec::Any(fs) => fs.iter().find_map(|f| eval(f, headers, body, doc)),
        FieldSpec::BodyHash => Some(hash_hex(body)),
        FieldSpec::TelegramKind => doc?
            .as_object()?
            .keys()
            .find(|k| *k != "update_id")
            .map(str::to_owned),
    }
}

/// A field's text: strings as they are, numbers and booleans as JSON writes them; null,
/// objects and arrays are not usable as an id or key.
fn scalar_text(v: TapeValue<'_, '_>) -> Option<String> {
    if let Some(s) = v.as_str() {
        return Some(s.to_owned());
    }
    if let Some(i) = v.as_i64() {
        return Some(i.to_string());
    }
    if let Some(u) = v.as_u64() {
        return Some(u.to_string());
    }
    if let Some(f) = v.as_f64() {
        return Some(f.to_string());
    }
    v.as_bool().map(|b| b.to_string())
}

fn hash_hex(body: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    hex::encode(&d.as_ref()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Provider {
        Provider::parse(name).unwrap()
    }

    fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn github_from_headers_and_pointer_key() {
        let x = Extractor::new(
            named("github"),
            None,
            None,
            Some(FieldSpec::parse("/repository/full_name").unwrap()),
        );
        let got = x
            .extract(
                &hm(&[
                    ("x-github-delivery", "abc"),
                    ("x-github-event", "push"),
                    ("content-type", "application/json"),
                ]),
                br#"{"repository":{"full_name":"o/r"}}"#,
            )
            .unwrap();
        assert_eq!(
            got,
            Extracted::Event {
                delivery_id: "abc".into(),
                event_type: "push".into(),
                key: Bytes::from_static(b"o/r")
            }
        );
        assert_eq!(
            x.extract(&hm(&[("x-github-event", "push")]), b"{}"),
            Err(ExtractError::MissingDeliveryId)
        );
        assert_eq!(
            x.extract(
                &hm(&[("x-github-delivery", "a"), ("content-type", "text/plain")]),
                b"{}"
            ),
            Err(ExtractError::UnsupportedMediaType)
        );
        assert_eq!(
            x.extract(&hm(&[("x-github-delivery", "a")]), b"{nope"),
            Err(ExtractError::InvalidJson)
        );
    }

    #[test]
    fn stripe_telegram_numbers_and_kinds() {
        let s = Extractor::new(named("stripe"), None, None, None);
        assert_eq!(
            s.extract(&hm(&[]), br#"{"id":"evt_1","type":"charge.succeeded"}"#)
                .unwrap(),
            Extracted::Event {
                delivery_id: "evt_1".into(),
                event_type: "charge.succeeded".into(),
                key: Bytes::from_static(b"evt_1")
            }
        );
        let t = Extractor::new(named("telegram"), None, None, None);
        assert_eq!(
            t.extract(&hm(&[]), br#"{"update_id":123456,"message":{"text":"hi"}}"#)
                .unwrap(),
            Extracted::Event {
                delivery_id: "123456".into(),
                event_type: "message".into(),
                key: Bytes::from_static(b"123456")
            }
        );
    }

    #[test]
    fn handshakes() {
        let s = Extractor::new(named("slack"), None, None, None);
        assert_eq!(
            s.extract(
                &hm(&[]),
                br#"{"type":"url_verification","challenge":"c1","token":"t"}"#
            )
            .unwrap(),
            Extracted::Handshake(Answer::json("{\"challenge\":\"c1\"}".into()))
        );
        let d = Extractor::new(named("discord"), None, None, None);
        assert_eq!(
            d.extract(&hm(&[]), br#"{"type":1,"id":"1"}"#).unwrap(),
            Extracted::Handshake(Answer::json("{\"type\":1}".into()))
        );
    }

    #[test]
    fn overrides_and_pointer_escapes() {
        let x = Extractor::new(
            named("generic-hmac"),
            Some(FieldSpec::parse("header:x-id").unwrap()),
            Some(FieldSpec::parse("/a~1b/0").unwrap()),
            None,
        );
        assert_eq!(
            x.extract(&hm(&[("x-id", "7")]), br#"{"a/b":["ev",2]}"#)
                .unwrap(),
            Extracted::Event {
                delivery_id: "7".into(),
                event_type: "ev".into(),
                key: Bytes::from_static(b"7")
            }
        );
        assert!(FieldSpec::parse("nope").is_err());
    }
}
