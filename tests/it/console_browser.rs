//! The console in a real browser (Debian's Chromium, driven over WebDriver): log in, see
//! a just-sent event appear and open it (secret headers redacted), see a forged request
//! under refused requests with its reason, replay a dead letter to a fake sink and see it
//! delivered. A screenshot of each page goes to `target/console-screenshots/`.

use std::path::PathBuf;

use crate::console::{post_forged, post_github, Admin, TOKEN};
use crate::fakes::{FakeTelegram, Reply};
use crate::harness::{now, sign};
use crate::webdriver::{browser_available, Browser};

/// `target/console-screenshots/`, beside the test executable's profile directory.
fn shots() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/it-… → target/
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("console-screenshots"))
        .expect("target directory")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_watch_events_and_refusals_and_replay_a_dead_letter() {
    if !browser_available() {
        return;
    }
    let tg = FakeTelegram::start().await;
    let a = Admin::start(&format!("token = \"{TOKEN}\""), Some(&tg)).await;
    let dir = shots();
    let b = Browser::start().await;

    // Not logged in: the console sends the browser to the login page.
    b.goto(&a.url("/console/")).await;
    let field = b.wait_for("#token").await;
    assert!(
        b.url().await.ends_with("/console/login"),
        "{}",
        b.url().await
    );
    b.screenshot(&dir.join("login.png")).await;
    b.type_into(&field, "a-wrong-token-for-sure").await;
    b.click(&b.wait_for("#login-submit").await).await;
    b.wait_text("#login-message", |t| t.contains("Wrong token"))
        .await;
    let field = b.wait_for("#token").await;
    b.type_into(&field, TOKEN).await;
    b.click(&b.wait_for("#login-submit").await).await;
    b.wait_for("#sources-table").await;
    // The session cookie is HttpOnly: scripts cannot read it.
    let cookies = b.exec("return document.cookie").await;
    assert!(
        !cookies.as_str().unwrap_or("").contains("hookgate_session"),
        "{cookies}"
    );

    // A signed event with an upstream credential: it appears, and opens redacted.
    let body = br#"{"ref":"refs/heads/main","pusher":{"name":"mona"}}"#;
    let sig = sign("github", "gh-secret", body, now())
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-hub-signature-256"))
        .map(|(_, v)| v)
        .expect("github signs");
    let (s, v) = post_github(
        &a.hg,
        "browser-1",
        body,
        &[("authorization", "Bearer upstream-secret-99")],
    )
    .await;
    assert_eq!(s, 200);
    let id = v["id"].as_str().expect("id").to_owned();
    b.wait_text("#sources-table", |t| t.contains("github"))
        .await;
    b.goto(&a.url("/console/#events")).await;
    b.wait_text("#events-table", |t| t.contains("browser-1"))
        .await;
    b.screenshot(&dir.join("events.png")).await;
    let open = b.wait_for(&format!("tr[data-id='{id}'] a.open")).await;
    b.click(&open).await;
    let body_text = b.wait_text("#event-body", |t| t.contains("mona")).await;
    assert!(
        body_text.contains("\"pusher\": {"),
        "pretty-printed: {body_text}"
    );
    let headers = b
        .wait_text("#event-headers", |t| t.contains("x-hub-signature-256"))
        .await;
    assert!(headers.contains("[redacted]"), "{headers}");
    let page = b.page_text().await;
    assert!(
        !page.contains(&sig) && !page.contains("upstream-secret-99"),
        "{page}"
    );
    b.screenshot(&dir.join("event.png")).await;

    // A forged request: under refused requests with its reason and a hint.
    assert_eq!(post_forged(&a.hg, "forged-7").await, 401);
    b.goto(&a.url("/console/#refused")).await;
    let row = b
        .wait_text("tr[data-reason='signature_invalid']", |t| {
            t.contains("forged-7")
        })
        .await;
    assert!(row.contains("secret"), "a hint about the secret: {row}");
    b.screenshot(&dir.join("refused.png")).await;

    // A delivery that fails for good is dead-lettered; replayed once the sink is back.
    tg.set_default(Reply::ServerError);
    let (s, _) = post_github(&a.hg, "browser-dead", br#"{"ref":"refs/heads/dead"}"#, &[]).await;
    assert_eq!(s, 200);
    b.goto(&a.url("/console/#dead-letters")).await;
    b.wait_text("#dlq-table", |t| t.contains("browser-dead"))
        .await;
    b.screenshot(&dir.join("dead-letters.png")).await;
    tg.set_default(Reply::Ok);
    let before = tg.count();
    b.click(&b.wait_for("#replay-all").await).await;
    let progress = b
        .wait_text("#replay-progress", |t| t.contains(": done"))
        .await;
    assert!(progress.contains("1 of 1 delivered"), "{progress}");
    assert!(tg.count() > before);
    assert!(tg
        .sent()
        .iter()
        .any(|(_, text)| text.contains("refs/heads/dead")));
    b.wait_text("#dlq-table", |t| !t.contains("browser-dead"))
        .await;
    b.screenshot(&dir.join("dead-letters-replayed.png")).await;

    // The quarantine page draws (this config has no Kafka, so it says there is none).
    b.goto(&a.url("/console/#quarantine")).await;
    b.wait_text("#quarantine-table", |t| t.contains("no quarantine"))
        .await;
    b.screenshot(&dir.join("quarantine.png")).await;

    // The overview, with traffic, and the keyboard: Tab reaches the page links.
    b.goto(&a.url("/console/#overview")).await;
    b.wait_text("#health", |t| t.contains("Dead letters")).await;
    b.screenshot(&dir.join("overview.png")).await;
    b.exec("document.activeElement.blur(); window.scrollTo(0,0); return null")
        .await;
    b.keys("\u{E004}\u{E004}").await;
    let focused = b.exec("return document.activeElement.id").await;
    assert_eq!(
        focused, "nav-overview",
        "Tab goes skip-link, then the first page link"
    );
    b.quit().await;
}
