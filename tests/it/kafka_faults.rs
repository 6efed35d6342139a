//! Kafka faults against the real binary and a real broker (issue 12): a paused broker must
//! not wedge the producer, spilling must not write an event twice, a deleted topic must not
//! block the other topics, appends that outlive their request stay bounded, and options
//! that weaken durability are refused. Every check counts records per delivery id and
//! compares each record's `hookgate-id` with the one the 2xx returned.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::harness::{
    client, metric, now, reconcile, sign, spill_config, topic, Broker, Duplicates, Hookgate,
    HookgateRef, Target,
};
use crate::ingest::push_body_for;

/// The `github` source's secret in `harness::spill_config`.
const SECRET: &str = "gh-secret";

/// One answered request.
struct Sent {
    delivery: String,
    status: u16,
    id: Option<String>,
    /// When the answer came, from the load's start.
    at: Duration,
}

async fn post(
    c: &reqwest::Client,
    hg: &impl Target,
    source: &str,
    delivery: &str,
) -> (u16, Option<String>) {
    let body = push_body_for(delivery);
    let mut req = c
        .post(hg.url(&format!("/hooks/{source}")))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .body(body.clone());
    for (k, v) in sign("github", SECRET, &body, now()) {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            (status, v["id"].as_str().map(str::to_owned))
        }
        Err(_) => (0, None),
    }
}

/// `workers` clients send new deliveries until `stop`.
fn load(
    hg: &Hookgate,
    workers: usize,
    prefix: &str,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Sent>>> {
    let start = Instant::now();
    (0..workers)
        .map(|w| {
            let (c, stop, prefix, addr) = (client(), stop.clone(), prefix.to_owned(), hg.addr);
            tokio::spawn(async move {
                let mut out = Vec::new();
                for n in 0..1_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let delivery = format!("{prefix}-{w}-{n}");
                    let (status, id) = post(&c, &HookgateRef(addr), "github", &delivery).await;
                    out.push(Sent {
                        delivery,
                        status,
                        id,
                        at: start.elapsed(),
                    });
                    if status != 200 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                out
            })
        })
        .collect()
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Vec<Sent>>>) -> Vec<Sent> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    all
}

fn acked(sent: &[Sent]) -> HashMap<String, String> {
    sent.iter()
        .filter(|s| s.status == 200)
        .filter_map(|s| Some((s.delivery.clone(), s.id.clone()?)))
        .collect()
}

async fn readyz(hg: &Hookgate) -> String {
    let c = client();
    match c.get(hg.url("/readyz")).send().await {
        Ok(r) => r.json::<serde_json::Value>().await.unwrap_or_default()["status"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        Err(_) => String::new(),
    }
}

/// Waits (bounded) until `/readyz` says `ok`: Kafka takes writes and the spool is drained.
async fn wait_ok(hg: &Hookgate, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if readyz(hg).await == "ok" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// The operator's sequence from issue 12: `ack = "kafka"` with a spool, 8 clients sending,
/// the broker stopped for 10 s (SIGSTOP) and resumed — twice. Messages in flight time out,
/// librdkafka bumps its producer epoch and Tansu fences the producer: hookgate must replace
/// it by itself, drain the spool, and lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_paused_10s_twice_heals_the_producer_and_loses_nothing() {
    let broker = Broker::start();
    let t = topic("pause2");
    let hg = Hookgate::start(&spill_config(
        &broker,
        &t,
        "spill_after = \"1s\"\ndelivery_timeout = \"3s\"\nreplace_producer_after = \"6s\"",
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&hg, 8, "p2", stop.clone());
    let begin = Instant::now();
    let mut paused = Vec::new();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..2 {
        let from = begin.elapsed();
        broker.pause();
        tokio::time::sleep(Duration::from_secs(10)).await;
        broker.resume();
        paused.push((from, begin.elapsed()));
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = collect(tasks).await;
    let drained = wait_ok(&hg, Duration::from_secs(90)).await;
    let replaced = metric(&hg, "hookgate_kafka_producer_replaced_total").await;
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for s in &sent {
        *statuses.entry(s.status).or_default() += 1;
    }
    let during_pause = sent
        .iter()
        .filter(|s| s.status == 200 && paused.iter().any(|(a, b)| s.at > *a && s.at < *b))
        .count();
    assert!(
        drained,
        "the spool did not drain after the broker came back (readyz: {}); statuses {statuses:?}",
        readyz(&hg).await
    );
    // After healing, a new event goes straight to Kafka again.
    let (s, id) = post(&client(), &hg, "github", "p2-after").await;
    assert_eq!(s, 200);
    let mut want = acked(&sent);
    want.insert("p2-after".into(), id.expect("id"));
    let found = reconcile(&broker, &t, &want, Duplicates::AllowedAfterFailedDelivery);
    let failed_delivery = metric(&hg, "hookgate_kafka_maybe_written_total").await;
    eprintln!(
        "paused twice: statuses {statuses:?}, {during_pause} acked during the pauses, producer replaced {replaced} times, {failed_delivery} failed deliveries that may have been written, {} duplicate records",
        found.duplicates
    );
    assert!(
        found.duplicates as f64 <= failed_delivery,
        "more duplicate records ({}) than failed deliveries that may have been written ({failed_delivery})",
        found.duplicates
    );
    assert!(
        during_pause > 0,
        "nothing was acknowledged while the broker was paused: {statuses:?}"
    );
    assert_eq!(
        statuses.get(&0),
        None,
        "requests hung past the client timeout: {statuses:?}"
    );
}

/// Spilling and Kafka delivery exclude each other: with a pause shorter than
/// `delivery_timeout`, messages handed to librdkafka are delivered after the pause, new ones
/// spill at admission, and no event is written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_shorter_than_delivery_timeout_spills_without_writing_twice() {
    let broker = Broker::start();
    let t = topic("spill1");
    let hg = Hookgate::start(&spill_config(
        &broker,
        &t,
        "spill_after = \"1s\"\ndelivery_timeout = \"25s\"",
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&hg, 8, "s1", stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.pause();
    tokio::time::sleep(Duration::from_secs(6)).await;
    broker.resume();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = collect(tasks).await;
    assert!(
        wait_ok(&hg, Duration::from_secs(60)).await,
        "spool did not drain"
    );
    let spilled = metric(&hg, "hookgate_spill_total").await;
    let want = acked(&sent);
    eprintln!("short pause: {} acked, {spilled} spilled", want.len());
    assert!(spilled > 0.0, "nothing was spilled during a 6 s pause");
    reconcile(&broker, &t, &want, Duplicates::Forbidden);
}

/// Refused for good, with the request path (`ack = "kafka"`) and with the forwarder
/// (`ack = "spool"`): Kafka answers TOPIC_AUTHORIZATION_FAILED to the first produce
/// requests. Those events go to the quarantine (2xx, durable), the events after them flow
/// (nothing waits behind a refused record), `/readyz` says degraded, and `hookgate
/// quarantine replay` delivers them once Kafka takes them, keeping their `hookgate-id`.
///
/// The broker is librdkafka's mock cluster (real Kafka protocol over TCP, in this test
/// process), because it can inject produce errors; Tansu 0.6 has no authorization, and it
/// acknowledges produce requests to a topic deleted while hookgate runs (seen here: after
/// DeleteTopics its metadata no longer lists the topic, yet every later produce to it got
/// an ack), so a deleted topic cannot be shown against it.
fn quarantine_list(hg: &Hookgate) -> Vec<serde_json::Value> {
    let out = hg.cli(&["quarantine", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn refused_records_are_quarantined_and_replayed(ack: &str) {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = MockCluster::new(1).expect("mock cluster");
    let t = topic(&format!("refused-{ack}"));
    mock.create_topic(&t, 1, 1).expect("mock topic");
    let hg = Hookgate::start(&format!(
        r#"
[server]
listen = "{{listen}}"

[kafka]
brokers = "{boot}"
ack = "{ack}"
spill_after = "5s"
delivery_timeout = "5s"

[spool]
path = "{{dir}}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["{SECRET}"]
topic = "{t}"
"#,
        boot = mock.bootstrap_servers()
    ));
    let c = client();
    let (s, _) = post(&c, &hg, "github", "r-warm").await;
    assert_eq!(s, 200);
    // Give the forwarder time to send the warm-up event before errors are armed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 3],
    );
    let mut acked = HashMap::new();
    for n in 0..3 {
        let d = format!("r-{n}");
        let (s, id) = post(&c, &hg, "github", &d).await;
        assert_eq!(s, 200, "{d} was not taken");
        acked.insert(d, id.expect("id"));
    }
    // Bounded wait for the quarantine to hold what was refused, then a settle time.
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end && quarantine_list(&hg).is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let listed = quarantine_list(&hg);
    let refused: Vec<&str> = listed
        .iter()
        .filter_map(|v| v["delivery_id"].as_str())
        .collect();
    assert_eq!(
        refused.len(),
        3,
        "every refused event is quarantined: {listed:?}"
    );
    for v in &listed {
        assert_eq!(v["reason"], "not_authorized", "{v}");
        assert_eq!(v["topic"], t.as_str(), "{v}");
        let d = v["delivery_id"].as_str().unwrap_or("");
        assert_eq!(v["id"].as_str(), acked.get(d).map(String::as_str), "{v}");
    }
    assert_eq!(readyz(&hg).await, "degraded");
    assert!(metric(&hg, "hookgate_quarantined_total").await >= 3.0);
    // Kafka takes records again: the events after the refused ones flow, nothing waits
    // behind the quarantined records.
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    let mut flowed = HashMap::new();
    for n in 0..10 {
        let d = format!("f-{n}");
        let (s, id) = post(&c, &hg, "github", &d).await;
        assert_eq!(s, 200, "{d} was not taken");
        flowed.insert(d, id.expect("id"));
    }
    let recs =
        crate::harness::read_topic(&mock.bootstrap_servers(), &t, 11, Duration::from_secs(30));
    for (d, id) in &flowed {
        let ids: Vec<String> = recs
            .iter()
            .filter(|r| r.header("hookgate-delivery-id").as_deref() == Some(d))
            .filter_map(|r| r.header("hookgate-id"))
            .collect();
        assert_eq!(ids, vec![id.clone()], "{d} should be in Kafka once");
    }
    assert_eq!(
        quarantine_list(&hg).len(),
        3,
        "events after the refused ones were quarantined"
    );
    // Replay: delivered with their ids, removed from the quarantine.
    let out = hg.cli(&["quarantine", "replay"]);
    assert!(
        out.status.success(),
        "replay failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = hg.cli(&["quarantine", "list"]);
    assert!(
        out.stdout.is_empty(),
        "left after replay: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let recs =
        crate::harness::read_topic(&mock.bootstrap_servers(), &t, 14, Duration::from_secs(30));
    for v in &listed {
        let d = v["delivery_id"].as_str().unwrap_or("");
        let ids: Vec<String> = recs
            .iter()
            .filter(|r| r.header("hookgate-delivery-id").as_deref() == Some(d))
            .filter_map(|r| r.header("hookgate-id"))
            .collect();
        assert_eq!(
            ids,
            vec![v["id"].as_str().unwrap_or("").to_owned()],
            "{d} after replay"
        );
    }
    assert!(
        wait_ok(&hg, Duration::from_secs(20)).await,
        "readyz stays degraded after the quarantine emptied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_on_the_request_path_is_quarantined_and_replayed() {
    refused_records_are_quarantined_and_replayed("kafka").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_in_the_forwarder_is_quarantined_and_the_spool_moves_on() {
    refused_records_are_quarantined_and_replayed("spool").await;
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Broker stopped, 1,500 clients send 200 KB bodies and hang up after 0.3 s: appends that
/// outlive their request keep their admission permit, so at most `max_concurrency` bodies
/// are held. Peak RSS stays within baseline + max_concurrency x max_body x 4 (the body,
/// librdkafka's copy, its compressed batch, slack), and hookgate serves once the broker is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_up_requests_during_a_stall_keep_memory_bounded() {
    let broker = Broker::start();
    let t = topic("mem");
    let max_concurrency = 128u64;
    let max_body = 256u64 << 10;
    let hg = Hookgate::start(&format!(
        r#"
[server]
listen = "{{listen}}"
max_body_bytes = {max_body}
max_concurrency = {max_concurrency}

[kafka]
brokers = "{boot}"
create_topics = true
delivery_timeout = "20s"

[dedupe]
capacity = 10000

[[sources]]
name = "github"
provider = "github"
secrets = ["{SECRET}"]
topic = "{t}"
"#,
        boot = broker.bootstrap()
    ));
    let c = client();
    assert_eq!(post(&c, &hg, "github", "m-warm").await.0, 200);
    let pid = hg.pid().expect("pid");
    let base = vm_hwm_kib(pid);
    broker.pause();
    let body = vec![b'x'; 200 << 10];
    let mut tasks = Vec::new();
    for n in 0..1500 {
        let (addr, body) = (hg.addr, body.clone());
        tasks.push(tokio::spawn(async move {
            let delivery = format!("m-{n}");
            let mut head = format!(
                "POST /hooks/github HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-github-event: push\r\nx-github-delivery: {delivery}\r\ncontent-length: {}\r\n",
                body.len()
            );
            for (k, v) in sign("github", SECRET, &body, now()) {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return };
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(s);
        }));
        if n % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = vm_hwm_kib(pid);
    broker.resume();
    let bound = base + max_concurrency * max_body * 4 / 1024;
    eprintln!("memory: baseline VmHWM {base} KiB, peak {peak} KiB, bound {bound} KiB");
    assert!(
        peak <= bound,
        "peak RSS {peak} KiB over the bound {bound} KiB (baseline {base} KiB)"
    );
    // Serves normally once the broker is back (bounded wait for the stalled appends to end).
    let end = Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    while Instant::now() < end {
        last = post(&c, &hg, "github", &format!("m-after-{}", ulid::Ulid::new()))
            .await
            .0;
        if last == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        last, 200,
        "hookgate did not serve after the broker came back"
    );
}

/// Options that would weaken "2xx means durable" are config errors naming the option,
/// unless the loud opt-out is set; a producer `message.max.bytes` below the body limit is one too.
#[test]
fn options_that_weaken_durability_are_refused_by_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, kafka: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "[kafka]\nbrokers = \"127.0.0.1:1\"\n{kafka}\n[[sources]]\nname = \"gh\"\nprovider = \"github\"\nsecrets = [\"s\"]\n"
            ),
        )
        .expect("write");
        p
    };
    let check = |p: &std::path::Path| {
        let out = std::process::Command::new(crate::harness::hookgate_bin())
            .args(["check", "--config"])
            .arg(p)
            .output()
            .expect("hookgate check");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let bad = write("bad.toml", "[kafka.options]\nacks = \"1\"\n\"enable.idempotence\" = \"false\"\n\"message.max.bytes\" = \"1000\"");
    let (ok, text) = check(&bad);
    assert!(!ok, "{text}");
    for needle in [
        "acks",
        "enable.idempotence",
        "message.max.bytes",
        "allow_unsafe_options",
    ] {
        assert!(text.contains(needle), "`{needle}` not named: {text}");
    }
    let forced = write(
        "forced.toml",
        "allow_unsafe_options = true\n[kafka.options]\nacks = \"1\"",
    );
    let (ok, text) = check(&forced);
    assert!(ok, "{text}");
    assert!(
        text.contains("acks") && text.contains("durable"),
        "no warning: {text}"
    );
    let fine = write(
        "fine.toml",
        "[kafka.options]\nacks = \"all\"\n\"compression.codec\" = \"zstd\"",
    );
    let (ok, text) = check(&fine);
    assert!(ok, "{text}");
}
