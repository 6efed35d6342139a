//! Route templates (minijinja): compiled once per route and target markup, with values
//! auto-escaped for the markup and literal template text left alone.

use std::collections::BTreeMap;

use hookgate_proto::Event;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::chat::error::{ConfigError, SinkError};
use crate::chat::markup::Markup;

/// The built-in summary for routes without a template. Its literal text avoids every
/// MarkdownV2 special character so it is valid in all markups.
pub const DEFAULT_TEMPLATE: &str = r#"
{%- if event.provider == "github" and event.type == "push" -%}
{%- set cs = commits or [] -%}
{{ pusher.name or sender.login }} pushed {{ cs | length }} commit{{ "s" if cs | length != 1 }} to {{ repository.full_name }} on {{ (ref or "") | replace("refs/heads/", "") }}
{%- for c in cs[:5] %}
• {{ c.message | first_line }}
{%- endfor %}
{%- elif event.type == "orders/create" -%}
New order {{ name or order_number }}: {{ total_price }} {{ currency }}
{%- else -%}
{{ event.source }}: {{ event.type or "event" }} {{ event.delivery_id }}
{%- endif %}"#;

/// Compiled route templates.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    /// An environment with the markup-aware formatter and the `first_line` filter.
    pub fn new() -> Self {
        let mut env = Environment::new();
        // Webhook payloads vary; `a.b.c` on a missing `a` should print nothing, not fail.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_auto_escape_callback(|name| {
            let tag = name.rsplit('.').next().unwrap_or("");
            match Markup::from_name(tag) {
                Some(m) => AutoEscape::Custom(m.name()),
                None => AutoEscape::None,
            }
        });
        env.set_formatter(|out, state, value| {
            if value.is_undefined() || value.is_none() {
                return Ok(());
            }
            let markup = match state.auto_escape() {
                AutoEscape::Custom(name) => Markup::from_name(name),
                _ => None,
            };
            match markup {
                Some(m) if !value.is_safe() => {
                    let text = match value.as_str() {
                        Some(s) => m.escape(s),
                        None => m.escape(&value.to_string()),
                    };
                    out.write_str(&text).map_err(minijinja::Error::from)
                }
                _ => minijinja::escape_formatter(out, state, value),
            }
        });
        env.add_filter("first_line", |s: String| -> String {
            let line = s.lines().next().unwrap_or("").trim();
            match line.char_indices().nth(100) {
                Some((i, _)) => format!("{}…", &line[..i]),
                None => line.to_owned(),
            }
        });
        Templates { env }
    }

    fn key(route: usize, markup: Markup) -> String {
        format!("route{route}.{}", markup.name())
    }

    /// Compiles `source` (or the default summary) for `route` rendered into `markup`.
    pub fn add(
        &mut self,
        route: usize,
        source: Option<&str>,
        markup: Markup,
    ) -> Result<(), ConfigError> {
        let src = source.unwrap_or(DEFAULT_TEMPLATE).to_owned();
        self.env
            .add_template_owned(Self::key(route, markup), src)
            .map_err(|e| ConfigError::Template {
                route,
                message: describe(&e),
            })
    }

    /// Compiles `route`'s `chat` template (values not escaped: a chat id is no markup).
    pub fn add_chat(&mut self, route: usize, source: &str) -> Result<(), ConfigError> {
        self.env
            .add_template_owned(format!("route{route}.chat"), source.to_owned())
            .map_err(|e| ConfigError::Template {
                route,
                message: format!("chat: {}", describe(&e)),
            })
    }

    /// Renders `route`'s `chat` template, trimmed.
    pub fn render_chat(&self, route: usize, ctx: &Value) -> Result<String, SinkError> {
        let t = self
            .env
            .get_template(&format!("route{route}.chat"))
            .map_err(|e| SinkError::permanent(format!("chat template: {}", describe(&e))))?;
        t.render(ctx).map(|s| s.trim().to_owned()).map_err(|e| {
            SinkError::permanent(format!("route #{route} chat template: {}", describe(&e)))
        })
    }

    /// Renders `route`'s template for `markup` against a context from [`context`].
    pub fn render(&self, route: usize, markup: Markup, ctx: &Value) -> Result<String, SinkError> {
        let t = self
            .env
            .get_template(&Self::key(route, markup))
            .map_err(|e| SinkError::permanent(format!("template: {}", describe(&e))))?;
        t.render(ctx)
            .map(|s| s.trim().to_owned())
            .map_err(|e| SinkError::permanent(format!("route #{route} template: {}", describe(&e))))
    }
}

fn describe(e: &minijinja::Error) -> String {
    // Keep the message and line; the template name is internal.
    match e.line() {
        Some(line) => format!(
            "{} (line {line})",
            e.detail().unwrap_or(&e.kind().to_string())
        ),
        None => e
            .detail()
            .map_or_else(|| e.kind().to_string(), str::to_owned),
    }
}

/// The template context: the body's top-level keys, `body` (the whole body, unless the
/// body has its own `body` key) and `event` (ours wins over a body key of that name).
/// A body that is not JSON gives a context with only `event`.
pub fn context(ev: &Event, body: Option<&serde_json::Value>) -> Value {
    let mut m: BTreeMap<String, Value> = BTreeMap::new();
    if let Some(b) = body {
        m.insert("body".into(), Value::from_serialize(b));
        if let Some(obj) = b.as_object() {
            for (k, v) in obj {
                m.insert(k.clone(), Value::from_serialize(v));
            }
        }
    }
    let mut e: BTreeMap<&str, Value> = BTreeMap::new();
    e.insert("id", Value::from(ev.id_string()));
    e.insert("source", Value::from(&*ev.source));
    e.insert("provider", Value::from(&*ev.provider));
    e.insert("type", Value::from(ev.event_type.as_str()));
    e.insert("delivery_id", Value::from(ev.delivery_id.as_str()));
    e.insert("received_at", Value::from(ev.received_at_rfc3339()));
    m.insert("event".into(), Value::from_serialize(&e));
    Value::from_serialize(&m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing test should panic
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ev(provider: &str, ty: &str, body: &str) -> Event {
        Event {
            id: hookgate_proto::Ulid::new(),
            source: Arc::from(provider),
            provider: Arc::from(provider),
            topic: Arc::from("t"),
            event_type: ty.into(),
            delivery_id: "d1".into(),
            key: Default::default(),
            received_at_ms: 0,
            content_type: None,
            kept_headers: vec![],
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    fn render(src: Option<&str>, m: Markup, e: &Event) -> Result<String, SinkError> {
        let mut t = Templates::new();
        t.add(0, src, m)
            .map_err(|e| SinkError::permanent(e.to_string()))?;
        let body = serde_json::from_slice(&e.body).ok();
        t.render(0, m, &context(e, body.as_ref()))
    }

    #[test]
    fn values_escaped_literals_not() {
        let e = ev("x", "y", r#"{"name":"<b>&"}"#);
        let out = render(Some("<i>{{ name }}</i>"), Markup::TelegramHtml, &e).unwrap();
        assert_eq!(out, "<i>&lt;b&gt;&amp;</i>");
        let out = render(Some("*{{ name }}*"), Markup::Plain, &e).unwrap();
        assert_eq!(out, "*<b>&*");
        let out = render(Some("{{ name | safe }}"), Markup::Slack, &e).unwrap();
        assert_eq!(out, "<b>&");
    }

    #[test]
    fn syntax_errors_name_the_route() {
        let mut t = Templates::new();
        let err = t.add(3, Some("{{ oops "), Markup::Plain).unwrap_err();
        assert!(matches!(err, ConfigError::Template { route: 3, .. }));
        assert!(
            err.to_string().starts_with("route #3: template error"),
            "{err}"
        );
    }

    #[test]
    fn non_json_body_has_only_event() {
        let e = ev("src", "ping", "not json");
        let out = render(
            Some("{{ event.source }}/{{ event.type }}/{{ body }}"),
            Markup::Plain,
            &e,
        );
        assert_eq!(out.unwrap(), "src/ping/");
    }

    #[test]
    fn default_template_generic_and_markdown_safe() {
        let e = ev("stripe", "charge.succeeded", "{}");
        let out = render(None, Markup::TelegramMarkdownV2, &e).unwrap();
        assert_eq!(out, "stripe: charge\\.succeeded d1");
    }

    #[test]
    fn default_github_push_without_commits_renders() {
        let mut e = ev(
            "github",
            "push",
            r#"{"pusher":{"name":"mona"},"repository":{"full_name":"o/r"}}"#,
        );
        e.provider = std::sync::Arc::from("github");
        let out = render(None, Markup::Plain, &e).unwrap();
        assert_eq!(out, "mona pushed 0 commits to o/r on");
    }

    #[test]
    fn missing_nested_values_render_empty() {
        let e = ev("x", "y", "{}");
        assert_eq!(
            render(Some("[{{ a.b.c }}]"), Markup::Plain, &e).unwrap(),
            "[]"
        );
    }
}
