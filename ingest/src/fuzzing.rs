//! The bodies of the cargo-fuzz targets in `fuzz/`, as ordinary Rust so the normal test
//! suite replays the committed corpora without nightly (the unit tests in `fuzzing/corpus.rs`).
//!
//! Each `fn(&[u8])` here is one target: it decodes the fuzzer's bytes into an input for the
//! code under test, runs it, and panics only when an invariant breaks (a panic inside the
//! code under test is a finding too). The matching `encode_*` functions build inputs from
//! real requests, configs and records: the seed corpora are written with them
//! (`cargo test --workspace --lib -- --ignored fuzzing::corpus::write_seeds`).
//!
//! Input layout shared by the targets that take headers: a head of `\n`-separated lines,
//! a blank line (`\n\n`), then the body; a head line `name: value` is one header (lines
//! that are not a valid header are skipped). Not part of the public API.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Config;
use crate::extract::{ExtractError, Extracted, Extractor, FieldSpec};
use crate::verify::{
    sign_request, GenericHmacOptions, HmacAlgorithm, Options, Provider, SigEncoding, Signed,
    Verifier, VerifyError,
};
use hookgate_proto::{Event, Ulid};

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod corpus;

/// A fuzz target: its directory name under `fuzz/corpus/` and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name. `fuzz/fuzz_targets/<name>.rs` calls the function of the same name
/// and the corpus replay test walks `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/`.
pub const TARGETS: &[Target] = &[
    ("verify", verify),
    ("extract", extract),
    ("config", config),
    ("event", event),
    ("spool", spool),
    ("markup", markup),
    ("proxy", proxy),
];

/// The "current time" every verify input is checked against (seeds are signed at it).
pub const NOW: i64 = 1_700_000_000;
/// Signature tolerance of the fuzzed verifiers.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// The secret each provider's fuzzed verifier accepts (the second of its two secrets; the
/// first is a rotated-out one), and what [`sign_with`] takes for it: the provider's first
/// example secret (for Discord the private seed; the verifier holds its public key).
pub fn signing_secret(provider: Provider) -> &'static str {
    provider.spec().example_secrets()[0]
}

/// The rotated-out secret of the fuzzed verifier, as configured.
fn old_secret(provider: Provider) -> String {
    let spec = provider.spec();
    spec.config_secret(spec.example_secrets()[1])
        .unwrap_or_default()
}

/// The options each provider's fuzzed verifier is built with (generic-hmac's come from
/// the flags byte).
fn options_for(provider: Provider, flags: u8) -> Options {
    let mut options = provider.spec().example_options();
    options.tolerance = TOLERANCE;
    if options.generic.is_some() {
        options.generic = Some(generic_options(flags));
    }
    options
}

/// The generic-hmac options selected by `flags`: bits 0-1 the algorithm (1 SHA-1, 2 SHA-512,
/// else SHA-256), bit 2 base64 (else hex), bit 3 the prefix `sha256=` (else none).
pub fn generic_options(flags: u8) -> GenericHmacOptions {
    GenericHmacOptions {
        header: HeaderName::from_static("x-signature"),
        algorithm: match flags & 3 {
            1 => HmacAlgorithm::Sha1,
            2 => HmacAlgorithm::Sha512,
            _ => HmacAlgorithm::Sha256,
        },
        encoding: if flags & 4 == 0 {
            SigEncoding::Hex
        } else {
            SigEncoding::Base64
        },
        prefix: if flags & 8 == 0 {
            String::new()
        } else {
            "sha256=".into()
        },
    }
}

/// The bits of the flags byte [`generic_options`] reads.
fn generic_variant(flags: u8) -> u8 {
    flags & 0x0f
}

struct Verifiers {
    plain: Vec<(Provider, Verifier)>,
    generic: Vec<(u8, Verifier)>,
}

fn verifiers() -> &'static Verifiers {
    static V: OnceLock<Verifiers> = OnceLock::new();
    V.get_or_init(|| {
        let build = |p: Provider, flags: u8| {
            let current = p
                .spec()
                .config_secret(signing_secret(p))
                .unwrap_or_default();
            Verifier::with_options(p, &[old_secret(p), current], options_for(p, flags))
        };
        let plain = Provider::ALL
            .iter()
            .filter(|p| !is_generic(**p))
            .filter_map(|p| build(*p, 0).ok().map(|v| (*p, v)))
            .collect();
        let generic = (0..16u8)
            .map(generic_variant)
            .filter_map(|f| build(GENERIC, f).ok().map(|v| (f, v)))
            .collect();
        Verifiers { plain, generic }
    })
}

/// Whether the provider takes its signature description from config (generic-hmac):
/// its fuzzed verifiers vary with the flags byte.
fn is_generic(provider: Provider) -> bool {
    provider.spec().example_options().generic.is_some()
}

const GENERIC: Provider = crate::verify::providers::generic_hmac::PROVIDER;

fn verifier_for(provider: Provider, flags: u8) -> Option<&'static Verifier> {
    let v = verifiers();
    if is_generic(provider) {
        let f = generic_variant(flags);
        v.generic.iter().find(|(g, _)| *g == f).map(|(_, v)| v)
    } else {
        v.plain.iter().find(|(p, _)| *p == provider).map(|(_, v)| v)
    }
}

/// Splits at the first blank line: (head, body). Without one, everything is head.
fn split_head(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[]),
    }
}

fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

/// `name: value` (one optional space after the colon) as a header, if both are valid.
fn header_line(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|b| *b == b':')?;
    let value = &line[colon + 1..];
    let value = value.strip_prefix(b" ").unwrap_or(value);
    Some((
        HeaderName::from_bytes(&line[..colon]).ok()?,
        HeaderValue::from_bytes(value).ok()?,
    ))
}

fn header_map<'a>(lines: impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines.filter_map(header_line) {
        map.append(name, value);
    }
    map
}

fn head_and_body(head: &[Vec<u8>], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in head {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
    if head.is_empty() {
        out.push(b'\n');
    }
    out.extend_from_slice(body);
    out
}

fn header_lines(headers: &[(String, String)]) -> Vec<Vec<u8>> {
    headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}").into_bytes())
        .collect()
}

/// The selector byte of `provider` in [`verify`] and [`extract`] inputs.
pub fn provider_byte(provider: Provider) -> u8 {
    Provider::ALL
        .iter()
        .position(|p| *p == provider)
        .unwrap_or(0) as u8
}

fn provider_of(byte: u8) -> Provider {
    Provider::ALL[usize::from(byte) % Provider::ALL.len()]
}

/// A [`verify`] input: provider selector, generic-hmac flags, headers, body.
pub fn encode_verify(
    provider: Provider,
    flags: u8,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = vec![provider_byte(provider), flags];
    out.extend(head_and_body(&header_lines(headers), body));
    out
}

/// The headers the provider would send for `body` at [`NOW`], signed with the secret the
/// fuzzed verifier accepts.
pub fn signed_headers(provider: Provider, flags: u8, body: &[u8]) -> Vec<(String, String)> {
    signed(provider, flags, body).headers
}

/// The whole request (headers and body: schemes that sign inside the body wrap `body`)
/// the provider would send at [`NOW`], signed with the secret the fuzzed verifier accepts.
pub fn signed(provider: Provider, flags: u8, body: &[u8]) -> Signed {
    sign_request(
        provider,
        signing_secret(provider),
        body,
        NOW,
        &options_for(provider, flags),
    )
    .unwrap_or(Signed {
        headers: Vec::new(),
        body: body.to_vec(),
    })
}

/// Target `verify`: every provider's verifier (byte 0 selects it, byte 1 the generic-hmac
/// variant) on arbitrary headers and body must answer without panicking; and the body
/// signed by the provider's signer must verify.
pub fn verify(data: &[u8]) {
    let _ = verify_outcome(data);
}

/// What [`verify`] decided for the input's own headers (`None`: too short to say).
pub fn verify_outcome(data: &[u8]) -> Option<Result<(), VerifyError>> {
    let [sel, flags, rest @ ..] = data else {
        return None;
    };
    let provider = provider_of(*sel);
    let Some(v) = verifier_for(provider, *flags) else {
        panic!("the fuzzed {provider:?} verifier does not build");
    };
    let (head, body) = split_head(rest);
    let headers = header_map(lines(head));
    let outcome = v.verify(&headers, body, NOW);
    let own = signed(provider, *flags, body);
    let own_headers = header_map(header_lines(&own.headers).iter().map(Vec::as_slice));
    assert_eq!(
        v.verify(&own_headers, &own.body, NOW),
        Ok(()),
        "{provider:?}: a body signed by our own signer is refused"
    );
    Some(outcome)
}

/// An [`extract`] input: provider selector, the three overrides (dedupe key, event type,
/// partition key; `None` = the provider default), headers, body.
pub fn encode_extract(
    provider: Provider,
    overrides: [Option<&str>; 3],
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut head: Vec<Vec<u8>> = overrides
        .iter()
        .map(|o| match o {
            Some(spec) => format!("={spec}").into_bytes(),
            None => b"-".to_vec(),
        })
        .collect();
    head.extend(header_lines(headers));
    let mut out = vec![provider_byte(provider)];
    out.extend(head_and_body(&head, body));
    out
}

/// Target `extract`: field specs (`header:NAME`, JSON pointers) parsed from the input and
/// applied to arbitrary headers and body (simd-json) must not panic, an accepted event has
/// a delivery id, and a second run (reusing the thread's parse buffers) gives the same.
pub fn extract(data: &[u8]) {
    let _ = extract_outcome(data);
}

/// What [`extract`] found (`None`: no provider byte).
pub fn extract_outcome(data: &[u8]) -> Option<Result<Extracted, ExtractError>> {
    let [sel, rest @ ..] = data else {
        return None;
    };
    let (head, body) = split_head(rest);
    let mut head = head.split(|b| *b == b'\n');
    let mut spec = || {
        let line = head.next()?;
        let text = std::str::from_utf8(line.strip_prefix(b"=")?).ok()?;
        FieldSpec::parse(text).ok()
    };
    let (dedupe, event, key) = (spec(), spec(), spec());
    let headers = header_map(head);
    let x = Extractor::new(provider_of(*sel), dedupe, event, key);
    let first = x.extract(&headers, body);
    match &first {
        Ok(Extracted::Event { delivery_id, .. }) => {
            assert!(!delivery_id.is_empty(), "an event without a delivery id");
        }
        Ok(Extracted::Handshake(answer)) => {
            assert!(
                answer.content_type != "application/json"
                    || serde_json::from_str::<serde_json::Value>(&answer.body).is_ok(),
                "a JSON handshake answer that is not JSON"
            );
        }
        Err(e) => assert!(!e.code().is_empty()),
    }
    let second = x.extract(&headers, body);
    assert_eq!(first, second, "extraction is not deterministic");
    // Another document parsed in between must not leak into the next parse either.
    let _ = x.extract(&headers, br#"{"id":"other","type":"x","event_id":"e"}"#);
    assert_eq!(x.extract(&headers, body), first, "a previous parse leaks");
    Some(first)
}

/// A [`config`] input: environment (`NAME=value` lines) and the TOML text.
pub fn encode_config(env: &[(&str, &str)], toml: &str) -> Vec<u8> {
    let head: Vec<Vec<u8>> = env
        .iter()
        .map(|(k, v)| format!("{k}={v}").into_bytes())
        .collect();
    head_and_body(&head, toml.as_bytes())
}

/// Target `config`: parsing a config text with `${VAR}` interpolation and `HOOKGATE__…`
/// overrides from an arbitrary environment answers a config or a list of problems, never a
/// panic; every problem has a message.
pub fn config(data: &[u8]) {
    let _ = config_outcome(data);
}

/// Whether [`config`] parsed the input (`None`: the text is not UTF-8).
pub fn config_outcome(data: &[u8]) -> Option<Result<(), Vec<String>>> {
    let (head, body) = split_head(data);
    let text = std::str::from_utf8(body).ok()?;
    let env: HashMap<String, String> = lines(head)
        .filter_map(|l| {
            let l = std::str::from_utf8(l).ok()?;
            let (k, v) = l.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect();
    match Config::parse(text, "<fuzz>", &env) {
        Ok((cfg, warnings)) => {
            for w in &warnings {
                assert!(!w.is_empty());
            }
            for s in &cfg.sources {
                let _ = s.build_verifier();
                let _ = cfg.topic_of(s);
            }
            let _ = cfg.max_record_bytes();
            Some(Ok(()))
        }
        Err(errs) => {
            assert!(!errs.0.is_empty(), "an error without a problem");
            let messages: Vec<String> = errs.0.iter().map(|p| p.to_string()).collect();
            for m in &messages {
                assert!(!m.is_empty());
            }
            Some(Err(messages))
        }
    }
}

/// Mode byte of an [`event`] input holding a spool frame ([`Event::encode`]).
pub const EVENT_FRAME: u8 = 0;
/// Mode byte of an [`event`] input holding a Kafka record: `name: value` header lines, a
/// blank line, the value.
pub const EVENT_RECORD: u8 = 1;

/// An [`event`] input of the spool frame of `ev`.
pub fn encode_event_frame(ev: &Event) -> Vec<u8> {
    let mut out = vec![EVENT_FRAME];
    ev.encode(&mut out);
    out
}

/// An [`event`] input of the Kafka record of `ev` (its headers and body).
pub fn encode_event_record(ev: &Event) -> Vec<u8> {
    let head: Vec<Vec<u8>> = ev
        .record_headers()
        .iter()
        .map(|(n, v)| {
            let mut line = format!("{n}: ").into_bytes();
            line.extend_from_slice(v.as_ref());
            line
        })
        .collect();
    let mut out = vec![EVENT_RECORD];
    out.extend(head_and_body(&head, &ev.body));
    out
}

/// Latest receipt time the record header can carry and read back (year 9999).
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

/// Target `event`: decoding a spool frame (mode 0) or a Kafka record (mode 1) answers an
/// event or an error; a decoded event encodes and decodes back to itself, and (for
/// receipt times a record header can carry) its Kafka record reads back as the same event.
pub fn event(data: &[u8]) {
    let [mode, rest @ ..] = data else {
        return;
    };
    let ev = if mode & 1 == EVENT_FRAME {
        match Event::decode(&Bytes::copy_from_slice(rest)) {
            Ok(ev) => ev,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return;
            }
        }
    } else {
        let (head, body) = split_head(rest);
        let pairs: Vec<(&str, &[u8])> = lines(head)
            .filter_map(|l| {
                let colon = l.iter().position(|b| *b == b':')?;
                let name = std::str::from_utf8(&l[..colon]).ok()?;
                let value = &l[colon + 1..];
                Some((name, value.strip_prefix(b" ").unwrap_or(value)))
            })
            .collect();
        match Event::from_record(
            "fuzz-topic",
            Some(b"key"),
            Bytes::copy_from_slice(body),
            pairs,
        ) {
            Ok(ev) => ev,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return;
            }
        }
    };
    event_invariants(&ev);
}

fn event_invariants(ev: &Event) {
    let mut frame = Vec::new();
    ev.encode(&mut frame);
    assert_eq!(
        Event::decode(&Bytes::from(frame)).as_ref(),
        Ok(ev),
        "encode/decode does not round-trip"
    );
    let _ = ev.to_json();
    let _ = ev.id_string();
    let contract =
        |n: &str| n.starts_with("hookgate-") || n == hookgate_proto::header::CONTENT_TYPE;
    if (0..=MAX_RFC3339_MS).contains(&ev.received_at_ms)
        && !ev.kept_headers.iter().any(|(n, _)| contract(n))
    {
        let headers = ev.record_headers();
        let back = Event::from_record(
            &ev.topic,
            Some(&ev.key),
            ev.body.clone(),
            headers.iter().map(|(n, v)| (*n, v.as_ref())),
        );
        assert_eq!(
            back.as_ref(),
            Ok(ev),
            "the Kafka record does not round-trip"
        );
    } else {
        let _ = ev.received_at_rfc3339();
    }
}

/// A sample event, for seeds and tests.
pub fn sample_event(n: u32, body: &[u8]) -> Event {
    Event {
        id: Ulid(0x0190_0000_0000_0000_0000_0000_0000_0000 + u128::from(n)),
        source: Arc::from("github"),
        provider: Arc::from("github"),
        topic: Arc::from("webhooks"),
        event_type: "push".into(),
        delivery_id: format!("72d3162e-cc78-11e3-81ab-4c9367dc0958-{n}"),
        key: Bytes::from_static(b"octo/repo"),
        received_at_ms: 1_700_000_000_123 + i64::from(n),
        content_type: Some("application/json".into()),
        kept_headers: vec![("x-github-hook-id".into(), Bytes::from_static(b"292430182"))],
        body: Bytes::copy_from_slice(body),
    }
}

/// Target `spool`: a spool segment's bytes, recovered and read as the spool does at open
/// and on read (see `hookgate_sinks::log::spool::fuzzing::segment`); every event read
/// back also round-trips.
pub fn spool(data: &[u8]) {
    for ev in hookgate_sinks::log::spool::fuzzing::segment(data) {
        event_invariants(&ev);
    }
}

/// A [`markup`] input: markup selector, the part size, the text.
pub fn encode_markup(markup: hookgate_sinks::chat::markup::Markup, max: u8, text: &str) -> Vec<u8> {
    use hookgate_sinks::chat::markup::Markup;
    let sel = Markup::ALL.iter().position(|m| *m == markup).unwrap_or(0) as u8;
    let mut out = vec![sel, max];
    out.extend_from_slice(text.as_bytes());
    out
}

/// Target `markup`: the chat splitter on arbitrary text (byte 0 selects the markup, byte 1
/// the part size). There is always a part; for the markups that add nothing at a cut
/// (all but Telegram HTML, which closes and reopens tags) no part exceeds the size and no
/// visible character is lost, added or reordered.
pub fn markup(data: &[u8]) {
    use hookgate_sinks::chat::markup::{split, utf16_len, Markup};
    let [sel, max, rest @ ..] = data else {
        return;
    };
    let markup = Markup::ALL[usize::from(*sel) % Markup::ALL.len()];
    let text = String::from_utf8_lossy(rest);
    let max = usize::from(*max);
    let parts = split(&text, max, markup);
    assert!(!parts.is_empty(), "split returned no part");
    let limit = max.max(16);
    for part in &parts {
        if markup != Markup::TelegramHtml {
            assert!(
                utf16_len(part) <= limit,
                "a {markup:?} part of {} units exceeds {limit}",
                utf16_len(part)
            );
        }
    }
    if markup != Markup::TelegramHtml {
        let visible = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        assert_eq!(
            visible(&parts.concat()),
            visible(&text),
            "{markup:?}: the parts do not hold the text"
        );
    }
}

/// A [`proxy`] input: one selector byte, then the bytes a connection starts with (or, with
/// an odd selector, a forwarding header's value).
///
/// The PROXY protocol parser on the bytes a peer sends first: never panics, never claims
/// more bytes than it was given, gives the same answer on exactly the bytes it consumed
/// (so nothing after the header is eaten), and asks for at most the spec's maximum. With
/// an odd selector, the bytes are an `X-Forwarded-For` and a `Forwarded` value for
/// [`crate::edge::proxy::resolve_client`], whose answer is the peer or an address the
/// headers name.
pub fn proxy(data: &[u8]) {
    use crate::edge::proxy::{needed, parse, resolve_client};
    let [sel, rest @ ..] = data else {
        return;
    };
    if sel % 2 == 0 {
        let need = needed(rest);
        assert!(need <= 16 + 65_535, "needed() asks for {need} bytes");
        if let Ok(Some((header, used))) = parse(rest) {
            assert!(
                used <= rest.len(),
                "consumed {used} of {} bytes",
                rest.len()
            );
            assert!(used > 0);
            match parse(rest.get(..used).unwrap_or_default()) {
                Ok(Some((again, n))) => {
                    assert_eq!(n, used);
                    assert_eq!(again, header);
                }
                other => panic!("the consumed prefix parses differently: {other:?}"),
            }
        }
        return;
    }
    let Ok(value) = http::HeaderValue::from_bytes(rest) else {
        return;
    };
    let peer = std::net::IpAddr::from([127, 0, 0, 1]);
    let trusted: Vec<ipnet::IpNet> = ["127.0.0.0/8", "10.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    for name in ["x-forwarded-for", "forwarded"] {
        let mut headers = http::HeaderMap::new();
        headers.append(name, value.clone());
        headers.append(name, value.clone());
        let client = resolve_client(peer, &headers, &trusted);
        let text = String::from_utf8_lossy(rest);
        assert!(
            client == peer || text.contains(&client.to_string()) || client.is_ipv6(),
            "{name}: {client} is neither the peer nor named in {text:?}"
        );
    }
}
