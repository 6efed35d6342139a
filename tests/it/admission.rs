//! Admission control (issue 13): what one anonymous client address can take, checked with
//! the real binary and clients bound to distinct loopback addresses (127.0.0.2 is the
//! flooder, 127.0.0.3 the legitimate sender).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{metric, now, sign, Hookgate};

const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const SENDER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// A config with one GitHub source (secret `gh-secret`) on a spool, and these `[server]`
/// settings.
fn github_only(server: &str) -> String {
    format!(
        "[server]\nlisten = \"{{listen}}\"\n{server}\n\n[spool]\npath = \"{{dir}}/spool\"\n\n\
         [[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets = [\"gh-secret\"]\n"
    )
}

/// A TCP connection to hookgate from `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(Duration::from_secs(10), s.connect(to))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

fn client_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

fn push(i: u64) -> Vec<u8> {
    format!(r#"{{"ref":"refs/heads/main","after":"{i:040}","repository":{{"full_name":"o/r"}}}}"#)
        .into_bytes()
}

/// A signed GitHub push, as a provider sends it.
fn github_post(
    c: &reqwest::Client,
    hg: &Hookgate,
    source: &str,
    delivery: &str,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let mut req = c
        .post(hg.url(&format!("/hooks/{source}")))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in sign("github", "gh-secret", body, now()) {
        req = req.header(k, v);
    }
    req
}

/// The headers of a GitHub request whose 1000-byte body never comes.
fn stalled_head(addr: SocketAddr, n: usize) -> String {
    format!(
        "POST /hooks/github HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-github-event: push\r\nx-github-delivery: stall-{n}\r\n\
         x-hub-signature-256: sha256={}\r\ncontent-length: 1000\r\n\r\n",
        "0".repeat(64)
    )
}

/// One client address holds 600 HTTP/1 requests whose bodies never come and 4 h2c
/// connections of 256 such streams each; a legitimate sender at another address still gets
/// (at least) 99% 2xx. Without the per-client limit the flood would take every slot of
/// `max_concurrency` (1024 here) and the sender would get 503s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_flooding_with_stalled_bodies_cannot_starve_another() {
    let hg = Hookgate::start(&github_only(
        r#"
max_concurrency = 1024
body_timeout = "120s"
h2_max_concurrent_streams = 256
"#,
    ));
    let addr = hg.addr;
    // 4 h2c connections (prior knowledge), 256 streams each, every body pending forever.
    let mut h2_tasks = Vec::new();
    let mut h2_conns = Vec::new();
    for c in 0..4 {
        let (send, conn) = h2c(FLOODER, addr).await;
        h2_conns.push(conn);
        for s in 0..256 {
            let mut send = send.clone();
            let req = stalled_post(addr, &format!("h2-stall-{c}-{s}"))
                .body(pending_body())
                .expect("request");
            h2_tasks.push(tokio::spawn(async move {
                match send.send_request(req).await {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                }
            }));
        }
    }
    // 600 HTTP/1 connections, each with one request whose body never comes.
    let mut h1 = Vec::new();
    for n in 0..600 {
        if let Ok(mut s) = connect_from(FLOODER, addr).await {
            if s.write_all(stalled_head(addr, n).as_bytes()).await.is_ok() {
                h1.push(s);
            }
        }
    }
    // The sender posts 1000 distinct events, 16 at a time, while the flood holds.
    let sender = client_from(SENDER);
    let mut ok = 0usize;
    let mut other = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..(1000 / 16 + 1) {
        let mut batch = Vec::new();
        for j in 0..16u64 {
            let i = round * 16 + j;
            if i >= 1000 {
                break;
            }
            let body = push(i);
            batch.push(github_post(&sender, &hg, "github", &format!("legit-{i}"), &body).send());
        }
        for r in futures_util::future::join_all(batch).await {
            match r {
                Ok(r) if r.status().is_success() => ok += 1,
                Ok(r) => *other.entry(r.status().as_u16()).or_default() += 1,
                Err(_) => *other.entry(0).or_default() += 1,
            }
        }
    }
    assert!(
        ok >= 990,
        "the legitimate sender got {ok}/1000 2xx under the flood; others: {other:?}\n{}",
        hg.log()
    );
    let in_flight_refused = metric(
        &hg,
        "hookgate_admission_refused_total{reason=\"client_in_flight\"}",
    )
    .await;
    assert!(
        in_flight_refused > 0.0,
        "the flood was held to its share of requests in flight"
    );
    // The flood's stalled streams over its share were answered at once, with 429; the
    // ones within it are still waiting for their bodies.
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut pending = 0;
    for t in h2_tasks {
        if t.is_finished() {
            *statuses.entry(t.await.unwrap_or(0)).or_default() += 1;
        } else {
            pending += 1;
            t.abort();
        }
    }
    assert!(
        statuses.get(&429).copied().unwrap_or(0) > 0 && pending > 0,
        "h2 streams over the client's share got 429, the rest still wait: {statuses:?}, {pending} pending"
    );
    drop(h1);
    for c in &h2_conns {
        c.abort();
    }
    // Once the flood hangs up, its slots come back: a request from its address passes.
    let flooder = client_from(FLOODER);
    let mut passed = false;
    for attempt in 0..60 {
        let r = github_post(
            &flooder,
            &hg,
            "github",
            &format!("after-{attempt}"),
            &push(5000 + attempt),
        )
        .send()
        .await
        .expect("post after the flood");
        if r.status().is_success() {
            passed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        passed,
        "the flooder's address gets its slots back once it hangs up"
    );
}

type StalledBody = StreamBody<futures_util::stream::Pending<Result<Frame<Bytes>, Infallible>>>;

/// An h2c connection (prior knowledge) from `from`; its driver task is returned to abort.
async fn h2c(
    from: IpAddr,
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<StalledBody>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tcp = connect_from(from, addr).await.expect("h2c connect");
    let (send, conn) = hyper::client::conn::http2::handshake::<_, _, StalledBody>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake");
    (send, tokio::spawn(conn))
}

/// A GitHub-looking POST whose body never comes (a signature header, but no signature).
fn stalled_post(addr: SocketAddr, delivery: &str) -> http::request::Builder {
    http::Request::post(format!("http://{addr}/hooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .header("content-length", "1000")
}

fn pending_body() -> StalledBody {
    StreamBody::new(futures_util::stream::pending())
}

/// Whether the server hung up on `s` (EOF or reset) within a few seconds; `false` when the
/// connection is still open, silent.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Connections are capped per client address and in total: a connection over either cap
/// is closed at once, the ones within stay open, and closing one makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_closed_at_once() {
    let admin_port = crate::harness::free_port();
    let hg = Hookgate::start(&format!(
        r#"
[server]
listen = "{{listen}}"
max_connections = 15
max_connections_per_client = 10
header_timeout = "120s"
idle_timeout = "120s"

[admin]
listen = "127.0.0.1:{admin_port}"

[spool]
path = "{{dir}}/spool"
"#
    ));
    let mut from_a = Vec::new();
    for _ in 0..12 {
        from_a.push(connect_from(FLOODER, hg.addr).await.expect("connect"));
    }
    let mut closed = 0;
    for s in &mut from_a {
        if closed_by_server(s).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 2, "10 of 12 connections from one address stay open");
    let mut from_b = Vec::new();
    for _ in 0..6 {
        from_b.push(connect_from(SENDER, hg.addr).await.expect("connect"));
    }
    let mut closed = 0;
    for s in &mut from_b {
        if closed_by_server(s).await {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 1,
        "15 in total: 5 of 6 from another address stay open"
    );
    assert_eq!(
        refusals(admin_port).await,
        (2.0, 1.0),
        "refusals are counted by reason"
    );
    // Hanging up makes room: a new connection from the first address is served.
    from_a.clear();
    let mut served = false;
    for _ in 0..50 {
        let mut s = connect_from(FLOODER, hg.addr).await.expect("connect");
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        // (404: with an admin listener the public port serves only /hooks/*.)
        if buf.starts_with(b"HTTP/1.1 404") {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "closed connections give their slots back");
}

/// `(client_connections, connections)` refusals, read on the admin listener, which the
/// public listener's caps do not cover (it stays reachable while they are full).
async fn refusals(admin_port: u16) -> (f64, f64) {
    let text = crate::harness::client()
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .expect("admin metrics")
        .text()
        .await
        .unwrap_or_default();
    let value = |reason: &str| -> f64 {
        let name = format!("hookgate_admission_refused_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&name)?.parse().ok())
            .unwrap_or(0.0)
    };
    (value("client_connections"), value("connections"))
}

/// Requests a source would refuse anyway are refused from their headers alone: a missing
/// signature header, a Content-Length over the limit, a disallowed address — while their
/// bodies have not even started (body_timeout is far away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_refused_from_their_headers_never_wait_for_a_body() {
    let hg = Hookgate::start(
        r#"
[server]
listen = "{listen}"
body_timeout = "300s"
max_body_bytes = 4096

[spool]
path = "{dir}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]

[[sources]]
name = "only-two"
provider = "github"
secrets = ["gh-secret"]
allow_ips = ["127.0.0.2/32"]
"#,
    );
    let cases = [
        (
            "/hooks/github",
            "content-length: 1000\r\n",
            401,
            "signature_missing",
        ),
        (
            "/hooks/github",
            "x-hub-signature-256: sha256=00\r\ncontent-length: 999999\r\n",
            413,
            "body_too_large",
        ),
        (
            "/hooks/only-two",
            "x-hub-signature-256: sha256=00\r\ncontent-length: 1000\r\n",
            403,
            "ip_not_allowed",
        ),
    ];
    for (path, extra, status, code) in cases {
        let mut s = connect_from(SENDER, hg.addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-github-event: push\r\nx-github-delivery: d\r\n{extra}\r\n"
        );
        s.write_all(head.as_bytes()).await.expect("write head");
        // No body is sent; the answer must come anyway (long before body_timeout).
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{path} {extra:?}: no answer without the body"))
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{path} {extra:?}: {text}"
        );
        assert!(text.contains(code), "{path} {extra:?}: {text}");
    }
    assert_eq!(
        metric(&hg, "hookgate_requests_in_flight").await,
        0.0,
        "nothing refused from its headers holds a slot"
    );
}

/// Token buckets per client address and per source: beyond the burst a client gets 429
/// with a Retry-After and a stable code, other clients are unaffected by a client's bucket,
/// and every client shares the source's bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_per_client_and_per_source_answer_429_with_retry_after() {
    // Rates so slow that no token comes back while the test runs.
    let hg = Hookgate::start(
        r#"
[server]
listen = "{listen}"
rate_limit_per_client = { per_second = 0.01, burst = 3 }

[spool]
path = "{dir}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]

[[sources]]
name = "limited"
provider = "github"
secrets = ["gh-secret"]
rate_limit = { per_second = 0.01, burst = 2 }
"#,
    );
    let a = client_from(FLOODER);
    let b = client_from(SENDER);
    for i in 0..3 {
        let r = github_post(&a, &hg, "github", &format!("a-{i}"), &push(i))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200, "within the burst");
    }
    let r = github_post(&a, &hg, "github", "a-3", &push(3))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 429);
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry >= 1, "{retry}");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "client_rate", "{v}");
    // Another address has a bucket of its own.
    let r = github_post(&b, &hg, "github", "b-0", &push(100))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    // The source's bucket is shared: b's second request to it is over its burst of 2
    // (b has one token left of its own, so the refusal is the source's).
    let r = github_post(&b, &hg, "limited", "l-0", &push(200))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    let r = github_post(&b, &hg, "limited", "l-1", &push(201))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "b's last token");
    let c = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
    let r = github_post(&c, &hg, "limited", "l-2", &push(202))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 429, "the source's burst is spent");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "source_rate", "{v}");
    assert_eq!(
        metric(
            &hg,
            "hookgate_requests_total{source=\"limited\",status=\"429\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &hg,
            "hookgate_admission_refused_total{reason=\"client_rate\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &hg,
            "hookgate_admission_refused_total{reason=\"source_rate\"}"
        )
        .await,
        1.0
    );
}

/// HTTP/2: a stream whose body stalls is cut by `body_timeout` (408) like on HTTP/1, and
/// a connection with nothing in flight is closed after `idle_timeout`, on HTTP/1
/// keep-alive and on h2 alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_h2_bodies_are_cut_and_idle_connections_closed() {
    let hg = Hookgate::start(&github_only(
        r#"
body_timeout = "1s"
idle_timeout = "2s"
header_timeout = "120s"
"#,
    ));
    let addr = hg.addr;
    let (mut send, conn) = h2c(SENDER, addr).await;
    let req = stalled_post(addr, "h2-slow")
        .body(pending_body())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(60), send.send_request(req))
        .await
        .expect("an answer to the stalled stream")
        .expect("response");
    assert_eq!(resp.status(), 408);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("body_timeout"),
        "{body:?}"
    );
    // Nothing in flight now: the server closes the h2 connection (GOAWAY, then EOF).
    let ended = tokio::time::timeout(Duration::from_secs(60), conn).await;
    assert!(ended.is_ok(), "the idle h2 connection was closed");

    // HTTP/1 keep-alive: one request, then silence; the server hangs up.
    let mut s = connect_from(SENDER, addr).await.expect("connect");
    s.write_all(format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let eof = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(eof.is_ok(), "the idle keep-alive connection was closed");
    assert!(
        metric(&hg, "hookgate_connections_idle_closed_total").await >= 2.0,
        "both idle closes are counted"
    );
    // A GET keeps working on a new connection (nothing was wedged).
    let r = client_from(SENDER)
        .get(hg.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
}

/// HTTP/2's header list is bounded (`h2_max_header_list_size`): a request whose headers
/// are larger never reaches the handler (without the bound, this one would be answered 401
/// `signature_missing`), and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_header_list_over_the_bound_never_reaches_the_handler() {
    let hg = Hookgate::start(&github_only(
        r#"
h2_max_header_list_size = "8KiB"
"#,
    ));
    let send_with = |size: usize| {
        let addr = hg.addr;
        async move {
            let (mut send, conn) = h2c(SENDER, addr).await;
            let req = http::Request::post(format!("http://{addr}/hooks/github"))
                .header("x-github-event", "push")
                .header("x-github-delivery", "big-headers")
                .header("x-padding", "p".repeat(size))
                .body(pending_body())
                .expect("request");
            let got = tokio::time::timeout(Duration::from_secs(30), send.send_request(req))
                .await
                .expect("an answer or an error");
            conn.abort();
            got.map(|r| r.status().as_u16()).unwrap_or(0)
        }
    };
    // Within the bound: the handler answers (no signature header: 401).
    assert_eq!(send_with(1024).await, 401);
    // Over it: refused by the HTTP/2 layer (431, or the stream refused), not the handler.
    let status = send_with(32 * 1024).await;
    assert!(status == 431 || status == 0, "got {status}");
    assert_eq!(send_with(1024).await, 401, "still serving");
}
