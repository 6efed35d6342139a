//! The HTTP front: routing, limits, the request path of one webhook, and the listener with
//! graceful shutdown.
//!
//! [`App::handle`] is the whole request path with no socket (tests and benches call it);
//! [`serve`] puts it behind hyper (HTTP/1.1 keep-alive and h2c), with hyper's timer set so
//! the header read timeout really applies.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use hookgate_proto::{Event, Ulid};
use hookgate_sinks::log::{Position, RefuseReason};

use crate::maybe_written::MaybeWritten;
use hookgate_sinks::{AppendError, Log};
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use metrics::Counter;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::admission::{Bucket, Gate, Refusal};
use crate::config::{Config, ServerConfig};
use crate::dedupe::{Admission, Dedupe, DedupeStore};
use crate::edge::Edge;
use crate::extract::{Extracted, Extractor, FieldSpec};
use crate::redis_dedupe::{Intent, RedisStore, SharedDedupe, StoreRefusal};
use crate::verify::{Verifier, VerifyError};

/// One configured source, ready for the request path.
pub struct Source {
    idx: u32,
    name: Arc<str>,
    provider: Arc<str>,
    topic: Arc<str>,
    /// Swapped whole when `secrets_file` is re-read (SIGHUP): a request verifies against
    /// the old set or the new one, never a mix. Writes are rare, so a read lock (no
    /// contention) plus an `Arc` clone is all the hot path pays.
    verifier: RwLock<Arc<Verifier>>,
    extractor: Extractor,
    keep_headers: Vec<HeaderName>,
    allow_ips: Vec<ipnet::IpNet>,
    counters: StatusCounters,
    /// The source's own token bucket (`rate_limit`).
    rate: Option<Bucket>,
    /// Dedupe also on the body's digest, and the count of replays so refused.
    dedupe_body: Option<Counter>,
}

impl Source {
    fn verifier(&self) -> Arc<Verifier> {
        self.verifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Pre-registered request counters of one source, so the hot path does not build labels.
struct StatusCounters {
    by_status: Vec<(u16, Counter)>,
    other: Counter,
}

const COUNTED: [u16; 12] = [200, 400, 401, 403, 405, 408, 413, 415, 429, 431, 500, 503];

impl StatusCounters {
    fn new(source: &str) -> Self {
        let by_status = COUNTED
            .iter()
            .map(|s| {
                (
                    *s,
                    metrics::counter!("hookgate_requests_total", "source" => source.to_owned(), "status" => s.to_string()),
                )
            })
            .collect();
        StatusCounters {
            by_status,
            other: metrics::counter!("hookgate_requests_total", "source" => source.to_owned(), "status" => "other"),
        }
    }
    fn get(&self, status: StatusCode) -> &Counter {
        let s = status.as_u16();
        self.by_status
            .iter()
            .find(|(c, _)| *c == s)
            .map(|(_, c)| c)
            .unwrap_or(&self.other)
    }
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `[server] listen`: where providers call in.
    Public,
    /// `[admin] listen`: metrics and probes.
    Admin,
}

/// The request path's shared state.
pub struct App {
    sources: HashMap<Box<str>, Arc<Source>, foldhash::fast::RandomState>,
    dedupe: SharedDedupe,
    log: Log,
    limits: ServerConfig,
    permits: Arc<Semaphore>,
    prometheus: Option<PrometheusHandle>,
    store: Option<Arc<DedupeStore>>,
    inflight: metrics::Gauge,
    maybe_written: MaybeWritten,
    /// `[admin] listen` is set: the public listener serves only `/hooks/*`.
    admin_separate: bool,
    /// Per-client limits (requests in flight, connections, rate).
    gate: Arc<Gate>,
    /// The public listener's TLS, PROXY protocol and trusted proxies.
    edge: Arc<Edge>,
    /// Secrets learned from handshakes (Asana), when there is a state directory.
    learned: Option<crate::learned::LearnedSecrets>,
    /// One handshake learns at a time, so two racing ones cannot both set a secret.
    learning: tokio::sync::Mutex<()>,
    /// The web console (`[admin] token` set): recent events and refusals, `/api/v1`.
    console: Option<Arc<crate::console::Console>>,
}

/// An HTTP error: status and stable code; the message is for people.
struct Reject {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
    retry_after: Option<u32>,
}

const fn reject(status: StatusCode, code: &'static str, message: &'static str) -> Reject {
    Reject {
        status,
        code,
        message,
        retry_after: None,
    }
}

impl App {
    /// Builds the request path from a validated config and the log it appends to.
    pub fn new(
        cfg: &Config,
        log: Log,
        prometheus: Option<PrometheusHandle>,
    ) -> anyhow::Result<App> {
        let mut sources = HashMap::with_hasher(foldhash::fast::RandomState::default());
        let learned = cfg
            .state_dir()
            .map(|d| crate::learned::LearnedSecrets::new(&d));
        for (i, s) in cfg.sources.iter().enumerate() {
            let mut verifier = s
                .build_verifier()
                .map_err(|m| anyhow::anyhow!("source `{}`: {m}", s.name))?;
            // A secret learned from an earlier handshake (none configured).
            if verifier.has_no_keys() {
                if let Some(store) = &learned {
                    let secret = store.load(&s.name).map_err(|e| {
                        anyhow::anyhow!("source `{}`: cannot read its learned secret: {e}", s.name)
                    })?;
                    if let Some(secret) = secret {
                        verifier = s
                            .build_verifier_from(&[hookgate_sinks::Secret::new(secret)])
                            .map_err(|m| anyhow::anyhow!("source `{}`: {m}", s.name))?;
                    }
                }
            }
            let spec = |v: &Option<String>| -> anyhow::Result<Option<FieldSpec>> {
                v.as_deref()
                    .map(FieldSpec::parse)
                    .transpose()
                    .map_err(|m| anyhow::anyhow!("source `{}`: {m}", s.name))
            };
            let extractor = Extractor::new(
                verifier.provider(),
                spec(&s.dedupe_key)?,
                spec(&s.event_type)?,
                spec(&s.partition_key)?,
            );
            let keep_headers = s
                .keep_headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect();
            let src = Source {
                idx: i as u32,
                name: Arc::from(s.name.as_str()),
                provider: Arc::from(verifier.provider().as_str()),
                topic: Arc::from(cfg.topic_of(s).as_str()),
                verifier: RwLock::new(Arc::new(verifier)),
                extractor,
                keep_headers,
                allow_ips: s.allow_ips.clone(),
                counters: StatusCounters::new(&s.name),
                rate: s.rate_limit.map(|r| r.bucket()),
                dedupe_body: s.dedupe_body().then(|| {
                    metrics::counter!("hookgate_replays_refused_total", "source" => s.name.clone())
                }),
            };
            sources.insert(Box::from(s.name.as_str()), Arc::new(src));
        }
        let local = Dedupe::new(cfg.dedupe.capacity, cfg.dedupe.ttl);
        let dedupe = match &cfg.dedupe.redis {
            Some(r) => {
                let names = cfg.sources.iter().map(|s| s.name.clone()).collect();
                let store = RedisStore::new(r, names, cfg.dedupe.ttl)
                    .map_err(|m| anyhow::anyhow!("dedupe.redis: {m}"))?;
                SharedDedupe::with_redis(local, Arc::new(store))
            }
            None => SharedDedupe::local(local),
        };
        let console =
            crate::console::Console::new(cfg, log.clone(), prometheus.clone())?.map(Arc::new);
        Ok(App {
            sources,
            dedupe,
            log,
            limits: cfg.server.clone(),
            permits: Arc::new(Semaphore::new(cfg.server.max_concurrency.max(1))),
            prometheus,
            store: None,
            inflight: metrics::gauge!("hookgate_requests_in_flight"),
            maybe_written: MaybeWritten::default(),
            admin_separate: cfg.admin.is_some(),
            gate: Arc::new(Gate::new(cfg.server.admission())),
            learned,
            learning: tokio::sync::Mutex::new(()),
            console,
            edge: Arc::new(
                Edge::new(
                    cfg.server.tls.as_ref(),
                    cfg.server.trusted_proxies.clone(),
                    cfg.server.proxy_protocol,
                    cfg.server.header_timeout,
                )
                .map_err(|e| anyhow::anyhow!("server.tls: {e}"))?,
            ),
        })
    }

    /// Keeps accepted delivery ids on disk and re-seeds the dedupe cache from it, so
    /// duplicates are recognised across restarts. Returns how many ids were re-seeded.
    pub async fn with_dedupe_store(mut self, store: Arc<DedupeStore>) -> (App, usize) {
        let mut n = 0;
        for (source, delivery, id) in store.load() {
            if let Some(idx) = self.source_index(&source) {
                self.dedupe.local_set().seed(idx, &delivery, id).await;
                n += 1;
            }
        }
        self.store = Some(store);
        (self, n)
    }

    /// The dedupe cache (seeded at start from the spool's memory of accepted ids).
    pub fn dedupe(&self) -> &Dedupe {
        self.dedupe.local_set()
    }

    /// The shared dedupe store (`[dedupe.redis]`), when configured.
    pub fn redis_dedupe(&self) -> Option<&Arc<RedisStore>> {
        self.dedupe.redis()
    }

    /// Index of a source by name, for seeding dedupe.
    pub fn source_index(&self, name: &str) -> Option<u32> {
        self.sources.get(name).map(|s| s.idx)
    }

    /// Replaces the verifier of source `name` (new secrets); `false` if there is no such
    /// source.
    pub fn swap_verifier(&self, name: &str, verifier: Verifier) -> bool {
        let Some(src) = self.sources.get(name) else {
            return false;
        };
        *src.verifier.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(verifier);
        true
    }

    /// The public listener's edge (TLS and its reloader, trusted proxies).
    pub fn edge(&self) -> &Arc<Edge> {
        &self.edge
    }

    /// The web console, when `[admin] token` is set.
    pub fn console(&self) -> Option<&Arc<crate::console::Console>> {
        self.console.as_ref()
    }

    /// The log this app appends to.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Handles one request that came in on the public listener. `peer` is the client
    /// address (for `allow_ips`): the one [`Edge::client`] resolved.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>, peer: IpAddr) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.handle_on(Listener::Public, req, peer).await
    }

    /// Handles one request end to end, as served by listener `on`: with `[admin]` set the
    /// public listener serves only `/hooks/*` and the admin listener everything else.
    pub async fn handle_on<B>(
        self: &Arc<Self>,
        on: Listener,
        req: Request<B>,
        peer: IpAddr,
    ) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path();
        let hook = path.starts_with("/hooks/");
        let served = match on {
            Listener::Public => hook || !self.admin_separate,
            Listener::Admin => !hook,
        };
        if !served {
            return error_response(&reject(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such path on this listener",
            ));
        }
        if let Some(name) = path.strip_prefix("/hooks/") {
            let Some(src) = self.sources.get(name).cloned() else {
                let rej = reject(
                    StatusCode::NOT_FOUND,
                    "unknown_source",
                    "no source is configured at this path",
                );
                if let Some(c) = &self.console {
                    c.refused(None, name, peer, rej.status, rej.code, None);
                }
                return error_response(&rej);
            };
            let _inflight = InFlight::new(&self.inflight);
            // For the console's refused-requests list: the delivery-id header (a refcount).
            let delivery = self.console.as_ref().and_then(|_| {
                let h = src.extractor.delivery_header()?;
                req.headers().get(h).cloned()
            });
            let resp = match self.webhook(&src, req, peer).await {
                Ok(r) => r,
                Err(rej) => {
                    if let Some(c) = &self.console {
                        c.refused(
                            Some(src.idx),
                            &src.name,
                            peer,
                            rej.status,
                            rej.code,
                            delivery,
                        );
                    }
                    error_response(&rej)
                }
            };
            src.counters.get(resp.status()).increment(1);
            return resp;
        }
        if on == Listener::Admin
            && (path == "/console" || path.starts_with("/console/") || path.starts_with("/api/v1/"))
        {
            return match &self.console {
                Some(c) => crate::console::api::handle(c, req, peer).await,
                None => error_response(&reject(
                    StatusCode::NOT_FOUND,
                    "console_off",
                    "the console is off: set [admin] token",
                )),
            };
        }
        match (req.method(), path) {
            (&Method::GET, "/healthz") => {
                json(StatusCode::OK, Bytes::from_static(b"{\"status\":\"ok\"}"))
            }
            (&Method::GET, "/readyz") => {
                let status = self.log.status();
                let code = if self.log.is_ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                // The shared dedupe store's state is reported, never a reason to leave the
                // balancer: every replica shares it, and each answers 503 + Retry-After itself
                // (`reject`) or keeps accepting (`local`).
                let body = match self.dedupe.status() {
                    Some(d) => format!("{{\"status\":\"{status}\",\"dedupe\":\"{d}\"}}"),
                    None => format!("{{\"status\":\"{status}\"}}"),
                };
                json(code, Bytes::from(body))
            }
            (&Method::GET, "/metrics") => {
                let text = self
                    .prometheus
                    .as_ref()
                    .map(|p| p.render())
                    .unwrap_or_default();
                let mut r = Response::new(Full::new(Bytes::from(text)));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            (_, "/healthz" | "/readyz" | "/metrics") => {
                let mut r = error_response(&reject(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                ));
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET"));
                r
            }
            _ => error_response(&reject(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such path; webhooks go to POST /hooks/{source}",
            )),
        }
    }

    async fn webhook<B>(
        self: &Arc<Self>,
        src: &Arc<Source>,
        req: Request<B>,
        peer: IpAddr,
    ) -> Result<Response<Full<Bytes>>, Reject>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // `allow_ips` first: it applies to handshakes too (a secret learned on first
        // contact must come from an allowed address).
        if !src.allow_ips.is_empty() && !src.allow_ips.iter().any(|n| n.contains(&peer)) {
            return Err(reject(
                StatusCode::FORBIDDEN,
                "ip_not_allowed",
                "the client address is not allowed for this source",
            ));
        }
        // One verifier for the whole request, even if the secrets are swapped meanwhile.
        let verifier = src.verifier();
        // Unsigned subscription handshakes (Meta's GET, Dropbox's GET, Trello's HEAD…):
        // answered here, never stored; each provider decides which requests qualify.
        let early = crate::verify::Early {
            method: req.method(),
            headers: req.headers(),
            query: req.uri().query(),
        };
        let spec = verifier.provider().spec();
        if spec.learns_secret() {
            if let Some((secret, answer)) = spec.learn_handshake(&early) {
                return Ok(self.learn(src, secret, answer).await);
            }
        }
        if let Some(answer) = verifier.early_handshake(&early) {
            return Ok(answer_response(answer));
        }
        if req.method() != Method::POST {
            let mut r = error_response(&reject(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "webhooks are POSTed",
            ));
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
            return Ok(r);
        }
        // Cheap checks first: nothing here reads the body or takes a slot, so a request that
        // would be refused anyway costs no more than its headers.
        let max = self.limits.max_body_bytes.0;
        if let Some(len) = req.headers().get(CONTENT_LENGTH) {
            match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
                Some(n) if n > max => {
                    return Err(reject(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "the body is larger than server.max_body_bytes",
                    ));
                }
                Some(_) => {}
                None => {
                    return Err(reject(
                        StatusCode::BAD_REQUEST,
                        "bad_content_length",
                        "Content-Length is not a number",
                    ))
                }
            }
        }
        // A source that learns its secret from a body (Notion) and has none yet: the
        // unsigned verification request must get as far as its body.
        let learning = spec.learns_secret() && verifier.has_no_keys();
        if !learning && !verifier.signature_present(req.headers()) {
            let e = VerifyError::Missing;
            metrics::counter!("hookgate_verify_failures_total", "source" => src.name.to_string(), "reason" => e.code()).increment(1);
            return Err(reject(
                StatusCode::UNAUTHORIZED,
                e.code(),
                verify_message(e),
            ));
        }
        // Then what one client may hold: its share of the requests in flight (and its
        // token bucket), the source's bucket, and only then a slot of `max_concurrency`.
        let client_slot = match self.gate.request(peer) {
            Ok(slot) => slot,
            Err((why, wait)) => {
                let message = match why {
                    Refusal::ClientRate => "this client is over its request rate; retry later",
                    _ => "this client has too many requests in flight; retry later",
                };
                return Err(Reject {
                    retry_after: Some(wait),
                    ..reject(StatusCode::TOO_MANY_REQUESTS, why.as_str(), message)
                });
            }
        };
        if let Some(bucket) = &src.rate {
            if let Err(wait) = bucket.take() {
                self.gate.refused_by_source_rate();
                return Err(Reject {
                    retry_after: Some(wait),
                    ..reject(
                        StatusCode::TOO_MANY_REQUESTS,
                        "source_rate",
                        "this source is over its request rate; retry later",
                    )
                });
            }
        }
        // The permit travels with the append (below): an append that outlives its request
        // (the client hung up) still counts against `max_concurrency`, so appends in
        // flight, each holding a body, stay bounded while the broker stalls.
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Err(Reject {
                retry_after: Some(1),
                ..reject(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many requests in flight; retry later",
                )
            });
        };
        let (parts, body) = req.into_parts();
        let body = match tokio::time::timeout(self.limits.body_timeout, read_body(body, max)).await
        {
            Ok(Ok(b)) => b,
            Ok(Err(BodyError::TooLarge)) => {
                return Err(reject(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the body is larger than server.max_body_bytes",
                ));
            }
            Ok(Err(BodyError::Read)) => {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "body_read_error",
                    "the body could not be read",
                ))
            }
            Err(_) => {
                return Err(reject(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the body did not arrive within server.body_timeout",
                ))
            }
        };
        if learning {
            if let Some((secret, answer)) = spec.learn_from_body(&parts.headers, &body) {
                return Ok(self.learn(src, secret, answer).await);
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let request = crate::verify::Request {
            headers: &parts.headers,
            body: &body,
            query: parts.uri.query(),
            now: now.as_secs() as i64,
        };
        if let Err(e) = verifier.verify_request(&request) {
            metrics::counter!("hookgate_verify_failures_total", "source" => src.name.to_string(), "reason" => e.code()).increment(1);
            return Err(reject(
                StatusCode::UNAUTHORIZED,
                e.code(),
                verify_message(e),
            ));
        }
        let extracted = src
            .extractor
            .extract_for(Some(&verifier), &parts.headers, &body);
        let (delivery_id, event_type, key) = match extracted {
            Ok(Extracted::Event {
                delivery_id,
                event_type,
                key,
            }) => (delivery_id, event_type, key),
            Ok(Extracted::Handshake(answer)) => return Ok(answer_response(answer)),
            Err(e) => {
                let status = match e {
                    crate::extract::ExtractError::UnsupportedMediaType => {
                        StatusCode::UNSUPPORTED_MEDIA_TYPE
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                return Err(reject(status, e.code(), extract_message(e)));
            }
        };
        let reused = self.maybe_written.id_for(src.idx, &delivery_id);
        // Not `unwrap_or_default`: Ulid's default is the nil id.
        let id = match reused {
            Some(id) => id,
            None => Ulid::new(),
        };
        let event = Event {
            id,
            source: src.name.clone(),
            provider: src.provider.clone(),
            topic: src.topic.clone(),
            event_type,
            delivery_id,
            key,
            received_at_ms: now.as_millis() as i64,
            content_type: parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            kept_headers: kept(&parts.headers, &src.keep_headers),
            body,
        };
        // The append must finish even if the client hangs up: a dropped request must not
        // cancel a write the broker may already have, nor leave dedupe without the key.
        // `Detached` runs it here (no task per request) and hands the rest of it to the
        // runtime if the request future is dropped first.
        // A body-only signature stays valid under a new delivery id: such sources also
        // dedupe on the body's digest, in the same table (a key no delivery id can be).
        let note = self
            .console
            .as_ref()
            .map(|c| c.note(src.idx, &event, &parts.headers));
        let digest = src.dedupe_body.is_some().then(|| body_key(&event.body));
        let app = self.clone();
        let idx = src.idx;
        let task = Detached::new(async move {
            let _slots = (permit, client_slot);
            // The record to write; with Redis, an earlier attempt's (see `append` below).
            let intent = Intent {
                id: event.id,
                received_at_ms: event.received_at_ms,
            };
            // Where the log put the event, for the console's read-back (a `Copy` value).
            let mut stored_at = Position::Unknown;
            let (app, ev, at, dg) = (&app, &event, &mut stored_at, &digest);
            // `intent` is this request's record, or (shared dedupe) that of an earlier attempt
            // at the delivery that failed or died: the record is then that attempt's again
            // (same hookgate-id and received-at), one id per delivery whichever replica wrote.
            let append = move |intent: Intent| async move {
                let retold;
                let event = if intent.id == ev.id && intent.received_at_ms == ev.received_at_ms {
                    ev
                } else {
                    retold = Event {
                        id: intent.id,
                        received_at_ms: intent.received_at_ms,
                        ..ev.clone()
                    };
                    &retold
                };
                let id = event.id;
                match app.log.append(event).await {
                    Ok(pos) => *at = pos,
                    Err(e) => {
                        if e.maybe_written() {
                            app.maybe_written.note(idx, &event.delivery_id, id);
                        }
                        return Err(Failure::Append(e));
                    }
                }
                if reused.is_some() {
                    app.maybe_written.clear(idx, &event.delivery_id);
                }
                if let Some(store) = &app.store {
                    let keys = std::iter::once(&event.delivery_id).chain(dg.as_ref());
                    for key in keys {
                        if let Err(e) = store.record(&event.source, key, id) {
                            // The event is durable; only cross-restart dedupe of it is at risk.
                            tracing::warn!(error = %e, "could not record the delivery id on disk");
                            metrics::counter!("hookgate_dedupe_store_errors_total").increment(1);
                        }
                    }
                }
                Ok::<_, Failure>(id)
            };
            let Some(digest) = &digest else {
                let outcome = app.dedupe.admit(idx, &ev.delivery_id, intent, append).await;
                return (outcome, false, stored_at);
            };
            // Boxed: the two nested admissions make a large state, which would otherwise
            // size (and be copied with) every request's future, digest or not.
            let (outcome, replayed) = Box::pin(async {
                let mut replayed = false;
                let seen = &mut replayed;
                let outcome = app
                    .dedupe
                    .admit(idx, &ev.delivery_id, intent, move |intent| async move {
                        match app.dedupe.admit(idx, digest, intent, append).await {
                            Ok(Admission::New(id)) => Ok(id),
                            Ok(Admission::Duplicate(id)) => {
                                *seen = true;
                                Ok(id)
                            }
                            Err(e) => Err(Arc::unwrap_or_clone(e)),
                        }
                    })
                    .await;
                match outcome {
                    Ok(Admission::New(id)) if replayed => (Ok(Admission::Duplicate(id)), true),
                    Ok(a) => (Ok(a), false),
                    Err(e) => (Err(e), false),
                }
            })
            .await;
            (outcome, replayed, stored_at)
        });
        let (outcome, replayed, stored_at) = task.await;
        if let (Some(c), Some(note)) = (&self.console, note) {
            c.accepted(note, stored_at, &outcome);
        }
        if replayed {
            if let Some(replays) = &src.dedupe_body {
                replays.increment(1);
            }
        }
        // Some senders expect a fixed answer (Adyen's `[accepted]`), duplicates included.
        let fixed = verifier.provider().spec().accepted_body();
        match (outcome, fixed) {
            (Ok(Admission::New(_) | Admission::Duplicate(_)), Some(text)) => {
                Ok(answer_response(crate::verify::Answer {
                    status: 200,
                    content_type: "text/plain; charset=utf-8",
                    body: text.to_string(),
                    headers: Vec::new(),
                }))
            }
            (Ok(Admission::New(id)), None) => Ok(accepted(id, false)),
            (Ok(Admission::Duplicate(id)), None) => Ok(accepted(id, true)),
            (Err(e), _) => Err(match &*e {
                Failure::Append(e) => append_reject(e),
                Failure::Dedupe(r) => dedupe_reject(*r),
            }),
        }
    }
}

impl App {
    /// Stores a secret handed over by a handshake (trust on first use) and verifies with it
    /// from now on; refused once the source has any secret.
    async fn learn(
        &self,
        src: &Source,
        secret: String,
        answer: crate::verify::Answer,
    ) -> Response<Full<Bytes>> {
        if secret.is_empty() || answer.status != 200 {
            return answer_response(answer);
        }
        let _one_at_a_time = self.learning.lock().await;
        let current = src.verifier();
        if !current.has_no_keys() {
            return error_response(&reject(
                StatusCode::CONFLICT,
                "secret_already_set",
                "this source already has a secret; remove its learned secret file to accept a new handshake",
            ));
        }
        let Some(store) = &self.learned else {
            return error_response(&reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_state_directory",
                "this source cannot keep a learned secret: configure a [spool]",
            ));
        };
        if let Err(e) = store.store(&src.name, &secret) {
            tracing::error!(source = %src.name, error = %e, "could not store the secret learned from a handshake");
            return error_response(&reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "secret_not_stored",
                "the secret could not be stored durably; retry later",
            ));
        }
        let learned = crate::verify::Verifier::with_options(
            current.provider(),
            &[secret],
            current.options().clone(),
        );
        match learned {
            Ok(v) => {
                *src.verifier.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
                tracing::info!(source = %src.name, "learned the source's secret from its handshake");
                answer_response(answer)
            }
            Err(_) => error_response(&reject(
                StatusCode::BAD_REQUEST,
                "bad_handshake",
                "the handshake's secret is not usable",
            )),
        }
    }
}

/// The dedupe key of a body's digest: SHA-256, behind a prefix no delivery id can carry
/// (a control character, which header values and our extracted ids never hold).
fn body_key(body: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, body);
    let mut key = String::with_capacity(6 + 64);
    key.push_str("\u{1}body:");
    key.push_str(&hex::encode(d.as_ref()));
    key
}

enum BodyError {
    TooLarge,
    Read,
}

/// Reads a whole body of at most `max` bytes. A body that arrives as one frame (the usual
/// webhook) is returned as that frame's buffer, without a copy or a list of chunks, and as
/// soon as the body reports its end (`is_end_stream`), not one poll later.
async fn read_body<B>(body: B, max: u64) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    // Only a body of several frames is copied together (no allocation until then).
    let mut joined = BytesMut::new();
    let mut len: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        len += data.len() as u64;
        if len > max {
            return Err(BodyError::TooLarge);
        }
        match &first {
            None => first = Some(data),
            Some(f) => {
                if joined.is_empty() {
                    joined.reserve(len as usize);
                    joined.extend_from_slice(f);
                }
                joined.extend_from_slice(&data);
            }
        }
        // With a Content-Length, hyper's body says it is complete once that many bytes
        // came: stop here instead of waiting for its end-of-stream, which would park the
        // request (and arm the body timer) until hyper's next turn.
        if body.is_end_stream() {
            break;
        }
    }
    Ok(if joined.is_empty() {
        first.unwrap_or_default()
    } else {
        joined.freeze()
    })
}

fn verify_message(e: VerifyError) -> &'static str {
    match e {
        VerifyError::Missing => "the signature is missing",
        VerifyError::Malformed => "the signature header is malformed",
        VerifyError::Invalid => "the signature does not match",
        VerifyError::Expired => "the signature timestamp is outside the allowed tolerance",
    }
}

fn extract_message(e: crate::extract::ExtractError) -> &'static str {
    use crate::extract::ExtractError as E;
    match e {
        E::MissingDeliveryId => "the delivery id this provider always sends is missing",
        E::InvalidJson => "the body is not valid JSON",
        E::UnsupportedMediaType => "this source needs a JSON body",
    }
}

/// Why an event was not accepted after its checks: the log's append failed, or the shared
/// dedupe store could not decide (then nothing was appended).
#[derive(Debug, Clone)]
enum Failure {
    Append(AppendError),
    Dedupe(StoreRefusal),
}

impl From<StoreRefusal> for Failure {
    fn from(r: StoreRefusal) -> Failure {
        Failure::Dedupe(r)
    }
}

fn dedupe_reject(r: StoreRefusal) -> Reject {
    match r {
        StoreRefusal::Unavailable => Reject {
            retry_after: Some(crate::redis_dedupe::UNAVAILABLE_RETRY_AFTER),
            ..reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "dedupe_unavailable",
                "the shared dedupe store cannot be reached; nothing was stored; retry later",
            )
        },
        StoreRefusal::Pending => Reject {
            retry_after: Some(crate::redis_dedupe::PENDING_RETRY_AFTER),
            ..reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "duplicate_pending",
                "another replica is still storing this delivery; retry later",
            )
        },
        StoreRefusal::Unreadable => Reject {
            retry_after: Some(crate::redis_dedupe::PENDING_RETRY_AFTER),
            ..reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "dedupe_unreadable",
                "the shared dedupe store holds this delivery in a format this version does not read (replicas of different versions?); nothing was stored; retry later",
            )
        },
    }
}

fn append_reject(e: &AppendError) -> Reject {
    match e {
        AppendError::Unavailable { retry_after, .. } => Reject {
            retry_after: Some(*retry_after),
            ..reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                "the event log cannot take the event now; retry later",
            )
        },
        AppendError::Full { retry_after } => Reject {
            retry_after: Some(*retry_after),
            ..reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "spool_full",
                "the local spool is full; retry later",
            )
        },
        AppendError::TooLarge
        | AppendError::Refused {
            reason: RefuseReason::TooLarge,
            ..
        } => reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            "record_too_large",
            "the event is larger than the log accepts",
        ),
        AppendError::Refused { .. } => reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "log_rejected",
            "the event log refused the event; see hookgate's log",
        ),
    }
}

fn kept(headers: &HeaderMap, names: &[HeaderName]) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for n in names {
        if let Some(v) = headers.get(n) {
            out.push((n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())));
        }
    }
    out
}

fn accepted(id: Ulid, duplicate: bool) -> Response<Full<Bytes>> {
    let mut buf = [0u8; ulid::ULID_LEN];
    let id = id.array_to_str(&mut buf);
    let tail: &[u8] = if duplicate {
        b"\",\"duplicate\":true}"
    } else {
        b"\",\"duplicate\":false}"
    };
    let mut body = Vec::with_capacity(7 + id.len() + tail.len());
    body.extend_from_slice(b"{\"id\":\"");
    body.extend_from_slice(id.as_bytes());
    body.extend_from_slice(tail);
    json(StatusCode::OK, Bytes::from(body))
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A handshake's answer as a response. Header values that cannot be sent (a provider bug)
/// are dropped rather than sent mangled.
fn answer_response(answer: crate::verify::Answer) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut r = json(status, Bytes::from(answer.body));
    if let Ok(ct) = HeaderValue::from_str(answer.content_type) {
        r.headers_mut().insert(CONTENT_TYPE, ct);
    }
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            r.headers_mut().insert(name, value);
        }
    }
    r
}

fn error_response(rej: &Reject) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": rej.code, "message": rej.message }).to_string();
    let mut r = json(rej.status, Bytes::from(body));
    if let Some(s) = rej.retry_after {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// A future that runs to completion even if whoever awaits it goes away: polled in place
/// while awaited, and if dropped before it is done, the rest of it is spawned on the current
/// tokio runtime. One allocation instead of a task (and its wake-ups) per request.
struct Detached<F: Future + Send + 'static>
where
    F::Output: Send + 'static,
{
    fut: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> Detached<F>
where
    F::Output: Send + 'static,
{
    fn new(fut: F) -> Self {
        Detached {
            fut: Some(Box::pin(fut)),
        }
    }
}

impl<F: Future + Send + 'static> Future for Detached<F>
where
    F::Output: Send + 'static,
{
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(fut) = self.fut.as_mut() else {
            // Polled after completion: never happens with `.await`; stay pending.
            return Poll::Pending;
        };
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.fut = None;
        Poll::Ready(out)
    }
}

impl<F: Future + Send + 'static> Drop for Detached<F>
where
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(fut);
                }
                Err(_) => {
                    tracing::error!("request dropped outside the runtime; its append is abandoned")
                }
            }
        }
    }
}

/// Keeps the in-flight gauge true even when a request future is dropped.
struct InFlight<'a>(&'a metrics::Gauge);
impl<'a> InFlight<'a> {
    fn new(g: &'a metrics::Gauge) -> Self {
        g.increment(1.0);
        InFlight(g)
    }
}
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Accepts connections until `stop` fires, then stops accepting, lets in-flight requests
/// finish (at most `server.shutdown_timeout`) and returns. `on` says which listener this is.
///
/// Each connection counts against `max_connections` and its client's
/// `max_connections_per_client` (a connection beyond either is closed at once), and is
/// closed once it has had no request in flight for `idle_timeout`.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    on: Listener,
    mut stop: watch::Receiver<bool>,
) {
    let limits = app.limits.clone();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_size.0.min(u32::MAX as u64) as u32)
        .keep_alive_interval(limits.h2_keep_alive_interval)
        .keep_alive_timeout(limits.h2_keep_alive_timeout);
    let builder = Arc::new(builder);
    let open = metrics::gauge!("hookgate_connections_open", "listener" => on.as_str());
    let idle_closed =
        metrics::counter!("hookgate_connections_idle_closed_total", "listener" => on.as_str());
    // Every connection task holds a clone; when all are dropped, every connection is done.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let edge = match on {
        Listener::Public => app.edge.clone(),
        Listener::Admin => Arc::new(Edge::plain(limits.header_timeout)),
    };
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let peer_client = crate::edge::proxy::canonical(peer.ip());
        // A trusted proxy's connection carries many clients: it counts towards the total
        // only, and (with the PROXY protocol) towards its real client's cap once the header
        // names it.
        let trusted_peer = edge.trusts(peer_client);
        // The caps guard the public listener; the admin listener (probes, metrics) is
        // meant for the internal network and must stay reachable during a flood.
        let slot = match on {
            Listener::Public => match app.gate.connection(peer_client, !trusted_peer) {
                Ok(slot) => Some(slot),
                Err(why) => {
                    tracing::debug!(peer = %peer, reason = why.as_str(), "connection refused");
                    drop(stream);
                    continue;
                }
            },
            Listener::Admin => None,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let edge = edge.clone();
        let builder = builder.clone();
        let mut stop = stop.clone();
        let done = done_tx.clone();
        let (open, idle_closed) = (open.clone(), idle_closed.clone());
        let idle_timeout = limits.idle_timeout;
        // The PROXY header and the TLS handshake are read in the connection's own task, so
        // a slow or silent client never holds up the accept loop.
        tokio::spawn(async move {
            let mut slot = slot;
            let _held = (done, OpenConn::new(open));
            let Some((io, conn)) = edge.accept(stream, peer).await else {
                return;
            };
            if let Some(slot) = &mut slot {
                if trusted_peer && conn.client != peer_client {
                    if let Err(why) = app.gate.add_client(slot, conn.client) {
                        tracing::debug!(client = %conn.client, reason = why.as_str(), "connection refused");
                        return;
                    }
                }
            }
            let _slot = slot;
            let activity = Arc::new(Activity::default());
            let svc = {
                let activity = activity.clone();
                // Only the admin listener serves the live stream: public requests clone
                // nothing for it.
                let stream_stop = (on == Listener::Admin).then(|| stop.clone());
                hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    let client = edge.client(&conn, req.headers());
                    let busy = activity.begin();
                    let stream_stop = stream_stop.clone();
                    async move {
                        let _busy = busy;
                        // The console's live stream has a streaming body; everything
                        // else is answered whole.
                        if let Some(stream_stop) =
                            stream_stop.filter(|_| req.uri().path() == "/api/v1/stream")
                        {
                            if let Some(c) = app.console() {
                                return Ok::<_, Infallible>(
                                    crate::console::stream::handle(c, req, client, stream_stop)
                                        .await,
                                );
                            }
                        }
                        Ok::<_, Infallible>(
                            app.handle_on(on, req, client)
                                .await
                                .map(http_body_util::Either::Left),
                        )
                    }
                })
            };
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            let mut conn = std::pin::pin!(conn);
            let mut closing = false;
            loop {
                let idle_at = activity.idle_deadline(idle_timeout);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stop.wait_for(|s| *s), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = tokio::time::sleep_until(idle_at), if !closing => {
                        if activity.idle_for() >= idle_timeout {
                            closing = true;
                            idle_closed.increment(1);
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    drop(done_tx);
    tracing::info!("stopped accepting; waiting for in-flight requests");
    tokio::select! {
        _ = done_rx.recv() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(limits.shutdown_timeout) => tracing::warn!("shutdown timeout: closing remaining connections"),
    }
}

impl Listener {
    fn as_str(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Admin => "admin",
        }
    }
}

/// What a connection is doing: requests in flight and when the last one ended.
struct Activity {
    start: tokio::time::Instant,
    active: std::sync::atomic::AtomicU32,
    /// Milliseconds from `start` at which the last request ended.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            start: tokio::time::Instant::now(),
            active: Default::default(),
            last_ms: Default::default(),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.active
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Busy(self.clone())
    }

    /// How long the connection has had nothing in flight (zero while it has).
    fn idle_for(&self) -> Duration {
        if self.active.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Acquire));
        self.start.elapsed().saturating_sub(last)
    }

    /// When to look again whether the connection has been idle for `timeout`.
    fn idle_deadline(&self, timeout: Duration) -> tokio::time::Instant {
        tokio::time::Instant::now() + timeout.saturating_sub(self.idle_for())
    }
}

/// One request in flight on a connection.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        let now = a.start.elapsed().as_millis() as u64;
        a.last_ms.store(now, std::sync::atomic::Ordering::Release);
        a.active.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Keeps the open-connections gauge true however a connection task ends.
struct OpenConn(metrics::Gauge);

impl OpenConn {
    fn new(g: metrics::Gauge) -> Self {
        g.increment(1.0);
        OpenConn(g)
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    fn frames(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = std::io::Error> {
        let v: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(v))
    }

    #[tokio::test]
    async fn a_detached_future_dropped_midway_still_runs_to_the_end() {
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel::<&'static str>();
        let fut = Detached::new(async move {
            let _ = wait.await;
            let _ = done_tx.send("finished");
            7
        });
        // Awaited to the end, it gives its output like the future itself.
        assert_eq!(Detached::new(async { 5 }).await, 5);
        // Polled once, then dropped (a client that hung up): the rest runs on the runtime.
        let mut fut = Box::pin(fut);
        let pending =
            std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await;
        assert!(pending);
        drop(fut);
        go.send(()).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("the dropped future finished in the background")
            .unwrap();
        assert_eq!(got, "finished");
    }

    #[tokio::test]
    async fn bodies_in_one_or_many_frames_read_whole_and_bounded() {
        let one = Bytes::from_static(b"{\"a\":1}");
        let got = read_body(Full::new(one.clone()), 100).await.ok().unwrap();
        assert_eq!(got, one);
        // One frame: the very same buffer, no copy.
        assert_eq!(got.as_ptr(), one.as_ptr());
        let got = read_body(frames(&["ab", "cd", "ef"]), 6)
            .await
            .ok()
            .unwrap();
        assert_eq!(&got[..], b"abcdef");
        assert!(matches!(
            read_body(frames(&["ab", "cd", "ef"]), 5).await,
            Err(BodyError::TooLarge)
        ));
        assert!(matches!(
            read_body(Full::new(Bytes::from_static(b"123456")), 5).await,
            Err(BodyError::TooLarge)
        ));
        assert!(read_body(frames(&[]), 5).await.ok().unwrap().is_empty());
    }
}
