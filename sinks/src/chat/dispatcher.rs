//! The dispatcher: matches an event against the routes, renders, delivers to every
//! matching sink concurrently with retries, and dead-letters what fails for good.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hookgate_proto::{Event, Ulid};

use crate::chat::llm::Handled;
use crate::chat::metrics::{self, Outcome};
use crate::chat::sink::{build, Target};
use crate::chat::template::{context, Templates};
use crate::chat::{
    markup, retry, ChatConfig, ConfigError, DeadLetter, Markup, Message, RouteConfig, Sink,
    SinkConfig, SinkError,
};

/// What happened to one (route, sink) delivery of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivered (2xx), after this many attempts in total.
    Delivered {
        /// Attempts over all parts.
        attempts: u32,
    },
    /// Nothing to deliver (empty render, non-chat event for an llm sink, already answered).
    Skipped {
        /// Why.
        reason: String,
    },
    /// Failed for good and recorded in the dead-letter store.
    DeadLettered {
        /// The last (redacted) error.
        error: String,
    },
    /// Failed for good and the dead-letter write failed too: the event is NOT done.
    NotDone {
        /// The delivery error and the dead-letter error.
        error: String,
    },
}

/// One (route, sink) delivery of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Index of the route in the config.
    pub route: usize,
    /// Sink name.
    pub sink: String,
    /// How it ended.
    pub outcome: DeliveryOutcome,
}

/// The result of dispatching one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchReport {
    /// The event's id.
    pub event_id: Ulid,
    /// One entry per matching (route, sink).
    pub deliveries: Vec<Delivery>,
}

impl DispatchReport {
    /// True when every delivery ended (delivered, skipped or dead-lettered): the caller may
    /// commit the event's log offset. False means retry the event later.
    pub fn is_done(&self) -> bool {
        !self
            .deliveries
            .iter()
            .any(|d| matches!(d.outcome, DeliveryOutcome::NotDone { .. }))
    }
}

struct Route {
    source: String,
    events: Option<Vec<String>>,
    when: Vec<(String, serde_json::Value)>,
    sinks: Vec<String>,
}

impl Route {
    fn matches(&self, ev: &Event, body: Option<&serde_json::Value>) -> bool {
        if *ev.source != *self.source {
            return false;
        }
        if let Some(events) = &self.events {
            if !events.contains(&ev.event_type) {
                return false;
            }
        }
        self.when
            .iter()
            .all(|(ptr, want)| body.and_then(|b| b.pointer(ptr)) == Some(want))
    }
}

struct Inner {
    targets: HashMap<String, Target>,
    replies: HashMap<String, Arc<dyn Sink>>,
    routes: Vec<Route>,
    templates: Templates,
    dead_letter: Arc<dyn DeadLetter>,
}

/// Delivers events to sinks per the routes. Cheap to clone; `dispatch` may run concurrently.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.inner.targets.keys().collect();
        names.sort();
        f.debug_struct("Dispatcher")
            .field("sinks", &names)
            .field("routes", &self.inner.routes.len())
            .finish()
    }
}

/// Validates a config the way [`Dispatcher::new`] does, returning every problem found
/// (sink settings, unknown sinks in routes, `reply_via` targets, template syntax).
pub fn check(cfg: &ChatConfig) -> Vec<ConfigError> {
    match build_inner(&cfg.sinks, &cfg.routes) {
        Ok(_) => Vec::new(),
        Err(errs) => errs,
    }
}

type Built = (
    HashMap<String, Target>,
    HashMap<String, Arc<dyn Sink>>,
    Vec<Route>,
    Templates,
);

fn build_inner(sinks: &[SinkConfig], routes: &[RouteConfig]) -> Result<Built, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let mut targets = HashMap::new();
    for cfg in sinks {
        if targets.contains_key(cfg.name()) {
            errs.push(ConfigError::DuplicateSink(cfg.name().to_owned()));
            continue;
        }
        match build(cfg) {
            Ok(t) => {
                targets.insert(cfg.name().to_owned(), t);
            }
            Err(e) => errs.push(e),
        }
    }
    let declared: HashSet<&str> = sinks.iter().map(SinkConfig::name).collect();
    let mut replies: HashMap<String, Arc<dyn Sink>> = HashMap::new();
    for t in targets.values() {
        let Target::Llm(l) = t else { continue };
        match targets.get(l.reply_via()) {
            Some(Target::Deliver(s)) if s.platform().is_some() => {
                replies.insert(l.name().to_owned(), s.clone());
            }
            Some(_) => errs.push(ConfigError::Sink {
                sink: l.name().to_owned(),
                message: format!("reply_via '{}' is not a chat sink", l.reply_via()),
            }),
            // A sink that failed to build already has its own error.
            None if declared.contains(l.reply_via()) => {}
            None => errs.push(ConfigError::Sink {
                sink: l.name().to_owned(),
                message: format!("reply_via '{}' is not a configured sink", l.reply_via()),
            }),
        }
    }
    let mut templates = Templates::new();
    let mut out_routes = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let route_err = |message: String| ConfigError::Route { route: i, message };
        let names = r.sink_names();
        if names.is_empty() {
            errs.push(route_err("needs `sink` or `sinks`".into()));
        }
        let mut markups: HashSet<Markup> = HashSet::new();
        for n in &names {
            match targets.get(*n) {
                Some(Target::Deliver(s)) => {
                    if let Some(m) = s.markup() {
                        markups.insert(m);
                    }
                }
                Some(Target::Llm(_)) => {}
                None if declared.contains(n) => {}
                None => errs.push(route_err(format!("unknown sink '{n}'"))),
            }
        }
        for ptr in r.when.keys() {
            if !ptr.is_empty() && !ptr.starts_with('/') {
                errs.push(route_err(format!(
                    "when key '{ptr}' is not a JSON pointer (must start with '/')"
                )));
            }
        }
        // Compile even when no sink renders text, so `check` still catches syntax errors.
        if markups.is_empty() && r.template.is_some() {
            markups.insert(Markup::Plain);
        }
        for m in markups {
            if let Err(e) = templates.add(i, r.template.as_deref(), m) {
                errs.push(e);
                break;
            }
        }
        out_routes.push(Route {
            source: r.source.clone(),
            events: r.events.clone(),
            when: r.when.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            sinks: names.iter().map(|s| (*s).to_owned()).collect(),
        });
    }
    // The built-in summary, for replays of events no route renders for that sink.
    for m in Markup::ALL {
        if let Err(e) = templates.add(routes.len(), None, m) {
            errs.push(e);
        }
    }
    if errs.is_empty() {
        Ok((targets, replies, out_routes, templates))
    } else {
        Err(errs)
    }
}

/// Delivers `text` through `sink`: split to the sink's length limit, each part retried
/// per the sink's policy. Returns the total attempts.
pub(crate) async fn deliver_text(
    sink: &dyn Sink,
    ev: &Event,
    text: &str,
    chat: Option<&str>,
    received_at_ms: i64,
) -> Result<u32, SinkError> {
    let parts = match sink.markup() {
        Some(m) => markup::split(text, sink.max_len(), m),
        None => vec![text.to_owned()],
    };
    let mut attempts = 0;
    for part in &parts {
        let msg = Message {
            event: ev,
            text: part,
            chat,
        };
        let ((), n) = retry::run(sink.name(), sink.retry(), received_at_ms, || {
            sink.send(&msg)
        })
        .await?;
        attempts += n;
    }
    Ok(attempts)
}

impl Dispatcher {
    /// Builds every sink and compiles every route template. The error names the sink or
    /// route (by index); [`check`] lists all errors instead of the first.
    pub fn new(
        sinks: Vec<SinkConfig>,
        routes: Vec<RouteConfig>,
        dead_letter: Arc<dyn DeadLetter>,
    ) -> Result<Dispatcher, ConfigError> {
        let (targets, replies, routes, templates) =
            build_inner(&sinks, &routes).map_err(|mut errs| errs.swap_remove(0))?;
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                targets,
                replies,
                routes,
                templates,
                dead_letter,
            }),
        })
    }

    /// Delivers `ev` to every matching route's sinks, concurrently. Returns when each
    /// delivery succeeded, was skipped or was dead-lettered; see [`DispatchReport::is_done`].
    pub async fn dispatch(&self, ev: &Event) -> DispatchReport {
        let body: Option<serde_json::Value> = serde_json::from_slice(&ev.body).ok();
        let mut jobs = Vec::new();
        for (i, r) in self.inner.routes.iter().enumerate() {
            if r.matches(ev, body.as_ref()) {
                for s in &r.sinks {
                    jobs.push((i, s.clone()));
                }
            }
        }
        if jobs.is_empty() {
            return DispatchReport {
                event_id: ev.id,
                deliveries: Vec::new(),
            };
        }
        let shared = Arc::new((ev.clone(), body));
        let mut handles = AbortOnDrop(Vec::with_capacity(jobs.len()));
        for (route, sink) in &jobs {
            let inner = self.inner.clone();
            let shared = shared.clone();
            let (route, sink) = (*route, sink.clone());
            handles.0.push(tokio::spawn(async move {
                let (ev, body) = &*shared;
                inner.deliver(route, &sink, ev, body.as_ref()).await
            }));
        }
        let mut deliveries = Vec::with_capacity(jobs.len());
        for ((route, sink), h) in jobs.into_iter().zip(handles.0.iter_mut()) {
            let outcome = match h.await {
                Ok(o) => o,
                Err(e) => DeliveryOutcome::NotDone {
                    error: format!("delivery task failed: {e}"),
                },
            };
            deliveries.push(Delivery {
                route,
                sink,
                outcome,
            });
        }
        DispatchReport {
            event_id: ev.id,
            deliveries,
        }
    }

    /// Delivers a dead-lettered event to one sink again (`dlq replay`), with the sink's
    /// retries; the age limit counts from now, not from the event's receipt.
    pub async fn replay(&self, ev: &Event, sink: &str) -> Result<(), SinkError> {
        let inner = &self.inner;
        let Some(target) = inner.targets.get(sink) else {
            return Err(SinkError::permanent(format!("unknown sink '{sink}'")));
        };
        let body: Option<serde_json::Value> = serde_json::from_slice(&ev.body).ok();
        let now = hookgate_proto::now_ms();
        match target {
            Target::Deliver(s) => {
                let route = inner
                    .routes
                    .iter()
                    .position(|r| r.matches(ev, body.as_ref()) && r.sinks.iter().any(|n| n == sink))
                    .or_else(|| {
                        inner
                            .routes
                            .iter()
                            .position(|r| r.sinks.iter().any(|n| n == sink))
                    })
                    .unwrap_or(inner.routes.len());
                let text = match s.markup() {
                    Some(m) => inner
                        .templates
                        .render(route, m, &context(ev, body.as_ref()))?,
                    None => String::new(),
                };
                deliver_text(s.as_ref(), ev, &text, None, now).await?;
            }
            Target::Llm(l) => {
                let reply = inner.reply_for(l.name())?;
                l.handle(ev, body.as_ref(), &reply, now).await?;
            }
        }
        metrics::delivery(sink, Outcome::Ok);
        Ok(())
    }
}

impl Inner {
    fn reply_for(&self, llm: &str) -> Result<Arc<dyn Sink>, SinkError> {
        self.replies
            .get(llm)
            .cloned()
            .ok_or_else(|| SinkError::permanent("reply_via sink missing"))
    }

    async fn attempt(
        &self,
        route: usize,
        sink: &str,
        ev: &Event,
        body: Option<&serde_json::Value>,
    ) -> Result<Result<u32, String>, SinkError> {
        match self.targets.get(sink) {
            None => Err(SinkError::permanent(format!("unknown sink '{sink}'"))),
            Some(Target::Deliver(s)) => {
                let text = match s.markup() {
                    Some(m) => {
                        let t = self.templates.render(route, m, &context(ev, body))?;
                        if t.trim().is_empty() {
                            return Ok(Err("template rendered empty".into()));
                        }
                        t
                    }
                    None => String::new(),
                };
                deliver_text(s.as_ref(), ev, &text, None, ev.received_at_ms)
                    .await
                    .map(Ok)
            }
            Some(Target::Llm(l)) => {
                let reply = self.reply_for(l.name())?;
                match l.handle(ev, body, &reply, ev.received_at_ms).await? {
                    Handled::Answered => Ok(Ok(1)),
                    Handled::Skipped(why) => Ok(Err(why)),
                }
            }
        }
    }

    async fn deliver(
        &self,
        route: usize,
        sink: &str,
        ev: &Event,
        body: Option<&serde_json::Value>,
    ) -> DeliveryOutcome {
        match self.attempt(route, sink, ev, body).await {
            Ok(Ok(attempts)) => {
                metrics::delivery(sink, Outcome::Ok);
                metrics::latency(sink, ev.received_at_ms);
                DeliveryOutcome::Delivered { attempts }
            }
            Ok(Err(reason)) => {
                metrics::delivery(sink, Outcome::Skipped);
                tracing::debug!(sink, event = %ev.id, reason, "skipped");
                DeliveryOutcome::Skipped { reason }
            }
            Err(e) => {
                let error = e.to_string();
                tracing::warn!(sink, event = %ev.id, route, error, "delivery failed, dead-lettering");
                match self.dead_letter.dead_letter(ev, sink, &error).await {
                    Ok(()) => {
                        metrics::delivery(sink, Outcome::DeadLettered);
                        DeliveryOutcome::DeadLettered { error }
                    }
                    Err(d) => {
                        tracing::error!(sink, event = %ev.id, error = %d, "dead-letter write failed");
                        DeliveryOutcome::NotDone {
                            error: format!("{error}; {d}"),
                        }
                    }
                }
            }
        }
    }
}

/// Aborts delivery tasks when `dispatch` is cancelled, so nothing is sent after the
/// caller gave up on the event.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<DeliveryOutcome>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}
