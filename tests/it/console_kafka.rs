//! The console with Kafka as the only log (issue 17 follow-up), against a real broker:
//! `GET /api/v1/events/{id}` reads the body back from the record the producer's delivery
//! report pointed at; after a restart the index is refilled from the topic's tail; and a
//! record at that offset that is another event is never shown as this one.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use crate::console::{post_github, Admin, GH_SECRET, TOKEN};
use crate::fakes::FakeTelegram;
use crate::harness::{free_port, metric_in, topic, Broker, Hookgate};

const WAIT: Duration = Duration::from_secs(30);

/// `[kafka]` only (no spool), the console on, one github source on `topic`.
fn kafka_config(admin_port: u16, broker: &Broker, topic: &str, create: bool) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[kafka]
brokers = "{boot}"
create_topics = {create}
delivery_timeout = "5s"

[[sources]]
name = "github"
provider = "github"
secrets = ["{GH_SECRET}"]
topic = "{topic}"
keep_headers = ["x-request-note"]
"#,
        boot = broker.bootstrap()
    )
}

async fn start(broker: &Broker, topic: &str, create: bool) -> Admin {
    let port = free_port();
    let a = Admin {
        hg: Hookgate::start(&kafka_config(port, broker, topic, create)),
        port,
    };
    a.wait_up().await;
    a
}

fn body_json(ev: &Value) -> Value {
    let text = ev["body"]
        .as_str()
        .unwrap_or_else(|| panic!("no body: {ev}"));
    serde_json::from_str(text).expect("json body")
}

/// Waits until the events list holds `n` events; returns them.
async fn listed(a: &Admin, n: usize) -> Vec<Value> {
    let end = Instant::now() + WAIT;
    loop {
        let (s, v) = a.get("/api/v1/events", Some(TOKEN)).await;
        assert_eq!(s, 200, "{v}");
        let list = v["events"].as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        assert!(
            Instant::now() < end,
            "{n} events expected: {v}\n{}",
            a.hg.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kafka_only_the_body_is_read_back_and_the_index_survives_a_restart() {
    let broker = Broker::start();
    let topic = topic("console-kafka");
    let mut a = start(&broker, &topic, true).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        let body = format!(r#"{{"ref":"refs/heads/k{i}","n":{i}}}"#);
        let (s, v) = post_github(
            &a.hg,
            &format!("kafka-{i}"),
            body.as_bytes(),
            &[
                ("x-request-note", "visible-note"),
                ("authorization", "Bearer upstream-cred-9"),
            ],
        )
        .await;
        assert_eq!(s, 200, "{v}");
        sent.push((v["id"].as_str().expect("id").to_owned(), body));
    }
    for (id, body) in &sent {
        let (s, ev) = a.get(&format!("/api/v1/events/{id}"), Some(TOKEN)).await;
        assert_eq!(s, 200, "{ev}");
        assert_eq!(ev["stored_at"]["log"], "kafka", "{ev}");
        assert_eq!(ev["headers_from"], "memory (as received)");
        assert_eq!(body_json(&ev), serde_json::from_str::<Value>(body).unwrap());
        assert!(!ev.to_string().contains("upstream-cred-9"), "{ev}");
    }

    // After a restart the index is refilled from the topic's tail, in the background.
    a.hg.restart();
    a.wait_up().await;
    let list = listed(&a, 3).await;
    let ids: Vec<&str> = list.iter().filter_map(|e| e["id"].as_str()).collect();
    // Newest first.
    let want: Vec<&str> = sent.iter().rev().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, want, "{list:?}");
    assert_eq!(list[0]["delivery_id"], "kafka-2");
    for (id, body) in &sent {
        let (s, ev) = a.get(&format!("/api/v1/events/{id}"), Some(TOKEN)).await;
        assert_eq!(s, 200, "{ev}");
        assert_eq!(ev["stored_at"]["log"], "kafka", "{ev}");
        assert_eq!(ev["headers_from"], "log (kept headers only)");
        assert_eq!(body_json(&ev), serde_json::from_str::<Value>(body).unwrap());
        let headers = ev["headers"].to_string();
        assert!(headers.contains("visible-note"), "{ev}");
        assert!(!ev.to_string().contains("upstream-cred-9"), "{ev}");
    }
    // With Kafka alone, an id that is not indexed is looked for where its time points:
    // one from 2016 is not there.
    let (s, v) = a
        .get("/api/v1/events/01ARZ3NDEKTSV4RRFFQ69G5FAV", Some(TOKEN))
        .await;
    assert_eq!((s, v["error"].as_str()), (404, Some("event_not_found")));
}

/// An event the bounded index no longer holds is found in Kafka by the time in its id
/// (offsets-for-times, then a bounded read); an id whose time points elsewhere is a 404
/// that says how far the search went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_no_longer_indexed_is_found_in_kafka_by_its_ids_time() {
    let broker = Broker::start();
    let topic = topic("console-kafka-find");
    let port = free_port();
    let config = kafka_config(port, &broker, &topic, true).replace(
        &format!("token = \"{TOKEN}\""),
        &format!("token = \"{TOKEN}\"\nconsole_events = 2"),
    );
    let a = Admin {
        hg: Hookgate::start(&config),
        port,
    };
    a.wait_up().await;
    let mut sent = Vec::new();
    for i in 0..6 {
        let body = format!(r#"{{"ref":"refs/heads/f{i}","n":{i}}}"#);
        let (s, v) = post_github(&a.hg, &format!("find-{i}"), body.as_bytes(), &[]).await;
        assert_eq!(s, 200, "{v}");
        sent.push((v["id"].as_str().expect("id").to_owned(), body));
    }
    let (_, v) = a.get("/api/v1/events", Some(TOKEN)).await;
    let listed: Vec<&str> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(listed, [sent[5].0.as_str(), sent[4].0.as_str()], "{v}");
    // The oldest two, not indexed: read from Kafka, where they were produced.
    for (id, body) in &sent[..2] {
        let (s, ev) = a.get(&format!("/api/v1/events/{id}"), Some(TOKEN)).await;
        assert_eq!(s, 200, "{ev}");
        assert_eq!(ev["id"], id.as_str(), "{ev}");
        assert_eq!(ev["stored_at"]["log"], "kafka", "{ev}");
        assert_eq!(ev["headers_from"], "log (kept headers only)", "{ev}");
        assert_eq!(body_json(&ev), serde_json::from_str::<Value>(body).unwrap());
    }
    // An id of now that no event has: the window after its time is read, and the answer
    // says what was searched.
    let absent = ulid::Ulid::new().to_string();
    let (s, v) = a
        .get(&format!("/api/v1/events/{absent}"), Some(TOKEN))
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (404, Some("event_not_found")),
        "{v}"
    );
    let msg = v["message"].as_str().unwrap_or("");
    // create_topics makes 3 partitions.
    assert!(msg.contains("searched 3 partition(s)"), "{v}");
    assert!(msg.contains("60s after the time in the id"), "{v}");
    // Tansu answers offsets-for-times: no fallback to reading from the earliest offset.
    assert!(!msg.contains("could not seek by time"), "{v}");
    // An id from long ago: nothing at that time; the search ends at once (the first
    // record read is past the window).
    let old = ulid::Ulid::from_parts(1_000_000_000_000, 42).to_string();
    let (s, v) = a.get(&format!("/api/v1/events/{old}"), Some(TOKEN)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (404, Some("event_not_found")),
        "{v}"
    );
    let msg = v["message"].as_str().unwrap_or("");
    assert!(!msg.contains("stopped after"), "{v}");
    // At most the first record of each partition was read.
    let records: u64 = msg
        .split(" record(s)")
        .next()
        .and_then(|m| m.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(records <= 3, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_event_at_the_recorded_offset_is_not_shown_as_this_one() {
    let mut broker = Broker::start();
    let topic = topic("console-kafka-other");
    broker.create_topic(&topic, 1).await;
    let a = start(&broker, &topic, false).await;
    let body = br#"{"ref":"refs/heads/mine"}"#;
    let (s, v) = post_github(&a.hg, "mine-1", body, &[]).await;
    assert_eq!(s, 200, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    let (_, ev) = a.get(&format!("/api/v1/events/{id}"), Some(TOKEN)).await;
    assert_eq!(ev["stored_at"]["offset"], 0, "{ev}");
    assert_eq!(
        body_json(&ev),
        serde_json::from_slice::<Value>(body).unwrap()
    );

    // The broker loses its data (in-memory storage); offset 0 now holds another event.
    broker.restart();
    broker.create_topic(&topic, 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("producer");
    let other = ulid::Ulid::new().to_string();
    producer
        .send(
            FutureRecord::to(&topic)
                .key("k")
                .payload(r#"{"ref":"refs/heads/someone-else"}"#)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "hookgate-id",
                    value: Some(other.as_str()),
                })),
            Duration::from_secs(10),
        )
        .await
        .expect("produce the other record");
    let (s, ev) = a.get(&format!("/api/v1/events/{id}"), Some(TOKEN)).await;
    assert_eq!(s, 200, "{ev}");
    assert_eq!(ev["body"], Value::Null, "{ev}");
    assert!(!ev.to_string().contains("someone-else"), "{ev}");
    let why = ev["body_unavailable"].as_str().unwrap_or("");
    assert!(why.contains("hookgate-id differs"), "{ev}");
}

/// Posts a signed github push to source `source`; returns (status, hookgate-id).
async fn post_to(a: &Admin, source: &str, delivery: &str) -> (u16, String) {
    let body = format!(r#"{{"ref":"refs/heads/{delivery}"}}"#);
    let mut req = crate::console::client()
        .post(a.hg.url(&format!("/hooks/{source}")))
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("content-type", "application/json")
        .body(body.clone());
    for (k, v) in crate::harness::sign("github", GH_SECRET, body.as_bytes(), crate::harness::now())
    {
        req = req.header(k, v);
    }
    let r = req.send().await.expect("post");
    let s = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    (s, v["id"].as_str().unwrap_or("").to_owned())
}

async fn quarantined(a: &Admin, n: usize) -> Vec<Value> {
    let end = Instant::now() + WAIT;
    loop {
        let (s, v) = a.get("/api/v1/quarantine", Some(TOKEN)).await;
        assert_eq!(s, 200, "{v}");
        let list = v["quarantine"].as_array().cloned().unwrap_or_default();
        if list.len() == n {
            return list;
        }
        assert!(Instant::now() < end, "{n} quarantined expected: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn quarantine_replay_done(a: &Admin) -> Value {
    let end = Instant::now() + WAIT;
    loop {
        let (s, j) = a.get("/api/v1/quarantine/replay", Some(TOKEN)).await;
        assert_eq!(s, 200, "{j}");
        if j["state"] != "running" {
            return j;
        }
        assert!(Instant::now() < end, "replay still running: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The quarantine endpoints: list, a replay filtered by `source` (the old `sink` field and
/// unknown fields are refused with a 400 that says what is accepted), then all. The broker
/// is librdkafka's mock cluster, which can refuse produce requests for good (Tansu cannot;
/// see `kafka_faults.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_lists_and_replays_by_source() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = MockCluster::new(1).expect("mock cluster");
    let t = topic("console-quarantine");
    mock.create_topic(&t, 1, 1).expect("mock topic");
    let port = free_port();
    let a = Admin {
        hg: Hookgate::start(&format!(
            r#"
[server]
listen = "{{listen}}"

[admin]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"

[kafka]
brokers = "{boot}"
ack = "kafka"
spill_after = "5s"
delivery_timeout = "5s"

[spool]
path = "{{dir}}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["{GH_SECRET}"]
topic = "{t}"

[[sources]]
name = "other"
provider = "github"
secrets = ["{GH_SECRET}"]
topic = "{t}"
"#,
            boot = mock.bootstrap_servers()
        )),
        port,
    };
    a.wait_up().await;
    assert_eq!(post_to(&a, "github", "q-warm").await.0, 200);
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2],
    );
    let (s, mine) = post_to(&a, "github", "q-github").await;
    assert_eq!(s, 200);
    let (s, theirs) = post_to(&a, "other", "q-other").await;
    assert_eq!(s, 200);
    let list = quarantined(&a, 2).await;
    // Kafka takes records again (errors the mock still holds are dropped).
    mock.clear_request_errors(RDKafkaApiKey::Produce);
    let of = |id: &str| {
        list.iter()
            .find(|q| q["id"] == id)
            .cloned()
            .expect("listed")
    };
    assert_eq!(of(&mine)["source"], "github");
    assert_eq!(of(&theirs)["source"], "other");
    assert_eq!(of(&mine)["reason"], "not_authorized");
    // The event page reads it from the quarantine.
    let (_, ev) = a.get(&format!("/api/v1/events/{mine}"), Some(TOKEN)).await;
    assert_eq!(ev["stored_at"]["log"], "quarantine", "{ev}");
    assert!(
        ev["body"].as_str().unwrap_or("").contains("q-github"),
        "{ev}"
    );

    // The old field, unknown fields, an empty choice: 400 with what is accepted.
    for bad in [
        serde_json::json!({"sink": "github"}),
        serde_json::json!({"source": "github", "also": 1}),
        serde_json::json!({"entries": []}),
        serde_json::json!({}),
    ] {
        let (s, v) = a.post("/api/v1/quarantine/replay", Some(TOKEN), &bad).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("bad_replay_request")),
            "{bad}: {v}"
        );
        assert!(
            v["message"].as_str().unwrap_or("").contains("\"source\""),
            "{v}"
        );
    }
    let (s, v) = a
        .post(
            "/api/v1/quarantine/replay",
            Some(TOKEN),
            &serde_json::json!({"sink": "github"}),
        )
        .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown field `sink`"),
        "{s} {v}"
    );
    let (s, v) = a
        .post(
            "/api/v1/quarantine/replay",
            Some(TOKEN),
            &serde_json::json!({"source": "nope"}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (404, Some("nothing_to_replay")),
        "{v}"
    );

    // One source's events only. The producer may still hold the topic's error for a
    // moment after the refusals (librdkafka refreshes its metadata): a replay that fails
    // keeps the entry and can be tried again.
    let end = Instant::now() + WAIT;
    loop {
        let (s, j) = a
            .post(
                "/api/v1/quarantine/replay",
                Some(TOKEN),
                &serde_json::json!({"source": "github"}),
            )
            .await;
        assert_eq!((s, j["total"].as_u64()), (202, Some(1)), "{j}");
        let j = quarantine_replay_done(&a).await;
        if j["state"] == "done" {
            assert_eq!(
                (j["replayed"].as_u64(), j["remaining"].as_u64()),
                (Some(1), Some(1)),
                "{j}"
            );
            break;
        }
        assert_eq!(
            (j["failed"].as_u64(), j["remaining"].as_u64()),
            (Some(1), Some(2)),
            "{j}"
        );
        assert!(Instant::now() < end, "the replay keeps failing: {j}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let left = quarantined(&a, 1).await;
    assert_eq!(left[0]["id"], theirs.as_str());
    // Then all.
    let (s, _) = a
        .post(
            "/api/v1/quarantine/replay",
            Some(TOKEN),
            &serde_json::json!({"all": true}),
        )
        .await;
    assert_eq!(s, 202);
    let j = quarantine_replay_done(&a).await;
    assert_eq!(
        (j["state"].as_str(), j["replayed"].as_u64()),
        (Some("done"), Some(1)),
        "{j}"
    );
    quarantined(&a, 0).await;
}

/// Dispatchers run as separate `hookgate dispatch` processes (`[dispatch] enabled = false`
/// in serve): the console reads their sink figures from their `/metrics`
/// (`[admin] dispatchers`), and says which one it cannot reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_sink_figures_of_separate_dispatch_processes() {
    let broker = Broker::start();
    let tg = FakeTelegram::start().await;
    let topic = topic("console-remote-dispatch");
    let (port, dispatch_port, dead_port) = (free_port(), free_port(), free_port());
    let base = format!(
        r#"{base}
[dispatch]
enabled = false
group_id = "g-{topic}"
dlq_topic = "{topic}.dlq"

[[sinks]]
name = "team-chat"
type = "telegram"
bot_token = "123456:remote-bot-token"
chat_id = "-1001"
api_url = "{tg}"
chat_interval = "10ms"

[[routes]]
source = "github"
sink = "team-chat"
template = "push {{{{ ref }}}}"
"#,
        base = kafka_config(port, &broker, &topic, true),
        tg = tg.api_url(),
    );
    let serve = base.replace(
        &format!("token = \"{TOKEN}\""),
        &format!(
            "token = \"{TOKEN}\"\ndispatchers = [\"http://127.0.0.1:{dispatch_port}/metrics\", \"http://127.0.0.1:{dead_port}/metrics\"]"
        ),
    );
    assert_ne!(serve, base);
    let a = Admin {
        hg: Hookgate::start(&serve),
        port,
    };
    a.wait_up().await;
    broker.create_topic(&format!("{topic}.dlq"), 1).await;
    let dispatch_cfg = a.hg.dir.join("dispatch.toml");
    std::fs::write(
        &dispatch_cfg,
        base.replace("{listen}", "127.0.0.1:0").replace(
            &format!("listen = \"127.0.0.1:{port}\""),
            &format!("listen = \"127.0.0.1:{dispatch_port}\""),
        ),
    )
    .expect("write dispatch config");
    let _d = std::process::Command::new(crate::harness::hookgate_bin())
        .args(["dispatch", "--config"])
        .arg(&dispatch_cfg)
        .current_dir(&a.hg.dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(a.hg.dir.join("dispatch.err")).expect("log file"))
        .spawn()
        .map(crate::harness::KillOnDrop)
        .expect("spawn hookgate dispatch");
    for i in 0..3 {
        let body = format!(r#"{{"ref":"refs/heads/remote-{i}"}}"#);
        let (s, v) = post_github(&a.hg, &format!("remote-{i}"), body.as_bytes(), &[]).await;
        assert_eq!(s, 200, "{v}");
    }
    let dispatch_log =
        || std::fs::read_to_string(a.hg.dir.join("dispatch.err")).unwrap_or_default();
    assert_eq!(
        tg.wait_for(3, Duration::from_secs(60)).await.len(),
        3,
        "{}",
        dispatch_log()
    );
    // The console samples every 5 s: wait for the three deliveries to show.
    let end = Instant::now() + WAIT;
    let stats = loop {
        let (s, v) = a.get("/api/v1/stats", Some(TOKEN)).await;
        assert_eq!(s, 200, "{v}");
        let sink = v["sinks"]
            .as_array()
            .and_then(|l| l.iter().find(|k| k["name"] == "team-chat"))
            .cloned()
            .unwrap_or_default();
        if sink["deliveries"]["ok"].as_f64() == Some(3.0) && sink["counts"]["ok"]["1m"] == 3 {
            break v;
        }
        assert!(
            Instant::now() < end,
            "the dispatch process's deliveries never showed: {v}\n{}\n{}",
            a.hg.log(),
            dispatch_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let remote = stats["dispatcher"]["remote"].as_array().expect("remote");
    assert_eq!(remote.len(), 2, "{stats}");
    assert_eq!(remote[0]["up"], true, "{stats}");
    assert!(remote[0]["last_scraped_at"].is_string(), "{stats}");
    assert_eq!(remote[1]["up"], false, "{stats}");
    assert!(
        remote[1]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{stats}"
    );
    assert!(!stats.to_string().contains("remote-bot-token"), "{stats}");
}

/// A Tansu broker with in-memory storage that restarts loses every topic (and the
/// group's offsets); they are created again a few seconds later. Here: serve with Kafka
/// and a routed fake sink, restart the broker, wait 3 s, recreate the topics as the harness
/// does, and keep posting: hookgate must stay up (`/healthz`), the dispatcher must count
/// and log the broker's loss, rebuild its consumer, and deliver again. Metadata is
/// refreshed every second to exercise the metadata cache.
///
/// Why the rebuild: librdkafka 2.12.1 crashes (SIGSEGV, `strcmp(NULL)` in
/// `rd_kafka_metadata_cache_find` from `rd_kafka_metadata_update_op`) when a consumer
/// fetches, by its cached topic id, a topic the restarted Tansu does not have: Tansu's
/// answer carries a zero topic id with `CurrentLeader` and `NodeEndpoints` tags, which
/// librdkafka turns into a metadata update for a topic without a name (see
/// `sinks/src/dispatch/kafka_feed.rs`). Without the rebuild this test crashed hookgate
/// (SIGSEGV) in 9 of 10 runs, the 10th failing the rebuild assertion (2026-12-01; before
/// the 3 s wait was added: 2 crashes in 20 runs, with librdkafka debug logging on). The
/// dispatcher now pauses its partitions as soon as every broker connection is down and
/// closes that consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_survives_a_broker_restart_that_loses_its_topics() {
    let mut broker = Broker::start();
    let tg = FakeTelegram::start().await;
    let topic = topic("console-kafka-restart");
    let dlq = format!("{topic}.dlq");
    let a = started_with_one_delivered(&broker, &topic, &tg).await;

    // In-memory storage: the topics (and the group's offsets) are gone after this.
    broker.restart();
    // The consumer reconnects meanwhile and finds its topics gone: the crash's window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.create_topic(&topic, 3).await;
    broker.create_topic(&dlq, 3).await;

    // Keep posting until an event sent after the restart is delivered; hookgate must
    // answer /healthz all along.
    post_until_one_after_is_delivered(&a, &tg, "the broker restart").await;
    // The loss was reported: counted in the metrics and logged, not fatal.
    let metrics = crate::console::client()
        .get(a.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let errors = metric_in(&metrics, "hookgate_dispatch_kafka_errors_total");
    assert!(
        errors > 0.0,
        "no dispatcher error counted:\n{metrics}\n{}",
        a.hg.log()
    );
    assert!(
        a.hg.log().contains("dispatcher: kafka consumer error"),
        "{}",
        a.hg.log()
    );
    // The dispatcher halted the consumer whose brokers all went down and built a new one
    // (without that, the old consumer's next fetch can crash librdkafka; see the comment).
    let rebuilds = metric_in(&metrics, "hookgate_dispatch_consumer_rebuilds_total");
    assert!(
        rebuilds >= 1.0,
        "the kafka consumer was not rebuilt:\n{metrics}\n{}",
        a.hg.log()
    );
    assert!(
        a.hg.log().contains("dispatcher: kafka consumer rebuilt"),
        "{}",
        a.hg.log()
    );
}

/// An operator deletes the topic the dispatcher reads while the broker stays up, then
/// creates it again: no broker goes down, so the consumer is not rebuilt for it, and the
/// topic id the consumer cached is now unknown to the broker (the answer that crashed
/// librdkafka after a restart, above). hookgate must stay up (`/healthz`) and deliver
/// events posted after the topic is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_survives_its_topic_deleted_and_created_again() {
    let broker = Broker::start();
    let tg = FakeTelegram::start().await;
    let topic = topic("console-kafka-deleted");
    let a = started_with_one_delivered(&broker, &topic, &tg).await;

    broker.delete_topic(&topic).await;
    // The consumer keeps fetching (and refreshing metadata every second) meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_alive(&a, "with its topic deleted").await;
    // Ingest refuses what it cannot append (the topic is gone, and Tansu does not create
    // topics): 503, so the sender retries; never 200.
    let body = br#"{"ref":"refs/heads/while-deleted"}"#;
    let (s, v) = post_github(&a.hg, "while-deleted", body, &[]).await;
    assert_eq!((s, &v["error"]), (503, &json!("log_unavailable")), "{v}");
    broker.create_topic(&topic, 3).await;
    post_until_one_after_is_delivered(&a, &tg, "its topic was deleted and created again").await;
    // The sender's retry of the refused delivery is a new event, not a duplicate: the failed
    // append left no mark in dedupe.
    let (s, v) = post_github(&a.hg, "while-deleted", body, &[]).await;
    assert_eq!((s, &v["duplicate"]), (200, &json!(false)), "{v}");
    let end = Instant::now() + WAIT;
    while !tg.sent().iter().any(|(_, t)| t.contains("while-deleted")) {
        assert!(
            Instant::now() < end,
            "the retried delivery never reached the chat:\n{}",
            a.hg.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The broker's answer that crashed librdkafka reached it (vendor/rdkafka-sys's patch
    // logs it and goes on).
    assert!(a.hg.log().contains("neither id nor name"), "{}", a.hg.log());
}

/// serve as [`routed_to_telegram`] builds it, up, with one event posted and delivered.
async fn started_with_one_delivered(broker: &Broker, topic: &str, tg: &FakeTelegram) -> Admin {
    let port = free_port();
    let a = Admin {
        hg: Hookgate::start(&routed_to_telegram(port, broker, topic, tg)),
        port,
    };
    a.wait_up().await;
    let (s, v) = post_github(&a.hg, "before", br#"{"ref":"refs/heads/before"}"#, &[]).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(tg.wait_for(1, WAIT).await.len(), 1, "{}", a.hg.log());
    a
}

/// serve with Kafka (metadata refreshed every second), a dispatcher (DLQ `TOPIC.dlq`) and
/// every GitHub event routed to the fake Telegram `tg`.
fn routed_to_telegram(port: u16, broker: &Broker, topic: &str, tg: &FakeTelegram) -> String {
    let dlq = format!("{topic}.dlq");
    format!(
        r#"{base}
[kafka.options]
"topic.metadata.refresh.interval.ms" = "1000"

[dispatch]
group_id = "g-{topic}"
dlq_topic = "{dlq}"

[[sinks]]
name = "team-chat"
type = "telegram"
bot_token = "123456:console-bot-token"
chat_id = "-1001"
api_url = "{tg}"
max_attempts = 2
backoff_base = "50ms"
backoff_max = "100ms"
chat_interval = "10ms"

[[routes]]
source = "github"
sink = "team-chat"
template = "push {{{{ ref }}}}"
"#,
        base = kafka_config(port, broker, topic, true),
        tg = tg.api_url(),
    )
}

/// Posts for a while (at least 20 rounds, so 1 s metadata refreshes run many times against
/// the topics), until an event posted now is delivered to `tg`; hookgate must answer
/// /healthz all along. `what` names the fault for failure messages.
async fn post_until_one_after_is_delivered(a: &Admin, tg: &FakeTelegram, what: &str) {
    let end = Instant::now() + Duration::from_secs(90);
    let mut round = 0;
    loop {
        round += 1;
        assert_alive(a, &format!("after {what}")).await;
        let body = format!(r#"{{"ref":"refs/heads/after-{round}"}}"#);
        // 200, or 503 while the producer reconnects: both are fine here.
        let _ = post_github(&a.hg, &format!("after-{round}"), body.as_bytes(), &[]).await;
        let delivered_after = tg.sent().iter().any(|(_, text)| text.contains("after-"));
        if delivered_after && round >= 20 {
            break;
        }
        assert!(
            Instant::now() < end,
            "no event sent after {what} was delivered:\n{}",
            a.hg.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// hookgate answers /healthz 200 (`when` says at what point, for the failure message,
/// which also says how the process ended if it did).
async fn assert_alive(a: &Admin, when: &str) {
    let health = crate::console::client()
        .get(a.url("/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert!(
        matches!(health, Ok(200)),
        "hookgate stopped answering /healthz {when} ({health:?}; {}):\n{}",
        exit_of(a.hg.pid()),
        a.hg.log()
    );
}

/// How process `pid` ended, when it has (not reaped yet, its wait status is the last field
/// of `/proc/PID/stat`): "killed by signal N" or "exited with N"; else "still running".
fn exit_of(pid: Option<u32>) -> String {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    else {
        return "no process".to_owned();
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let state = fields.first().copied().unwrap_or("?");
    let status: i64 = fields.last().and_then(|f| f.parse().ok()).unwrap_or(0);
    if state != "Z" {
        return format!("process state {state}");
    }
    if status & 0x7f != 0 {
        format!("killed by signal {}", status & 0x7f)
    } else {
        format!("exited with {}", (status >> 8) & 0xff)
    }
}
