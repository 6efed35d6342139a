//! The routing table: every sink built from `[[sinks]]`, every `[[routes]]` entry ready to
//! match events, each llm sink paired with its `reply_via` chat sink, and the route
//! templates compiled per markup. [`check`] lists every problem at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hookgate_proto::Event;

use crate::chat::chat_in::Platform;
use crate::chat::config::{ChatConfig, RouteConfig, SinkConfig};
use crate::chat::error::ConfigError;
use crate::chat::markup::Markup;
use crate::chat::sink::Sink;
use crate::chat::target::{build, Target};
use crate::chat::template::Templates;

/// One route, ready to match events.
pub(crate) struct Route {
    source: String,
    events: Option<Vec<String>>,
    when: Vec<(String, serde_json::Value)>,
    /// The sinks it delivers to, by name.
    pub(crate) sinks: Vec<String>,
    /// Whether a `chat` template picks the chat per event.
    pub(crate) chat: bool,
}

impl Route {
    /// Whether `ev` (with its parsed `body`) is for this route.
    pub(crate) fn matches(&self, ev: &Event, body: Option<&serde_json::Value>) -> bool {
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

/// Validates a config the way [`Dispatcher::new`](crate::dispatch::Dispatcher::new) does,
/// returning every problem found (sink settings, unknown sinks in routes, `reply_via`
/// targets, template syntax).
pub fn check(cfg: &ChatConfig) -> Vec<ConfigError> {
    match build_table(&cfg.sinks, &cfg.routes) {
        Ok(_) => Vec::new(),
        Err(errs) => errs,
    }
}

/// Every sink built and every route template compiled, checked against each other.
pub(crate) struct RoutingTable {
    /// The sinks by name.
    pub(crate) targets: HashMap<String, Target>,
    /// Each llm sink's `reply_via` sink, by the llm sink's name.
    pub(crate) replies: HashMap<String, Arc<dyn Sink>>,
    /// The routes, in config order.
    pub(crate) routes: Vec<Route>,
    /// Each route's template per markup; index `routes.len()` is the built-in summary.
    pub(crate) templates: Templates,
}

/// Builds the routing table, or every problem found.
pub(crate) fn build_table(
    sinks: &[SinkConfig],
    routes: &[RouteConfig],
) -> Result<RoutingTable, Vec<ConfigError>> {
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
        if let Some(chat) = &r.chat {
            for n in &names {
                let telegram = matches!(targets.get(*n), Some(Target::Deliver(s)) if s.platform() == Some(Platform::Telegram));
                if !telegram && targets.contains_key(*n) {
                    errs.push(route_err(format!(
                        "`chat` picks a Telegram chat, but sink '{n}' is not a telegram sink"
                    )));
                }
            }
            if let Err(e) = templates.add_chat(i, chat) {
                errs.push(e);
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
            chat: r.chat.is_some(),
        });
    }
    // The built-in summary, for replays of events no route renders for that sink.
    for m in Markup::ALL {
        if let Err(e) = templates.add(routes.len(), None, m) {
            errs.push(e);
        }
    }
    if errs.is_empty() {
        Ok(RoutingTable {
            targets,
            replies,
            routes: out_routes,
            templates,
        })
    } else {
        Err(errs)
    }
}
