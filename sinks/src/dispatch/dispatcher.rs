//! The dispatcher: matches an event against the routes, renders, delivers to every
//! matching sink concurrently with retries, and dead-letters what fails for good. An llm
//! sink only answers; the dispatcher runs its completion with retries and sends the answer
//! through its `reply_via` sink.

use std::collections::HashMap;
use std::sync::Arc;

use hookgate_proto::{Event, Ulid};

use crate::chat::config::{RouteConfig, SinkConfig};
use crate::chat::error::{ConfigError, SinkError};
use crate::chat::llm::{Incoming, LlmSink};
use crate::chat::markup::{self, Markup};
use crate::chat::metrics::{self, Outcome};
use crate::chat::sink::{Message, Sink};
use crate::chat::target::Target;
use crate::chat::template::{context, Templates};
use crate::dispatch::dead_letter::DeadLetter;
use crate::dispatch::retry;
use crate::dispatch::routes::{build_table, Route, RoutingTable};

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

/// Delivers `text` through `sink`: split to the sink's length limit, each part retried
/// per the sink's policy. Returns the total attempts.
async fn deliver_text(
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

/// What an llm sink's turn at one event did.
enum Answered {
    /// The answer reached the chat.
    Sent,
    /// Nothing to answer, with why.
    Skipped(String),
}

/// Lets `llm` answer the chat message in `ev` (completion retried per the llm sink's
/// policy) and sends the answer through `reply`. On failure the llm sink forgets the
/// event, so a replay can answer it.
async fn answer(
    llm: &LlmSink,
    reply: &dyn Sink,
    ev: &Event,
    body: Option<&serde_json::Value>,
    received_at_ms: i64,
) -> Result<Answered, SinkError> {
    let question = match llm.question(ev, body, reply.platform(), reply.configured_chat()) {
        Incoming::Question(q) => q,
        Incoming::Skipped(why) => return Ok(Answered::Skipped(why)),
    };
    let sent = async {
        let (answer, _) = retry::run(llm.name(), llm.retry(), received_at_ms, || {
            llm.complete(&question.turns)
        })
        .await?;
        if answer.truncated {
            metrics::llm_truncated(llm.name());
        }
        let text = reply
            .markup()
            .unwrap_or(Markup::Plain)
            .escape(&answer.for_chat());
        deliver_text(reply, ev, &text, Some(&question.chat), received_at_ms)
            .await
            .map_err(|e| SinkError::Permanent(format!("reply via '{}': {e}", reply.name())))?;
        Ok(answer)
    }
    .await;
    match sent {
        Ok(answer) => {
            llm.answered(question, answer.text);
            Ok(Answered::Sent)
        }
        Err(e) => {
            llm.release(ev);
            Err(e)
        }
    }
}

impl Dispatcher {
    /// Builds every sink and compiles every route template. The error names the sink or
    /// route (by index); [`check`](crate::dispatch::check) lists all errors instead of the first.
    pub fn new(
        sinks: Vec<SinkConfig>,
        routes: Vec<RouteConfig>,
        dead_letter: Arc<dyn DeadLetter>,
    ) -> Result<Dispatcher, ConfigError> {
        let RoutingTable {
            targets,
            replies,
            routes,
            templates,
        } = build_table(&sinks, &routes).map_err(|mut errs| errs.swap_remove(0))?;
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
                let ctx = context(ev, body.as_ref());
                let chat = match inner.pick_chat(route, &ctx)? {
                    ChatChoice::Configured => None,
                    ChatChoice::Picked(c) => Some(c),
                    ChatChoice::Missing => {
                        return Err(SinkError::permanent(
                            "the route's chat template rendered empty",
                        ))
                    }
                };
                let text = match s.markup() {
                    Some(m) => inner.templates.render(route, m, &ctx)?,
                    None => String::new(),
                };
                deliver_text(s.as_ref(), ev, &text, chat.as_deref(), now).await?;
            }
            Target::Llm(l) => {
                let reply = inner.reply_for(l.name())?;
                answer(l, reply.as_ref(), ev, body.as_ref(), now).await?;
            }
        }
        metrics::delivery(sink, Outcome::Ok);
        Ok(())
    }
}

/// The chat one delivery goes to.
enum ChatChoice {
    /// The sink's configured chat (the route has no `chat` template).
    Configured,
    /// The chat the route's `chat` template rendered.
    Picked(String),
    /// The `chat` template rendered empty: the event names no chat.
    Missing,
}

impl Inner {
    /// Renders `route`'s `chat` template, if it has one, and checks that the result is a
    /// Telegram chat id (the value comes from the payload).
    fn pick_chat(&self, route: usize, ctx: &minijinja::Value) -> Result<ChatChoice, SinkError> {
        if !self.routes.get(route).is_some_and(|r| r.chat) {
            return Ok(ChatChoice::Configured);
        }
        let chat = self.templates.render_chat(route, ctx)?;
        if chat.is_empty() {
            return Ok(ChatChoice::Missing);
        }
        if !crate::chat::telegram::is_chat_id(&chat) {
            return Err(SinkError::permanent(format!(
                "route #{route}: the chat template rendered {:?}, which is not a Telegram chat id (an integer or @name)",
                crate::chat::net::short(&chat)
            )));
        }
        Ok(ChatChoice::Picked(chat))
    }

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
                let ctx = context(ev, body);
                let chat = match self.pick_chat(route, &ctx)? {
                    ChatChoice::Configured => None,
                    ChatChoice::Picked(c) => Some(c),
                    ChatChoice::Missing => {
                        return Ok(Err("the route's chat template rendered empty".into()))
                    }
                };
                let text = match s.markup() {
                    Some(m) => {
                        let t = self.templates.render(route, m, &ctx)?;
                        if t.trim().is_empty() {
                            return Ok(Err("template rendered empty".into()));
                        }
                        t
                    }
                    None => String::new(),
                };
                deliver_text(s.as_ref(), ev, &text, chat.as_deref(), ev.received_at_ms)
                    .await
                    .map(Ok)
            }
            Some(Target::Llm(l)) => {
                let reply = self.reply_for(l.name())?;
                match answer(l, reply.as_ref(), ev, body, ev.received_at_ms).await? {
                    Answered::Sent => Ok(Ok(1)),
                    Answered::Skipped(why) => Ok(Err(why)),
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
