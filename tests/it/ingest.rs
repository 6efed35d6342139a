//! The core ingest path against a real broker: record contract, verification, dedupe,
//! limits, broker outage, graceful shutdown, the embedded default and the CLI.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    self, client, client_with_timeout, now, read_topic, reconcile, sign, topic, Broker, Duplicates,
    Hookgate, Target, COMMAND_TIMEOUT,
};

const GH_SECRET: &str = "gh-secret";
const STRIPE_SECRET: &str = "whsec_stripe";

fn kafka_config(broker: &Broker, topic: &str, extra_kafka: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
max_body_bytes = "64KiB"
max_headers = 30

[kafka]
brokers = "{boot}"
create_topics = true
delivery_timeout = "3s"
retry_after_secs = 2
{extra_kafka}

[[sources]]
name = "github"
provider = "github"
secrets = ["old-secret", "{GH_SECRET}"]
topic = "{topic}"
partition_key = "/repository/full_name"
keep_headers = ["x-github-hook-id"]

[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["{STRIPE_SECRET}"]
topic = "{topic}"
"#,
        boot = broker.bootstrap()
    )
}

/// A push body of its own for each delivery id: GitHub signs only the body, so the same
/// body under another delivery id is a replay to hookgate (answered as a duplicate).
pub fn push_body_for(delivery: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&push_body(delivery.len())).unwrap_or_default();
    v["delivery"] = Value::from(delivery);
    v.to_string().into_bytes()
}

pub fn push_body(n: usize) -> Vec<u8> {
    serde_json::json!({
        "ref": "refs/heads/main",
        "repository": {"full_name": "octo/hello"},
        "pusher": {"name": "mona"},
        "commits": [{"id": format!("c{n}"), "message": format!("change {n}\n\nlong text")}],
        "n": n
    })
    .to_string()
    .into_bytes()
}

/// POSTs a signed GitHub push; returns status and JSON body.
pub async fn post_github(
    c: &reqwest::Client,
    hg: &impl Target,
    delivery: &str,
    body: &[u8],
) -> (u16, Value, Option<String>) {
    let mut req = c
        .post(hg.url("/hooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-github-hook-id", "4242")
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in sign("github", GH_SECRET, body, now()) {
        req = req.header(k, v);
    }
    let Ok(resp) = req.send().await else {
        return (0, Value::Null, None);
    };
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, v, retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_event_lands_in_kafka_byte_identical_with_contract_headers() {
    let broker = Broker::start();
    let t = topic("contract");
    let hg = Hookgate::start(&kafka_config(&broker, &t, ""));
    let c = client();
    let body = push_body(1);
    let (status, v, _) = post_github(&c, &hg, "del-1", &body).await;
    assert_eq!(status, 200, "{v} {}", hg.log());
    assert_eq!(v["duplicate"], false);
    let id = ack_id(&v);

    let recs = read_topic(&broker.bootstrap(), &t, 1, Duration::from_secs(20));
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.value, body, "value must be the raw body, byte for byte");
    assert_eq!(r.key.as_deref(), Some(&b"octo/hello"[..]));
    assert_eq!(r.header("hookgate-id").as_deref(), Some(id.as_str()));
    assert_eq!(r.header("hookgate-source").as_deref(), Some("github"));
    assert_eq!(r.header("hookgate-provider").as_deref(), Some("github"));
    assert_eq!(r.header("hookgate-event").as_deref(), Some("push"));
    assert_eq!(r.header("hookgate-delivery-id").as_deref(), Some("del-1"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("x-github-hook-id").as_deref(), Some("4242"));
    let at = r
        .header("hookgate-received-at")
        .expect("a hookgate-received-at header");
    assert!(humantime::parse_rfc3339(&at).is_ok(), "{at}");
    assert!(
        at.ends_with('Z') && at.len() == "2026-01-01T00:00:00.000Z".len(),
        "{at}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_requests_are_401_and_produce_nothing() {
    let broker = Broker::start();
    let t = topic("forged");
    let hg = Hookgate::start(&kafka_config(&broker, &t, ""));
    let c = client();
    let body = push_body(2);

    // Signed with a secret the source does not have.
    let mut req = c
        .post(hg.url("/hooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", "forged-1")
        .header("content-type", "application/json")
        .body(body.clone());
    for (k, v) in sign("github", "not-the-secret", &body, now()) {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("an answer from hookgate");
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("a JSON body");
    assert_eq!(v["error"], "signature_invalid");
    assert!(!v.to_string().contains(GH_SECRET));

    // Body changed after signing.
    let mut req = c
        .post(hg.url("/hooks/github"))
        .header("x-github-delivery", "forged-2")
        .body(push_body(3));
    for (k, v) in sign("github", GH_SECRET, &body, now()) {
        req = req.header(k, v);
    }
    assert_eq!(
        req.send().await.expect("an answer from hookgate").status(),
        401
    );

    // A correctly signed Stripe event, replayed 20 minutes later.
    let sbody = br#"{"id":"evt_replayed","type":"charge.succeeded"}"#;
    let mut req = c.post(hg.url("/hooks/stripe")).body(sbody.to_vec());
    for (k, v) in sign("stripe", STRIPE_SECRET, sbody, now() - 1200) {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("an answer from hookgate");
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.expect("a JSON body");
    assert_eq!(v["error"], "timestamp_out_of_tolerance");

    // No signature at all.
    let resp = c
        .post(hg.url("/hooks/github"))
        .header("x-github-delivery", "forged-3")
        .body(body.clone())
        .send()
        .await
        .expect("an answer from hookgate");
    assert_eq!(resp.status(), 401);

    // A valid marker proves the topic works; it must be the only record.
    let (status, _, _) = post_github(&c, &hg, "marker", &body).await;
    assert_eq!(status, 200);
    let recs = read_topic(&broker.bootstrap(), &t, 1, Duration::from_secs(20));
    let ids: Vec<String> = recs
        .iter()
        .filter_map(|r| r.header("hookgate-delivery-id"))
        .collect();
    assert_eq!(ids, vec!["marker".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_delivery_ids_produce_one_record_even_fifty_at_once() {
    let broker = Broker::start();
    let t = topic("dedupe");
    let hg = Hookgate::start(&kafka_config(&broker, &t, ""));
    let c = client();
    let body = push_body(4);
    let (s1, v1, _) = post_github(&c, &hg, "dup-seq", &body).await;
    let (s2, v2, _) = post_github(&c, &hg, "dup-seq", &body).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(v1["duplicate"], false);
    assert_eq!(v2["duplicate"], true);
    assert_eq!(v1["id"], v2["id"]);

    let hg = Arc::new(hg);
    let body = Arc::new(push_body(5));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, hg, body) = (c.clone(), hg.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            post_github(&c, hg.as_ref(), "dup-burst", &body).await
        }));
    }
    let mut fresh = 0;
    let mut ids = HashSet::new();
    for t in tasks {
        let (s, v, _) = t.await.unwrap();
        assert_eq!(s, 200, "{v}");
        if v["duplicate"] == false {
            fresh += 1;
        }
        ids.insert(ack_id(&v));
    }
    assert_eq!(fresh, 1, "exactly one of 50 concurrent copies is new");
    assert_eq!(ids.len(), 1, "every copy reports the same event id");

    let recs = read_topic(&broker.bootstrap(), &t, 2, Duration::from_secs(20));
    let mut per: HashMap<String, usize> = HashMap::new();
    for r in &recs {
        *per.entry(r.header("hookgate-delivery-id").unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(per.get("dup-seq"), Some(&1), "{per:?}");
    assert_eq!(per.get("dup-burst"), Some(&1), "{per:?}");
    assert_eq!(recs.len(), 2);
}

fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to hookgate");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s.write_all(request).expect("write the request");
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_413_404_405_431_with_json_errors() {
    let broker = Broker::start();
    let t = topic("limits");
    let hg = Hookgate::start(&kafka_config(&broker, &t, ""));
    let c = client();

    // 413 from Content-Length, before the body is read.
    let r = raw_http(
        hg.addr,
        b"POST /hooks/github HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.contains("\"error\":\"body_too_large\""), "{r}");

    // 413 for a chunked body that grows past the limit.
    let big = vec![b'a'; 70 * 1024];
    let mut req = Vec::new();
    req.extend_from_slice(
        b"POST /hooks/github HTTP/1.1\r\nhost: x\r\nx-hub-signature-256: sha256=00\r\ntransfer-encoding: chunked\r\n\r\n",
    );
    req.extend_from_slice(format!("{:x}\r\n", big.len()).as_bytes());
    req.extend_from_slice(&big);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    let r = raw_http(hg.addr, &req);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");

    let resp = c
        .post(hg.url("/hooks/nope"))
        .body("{}")
        .send()
        .await
        .expect("an answer from hookgate");
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.expect("a JSON body");
    assert_eq!(v["error"], "unknown_source");

    let resp = c
        .get(hg.url("/hooks/github"))
        .send()
        .await
        .expect("an answer from hookgate");
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let v: Value = resp.json().await.expect("a JSON body");
    assert_eq!(v["error"], "method_not_allowed");

    let mut req = String::from("POST /hooks/github HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n");
    for i in 0..40 {
        req.push_str(&format!("x-filler-{i}: {i}\r\n"));
    }
    req.push_str("\r\n{}");
    let r = raw_http(hg.addr, req.as_bytes());
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");

    // A missing delivery id the provider always sends is a 400.
    let body = push_body(6);
    let mut req = c.post(hg.url("/hooks/github")).body(body.clone());
    for (k, v) in sign("github", GH_SECRET, &body, now()) {
        req = req.header(k, v);
    }
    let resp = req.send().await.expect("an answer from hookgate");
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.expect("a JSON body");
    assert_eq!(v["error"], "missing_delivery_id");

    // Health endpoints.
    assert_eq!(
        c.get(hg.url("/healthz"))
            .send()
            .await
            .expect("an answer from hookgate")
            .status(),
        200
    );
    assert_eq!(
        c.get(hg.url("/readyz"))
            .send()
            .await
            .expect("an answer from hookgate")
            .status(),
        200
    );
    let m = c
        .get(hg.url("/metrics"))
        .send()
        .await
        .expect("an answer from hookgate")
        .text()
        .await
        .expect("a text body");
    let line = m
        .lines()
        .find(|l| l.starts_with("hookgate_requests_total{source=\"github\",status=\"405\"}"))
        .unwrap_or("");
    assert!(line.ends_with(" 1"), "{line:?}");
    assert!(
        m.contains("hookgate_requests_total{source=\"github\",status=\"400\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_answers_503_with_retry_after_then_recovers() {
    let mut broker = Broker::start_persistent();
    let t = topic("outage");
    let hg = Hookgate::start(&kafka_config(&broker, &t, ""));
    let c = client();
    let mut acked = HashMap::new();
    let (s, v, _) = post_github(&c, &hg, "before", &push_body(7)).await;
    assert_eq!(s, 200, "{}", hg.log());
    acked.insert("before".to_owned(), ack_id(&v));

    broker.stop();
    let (s, v, retry) = post_github(&c, &hg, "during", &push_body(8)).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"], "log_unavailable");
    assert_eq!(retry.as_deref(), Some("2"));

    broker.restart();
    // The provider retries the same delivery; it must be accepted now (no stale dedupe key).
    let mut ok = false;
    let end = std::time::Instant::now() + Duration::from_secs(60);
    for _ in 0..120 {
        if std::time::Instant::now() > end {
            break;
        }
        let (s, v, _) = post_github(&c, &hg, "during", &push_body(8)).await;
        if s == 200 {
            assert_eq!(v["duplicate"], false);
            acked.insert("during".to_owned(), ack_id(&v));
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(ok, "not accepted after the broker returned: {}", hg.log());
    // No hookgate crash: one record each, the one the 2xx named (the 503'd attempt must not
    // show up beside the retry).
    reconcile(&broker, &t, &acked, Duplicates::Forbidden);
}

/// The `hookgate-id` a 2xx returned.
pub fn ack_id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a 2xx carries the event id: {v}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_without_a_spool_answers_503_after_the_delivery_timeout_then_recovers() {
    let broker = Broker::start();
    let t = topic("hung");
    // delivery_timeout = 3s, no [spool]: the only honest answer while the broker hangs is 503.
    let hg = Hookgate::start(&kafka_config(&broker, &t, ""));
    // A request parked past 15 s (5 x delivery_timeout) is a hang, not an answer.
    let c = client_with_timeout(Duration::from_secs(15));
    let mut acked = HashMap::new();
    let (s, v, _) = post_github(&c, &hg, "hung-before", &push_body(20)).await;
    assert_eq!(s, 200, "{v} {}", hg.log());
    acked.insert("hung-before".to_owned(), ack_id(&v));

    broker.pause();
    // Two clients, three requests each, while the broker is stopped.
    let hg_addr = harness::HookgateRef(hg.addr);
    let mut refused = Vec::new();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for n in 0..3 {
        let (a, b) = (format!("hung-a{n}"), format!("hung-b{n}"));
        let (body_a, body_b) = (push_body_for(&a), push_body_for(&b));
        let (ra, rb) = tokio::join!(
            post_github(&c, &hg_addr, &a, &body_a),
            post_github(&c, &hg_addr, &b, &body_b)
        );
        for (d, body, (s, v, retry)) in [(a, body_a, ra), (b, body_b, rb)] {
            *statuses.entry(s).or_default() += 1;
            if s == 503 {
                assert_eq!(v["error"], "log_unavailable", "{v}");
                assert!(retry.is_some(), "503 without Retry-After");
                refused.push((d, body));
            } else if s == 200 {
                acked.insert(d, ack_id(&v));
            }
        }
    }
    broker.resume();
    assert_eq!(
        statuses.get(&503).copied().unwrap_or(0),
        6,
        "every request to a hung broker answers 503 (0 = no answer within 15 s): {statuses:?}\n{}",
        hg.log()
    );

    // Recovers on its own: new events are acknowledged again, without a restart.
    let mut recovered = false;
    let end = std::time::Instant::now() + Duration::from_secs(60);
    for n in 0..120 {
        if std::time::Instant::now() > end {
            break;
        }
        let d = format!("hung-after-{n}");
        let (s, v, _) = post_github(&c, &hg, &d, &push_body_for(&d)).await;
        if s == 200 {
            acked.insert(d, ack_id(&v));
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        recovered,
        "no 2xx within ~60 s of the broker's return: {}",
        hg.log()
    );
    for n in 0..5 {
        let d = format!("hung-more-{n}");
        let (s, v, _) = post_github(&c, &hg, &d, &push_body_for(&d)).await;
        assert_eq!(s, 200, "{v}");
        acked.insert(d, ack_id(&v));
    }
    // The provider retries what was refused, with the same body. A refused attempt whose
    // message was in flight when it timed out can still reach the broker once it resumes:
    // the retry then reuses that attempt's hookgate-id, so a second record of the delivery
    // carries the same id (reconcile checks every record against the id the 2xx returned).
    for (d, body) in &refused {
        let (s, v, _) = post_github(&c, &hg, d, body).await;
        assert_eq!(s, 200, "retry of {d}: {v}");
        acked.insert(d.clone(), ack_id(&v));
    }
    let found = reconcile(&broker, &t, &acked, Duplicates::AllowedAfterFailedDelivery);
    assert!(
        found.duplicates <= refused.len(),
        "{} duplicate records from {} refused deliveries",
        found.duplicates,
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_acknowledged_event() {
    let broker = Broker::start();
    let t = topic("sigterm");
    let mut hg = Hookgate::start(&kafka_config(&broker, &t, "linger = \"5ms\""));
    let c = client();
    let url_hg = Arc::new(hg.url("/hooks/github"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (c, url, stop) = (c.clone(), url_hg.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 2000 {
                n += 1;
                let body = push_body(w * 100_000 + n);
                let delivery = format!("w{w}-{n}");
                let mut req = c
                    .post(url.as_str())
                    .header("x-github-event", "push")
                    .header("x-github-delivery", &delivery)
                    .header("content-type", "application/json")
                    .body(body.clone());
                for (k, v) in sign("github", GH_SECRET, &body, now()) {
                    req = req.header(k, v);
                }
                match req.send().await {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap_or(Value::Null);
                        acked.push((delivery, ack_id(&v)));
                    }
                    Ok(_) => {}
                    Err(_) => break, // the server closed: shutdown
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = hg.terminate(Duration::from_secs(60));
        (s, hg)
    })
    .await
    .expect("terminate");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        status.0.success(),
        "exit status {:?}: {}",
        status.0,
        status.1.log()
    );
    let mut acked = HashMap::new();
    for t in tasks {
        acked.extend(t.await.expect("a load task panicked"));
    }
    assert!(!acked.is_empty(), "load produced no acknowledged events");
    // A graceful stop is no crash: every acknowledged event once.
    reconcile(&broker, &t, &acked, Duplicates::Forbidden);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_served() {
    let broker = Broker::start();
    let t = topic("h2c");
    let hg = Hookgate::start(&kafka_config(&broker, &t, ""));
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(harness::CLIENT_TIMEOUT)
        .build()
        .expect("h2c client");
    let body = push_body(9);
    let (s, v, _) = post_github(&c, &hg, "h2", &body).await;
    assert_eq!(s, 200, "{v}");
}

/// The first line `child` prints on stdout, waiting at most `within`.
fn first_line(child: &mut std::process::Child, within: Duration) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("nothing printed on stdout within {within:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_serves_without_config_and_spool_read_prints_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = harness::free_port();
    let mut child = harness::KillOnDrop(
        std::process::Command::new(harness::hookgate_bin())
            .current_dir(dir.path())
            .arg("serve")
            .env("HOOKGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn hookgate"),
    );
    let line = first_line(&mut child.0, Duration::from_secs(60));
    assert!(line.starts_with("listening on"), "{line}");

    // The README's example: sign with the development secret, post with curl-like headers.
    let body = push_body(10);
    let c = client();
    let mut req = c
        .post(format!("http://127.0.0.1:{port}/hooks/github"))
        .header("x-github-event", "push")
        .header("x-github-delivery", "readme-1")
        .header("content-type", "application/json")
        .body(body.clone());
    for (k, v) in sign("github", "dev-github-secret", &body, now()) {
        req = req.header(k, v);
    }
    let resp = req
        .send()
        .await
        .expect("an answer from the embedded default");
    assert_eq!(resp.status(), 200);
    let out = harness::run(
        std::process::Command::new(harness::hookgate_bin())
            .current_dir(dir.path())
            .args(["spool", "read"]),
        COMMAND_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let first: Value = serde_json::from_str(text.lines().next().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("spool read printed no JSON line ({e}): {text}"));
    assert_eq!(first["delivery_id"], "readme-1");
    assert_eq!(first["body"].as_str().map(str::as_bytes), Some(&body[..]));
}

#[test]
fn check_accepts_the_examples_and_reports_every_problem_with_its_location() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut n = 0;
    for e in std::fs::read_dir(&examples).expect("deploy/examples") {
        let p = e.expect("dir entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("toml") {
            continue;
        }
        n += 1;
        let out = harness::run(
            std::process::Command::new(harness::hookgate_bin())
                .args(["check", "--config"])
                .arg(&p)
                .env("KAFKA_BROKERS", "127.0.0.1:9092")
                .env("GITHUB_SECRET", "x")
                .env("STRIPE_SECRET", "whsec_x")
                .env("TELEGRAM_BOT_TOKEN", "1:x")
                .env("TELEGRAM_SECRET", "tg-secret")
                .env("TELEGRAM_CHAT_ID", "777")
                .env("TELEGRAM_GROUP_CHAT_ID", "-1001")
                .env("LLM_API_KEY", "sk-x")
                .env("SHOPIFY_SECRET", "shop-secret")
                .env("WOOCOMMERCE_SECRET", "woo-secret")
                .env("SHOP_OWNER_CHAT_ID", "-1002"),
            COMMAND_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(n >= 5, "examples found: {n}");

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nope\"\n\n[[sources]]\nname = \"a\"\nprovider = \"martian\"\nsecrets = [\"s\"]\n\n[[sources]]\nname = \"b\"\nprovider = \"github\"\n",
    )
    .expect("write bad.toml");
    let out = harness::run(
        std::process::Command::new(harness::hookgate_bin())
            .args(["check", "--config"])
            .arg(&bad),
        COMMAND_TIMEOUT,
    );
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.toml:1 [server]"), "{text}");
    assert!(
        text.contains("bad.toml:4 [sources][0]") && text.contains("martian"),
        "{text}"
    );
    assert!(text.contains("bad.toml:9 [sources][1]"), "{text}");
    assert!(text.contains("3 problem(s)"), "{text}");
}

/// Runs `hookgate sign` and parses the `Name: value` lines it prints.
fn cli_sign(provider: &str, secret: &str, body: &[u8]) -> Vec<(String, String)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("body");
    std::fs::write(&file, body).expect("write body");
    let out = harness::run(
        std::process::Command::new(harness::hookgate_bin())
            .args(["sign", "--provider", provider, "--secret", secret, "--body"])
            .arg(&file),
        COMMAND_TIMEOUT,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hookgate sign --provider {provider}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("not a `Name: value` header line: {l:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert!(!headers.is_empty(), "hookgate sign printed nothing");
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_prints_headers_that_verify() {
    // Judged by a running hookgate's verifier, not by the function the CLI itself calls.
    let dir = tempfile::tempdir().expect("tempdir");
    let hg = Hookgate::start_in(
        dir.path(),
        &format!(
            "[server]\nlisten = \"{{listen}}\"\n\n[spool]\npath = \"{{dir}}/spool\"\n\n\
             [[sources]]\nname = \"stripe\"\nprovider = \"stripe\"\nsecrets = [\"{STRIPE_SECRET}\"]\n\n\
             [[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets = [\"{GH_SECRET}\"]\n"
        ),
        &[],
    );
    let c = client();
    let stripe_body = br#"{"id":"evt_cli_1","type":"charge.succeeded"}"#.to_vec();
    let gh_body = push_body(30);
    // (provider, secret, body, headers the provider sends beside the signature)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, Vec<(&'a str, &'a str)>);
    let cases: [Case; 2] = [
        ("stripe", STRIPE_SECRET, stripe_body, vec![]),
        (
            "github",
            GH_SECRET,
            gh_body,
            vec![("x-github-event", "push"), ("x-github-delivery", "cli-1")],
        ),
    ];
    for (provider, secret, body, extra) in cases {
        let printed = cli_sign(provider, secret, &body);
        let send = |body: Vec<u8>| {
            let mut req = c
                .post(hg.url(&format!("/hooks/{provider}")))
                .header("content-type", "application/json")
                .body(body);
            for (k, v) in printed
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(extra.iter().copied())
            {
                req = req.header(k, v);
            }
            req.send()
        };
        let resp = send(body.clone()).await.expect("an answer");
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status, 200,
            "{provider}: headers {printed:?} did not verify: {v}"
        );
        assert_eq!(v["duplicate"], false, "{v}");

        let mut tampered = body.clone();
        tampered.extend_from_slice(b" ");
        let resp = send(tampered).await.expect("an answer");
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 401, "{provider}: a tampered body passed: {v}");
        assert_eq!(v["error"], "signature_invalid", "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topics_stop_the_start_with_a_clear_error_unless_created() {
    let broker = Broker::start();
    let t = topic("missing");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = kafka_config(&broker, &t, "")
        .replace("create_topics = true", "create_topics = false")
        .replace("{listen}", &format!("127.0.0.1:{}", harness::free_port()));
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &cfg).expect("write config");
    // A hookgate that starts anyway would serve forever: bounded, and a failure then.
    let out = harness::run(
        std::process::Command::new(harness::hookgate_bin())
            .args(["serve", "--config"])
            .arg(&path),
        COMMAND_TIMEOUT,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kafka topics missing") && err.contains(&t),
        "{err}"
    );
    assert!(err.contains("create_topics"), "{err}");

    broker.create_topic(&t, 2).await;
    let hg = Hookgate::start(
        &kafka_config(&broker, &t, "").replace("create_topics = true", "create_topics = false"),
    );
    let (s, v, _) = post_github(&client(), &hg, "after-create", &push_body(11)).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_time_out_408_and_over_capacity_answers_503_overloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hg = Hookgate::start_in(
        dir.path(),
        r#"
[server]
listen = "{listen}"
body_timeout = "1500ms"
max_concurrency = 1
# One client holds the only slot: its second request must meet the global cap (503),
# not its own share (429).
max_in_flight_per_client = 2

[spool]
path = "{dir}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]
"#,
        &[],
    );
    // Holds the only permit: headers promise 100 bytes, 10 arrive.
    let mut slow = TcpStream::connect(hg.addr).expect("connect to hookgate");
    slow.write_all(
        b"POST /hooks/github HTTP/1.1\r\nhost: x\r\nx-hub-signature-256: sha256=00\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, v, retry) = post_github(&client(), &hg, "while-busy", &push_body(12)).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"], "overloaded");
    assert_eq!(retry.as_deref(), Some("1"));

    let r = tokio::task::spawn_blocking(move || {
        slow.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = vec![0u8; 2048];
        let n = slow.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(r.contains("body_timeout"), "{r}");
    // The permit is back.
    let (s, _, _) = post_github(&client(), &hg, "after", &push_body(13)).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_while_the_broker_acks_still_gets_its_event_written_once() {
    let broker = Broker::start();
    let t = topic("hangup");
    let hg = Hookgate::start(&kafka_config(&broker, &t, ""));
    // Warm the producer up so the append below is purely waiting on the broker.
    let (s, _, _) = post_github(&client(), &hg, "warm", &push_body(15)).await;
    assert_eq!(s, 200);
    let body = push_body(14);
    let mut req = format!(
        "POST /hooks/github HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-github-event: push\r\nx-github-delivery: hangup-1\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in sign("github", GH_SECRET, &body, now()) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(&body);
    // A hung broker: the append is under way and waiting for its ack when the client leaves.
    broker.pause();
    let addr = hg.addr;
    tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect to hookgate");
        s.write_all(&bytes).expect("write the request");
        std::thread::sleep(Duration::from_millis(700));
        // Dropped here: the client hangs up without an answer.
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.resume();
    let recs = read_topic(&broker.bootstrap(), &t, 2, Duration::from_secs(20));
    let ids: Vec<String> = recs
        .iter()
        .filter_map(|r| r.header("hookgate-delivery-id"))
        .collect();
    assert!(
        ids.contains(&"hangup-1".to_string()),
        "{ids:?}\n{}",
        hg.log()
    );
    // The provider retries: recognised, not produced again.
    let (s, v, _) = post_github(&client(), &hg, "hangup-1", &body).await;
    assert_eq!(s, 200);
    assert_eq!(v["duplicate"], true, "{v}");
    let again = read_topic(&broker.bootstrap(), &t, 2, Duration::from_secs(5));
    assert_eq!(again.len(), 2, "warm + hangup-1 only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hg = Hookgate::start_in(
        dir.path(),
        "[server]\nlisten = \"{listen}\"\nheader_timeout = \"1s\"\n\n[spool]\npath = \"{dir}/spool\"\n\n[[sources]]\nname = \"github\"\nprovider = \"github\"\nsecrets = [\"gh-secret\"]\n",
        &[],
    );
    let addr = hg.addr;
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect to hookgate");
        s.write_all(b"POST /hooks/github HTTP/1.1\r\nhost: x\r\n")
            .unwrap();
        // Generous bound: only checks that the server does close it (hyper's timer is set).
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    })
    .await
    .unwrap();
    let text = closed.expect("the server kept a header-less connection open");
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// The harness's bound on commands works: a command that does not exit fails the test.
#[test]
#[should_panic(expected = "did not exit within")]
fn a_command_that_does_not_exit_fails_the_test_instead_of_hanging() {
    harness::run(
        std::process::Command::new("sleep").arg("30"),
        Duration::from_millis(300),
    );
}
