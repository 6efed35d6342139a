//! N replicas as one gateway (issue 15): Redis, a Tansu broker, three `hookgate` processes
//! sharing dedupe through `[dedupe.redis]`, and HAProxy balancing round robin over them with
//! health checks on each replica's `/readyz` (admin port), all on loopback. Every outcome is
//! checked where a user would look: the answers, and the records in Kafka.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{
    client, free_port, read_topic, read_topic_until, reconcile, redis_available, topic, Broker,
    Duplicates, Hookgate, KillOnDrop, Redis,
};
use crate::proxies::{haproxy_available, HAPROXY};
use crate::tls::push;

/// The whole deployment. Dropped in reverse: balancer, replicas, Redis, broker.
struct Deployment {
    balancer: Balancer,
    replicas: Vec<Replica>,
    redis: Redis,
    broker: Broker,
    topic: String,
}

struct Replica {
    hg: Hookgate,
    admin: u16,
}

/// HAProxy: round robin over the replicas' public ports, each checked with
/// `GET /readyz` on its admin port. Killed on drop.
struct Balancer {
    _child: KillOnDrop,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(replicas: &[Replica]) -> Balancer {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "    server r{i} {} check port {} inter 200ms fall 2 rise 1\n",
                    r.hg.addr, r.admin
                )
            })
            .collect();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                r#"
global
    maxconn 1024

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch

frontend hooks
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
{servers}"#
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = KillOnDrop(
            Command::new(HAPROXY)
                .arg("-db")
                .arg("-f")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start haproxy"),
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let end = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < end,
                "haproxy did not start: {}",
                std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Balancer {
            _child: child,
            addr,
            _dir: dir,
        }
    }
}

/// Whether the tools are here (a SKIPPED line when not, outside CI).
fn available() -> bool {
    haproxy_available() && redis_available()
}

impl Deployment {
    async fn start(name: &str, on_unavailable: &str) -> Deployment {
        let broker = Broker::start();
        let redis = Redis::start();
        let topic = topic(name);
        broker.create_topic(&topic, 3).await;
        let replicas: Vec<Replica> = (0..3)
            .map(|_| {
                let admin = free_port();
                let hg = Hookgate::start(&format!(
                    r#"
[server]
listen = "{{listen}}"

[admin]
listen = "127.0.0.1:{admin}"

[kafka]
brokers = "{boot}"
ack = "kafka"
retry_after_secs = 1

[spool]
path = "{{dir}}/spool"

[dedupe.redis]
url = "{url}"
on_unavailable = "{on_unavailable}"
command_timeout = "250ms"
claim_ttl = "5s"

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]
topic = "{topic}"
"#,
                    boot = broker.bootstrap(),
                    url = redis.url(),
                ));
                Replica { hg, admin }
            })
            .collect();
        let balancer = Balancer::start(&replicas);
        let d = Deployment {
            balancer,
            replicas,
            redis,
            broker,
            topic,
        };
        // Every replica's admin listener answers before traffic starts.
        for r in &d.replicas {
            let end = Instant::now() + Duration::from_secs(30);
            loop {
                let ready = client()
                    .get(format!("http://127.0.0.1:{}/readyz", r.admin))
                    .send()
                    .await
                    .is_ok_and(|resp| resp.status() == 200);
                if ready {
                    break;
                }
                assert!(Instant::now() < end, "replica {} not ready", r.hg.addr);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        d
    }

    async fn metrics(&self, r: &Replica) -> String {
        client()
            .get(format!("http://127.0.0.1:{}/metrics", r.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn readyz(&self, r: &Replica) -> (u16, serde_json::Value) {
        let resp = client()
            .get(format!("http://127.0.0.1:{}/readyz", r.admin))
            .send()
            .await
            .expect("readyz");
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or_default(),
        )
    }
}

/// One delivery through the balancer: status, body, Retry-After.
async fn send(c: &reqwest::Client, to: SocketAddr, delivery: &str) -> Answer {
    let (body, headers) = push(delivery);
    let mut req = c.post(format!("http://{to}/hooks/github")).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            Answer {
                status,
                id: v["id"].as_str().map(str::to_owned),
                duplicate: v["duplicate"].as_bool(),
                error: v["error"].as_str().map(str::to_owned),
                retry_after,
            }
        }
        Err(_) => Answer::default(),
    }
}

#[derive(Debug, Default, Clone)]
struct Answer {
    /// 0: no answer (connection closed).
    status: u16,
    id: Option<String>,
    duplicate: Option<bool>,
    error: Option<String>,
    retry_after: Option<String>,
}

/// (1) Concurrent copies of one delivery, spread over the three replicas, give one record
/// and exactly one non-duplicate answer; (2) re-sends through the balancer are never
/// written twice: every accepted delivery id is in Kafka exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_haproxy_write_each_delivery_once() {
    if !available() {
        return;
    }
    let d = Deployment::start("replicas-once", "reject").await;
    let c = client();
    // (1) Twelve copies at once, per delivery, round robin over three replicas.
    let mut acked: HashMap<String, String> = HashMap::new();
    for n in 0..5 {
        let delivery = format!("burst-{n}");
        let copies: Vec<_> = (0..12)
            .map(|_| {
                let (c, to, delivery) = (c.clone(), d.balancer.addr, delivery.clone());
                tokio::spawn(async move { send(&c, to, &delivery).await })
            })
            .collect();
        let mut answers = Vec::new();
        for t in copies {
            answers.push(t.await.unwrap());
        }
        assert!(
            answers.iter().all(|a| a.status == 200),
            "{delivery}: {answers:?}"
        );
        let firsts = answers
            .iter()
            .filter(|a| a.duplicate == Some(false))
            .count();
        assert_eq!(
            firsts, 1,
            "{delivery}: one non-duplicate answer: {answers:?}"
        );
        let ids: HashSet<_> = answers.iter().map(|a| a.id.clone()).collect();
        assert_eq!(ids.len(), 1, "{delivery}: one event id: {answers:?}");
        acked.insert(delivery, answers[0].id.clone().unwrap());
    }
    // The copies were spread: every replica answered some.
    for r in &d.replicas {
        let answered: f64 = d
            .metrics(r)
            .await
            .lines()
            .filter(|l| l.starts_with("hookgate_requests_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert!(answered > 0.0, "replica {} got traffic", r.hg.addr);
    }
    // (2) Fifty deliveries, then every one re-sent twice more through the balancer (landing
    // on other replicas than the first time).
    for round in 0..3 {
        for n in 0..50 {
            let delivery = format!("resend-{n}");
            let a = send(&c, d.balancer.addr, &delivery).await;
            assert_eq!(a.status, 200, "{delivery} round {round}: {a:?}");
            assert_eq!(
                a.duplicate,
                Some(round > 0),
                "{delivery} round {round}: {a:?}"
            );
            let id = a.id.clone().unwrap();
            let first = acked.entry(delivery.clone()).or_insert_with(|| id.clone());
            assert_eq!(
                *first, id,
                "{delivery}: a re-send answers the first event id"
            );
        }
    }
    let got = reconcile(&d.broker, &d.topic, &acked, Duplicates::Forbidden);
    assert_eq!(got.records, acked.len(), "one record per delivery: {got:?}");
}

/// (3) One replica SIGKILLed under load: every delivery that got a 2xx is in Kafka with the
/// id its answer gave. Deliveries that got no 2xx are re-sent (as a provider retries) until
/// they do, through the two replicas left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_no_acknowledged_event() {
    if !available() {
        return;
    }
    let mut d = Deployment::start("replicas-kill", "reject").await;
    let c = client();
    let to = d.balancer.addr;
    let acked = Arc::new(std::sync::Mutex::new(HashMap::<String, String>::new()));
    let senders: Vec<_> = (0..4)
        .map(|w| {
            let (c, acked) = (c.clone(), acked.clone());
            tokio::spawn(async move {
                let mut refused = Vec::new();
                for n in 0..60 {
                    let delivery = format!("load-{w}-{n}");
                    let a = send(&c, to, &delivery).await;
                    match (a.status, a.id) {
                        (200, Some(id)) => {
                            acked.lock().unwrap().insert(delivery, id);
                        }
                        _ => refused.push(delivery),
                    }
                }
                refused
            })
        })
        .collect();
    // Kill a replica once the load is under way.
    let end = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 40 {
        assert!(Instant::now() < end, "load did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.replicas[1].hg.kill();
    let mut retry = Vec::new();
    for s in senders {
        retry.extend(s.await.unwrap());
    }
    eprintln!(
        "{} deliveries got no 2xx around the kill; re-sent",
        retry.len()
    );
    let retry_count = retry.len();
    for delivery in retry {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let a = send(&c, to, &delivery).await;
            if let (200, Some(id)) = (a.status, a.id.clone()) {
                acked.lock().unwrap().insert(delivery.clone(), id);
                break;
            }
            assert!(Instant::now() < end, "{delivery} never accepted: {a:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), 240);
    // Every acknowledged delivery is in Kafka with the id its 2xx gave, and under no other
    // id: a delivery the killed replica wrote without answering is re-sent, and the retry
    // (on another replica) takes over the dead claim with the id it carried, so a second
    // copy is the same record (same hookgate-id). Copies are counted, never a second id.
    let recs = read_topic_until(
        &d.broker.bootstrap(),
        &d.topic,
        Duration::from_secs(90),
        |r| r.len() >= acked.len(),
    );
    let mut ids: HashMap<String, Vec<String>> = HashMap::new();
    for r in &recs {
        ids.entry(r.header("hookgate-delivery-id").unwrap_or_default())
            .or_default()
            .push(r.header("hookgate-id").unwrap_or_default());
    }
    let lost: Vec<&String> = acked
        .iter()
        .filter(|(delivery, id)| !ids.get(*delivery).is_some_and(|v| v.contains(id)))
        .map(|(delivery, _)| delivery)
        .collect();
    assert!(lost.is_empty(), "acknowledged but not in Kafka: {lost:?}");
    let two_ids: Vec<(&String, &Vec<String>)> = ids
        .iter()
        .filter(|(_, v)| v.iter().collect::<HashSet<_>>().len() > 1)
        .collect();
    assert!(
        two_ids.is_empty(),
        "one hookgate-id per delivery id: {two_ids:?}"
    );
    let extra = recs.len() - ids.len();
    eprintln!(
        "{} records for {} deliveries ({extra} extra copies from the crash, each with its delivery's one hookgate-id)",
        recs.len(),
        ids.len()
    );
    assert!(
        extra <= retry_count,
        "only deliveries unanswered at the kill may be copied"
    );
}

/// (4a) Redis paused with `on_unavailable = "reject"`: 503 `dedupe_unavailable` with
/// Retry-After, nothing written, replicas stay in rotation; after resume, back to normal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_with_reject_refuses_and_writes_nothing_then_recovers() {
    if !available() {
        return;
    }
    let d = Deployment::start("replicas-reject", "reject").await;
    let c = client();
    assert_eq!(send(&c, d.balancer.addr, "before").await.status, 200);
    d.redis.pause();
    for n in 0..9 {
        let delivery = format!("paused-{n}");
        let a = send(&c, d.balancer.addr, &delivery).await;
        assert_eq!(a.status, 503, "{delivery}: {a:?}");
        assert_eq!(a.error.as_deref(), Some("dedupe_unavailable"), "{a:?}");
        assert!(a.retry_after.is_some(), "{a:?}");
    }
    for r in &d.replicas {
        let (status, body) = d.readyz(r).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["dedupe"], "unavailable", "{body}");
    }
    d.redis.resume();
    let end = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let a = send(&c, d.balancer.addr, "after").await;
        if a.status == 200 {
            break a;
        }
        assert!(Instant::now() < end, "not back to normal: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(after.duplicate, Some(false));
    let recs = read_topic(&d.broker.bootstrap(), &d.topic, 2, Duration::from_secs(30));
    let deliveries: Vec<String> = recs
        .iter()
        .filter_map(|r| r.header("hookgate-delivery-id"))
        .collect();
    assert!(
        deliveries.iter().all(|x| !x.starts_with("paused-")),
        "nothing refused was written: {deliveries:?}"
    );
    let mut sorted = deliveries.clone();
    sorted.sort();
    assert_eq!(sorted, ["after", "before"]);
    // The refused deliveries are accepted on retry, once.
    for n in 0..9 {
        let a = send(&c, d.balancer.addr, &format!("paused-{n}")).await;
        assert_eq!((a.status, a.duplicate), (200, Some(false)), "{a:?}");
    }
}

/// (4b) Redis paused with `on_unavailable = "local"`: deliveries keep being accepted (each
/// replica dedupes alone) and `/readyz` says degraded, still 200; after resume, shared
/// dedupe is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_with_local_keeps_accepting_degraded_then_recovers() {
    if !available() {
        return;
    }
    let d = Deployment::start("replicas-local", "local").await;
    let c = client();
    d.redis.pause();
    let mut acked = HashMap::new();
    for n in 0..9 {
        let delivery = format!("paused-{n}");
        let a = send(&c, d.balancer.addr, &delivery).await;
        assert_eq!(a.status, 200, "{delivery}: {a:?}");
        acked.insert(delivery, a.id.unwrap());
    }
    for r in &d.replicas {
        let (status, body) = d.readyz(r).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["dedupe"], "degraded", "{body}");
        // With [admin] the public port serves only /hooks/*: metrics are on the admin port.
        assert!(
            d.metrics(r)
                .await
                .lines()
                .any(|l| l == "hookgate_dedupe_redis_degraded 1"),
            "the degraded gauge is set"
        );
    }
    d.redis.resume();
    for r in &d.replicas {
        let end = Instant::now() + Duration::from_secs(30);
        while d.readyz(r).await.1["dedupe"] != "ok" {
            assert!(Instant::now() < end, "replica {} not back", r.hg.addr);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Shared again: three copies of a new delivery over three replicas, one write.
    let mut firsts = 0;
    for _ in 0..3 {
        let a = send(&c, d.balancer.addr, "after").await;
        assert_eq!(a.status, 200, "{a:?}");
        if a.duplicate == Some(false) {
            firsts += 1;
            acked.insert("after".into(), a.id.unwrap());
        }
    }
    assert_eq!(firsts, 1);
    reconcile(&d.broker, &d.topic, &acked, Duplicates::Forbidden);
}
