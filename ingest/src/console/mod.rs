//! The web console and admin API (`/console/`, `/api/v1`), served on the admin listener
//! when `[admin] token` (or `token_file`) is set.
//!
//! Layout:
//! - here: [`Console`], the shared state: the token, the recent-events index and the
//!   refused-requests ring (bounded, filled from the request path by one cheap call each),
//!   per-source counters in 10-second buckets, and the dispatch parts replays use.
//! - [`auth`]: the login page's session cookie, CSRF tokens, the failed-login limiter,
//!   `Authorization: Bearer`, and constant-time token comparison.
//! - [`api`]: the JSON API (`/api/v1/...`).
//! - [`pages`]: the HTML shell, the login page and the embedded assets.
//! - [`bounded`]: the bounded ring both lists live in.
//! - [`logread`]: reading events back from Kafka (one record by position; the topics'
//!   tails for the refill after a restart).
//! - [`stream`]: `GET /api/v1/stream`, live `stats` events (SSE) for the Overview page.
//! - [`stats`]: the per-source buckets (lock-free) and the Prometheus text the sink,
//!   latency and lag figures are read from.
//!
//! Cost on the request path: with the console off, one `Option` check per call site. With
//! it on, an accepted event copies its metadata (ids, type, headers) into the index, and a
//! refused request copies a few fields into the ring; each takes a short mutex to push one
//! element. Bodies are never kept: `/api/v1/events/{id}` reads them back from the log, at
//! the position the append reported (Kafka partition and offset, or spool offset).
//! At start the index is refilled in the background from the log's tail (the spool's
//! newest records, the newest of each source topic's partitions), so it lists what the log
//! still holds.

pub mod api;
pub mod auth;
pub mod bounded;
pub mod logread;
pub mod pages;
pub mod stats;
pub mod stream;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use hookgate_proto::{Event, Ulid};
use hookgate_sinks::dispatch::{Dispatcher, DlqStore};
use hookgate_sinks::log::Position;
use hookgate_sinks::{Log, Secret};
use http::{HeaderMap, HeaderValue, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::dedupe::Admission;
use bounded::Ring;
use stats::SourceStats;

/// Longest source name or delivery id kept for a refused request (they may come from
/// anyone: the unknown source's path segment, a forged header).
const MAX_FIELD: usize = 128;
/// How often the sink counters are sampled into their 10-second buckets.
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// One accepted event in the recent-events index: metadata only.
#[derive(Debug)]
pub struct EventMeta {
    /// The hookgate-id.
    pub id: Ulid,
    /// Index of the source (for the counters).
    pub source_idx: u32,
    /// Source name.
    pub source: Arc<str>,
    /// Provider.
    pub provider: Arc<str>,
    /// Provider event type.
    pub event_type: String,
    /// Provider delivery id.
    pub delivery_id: String,
    /// Receipt time, ms since the epoch.
    pub received_at_ms: i64,
    /// Body length.
    pub body_bytes: usize,
    /// The request's headers as received, or the kept ones for an event read from the
    /// log at start (redacted when shown).
    pub headers: HeaderMap,
    /// Whether it was read from the log at start (its headers are then the kept ones).
    pub from_log: bool,
    /// Its topic (where a Kafka position points).
    pub topic: Arc<str>,
    /// Where the log put it.
    pub position: Position,
}

/// One refused request: never the body or a secret.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// The source name (or the unknown path segment, cut to [`MAX_FIELD`]).
    pub source: Arc<str>,
    /// Whether `source` is a configured source.
    pub known_source: bool,
    /// The client address.
    pub client: IpAddr,
    /// The status answered.
    pub status: u16,
    /// The stable reason code.
    pub code: &'static str,
    /// The delivery id header, when the provider sends one in a header and it was present.
    pub delivery_id: Option<String>,
}

/// Dispatch parts for dead-letter replays and "send to sink again".
pub struct DispatchParts {
    /// The configured dead-letter store (shared with the running dispatcher).
    pub store: Arc<DlqStore>,
    /// A dispatcher of its own (same sinks and routes) for replays.
    pub dispatcher: Dispatcher,
}

/// The console's shared state. Built when `[admin]` has a token.
pub struct Console {
    token: RwLock<Option<Secret>>,
    admin: crate::config::AdminConfig,
    pub(crate) auth: auth::Auth,
    pub(crate) events: Ring<EventMeta>,
    pub(crate) rejections: Ring<Rejection>,
    pub(crate) sources: Vec<SourceStats>,
    pub(crate) unknown: SourceStats,
    pub(crate) log: Log,
    pub(crate) prometheus: Option<PrometheusHandle>,
    pub(crate) dispatch: OnceLock<DispatchParts>,
    /// `(source, sinks)` per route: which sinks an event of a source may go to.
    pub(crate) routes: Vec<(String, Vec<String>)>,
    pub(crate) sink_names: Vec<String>,
    /// Per-sink deliveries and the dispatcher's lag over the last 15 minutes.
    pub(crate) sink_stats: stats::SinkStats,
    pub(crate) jobs: api::Jobs,
    /// Live streams open (`GET /api/v1/stream`), at most [`stream::MAX_STREAMS`].
    pub(crate) streams: std::sync::atomic::AtomicUsize,
    /// Names of headers whose values are never shown (every provider's signature header).
    pub(crate) signature_headers: Vec<String>,
    pub(crate) started_ms: i64,
    /// Reads single records back from Kafka (when the log has Kafka).
    pub(crate) kafka_reader: Option<logread::KafkaReader>,
    /// The source topics, whose tails refill the index at start and where an event no
    /// longer indexed is looked for by its id's time.
    pub(crate) topics: Vec<String>,
    /// Separate `hookgate dispatch` processes whose metrics are scraped (`[admin]
    /// dispatchers`); origin `i + 1` in [`stats::SinkStats`].
    pub(crate) remotes: Vec<Remote>,
}

/// A `hookgate dispatch` process's `/metrics`, scraped by the sampler.
pub(crate) struct Remote {
    pub(crate) url: url::Url,
    pub(crate) state: std::sync::Mutex<RemoteState>,
}

/// What the last scrape of a [`Remote`] found.
#[derive(Default)]
pub(crate) struct RemoteState {
    /// Its sink and dispatcher samples (`hookgate_sink_*`, `hookgate_dispatch_*`) from the
    /// last scrape that worked; empty while it fails.
    pub(crate) samples: Vec<stats::Sample>,
    /// When a scrape last worked, ms since the epoch.
    pub(crate) ok_ms: Option<i64>,
    /// Why the last scrape failed (`None` when it worked).
    pub(crate) error: Option<String>,
}

/// How long one scrape of a dispatcher's metrics may take.
const SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Largest metrics page read from a dispatcher.
const SCRAPE_MAX_BYTES: usize = 4 << 20;

impl Console {
    /// The console for `cfg`, or `None` when `[admin]` has no token (the console is off).
    pub fn new(
        cfg: &Config,
        log: Log,
        prometheus: Option<PrometheusHandle>,
    ) -> anyhow::Result<Option<Console>> {
        let Some(admin) = cfg.admin.as_ref().filter(|a| a.console_on()) else {
            return Ok(None);
        };
        let token = admin
            .resolve_token()
            .map_err(|m| anyhow::anyhow!("admin.{m}"))?;
        let mut signature_headers: Vec<String> = crate::verify::Provider::ALL
            .iter()
            .flat_map(|p| p.spec().about().headers.iter())
            .map(|h| h.to_ascii_lowercase())
            .collect();
        signature_headers.sort();
        signature_headers.dedup();
        Ok(Some(Console {
            token: RwLock::new(token),
            admin: admin.clone(),
            auth: auth::Auth::default(),
            events: Ring::new(admin.console_events),
            rejections: Ring::new(admin.console_rejections),
            sources: cfg
                .sources
                .iter()
                .map(|s| SourceStats::new(&s.name))
                .collect(),
            unknown: SourceStats::new("(unknown source)"),
            prometheus,
            dispatch: OnceLock::new(),
            routes: cfg
                .routes
                .iter()
                .map(|r| {
                    let mut sinks = r.sinks.clone();
                    sinks.extend(r.sink.clone());
                    (r.source.clone(), sinks)
                })
                .collect(),
            sink_names: cfg.sinks.iter().map(|s| s.name().to_owned()).collect(),
            sink_stats: stats::SinkStats::new(
                &cfg.sinks
                    .iter()
                    .map(|s| s.name().to_owned())
                    .collect::<Vec<_>>(),
            ),
            jobs: api::Jobs::default(),
            streams: std::sync::atomic::AtomicUsize::new(0),
            signature_headers,
            started_ms: hookgate_proto::now_ms(),
            kafka_reader: log.kafka().map(|k| logread::KafkaReader::new(k.config())),
            topics: {
                let mut t: Vec<String> = cfg.sources.iter().map(|s| cfg.topic_of(s)).collect();
                t.sort();
                t.dedup();
                t
            },
            remotes: admin
                .dispatchers
                .iter()
                .map(|u| {
                    Ok(Remote {
                        url: crate::config::dispatcher_url(u)
                            .map_err(|m| anyhow::anyhow!("admin.dispatchers: {m}"))?,
                        state: Default::default(),
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            log,
        }))
    }

    /// Hands the console the dead-letter store and a dispatcher (when there are routes).
    pub fn attach_dispatch(&self, parts: DispatchParts) {
        let _ = self.dispatch.set(parts);
    }

    /// Re-reads `token_file` (SIGHUP). A file that cannot be read keeps the old token.
    /// When the token changes, every session ends.
    pub fn reload_token(&self) -> Result<bool, String> {
        if self.admin.token_file.is_none() {
            return Ok(false);
        }
        let new = self.admin.resolve_token()?;
        let mut t = self.token.write().unwrap_or_else(|p| p.into_inner());
        let changed = *t != new;
        if changed {
            *t = new;
            self.auth.end_all_sessions();
        }
        Ok(changed)
    }

    pub(crate) fn token(&self) -> Option<Secret> {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Copies an event's metadata before it is appended (the event itself moves on).
    pub fn note(&self, source_idx: u32, ev: &Event, headers: &HeaderMap) -> EventMeta {
        EventMeta {
            id: ev.id,
            source_idx,
            source: ev.source.clone(),
            provider: ev.provider.clone(),
            event_type: ev.event_type.clone(),
            delivery_id: ev.delivery_id.clone(),
            received_at_ms: ev.received_at_ms,
            body_bytes: ev.body.len(),
            headers: headers.clone(),
            from_log: false,
            topic: ev.topic.clone(),
            position: Position::Unknown,
        }
    }

    /// Refills the recent-events index from the log's tail, in the background (start-up is
    /// not delayed): the spool's newest records and the newest records of each partition
    /// of the source topics, as many as the index holds. Events that arrive meanwhile stay
    /// the newest; an event found in both Kafka and the spool is read back from Kafka.
    pub fn spawn_refill(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let c = self.clone();
        tokio::spawn(async move {
            match tokio::task::spawn_blocking(move || c.refill_blocking()).await {
                Ok(n) => tracing::info!(events = n, "console: recent events refilled from the log"),
                Err(e) => tracing::warn!(error = %e, "console: refilling recent events failed"),
            }
        })
    }

    /// Samples the sink delivery counters and the dispatcher's lag into
    /// [`stats::SinkStats`] every [`SAMPLE_EVERY`], in the background (the API samples
    /// too, at each `GET /api/v1/stats`): hookgate's own metrics, and each dispatcher's in
    /// `[admin] dispatchers` over HTTP. Nothing to do without either.
    pub fn spawn_sampler(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if self.prometheus.is_none() && self.remotes.is_empty() {
            return None;
        }
        let c = self.clone();
        Some(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(SCRAPE_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .ok();
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                c.sample_sinks();
                if let Some(http) = &http {
                    c.scrape_dispatchers(http).await;
                }
            }
        }))
    }

    /// Reads every dispatcher's metrics once (concurrently) and samples them.
    pub(crate) async fn scrape_dispatchers(&self, http: &reqwest::Client) {
        let scrapes = self.remotes.iter().map(|r| scrape(http, r.url.clone()));
        let results = futures_util::future::join_all(scrapes).await;
        for (i, (r, result)) in self.remotes.iter().zip(results).enumerate() {
            let origin = i + 1;
            let mut st = r.state.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(text) => {
                    let samples: Vec<stats::Sample> = stats::parse_prometheus(&text)
                        .into_iter()
                        .filter(|s| {
                            s.name.starts_with("hookgate_sink_")
                                || s.name.starts_with("hookgate_dispatch_")
                        })
                        .collect();
                    self.sink_stats
                        .sample_from(origin, &samples, stats::now_epoch());
                    st.samples = samples;
                    st.ok_ms = Some(hookgate_proto::now_ms());
                    st.error = None;
                }
                Err(e) => {
                    if st.error.is_none() {
                        tracing::warn!(dispatcher = %r.url, error = %e, "console: reading a dispatcher's metrics failed");
                    }
                    self.sink_stats.forget_lag(origin);
                    st.samples.clear();
                    st.error = Some(e);
                }
            }
        }
    }

    /// One sample of hookgate's own sink counters (see [`Console::spawn_sampler`]); returns
    /// those metrics with the dispatchers' last scraped ones added in (the same series
    /// summed).
    pub(crate) fn sample_sinks(&self) -> Vec<stats::Sample> {
        let samples = self
            .prometheus
            .as_ref()
            .map(|p| stats::parse_prometheus(&p.render()))
            .unwrap_or_default();
        self.sink_stats.sample(&samples);
        if self.remotes.is_empty() {
            return samples;
        }
        let mut all = samples;
        for r in &self.remotes {
            let st = r.state.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(st.samples.iter().cloned());
        }
        stats::sum_same_series(all)
    }

    fn refill_blocking(&self) -> usize {
        let cap = self.events.capacity();
        let mut found: Vec<EventMeta> = Vec::new();
        if let Some(spool) = self.log.spool() {
            let read = spool.tail(cap, |offset, ev| {
                let n = ev.body.len();
                Some(self.meta_from_log(ev, n, Position::Spool(offset)))
            });
            match read {
                Ok(v) => found.extend(v),
                Err(e) => tracing::warn!(error = %e, "console: cannot read the spool's tail"),
            }
        }
        if let Some(k) = self.log.kafka() {
            match logread::tail(k.config(), &self.topics, cap, logread::TAIL_WAIT) {
                Ok(v) => found.extend(v.into_iter().map(|r| {
                    let at = Position::Kafka {
                        partition: r.partition,
                        offset: r.offset,
                    };
                    self.meta_from_log(r.event, r.body_bytes, at)
                })),
                Err(e) => tracing::warn!(error = %e, "console: cannot read the topics' tails"),
            }
        }
        // Oldest first; of two copies of one event, the Kafka one last (it wins).
        found.sort_by_key(|m| {
            (
                m.received_at_ms,
                m.id,
                matches!(m.position, Position::Kafka { .. }),
            )
        });
        self.events.fill_older(found, |m| m.id)
    }

    /// The index entry of an event read from the log (its body is dropped here).
    fn meta_from_log(&self, ev: Event, body_bytes: usize, position: Position) -> EventMeta {
        let mut headers = HeaderMap::new();
        for (n, v) in &ev.kept_headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(n.as_bytes()),
                HeaderValue::from_bytes(v),
            ) {
                headers.append(n, v);
            }
        }
        EventMeta {
            id: ev.id,
            source_idx: self
                .sources
                .iter()
                .position(|s| *s.name == *ev.source)
                .map_or(u32::MAX, |i| i as u32),
            source: ev.source,
            provider: ev.provider,
            event_type: ev.event_type,
            delivery_id: ev.delivery_id,
            received_at_ms: ev.received_at_ms,
            body_bytes,
            headers,
            from_log: true,
            topic: ev.topic,
            position,
        }
    }

    /// Records the outcome of an append: a new event goes into the index with the position
    /// the log reported; a duplicate is counted; a failure is recorded by
    /// [`Console::refused`] from the response.
    pub fn accepted<E>(
        &self,
        mut note: EventMeta,
        stored_at: Position,
        outcome: &Result<Admission, E>,
    ) {
        let Some(s) = self.sources.get(note.source_idx as usize) else {
            return;
        };
        match outcome {
            Ok(Admission::New(_)) => {
                s.add(stats::ACCEPTED);
                note.position = stored_at;
                self.events.push(note);
            }
            Ok(Admission::Duplicate(_)) => s.add(stats::DUPLICATE),
            Err(_) => {}
        }
    }

    /// Records a refused request (any status ≥ 400 on `/hooks/*`). `source_idx` is `None`
    /// for an unknown source; `delivery` is the delivery-id header, if the provider has one.
    pub fn refused(
        &self,
        source_idx: Option<u32>,
        source: &str,
        client: IpAddr,
        status: StatusCode,
        code: &'static str,
        delivery: Option<HeaderValue>,
    ) {
        let stats = source_idx
            .and_then(|i| self.sources.get(i as usize))
            .unwrap_or(&self.unknown);
        stats.add(if status.is_server_error() {
            stats::ERROR_5XX
        } else {
            stats::REFUSED
        });
        stats.refused_for(code);
        self.rejections.push(Rejection {
            at_ms: hookgate_proto::now_ms(),
            source: Arc::from(cut(source)),
            known_source: source_idx.is_some(),
            client,
            status: status.as_u16(),
            code,
            delivery_id: delivery
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(|s| cut(s).to_owned()),
        });
    }

    /// Whether a header's value must never be shown: credentials, cookies, every provider's
    /// signature header, and anything whose name looks secret.
    pub fn is_sensitive_header(&self, name: &str) -> bool {
        let n = name.to_ascii_lowercase();
        const NAMES: [&str; 5] = [
            "authorization",
            "proxy-authorization",
            "cookie",
            "set-cookie",
            "x-api-key",
        ];
        const PARTS: [&str; 9] = [
            "signature",
            "token",
            "secret",
            "auth",
            "password",
            "hmac",
            "sig",
            "key",
            "credential",
        ];
        NAMES.contains(&n.as_str())
            || self.signature_headers.binary_search(&n).is_ok()
            || PARTS.iter().any(|p| n.contains(p))
    }

    /// The sinks the routes of `source` name.
    pub(crate) fn sinks_of(&self, source: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .routes
            .iter()
            .filter(|(s, _)| s == source)
            .flat_map(|(_, sinks)| sinks.iter().cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn cut(s: &str) -> &str {
    if s.len() <= MAX_FIELD {
        return s;
    }
    let mut end = MAX_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Bytes as text for the API: UTF-8 when it is, else base64.
pub(crate) fn text_or_base64(b: &Bytes) -> (String, &'static str) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_owned(), "utf8"),
        Err(_) => {
            use base64::Engine as _;
            (
                base64::engine::general_purpose::STANDARD.encode(b),
                "base64",
            )
        }
    }
}

/// GET `url`, the Prometheus text, or why not (no URL credentials exist to leak: they are
/// refused in the config).
async fn scrape(http: &reqwest::Client, url: url::Url) -> Result<String, String> {
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| chain(&e.without_url()))?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e.without_url()))? {
        if body.len() + chunk.len() > SCRAPE_MAX_BYTES {
            return Err(format!("metrics page larger than {SCRAPE_MAX_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "metrics page is not UTF-8".to_owned())
}

/// An error with its causes ("error sending request: connection refused"), which say
/// what went wrong where the outer message alone does not.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
