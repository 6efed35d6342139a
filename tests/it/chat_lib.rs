//! Integration tests for the chat sinks, against the fake APIs in `fakes.rs`.

use std::sync::Arc;
use std::time::Duration;

use crate::fakes::{FakeDiscord, FakeHttp, FakeOpenAi, FakeSlack, FakeTelegram, Reply};
use base64::Engine as _;
use bytes::Bytes;
use hookgate_proto::{Event, Ulid};
use hookgate_sinks::chat::{ChatConfig, ConfigError};
use hookgate_sinks::dispatch::{
    check, DeliveryOutcome, DispatchReport, Dispatcher, MemoryDeadLetter,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn event(source: &str, ty: &str, delivery: &str, body: &Value) -> Event {
    Event {
        id: Ulid::new(),
        source: Arc::from(source),
        provider: Arc::from(source),
        topic: Arc::from(format!("webhooks.{source}")),
        event_type: ty.into(),
        delivery_id: delivery.into(),
        key: Bytes::new(),
        received_at_ms: hookgate_proto::now_ms(),
        content_type: Some("application/json".into()),
        kept_headers: vec![],
        body: Bytes::from(body.to_string()),
    }
}

pub(crate) fn parse(cfg: &str) -> ChatConfig {
    toml::from_str(cfg).expect("test config parses")
}

pub(crate) fn dispatcher(cfg: &str) -> (Dispatcher, Arc<MemoryDeadLetter>) {
    let c = parse(cfg);
    let dlq = Arc::new(MemoryDeadLetter::new());
    let d = Dispatcher::new(c.sinks, c.routes, dlq.clone()).expect("dispatcher builds");
    (d, dlq)
}

pub(crate) fn only(report: &DispatchReport) -> &DeliveryOutcome {
    assert_eq!(report.deliveries.len(), 1, "{report:?}");
    &report.deliveries[0].outcome
}

fn github_push() -> Value {
    json!({
        "ref": "refs/heads/main",
        "repository": {"full_name": "octo/<hello>"},
        "pusher": {"name": "mona"},
        "sender": {"login": "mona"},
        "commits": [
            {"id": "a1", "message": "Fix the thing\n\nLong explanation"},
            {"id": "b2", "message": "Add <b>tests</b> & docs"}
        ]
    })
}

#[test]
fn user_config_parses_and_hides_secrets() {
    let cfg = parse(
        r#"
[[sinks]]
name = "team-chat"
type = "telegram"
bot_token = "123:ABCSECRET"
chat_id = "-1001234567890"
parse_mode = "HTML"
api_url = "https://api.telegram.org"

[[sinks]]
name = "ops-discord"
type = "discord"
webhook_url = "https://discord.com/api/webhooks/ID/DISCORDSECRET"
max_attempts = 3
max_age = "24h"
timeout = "5s"

[[sinks]]
name = "ops-slack"
type = "slack"
webhook_url = "https://hooks.slack.com/services/T/B/SLACKSECRET"

[[sinks]]
name = "forward"
type = "http"
url = "https://example.com/in"
signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
allow_private = false

[[sinks]]
name = "assistant"
type = "llm"
api_url = "http://127.0.0.1:11434/v1"
model = "llama3.1"
api_key = "sk-LLMSECRET"
system_prompt = "You are a helpful assistant."
timeout = "30s"
history = 20
reply_via = "team-chat"

[[routes]]
source = "github"
events = ["push"]
when = { "/ref" = "refs/heads/main" }
sink = "team-chat"
template = "{{ pusher.name }} pushed {{ commits | length }} commit(s) to {{ repository.full_name }}"

[[routes]]
source = "telegram"
sinks = ["assistant", "forward"]
"#,
    );
    let dump = format!("{cfg:?}");
    for s in [
        "ABCSECRET",
        "DISCORDSECRET",
        "SLACKSECRET",
        "LLMSECRET",
        "MfKQ9r8",
    ] {
        assert!(!dump.contains(s), "{s} in {dump}");
    }
    assert!(check(&cfg).is_empty(), "{:?}", check(&cfg));
    let d = Dispatcher::new(cfg.sinks, cfg.routes, Arc::new(MemoryDeadLetter::new()));
    assert!(d.is_ok());

    let unknown = toml::from_str::<ChatConfig>(
        "[[sinks]]\nname='x'\ntype='slack'\nwebhook_url='https://h/x'\nwebhok='typo'\n",
    );
    assert!(unknown.is_err());
}

#[test]
fn check_reports_every_problem_by_name_and_index() {
    let cfg = parse(
        r#"
[[sinks]]
name = "web"
type = "http"
url = "https://example.com/x"
[[sinks]]
name = "bot"
type = "llm"
api_url = "http://localhost:1/v1"
model = "m"
reply_via = "web"
[[sinks]]
name = "bad-discord"
type = "discord"
webhook_url = "not a url SECRETPATH"
[[routes]]
source = "a"
sink = "nope"
[[routes]]
source = "b"
sink = "web"
template = "{{ broken "
"#,
    );
    let errs = check(&cfg);
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    let joined = text.join("\n");
    assert!(
        joined.contains("sink 'bot': reply_via 'web' is not a chat sink"),
        "{joined}"
    );
    assert!(joined.contains("route #0: unknown sink 'nope'"), "{joined}");
    assert!(joined.contains("route #1: template error"), "{joined}");
    assert!(
        joined.contains("sink 'bad-discord': webhook_url is not a valid URL"),
        "{joined}"
    );
    assert!(!joined.contains("SECRETPATH"));
    let d = Dispatcher::new(cfg.sinks, cfg.routes, Arc::new(MemoryDeadLetter::new()));
    assert!(d.is_err());
}

#[tokio::test]
async fn github_push_to_telegram_summary() {
    let tg = FakeTelegram::start().await;
    let (d, _dlq) = dispatcher(&format!(
        r#"
[[sinks]]
name = "team-chat"
type = "telegram"
bot_token = "123:ABC"
chat_id = -1001234567890
parse_mode = "HTML"
api_url = "{}"
chat_interval = "10ms"

[[routes]]
source = "github"
events = ["push"]
when = {{ "/ref" = "refs/heads/main" }}
sink = "team-chat"

[[routes]]
source = "github"
events = ["push"]
sink = "team-chat"
template = "<b>{{{{ pusher.name }}}}</b> pushed {{{{ commits | length }}}} commit(s) to {{{{ repository.full_name }}}}"
"#,
        tg.api_url()
    ));
    let report = d
        .dispatch(&event("github", "push", "d1", &github_push()))
        .await;
    assert!(report.is_done());
    assert_eq!(report.deliveries.len(), 2, "{report:?}");
    let sent = tg.wait_for(2, WAIT).await;
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|r| r.path == "/bot123:ABC/sendMessage"));
    let mut texts = tg.sent();
    texts.sort_by_key(|(_, t)| t.starts_with("<b>"));
    let (chat, summary) = &texts[0];
    assert_eq!(chat, "-1001234567890");
    assert!(
        summary.contains("mona pushed 2 commits to octo/&lt;hello&gt; on main"),
        "{summary}"
    );
    assert!(summary.contains("• Fix the thing\n"), "{summary}");
    assert!(!summary.contains("Long explanation"));
    assert!(
        summary.contains("• Add &lt;b&gt;tests&lt;/b&gt; &amp; docs"),
        "{summary}"
    );
    assert_eq!(sent[0].json()["parse_mode"], "HTML");
    // Literal template text is not escaped; values are.
    assert_eq!(
        texts[1].1,
        "<b>mona</b> pushed 2 commit(s) to octo/&lt;hello&gt;"
    );

    // A push to another branch matches only the route without `when`.
    let mut other = github_push();
    other["ref"] = "refs/heads/dev".into();
    let report = d.dispatch(&event("github", "push", "d2", &other)).await;
    assert_eq!(report.deliveries.len(), 1);
    // Other sources match nothing.
    let report = d.dispatch(&event("gitlab", "push", "d3", &other)).await;
    assert!(report.deliveries.is_empty() && report.is_done());
}

#[tokio::test]
async fn shopify_order_to_slack() {
    let slack = FakeSlack::start().await;
    let (d, _) = dispatcher(&format!(
        r#"
[[sinks]]
name = "shop"
type = "slack"
webhook_url = "{}"
[[routes]]
source = "shopify"
events = ["orders/create"]
sink = "shop"
"#,
        slack.webhook_url()
    ));
    let order = json!({"id": 820982911946154508u64, "name": "#1001", "order_number": 1001,
                       "total_price": "199.65", "currency": "USD", "email": "jon@example.com"});
    let report = d
        .dispatch(&event("shopify", "orders/create", "s1", &order))
        .await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { attempts: 1 }),
        "{report:?}"
    );
    let req = &slack.requests()[0];
    assert_eq!(req.path, "/services/T000/B000/XXXXXXXX");
    assert_eq!(req.json()["text"], "New order #1001: 199.65 USD");
}

pub(crate) fn llm_config(tg: &FakeTelegram, ai: &FakeOpenAi) -> String {
    format!(
        r#"
[[sinks]]
name = "team-chat"
type = "telegram"
bot_token = "999:BOTSECRET"
chat_id = "-1"
parse_mode = "HTML"
api_url = "{}"
chat_interval = "10ms"

[[sinks]]
name = "assistant"
type = "llm"
api_url = "{}"
model = "llama3.1"
api_key = "sk-test"
system_prompt = "You are a helpful assistant."
history = 2
reply_via = "team-chat"
allow_chats = [4242]
backoff_base = "10ms"

[[routes]]
source = "telegram"
sink = "assistant"
"#,
        tg.api_url(),
        ai.api_url()
    )
}

pub(crate) fn tg_update(update_id: u64, chat: i64, text: &str) -> Value {
    json!({"update_id": update_id, "message": {"message_id": update_id, "date": 1700000000,
        "from": {"id": 77, "is_bot": false, "first_name": "Ann"},
        "chat": {"id": chat, "type": "private"}, "text": text}})
}

#[tokio::test]
async fn telegram_update_is_answered_by_llm_in_same_chat_once() {
    let (tg, ai) = (FakeTelegram::start().await, FakeOpenAi::start().await);
    ai.set_answer("4 <obviously>");
    let (d, dlq) = dispatcher(&llm_config(&tg, &ai));
    let ev = event(
        "telegram",
        "message",
        "1001",
        &tg_update(1001, 4242, "what is 2+2?"),
    );
    let report = d.dispatch(&ev).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { .. }),
        "{report:?}"
    );

    let asked = ai.asked();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0],
        vec![
            (
                "system".to_owned(),
                "You are a helpful assistant.".to_owned()
            ),
            ("user".to_owned(), "what is 2+2?".to_owned()),
        ]
    );
    let req = &ai.requests()[0];
    assert_eq!(req.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(req.json()["model"], "llama3.1");
    assert_eq!(
        tg.sent(),
        vec![("4242".to_owned(), "4 &lt;obviously&gt;".to_owned())]
    );

    // The same event again, and the same update under a new event id: no second answer.
    let again = d.dispatch(&ev).await;
    assert!(
        matches!(only(&again), DeliveryOutcome::Skipped { .. }),
        "{again:?}"
    );
    let mut redelivered = ev.clone();
    redelivered.id = Ulid::new();
    let again = d.dispatch(&redelivered).await;
    assert!(
        matches!(only(&again), DeliveryOutcome::Skipped { .. }),
        "{again:?}"
    );
    assert_eq!(ai.count(), 1);
    assert_eq!(tg.count(), 1);

    // The next message in that chat carries the bounded history (history = 2).
    ai.set_answer("5");
    let ev2 = event(
        "telegram",
        "message",
        "1002",
        &tg_update(1002, 4242, "and 2+3?"),
    );
    assert!(d.dispatch(&ev2).await.is_done());
    let asked = ai.asked();
    let roles: Vec<&str> = asked[1].iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(asked[1][2].1, "4 <obviously>");

    // A non-chat event (no text) is skipped, not an error.
    let sticker = json!({"update_id": 1003, "message": {"chat": {"id": 1}, "sticker": {}}});
    let r = d
        .dispatch(&event("telegram", "message", "1003", &sticker))
        .await;
    assert!(matches!(only(&r), DeliveryOutcome::Skipped { .. }), "{r:?}");
    assert!(dlq.entries().is_empty());
}

/// The allow-list: a stranger's message costs nothing (no model call, no reply); the
/// default allows only the reply sink's own chat; `allow_users` and `"*"` widen it.
#[tokio::test]
async fn llm_answers_only_allowed_chats_and_users() {
    let (tg, ai) = (FakeTelegram::start().await, FakeOpenAi::start().await);
    ai.set_answer("ok");
    // llm_config: team-chat's chat_id is "-1", allow_chats = [4242]; the sender is user 77.
    let (d, dlq) = dispatcher(&llm_config(&tg, &ai));
    let stranger = event(
        "telegram",
        "message",
        "2001",
        &tg_update(2001, 555, "hello?"),
    );
    let r = d.dispatch(&stranger).await;
    assert!(matches!(only(&r), DeliveryOutcome::Skipped { .. }), "{r:?}");
    assert_eq!((ai.count(), tg.count()), (0, 0), "a stranger cost a call");
    let allowed = event("telegram", "message", "2002", &tg_update(2002, 4242, "hi"));
    assert!(d.dispatch(&allowed).await.is_done());
    assert_eq!((ai.count(), tg.count()), (1, 1));
    assert!(dlq.entries().is_empty());

    // No allow_chats: only the reply sink's configured chat ("-1").
    let default = llm_config(&tg, &ai).replace("allow_chats = [4242]\n", "");
    let (d, _) = dispatcher(&default);
    let r = d
        .dispatch(&event(
            "telegram",
            "message",
            "2003",
            &tg_update(2003, 4242, "hi"),
        ))
        .await;
    assert!(matches!(only(&r), DeliveryOutcome::Skipped { .. }), "{r:?}");
    assert_eq!(ai.count(), 1);
    let own = event("telegram", "message", "2004", &tg_update(2004, -1, "hi"));
    assert!(d.dispatch(&own).await.is_done());
    assert_eq!(ai.count(), 2);

    // allow_users: user 77 anywhere; "*": any chat.
    for (widen, n) in [
        ("allow_users = [77]", "2005"),
        ("allow_chats = [\"*\"]", "2006"),
    ] {
        let cfg = default.replace(
            "backoff_base = \"10ms\"",
            &format!("{widen}\nbackoff_base = \"10ms\""),
        );
        let (d, _) = dispatcher(&cfg);
        let before = ai.count();
        let ev = event(
            "telegram",
            "message",
            n,
            &tg_update(n.parse().unwrap(), 31337, "hi"),
        );
        assert!(d.dispatch(&ev).await.is_done(), "{widen}");
        assert_eq!(ai.count(), before + 1, "{widen}");
    }
}

#[tokio::test]
async fn telegram_429_retry_waits_at_least_retry_after() {
    let tg = FakeTelegram::start().await;
    tg.push(Reply::RateLimited(2.0));
    let (d, _) = dispatcher(&format!(
        r#"
[[sinks]]
name = "t"
type = "telegram"
bot_token = "1:A"
chat_id = "5"
api_url = "{}"
backoff_base = "1ms"
[[routes]]
source = "s"
sink = "t"
template = "hi"
"#,
        tg.api_url()
    ));
    let report = d.dispatch(&event("s", "x", "1", &json!({}))).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { attempts: 2 }),
        "{report:?}"
    );
    let reqs = tg.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1].at.duration_since(reqs[0].at) >= Duration::from_secs(2));
}

#[tokio::test]
async fn discord_429_float_retry_after_is_obeyed() {
    let dc = FakeDiscord::start().await;
    dc.push(Reply::RateLimited(0.4));
    let (d, _) = dispatcher(&format!(
        r#"
[[sinks]]
name = "dc"
type = "discord"
webhook_url = "{}"
backoff_base = "1ms"
[[routes]]
source = "s"
sink = "dc"
template = "{{{{ msg }}}}"
"#,
        dc.webhook_url()
    ));
    let report = d
        .dispatch(&event("s", "x", "1", &json!({"msg": "**bold** <@1>"})))
        .await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { attempts: 2 }),
        "{report:?}"
    );
    let reqs = dc.requests();
    assert!(reqs[1].at.duration_since(reqs[0].at) >= Duration::from_millis(400));
    assert_eq!(reqs[1].query.as_deref(), Some("wait=true"));
    let body = reqs[1].json();
    assert_eq!(body["content"], "\\*\\*bold\\*\\* \\<@1\\>");
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));
}

#[tokio::test]
async fn persistent_500_is_dead_lettered_then_replayed() {
    let slack = FakeSlack::start().await;
    slack.set_default(Reply::ServerError);
    let (d, dlq) = dispatcher(&format!(
        r#"
[[sinks]]
name = "ops"
type = "slack"
webhook_url = "{}"
max_attempts = 3
backoff_base = "5ms"
interval = "1ms"
[[routes]]
source = "s"
sink = "ops"
template = "alert {{{{ n }}}}"
"#,
        slack.webhook_url()
    ));
    let ev = event("s", "x", "1", &json!({"n": 7}));
    let report = d.dispatch(&ev).await;
    assert!(report.is_done());
    let DeliveryOutcome::DeadLettered { error } = only(&report) else {
        panic!("{report:?}")
    };
    assert!(error.contains("500"), "{error}");
    assert_eq!(slack.count(), 3);
    let dl = dlq.entries();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].sink, "ops");
    assert_eq!(dl[0].event.id, ev.id);
    assert!(
        !dl[0].error.contains("XXXXXXXX"),
        "webhook URL leaked: {}",
        dl[0].error
    );

    slack.set_default(Reply::Ok);
    d.replay(&dl[0].event, "ops")
        .await
        .expect("replay succeeds");
    assert_eq!(slack.count(), 4);
    assert_eq!(slack.requests()[3].json()["text"], "alert 7");
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let dc = FakeDiscord::start().await;
    dc.set_default(Reply::BadRequest);
    let (d, dlq) = dispatcher(&format!(
        "[[sinks]]\nname='dc'\ntype='discord'\nwebhook_url='{}'\n[[routes]]\nsource='s'\nsink='dc'\n",
        dc.webhook_url()
    ));
    let report = d.dispatch(&event("s", "x", "1", &json!({}))).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::DeadLettered { .. }),
        "{report:?}"
    );
    assert_eq!(dc.count(), 1);
    assert!(dlq.entries()[0]
        .error
        .contains("Cannot send an empty message"));
    assert!(!dlq.entries()[0].error.contains("fake-webhook-token"));
}

#[tokio::test]
async fn failed_dead_letter_means_not_done() {
    let slack = FakeSlack::start().await;
    slack.set_default(Reply::BadRequest);
    let (d, dlq) = dispatcher(&format!(
        "[[sinks]]\nname='o'\ntype='slack'\nwebhook_url='{}'\n[[routes]]\nsource='s'\nsink='o'\n",
        slack.webhook_url()
    ));
    dlq.set_failing(true);
    let report = d.dispatch(&event("s", "x", "1", &json!({}))).await;
    assert!(!report.is_done());
    assert!(matches!(only(&report), DeliveryOutcome::NotDone { .. }));
}

#[tokio::test]
async fn long_text_is_split_for_telegram() {
    let tg = FakeTelegram::start().await;
    let (d, _) = dispatcher(&format!(
        "[[sinks]]\nname='t'\ntype='telegram'\nbot_token='1:A'\nchat_id='5'\napi_url='{}'\nchat_interval='1ms'\n[[routes]]\nsource='s'\nsink='t'\ntemplate='{{{{ text }}}}'\n",
        tg.api_url()
    ));
    let text = "word ".repeat(2000); // 10,000 chars
    let report = d
        .dispatch(&event("s", "x", "1", &json!({"text": text})))
        .await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { attempts: 3 }),
        "{report:?}"
    );
    let parts: Vec<String> = tg.sent().into_iter().map(|(_, t)| t).collect();
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|p| p.encode_utf16().count() <= 4096));
    assert_eq!(parts.join(" "), text.trim_end());
}

#[tokio::test]
async fn http_sink_forwards_signed_original_body() {
    let target = FakeHttp::start().await;
    let key = b"a test signing key";
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let (d, _) = dispatcher(&format!(
        r#"
[[sinks]]
name = "fwd"
type = "http"
url = "{}"
signing_secret = "{secret}"
allow_private = true
[[routes]]
source = "s"
sink = "fwd"
"#,
        target.url()
    ));
    let mut ev = event("s", "x", "1", &json!({}));
    ev.body = Bytes::from_static(b"{\"a\": 1,  \"spacing\" : \"kept\"}");
    ev.content_type = Some("application/vnd.custom+json".into());
    let report = d.dispatch(&ev).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { .. }),
        "{report:?}"
    );
    let req = &target.requests()[0];
    assert_eq!(req.body, ev.body);
    assert_eq!(
        req.header("content-type"),
        Some("application/vnd.custom+json")
    );
    let id = req.header("webhook-id").expect("id");
    assert_eq!(id, ev.id.to_string());
    let ts = req.header("webhook-timestamp").expect("ts");
    let ts_num: i64 = ts.parse().expect("numeric ts");
    assert!((ts_num - hookgate_proto::now_ms() / 1000).abs() < 60);
    let signed = [id.as_bytes(), b".", ts.as_bytes(), b".", &ev.body].concat();
    let mac = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), &signed);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.as_ref())
    );
    assert_eq!(req.header("webhook-signature"), Some(want.as_str()));
}

#[tokio::test]
async fn http_sink_refuses_private_destinations_and_redirects() {
    let target = FakeHttp::start().await;
    // IP literal: refused when the config is built, naming the sink.
    let cfg = parse(&format!(
        "[[sinks]]\nname='fwd'\ntype='http'\nurl='{}'\n[[routes]]\nsource='s'\nsink='fwd'\n",
        target.url()
    ));
    let err = Dispatcher::new(cfg.sinks, cfg.routes, Arc::new(MemoryDeadLetter::new()))
        .expect_err("private literal refused");
    assert!(
        matches!(&err, ConfigError::Sink { sink, .. } if sink == "fwd"),
        "{err}"
    );
    assert!(err.to_string().contains("destination refused"), "{err}");

    // A name resolving to loopback: refused at connect time, permanently.
    let url = format!("http://localhost:{}/in", target.addr().port());
    let (d, dlq) = dispatcher(&format!(
        "[[sinks]]\nname='fwd'\ntype='http'\nurl='{url}'\n[[routes]]\nsource='s'\nsink='fwd'\n"
    ));
    let report = d.dispatch(&event("s", "x", "1", &json!({}))).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::DeadLettered { .. }),
        "{report:?}"
    );
    assert!(
        dlq.entries()[0].error.contains("destination refused"),
        "{:?}",
        dlq.entries()
    );
    assert_eq!(target.count(), 0);

    // Allowed explicitly: delivered. A 3xx is a permanent failure, not followed.
    let (d, dlq) = dispatcher(&format!(
        "[[sinks]]\nname='fwd'\ntype='http'\nurl='{url}'\nallow_private=true\n[[routes]]\nsource='s'\nsink='fwd'\n"
    ));
    let report = d.dispatch(&event("s", "x", "1", &json!({}))).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { .. }),
        "{report:?}"
    );
    target.push(Reply::Raw {
        status: 302,
        headers: vec![("location".into(), "http://127.0.0.1:1/elsewhere".into())],
        body: String::new(),
    });
    let report = d.dispatch(&event("s", "x", "2", &json!({}))).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::DeadLettered { .. }),
        "{report:?}"
    );
    assert_eq!(target.count(), 2);
    assert!(dlq.entries()[0].error.contains("302"));
}

/// Captures everything logged in this test binary.
#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn bot_token_never_appears_in_errors_or_logs() {
    const TOKEN: &str = "4242:NEVER-LOG-THIS-TOKEN";
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Global, not thread-scoped: per-callsite interest caching can hide events from a
    // scoped subscriber while other tests run in parallel. Other tests' logs land here too.
    tracing::subscriber::set_global_default(subscriber).expect("only this test sets it");

    let tg = FakeTelegram::start().await;
    // A server error that echoes the token, then a 400.
    tg.push(Reply::Raw {
        status: 500,
        headers: vec![],
        body: json!({"ok": false, "error_code": 500, "description": format!("bad bot{TOKEN}")})
            .to_string(),
    });
    tg.push(Reply::BadRequest);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg_text = format!(
        r#"
[[sinks]]
name = "t"
type = "telegram"
bot_token = "{TOKEN}"
chat_id = "5"
api_url = "{}"
backoff_base = "1ms"
[[sinks]]
name = "t-down"
type = "telegram"
bot_token = "{TOKEN}"
chat_id = "5"
api_url = "http://127.0.0.1:{closed}"
max_attempts = 2
backoff_base = "1ms"
[[routes]]
source = "s"
sinks = ["t", "t-down"]
"#,
        tg.api_url()
    );
    let cfg = parse(&cfg_text);
    let mut out = format!("{cfg:?}\n");
    let dlq = Arc::new(MemoryDeadLetter::new());
    let d = Dispatcher::new(cfg.sinks.clone(), cfg.routes.clone(), dlq.clone()).expect("builds");
    out.push_str(&format!("{d:?}\n"));
    let ev = event("s", "x", "1", &json!({}));
    let report = d.dispatch(&ev).await;
    out.push_str(&format!("{report:?}\n"));
    assert_eq!(dlq.entries().len(), 2, "{report:?}");
    for e in dlq.entries() {
        out.push_str(&format!("{} {}\n", e.sink, e.error));
    }
    if let Err(e) = d.replay(&ev, "t-down").await {
        out.push_str(&format!("{e} {e:?}\n"));
    }
    let mut bad = cfg.clone();
    if let hookgate_sinks::chat::SinkConfig::Telegram(t) = &mut bad.sinks[0] {
        t.api_url = format!("ftp://x/{TOKEN}");
    }
    for e in check(&bad) {
        out.push_str(&format!("{e} {e:?}\n"));
    }
    let logs = String::from_utf8_lossy(&capture.0.lock().expect("capture lock")).into_owned();
    assert!(tg.count() >= 2);
    assert!(
        tg.requests()[0].path.contains(TOKEN),
        "the token is used on the wire"
    );
    assert!(
        out.contains("t-down") && logs.contains("dead-lettering"),
        "{out}\n{logs}"
    );
    assert!(!out.contains(TOKEN) && !out.contains("NEVER-LOG"), "{out}");
    assert!(!logs.contains("NEVER-LOG"), "{logs}");
}
