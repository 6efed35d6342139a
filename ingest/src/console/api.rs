//! The router of `/console/*` and `/api/v1/*`, and the JSON API. Errors are
//! `{"error": code, "message": text}` with a stable code, like the rest of hookgate.

// The helpers return the finished error response as their `Err`: an admin request path,
// where the size of a `Result` does not matter and early returns read best.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hookgate_proto::{Event, Ulid};
use hookgate_sinks::dispatch::{self, Selection};
use hookgate_sinks::log::Position;
use hookgate_sinks::Log;
use http::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use serde_json::{json, Value};

use super::auth::{self, Door};
use super::pages;
use super::stats::{self, quantile, Sample};
use super::{logread, Console, EventMeta};

/// Largest request body the console reads (login form, replay requests).
const MAX_BODY: usize = 64 * 1024;
/// Most events or rejections one list answer holds.
const MAX_LIMIT: usize = 1000;
/// Records read per spool read while looking an event up.
const SCAN_BATCH: usize = 256;

/// A JSON answer.
pub fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(r.headers_mut());
    r
}

/// A JSON error with its stable code.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(status, &json!({"error": code, "message": message}))
}

pub(crate) fn no_store(h: &mut HeaderMap) {
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
}

fn too_many(wait: u32) -> Response<Full<Bytes>> {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "login_rate_limited",
        "too many wrong bearer tokens from this address; retry later",
    );
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(wait));
    r
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
pub(crate) async fn read_body<B>(body: B) -> Result<Bytes, Response<Full<Bytes>>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the request body is too large or could not be read",
        )),
    }
}

/// Serves `/console/*` and `/api/v1/*` on the admin listener.
pub async fn handle<B>(c: &Arc<Console>, req: Request<B>, client: IpAddr) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(token) = c.token() else {
        return error(
            StatusCode::NOT_FOUND,
            "console_off",
            "the console is off: set [admin] token",
        );
    };
    let path = req.uri().path().to_owned();
    if path == "/console" || path.starts_with("/console/") {
        return pages::handle(c, req, client, &token).await;
    }
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such API path");
    };
    let write = !matches!(*req.method(), Method::GET | Method::HEAD);
    if let Err(r) = authorize(c, req.headers(), write, client, &token) {
        return r;
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    let q: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let method = req.method().clone();
    let body = if write {
        match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return r,
        }
    } else {
        Bytes::new()
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["stats"]) => stats_answer(c).await,
        // Served by `stream::handle` (a streaming body) before it gets here.
        (&Method::GET, ["stream"]) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the stream is served on the admin listener only",
        ),
        (&Method::GET, ["events"]) => events(c, &q),
        (&Method::GET, ["events", id]) => event(c, id).await,
        (&Method::POST, ["events", id, "resend"]) => resend(c, id, &body).await,
        (&Method::GET, ["rejections"]) => rejections(c, &q),
        (&Method::GET, ["dead-letters"]) => dead_letters(c, &q).await,
        (&Method::POST, ["dead-letters", "replay"]) => dlq_replay(c, &body).await,
        (&Method::GET, ["dead-letters", "replay"]) => c.jobs.status(Kind::Dlq),
        (&Method::GET, ["quarantine"]) => quarantine(c).await,
        (&Method::POST, ["quarantine", "replay"]) => quarantine_replay(c, &body).await,
        (&Method::GET, ["quarantine", "replay"]) => c.jobs.status(Kind::Quarantine),
        (
            _,
            ["stats"]
            | ["events"]
            | ["events", _]
            | ["rejections"]
            | ["dead-letters"]
            | ["quarantine"],
        ) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        ),
        (_, ["events", _, "resend"] | ["dead-letters", "replay"] | ["quarantine", "replay"]) => {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST (or GET for the replay's progress)",
            )
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such API path"),
    }
}

/// Who is asking: a bearer token (limited on its own, apart from the login form), or a
/// session cookie (with CSRF on writes). `Err` is the answer to send.
pub(crate) fn authorize(
    c: &Console,
    headers: &HeaderMap,
    write: bool,
    client: IpAddr,
    token: &hookgate_sinks::Secret,
) -> Result<(), Response<Full<Bytes>>> {
    if let Some(presented) = auth::bearer(headers) {
        if let Some(wait) = c.auth.limited(Door::Bearer, client) {
            return Err(too_many(wait));
        }
        if !auth::token_eq(presented.as_bytes(), token.expose().as_bytes()) {
            c.auth.failed(Door::Bearer, client);
            tracing::info!(%client, "admin API: wrong bearer token");
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "the bearer token is wrong",
            ));
        }
        c.auth.succeeded(Door::Bearer, client);
    } else {
        let Some(session) = c.auth.session(headers) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "log in at /console/login or send Authorization: Bearer <token>",
            ));
        };
        if write {
            let sent = headers
                .get("x-csrf-token")
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !auth::token_eq(sent, session.csrf.as_bytes()) {
                return Err(error(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "missing or wrong X-CSRF-Token header",
                ));
            }
        }
    }
    Ok(())
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter()
        .find(|(n, v)| n == k && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

fn limit(q: &[(String, String)]) -> Result<usize, Response<Full<Bytes>>> {
    match param(q, "limit") {
        None => Ok(100),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(MAX_LIMIT)),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "bad_limit",
                "limit must be a positive integer",
            )),
        },
    }
}

/// `since`: milliseconds since the epoch, or an RFC 3339 time.
fn since(q: &[(String, String)]) -> Result<Option<i64>, Response<Full<Bytes>>> {
    let Some(s) = param(q, "since") else {
        return Ok(None);
    };
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(Some(ms));
    }
    match humantime::parse_rfc3339_weak(s) {
        Ok(t) => Ok(Some(
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        )),
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_since",
            "since must be milliseconds since the epoch or an RFC 3339 time",
        )),
    }
}

fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn f(x: f64) -> Value {
    json!((x * 1000.0).round() / 1000.0)
}

/// `{"1m": x, "5m": y, "15m": z}` of `f` over each window.
fn windows(f: impl Fn(usize) -> Value) -> Value {
    json!({"1m": f(1), "5m": f(5), "15m": f(15)})
}

async fn stats_answer(c: &Arc<Console>) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &stats_json(c).await)
}

/// What `GET /stats` answers (also the stream's `stats` events).
pub(crate) async fn stats_json(c: &Arc<Console>) -> Value {
    let samples = c.sample_sinks();
    let now = stats::now_epoch();
    let mut sources = Vec::new();
    for s in c.sources.iter().chain(std::iter::once(&c.unknown)) {
        let series = s.series();
        let totals = s.totals();
        if std::ptr::eq(s, &c.unknown) && totals.iter().all(|t| *t == 0) {
            continue;
        }
        let mut rates = serde_json::Map::new();
        for (kind, name) in stats::NAMES.iter().enumerate() {
            rates.insert(
                (*name).to_owned(),
                json!({"1m": f(stats::rate(&series, kind, 1)), "5m": f(stats::rate(&series, kind, 5)), "15m": f(stats::rate(&series, kind, 15))}),
            );
        }
        let reasons: serde_json::Map<String, Value> = s
            .reasons()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        sources.push(json!({
            "name": s.name,
            "totals": {"accepted": totals[0], "duplicates": totals[1], "refused": totals[2], "errors_5xx": totals[3]},
            "rates_per_second": rates,
            "refused_by_reason": reasons,
            "series": {
                "bucket_seconds": stats::BUCKET_SECS,
                "accepted": series.iter().map(|b| b[stats::ACCEPTED]).collect::<Vec<_>>(),
                "refused": series.iter().map(|b| b[stats::REFUSED] + b[stats::ERROR_5XX]).collect::<Vec<_>>(),
            },
        }));
    }
    let mut sinks = Vec::new();
    for (i, name) in c.sink_names.iter().enumerate() {
        let series = c.sink_stats.series_at(i, now);
        let mut counts = serde_json::Map::new();
        let mut rates = serde_json::Map::new();
        for (kind, n) in stats::SINK_NAMES.iter().enumerate() {
            counts.insert(
                (*n).to_owned(),
                windows(|m| json!(stats::sum(&series, kind, m))),
            );
            rates.insert(
                (*n).to_owned(),
                windows(|m| f(stats::rate(&series, kind, m))),
            );
        }
        let mut outcomes = serde_json::Map::new();
        for s in samples
            .iter()
            .filter(|s| s.name == "hookgate_sink_deliveries_total" && s.label("sink") == Some(name))
        {
            outcomes.insert(s.label("outcome").unwrap_or("").to_owned(), f(s.value));
        }
        let lat = histogram(
            &samples,
            "hookgate_sink_delivery_latency_seconds",
            Some(name),
        );
        sinks.push(json!({
            "name": name,
            "deliveries": outcomes,
            "latency_seconds": lat,
            "counts": counts,
            "rates_per_second": rates,
            "series": {
                "bucket_seconds": stats::BUCKET_SECS,
                "ok": series.iter().map(|b| b[stats::SINK_OK]).collect::<Vec<_>>(),
                "failed": series.iter().map(|b| b[stats::SINK_RETRIABLE] + b[stats::SINK_PERMANENT] + b[stats::SINK_DEAD_LETTERED]).collect::<Vec<_>>(),
            },
        }));
    }
    let gauge = |n: &str| {
        samples
            .iter()
            .filter(|s| s.name == n)
            .map(|s| s.value)
            .reduce(f64::max)
    };
    let dlq = match c.dispatch.get() {
        Some(d) => match dispatch::dlq_list(&d.store, None).await {
            Ok(v) => json!(v.len()),
            Err(e) => json!({"error": e.to_string()}),
        },
        None => Value::Null,
    };
    let lag = c.sink_stats.lag_series_at(now);
    let lag_peak = windows(|m| json!(stats::peak(&lag, m)));
    let log = &c.log;
    let body = json!({
        "started_at": rfc3339(c.started_ms),
        "now": rfc3339(hookgate_proto::now_ms()),
        "sources": sources,
        "sinks": sinks,
        "log": {
            "status": log.status(),
            "ready": log.is_ready(),
            "kafka": log.kafka().map(|k| json!({"ready": k.is_ready(), "delivery_seconds": histogram(&samples, "hookgate_kafka_delivery_seconds", None)})),
            "spool": log.spool().map(|s| json!({
                "bytes": s.used_bytes(),
                "full": s.is_full(),
                "backlog_bytes": gauge("hookgate_spool_backlog_bytes"),
                "fsync_seconds": histogram(&samples, "hookgate_spool_fsync_seconds", None),
            })),
        },
        "dispatcher": {
            "routes": c.routes.len(),
            "lag": gauge("hookgate_dispatch_lag"),
            "lag_peak": lag_peak,
            "spool_consumer_lag_bytes": gauge("hookgate_spool_consumer_lag_bytes"),
            "remote": c.remotes.iter().map(|r| {
                let st = r.state.lock().unwrap_or_else(|p| p.into_inner());
                json!({
                    "url": r.url.as_str(),
                    "up": st.error.is_none() && st.ok_ms.is_some(),
                    "last_scraped_at": st.ok_ms.map(rfc3339),
                    "error": st.error,
                })
            }).collect::<Vec<_>>(),
        },
        "quarantine": log.quarantine().map(|q| q.len()),
        "dead_letters": dlq,
        "rings": {
            "events": {"len": c.events.len(), "capacity": c.events.capacity()},
            "rejections": {"len": c.rejections.len(), "capacity": c.rejections.capacity()},
        },
    });
    body
}

/// p50/p99 and count of a histogram in the Prometheus samples (seconds).
fn histogram(samples: &[Sample], name: &str, sink: Option<&str>) -> Value {
    let bucket = format!("{name}_bucket");
    let b: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == bucket && sink.is_none_or(|k| s.label("sink") == Some(k)))
        .filter_map(|s| Some((s.label("le")?.parse::<f64>().ok()?, s.value)))
        .collect();
    let count = b.iter().map(|x| x.1).fold(0.0, f64::max);
    json!({
        "count": count,
        "p50": quantile(&b, 0.5).map(|x| (x * 1e6).round() / 1e6),
        "p99": quantile(&b, 0.99).map(|x| (x * 1e6).round() / 1e6),
    })
}

fn event_summary(e: &super::EventMeta) -> Value {
    json!({
        "id": e.id.to_string(),
        "source": &*e.source,
        "provider": &*e.provider,
        "event_type": e.event_type,
        "delivery_id": e.delivery_id,
        "received_at": rfc3339(e.received_at_ms),
        "received_at_ms": e.received_at_ms,
        "body_bytes": e.body_bytes,
    })
}

fn events(c: &Arc<Console>, q: &[(String, String)]) -> Response<Full<Bytes>> {
    let (limit, since) = match (limit(q), since(q)) {
        (Ok(l), Ok(s)) => (l, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let (source, event, delivery) = (
        param(q, "source"),
        param(q, "event"),
        param(q, "delivery_id"),
    );
    let list: Vec<Value> = c
        .events
        .newest_first()
        .iter()
        .filter(|e| source.is_none_or(|s| *e.source == *s))
        .filter(|e| event.is_none_or(|t| e.event_type == t))
        .filter(|e| delivery.is_none_or(|d| e.delivery_id == d))
        .filter(|e| since.is_none_or(|t| e.received_at_ms >= t))
        .take(limit)
        .map(|e| event_summary(e))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"events": list, "kept": c.events.len(), "capacity": c.events.capacity()}),
    )
}

fn parse_id(id: &str) -> Result<Ulid, Response<Full<Bytes>>> {
    Ulid::from_string(id).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "not a hookgate-id (a 26-character ULID)",
        )
    })
}

/// Reads event `id` back from the log: at the position the index has for it (one Kafka
/// record, or one spool record), else from the quarantine or by scanning the spool. `Err`
/// says why the body is unavailable; `Ok` has where it was found.
async fn read_back(
    c: &Arc<Console>,
    id: Ulid,
    meta: Option<&EventMeta>,
) -> Result<(Event, Position), String> {
    let position = meta.map_or(Position::Unknown, |m| m.position);
    match position {
        Position::Kafka { partition, offset } => {
            let topic = meta
                .map(|m| m.topic.clone())
                .unwrap_or_else(|| Arc::from(""));
            let c2 = c.clone();
            let t = topic.clone();
            let read = tokio::task::spawn_blocking(move || {
                c2.kafka_reader
                    .as_ref()
                    .map(|k| k.read(&t, partition, offset, id, logread::READ_WAIT))
            })
            .await;
            return match read {
                Ok(Some(Ok(ev))) => Ok((ev, position)),
                Ok(Some(Err(e))) => Err(format!(
                    "cannot read it back from Kafka ({topic} partition {partition} offset {offset}): {e}"
                )),
                Ok(None) | Err(_) => Err("the Kafka read-back failed".to_owned()),
            };
        }
        Position::Spool(offset) => {
            let Some(spool) = c.log.spool().cloned() else {
                return Err("this log has no spool".to_owned());
            };
            let read = tokio::task::spawn_blocking(move || spool.read(offset, 1)).await;
            return match read {
                Ok(Ok((records, _))) => records
                    .into_iter()
                    .find(|(at, ev)| *at == offset && ev.id == id)
                    .map(|(_, ev)| (ev, position))
                    .ok_or_else(|| "the spool no longer holds this event".to_owned()),
                _ => Err("the spool could not be read".to_owned()),
            };
        }
        Position::Quarantine | Position::Unknown => {}
    }
    if let Some(q) = c.log.quarantine().cloned() {
        if let Ok(Some(e)) = tokio::task::spawn_blocking(move || q.get(&id)).await {
            return Ok((e.event, Position::Quarantine));
        }
    }
    let Some(spool) = c.log.spool().cloned() else {
        return match (&c.log, meta) {
            (Log::Discard, _) => Err("the log keeps no events (discard mode)".to_owned()),
            (_, Some(_)) => Err("the log did not report where it stored this event".to_owned()),
            (_, None) => find_in_kafka(c, id).await,
        };
    };
    // Not indexed: scan the spool from its oldest record.
    let found = tokio::task::spawn_blocking(move || {
        let end = spool.end_offset();
        let mut at = spool.start_offset();
        loop {
            let Ok((batch, next)) = spool.read(at, SCAN_BATCH) else {
                break;
            };
            if let Some((at, ev)) = batch.into_iter().find(|(_, ev)| ev.id == id) {
                return Some((ev, Position::Spool(at)));
            }
            if next >= end || next <= at {
                break;
            }
            at = next;
        }
        None
    })
    .await
    .ok()
    .flatten();
    match found {
        Some(found) => Ok(found),
        // With Kafka behind the spool, the event may have been forwarded and the spool
        // trimmed since.
        None if meta.is_none() && c.kafka_reader.is_some() => find_in_kafka(c, id)
            .await
            .map_err(|e| format!("the spool no longer holds this event; {e}")),
        None => Err("the log no longer holds this event".to_owned()),
    }
}

/// Looks for event `id`, not in the index, in the source topics by the time in its id
/// ([`logread::KafkaReader::find`]). `Err` says how far it searched.
async fn find_in_kafka(c: &Arc<Console>, id: Ulid) -> Result<(Event, Position), String> {
    if c.kafka_reader.is_none() {
        return Err(
            "not in the recent-events index, and the log has no Kafka to search".to_owned(),
        );
    }
    let c2 = c.clone();
    let found = tokio::task::spawn_blocking(move || {
        c2.kafka_reader
            .as_ref()
            .map(|k| k.find(&c2.topics, id, logread::FIND_WAIT))
    })
    .await;
    match found {
        Ok(Some(Ok((ev, partition, offset)))) => Ok((ev, Position::Kafka { partition, offset })),
        Ok(Some(Err(logread::FindError::NotFound(s)))) => Err(format!(
            "not in the recent-events index, nor in Kafka where its id's time points: {s}"
        )),
        Ok(Some(Err(e))) => Err(format!(
            "not in the recent-events index, and Kafka could not be searched: {e}"
        )),
        Ok(None) | Err(_) => Err("the Kafka search failed".to_owned()),
    }
}

fn redacted_headers<'a>(
    c: &Console,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Vec<Value> {
    headers
        .map(|(name, value)| {
            if c.is_sensitive_header(name) {
                json!([name, "[redacted]"])
            } else {
                json!([name, String::from_utf8_lossy(value)])
            }
        })
        .collect()
}

/// Where the log put an event, as the API shows it.
fn stored_at(p: Position) -> Value {
    match p {
        Position::Kafka { partition, offset } => {
            json!({"log": "kafka", "partition": partition, "offset": offset})
        }
        Position::Spool(offset) => json!({"log": "spool", "offset": offset}),
        Position::Quarantine => json!({"log": "quarantine"}),
        Position::Unknown => Value::Null,
    }
}

async fn event(c: &Arc<Console>, id: &str) -> Response<Full<Bytes>> {
    let id = match parse_id(id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let meta = c.events.newest_first().into_iter().find(|e| e.id == id);
    let stored = read_back(c, id, meta.as_deref()).await;
    let found_at = stored.as_ref().map_or(Position::Unknown, |(_, at)| *at);
    let stored = stored.map(|(ev, _)| ev);
    if let (None, Err(why)) = (&meta, &stored) {
        return error(
            StatusCode::NOT_FOUND,
            "event_not_found",
            &format!("no recent event and no event in the log has this id: {why}"),
        );
    }
    let mut v = match (&meta, &stored) {
        (Some(m), _) => event_summary(m),
        (None, Ok(ev)) => json!({
            "id": ev.id.to_string(),
            "source": &*ev.source,
            "provider": &*ev.provider,
            "event_type": ev.event_type,
            "delivery_id": ev.delivery_id,
            "received_at": rfc3339(ev.received_at_ms),
            "received_at_ms": ev.received_at_ms,
            "body_bytes": ev.body.len(),
        }),
        (None, Err(_)) => Value::Null,
    };
    let headers = match (&meta, &stored) {
        (Some(m), _) => {
            redacted_headers(c, m.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
        }
        (None, Ok(ev)) => redacted_headers(
            c,
            ev.kept_headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_ref())),
        ),
        (None, Err(_)) => Vec::new(),
    };
    v["headers"] = json!(headers);
    v["headers_from"] = json!(if meta.as_ref().is_some_and(|m| !m.from_log) {
        "memory (as received)"
    } else {
        "log (kept headers only)"
    });
    v["stored_at"] = stored_at(meta.as_ref().map_or(found_at, |m| m.position));
    match &stored {
        Ok(ev) => {
            let pretty = serde_json::from_slice::<Value>(&ev.body)
                .ok()
                .and_then(|j| serde_json::to_string_pretty(&j).ok());
            let (text, encoding) = match pretty {
                Some(p) => (p, "json"),
                None => super::text_or_base64(&ev.body),
            };
            v["body"] = json!(text);
            v["body_encoding"] = json!(encoding);
            v["content_type"] = json!(ev.content_type);
            v["topic"] = json!(&*ev.topic);
        }
        Err(why) => {
            v["body"] = Value::Null;
            v["body_unavailable"] = json!(why);
        }
    }
    let source = v["source"].as_str().unwrap_or("").to_owned();
    v["sinks"] = json!(c.sinks_of(&source));
    json_response(StatusCode::OK, &v)
}

async fn resend(c: &Arc<Console>, id: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let id = match parse_id(id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Some(d) = c.dispatch.get() else {
        return error(
            StatusCode::CONFLICT,
            "no_routes",
            "this hookgate has no [[routes]] to send events to",
        );
    };
    let want: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return error(StatusCode::BAD_REQUEST, "bad_json", "the body is not JSON"),
        }
    };
    let meta = c.events.newest_first().into_iter().find(|e| e.id == id);
    let ev = match read_back(c, id, meta.as_deref()).await {
        Ok((ev, _)) => ev,
        Err(why) => {
            return error(
                StatusCode::NOT_FOUND,
                "event_not_found",
                &format!("cannot read this event back: {why}"),
            )
        }
    };
    let routed = c.sinks_of(&ev.source);
    let sinks: Vec<String> = match want.get("sink").and_then(Value::as_str) {
        Some(s) if routed.iter().any(|r| r == s) => vec![s.to_owned()],
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "unknown_sink",
                "no route sends this event's source to that sink",
            )
        }
        None => routed,
    };
    if sinks.is_empty() {
        return error(
            StatusCode::CONFLICT,
            "not_routed",
            "no route sends this event's source anywhere",
        );
    }
    let mut results = Vec::new();
    for s in &sinks {
        match d.dispatcher.replay(&ev, s).await {
            Ok(()) => results.push(json!({"sink": s, "delivered": true})),
            Err(e) => results.push(json!({"sink": s, "delivered": false, "error": e.to_string()})),
        }
    }
    tracing::info!(event = %ev.id, "console: event sent to its sinks again");
    json_response(
        StatusCode::OK,
        &json!({"id": id.to_string(), "results": results}),
    )
}

fn rejections(c: &Arc<Console>, q: &[(String, String)]) -> Response<Full<Bytes>> {
    let (limit, since) = match (limit(q), since(q)) {
        (Ok(l), Ok(s)) => (l, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let source = param(q, "source");
    let reason = param(q, "reason");
    let list: Vec<Value> = c
        .rejections
        .newest_first()
        .iter()
        .filter(|r| source.is_none_or(|s| *r.source == *s))
        .filter(|r| reason.is_none_or(|s| r.code == s))
        .filter(|r| since.is_none_or(|t| r.at_ms >= t))
        .take(limit)
        .map(|r| {
            json!({
                "at": rfc3339(r.at_ms),
                "at_ms": r.at_ms,
                "source": &*r.source,
                "known_source": r.known_source,
                "client": r.client.to_string(),
                "status": r.status,
                "reason": r.code,
                "hint": hint(r.code),
                "delivery_id": r.delivery_id,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"rejections": list, "kept": c.rejections.len(), "capacity": c.rejections.capacity()}),
    )
}

/// What to check for a refusal's reason code.
pub fn hint(code: &str) -> &'static str {
    match code {
        "signature_invalid" => "The signature does not match: the source's secret differs from the one the provider signs with (rotated? copied with a trailing newline?), or something between the provider and hookgate changed the body.",
        "signature_missing" => "The signature header is missing: the request did not come from the provider, or the provider's webhook has no secret set.",
        "signature_malformed" => "The signature header is not in the provider's format: check the source's provider setting.",
        "timestamp_out_of_tolerance" => "The signed timestamp is outside the tolerance: the sender's or hookgate's clock is off (check NTP), or this is a replay of an old request.",
        "ip_not_allowed" => "The client address is not in the source's allow_ips: the provider's address ranges changed, or a proxy in front is not in server.trusted_proxies.",
        "unknown_source" => "No source is configured at this path: check the URL registered with the provider.",
        "body_too_large" | "record_too_large" => "The body is larger than server.max_body_bytes (or the log's record limit).",
        "client_rate" | "client_in_flight" | "source_rate" | "overloaded" => "Rate or concurrency limits refused the request; the provider retries.",
        "log_unavailable" | "spool_full" | "log_rejected" => "The event log could not take the event: check Kafka and the spool on the overview.",
        "missing_delivery_id" => "The provider's delivery id is missing: check the source's dedupe_key.",
        "invalid_json" | "unsupported_media_type" => "The body is not the JSON this source expects.",
        "method_not_allowed" => "Webhooks are POSTed.",
        _ => "See the reason code in the README's error table.",
    }
}

async fn dead_letters(c: &Arc<Console>, q: &[(String, String)]) -> Response<Full<Bytes>> {
    let Some(d) = c.dispatch.get() else {
        return json_response(
            StatusCode::OK,
            &json!({"dead_letters": [], "note": "no [[routes]]: nothing is dead-lettered"}),
        );
    };
    match dispatch::dlq_list(&d.store, param(q, "sink")).await {
        Ok(list) => {
            let v: Vec<Value> = list
                .iter()
                .map(|e| {
                    json!({
                        "entry": format!("{}-{}", e.partition, e.position),
                        "id": e.event.id.to_string(),
                        "source": &*e.event.source,
                        "event_type": e.event.event_type,
                        "delivery_id": e.event.delivery_id,
                        "sink": e.sink,
                        "error": e.error,
                        "at": e.at,
                        "received_at": rfc3339(e.event.received_at_ms),
                    })
                })
                .collect();
            json_response(StatusCode::OK, &json!({"dead_letters": v}))
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "dlq_unavailable",
            &format!("cannot read the dead letters: {e}"),
        ),
    }
}

/// Which kind of replay a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Dead letters to their sinks.
    Dlq,
    /// Quarantined events to Kafka.
    Quarantine,
}

#[derive(Default)]
struct JobState {
    running: bool,
    total: usize,
    replayed: usize,
    failed: usize,
    remaining: Option<usize>,
    failure: Option<Value>,
    error: Option<String>,
    started_ms: i64,
    finished_ms: Option<i64>,
}

/// One replay, polled for progress.
pub struct Job {
    id: u64,
    kind: Kind,
    state: Mutex<JobState>,
}

impl Job {
    fn update(&self, f: impl FnOnce(&mut JobState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn to_json(&self) -> Value {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        json!({
            "job": self.id,
            "kind": match self.kind { Kind::Dlq => "dead-letters", Kind::Quarantine => "quarantine" },
            "state": if s.running { "running" } else if s.error.is_some() || s.failed > 0 { "failed" } else { "done" },
            "total": s.total,
            "replayed": s.replayed,
            "failed": s.failed,
            "remaining": s.remaining,
            "failure": s.failure,
            "error": s.error,
            "started_at": rfc3339(s.started_ms),
            "finished_at": s.finished_ms.map(rfc3339),
        })
    }
}

/// The latest replay job of each kind (one runs at a time per kind).
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    dlq: Mutex<Option<Arc<Job>>>,
    quarantine: Mutex<Option<Arc<Job>>>,
}

impl Jobs {
    fn slot(&self, kind: Kind) -> &Mutex<Option<Arc<Job>>> {
        match kind {
            Kind::Dlq => &self.dlq,
            Kind::Quarantine => &self.quarantine,
        }
    }

    /// A new running job, unless one of this kind runs.
    fn start(&self, kind: Kind, total: usize) -> Result<Arc<Job>, Response<Full<Bytes>>> {
        let mut slot = self.slot(kind).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = slot.as_ref() {
            if j.state.lock().unwrap_or_else(|p| p.into_inner()).running {
                return Err(error(
                    StatusCode::CONFLICT,
                    "replay_running",
                    "a replay is running; poll its progress and try again when it is done",
                ));
            }
        }
        let job = Arc::new(Job {
            id: self.next.fetch_add(1, Ordering::Relaxed) + 1,
            kind,
            state: Mutex::new(JobState {
                running: true,
                total,
                started_ms: hookgate_proto::now_ms(),
                ..Default::default()
            }),
        });
        *slot = Some(job.clone());
        Ok(job)
    }

    /// The latest job's progress.
    pub fn status(&self, kind: Kind) -> Response<Full<Bytes>> {
        let slot = self.slot(kind).lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(j) => json_response(StatusCode::OK, &j.to_json()),
            None => error(StatusCode::NOT_FOUND, "no_replay", "no replay has run yet"),
        }
    }
}

/// What a dead-letter replay asks for: `{"entries": [...]}` (one or a selection), `{"sink":
/// "x"}` (a sink's) or `{"all": true}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqWanted {
    entries: Option<Vec<String>>,
    sink: Option<String>,
    #[serde(default)]
    all: bool,
}

/// What a quarantine replay asks for: `{"entries": [ids]}`, `{"source": "x"}` (the events
/// of a source) or `{"all": true}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuarantineWanted {
    entries: Option<Vec<String>>,
    source: Option<String>,
    #[serde(default)]
    all: bool,
}

/// Parses a replay request; unknown fields, wrong types, an empty `entries` or no choice
/// at all are `400 bad_replay_request` naming what is accepted.
fn wanted<T: serde::de::DeserializeOwned>(
    body: &[u8],
    accepted: &str,
    chose: impl Fn(&T) -> bool,
) -> Result<T, Response<Full<Bytes>>> {
    let bad = |why: &str| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_replay_request",
            &format!("{why}; send {accepted}"),
        )
    };
    let w: T = serde_json::from_slice(body).map_err(|e| {
        // serde's message names an unknown field and the expected ones; drop the position.
        let text = e.to_string();
        let text = text.split(" at line ").next().unwrap_or("").to_owned();
        bad(&text)
    })?;
    if !chose(&w) {
        return Err(bad("nothing chosen (or an empty `entries`)"));
    }
    Ok(w)
}

async fn dlq_replay(c: &Arc<Console>, body: &[u8]) -> Response<Full<Bytes>> {
    let w = match wanted::<DlqWanted>(
        body,
        r#"{"entries": [...]}, {"sink": "name"} or {"all": true}"#,
        |w| w.entries.as_ref().is_some_and(|e| !e.is_empty()) || w.sink.is_some() || w.all,
    ) {
        Ok(w) => w,
        Err(r) => return r,
    };
    if w.entries.as_ref().is_some_and(Vec::is_empty) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_replay_request",
            "`entries` is empty",
        );
    }
    let Some(d) = c.dispatch.get() else {
        return error(
            StatusCode::CONFLICT,
            "no_routes",
            "no [[routes]]: there are no dead letters",
        );
    };
    let positions: Option<Vec<(i32, u64)>> = match &w.entries {
        None => None,
        Some(list) => {
            let mut v = Vec::new();
            for e in list {
                let parsed = e
                    .split_once('-')
                    .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<u64>().ok()?)));
                match parsed {
                    Some(x) => v.push(x),
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "bad_entry",
                            "entries are named `partition-position`, as listed",
                        )
                    }
                }
            }
            Some(v)
        }
    };
    let sel = Selection {
        sink: w.sink.as_deref(),
        positions: positions.as_deref(),
    };
    let total = match dispatch::dlq_list_selected(&d.store, &sel).await {
        Ok(l) => l.len(),
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "dlq_unavailable",
                &format!("cannot read the dead letters: {e}"),
            )
        }
    };
    if total == 0 {
        return error(
            StatusCode::NOT_FOUND,
            "nothing_to_replay",
            "no pending dead letter matches",
        );
    }
    let job = match c.jobs.start(Kind::Dlq, total) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let answer = job.to_json();
    let c2 = c.clone();
    tokio::spawn(async move {
        let Some(d) = c2.dispatch.get() else { return };
        let sel = Selection {
            sink: w.sink.as_deref(),
            positions: positions.as_deref(),
        };
        let step_job = job.clone();
        let step = move |r: &hookgate_sinks::dispatch::ReplayReport| {
            step_job.update(|s| {
                s.replayed = r.replayed;
                s.failed = r.failed;
            })
        };
        let out = dispatch::dlq_replay_selected(&d.store, &d.dispatcher, &sel, &step).await;
        job.update(|s| {
            match out {
                Ok(r) => {
                    s.replayed = r.replayed;
                    s.failed = r.failed;
                    s.remaining = Some(r.remaining);
                    s.failure = r.failure.map(|(e, err)| {
                        json!({"entry": format!("{}-{}", e.partition, e.position), "id": e.event.id.to_string(), "sink": e.sink, "error": err})
                    });
                }
                Err(e) => s.error = Some(e.to_string()),
            }
            s.running = false;
            s.finished_ms = Some(hookgate_proto::now_ms());
        });
        tracing::info!("console: dead-letter replay finished");
    });
    json_response(StatusCode::ACCEPTED, &answer)
}

async fn quarantine(c: &Arc<Console>) -> Response<Full<Bytes>> {
    let Some(q) = c.log.quarantine().cloned() else {
        return json_response(
            StatusCode::OK,
            &json!({"quarantine": [], "note": "no quarantine: it exists with [kafka] and [spool]"}),
        );
    };
    match tokio::task::spawn_blocking(move || q.list()).await {
        Ok(Ok(listing)) => {
            let v: Vec<Value> = listing
                .entries
                .iter()
                .map(|e| serde_json::to_value(&e.meta).unwrap_or(Value::Null))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"quarantine": v, "unreadable": listing.unreadable.len()}),
            )
        }
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "quarantine_unavailable",
            "cannot read the quarantine directory",
        ),
    }
}

async fn quarantine_replay(c: &Arc<Console>, body: &[u8]) -> Response<Full<Bytes>> {
    let w = match wanted::<QuarantineWanted>(
        body,
        r#"{"entries": [ids]}, {"source": "name"} or {"all": true}"#,
        |w| w.entries.as_ref().is_some_and(|e| !e.is_empty()) || w.source.is_some() || w.all,
    ) {
        Ok(w) => w,
        Err(r) => return r,
    };
    if w.entries.as_ref().is_some_and(Vec::is_empty) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_replay_request",
            "`entries` is empty",
        );
    }
    let (Some(q), Some(k)) = (c.log.quarantine().cloned(), c.log.kafka().cloned()) else {
        return error(
            StatusCode::CONFLICT,
            "no_quarantine",
            "no quarantine: it exists with [kafka] and [spool]",
        );
    };
    let q2 = q.clone();
    let entries = match tokio::task::spawn_blocking(move || q2.list()).await {
        Ok(Ok(l)) => l.entries,
        _ => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "quarantine_unavailable",
                "cannot read the quarantine directory",
            )
        }
    };
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|e| {
            w.entries
                .as_ref()
                .is_none_or(|ids| ids.contains(&e.meta.id))
                && w.source.as_ref().is_none_or(|s| *s == e.meta.source)
        })
        .collect();
    if entries.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "nothing_to_replay",
            "no quarantined event matches",
        );
    }
    let job = match c.jobs.start(Kind::Quarantine, entries.len()) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let answer = job.to_json();
    tokio::spawn(async move {
        for e in &entries {
            match k.append(&e.event).await {
                Ok(_) => {
                    let removed = {
                        let q = q.clone();
                        let id = e.meta.id.clone();
                        tokio::task::spawn_blocking(move || q.remove(&id)).await
                    };
                    match removed {
                        Ok(Ok(())) => job.update(|s| s.replayed += 1),
                        _ => job.update(|s| {
                            s.failed += 1;
                            s.failure = Some(json!({"id": e.meta.id, "error": "delivered, but its quarantine file could not be removed"}));
                        }),
                    }
                }
                Err(err) => job.update(|s| {
                    s.failed += 1;
                    s.failure = Some(json!({"id": e.meta.id, "error": err.to_string()}));
                }),
            }
        }
        let left = tokio::task::spawn_blocking(move || q.recount()).await;
        job.update(|s| {
            s.remaining = left.ok().and_then(|r| r.ok()).map(|n| n as usize);
            s.running = false;
            s.finished_ms = Some(hookgate_proto::now_ms());
        });
    });
    json_response(StatusCode::ACCEPTED, &answer)
}
