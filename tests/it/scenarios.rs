//! The three chatbot scenarios of `deploy/examples/`, each run as shipped: the real
//! binary on the example file (only the listen address changed), its secrets and API
//! base URLs from the environment as a user sets them, a signed webhook in, and the fake
//! Telegram / OpenAI APIs checked for the right message.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fakes::{FakeOpenAi, FakeTelegram, Reply};
use crate::harness::{client, hookgate_bin, now, run, sign, Hookgate};

const WAIT: Duration = Duration::from_secs(30);
/// Watched after the awaited messages arrived, so a duplicate would show (not a timing
/// assertion).
const SETTLE: Duration = Duration::from_secs(2);

/// Starts `hookgate serve` on `deploy/examples/<name>` in `dir` with `env`.
fn start_example(dir: &Path, name: &str, env: &[(&str, &str)]) -> Hookgate {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("read the example");
    assert!(text.contains("listen = \"127.0.0.1:8080\""), "{name}");
    Hookgate::start_in(
        dir,
        &text.replace("listen = \"127.0.0.1:8080\"", "listen = \"{listen}\""),
        env,
    )
}

/// `hookgate <args> --config <example as started>` with the same environment.
fn cli(hg: &Hookgate, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(hookgate_bin());
    cmd.current_dir(&hg.dir)
        .args(args)
        .arg("--config")
        .arg(hg.dir.join("hookgate.toml"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, Duration::from_secs(60))
}

/// Dead letters listed by `hookgate dlq list`, waiting up to [`WAIT`] for at least `n`;
/// with the command's last output, for failure messages.
async fn dead_letters(hg: &Hookgate, env: &[(&str, &str)], n: usize) -> (Vec<Value>, String) {
    let end = Instant::now() + WAIT;
    loop {
        let out = cli(hg, env, &["dlq", "list"]);
        let listed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if listed.len() >= n || Instant::now() > end {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (listed, said);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The fake's `(chat, text)` messages once at least `n` arrived (at most [`WAIT`]), then
/// [`SETTLE`] more.
async fn sent(tg: &FakeTelegram, n: usize) -> Vec<(String, String)> {
    let end = Instant::now() + WAIT;
    while tg.sent().len() < n && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SETTLE).await;
    tg.sent()
}

async fn post(hg: &Hookgate, path: &str, headers: &[(String, String)], body: &[u8]) -> Value {
    let mut req = client()
        .post(hg.url(path))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("an answer from hookgate");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{path}: {v}\n{}", hg.log());
    v
}

fn tg_message(update_id: i64, chat: i64, text: &str) -> Vec<u8> {
    json!({"update_id": update_id, "message": {"message_id": update_id, "date": now(), "text": text,
        "from": {"id": 42, "is_bot": false, "first_name": "Ann"},
        "chat": {"id": chat, "type": "private"}}})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assistant_example_answers_in_the_chat_and_dead_letters_an_exhausted_quota() {
    let (tg, ai) = (FakeTelegram::start().await, FakeOpenAi::start().await);
    let (tg_url, ai_url) = (tg.api_url(), ai.api_url());
    let env = [
        ("TELEGRAM_BOT_TOKEN", "4242:SCENARIO-BOT-TOKEN"),
        ("TELEGRAM_SECRET", "scenario_tg_secret"),
        ("TELEGRAM_CHAT_ID", "777"),
        ("LLM_API_KEY", "sk-scenario-key"),
        ("TELEGRAM_API_URL", tg_url.as_str()),
        ("LLM_API_URL", ai_url.as_str()),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let hg = start_example(dir.path(), "assistant.toml", &env);
    let secret = [(
        "x-telegram-bot-api-secret-token".to_owned(),
        "scenario_tg_secret".to_owned(),
    )];

    ai.set_answer("Webhooks are HTTP callbacks.");
    post(
        &hg,
        "/hooks/telegram",
        &secret,
        &tg_message(1, 555, "stranger"),
    )
    .await;
    post(
        &hg,
        "/hooks/telegram",
        &secret,
        &tg_message(2, 777, "What is a webhook?"),
    )
    .await;
    let got = sent(&tg, 1).await;
    assert_eq!(
        got,
        vec![("777".to_owned(), "Webhooks are HTTP callbacks.".to_owned())],
        "{}",
        hg.log()
    );
    let req = &ai.requests()[0];
    assert_eq!(req.header("authorization"), Some("Bearer sk-scenario-key"));
    assert_eq!(req.json()["model"], "gpt-4o-mini");
    assert_eq!(ai.asked()[0][0].0, "system");
    assert_eq!(
        ai.asked()[0].last(),
        Some(&("user".to_owned(), "What is a webhook?".to_owned()))
    );
    assert!(tg.requests()[0]
        .path
        .ends_with("/bot4242:SCENARIO-BOT-TOKEN/sendMessage"));

    // Out of quota: one model call, no reply, a dead letter that says why.
    ai.push(Reply::QuotaExceeded);
    post(
        &hg,
        "/hooks/telegram",
        &secret,
        &tg_message(3, 777, "And now?"),
    )
    .await;
    let end = Instant::now() + WAIT;
    while !hg.log().contains("dead-lettering") && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Listing reads the spool's dead-letter store beside the running server.
    let (listed, said) = dead_letters(&hg, &env, 1).await;
    assert_eq!(listed.len(), 1, "dlq list: {said}\n{}", hg.log());
    let text = listed[0].to_string();
    assert!(
        text.contains("assistant") && text.contains("insufficient_quota"),
        "{text}"
    );
    assert!(
        !text.contains("sk-scenario") && !text.contains("SCENARIO-BOT"),
        "{text}"
    );
    assert_eq!(ai.count(), 2, "insufficient_quota was retried");
    assert_eq!(tg.count(), 1);
}

/// `hookgate telegram set-webhook` prints a curl command; run as printed, it registers
/// hookgate's URL and the secret hookgate checks, so the next update is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_set_webhook_prints_a_call_that_registers_the_checked_secret() {
    let tg = FakeTelegram::start().await;
    let tg_url = tg.api_url();
    let env = [
        ("TELEGRAM_BOT_TOKEN", "4545:SETUP-BOT-TOKEN"),
        ("TELEGRAM_SECRET", "setup_secret-token"),
        ("TELEGRAM_CHAT_ID", "777"),
        ("LLM_API_KEY", "sk-setup"),
        ("TELEGRAM_API_URL", tg_url.as_str()),
        ("LLM_API_URL", "http://127.0.0.1:9/v1"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let hg = start_example(dir.path(), "assistant.toml", &env);
    let base = hg.url("");
    let out = cli(
        &hg,
        &env,
        &[
            "telegram",
            "set-webhook",
            "--url",
            base.trim_end_matches('/'),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("curl "), "{stdout}");
    assert!(stderr.contains("do not share it"), "{stderr}");
    let ran = run(
        Command::new("sh").arg("-c").arg(stdout.trim()),
        Duration::from_secs(30),
    );
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let answer: Value = serde_json::from_slice(&ran.stdout).unwrap_or(Value::Null);
    assert_eq!(answer["result"], true, "{answer}");

    let reqs = tg.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/bot4545:SETUP-BOT-TOKEN/setWebhook");
    let set = reqs[0].json();
    assert_eq!(set["url"], hg.url("/hooks/telegram"));
    assert_eq!(set["allowed_updates"], json!(["message"]));
    // What Telegram will send back with each update, as it registered it.
    let token = set["secret_token"].as_str().unwrap_or("").to_owned();
    let v = post(
        &hg,
        "/hooks/telegram",
        &[("x-telegram-bot-api-secret-token".to_owned(), token)],
        &tg_message(1, 555, "hi"),
    )
    .await;
    assert_eq!(v["duplicate"], false, "{v}");
    assert!(!hg.log().contains("SETUP-BOT-TOKEN"));
}

fn github_push() -> Vec<u8> {
    json!({
        "ref": "refs/heads/main",
        "deleted": false,
        "forced": false,
        "compare": "https://github.com/octo/hello/compare/aaa...bbb",
        "repository": {"full_name": "octo/hello"},
        "pusher": {"name": "mona"},
        "commits": [
            {"id": "0123456789abcdef", "message": "Fix <script> escaping\n\nLong body",
             "author": {"name": "Mona Lisa"}},
            {"id": "fedcba9876543210", "message": "Add tests & docs", "author": {"name": "Hubot"}}
        ]
    })
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_to_telegram_example_summarises_a_push_in_the_group_even_after_it_migrated() {
    let tg = FakeTelegram::start().await;
    let tg_url = tg.api_url();
    let env = [
        ("GITHUB_SECRET", "scenario-gh-secret"),
        ("TELEGRAM_BOT_TOKEN", "4343:SCENARIO-GH-BOT"),
        ("TELEGRAM_GROUP_CHAT_ID", "-4001"),
        ("TELEGRAM_API_URL", tg_url.as_str()),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let hg = start_example(dir.path(), "github-to-telegram.toml", &env);
    // The group became a supergroup: Telegram answers with its new id.
    tg.push(Reply::Migrated(-1_004_001));
    let body = github_push();
    let mut headers = vec![
        ("x-github-event".to_owned(), "push".to_owned()),
        ("x-github-delivery".to_owned(), "scenario-push-1".to_owned()),
    ];
    headers.extend(sign("github", "scenario-gh-secret", &body, now()));
    post(&hg, "/hooks/github", &headers, &body).await;
    let got = sent(&tg, 2).await;
    assert_eq!(got.len(), 2, "{got:?}\n{}", hg.log());
    assert_eq!(got[0].0, "-4001");
    assert_eq!(got[1].0, "-1004001");
    let text = &got[1].1;
    assert_eq!(
        text,
        "<b>mona</b> pushed 2 commits to <b>octo/hello</b> on main\n\
         • <code>0123456</code> Fix &lt;script&gt; escaping (Mona Lisa)\n\
         • <code>fedcba9</code> Add tests &amp; docs (Hubot)\n\
         <a href=\"https://github.com/octo/hello/compare/aaa...bbb\">Compare changes</a>"
    );
    assert_eq!(tg.requests()[1].json()["parse_mode"], "HTML");
    assert!(hg.log().contains("supergroup"), "{}", hg.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_orders_example_confirms_to_the_customer_and_notes_to_the_owner() {
    let tg = FakeTelegram::start().await;
    let tg_url = tg.api_url();
    let env = [
        ("SHOPIFY_SECRET", "scenario-shop-secret"),
        ("WOOCOMMERCE_SECRET", "scenario-woo-secret"),
        ("STRIPE_SECRET", "whsec_scenario-stripe-secret"),
        ("TELEGRAM_BOT_TOKEN", "4444:SCENARIO-SHOP-BOT"),
        ("SHOP_OWNER_CHAT_ID", "-5001"),
        ("TELEGRAM_API_URL", tg_url.as_str()),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let hg = start_example(dir.path(), "shop-orders.toml", &env);

    let order = json!({
        "id": 820982911946154508u64, "name": "#1001", "order_number": 1001,
        "email": "ann@example.com", "total_price": "42.50", "currency": "EUR",
        "customer": {"first_name": "Ann"},
        "line_items": [{"title": "Mug <large>", "quantity": 2}],
        "note_attributes": [{"name": "gift", "value": "no"}, {"name": "telegram_chat_id", "value": "6001"}]
    })
    .to_string()
    .into_bytes();
    let mut headers = vec![
        ("x-shopify-topic".to_owned(), "orders/create".to_owned()),
        (
            "x-shopify-webhook-id".to_owned(),
            "scenario-order-1".to_owned(),
        ),
    ];
    headers.extend(sign("shopify", "scenario-shop-secret", &order, now()));
    post(&hg, "/hooks/shopify", &headers, &order).await;

    let woo = json!({
        "id": 727, "number": "77", "status": "processing", "currency": "EUR", "total": "12.00",
        "billing": {"first_name": "Cem", "email": "cem@example.com"},
        "line_items": [{"name": "Tea", "quantity": 1}],
        "meta_data": [{"id": 1, "key": "_wc_order_attribution", "value": "x"},
                      {"id": 2, "key": "telegram_chat_id", "value": "6003"}]
    })
    .to_string()
    .into_bytes();
    let mut headers = vec![
        ("x-wc-webhook-topic".to_owned(), "order.created".to_owned()),
        (
            "x-wc-webhook-delivery-id".to_owned(),
            "scenario-woo-1".to_owned(),
        ),
    ];
    headers.extend(sign("woocommerce", "scenario-woo-secret", &woo, now()));
    post(&hg, "/hooks/woocommerce", &headers, &woo).await;

    let session = json!({
        "id": "evt_scenario_1", "type": "checkout.session.completed", "object": "event",
        "data": {"object": {
            "id": "cs_test_123", "object": "checkout.session", "amount_total": 1905,
            "currency": "eur", "customer_details": {"name": "Bob", "email": "bob@example.com"},
            "metadata": {"telegram_chat_id": "6002"}
        }}
    })
    .to_string()
    .into_bytes();
    let headers: Vec<(String, String)> =
        sign("stripe", "whsec_scenario-stripe-secret", &session, now())
            .into_iter()
            .collect();
    post(&hg, "/hooks/stripe", &headers, &session).await;

    let mut got = sent(&tg, 6).await;
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "-5001".to_owned(),
                "🛒 New Shopify order <b>#1001</b>: 42.50 EUR, 1 line(s), ann@example.com"
                    .to_owned()
            ),
            (
                "-5001".to_owned(),
                "🛒 New Stripe order cs_test_123: 19.05 EUR, bob@example.com".to_owned()
            ),
            (
                "-5001".to_owned(),
                "🛒 New WooCommerce order <b>#77</b>: 12.00 EUR, 1 line(s), cem@example.com"
                    .to_owned()
            ),
            (
                "6001".to_owned(),
                "Thank you for your order <b>#1001</b>, Ann!\n• 2 × Mug &lt;large&gt;\nTotal: <b>42.50 EUR</b>. We will write again when it ships."
                    .to_owned()
            ),
            (
                "6002".to_owned(),
                "Thank you for your order, Bob!\nPaid: <b>19.05 EUR</b>.".to_owned()
            ),
            (
                "6003".to_owned(),
                "Thank you for your order <b>#77</b>, Cem!\n• 1 × Tea\nTotal: <b>12.00 EUR</b>. We will write again when it ships."
                    .to_owned()
            ),
        ],
        "{}",
        hg.log()
    );
}
