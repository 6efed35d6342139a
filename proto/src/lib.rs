//! hookgate's event model and the record contract downstream consumers depend on.
//!
//! Layout:
//! - [`Event`]: one accepted webhook, its raw body shared (refcounted) with every sink.
//! - [`header`]: the names of the Kafka record headers (the external contract).
//! - [`Event::record_headers`] / [`Event::from_record`]: the event as a Kafka record and back.
//! - [`Event::encode`] / [`Event::decode`]: the compact binary frame the spool stores.
//! - `hookgate.proto`: an optional protobuf envelope with the same fields.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
pub use ulid::Ulid;

/// Names of the Kafka record headers every accepted event carries.
pub mod header {
    /// ULID assigned by hookgate when the event was accepted.
    pub const ID: &str = "hookgate-id";
    /// The source name (the `{source}` path segment).
    pub const SOURCE: &str = "hookgate-source";
    /// The provider (signature scheme) of the source, kebab-case.
    pub const PROVIDER: &str = "hookgate-provider";
    /// The provider's event type, when it has one.
    pub const EVENT: &str = "hookgate-event";
    /// The provider's delivery id (the dedupe key).
    pub const DELIVERY_ID: &str = "hookgate-delivery-id";
    /// When hookgate received the event: RFC 3339, UTC, milliseconds.
    pub const RECEIVED_AT: &str = "hookgate-received-at";
    /// The content type of the original request.
    pub const CONTENT_TYPE: &str = "content-type";
}

/// One accepted webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// ULID assigned at acceptance; stays the same through spool, retries and replays.
    pub id: Ulid,
    /// Source name (path segment).
    pub source: Arc<str>,
    /// Provider name, kebab-case.
    pub provider: Arc<str>,
    /// Kafka topic the event belongs to.
    pub topic: Arc<str>,
    /// Provider event type (e.g. `push`), empty when the provider has none.
    pub event_type: String,
    /// Provider delivery id.
    pub delivery_id: String,
    /// Partition key bytes.
    pub key: Bytes,
    /// Receipt time, milliseconds since the Unix epoch.
    pub received_at_ms: i64,
    /// Original `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Original request headers the source keeps, lower-case names.
    pub kept_headers: Vec<(String, Bytes)>,
    /// The raw body, exactly as received.
    pub body: Bytes,
}

/// Why bytes could not be read back as an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The frame ended before a field did.
    #[error("record truncated")]
    Truncated,
    /// The frame version is not one this build reads.
    #[error("unknown record version {0}")]
    Version(u8),
    /// A text field is not UTF-8 or the id is not a ULID.
    #[error("invalid field {0}")]
    Invalid(&'static str),
}

const FRAME_VERSION: u8 = 1;

/// 9999-12-31T23:59:59.999Z in milliseconds since the Unix epoch: the latest time RFC 3339
/// (four-digit years) can write.
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

impl Event {
    /// Receipt time formatted as the `hookgate-received-at` header (RFC 3339, UTC, ms).
    ///
    /// Times outside what RFC 3339 can write (before 1970 here, after the year 9999) are
    /// clamped to its ends: such a time only comes from a damaged or hand-made record, and
    /// formatting one must not panic (humantime's formatter errors beyond 9999, which
    /// `to_string` turns into a panic).
    pub fn received_at_rfc3339(&self) -> String {
        let ms = self.received_at_ms.clamp(0, MAX_RFC3339_MS);
        let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }

    /// The ULID as its 26-character text.
    pub fn id_string(&self) -> String {
        self.id.to_string()
    }

    /// [`Event::received_at_rfc3339`] written into `buf` instead of a new `String`.
    fn received_at_rfc3339_into<'b>(&self, buf: &'b mut [u8; 32]) -> &'b [u8] {
        use std::io::Write as _;
        let ms = self.received_at_ms.clamp(0, MAX_RFC3339_MS);
        let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
        let mut rest = &mut buf[..];
        // 24 bytes always fit (the clamp keeps the year at four digits).
        let _ = write!(rest, "{}", humantime::format_rfc3339_millis(t));
        let len = 32 - rest.len();
        &buf[..len]
    }

    /// Calls `f` with each record header of [`Event::record_headers`], in the same order,
    /// without allocating: the id and the receipt time are rendered into stack buffers.
    /// This is what the producer uses for every event.
    pub fn for_each_record_header(&self, mut f: impl FnMut(&str, &[u8])) {
        let mut id = [0u8; ulid::ULID_LEN];
        f(header::ID, self.id.array_to_str(&mut id).as_bytes());
        f(header::SOURCE, self.source.as_bytes());
        f(header::PROVIDER, self.provider.as_bytes());
        f(header::EVENT, self.event_type.as_bytes());
        f(header::DELIVERY_ID, self.delivery_id.as_bytes());
        let mut at = [0u8; 32];
        f(header::RECEIVED_AT, self.received_at_rfc3339_into(&mut at));
        if let Some(ct) = &self.content_type {
            f(header::CONTENT_TYPE, ct.as_bytes());
        }
        for (name, value) in &self.kept_headers {
            f(name.as_str(), value);
        }
    }

    /// How many record headers the event has (what [`Event::for_each_record_header`] calls
    /// back with).
    pub fn record_header_count(&self) -> usize {
        6 + usize::from(self.content_type.is_some()) + self.kept_headers.len()
    }

    /// The record headers in contract order, followed by the kept original headers.
    /// Values borrow from the event where they can.
    pub fn record_headers(&self) -> Vec<(&str, HeaderValue<'_>)> {
        let mut out = Vec::with_capacity(7 + self.kept_headers.len());
        out.push((
            header::ID,
            HeaderValue::Owned(self.id_string().into_bytes()),
        ));
        out.push((
            header::SOURCE,
            HeaderValue::Borrowed(self.source.as_bytes()),
        ));
        out.push((
            header::PROVIDER,
            HeaderValue::Borrowed(self.provider.as_bytes()),
        ));
        out.push((
            header::EVENT,
            HeaderValue::Borrowed(self.event_type.as_bytes()),
        ));
        out.push((
            header::DELIVERY_ID,
            HeaderValue::Borrowed(self.delivery_id.as_bytes()),
        ));
        out.push((
            header::RECEIVED_AT,
            HeaderValue::Owned(self.received_at_rfc3339().into_bytes()),
        ));
        if let Some(ct) = &self.content_type {
            out.push((header::CONTENT_TYPE, HeaderValue::Borrowed(ct.as_bytes())));
        }
        for (name, value) in &self.kept_headers {
            out.push((name.as_str(), HeaderValue::Borrowed(value)));
        }
        out
    }

    /// Rebuilds an event from a Kafka record (topic, key, value and headers), as a
    /// consumer of hookgate's topics would.
    pub fn from_record<'a>(
        topic: &str,
        key: Option<&[u8]>,
        value: Bytes,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Event, DecodeError> {
        let mut ev = Event {
            id: Ulid::nil(),
            source: Arc::from(""),
            provider: Arc::from(""),
            topic: Arc::from(topic),
            event_type: String::new(),
            delivery_id: String::new(),
            key: Bytes::copy_from_slice(key.unwrap_or_default()),
            received_at_ms: 0,
            content_type: None,
            kept_headers: Vec::new(),
            body: value,
        };
        let text = |v: &[u8], f: &'static str| {
            std::str::from_utf8(v)
                .map(str::to_owned)
                .map_err(|_| DecodeError::Invalid(f))
        };
        let mut have_id = false;
        for (name, v) in headers {
            match name {
                header::ID => {
                    ev.id = Ulid::from_string(&text(v, "id")?)
                        .map_err(|_| DecodeError::Invalid("id"))?;
                    have_id = true;
                }
                header::SOURCE => ev.source = Arc::from(text(v, "source")?),
                header::PROVIDER => ev.provider = Arc::from(text(v, "provider")?),
                header::EVENT => ev.event_type = text(v, "event")?,
                header::DELIVERY_ID => ev.delivery_id = text(v, "delivery_id")?,
                header::RECEIVED_AT => {
                    let t = humantime::parse_rfc3339(&text(v, "received_at")?)
                        .map_err(|_| DecodeError::Invalid("received_at"))?;
                    ev.received_at_ms = t
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0);
                }
                header::CONTENT_TYPE => ev.content_type = Some(text(v, "content_type")?),
                other => ev
                    .kept_headers
                    .push((other.to_owned(), Bytes::copy_from_slice(v))),
            }
        }
        if !have_id {
            return Err(DecodeError::Invalid("id"));
        }
        Ok(ev)
    }

    /// Appends the spool frame of this event to `out` (without a length prefix or checksum;
    /// the spool adds those).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(FRAME_VERSION);
        out.extend_from_slice(&self.id.0.to_be_bytes());
        out.extend_from_slice(&self.received_at_ms.to_be_bytes());
        put(out, self.source.as_bytes());
        put(out, self.provider.as_bytes());
        put(out, self.topic.as_bytes());
        put(out, self.event_type.as_bytes());
        put(out, self.delivery_id.as_bytes());
        put(out, &self.key);
        match &self.content_type {
            Some(ct) => {
                out.push(1);
                put(out, ct.as_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.kept_headers.len() as u32).to_be_bytes());
        for (n, v) in &self.kept_headers {
            put(out, n.as_bytes());
            put(out, v);
        }
        put(out, &self.body);
    }

    /// Reads a frame written by [`Event::encode`]. `frame` is shared so the body is not copied.
    pub fn decode(frame: &Bytes) -> Result<Event, DecodeError> {
        let mut r = Reader { buf: frame, pos: 0 };
        let version = r.u8()?;
        if version != FRAME_VERSION {
            return Err(DecodeError::Version(version));
        }
        let id = Ulid(u128::from_be_bytes(r.array()?));
        let received_at_ms = i64::from_be_bytes(r.array()?);
        let source = Arc::from(r.str("source")?);
        let provider = Arc::from(r.str("provider")?);
        let topic = Arc::from(r.str("topic")?);
        let event_type = r.str("event")?.to_owned();
        let delivery_id = r.str("delivery_id")?.to_owned();
        let key = r.bytes()?;
        let content_type = match r.u8()? {
            0 => None,
            _ => Some(r.str("content_type")?.to_owned()),
        };
        let n = u32::from_be_bytes(r.array()?) as usize;
        let mut kept_headers = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let name = r.str("header")?.to_owned();
            kept_headers.push((name, r.bytes()?));
        }
        let body = r.bytes()?;
        Ok(Event {
            id,
            source,
            provider,
            topic,
            event_type,
            delivery_id,
            key,
            received_at_ms,
            content_type,
            kept_headers,
            body,
        })
    }

    /// The event as one JSON object (what `hookgate spool read` and `dlq list` print).
    /// The body is text when it is UTF-8, else base64 under `body_base64`.
    pub fn to_json(&self) -> serde_json::Value {
        use base64::Engine as _;
        let mut m = serde_json::Map::new();
        m.insert("id".into(), self.id_string().into());
        m.insert("source".into(), (*self.source).into());
        m.insert("provider".into(), (*self.provider).into());
        m.insert("topic".into(), (*self.topic).into());
        m.insert("event".into(), self.event_type.clone().into());
        m.insert("delivery_id".into(), self.delivery_id.clone().into());
        m.insert(
            "key".into(),
            String::from_utf8_lossy(&self.key).into_owned().into(),
        );
        m.insert("received_at".into(), self.received_at_rfc3339().into());
        if let Some(ct) = &self.content_type {
            m.insert("content_type".into(), ct.clone().into());
        }
        match std::str::from_utf8(&self.body) {
            Ok(s) => m.insert("body".into(), s.into()),
            Err(_) => m.insert(
                "body_base64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(&self.body)
                    .into(),
            ),
        };
        serde_json::Value::Object(m)
    }
}

/// A record header value: borrowed from the event or built for the record.
#[derive(Debug)]
pub enum HeaderValue<'a> {
    /// Borrowed from the event.
    Borrowed(&'a [u8]),
    /// Formatted for the record.
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for HeaderValue<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            HeaderValue::Borrowed(b) => b,
            HeaderValue::Owned(v) => v,
        }
    }
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn put(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        if end > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let r = self.pos..end;
        self.pos = end;
        Ok(r)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let r = self.take(1)?;
        Ok(self.buf[r.start])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let r = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[r]);
        Ok(a)
    }
    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        let r = self.take(n)?;
        Ok(self.buf.slice(r))
    }
    fn str(&mut self, field: &'static str) -> Result<&str, DecodeError> {
        let n = u32::from_be_bytes(self.array()?) as usize;
        let r = self.take(n)?;
        std::str::from_utf8(&self.buf[r]).map_err(|_| DecodeError::Invalid(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            id: Ulid::new(),
            source: Arc::from("github"),
            provider: Arc::from("github"),
            topic: Arc::from("webhooks.github"),
            event_type: "push".into(),
            delivery_id: "d-1".into(),
            key: Bytes::from_static(b"octo/repo"),
            received_at_ms: 1_700_000_000_123,
            content_type: Some("application/json".into()),
            kept_headers: vec![("x-github-hook-id".into(), Bytes::from_static(b"42"))],
            body: Bytes::from_static(b"{\"a\":1}\xff"),
        }
    }

    #[test]
    fn frame_round_trips() {
        let ev = sample();
        let mut buf = Vec::new();
        ev.encode(&mut buf);
        let back = Event::decode(&Bytes::from(buf)).unwrap();
        assert_eq!(back, ev);
    }

    /// Found by the `event` fuzz target (fuzz/regressions/event/): a spool record whose
    /// receipt time is past the year 9999 made `to_json` (`hookgate spool read`) and the
    /// Kafka record headers panic inside humantime's formatter.
    #[test]
    fn out_of_range_receipt_times_are_clamped_not_panics() {
        let mut ev = sample();
        for (ms, want) in [
            (i64::MAX, "9999-12-31T23:59:59.999Z"),
            (MAX_RFC3339_MS + 1, "9999-12-31T23:59:59.999Z"),
            (MAX_RFC3339_MS, "9999-12-31T23:59:59.999Z"),
            (-1, "1970-01-01T00:00:00.000Z"),
            (i64::MIN, "1970-01-01T00:00:00.000Z"),
        ] {
            ev.received_at_ms = ms;
            assert_eq!(ev.received_at_rfc3339(), want, "{ms}");
            assert_eq!(ev.to_json()["received_at"], want);
        }
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let mut buf = Vec::new();
        sample().encode(&mut buf);
        for n in 0..buf.len() {
            assert!(Event::decode(&Bytes::copy_from_slice(&buf[..n])).is_err());
        }
    }

    #[test]
    fn headers_by_callback_are_the_record_headers() {
        let mut ev = sample();
        for (ms, ct) in [(ev.received_at_ms, true), (i64::MAX, false), (-5, true)] {
            ev.received_at_ms = ms;
            ev.content_type = ct.then(|| "application/json".to_owned());
            let mut got: Vec<(String, Vec<u8>)> = Vec::new();
            ev.for_each_record_header(|k, v| got.push((k.to_owned(), v.to_vec())));
            let want: Vec<(String, Vec<u8>)> = ev
                .record_headers()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_ref().to_vec()))
                .collect();
            assert_eq!(got, want);
            assert_eq!(got.len(), ev.record_header_count());
        }
    }

    #[test]
    fn record_headers_round_trip() {
        let ev = sample();
        let hs = ev.record_headers();
        assert_eq!(hs[5].1.as_ref(), b"2023-11-14T22:13:20.123Z");
        let back = Event::from_record(
            &ev.topic,
            Some(&ev.key),
            ev.body.clone(),
            hs.iter().map(|(n, v)| (*n, v.as_ref())),
        )
        .unwrap();
        assert_eq!(back, ev);
    }
}
