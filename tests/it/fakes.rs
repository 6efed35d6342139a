//! Fake chat API servers for tests: Telegram Bot API, Discord webhooks, Slack incoming
//! webhooks, an OpenAI-compatible chat completions API and a plain HTTP target.
//!
//! Each fake listens on 127.0.0.1 (port 0), records every request, and answers each call
//! from a script ([`FakeServer::push`]) or, once the script is used up, with a default
//! reply ([`FakeServer::set_default`], initially [`Reply::Ok`]). Responses mimic the real
//! APIs' status codes, headers and JSON bodies. Self-contained: depends only on tokio,
//! hyper 1, hyper-util, http-body-util, bytes and serde_json.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// How a fake answers one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Success, in the API's own format.
    Ok,
    /// 429 asking to retry after this many seconds (Telegram rounds up to whole seconds).
    RateLimited(f64),
    /// 500.
    ServerError,
    /// 400 in the API's own format (Slack: `invalid_payload`).
    BadRequest,
    /// Waits this long, then answers like [`Reply::Ok`] (for timeouts).
    Delay(Duration),
    /// Telegram: 400 "Bad Request: can't parse entities: …" (invalid HTML/MarkdownV2).
    CantParseEntities,
    /// Telegram: 400 "Bad Request: message is too long"; Discord: 400 for content over
    /// 2000 characters. Both fakes also answer this by themselves to a text over the limit.
    TooLong,
    /// Telegram: 400 "group chat was upgraded to a supergroup chat" with
    /// `parameters.migrate_to_chat_id` = this id.
    Migrated(i64),
    /// Telegram: 403 "Forbidden: bot was blocked by the user".
    Blocked,
    /// Discord: 404 `{"message": "Unknown Webhook", "code": 10015}`.
    UnknownWebhook,
    /// OpenAI: 429 `insufficient_quota` (out of credit, not a rate limit).
    QuotaExceeded,
    /// OpenAI: 200 with `content: null` and `finish_reason` as given
    /// (`content_filter`, `tool_calls`, `stop`, …).
    NullContent(&'static str),
    /// OpenAI: 200 with `content: null` and this `refusal`.
    Refusal(&'static str),
    /// OpenAI: 200 with this partial answer and `finish_reason: "length"`.
    Truncated(&'static str),
    /// Any status, headers and body.
    Raw {
        /// Status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Body text.
        body: String,
    },
}

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Headers, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub body: Bytes,
    /// When it arrived (real time; use for lower-bound timing assertions).
    pub at: Instant,
}

impl Recorded {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Telegram,
    Discord,
    Slack,
    OpenAi,
    Http,
}

struct State {
    requests: Vec<Recorded>,
    script: VecDeque<Reply>,
    default: Reply,
    answer: String,
    counter: u64,
}

/// The common part of every fake: address, recording and scripting.
pub struct FakeServer {
    addr: SocketAddr,
    flavor: Flavor,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    async fn start(flavor: Flavor) -> FakeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            requests: Vec::new(),
            script: VecDeque::new(),
            default: Reply::Ok,
            answer: "Hello from the fake model.".into(),
            counter: 0,
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(flavor, st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeServer {
            addr,
            flavor,
            state,
            task,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Scripts the reply to the next unscripted call.
    pub fn push(&self, reply: Reply) {
        self.lock().script.push_back(reply);
    }

    /// Scripts the same reply for the next `n` calls.
    pub fn push_n(&self, reply: Reply, n: usize) {
        for _ in 0..n {
            self.push(reply.clone());
        }
    }

    /// The reply once the script is used up.
    pub fn set_default(&self, reply: Reply) {
        self.lock().default = reply;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.lock().requests.len()
    }

    /// Waits (real time, at most `timeout`) until at least `n` requests arrived; returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let end = Instant::now() + timeout;
        while self.count() < n && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.requests()
    }
}

async fn handle(
    flavor: Flavor,
    st: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        at: Instant::now(),
    };
    let (reply, answer, n) = {
        let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
        s.requests.push(rec.clone());
        s.counter += 1;
        let reply = s.script.pop_front().unwrap_or_else(|| s.default.clone());
        (reply, s.answer.clone(), s.counter)
    };
    let reply = match reply {
        Reply::Delay(d) => {
            tokio::time::sleep(d).await;
            Reply::Ok
        }
        r => r,
    };
    let (status, headers, body) = match flavor {
        Flavor::Telegram => telegram(&rec, &reply, n),
        Flavor::Discord => discord(&rec, &reply, n),
        Flavor::Slack => slack(&reply),
        Flavor::OpenAi => openai(&rec, &reply, &answer, n),
        Flavor::Http => plain(&reply),
    };
    let (status, headers, body) = match reply {
        Reply::Raw {
            status,
            headers,
            body,
        } => (status, headers, body),
        _ => (status, headers, body),
    };
    let mut resp = Response::builder().status(status);
    for (k, v) in headers {
        resp = resp.header(k, v);
    }
    resp.body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

type Answer = (u16, Vec<(String, String)>, String);

/// A scripted reply this API never gives: a 599 that names it, so a test mistake shows.
fn misused(api: &str, reply: &Reply) -> Answer {
    (
        599,
        vec![],
        format!("fake {api}: {reply:?} is not a {api} reply"),
    )
}

fn json_answer(status: u16, v: Value, mut headers: Vec<(String, String)>) -> Answer {
    headers.push(("content-type".into(), "application/json".into()));
    (status, headers, v.to_string())
}

fn telegram(rec: &Recorded, reply: &Reply, n: u64) -> Answer {
    if rec.path.starts_with("/bot") && rec.path.ends_with("/setWebhook") {
        let url = rec.json()["url"].as_str().unwrap_or("").to_owned();
        return if url.starts_with("https://") || url.starts_with("http://") {
            json_answer(
                200,
                json!({"ok": true, "result": true, "description": "Webhook was set"}),
                vec![],
            )
        } else {
            json_answer(
                400,
                json!({"ok": false, "error_code": 400, "description": "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"}),
                vec![],
            )
        };
    }
    if !(rec.path.starts_with("/bot") && rec.path.ends_with("/sendMessage")) {
        return json_answer(
            404,
            json!({"ok": false, "error_code": 404, "description": "Not Found"}),
            vec![],
        );
    }
    let req = rec.json();
    let bad = |description: &str| {
        json_answer(
            400,
            json!({"ok": false, "error_code": 400, "description": description}),
            vec![],
        )
    };
    let too_long = req["text"]
        .as_str()
        .is_some_and(|t| t.encode_utf16().count() > 4096);
    if too_long && matches!(reply, Reply::Ok) {
        return bad("Bad Request: message is too long");
    }
    match reply {
        Reply::CantParseEntities => {
            bad("Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 7")
        }
        Reply::TooLong => bad("Bad Request: message is too long"),
        Reply::Migrated(to) => json_answer(
            400,
            json!({"ok": false, "error_code": 400,
                   "description": "Bad Request: group chat was upgraded to a supergroup chat",
                   "parameters": {"migrate_to_chat_id": to}}),
            vec![],
        ),
        Reply::Blocked => json_answer(
            403,
            json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
            vec![],
        ),
        Reply::UnknownWebhook
        | Reply::QuotaExceeded
        | Reply::NullContent(_)
        | Reply::Refusal(_)
        | Reply::Truncated(_) => misused("telegram", reply),
        Reply::RateLimited(s) => {
            let secs = s.ceil() as u64;
            json_answer(
                429,
                json!({"ok": false, "error_code": 429,
                       "description": format!("Too Many Requests: retry after {secs}"),
                       "parameters": {"retry_after": secs}}),
                vec![("retry-after".into(), secs.to_string())],
            )
        }
        Reply::ServerError => json_answer(
            500,
            json!({"ok": false, "error_code": 500, "description": "Internal Server Error"}),
            vec![],
        ),
        Reply::BadRequest => json_answer(
            400,
            json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
            vec![],
        ),
        _ => json_answer(
            200,
            json!({"ok": true, "result": {
                "message_id": n,
                "from": {"id": 1, "is_bot": true, "first_name": "hookgate", "username": "hookgate_bot"},
                "chat": {"id": req["chat_id"], "type": "group"},
                "date": 1_700_000_000u64 + n,
                "text": req["text"],
            }}),
            vec![],
        ),
    }
}

fn discord(rec: &Recorded, reply: &Reply, n: u64) -> Answer {
    let rl = |remaining: u32, reset: f64| {
        vec![
            ("x-ratelimit-limit".to_owned(), "5".to_owned()),
            ("x-ratelimit-remaining".to_owned(), remaining.to_string()),
            ("x-ratelimit-reset-after".to_owned(), format!("{reset:.3}")),
            ("x-ratelimit-bucket".to_owned(), "fakebucket".to_owned()),
        ]
    };
    let req = rec.json();
    // The API version in the path: `retry_after` in the body is seconds (float) from v8
    // on, milliseconds (integer) on unversioned and older paths.
    let version: Option<u32> = rec
        .path
        .strip_prefix("/api/v")
        .and_then(|r| r.split('/').next())
        .and_then(|v| v.parse().ok());
    let too_long = req["content"]
        .as_str()
        .is_some_and(|t| t.chars().count() > 2000);
    let too_long_answer = || {
        json_answer(
            400,
            json!({"content": ["Must be 2000 or fewer in length."]}),
            rl(4, 1.0),
        )
    };
    if too_long && matches!(reply, Reply::Ok) {
        return too_long_answer();
    }
    match reply {
        Reply::TooLong => too_long_answer(),
        Reply::UnknownWebhook => json_answer(
            404,
            json!({"message": "Unknown Webhook", "code": 10015}),
            vec![],
        ),
        Reply::CantParseEntities
        | Reply::Migrated(_)
        | Reply::Blocked
        | Reply::QuotaExceeded
        | Reply::NullContent(_)
        | Reply::Refusal(_)
        | Reply::Truncated(_) => misused("discord", reply),
        Reply::RateLimited(s) => {
            let mut h = rl(0, *s);
            h.push(("retry-after".into(), (s.ceil() as u64).to_string()));
            h.push(("x-ratelimit-scope".into(), "user".into()));
            let retry_after = match version {
                Some(v) if v >= 8 => json!(s),
                _ => json!((s * 1000.0).ceil() as u64),
            };
            json_answer(
                429,
                json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false}),
                h,
            )
        }
        Reply::ServerError => json_answer(
            500,
            json!({"message": "500: Internal Server Error", "code": 0}),
            vec![],
        ),
        Reply::BadRequest => json_answer(
            400,
            json!({"message": "Cannot send an empty message", "code": 50006}),
            rl(4, 1.0),
        ),
        _ => {
            let wait = rec
                .query
                .as_deref()
                .is_some_and(|q| q.split('&').any(|p| p == "wait=true"));
            if !wait {
                return (204, rl(4, 1.0), String::new());
            }
            json_answer(
                200,
                json!({"id": format!("{}", 1_000_000 + n), "type": 0, "channel_id": "42",
                       "content": req["content"], "webhook_id": "123",
                       "author": {"id": "123", "username": "hookgate", "bot": true},
                       "timestamp": "2024-01-01T00:00:00.000000+00:00"}),
                rl(4, 1.0),
            )
        }
    }
}

fn slack(reply: &Reply) -> Answer {
    let text = |status: u16, body: &str, h: Vec<(String, String)>| {
        let mut h = h;
        h.push(("content-type".into(), "text/plain".into()));
        (status, h, body.to_owned())
    };
    match reply {
        Reply::RateLimited(s) => text(
            429,
            "rate_limited",
            vec![("retry-after".into(), (s.ceil() as u64).to_string())],
        ),
        Reply::ServerError => text(500, "internal_error", vec![]),
        Reply::BadRequest => text(400, "invalid_payload", vec![]),
        Reply::Ok | Reply::Delay(_) | Reply::Raw { .. } => text(200, "ok", vec![]),
        other => misused("slack", other),
    }
}

fn openai(rec: &Recorded, reply: &Reply, answer: &str, n: u64) -> Answer {
    if rec.path != "/v1/chat/completions" {
        return json_answer(
            404,
            json!({"error": {"message": "not found", "type": "invalid_request_error"}}),
            vec![],
        );
    }
    match reply {
        Reply::RateLimited(s) => json_answer(
            429,
            json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
            vec![("retry-after".into(), (s.ceil() as u64).to_string())],
        ),
        Reply::ServerError => json_answer(
            500,
            json!({"error": {"message": "The server had an error", "type": "server_error"}}),
            vec![],
        ),
        Reply::BadRequest => json_answer(
            400,
            json!({"error": {"message": "Invalid request", "type": "invalid_request_error"}}),
            vec![],
        ),
        Reply::QuotaExceeded => json_answer(
            429,
            json!({"error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
            vec![],
        ),
        Reply::NullContent(finish) => completion(rec, n, json!(null), json!(null), finish),
        Reply::Refusal(r) => completion(rec, n, json!(null), json!(r), "stop"),
        Reply::Truncated(partial) => completion(rec, n, json!(partial), json!(null), "length"),
        Reply::CantParseEntities
        | Reply::TooLong
        | Reply::Migrated(_)
        | Reply::Blocked
        | Reply::UnknownWebhook => misused("openai", reply),
        _ => {
            let model = rec.json()["model"].clone();
            json_answer(
                200,
                json!({
                    "id": format!("chatcmpl-{n}"),
                    "object": "chat.completion",
                    "created": 1_700_000_000u64 + n,
                    "model": model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "logprobs": null,
                        "finish_reason": "stop"
                    }],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
                }),
                vec![],
            )
        }
    }
}

/// A successful chat completion with this content, refusal and finish reason.
fn completion(rec: &Recorded, n: u64, content: Value, refusal: Value, finish: &str) -> Answer {
    json_answer(
        200,
        json!({
            "id": format!("chatcmpl-{n}"),
            "object": "chat.completion",
            "created": 1_700_000_000u64 + n,
            "model": rec.json()["model"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "logprobs": null,
                "finish_reason": finish
            }],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        }),
        vec![],
    )
}

fn plain(reply: &Reply) -> Answer {
    match reply {
        Reply::RateLimited(s) => (
            429,
            vec![("retry-after".into(), (s.ceil() as u64).to_string())],
            String::new(),
        ),
        Reply::ServerError => (500, vec![], "error".into()),
        Reply::BadRequest => (400, vec![], "bad request".into()),
        _ => (200, vec![], String::new()),
    }
}

macro_rules! fake {
    ($(#[$m:meta])* $name:ident, $flavor:ident) => {
        $(#[$m])*
        pub struct $name(FakeServer);

        impl $name {
            /// Starts the fake on 127.0.0.1 with a free port.
            pub async fn start() -> Self {
                $name(FakeServer::start(Flavor::$flavor).await)
            }
        }

        impl Deref for $name {
            type Target = FakeServer;
            fn deref(&self) -> &FakeServer {
                &self.0
            }
        }
    };
}

fake!(
    /// Telegram Bot API: `POST /bot{token}/sendMessage`.
    FakeTelegram,
    Telegram
);
fake!(
    /// Discord webhook execute: `POST /api/webhooks/{id}/{token}[?wait=true]`.
    FakeDiscord,
    Discord
);
fake!(
    /// Slack incoming webhook: `POST /services/T/B/X`, answers `ok`.
    FakeSlack,
    Slack
);
fake!(
    /// OpenAI-compatible `POST /v1/chat/completions`.
    FakeOpenAi,
    OpenAi
);
fake!(
    /// A plain HTTP target: 200 with an empty body.
    FakeHttp,
    Http
);

impl FakeTelegram {
    /// The `api_url` to configure (the fake accepts any bot token).
    pub fn api_url(&self) -> String {
        self.base_url()
    }

    /// `(chat_id, text)` of every sendMessage call, chat ids as text.
    pub fn sent(&self) -> Vec<(String, String)> {
        self.requests()
            .iter()
            .filter(|r| r.path.ends_with("/sendMessage"))
            .map(|r| {
                let v = r.json();
                let chat = match &v["chat_id"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (chat, v["text"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    }
}

impl FakeDiscord {
    /// A webhook URL on this fake.
    pub fn webhook_url(&self) -> String {
        format!("{}/api/webhooks/123/fake-webhook-token", self.base_url())
    }

    /// A webhook URL on this fake that names API v10 (`/api/v10/webhooks/…`).
    pub fn webhook_url_v10(&self) -> String {
        format!(
            "{}/api/v10/webhooks/123/fake-webhook-token",
            self.base_url()
        )
    }
}

impl FakeSlack {
    /// A webhook URL on this fake.
    pub fn webhook_url(&self) -> String {
        format!("{}/services/T000/B000/XXXXXXXX", self.base_url())
    }
}

impl FakeOpenAi {
    /// The `api_url` to configure (`.../v1`).
    pub fn api_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    /// Sets the assistant answer of later successful calls.
    pub fn set_answer(&self, answer: &str) {
        self.lock().answer = answer.to_owned();
    }

    /// The `messages` of every request, as `(role, content)` pairs.
    pub fn asked(&self) -> Vec<Vec<(String, String)>> {
        self.requests()
            .iter()
            .map(|r| {
                r.json()["messages"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .map(|m| {
                                (
                                    m["role"].as_str().unwrap_or("").to_owned(),
                                    m["content"].as_str().unwrap_or("").to_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl FakeHttp {
    /// The target URL (`/in`).
    pub fn url(&self) -> String {
        format!("{}/in", self.base_url())
    }
}
