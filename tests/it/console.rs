//! The web console's admin API (issue 17) against the real binary: off without a token,
//! bearer and session auth, CSRF on writes, the failed-login limit, the bounded rings,
//! redaction of secret headers, the index refilled from the spool after a restart, and
//! replaying a dead letter to a fake sink. The browser tests are in `console_browser.rs`.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, COOKIE, SET_COOKIE};
use serde_json::{json, Value};

use crate::fakes::{FakeTelegram, Reply};
use crate::harness::{free_port, now, sign, Hookgate};

pub const TOKEN: &str = "console-token-0123456789";
pub const GH_SECRET: &str = "gh-secret";
const WAIT: Duration = Duration::from_secs(30);

/// A config with an admin listener on `admin_port`, `admin_extra` in `[admin]`, a github
/// source and, when `tg` is given, a telegram sink that github pushes go to.
pub fn config(admin_port: u16, admin_extra: &str, tg: Option<&FakeTelegram>) -> String {
    let routes = match tg {
        Some(tg) => format!(
            r#"
[[sinks]]
name = "team-chat"
type = "telegram"
bot_token = "123456:console-bot-token"
chat_id = "-1001"
api_url = "{}"
max_attempts = 2
backoff_base = "50ms"
backoff_max = "100ms"
chat_interval = "10ms"

[[routes]]
source = "github"
sink = "team-chat"
template = "push {{{{ ref }}}}"
"#,
            tg.api_url()
        ),
        None => String::new(),
    };
    format!(
        r#"
[server]
listen = "{{listen}}"

[admin]
listen = "127.0.0.1:{admin_port}"
{admin_extra}

[spool]
path = "{{dir}}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["{GH_SECRET}"]
{routes}
"#
    )
}

/// A hookgate whose admin listener answers.
pub struct Admin {
    pub hg: Hookgate,
    pub port: u16,
}

impl Admin {
    pub async fn start(admin_extra: &str, tg: Option<&FakeTelegram>) -> Admin {
        let port = free_port();
        let hg = Hookgate::start(&config(port, admin_extra, tg));
        let a = Admin { hg, port };
        a.wait_up().await;
        a
    }

    pub async fn wait_up(&self) {
        let end = Instant::now() + WAIT;
        loop {
            if let Ok(r) = client().get(self.url("/healthz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "admin listener not up: {}",
                self.hg.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn get(&self, path: &str, auth: Option<&str>) -> (u16, Value) {
        let mut r = client().get(self.url(path));
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("admin answers");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, auth: Option<&str>, body: &Value) -> (u16, Value) {
        let mut r = client().post(self.url(path)).json(body);
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("admin answers");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }
}

/// A client that does not follow redirects (the login answers 303 with the cookie).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Posts a signed github push; returns (status, answer).
pub async fn post_github(
    hg: &Hookgate,
    delivery: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = client()
        .post(hg.url("/hooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in sign("github", GH_SECRET, body, now()) {
        req = req.header(k, v);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Posts a push with a forged signature.
pub async fn post_forged(hg: &Hookgate, delivery: &str) -> u16 {
    client()
        .post(hg.url("/hooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .header("content-type", "application/json")
        .body("{\"forged\":true}")
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<(&'a str, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let val = v[name.len() + 1..]
                .split(';')
                .next()
                .unwrap_or("")
                .to_owned();
            (v, val)
        })
}

/// Logs in through the form with `token`; returns the status and, on success, the
/// session cookie's full `Set-Cookie` line and value.
pub async fn login(a: &Admin, token: &str) -> (u16, Option<(String, String)>) {
    let page = client()
        .get(a.url("/console/login"))
        .send()
        .await
        .expect("login page");
    let (_, login_csrf) =
        cookie_value(page.headers(), "hookgate_login_csrf").expect("login csrf cookie");
    let html = page.text().await.expect("html");
    assert!(
        html.contains(&format!("value=\"{login_csrf}\"")),
        "the form carries the csrf"
    );
    let r = client()
        .post(a.url("/console/login"))
        .header(COOKIE, format!("hookgate_login_csrf={login_csrf}"))
        .form(&[("token", token), ("csrf", login_csrf.as_str())])
        .send()
        .await
        .expect("login");
    let s = r.status().as_u16();
    let c = cookie_value(r.headers(), "hookgate_session").map(|(l, v)| (l.to_owned(), v));
    (s, c)
}

/// The CSRF token of the console shell for session `sid`.
pub async fn shell_csrf(a: &Admin, sid: &str) -> String {
    let html = client()
        .get(a.url("/console/"))
        .header(COOKIE, format!("hookgate_session={sid}"))
        .send()
        .await
        .expect("shell")
        .text()
        .await
        .expect("html");
    let at = html
        .find("name=\"csrf-token\" content=\"")
        .expect("csrf meta")
        + 27;
    html[at..at + 64].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_console_is_off_and_check_says_so() {
    let a = Admin::start("", None).await;
    for path in [
        "/api/v1/stats",
        "/api/v1/events",
        "/console/",
        "/console/login",
    ] {
        let (s, v) = a.get(path, Some(TOKEN)).await;
        assert_eq!(s, 404, "{path}");
        assert_eq!(v["error"], "console_off", "{path}");
    }
    let out = a.hg.cli(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("console: off (no [admin] token)"), "{text}");

    // With a token, check says where it is; a short token is refused.
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("c.toml");
    let fill = |c: String| {
        c.replace("{listen}", "127.0.0.1:18080")
            .replace("{dir}", &dir.path().display().to_string())
    };
    std::fs::write(
        &p,
        fill(config(9999, &format!("token = \"{TOKEN}\""), None)),
    )
    .expect("write");
    let out = crate::harness::run(
        std::process::Command::new(crate::harness::hookgate_bin())
            .args(["check", "--config"])
            .arg(&p),
        crate::harness::COMMAND_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("console: on at http://127.0.0.1:9999/console/"),
        "{text}"
    );
    assert!(!text.contains(TOKEN));
    std::fs::write(&p, fill(config(9999, "token = \"short\"", None))).expect("write");
    let out = crate::harness::run(
        std::process::Command::new(crate::harness::hookgate_bin())
            .args(["check", "--config"])
            .arg(&p),
        crate::harness::COMMAND_TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("at least 16 characters"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_session_and_csrf_guard_the_api() {
    let a = Admin::start(&format!("token = \"{TOKEN}\""), None).await;
    // No credentials, a wrong bearer, the right one.
    let (s, v) = a.get("/api/v1/stats", None).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("unauthorized")));
    let (s, v) = a
        .get("/api/v1/stats", Some("console-token-012345678X"))
        .await;
    assert_eq!((s, v["error"].as_str()), (401, Some("bad_token")));
    let (s, v) = a.get("/api/v1/stats", Some(TOKEN)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["sources"][0]["name"], "github");
    // The console shell needs a session.
    let r = client()
        .get(a.url("/console/"))
        .send()
        .await
        .expect("shell");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");

    // A wrong token at the login form, then the right one: a strict, HttpOnly cookie.
    let (s, c) = login(&a, "not-the-token-at-all").await;
    assert_eq!((s, c.is_none()), (401, true));
    let (s, c) = login(&a, TOKEN).await;
    assert_eq!(s, 303);
    let (line, sid) = c.expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(line.contains(attr), "{line}");
    }
    assert_eq!(sid.len(), 64);
    // A login post without the form's cookie is refused.
    let r = client()
        .post(a.url("/console/login"))
        .form(&[("token", TOKEN), ("csrf", "whatever")])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 403);

    let with_session = |m: reqwest::Method, path: &str| {
        client()
            .request(m, a.url(path))
            .header(COOKIE, format!("hookgate_session={sid}"))
    };
    let r = with_session(reqwest::Method::GET, "/api/v1/events")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "a session reads");
    // Writes need the CSRF token: missing, wrong, right.
    let body = json!({"all": true});
    let r = with_session(reqwest::Method::POST, "/api/v1/dead-letters/replay")
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "csrf_failed"
    );
    let r = with_session(reqwest::Method::POST, "/api/v1/dead-letters/replay")
        .header("x-csrf-token", "0".repeat(64))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let csrf = shell_csrf(&a, &sid).await;
    let r = with_session(reqwest::Method::POST, "/api/v1/dead-letters/replay")
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .expect("post");
    // Past auth and CSRF: this config has no routes.
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.expect("json")["error"], "no_routes");
    // A bearer needs no CSRF token.
    let (s, v) = a
        .post("/api/v1/dead-letters/replay", Some(TOKEN), &body)
        .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("no_routes")));
    // Logged out, the session is gone.
    let r = with_session(reqwest::Method::POST, "/console/logout")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 303);
    let r = with_session(reqwest::Method::GET, "/api/v1/events")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 401);
}

/// Wrong tokens count per address at each door on its own: a script with a stale bearer
/// token is limited after 50 (its own, higher limit) and does not lock the login form;
/// 5 wrong tokens at the form limit the form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_rate_limited_per_address() {
    let a = Admin::start(&format!("token = \"{TOKEN}\""), None).await;
    let bearer = |t: &str| {
        client()
            .get(a.url("/api/v1/stats"))
            .bearer_auth(t.to_owned())
            .send()
    };
    for i in 0..50 {
        let r = bearer("stale-script-token").await.expect("get");
        assert_eq!(r.status(), 401, "bearer attempt {i}");
    }
    // Now even the right bearer token waits ...
    let r = bearer(TOKEN).await.expect("get");
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=300).contains(&wait), "{wait}");
    assert_eq!(
        r.json::<Value>().await.expect("json")["error"],
        "login_rate_limited"
    );
    // ... but people at the login form are not locked out by it.
    let (s, c) = login(&a, TOKEN).await;
    assert_eq!((s, c.is_some()), (303, true));
    for i in 0..5 {
        let (s, _) = login(&a, &format!("wrong-token-number-{i}")).await;
        assert_eq!(s, 401, "attempt {i}");
    }
    // Now even the right token waits at the form.
    let (s, c) = login(&a, TOKEN).await;
    assert_eq!((s, c.is_none()), (429, true));
    // The webhook path is not affected.
    let (s, _) = post_github(&a.hg, "after-limit", b"{\"ref\":\"x\"}", &[]).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rings_never_grow_past_their_size() {
    let a = Admin::start(
        &format!("token = \"{TOKEN}\"\nconsole_events = 5\nconsole_rejections = 4"),
        None,
    )
    .await;
    for i in 0..30 {
        let (s, _) = post_github(
            &a.hg,
            &format!("d-{i}"),
            format!("{{\"n\":{i}}}").as_bytes(),
            &[],
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(post_forged(&a.hg, &format!("f-{i}")).await, 401);
        if i % 10 == 9 {
            let (_, st) = a.get("/api/v1/stats", Some(TOKEN)).await;
            assert!(st["rings"]["events"]["len"].as_u64().unwrap() <= 5, "{st}");
            assert!(
                st["rings"]["rejections"]["len"].as_u64().unwrap() <= 4,
                "{st}"
            );
        }
    }
    let (_, ev) = a.get("/api/v1/events?limit=1000", Some(TOKEN)).await;
    let list = ev["events"].as_array().expect("events");
    assert_eq!(list.len(), 5);
    // Newest first.
    assert_eq!(list[0]["delivery_id"], "d-29");
    assert_eq!(list[4]["delivery_id"], "d-25");
    let (_, rj) = a.get("/api/v1/rejections?limit=1000", Some(TOKEN)).await;
    let list = rj["rejections"].as_array().expect("rejections");
    assert_eq!(list.len(), 4);
    assert_eq!(list[0]["reason"], "signature_invalid");
    assert_eq!(list[0]["delivery_id"], "f-29");
    assert_eq!(list[0]["status"], 401);
    assert_eq!(list[0]["client"], "127.0.0.1");
    // Counters are not bounded by the rings.
    let (_, st) = a.get("/api/v1/stats", Some(TOKEN)).await;
    let gh = &st["sources"][0];
    assert_eq!(gh["totals"]["accepted"], 30);
    assert_eq!(gh["totals"]["refused"], 30);
    assert_eq!(gh["refused_by_reason"]["signature_invalid"], 30);
    // Filters and bad parameters.
    let (_, one) = a.get("/api/v1/events?delivery_id=d-27", Some(TOKEN)).await;
    assert_eq!(one["events"].as_array().map(Vec::len), Some(1));
    let (s, v) = a.get("/api/v1/events?limit=zero", Some(TOKEN)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_limit")));
    let (s, v) = a.get("/api/v1/events/not-an-id", Some(TOKEN)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_id")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_headers_are_redacted_and_the_body_is_read_back_after_a_restart() {
    let mut a = Admin::start(&format!("token = \"{TOKEN}\""), None).await;
    let body = br#"{"ref":"refs/heads/main","nested":{"a":[1,2]}}"#;
    let sig = sign("github", GH_SECRET, body, now());
    let sig_value = sig
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-hub-signature-256"))
        .map(|(_, v)| v.clone())
        .expect("github signs");
    let (s, v) = post_github(
        &a.hg,
        "redact-1",
        body,
        &[
            ("authorization", "Bearer upstream-credential-42"),
            ("x-custom-token", "custom-secret-value-77"),
            ("x-request-note", "plain-visible"),
        ],
    )
    .await;
    assert_eq!(s, 200);
    let id = v["id"].as_str().expect("id").to_owned();
    let (s, ev) = a.get(&format!("/api/v1/events/{id}"), Some(TOKEN)).await;
    assert_eq!(s, 200, "{ev}");
    let text = ev.to_string();
    for secret in [
        sig_value.as_str(),
        "upstream-credential-42",
        "custom-secret-value-77",
        GH_SECRET,
    ] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    let header = |name: &str| {
        ev["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(header("x-hub-signature-256").as_deref(), Some("[redacted]"));
    assert_eq!(header("authorization").as_deref(), Some("[redacted]"));
    assert_eq!(header("x-custom-token").as_deref(), Some("[redacted]"));
    assert_eq!(header("x-request-note").as_deref(), Some("plain-visible"));
    assert_eq!(ev["body_encoding"], "json");
    let pretty = ev["body"].as_str().expect("body");
    assert!(pretty.contains('\n'), "pretty-printed: {pretty}");
    assert_eq!(
        serde_json::from_str::<Value>(pretty).expect("json"),
        serde_json::from_slice::<Value>(body).expect("json")
    );

    // After a restart the index is refilled from the spool's tail, in the background.
    a.hg.restart();
    a.wait_up().await;
    let end = Instant::now() + WAIT;
    loop {
        let (_, list) = a.get("/api/v1/events", Some(TOKEN)).await;
        if list["events"][0]["id"] == id.as_str() {
            assert_eq!(list["events"].as_array().map(Vec::len), Some(1), "{list}");
            break;
        }
        assert!(Instant::now() < end, "not refilled: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, ev) = a.get(&format!("/api/v1/events/{id}"), Some(TOKEN)).await;
    assert_eq!(s, 200, "{ev}");
    assert_eq!(ev["delivery_id"], "redact-1");
    assert_eq!(ev["stored_at"]["log"], "spool", "{ev}");
    assert_eq!(ev["headers_from"], "log (kept headers only)");
    assert!(!ev.to_string().contains(&sig_value));
    assert_eq!(
        serde_json::from_str::<Value>(ev["body"].as_str().expect("body")).expect("json"),
        serde_json::from_slice::<Value>(body).expect("json")
    );
    let (s, v) = a
        .get("/api/v1/events/01ARZ3NDEKTSV4RRFFQ69G5FAV", Some(TOKEN))
        .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("event_not_found")));
}

/// Waits for the replay job to finish; returns its last progress.
pub async fn replay_done(a: &Admin) -> Value {
    let end = Instant::now() + WAIT;
    loop {
        let (s, j) = a.get("/api/v1/dead-letters/replay", Some(TOKEN)).await;
        assert_eq!(s, 200, "{j}");
        if j["state"] != "running" {
            return j;
        }
        assert!(Instant::now() < end, "replay still running: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `n` dead letters are pending.
pub async fn dead_letters(a: &Admin, n: usize) -> Vec<Value> {
    let end = Instant::now() + WAIT;
    loop {
        let (s, v) = a.get("/api/v1/dead-letters", Some(TOKEN)).await;
        assert_eq!(s, 200, "{v}");
        let list = v["dead_letters"].as_array().cloned().unwrap_or_default();
        if list.len() == n {
            return list;
        }
        assert!(
            Instant::now() < end,
            "{n} dead letters expected: {v}\n{}",
            a.hg.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_with_progress_and_events_are_sent_again() {
    let tg = FakeTelegram::start().await;
    let a = Admin::start(&format!("token = \"{TOKEN}\""), Some(&tg)).await;
    tg.set_default(Reply::ServerError);
    let (s, v) = post_github(&a.hg, "dl-1", br#"{"ref":"refs/heads/one"}"#, &[]).await;
    assert_eq!(s, 200);
    let first = v["id"].as_str().expect("id").to_owned();
    let (s, _) = post_github(&a.hg, "dl-2", br#"{"ref":"refs/heads/two"}"#, &[]).await;
    assert_eq!(s, 200);
    let list = dead_letters(&a, 2).await;
    assert_eq!(list[0]["sink"], "team-chat");
    assert_eq!(list[0]["delivery_id"], "dl-1");
    assert!(!list[0]["error"].as_str().unwrap_or("").is_empty());
    let (_, st) = a.get("/api/v1/stats", Some(TOKEN)).await;
    assert_eq!(st["dead_letters"], 2, "{st}");

    // Replay one while the sink still fails: the job reports the failure, nothing moves.
    let one = list[1]["entry"].as_str().expect("entry").to_owned();
    let (s, j) = a
        .post(
            "/api/v1/dead-letters/replay",
            Some(TOKEN),
            &json!({"entries": [one]}),
        )
        .await;
    assert_eq!(s, 202, "{j}");
    assert_eq!(j["total"], 1);
    let j = replay_done(&a).await;
    assert_eq!(
        (j["state"].as_str(), j["failed"].as_u64()),
        (Some("failed"), Some(1)),
        "{j}"
    );
    dead_letters(&a, 2).await;

    // The sink recovers: the selected one only, then all.
    tg.set_default(Reply::Ok);
    let before = tg.count();
    let (s, _) = a
        .post(
            "/api/v1/dead-letters/replay",
            Some(TOKEN),
            &json!({"entries": [one]}),
        )
        .await;
    assert_eq!(s, 202);
    let j = replay_done(&a).await;
    assert_eq!(
        (j["state"].as_str(), j["replayed"].as_u64()),
        (Some("done"), Some(1)),
        "{j}"
    );
    assert_eq!(tg.count() - before, 1);
    assert!(tg.sent().last().expect("sent").1.contains("refs/heads/two"));
    let left = dead_letters(&a, 1).await;
    assert_eq!(left[0]["delivery_id"], "dl-1");
    let (s, _) = a
        .post(
            "/api/v1/dead-letters/replay",
            Some(TOKEN),
            &json!({"all": true}),
        )
        .await;
    assert_eq!(s, 202);
    let j = replay_done(&a).await;
    assert_eq!(
        (
            j["state"].as_str(),
            j["replayed"].as_u64(),
            j["remaining"].as_u64()
        ),
        (Some("done"), Some(1), Some(0)),
        "{j}"
    );
    dead_letters(&a, 0).await;
    let (s, v) = a
        .post(
            "/api/v1/dead-letters/replay",
            Some(TOKEN),
            &json!({"all": true}),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("nothing_to_replay")));
    let (s, v) = a
        .post(
            "/api/v1/dead-letters/replay",
            Some(TOKEN),
            &json!({"nothing": 1}),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("bad_replay_request")));

    // "Send to sink again" for a routed event.
    let before = tg.count();
    let (s, v) = a
        .post(
            &format!("/api/v1/events/{first}/resend"),
            Some(TOKEN),
            &json!({"sink": "team-chat"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["delivered"], true, "{v}");
    assert_eq!(tg.count() - before, 1);
    let (s, v) = a
        .post(
            &format!("/api/v1/events/{first}/resend"),
            Some(TOKEN),
            &json!({"sink": "elsewhere"}),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("unknown_sink")));
}

/// `GET /api/v1/stats` per sink: deliveries ok, failed (retried, permanent) and
/// dead-lettered counted in the 1/5/15-minute windows, with their series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_windows_count_deliveries_and_failures() {
    let tg = FakeTelegram::start().await;
    let a = Admin::start(&format!("token = \"{TOKEN}\""), Some(&tg)).await;
    for i in 0..2 {
        // Distinct bodies: a repeated body is refused as a replay.
        let body = format!(r#"{{"ref":"ok-{i}"}}"#);
        let (s, v) = post_github(&a.hg, &format!("sw-ok-{i}"), body.as_bytes(), &[]).await;
        assert_eq!(s, 200, "{v}");
        assert_ne!(v["duplicate"].as_bool(), Some(true), "{v}");
    }
    assert_eq!(tg.wait_for(2, WAIT).await.len(), 2);
    // A 400: permanent, dead-lettered without a retry.
    tg.push(Reply::BadRequest);
    let (s, _) = post_github(&a.hg, "sw-bad", br#"{"ref":"bad"}"#, &[]).await;
    assert_eq!(s, 200);
    dead_letters(&a, 1).await;
    // A 500 twice (max_attempts = 2): one retry, then dead-lettered.
    tg.set_default(Reply::ServerError);
    let (s, _) = post_github(&a.hg, "sw-500", br#"{"ref":"five"}"#, &[]).await;
    assert_eq!(s, 200);
    dead_letters(&a, 2).await;

    let want = [
        ("ok", 2),
        ("failed_retriable", 1),
        ("failed_permanent", 1),
        ("dead_lettered", 2),
    ];
    let end = Instant::now() + WAIT;
    let sink = loop {
        let (s, st) = a.get("/api/v1/stats", Some(TOKEN)).await;
        assert_eq!(s, 200, "{st}");
        let sink = st["sinks"][0].clone();
        assert_eq!(sink["name"], "team-chat", "{st}");
        if want
            .iter()
            .all(|(k, n)| sink["counts"][k]["15m"].as_u64() == Some(*n))
        {
            break sink;
        }
        assert!(
            Instant::now() < end,
            "sink counts expected {want:?}: {sink}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Each GET samples the counters again: what was counted is not counted twice.
    let (_, again) = a.get("/api/v1/stats", Some(TOKEN)).await;
    assert_eq!(again["sinks"][0]["counts"], sink["counts"], "{again}");
    for (k, n) in want {
        // All of it happened within the last minute (the test takes seconds).
        assert_eq!(sink["counts"][k]["1m"].as_u64(), Some(n), "{k}: {sink}");
        assert_eq!(sink["counts"][k]["5m"].as_u64(), Some(n), "{k}: {sink}");
        let r = sink["rates_per_second"][k]["1m"].as_f64().expect("rate");
        assert!((r - n as f64 / 60.0).abs() < 0.001, "{k}: {sink}");
    }
    let sum = |k: &str| -> u64 {
        sink["series"][k]
            .as_array()
            .expect("series")
            .iter()
            .map(|x| x.as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(sink["series"]["ok"].as_array().map(Vec::len), Some(90));
    assert_eq!((sum("ok"), sum("failed")), (2, 4), "{sink}");
}

/// A raw HTTP/1.1 connection to the admin listener reading a server-sent-events stream.
struct RawStream {
    reader: tokio::io::BufReader<tokio::net::TcpStream>,
    status: u16,
    head: String,
}

impl RawStream {
    async fn open(a: &Admin, auth_header: &str) -> RawStream {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", a.port))
            .await
            .expect("connect");
        let req = format!(
            "GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n{auth_header}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut reader = tokio::io::BufReader::new(s);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(WAIT, reader.read_line(&mut line))
                .await
                .expect("response head in time")
                .expect("read");
            assert!(n > 0, "connection closed in the head: {head}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        RawStream {
            reader,
            status,
            head,
        }
    }

    /// Reads body lines (chunked framing lines included, they never match an SSE field)
    /// until one satisfies `want`; `None` when the stream ends first. Panics when none
    /// comes within `WAIT` (a stream that keeps sending other lines does not hang it).
    async fn until(&mut self, want: impl Fn(&str) -> bool) -> Option<String> {
        use tokio::io::AsyncBufReadExt;
        let end = Instant::now() + WAIT;
        loop {
            let left = end
                .checked_duration_since(Instant::now())
                .expect("the wanted stream line in time");
            let mut line = String::new();
            let n = tokio::time::timeout(left, self.reader.read_line(&mut line))
                .await
                .expect("the wanted stream line in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if want(line) {
                return Some(line.to_owned());
            }
        }
    }

    /// The `data:` of the next event named `name`.
    async fn event(&mut self, name: &str) -> Option<Value> {
        let header = format!("event: {name}");
        self.until(|l| l == header).await?;
        let data = self.until(|l| l.starts_with("data: ")).await?;
        serde_json::from_str(&data["data: ".len()..]).ok()
    }
}

/// `GET /api/v1/stream`: auth as the API, `stats` events and heartbeat comments, a bound
/// on open streams (a closed one frees its place), and the end of the stream on logout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_sends_stats_and_heartbeats_is_bounded_and_ends_on_logout() {
    let a = Admin::start(&format!("token = \"{TOKEN}\""), None).await;
    let bearer = format!("Authorization: Bearer {TOKEN}");

    let none = RawStream::open(&a, "X-None: 1").await;
    assert_eq!(none.status, 401, "{}", none.head);
    let wrong = RawStream::open(&a, "Authorization: Bearer wrong-token-0000").await;
    assert_eq!(wrong.status, 401, "{}", wrong.head);

    let mut first = RawStream::open(&a, &bearer).await;
    assert_eq!(first.status, 200, "{}", first.head);
    assert!(
        first
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        first.head
    );
    let stats = first.event("stats").await.expect("a stats event");
    assert_eq!(stats["sources"][0]["name"], "github", "{stats}");
    // An event accepted now shows in a later stats event.
    let (s, _) = post_github(&a.hg, "stream-1", br#"{"ref":"refs/heads/s"}"#, &[]).await;
    assert_eq!(s, 200);
    let mut seen = false;
    for _ in 0..10 {
        let st = first.event("stats").await.expect("stats");
        if st["sources"][0]["totals"]["accepted"] == 1 {
            seen = true;
            break;
        }
    }
    assert!(seen, "the accepted event never showed in the stream");
    assert!(
        first.until(|l| l == ": heartbeat").await.is_some(),
        "no heartbeat"
    );

    // Bounded: 8 open at once (the first included); the 9th is refused.
    let mut more = Vec::new();
    for _ in 1..8 {
        let s = RawStream::open(&a, &bearer).await;
        assert_eq!(s.status, 200, "{}", s.head);
        more.push(s);
    }
    let over = RawStream::open(&a, &bearer).await;
    assert_eq!(over.status, 429, "{}", over.head);
    // A client that goes away frees its place (once the server notices the closed socket).
    drop(more.pop());
    let end = Instant::now() + WAIT;
    loop {
        let again = RawStream::open(&a, &bearer).await;
        if again.status == 200 {
            more.push(again);
            break;
        }
        assert_eq!(again.status, 429, "{}", again.head);
        assert!(
            Instant::now() < end,
            "the closed stream's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(more);
    drop(first);

    // A session's stream ends when it logs out.
    let (s, cookie) = login(&a, TOKEN).await;
    assert_eq!(s, 303);
    let sid = cookie.expect("session cookie").1;
    let csrf = shell_csrf(&a, &sid).await;
    let end = Instant::now() + WAIT;
    let mut mine = loop {
        // The dropped bearer streams' places come back as their sockets close.
        let s = RawStream::open(&a, &format!("Cookie: hookgate_session={sid}")).await;
        if s.status == 200 {
            break s;
        }
        assert!(Instant::now() < end, "{}", s.head);
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    mine.event("stats").await.expect("stats for the session");
    let r = client()
        .post(a.url("/console/logout"))
        .header(COOKIE, format!("hookgate_session={sid}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 303);
    let why = mine.event("end").await.expect("an end event");
    assert_eq!(why["reason"], "logged out", "{why}");
    // Then the response ends (the terminating chunk; the server keeps the connection).
    assert!(
        mine.until(|l| l == "0").await.is_some(),
        "the stream did not end"
    );
}
