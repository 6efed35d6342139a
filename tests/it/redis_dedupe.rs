//! The claim protocol of the shared dedupe (`[dedupe.redis]`) against a real `redis-server`:
//! two `SharedDedupe` front-ends, each with its own local set and connections, stand for
//! two replicas. What a test checks is what the log would hold: how many appends ran.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hookgate_ingest::config::RedisDedupeConfig;
use hookgate_ingest::dedupe::{Admission, Dedupe};
use hookgate_ingest::redis_dedupe::{Intent, RedisStore, SharedDedupe, StoreRefusal};
use hookgate_proto::Ulid;

use crate::harness::{redis_available, Redis, RedisCluster};

/// The error type of the appends here: the log failed, or the store refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fail {
    Down,
    Store(StoreRefusal),
}

impl From<StoreRefusal> for Fail {
    fn from(r: StoreRefusal) -> Fail {
        Fail::Store(r)
    }
}

fn store(redis: &Redis, extra: &str) -> Arc<RedisStore> {
    let cfg: RedisDedupeConfig = toml::from_str(&format!(
        "url = \"{}\"\nclaim_ttl = \"1s\"\ncommand_timeout = \"200ms\"\n{extra}",
        redis.url()
    ))
    .unwrap();
    assert!(cfg.check().is_empty(), "{:?}", cfg.check());
    Arc::new(RedisStore::new(&cfg, vec!["github".into()], Duration::from_secs(3600)).unwrap())
}

/// A front-end: its own local set in front of its own connections to `redis`.
fn replica(redis: &Redis, extra: &str) -> SharedDedupe {
    SharedDedupe::with_redis(
        Dedupe::new(1000, Duration::from_secs(3600)),
        store(redis, extra),
    )
}

/// A fresh record to append: a new hookgate-id, received now.
fn intent() -> Intent {
    Intent {
        id: Ulid::new(),
        received_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    }
}

/// Admits `id` with an append that counts itself, waits `hold`, and succeeds with the
/// hookgate-id it was told to write (as the server does).
async fn admit_counted(
    d: &SharedDedupe,
    id: &str,
    runs: &AtomicUsize,
    hold: Duration,
) -> Result<Admission, Arc<Fail>> {
    d.admit(0, id, intent(), |i| async move {
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(hold).await;
        Ok::<_, Fail>(i.id)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_copies_on_two_replicas_append_once() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (a, b) = (replica(&redis, ""), replica(&redis, ""));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let d = if i % 2 == 0 { a.clone() } else { b.clone() };
        let runs = runs.clone();
        tasks.push(tokio::spawn(async move {
            admit_counted(&d, "d-1", &runs, Duration::from_millis(100)).await
        }));
    }
    let mut new = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Admission::New(u) => {
                new += 1;
                ids.insert(u);
            }
            Admission::Duplicate(u) => {
                ids.insert(u);
            }
        }
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one append over both replicas"
    );
    assert_eq!(new, 1, "one non-duplicate answer");
    assert_eq!(
        ids.len(),
        1,
        "every copy answered with the owner's event id"
    );
    // The committed id is in Redis, and a later copy on either replica is a duplicate.
    let key = a.redis().unwrap().key(0, "d-1");
    let id = *ids.iter().next().unwrap();
    assert_eq!(redis.cli(&["GET", &key]), format!("d:{id}"));
    let c = replica(&redis, "");
    assert_eq!(
        admit_counted(&c, "d-1", &runs, Duration::ZERO)
            .await
            .unwrap(),
        Admission::Duplicate(id)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_releases_the_claim_and_the_retry_keeps_its_id() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (a, b) = (replica(&redis, ""), replica(&redis, ""));
    let key = a.redis().unwrap().key(0, "d-2");
    let first = intent();
    let failed = a
        .admit(0, "d-2", first, |_| async { Err::<Ulid, _>(Fail::Down) })
        .await;
    assert_eq!(failed.map_err(|e| (*e).clone()), Err(Fail::Down));
    // Released, with the id the failed attempt may have written under.
    assert_eq!(
        redis.cli(&["GET", &key]),
        format!("r:{}:{}", first.id, first.received_at_ms)
    );
    // Another replica takes the retry at once (no wait for a claim to expire), and writes
    // the same record: same hookgate-id, same received-at.
    let told = std::sync::Mutex::new(None);
    let got = b
        .admit(0, "d-2", intent(), |i| {
            *told.lock().unwrap() = Some(i);
            async move { Ok::<_, Fail>(i.id) }
        })
        .await
        .unwrap();
    assert_eq!(got, Admission::New(first.id));
    assert_eq!(*told.lock().unwrap(), Some(first));
    assert_eq!(redis.cli(&["GET", &key]), format!("d:{}", first.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_owners_claim_expires_and_the_retry_appends_the_same_record() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (a, b) = (replica(&redis, ""), replica(&redis, ""));
    let key = a.redis().unwrap().key(0, "d-3");
    // Replica A claims and "dies" mid-append (perhaps after Kafka got its record): its future
    // is leaked, never polled again and never dropped, like a process killed with its claim
    // in Redis.
    let dead = intent();
    let mut dying = Box::pin(a.admit(0, "d-3", dead, |_| {
        std::future::pending::<Result<Ulid, Fail>>()
    }));
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while redis.cli(&["EXISTS", &key]) != "1" {
        assert!(std::time::Instant::now() < end, "A never claimed");
        let _ = tokio::time::timeout(Duration::from_millis(20), &mut dying).await;
    }
    std::mem::forget(dying);
    let held = redis.cli(&["GET", &key]);
    assert!(
        held.starts_with("c:") && held.contains(&format!(":{}:{}:", dead.id, dead.received_at_ms)),
        "the claim carries the record A was writing: {held}"
    );
    // B's copy (its own fresh id) waits on the claim, then takes it over once the lease
    // ends (claim_ttl = 1s), writing A's record: same hookgate-id and received-at, so a
    // copy A may have put in Kafka is the same record.
    let runs = AtomicUsize::new(0);
    let told = std::sync::Mutex::new(None);
    let got = b
        .admit(0, "d-3", intent(), |i| {
            runs.fetch_add(1, Ordering::SeqCst);
            *told.lock().unwrap() = Some(i);
            async move { Ok::<_, Fail>(i.id) }
        })
        .await
        .unwrap();
    assert_eq!(got, Admission::New(dead.id), "the retry reuses A's id");
    assert_eq!(*told.lock().unwrap(), Some(dead));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(redis.cli(&["GET", &key]), format!("d:{}", dead.id));
    // And only once: the next copy is a duplicate, on a replica that never saw it.
    let c = replica(&redis, "");
    assert_eq!(
        admit_counted(&c, "d-3", &runs, Duration::ZERO)
            .await
            .unwrap(),
        Admission::Duplicate(dead.id)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_owner_renews_its_claim_through_a_slow_append() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (a, b) = (replica(&redis, ""), replica(&redis, ""));
    let runs = Arc::new(AtomicUsize::new(0));
    // The append takes 2.5 claim TTLs; without renewal B would take the claim over.
    let slow = {
        let (a, runs) = (a.clone(), runs.clone());
        tokio::spawn(
            async move { admit_counted(&a, "d-4", &runs, Duration::from_millis(2500)).await },
        )
    };
    let key = a.redis().unwrap().key(0, "d-4");
    while redis.cli(&["EXISTS", &key]) != "1" {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = admit_counted(&b, "d-4", &runs, Duration::ZERO)
        .await
        .unwrap();
    let first = slow.await.unwrap().unwrap();
    let Admission::New(id) = first else {
        panic!("{first:?}")
    };
    assert_eq!(got, Admission::Duplicate(id));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_claim_cannot_release_or_commit_over_the_new_owner() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let a = replica(&redis, "");
    for (id, outcome) in [("d-5", Err(Fail::Down)), ("d-6", Ok(Ulid::new()))] {
        let key = a.redis().unwrap().key(0, id);
        let redis_ref = &redis;
        let key_ref = &key;
        let res = a
            .admit(0, id, intent(), move |_| async move {
                // While A appends, its claim is taken over (it expired and another replica
                // claimed the delivery).
                redis_ref.cli(&["SET", key_ref, "c:someone-else", "PX", "60000"]);
                outcome
            })
            .await;
        let _ = res;
        assert_eq!(
            redis.cli(&["GET", &key]),
            "c:someone-else",
            "{id}: the new owner's claim stays"
        );
    }
}

/// A commit whose command fails (Redis went away between the claim and the commit) is not
/// left to the claim's lease: it is queued and written back once Redis answers — unless
/// another replica took the key over meanwhile, whose claim stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_failed_is_written_back_when_redis_answers() {
    if !redis_available() {
        return;
    }
    let mut redis = Redis::start();
    let a = replica(&redis, "");
    let store = a.redis().unwrap().clone();
    for (id, taken_over) in [("wb-1", false), ("wb-2", true)] {
        let key = store.key(0, id);
        let redis_ref = &redis;
        let got = a
            .admit(0, id, intent(), move |i| async move {
                // The event is in the log; Redis goes away before the commit (no
                // persistence: it comes back empty).
                redis_ref.cli(&["SHUTDOWN", "NOSAVE"]);
                Ok::<_, Fail>(i.id)
            })
            .await
            .unwrap();
        let Admission::New(event) = got else {
            panic!("{got:?}")
        };
        assert_eq!(store.write_back_pending(), 1, "{id}: the commit is queued");
        redis.restart();
        if taken_over {
            redis.cli(&["SET", &key, "c:someone-else:x:1:1", "PX", "60000"]);
        }
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while store.write_back_pending() > 0 {
            assert!(std::time::Instant::now() < end, "{id}: never written back");
            store.write_back().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let want = if taken_over {
            "c:someone-else:x:1:1".to_owned()
        } else {
            format!("d:{event}")
        };
        assert_eq!(redis.cli(&["GET", &key]), want, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_reject_refuses_local_accepts_then_both_recover() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let reject = replica(&redis, "on_unavailable = \"reject\"");
    let local = replica(&redis, "on_unavailable = \"local\"");
    let runs = AtomicUsize::new(0);
    redis.pause();
    let got = admit_counted(&reject, "p-1", &runs, Duration::ZERO).await;
    assert_eq!(
        got.map_err(|e| (*e).clone()),
        Err(Fail::Store(StoreRefusal::Unavailable))
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing appended");
    assert_eq!(reject.status(), Some("unavailable"));
    let got = admit_counted(&local, "p-2", &runs, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(got, Admission::New(_)), "{got:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(local.status(), Some("degraded"));
    // While degraded, the local set still dedupes within the replica.
    assert!(matches!(
        admit_counted(&local, "p-2", &runs, Duration::ZERO)
            .await
            .unwrap(),
        Admission::Duplicate(_)
    ));
    redis.resume();
    for d in [&reject, &local] {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !d.redis().unwrap().probe().await {
            assert!(std::time::Instant::now() < end, "redis answers again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(d.status(), Some("ok"));
    }
    let got = admit_counted(&reject, "p-1", &runs, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(got, Admission::New(_)), "{got:?}");
    let key = reject.redis().unwrap().key(0, "p-1");
    assert!(redis.cli(&["GET", &key]).starts_with("d:"));
}

/// Values in the first format (before the claim carried the hookgate-id, commit `4e495fa`:
/// claims `c:<token>` with the key's TTL as the lease, `DEL` on release), as a replica of
/// that version writes them during a rolling update, are read right by this version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_of_the_first_format_are_read_during_a_rolling_update() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let d = replica(&redis, "");
    let key = |id: &str| d.redis().unwrap().key(0, id);
    let runs = Arc::new(AtomicUsize::new(0));
    let old_token = |n: u128| format!("c:{n:032x}");
    // Committed by an old replica: a duplicate with its id, nothing appended.
    let old = Ulid::new();
    redis.cli(&["SET", &key("v0-done"), &format!("d:{old}"), "PX", "3600000"]);
    let got = admit_counted(&d, "v0-done", &runs, Duration::ZERO).await;
    assert_eq!(got.unwrap(), Admission::Duplicate(old));
    // An old replica's claim, its append running: waited on; the old owner commits
    // (`SET d:<id>` as it did), and the copy here is a duplicate with that id.
    redis.cli(&["SET", &key("v0-commit"), &old_token(1), "PX", "5000"]);
    let waiting = {
        let (d, runs) = (d.clone(), runs.clone());
        tokio::spawn(async move { admit_counted(&d, "v0-commit", &runs, Duration::ZERO).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "an old claim is waited on");
    let committed = Ulid::new();
    redis.cli(&[
        "SET",
        &key("v0-commit"),
        &format!("d:{committed}"),
        "PX",
        "3600000",
    ]);
    assert_eq!(
        waiting.await.unwrap().unwrap(),
        Admission::Duplicate(committed)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing appended yet");
    // An old replica's claim released (it deleted the key): claimed and appended here.
    redis.cli(&["SET", &key("v0-release"), &old_token(2), "PX", "5000"]);
    let waiting = {
        let (d, runs) = (d.clone(), runs.clone());
        tokio::spawn(async move { admit_counted(&d, "v0-release", &runs, Duration::ZERO).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "an old claim is waited on");
    redis.cli(&["DEL", &key("v0-release")]);
    let Admission::New(id) = waiting.await.unwrap().unwrap() else {
        panic!("the released delivery is appended here")
    };
    assert_eq!(redis.cli(&["GET", &key("v0-release")]), format!("d:{id}"));
    // An old replica died holding a claim: its key expires after its claim_ttl, then the
    // delivery is claimed and appended here, once.
    redis.cli(&["SET", &key("v0-dead"), &old_token(3), "PX", "400"]);
    let Admission::New(id) = admit_counted(&d, "v0-dead", &runs, Duration::ZERO)
        .await
        .unwrap()
    else {
        panic!("appended once the old claim expired")
    };
    assert_eq!(redis.cli(&["GET", &key("v0-dead")]), format!("d:{id}"));
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one append per delivery");
}

/// A value this version cannot read (a later version's incompatible format, or something
/// else under the prefix) refuses the delivery, also under `local`, and nothing is
/// appended; fields a later version appends to a known value are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_value_refuses_without_an_append_and_extra_fields_are_ignored() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let d = replica(&redis, "on_unavailable = \"local\"");
    let key = |id: &str| d.redis().unwrap().key(0, id);
    let runs = AtomicUsize::new(0);
    for (n, v) in ["x:1:2", "d:not-an-id", "c:a:b", "r:only-one-field", "plain"]
        .iter()
        .enumerate()
    {
        let id = format!("u-{n}");
        redis.cli(&["SET", &key(&id), v, "PX", "3600000"]);
        let got = admit_counted(&d, &id, &runs, Duration::ZERO).await;
        assert_eq!(
            got.map_err(|e| (*e).clone()),
            Err(Fail::Store(StoreRefusal::Unreadable)),
            "{v}"
        );
        assert_eq!(redis.cli(&["GET", &key(&id)]), *v, "left as it was");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing appended");
    // Committed, with a later version's extra field: a duplicate with the id.
    let old = Ulid::new();
    redis.cli(&[
        "SET",
        &key("x-done"),
        &format!("d:{old}:later"),
        "PX",
        "3600000",
    ]);
    assert_eq!(
        admit_counted(&d, "x-done", &runs, Duration::ZERO)
            .await
            .unwrap(),
        Admission::Duplicate(old)
    );
    // Released, with an extra field: taken over with its hookgate-id.
    let released = Ulid::new();
    redis.cli(&[
        "SET",
        &key("x-released"),
        &format!("r:{released}:1700000000000:later"),
        "PX",
        "3600000",
    ]);
    assert_eq!(
        admit_counted(&d, "x-released", &runs, Duration::ZERO)
            .await
            .unwrap(),
        Admission::New(released)
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// The Redis URL's password never shows: not in hookgate's output (start, an outage and
/// its recovery are all logged), not in `/metrics`, not in an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_password_never_appears_in_logs_metrics_or_answers() {
    if !redis_available() {
        return;
    }
    const PASSWORD: &str = "redis-pass-31415926";
    let redis = Redis::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--requirepass",
        PASSWORD,
    ]);
    let hg = crate::harness::Hookgate::start(&format!(
        r#"
[server]
listen = "{{listen}}"

[spool]
path = "{{dir}}/spool"

[dedupe.redis]
url = "redis://:{PASSWORD}@127.0.0.1:{port}/0"
command_timeout = "200ms"

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]
"#,
        port = redis.port
    ));
    let c = crate::harness::client();
    let post = |delivery: &'static str| {
        let (body, headers) = crate::tls::push(delivery);
        let mut req = c.post(hg.url("/hooks/github")).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let ok = post("pw-1").await.unwrap();
    assert_eq!(ok.status(), 200);
    redis.pause();
    let refused = post("pw-2").await.unwrap();
    assert_eq!(refused.status(), 503);
    let text = refused.text().await.unwrap();
    assert!(text.contains("dedupe_unavailable"), "{text}");
    redis.resume();
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while post("pw-2").await.unwrap().status() != 200 {
        assert!(std::time::Instant::now() < end, "accepting again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = c
        .get(hg.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("hookgate_dedupe_redis_degraded_total 1"),
        "{metrics}"
    );
    let output = hg.output();
    assert!(
        output.contains("redis dedupe store unavailable"),
        "the outage is logged"
    );
    for (what, text) in [
        ("output", &output),
        ("metrics", &metrics),
        ("answer", &text),
    ] {
        assert!(!text.contains(PASSWORD), "the password is in the {what}");
    }
}

/// Cross-restart dedupe comes from Redis: with AOF persistence (`appendonly yes`), a
/// delivery committed before Redis was killed and restarted is still a duplicate for a
/// replica that never saw it; without persistence (the control) it is new again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_ids_survive_a_redis_restart_with_aof() {
    if !redis_available() {
        return;
    }
    for (args, survives) in [
        (
            [
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            true,
        ),
        (
            [
                "--save",
                "",
                "--appendonly",
                "no",
                "--appendfsync",
                "always",
            ],
            false,
        ),
    ] {
        let mut redis = Redis::start_with(&args);
        let runs = AtomicUsize::new(0);
        let Admission::New(id) = admit_counted(&replica(&redis, ""), "r-1", &runs, Duration::ZERO)
            .await
            .unwrap()
        else {
            panic!("first copy")
        };
        redis.restart();
        let fresh = replica(&redis, "");
        let got = admit_counted(&fresh, "r-1", &runs, Duration::ZERO)
            .await
            .unwrap();
        if survives {
            assert_eq!(got, Admission::Duplicate(id), "{args:?}");
        } else {
            assert!(matches!(got, Admission::New(_)), "{args:?}: {got:?}");
        }
    }
}

/// A `[dedupe.redis]` hookgate config (spool log, one GitHub source) with `redis` as the
/// body of the section.
fn gate_config(redis: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"

[spool]
path = "{{dir}}/spool"

[dedupe.redis]
command_timeout = "200ms"
{redis}

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]
"#
    )
}

/// Posts a signed GitHub push with this delivery id; returns the status and the body.
async fn post(hg: &crate::harness::Hookgate, delivery: &str) -> (u16, serde_json::Value) {
    let (body, headers) = crate::tls::push(delivery);
    let mut req = crate::harness::client()
        .post(hg.url("/hooks/github"))
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

async fn get_text(hg: &crate::harness::Hookgate, path: &str) -> String {
    crate::harness::client()
        .get(hg.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `rediss://` with a password, trusted through `ca_file`: two hookgate processes share the
/// TLS-only Redis (a delivery sent to A then to B is a duplicate at B, and the key is in
/// Redis), and the password shows nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_ca_file_dedupes_across_two_hookgates_and_hides_the_password() {
    if !redis_available() {
        return;
    }
    const PASSWORD: &str = "tls-redis-pass-27182818";
    let ca = crate::tls::Ca::new("redis test CA");
    let leaf = ca.server("redis", 11, crate::tls::KeyKind::EcdsaPkcs8);
    let redis = Redis::start_tls(
        &ca.pem,
        &leaf.cert_pem,
        &leaf.key_pem,
        &["--requirepass", PASSWORD],
    );
    let section = format!(
        "url = \"rediss://:{PASSWORD}@127.0.0.1:{}/0\"\nca_file = \"{}\"\n",
        redis.port,
        redis.path("ca.pem").display()
    );
    let a = crate::harness::Hookgate::start(&gate_config(&section));
    let b = crate::harness::Hookgate::start(&gate_config(&section));
    let (s, first) = post(&a, "tls-1").await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["duplicate"], false, "{first}");
    let (s, again) = post(&b, "tls-1").await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], true, "B learns it from Redis: {again}");
    assert_eq!(again["id"], first["id"], "{again}");
    let keys = redis.cli(&["KEYS", "hookgate:dedupe:github:*"]);
    assert!(keys.lines().count() >= 1, "{keys}");
    for key in keys.lines() {
        let value = redis.cli(&["GET", key.trim()]);
        assert!(value.starts_with("d:"), "committed in Redis: {value}");
    }
    for hg in [&a, &b] {
        // Health is a gauge of recent failures: a ping that timed out while the machine was
        // busy (a TLS handshake at start) reads "degraded" until the next probe answers.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ready = get_text(hg, "/readyz").await;
            if ready.contains("\"dedupe\":\"ok\"") {
                break;
            }
            assert!(std::time::Instant::now() < end, "{ready}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let metrics = get_text(hg, "/metrics").await;
        let output = hg.output();
        for (what, text) in [("output", &output), ("metrics", &metrics)] {
            assert!(!text.contains(PASSWORD), "the password is in the {what}");
        }
    }
}

/// A server certificate from another CA than `ca_file` is refused: nothing is accepted
/// under `reject` (503 `dedupe_unavailable`), `/readyz` says the store is unavailable, the
/// log says why, and no key reaches Redis. A plain `redis://` client on the TLS port fails
/// the same way (control: the same server with the right CA works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_certificate_from_another_ca_is_refused() {
    if !redis_available() {
        return;
    }
    const PASSWORD: &str = "tls-redis-pass-16180339";
    let ca = crate::tls::Ca::new("redis test CA");
    let other = crate::tls::Ca::new("some other CA");
    let leaf = ca.server("redis", 12, crate::tls::KeyKind::EcdsaPkcs8);
    let redis = Redis::start_tls(
        &ca.pem,
        &leaf.cert_pem,
        &leaf.key_pem,
        &["--requirepass", PASSWORD],
    );
    let dir = tempfile::tempdir().unwrap();
    let other_pem = dir.path().join("other-ca.pem");
    std::fs::write(&other_pem, &other.pem).unwrap();
    let section = format!(
        "url = \"rediss://:{PASSWORD}@127.0.0.1:{}/0\"\nca_file = \"{}\"\n",
        redis.port,
        other_pem.display()
    );
    let hg = crate::harness::Hookgate::start(&gate_config(&section));
    for i in 0..3 {
        let (s, body) = post(&hg, &format!("bad-ca-{i}")).await;
        assert_eq!(s, 503, "{body}");
        assert!(body.to_string().contains("dedupe_unavailable"), "{body}");
    }
    let ready = get_text(&hg, "/readyz").await;
    assert!(ready.contains("\"dedupe\":\"unavailable\""), "{ready}");
    assert_eq!(redis.cli(&["DBSIZE"]), "0", "nothing reached Redis");
    let output = hg.output();
    assert!(
        output.contains("redis dedupe store unavailable"),
        "the outage is logged: {output}"
    );
    assert!(
        output.contains("certificate"),
        "the log says the certificate is the problem: {output}"
    );
    let metrics = get_text(&hg, "/metrics").await;
    for (what, text) in [("output", &output), ("metrics", &metrics)] {
        assert!(!text.contains(PASSWORD), "the password is in the {what}");
    }
}

/// A front-end on a Redis Cluster (`urls`, `cluster = true`).
fn cluster_replica(cluster: &RedisCluster, extra: &str) -> SharedDedupe {
    let cfg: RedisDedupeConfig = toml::from_str(&format!(
        "urls = {}\ncluster = true\nclaim_ttl = \"1s\"\ncommand_timeout = \"200ms\"\n{extra}",
        cluster.urls_toml()
    ))
    .unwrap();
    assert!(cfg.check().is_empty(), "{:?}", cfg.check());
    SharedDedupe::with_redis(
        Dedupe::new(1000, Duration::from_secs(3600)),
        Arc::new(RedisStore::new(&cfg, vec!["github".into()], Duration::from_secs(3600)).unwrap()),
    )
}

/// The claim protocol on a 3-master Redis Cluster: the SET NX GET claim and the three Lua
/// scripts (commit, release, renew) each touch one key, so none fails with CROSSSLOT, and
/// keys land on every node. Concurrent copies on two replicas append once per delivery; a
/// failed append releases its claim; a slow owner's claim is renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_claims_commit_release_and_renew_across_slots() {
    if !redis_available() {
        return;
    }
    let cluster = RedisCluster::start(3);
    let (a, b) = (cluster_replica(&cluster, ""), cluster_replica(&cluster, ""));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..24 {
        for i in 0..4 {
            let d = if i % 2 == 0 { a.clone() } else { b.clone() };
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                let id = format!("c-{n}");
                let got = admit_counted(&d, &id, &runs, Duration::from_millis(50)).await;
                (id, got)
            }));
        }
    }
    let mut new = std::collections::HashMap::<String, usize>::new();
    for t in tasks {
        let (id, got) = t.await.unwrap();
        let got = got.unwrap_or_else(|e| panic!("{id}: {e:?}"));
        if matches!(got, Admission::New(_)) {
            *new.entry(id).or_default() += 1;
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 24, "one append per delivery");
    assert_eq!(new.len(), 24, "{new:?}");
    assert!(new.values().all(|&n| n == 1), "{new:?}");
    // Spread over the slots of every node, each committed.
    let mut per_node = [0usize; 3];
    for n in 0..24 {
        let key = a.redis().unwrap().key(0, &format!("c-{n}"));
        let owner = cluster.owner(&key);
        per_node[owner] += 1;
        let v = cluster.nodes[owner].cli(&["GET", &key]);
        assert!(v.starts_with("d:"), "{key}: {v}");
    }
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");
    // Release: a failed append leaves no key, and the retry on the other replica appends.
    let failed = a
        .admit(0, "c-fail", intent(), |_| async {
            Err::<Ulid, _>(Fail::Down)
        })
        .await;
    assert_eq!(failed.map_err(|e| (*e).clone()), Err(Fail::Down));
    let key = a.redis().unwrap().key(0, "c-fail");
    assert!(cluster.nodes[cluster.owner(&key)]
        .cli(&["GET", &key])
        .starts_with("r:"));
    let got = admit_counted(&b, "c-fail", &runs, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(got, Admission::New(_)), "{got:?}");
    // Renew: an append of 2.5 claim TTLs keeps its claim; B's copy waits and is a duplicate.
    let slow = {
        let (a, runs) = (a.clone(), runs.clone());
        tokio::spawn(async move {
            admit_counted(&a, "c-slow", &runs, Duration::from_millis(2500)).await
        })
    };
    let key = a.redis().unwrap().key(0, "c-slow");
    let owner = cluster.owner(&key);
    while cluster.nodes[owner].cli(&["EXISTS", &key]) != "1" {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = admit_counted(&b, "c-slow", &runs, Duration::ZERO)
        .await
        .unwrap();
    let Admission::New(id) = slow.await.unwrap().unwrap() else {
        panic!("the slow owner appends")
    };
    assert_eq!(got, Admission::Duplicate(id));
    assert_eq!(runs.load(Ordering::SeqCst), 26);
}

/// The Redis keys a GitHub delivery of [`post`] touches: its delivery id's, and its body
/// digest's (GitHub sources dedupe on both; `body_key` in `ingest/src/server.rs`).
fn delivery_keys(d: &SharedDedupe, delivery: &str) -> [String; 2] {
    let (body, _) = crate::tls::push(delivery);
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let store = d.redis().unwrap();
    [
        store.key(0, delivery),
        store.key(0, &format!("\u{1}body:{}", hex::encode(digest.as_ref()))),
    ]
}

/// Two hookgate processes on a 3-master cluster: concurrent copies of one delivery across
/// them give one non-duplicate answer; with one node paused (SIGSTOP) and the others'
/// script caches flushed, `reject` refuses (503) every delivery with a key on that node (a
/// GitHub delivery has two: its id's and its body digest's), accepts every delivery whose
/// two keys live on the others (committed there), and says "degraded" (some operations
/// fail, not all); `local` accepts them all and says "degraded".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hookgates_on_a_cluster_agree_and_a_paused_node_refuses_only_its_keys() {
    if !redis_available() {
        return;
    }
    let cluster = RedisCluster::start(3);
    let section = |mode: &str| {
        format!(
            "urls = {}\ncluster = true\non_unavailable = \"{mode}\"\n",
            cluster.urls_toml()
        )
    };
    // A slower command timeout than the other tests: a live node's answer must not time
    // out on a loaded machine, since every live-node delivery must be accepted below.
    let config = |mode: &str| {
        gate_config(&section(mode))
            .replace("command_timeout = \"200ms\"", "command_timeout = \"1s\"")
    };
    let a = crate::harness::Hookgate::start(&config("reject"));
    let b = crate::harness::Hookgate::start(&config("reject"));
    for n in 0..6 {
        let delivery = format!("cl-{n}");
        let mut posts = Vec::new();
        for i in 0..6 {
            let hg = if i % 2 == 0 { &a } else { &b };
            posts.push(post(hg, &delivery));
        }
        let answers = futures_util::future::join_all(posts).await;
        let fresh = answers
            .iter()
            .filter(|(s, v)| *s == 200 && v["duplicate"] == false)
            .count();
        assert_eq!(fresh, 1, "{delivery}: {answers:?}");
        let ids: std::collections::HashSet<String> = answers
            .iter()
            .filter(|(s, _)| *s == 200)
            .map(|(_, v)| v["id"].to_string())
            .collect();
        assert_eq!(ids.len(), 1, "{delivery}: one event id: {answers:?}");
    }
    // Pause one node; the keys of fresh deliveries that live there.
    let keys = cluster_replica(&cluster, "");
    let paused = 1usize;
    let ids: Vec<String> = (0..30).map(|n| format!("pz-{n}")).collect();
    let on_paused: Vec<bool> = ids
        .iter()
        .map(|id| {
            delivery_keys(&keys, id)
                .iter()
                .any(|k| cluster.owner(k) == paused)
        })
        .collect();
    let id_on_paused: Vec<bool> = ids
        .iter()
        .map(|id| cluster.owner(&keys.redis().unwrap().key(0, id)) == paused)
        .collect();
    // Each class is there: both keys on live nodes; the delivery id's key live and the
    // digest's on the paused node; the delivery id's key on the paused node.
    assert!(on_paused.iter().any(|&p| !p));
    assert!(on_paused.iter().zip(&id_on_paused).any(|(&p, &i)| p && !i));
    assert!(id_on_paused.iter().any(|&i| i));
    let local = crate::harness::Hookgate::start(&config("local"));
    cluster.nodes[paused].pause();
    // The live nodes lose their script cache (as a restarted node or a promoted replica
    // has): a script must then be sent to its key's node alone, not loaded on every node
    // with SCRIPT LOAD, which waits for the paused one.
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i != paused {
            assert_eq!(node.cli(&["SCRIPT", "FLUSH"]), "OK");
        }
    }
    let mut answers = Vec::new();
    for id in &ids {
        answers.push(post(&a, id).await);
    }
    let mut local_answers = Vec::new();
    for id in ids.iter().filter(|_| true) {
        local_answers.push(post(&local, &format!("{id}-l")).await);
    }
    let ready = get_text(&local, "/readyz").await;
    let ready_reject = get_text(&a, "/readyz").await;
    cluster.nodes[paused].resume();
    let seq: Vec<String> = ids
        .iter()
        .zip(&answers)
        .zip(&on_paused)
        .map(|((id, (s, _)), p)| format!("{id}:{s}:{}", if *p { "paused" } else { "live" }))
        .collect();
    // Every delivery with a key on the paused node is refused (GitHub dedupes on the
    // delivery id and on the body's digest: two keys, either may be there); every delivery
    // whose two keys live on the answering nodes is accepted, its keys committed there.
    for (((id, (s, body)), &p), &on_id) in
        ids.iter().zip(&answers).zip(&on_paused).zip(&id_on_paused)
    {
        if p {
            assert_eq!(
                *s, 503,
                "{id} has a key on the paused node: {body}: {seq:?}"
            );
            assert!(body.to_string().contains("dedupe_unavailable"), "{body}");
            if !on_id {
                // Its delivery id's claim (on a live node) was released for the retry.
                let key = keys.redis().unwrap().key(0, id);
                let v = cluster.nodes[cluster.owner(&key)].cli(&["GET", &key]);
                assert!(v.starts_with("r:"), "{id}: released: {v}");
            }
        } else {
            assert_eq!(
                *s, 200,
                "{id}: both keys live on answering nodes: {body}: {seq:?}"
            );
            for key in delivery_keys(&keys, id) {
                let v = cluster.nodes[cluster.owner(&key)].cli(&["GET", &key]);
                assert!(
                    v.starts_with("d:"),
                    "{id} accepted with its keys committed: {v}"
                );
            }
        }
    }
    assert!(
        ready_reject.contains("\"dedupe\":\"degraded\""),
        "some operations fail, not all: {ready_reject}"
    );
    assert!(
        local_answers.iter().all(|(s, _)| *s == 200),
        "local accepts everything: {local_answers:?}"
    );
    assert!(ready.contains("\"dedupe\":\"degraded\""), "{ready}");
}

/// `local` writes back what it decided alone: Redis paused, delivery A accepted by hookgate
/// 1 on its own; once Redis answers again the id is written back (metric), and A sent to
/// hookgate 2, which never saw it, is a duplicate with A's id, not a second record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_accepted_locally_during_an_outage_are_written_back() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (one, two, first) = accepted_alone(&redis, "wb-1").await;
    assert!(get_text(&one, "/readyz")
        .await
        .contains("\"dedupe\":\"degraded\""));
    redis.resume();
    written_back(&one).await;
    the_other_replica_sees_a_duplicate(&redis, &two, "wb-1", &first).await;
}

/// The same, but the replica that accepted the delivery alone is killed (SIGKILL) right
/// after answering, started again while Redis is still paused, killed again, and started
/// once Redis answers: the queue it could not write back is kept on disk
/// (`<spool>/dedupe/redis-write-back.jsonl`) across both crashes, so hookgate 2 still
/// answers duplicate with the first id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_accepted_locally_are_written_back_after_the_replica_is_killed_twice() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let (mut one, two, first) = accepted_alone(&redis, "wb-killed").await;
    // Each start re-reads the file and queues both ids (the delivery id and the body's
    // digest) again, the one after the second kill included.
    let queued = |hg: &crate::harness::Hookgate| {
        hg.log()
            .matches("queued to be written back queued=2")
            .count()
    };
    one.restart();
    assert_eq!(queued(&one), 1, "{}", one.log());
    one.restart();
    assert_eq!(queued(&one), 2, "{}", one.log());
    redis.resume();
    // Whichever start finds Redis answering first writes them back.
    one.restart();
    let key = key_of(&redis, "wb-killed");
    let want = format!("d:{}", first["id"].as_str().unwrap());
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while redis.cli(&["GET", &key]) != want {
        assert!(
            std::time::Instant::now() < end,
            "never written back:\n{}",
            one.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    the_other_replica_sees_a_duplicate(&redis, &two, "wb-killed", &first).await;
    // Written back, the file is emptied: a later start has nothing to write back.
    let file = one.dir().join("spool/dedupe/redis-write-back.jsonl");
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) > 0 {
        assert!(
            std::time::Instant::now() < end,
            "{} is not emptied",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    one.restart();
    assert_eq!(queued(&one), 2, "{}", one.log());
}

/// The Redis key of GitHub delivery id `delivery`.
fn key_of(redis: &Redis, delivery: &str) -> String {
    replica(redis, "").redis().unwrap().key(0, delivery)
}

/// Two hookgates sharing `redis` under `local` (2 s command timeout); Redis is paused and
/// `delivery` is posted to the first, which accepts it alone. Returns both and its answer.
async fn accepted_alone(
    redis: &Redis,
    delivery: &str,
) -> (
    crate::harness::Hookgate,
    crate::harness::Hookgate,
    serde_json::Value,
) {
    let section = format!("url = \"{}\"\non_unavailable = \"local\"\n", redis.url());
    let config = gate_config(&section).replace("\"200ms\"", "\"2s\"");
    let one = crate::harness::Hookgate::start(&config);
    let two = crate::harness::Hookgate::start(&config);
    redis.pause();
    let (s, first) = post(&one, delivery).await;
    assert_eq!(
        (s, &first["duplicate"]),
        (200, &serde_json::json!(false)),
        "{first}"
    );
    (one, two, first)
}

/// Waits (at most 30 s) until `hg` wrote back at least one id to Redis and has none left.
async fn written_back(hg: &crate::harness::Hookgate) {
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = get_text(hg, "/metrics").await;
        // Two ids: the delivery id and the body's digest (GitHub dedupes on both).
        let written = m
            .lines()
            .find_map(|l| {
                l.strip_prefix("hookgate_dedupe_redis_write_back_total{result=\"written\"} ")
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if written >= 1.0
            && m.lines()
                .any(|l| l == "hookgate_dedupe_redis_write_back_pending 0")
        {
            return;
        }
        assert!(
            std::time::Instant::now() < end,
            "never written back: {m}\n{}",
            hg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `delivery`'s key in Redis holds the id of `first` (the first answer), and `other`, a
/// replica that never saw the delivery, answers it as a duplicate with that id.
async fn the_other_replica_sees_a_duplicate(
    redis: &Redis,
    other: &crate::harness::Hookgate,
    delivery: &str,
    first: &serde_json::Value,
) {
    let key = key_of(redis, delivery);
    assert_eq!(
        redis.cli(&["GET", &key]),
        format!("d:{}", first["id"].as_str().unwrap())
    );
    let (s, again) = post(other, delivery).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(again["id"], first["id"]);
}

/// Redis at `maxmemory` (noeviction, as the README recommends) refuses every write with
/// OOM but still answers PING. The store stays degraded as long as commands keep failing,
/// one degraded period, not a flap per probe (before, each 500 ms probe's PING cleared it
/// and the next delivery set it again: /readyz alternated and the period counter climbed);
/// `local` accepts meanwhile, and once memory is raised the store is healthy again and the
/// ids are written back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refusing_writes_but_answering_ping_stays_degraded() {
    if !redis_available() {
        return;
    }
    let redis = Redis::start();
    let section = format!("url = \"{}\"\non_unavailable = \"local\"\n", redis.url());
    let hg = crate::harness::Hookgate::start(&gate_config(&section));
    assert_eq!(post(&hg, "oom-0").await.0, 200);
    assert!(get_text(&hg, "/readyz").await.contains("\"dedupe\":\"ok\""));
    assert_eq!(
        redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
        "OK"
    );
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "1"]), "OK");
    let mut seen = Vec::new();
    // 3 s: six probes, each with PING answered.
    for n in 1..=15 {
        let (s, v) = post(&hg, &format!("oom-{n}")).await;
        assert_eq!(
            (s, &v["duplicate"]),
            (200, &serde_json::json!(false)),
            "{v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen.push(get_text(&hg, "/readyz").await);
    }
    assert!(
        seen.iter().all(|r| r.contains("\"dedupe\":\"degraded\"")),
        "{seen:#?}"
    );
    let periods = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("hookgate_dedupe_redis_degraded_total "))
            .map(str::to_owned)
    };
    let m = get_text(&hg, "/metrics").await;
    assert_eq!(periods(&m).as_deref(), Some("1"), "{m}");
    assert_eq!(redis.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !get_text(&hg, "/readyz").await.contains("\"dedupe\":\"ok\"") {
        assert!(
            std::time::Instant::now() < end,
            "never healthy again:\n{}",
            hg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    written_back(&hg).await;
    assert!(redis
        .cli(&["GET", &key_of(&redis, "oom-15")])
        .starts_with("d:"));
}

/// Posts `delivery` until it is answered 200, as a provider retries a 503 (bounded: 30 s).
async fn post_until_accepted(hg: &crate::harness::Hookgate, delivery: &str) -> serde_json::Value {
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, v) = post(hg, delivery).await;
        if s == 200 {
            return v;
        }
        assert_eq!(s, 503, "{delivery}: {v}");
        assert!(
            std::time::Instant::now() < end,
            "{delivery} never accepted: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Redis Sentinel (`redis-server --sentinel`) on loopback watching the master on
/// `master_port` as `mymaster`: quorum 1, down after 1 s, failover timeout 2 s. Killed on
/// drop.
struct Sentinel {
    _child: crate::harness::KillOnDrop,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let port = crate::harness::free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 2000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("sentinel.log")).unwrap();
        let child = crate::harness::KillOnDrop(
            Command::new(crate::harness::REDIS_SERVER)
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start redis-server --sentinel"),
        );
        let s = Sentinel {
            _child: child,
            port,
            dir,
        };
        s.wait_for("sentinel answers", |s| s.cli(&["PING"]).contains("PONG"));
        s
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = crate::harness::run(
            std::process::Command::new(crate::harness::REDIS_CLI)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(args),
            Duration::from_secs(5),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The port of the server the sentinel calls the master.
    fn master_port(&self) -> Option<u16> {
        let out = self.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"]);
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Waits (bounded: 30 s) until `ok`.
    fn wait_for(&self, what: &str, ok: impl Fn(&Sentinel) -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while !ok(self) {
            assert!(
                std::time::Instant::now() < end,
                "{what}: {}",
                std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Sentinel (`sentinels`, `service_name`): a master, a replica and a sentinel on loopback.
/// hookgate finds the master through the sentinel and dedupes there; the master is killed
/// (SIGKILL), the sentinel promotes the replica, and hookgate follows it: it accepts and
/// dedupes new deliveries again (a second hookgate that never saw them answers duplicate),
/// and an id committed before the failover and replicated is still a duplicate. (An id
/// committed in the last moment before the kill may not have reached the replica:
/// replication is asynchronous; README.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_follows_a_failover_and_keeps_deduping() {
    if !redis_available() {
        return;
    }
    let mut master = Redis::start();
    let replica_srv = Redis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let sentinel = Sentinel::start(master.port);
    let replica_port = replica_srv.port.to_string();
    sentinel.wait_for("the sentinel knows the replica", |s| {
        s.cli(&["SENTINEL", "replicas", "mymaster"])
            .contains(&replica_port)
    });
    // A short claim_ttl: a claim whose answer timed out under load (the server ran it, the
    // request got 503) holds its key for at most that long (it must stay over 3 x
    // command_timeout). command_timeout 1 s instead of gate_config's 200 ms: a commit that
    // times out on a loaded CI box is only written back a probe later, and this test reads
    // the key at once (it failed so in CI at 200 ms).
    let section = format!(
        "sentinels = [\"redis://127.0.0.1:{}\"]\nservice_name = \"mymaster\"\nclaim_ttl = \"4s\"\n",
        sentinel.port
    );
    let config = gate_config(&section).replace("\"200ms\"", "\"1s\"");
    let keys = replica(&master, "");
    let key = |id: &str| keys.redis().unwrap().key(0, id);
    let one = crate::harness::Hookgate::start(&config);
    let first = post_until_accepted(&one, "sn-1").await;
    assert_eq!(first["duplicate"], false, "{first}");
    let committed = format!("d:{}", first["id"].as_str().unwrap());
    assert_eq!(
        master.cli(&["GET", &key("sn-1")]),
        committed,
        "deduped on the master"
    );
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while replica_srv.cli(&["GET", &key("sn-1")]) != committed {
        assert!(std::time::Instant::now() < end, "never replicated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    master.stop();
    sentinel.wait_for("the sentinel promotes the replica", |s| {
        s.master_port() == Some(replica_srv.port)
    });
    // hookgate follows: a new delivery is accepted (503 while it still asks the dead one).
    let after = post_until_accepted(&one, "sn-2").await;
    assert_eq!(after["duplicate"], false, "{after}");
    assert_eq!(
        replica_srv.cli(&["GET", &key("sn-2")]),
        format!("d:{}", after["id"].as_str().unwrap()),
        "committed on the new master"
    );
    // A hookgate that never saw either delivery: both are duplicates, through Redis.
    let two = crate::harness::Hookgate::start(&config);
    for (id, v) in [("sn-1", &first), ("sn-2", &after)] {
        let got = post_until_accepted(&two, id).await;
        assert_eq!(got["duplicate"], true, "{id}: {got}");
        assert_eq!(got["id"], v["id"], "{id}");
    }
}
