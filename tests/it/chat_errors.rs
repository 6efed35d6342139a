//! Each chat/LLM API error the real services send, answered by the fakes as the services
//! do, and what each sink makes of it: retried (waiting at least what the API asked) or
//! permanent (one request, then a dead letter whose error says what happened and what to
//! change), and what the chat sees.

use std::time::Duration;

use serde_json::{json, Value};

use crate::chat_lib::{dispatcher, event, llm_config, only, parse, tg_update};
use crate::fakes::{FakeDiscord, FakeOpenAi, FakeSlack, FakeTelegram, Reply};
use hookgate_sinks::chat::llm::TRUNCATED_NOTE;
use hookgate_sinks::dispatch::{check, DeliveryOutcome};

const TOKEN: &str = "777:TG-SECRET-TOKEN";

fn telegram_config(tg: &FakeTelegram, extra: &str) -> String {
    format!(
        r#"
[[sinks]]
name = "t"
type = "telegram"
bot_token = "{TOKEN}"
chat_id = "-1001"
parse_mode = "HTML"
api_url = "{}"
chat_interval = "1ms"
backoff_base = "1ms"
{extra}
[[routes]]
source = "s"
sink = "t"
template = "<b>{{{{ text }}}}</b>"
"#,
        tg.api_url()
    )
}

/// The dead-letter error of the only delivery, which must be dead-lettered.
fn dead_letter_error(report: &hookgate_sinks::dispatch::DispatchReport) -> String {
    match only(report) {
        DeliveryOutcome::DeadLettered { error } => error.clone(),
        other => panic!("not dead-lettered: {other:?}"),
    }
}

#[tokio::test]
async fn telegram_permanent_errors_are_dead_lettered_at_once_with_telegram_words() {
    for (reply, words) in [
        (
            Reply::CantParseEntities,
            [
                "telegram: 400: Bad Request: can't parse entities",
                "check the literal markup in the route template",
            ],
        ),
        (
            Reply::TooLong,
            ["telegram: 400: Bad Request: message is too long", "4096"],
        ),
        (
            Reply::Blocked,
            [
                "telegram: 403: Forbidden: bot was blocked by the user",
                "the user blocked the bot",
            ],
        ),
    ] {
        let tg = FakeTelegram::start().await;
        tg.set_default(reply.clone());
        let (d, dlq) = dispatcher(&telegram_config(&tg, ""));
        let report = d
            .dispatch(&event("s", "x", "1", &json!({"text": "hi"})))
            .await;
        assert!(report.is_done());
        let error = dead_letter_error(&report);
        for w in words {
            assert!(error.contains(w), "{reply:?}: {error}");
        }
        assert!(!error.contains("TG-SECRET"), "{error}");
        assert_eq!(tg.count(), 1, "{reply:?} was retried");
        assert_eq!(dlq.entries().len(), 1);
        assert_eq!(dlq.entries()[0].error, error);
    }
}

#[tokio::test]
async fn telegram_group_migrated_to_supergroup_gets_the_message_at_its_new_id() {
    let tg = FakeTelegram::start().await;
    tg.push(Reply::Migrated(-1_009_999));
    let (d, dlq) = dispatcher(&telegram_config(&tg, ""));
    let report = d
        .dispatch(&event("s", "x", "1", &json!({"text": "one"})))
        .await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { attempts: 1 }),
        "{report:?}"
    );
    // The next message to the old id goes straight to the new one.
    let report = d
        .dispatch(&event("s", "x", "2", &json!({"text": "two"})))
        .await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { .. }),
        "{report:?}"
    );
    assert_eq!(
        tg.sent(),
        vec![
            ("-1001".to_owned(), "<b>one</b>".to_owned()),
            ("-1009999".to_owned(), "<b>one</b>".to_owned()),
            ("-1009999".to_owned(), "<b>two</b>".to_owned()),
        ]
    );
    assert!(dlq.entries().is_empty());
}

#[tokio::test]
async fn telegram_429_waits_for_parameters_retry_after_without_a_header() {
    let tg = FakeTelegram::start().await;
    // Only the body says how long: Telegram's documented place for it.
    tg.push(Reply::Raw {
        status: 429,
        headers: vec![("content-type".into(), "application/json".into())],
        body: json!({"ok": false, "error_code": 429,
                     "description": "Too Many Requests: retry after 2",
                     "parameters": {"retry_after": 2}})
        .to_string(),
    });
    let (d, _) = dispatcher(&telegram_config(&tg, ""));
    let report = d
        .dispatch(&event("s", "x", "1", &json!({"text": "hi"})))
        .await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { attempts: 2 }),
        "{report:?}"
    );
    let reqs = tg.requests();
    assert!(reqs[1].at.duration_since(reqs[0].at) >= Duration::from_secs(2));
}

fn discord_config(url: &str, extra: &str) -> String {
    format!(
        r#"
[[sinks]]
name = "dc"
type = "discord"
webhook_url = "{url}"
backoff_base = "1ms"
{extra}
[[routes]]
source = "s"
sink = "dc"
template = "{{{{ text }}}}"
"#
    )
}

#[tokio::test]
async fn discord_unknown_webhook_and_over_long_content_are_permanent() {
    let dc = FakeDiscord::start().await;
    dc.push(Reply::UnknownWebhook);
    dc.push(Reply::TooLong);
    let (d, dlq) = dispatcher(&discord_config(&dc.webhook_url(), ""));
    let report = d
        .dispatch(&event("s", "x", "1", &json!({"text": "a"})))
        .await;
    let error = dead_letter_error(&report);
    assert!(
        error.contains("discord: 404: Unknown Webhook (code 10015)"),
        "{error}"
    );
    assert!(!error.contains("fake-webhook-token"), "{error}");
    let report = d
        .dispatch(&event("s", "x", "2", &json!({"text": "b"})))
        .await;
    let error = dead_letter_error(&report);
    assert!(
        error.contains("discord: 400: content: Must be 2000 or fewer in length."),
        "{error}"
    );
    assert_eq!(dc.count(), 2, "a permanent error was retried");
    assert_eq!(dlq.entries().len(), 2);

    // The sink splits a long text itself, so the real limit is never hit.
    let long = "word ".repeat(500); // 2,500 characters
    let report = d
        .dispatch(&event("s", "x", "3", &json!({"text": long})))
        .await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { attempts: 2 }),
        "{report:?}"
    );
}

/// The 429 body's `retry_after` is milliseconds on the unversioned URLs Discord hands
/// out and seconds on `/api/v10/`. Taken as seconds, 1500 ms would be 25 minutes, past
/// `max_age`, and the event would be dead-lettered; taken as ms, 1.5 s would be 1.5 ms.
#[tokio::test]
async fn discord_429_body_retry_after_units_follow_the_url_version() {
    for (url_of, retry_after) in [
        (
            FakeDiscord::webhook_url as fn(&FakeDiscord) -> String,
            json!(1500),
        ),
        (FakeDiscord::webhook_url_v10, json!(1.5)),
    ] {
        let dc = FakeDiscord::start().await;
        dc.push(Reply::Raw {
            status: 429,
            headers: vec![("content-type".into(), "application/json".into())],
            body: json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false})
                .to_string(),
        });
        let (d, dlq) = dispatcher(&discord_config(&url_of(&dc), "max_age = \"60s\""));
        let report = d
            .dispatch(&event("s", "x", "1", &json!({"text": "a"})))
            .await;
        assert!(
            matches!(only(&report), DeliveryOutcome::Delivered { attempts: 2 }),
            "{retry_after}: {report:?} {:?}",
            dlq.entries()
        );
        let reqs = dc.requests();
        assert!(
            reqs[1].at.duration_since(reqs[0].at) >= Duration::from_millis(1500),
            "{retry_after}: retried too early"
        );
    }
}

#[tokio::test]
async fn discord_429_headers_as_sent_are_obeyed() {
    let dc = FakeDiscord::start().await;
    // The fake sends what Discord sends: Retry-After (whole seconds), X-RateLimit-*, and
    // the body's retry_after in the URL version's unit.
    dc.push(Reply::RateLimited(1.2));
    let (d, _) = dispatcher(&discord_config(&dc.webhook_url_v10(), ""));
    let report = d
        .dispatch(&event("s", "x", "1", &json!({"text": "a"})))
        .await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { attempts: 2 }),
        "{report:?}"
    );
    let reqs = dc.requests();
    assert!(reqs[1].at.duration_since(reqs[0].at) >= Duration::from_secs(2));
}

#[tokio::test]
async fn slack_429_waits_for_retry_after() {
    let slack = FakeSlack::start().await;
    slack.push(Reply::RateLimited(2.0));
    let (d, dlq) = dispatcher(&format!(
        "[[sinks]]\nname='o'\ntype='slack'\nwebhook_url='{}'\ninterval='1ms'\nbackoff_base='1ms'\n[[routes]]\nsource='s'\nsink='o'\ntemplate='hi'\n",
        slack.webhook_url()
    ));
    let report = d.dispatch(&event("s", "x", "1", &json!({}))).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { attempts: 2 }),
        "{report:?}"
    );
    let reqs = slack.requests();
    assert!(reqs[1].at.duration_since(reqs[0].at) >= Duration::from_secs(2));
    assert!(dlq.entries().is_empty());
}

fn question(id: u64, text: &str) -> hookgate_proto::Event {
    event(
        "telegram",
        "message",
        &id.to_string(),
        &tg_update(id, 4242, text),
    )
}

#[tokio::test]
async fn openai_insufficient_quota_is_permanent_but_rate_limit_is_retried() {
    let (tg, ai) = (FakeTelegram::start().await, FakeOpenAi::start().await);
    let (d, dlq) = dispatcher(&llm_config(&tg, &ai));
    ai.push(Reply::QuotaExceeded);
    let report = d.dispatch(&question(1, "hi")).await;
    let error = dead_letter_error(&report);
    assert!(
        error.contains("llm: 429: You exceeded your current quota")
            && error.contains("insufficient_quota")
            && error.contains("no retry helps"),
        "{error}"
    );
    assert!(!error.contains("sk-test"), "{error}");
    assert_eq!(ai.count(), 1, "insufficient_quota was retried");
    assert_eq!(tg.count(), 0);
    assert_eq!(dlq.entries().len(), 1);

    ai.push(Reply::RateLimited(1.0));
    ai.set_answer("fine");
    let report = d.dispatch(&question(2, "again")).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { .. }),
        "{report:?}"
    );
    let reqs = ai.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs[2].at.duration_since(reqs[1].at) >= Duration::from_secs(1));
    assert_eq!(tg.sent(), vec![("4242".to_owned(), "fine".to_owned())]);
}

#[tokio::test]
async fn openai_null_content_refusal_and_truncation() {
    let (tg, ai) = (FakeTelegram::start().await, FakeOpenAi::start().await);
    let cfg = llm_config(&tg, &ai).replace(
        "backoff_base = \"10ms\"",
        "backoff_base = \"10ms\"\nmax_attempts = 2",
    );
    let (d, dlq) = dispatcher(&cfg);

    // Withheld by the content filter: permanent, nothing in the chat.
    ai.push(Reply::NullContent("content_filter"));
    let error = dead_letter_error(&d.dispatch(&question(1, "a")).await);
    assert!(error.contains("content filter"), "{error}");
    assert_eq!((ai.count(), tg.count()), (1, 0));

    // Null content for no stated reason: retried (local models do this), then dead-lettered.
    ai.push_n(Reply::NullContent("stop"), 2);
    let error = dead_letter_error(&d.dispatch(&question(2, "b")).await);
    assert!(
        error.contains("gave up after 2 attempts") && error.contains("no answer"),
        "{error}"
    );
    assert_eq!((ai.count(), tg.count()), (3, 0));

    // A refusal is the model's answer: the chat sees it.
    ai.push(Reply::Refusal("I can't help with that."));
    let report = d.dispatch(&question(3, "c")).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { .. }),
        "{report:?}"
    );
    assert_eq!(tg.sent()[0].1, "I can't help with that.");

    // Cut off at the output limit: the partial answer plus a note; the history keeps
    // only what the model wrote.
    ai.push(Reply::Truncated("The answer is"));
    let report = d.dispatch(&question(4, "d")).await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { .. }),
        "{report:?}"
    );
    let shown = tg.sent()[1].1.clone();
    assert!(shown.starts_with("The answer is"), "{shown}");
    assert!(
        shown.contains("answer cut off: the model reached its output limit"),
        "{shown}"
    );
    assert!(TRUNCATED_NOTE.contains("answer cut off"));
    ai.set_answer("ok");
    assert!(d.dispatch(&question(5, "e")).await.is_done());
    let last: Vec<(String, String)> = ai.asked().pop().unwrap_or_default();
    assert!(
        last.contains(&("assistant".to_owned(), "The answer is".to_owned())),
        "{last:?}"
    );
    assert_eq!(dlq.entries().len(), 2);
}

fn order_config(tg: &FakeTelegram) -> String {
    format!(
        r#"
[[sinks]]
name = "customers"
type = "telegram"
bot_token = "{TOKEN}"
chat_id = "-1"
api_url = "{}"
chat_interval = "1ms"
[[routes]]
source = "shop"
sink = "customers"
chat = "{{% for a in note_attributes %}}{{% if a.name == 'telegram_chat_id' %}}{{{{ a.value }}}}{{% endif %}}{{% endfor %}}"
template = "Thank you for order {{{{ name }}}}"
"#,
        tg.api_url()
    )
}

fn order(attrs: Value) -> Value {
    json!({"id": 1, "name": "#1001", "note_attributes": attrs})
}

#[tokio::test]
async fn route_chat_template_picks_the_chat_from_the_event() {
    let tg = FakeTelegram::start().await;
    let (d, dlq) = dispatcher(&order_config(&tg));
    let report = d
        .dispatch(&event(
            "shop",
            "orders/create",
            "1",
            &order(json!([{"name": "telegram_chat_id", "value": "5550001"}])),
        ))
        .await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Delivered { .. }),
        "{report:?}"
    );
    assert_eq!(
        tg.sent(),
        vec![("5550001".to_owned(), "Thank you for order #1001".to_owned())]
    );
    // No chat id in the order: skipped, not sent to the configured chat.
    let report = d
        .dispatch(&event("shop", "orders/create", "2", &order(json!([]))))
        .await;
    assert!(
        matches!(only(&report), DeliveryOutcome::Skipped { .. }),
        "{report:?}"
    );
    // Not a chat id: permanent, nothing sent.
    let report = d
        .dispatch(&event(
            "shop",
            "orders/create",
            "3",
            &order(json!([{"name": "telegram_chat_id", "value": "1/../getMe"}])),
        ))
        .await;
    let error = dead_letter_error(&report);
    assert!(error.contains("not a Telegram chat id"), "{error}");
    assert_eq!(tg.count(), 1);
    assert_eq!(dlq.entries().len(), 1);

    // `chat` on a route to a sink that is not Telegram is a config error.
    let bad = parse(
        "[[sinks]]\nname='o'\ntype='slack'\nwebhook_url='https://hooks.example/x'\n[[routes]]\nsource='s'\nsink='o'\nchat='{{ c }}'\n",
    );
    let errs: Vec<String> = check(&bad).iter().map(ToString::to_string).collect();
    assert!(
        errs.iter()
            .any(|e| e.contains("route #0") && e.contains("not a telegram sink")),
        "{errs:?}"
    );
}
