//! End-to-end tests of the dispatcher feed and the dead-letter stores: real spools in temp
//! directories, fake chat APIs on loopback, and a real Kafka-protocol broker (Tansu, from
//! [`crate::harness::tansu_bin`]; a missing broker fails the test, it is never replaced by
//! a mock).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::fakes::{FakeTelegram, Reply};
use bytes::Bytes;
use hookgate_proto::{Event, Ulid};
use hookgate_sinks::chat::{RouteConfig, SinkConfig};
use hookgate_sinks::dispatch::{
    dlq_list, dlq_replay, run_kafka_feed, run_spool_feed, DeadLetter, DeliveryOutcome, Dispatcher,
    DlqStore, KafkaDeadLetter, MemoryDeadLetter, SpoolDeadLetter,
};
use hookgate_sinks::log::kafka::{KafkaConfig, KafkaLog};
use hookgate_sinks::log::spool::{Spool, SpoolConfig};
use serde_json::json;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

fn event(topic: &str, n: u32) -> Event {
    Event {
        id: Ulid::new(),
        source: "github".into(),
        provider: "github".into(),
        topic: topic.into(),
        event_type: "push".into(),
        delivery_id: format!("d{n}"),
        key: Bytes::from(format!("key-{n}")),
        received_at_ms: hookgate_proto::now_ms(),
        content_type: Some("application/json".into()),
        kept_headers: vec![("x-github-hook-id".into(), Bytes::from_static(b"7"))],
        body: Bytes::from(format!("{{\"n\":{n}}}")),
    }
}

fn telegram(name: &str, chat: &str, fake: &FakeTelegram) -> SinkConfig {
    serde_json::from_value(json!({
        "type": "telegram", "name": name, "bot_token": "123:ABCDEF", "chat_id": chat,
        "api_url": fake.api_url(), "max_attempts": 1, "backoff_base": "1ms",
        "chat_interval": "1ms", "bot_rate": 1000
    }))
    .unwrap()
}

/// Sinks `tg` (chat 42, routed from source `github`, text `ev <id>`) and `tg2` (chat 43,
/// no route: only dead letters and replays reach it).
fn dispatcher(fake: &FakeTelegram, dead_letter: Arc<dyn DeadLetter>) -> Dispatcher {
    let route: RouteConfig = serde_json::from_value(json!({
        "source": "github", "sink": "tg", "template": "ev {{ event.id }}"
    }))
    .unwrap();
    Dispatcher::new(
        vec![telegram("tg", "42", fake), telegram("tg2", "43", fake)],
        vec![route],
        dead_letter,
    )
    .unwrap()
}

/// Ids in the `ev <id>` texts the fake received for chat 42, in arrival order.
fn delivered(fake: &FakeTelegram) -> Vec<String> {
    fake.sent()
        .into_iter()
        .filter(|(chat, _)| chat == "42")
        .filter_map(|(_, t)| t.strip_prefix("ev ").map(str::to_owned))
        .collect()
}

/// Waits until the fake has received at least `n` requests, failing the test if it has not
/// within [`WAIT`].
async fn received(fake: &FakeTelegram, n: usize) {
    let got = fake.wait_for(n, WAIT).await.len();
    assert!(
        got >= n,
        "the fake received {got} requests within {WAIT:?}, expected {n}: {:?}",
        fake.sent()
    );
}

fn spool_cfg(path: &std::path::Path) -> SpoolConfig {
    SpoolConfig {
        path: path.to_path_buf(),
        ..Default::default()
    }
}

mod spool {
    use super::*;

    fn start(spool: &Spool, d: &Dispatcher) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let consumers = Arc::new(vec!["dispatcher".to_owned()]);
        let h = tokio::spawn(run_spool_feed(spool.clone(), d.clone(), consumers, rx));
        (tx, h)
    }

    async fn stop(tx: watch::Sender<bool>, h: tokio::task::JoinHandle<()>) {
        tx.send(true).unwrap();
        tokio::time::timeout(WAIT, h)
            .await
            .expect("the feed stops within WAIT")
            .expect("the feed task ends without a panic");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn feed_delivers_commits_and_dead_letters_then_replay_delivers_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = spool_cfg(&dir.path().join("spool"));
        let spool = Spool::open(&cfg).expect("the spool opens");
        let dlq = SpoolDeadLetter::open_beside(&cfg).expect("the spool DLQ opens");
        let fake = FakeTelegram::start().await;
        let d = dispatcher(&fake, Arc::new(dlq.clone()));

        let first: Vec<Event> = (1..=3).map(|n| event("t", n)).collect();
        for e in &first {
            spool.append(e).await.expect("the spool takes the append");
        }
        let (tx, h) = start(&spool, &d);
        received(&fake, 3).await;
        let want: Vec<String> = first.iter().map(|e| e.id_string()).collect();
        assert_eq!(delivered(&fake), want, "in spool order");
        stop(tx, h).await;

        // The next event fails for good at the API: it must land in the DLQ, and the one
        // after it must still be delivered.
        let failing = event("t", 4);
        let ok = event("t", 5);
        spool
            .append(&failing)
            .await
            .expect("the spool takes the append");
        spool.append(&ok).await.expect("the spool takes the append");
        fake.push(Reply::BadRequest);
        let (tx, h) = start(&spool, &d);
        received(&fake, 5).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop(tx, h).await;
        assert_eq!(fake.count(), 5, "committed events are not delivered again");
        // The failed attempt reached the fake too.
        let mut want_all = want.clone();
        want_all.extend([failing.id_string(), ok.id_string()]);
        assert_eq!(delivered(&fake), want_all);

        let store = DlqStore::Spool(dlq.clone());
        let listed = dlq_list(&store, None).await.expect("the DLQ lists");
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].event, failing,
            "the event comes back without dlq headers"
        );
        assert_eq!(listed[0].sink, "tg");
        assert!(!listed[0].error.is_empty());
        assert!(listed[0].at.ends_with('Z'), "{}", listed[0].at);
        assert!(!listed[0].error.contains("ABCDEF"), "bot token redacted");

        // The API recovered: replay delivers it once, a second replay nothing.
        let r = dlq_replay(&store, &d, None).await.expect("the DLQ replays");
        assert_eq!((r.replayed, r.failed, r.remaining), (1, 0, 0));
        assert_eq!(fake.count(), 6);
        assert!(fake.sent()[5].1.contains(&failing.id_string()));
        let r = dlq_replay(&store, &d, None).await.expect("the DLQ replays");
        assert_eq!((r.replayed, r.failed, r.remaining), (0, 0, 0));
        assert_eq!(fake.count(), 6);
        assert!(dlq_list(&store, None)
            .await
            .expect("the DLQ lists")
            .is_empty());

        // Progress is durable: a reopened DLQ has nothing pending either.
        drop(store);
        drop(d);
        drop(dlq);
        let dlq = SpoolDeadLetter::open_beside(&cfg).expect("the spool DLQ opens");
        assert!(dlq.list(None).await.expect("the DLQ lists").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replay_stops_at_a_failure_and_a_sink_filter_skips_other_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let dlq =
            SpoolDeadLetter::open_beside(&spool_cfg(dir.path())).expect("the spool DLQ opens");
        let fake = FakeTelegram::start().await;
        let d = dispatcher(&fake, Arc::new(MemoryDeadLetter::new()));
        let store = DlqStore::Spool(dlq.clone());

        // Not a push: tg2 has no route, so a replay renders the built-in summary, whose
        // push branch needs a real push body.
        let mut a = event("t", 1);
        a.event_type = "ping".into();
        let b = event("t", 2);
        let c = event("t", 3);
        store
            .dead_letter(&a, "tg2", "boom a")
            .await
            .expect("the DLQ takes a dead letter");
        store
            .dead_letter(&b, "tg", "boom b")
            .await
            .expect("the DLQ takes a dead letter");
        store
            .dead_letter(&c, "tg", "boom c")
            .await
            .expect("the DLQ takes a dead letter");

        // b is replayed behind a (pending for tg2): it must not come back.
        fake.push(Reply::Ok);
        fake.push(Reply::BadRequest);
        let r = dlq_replay(&store, &d, Some("tg"))
            .await
            .expect("the DLQ replays");
        assert_eq!((r.replayed, r.failed, r.remaining), (1, 1, 1));
        let (failed, _) = r.failure.expect("the replay reports its failure");
        assert_eq!(failed.event.id, c.id);
        let pending: Vec<Ulid> = dlq_list(&store, None)
            .await
            .expect("the DLQ lists")
            .iter()
            .map(|e| e.event.id)
            .collect();
        assert_eq!(pending, vec![a.id, c.id]);

        let r = dlq_replay(&store, &d, Some("tg"))
            .await
            .expect("the DLQ replays");
        assert_eq!(
            (r.replayed, r.failed, r.remaining),
            (1, 0, 0),
            "{:?}",
            r.failure
        );
        assert_eq!(fake.count(), 3);
        let pending = dlq_list(&store, None).await.expect("the DLQ lists");
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].event.id, pending[0].sink.as_str()),
            (a.id, "tg2")
        );

        let r = dlq_replay(&store, &d, None).await.expect("the DLQ replays");
        assert_eq!(
            (r.replayed, r.failed, r.remaining),
            (1, 0, 0),
            "{:?}",
            r.failure
        );
        let last = fake.sent().pop().expect("the fake received the replay");
        assert_eq!(last.0, "43", "replayed through tg2");
        let r = dlq_replay(&store, &d, None).await.expect("the DLQ replays");
        assert_eq!((r.replayed, r.failed, r.remaining), (0, 0, 0));
        assert_eq!(fake.count(), 4);
        // Everything up to the end is done, so the replay cursor passed it all.
        let spool = dlq.spool();
        assert_eq!(
            spool.cursor("replay").expect("a spool cursor"),
            spool.end_offset()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_event_whose_dead_letter_write_fails_is_retried_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = spool_cfg(dir.path());
        let spool = Spool::open(&cfg).expect("the spool opens");
        let fake = FakeTelegram::start().await;
        let mem = Arc::new(MemoryDeadLetter::new());
        mem.set_failing(true);
        let d = dispatcher(&fake, mem.clone());
        let bad = event("t", 1);
        let next = event("t", 2);
        spool
            .append(&bad)
            .await
            .expect("the spool takes the append");
        spool
            .append(&next)
            .await
            .expect("the spool takes the append");
        fake.set_default(Reply::BadRequest);
        let (tx, h) = start(&spool, &d);
        // Tried, not done, tried again: the feed must not move on to `next`.
        received(&fake, 2).await;
        assert!(delivered(&fake).iter().all(|id| *id == bad.id_string()));
        assert_eq!(spool.cursor("dispatcher").expect("a spool cursor"), 0);
        mem.set_failing(false);
        fake.set_default(Reply::Ok);
        let end = tokio::time::Instant::now() + WAIT;
        while !delivered(&fake).contains(&next.id_string()) && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop(tx, h).await;
        // Either the last retry of `bad` was delivered, or it failed and was dead-lettered.
        assert_eq!(delivered(&fake).last(), Some(&next.id_string()));
        assert_eq!(
            spool.cursor("dispatcher").expect("a spool cursor"),
            spool.end_offset()
        );
    }
}

mod kafka {
    use super::*;
    use crate::harness::Broker;
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    /// The feed's Kafka settings for `b`, with short group timeouts so a restarted consumer
    /// gets its partitions back quickly.
    fn config(b: &Broker) -> KafkaConfig {
        serde_json::from_value(json!({
            "brokers": b.bootstrap(), "delivery_timeout": "20s", "topic_partitions": 2,
            "options": {"session.timeout.ms": "6000", "max.poll.interval.ms": "7000"}
        }))
        .expect("a valid KafkaConfig")
    }

    fn unique(prefix: &str) -> String {
        format!("{prefix}-{}", Ulid::new().to_string().to_lowercase())
    }

    fn start(
        cfg: &KafkaConfig,
        group: &str,
        topic: &str,
        d: &Dispatcher,
    ) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let (cfg, group, topic, d) = (cfg.clone(), group.to_owned(), topic.to_owned(), d.clone());
        let h = tokio::spawn(async move {
            run_kafka_feed(&cfg, &group, vec![topic], d, rx)
                .await
                .expect("the kafka feed runs until told to stop");
        });
        (tx, h)
    }

    async fn stop(tx: watch::Sender<bool>, h: tokio::task::JoinHandle<()>) {
        tx.send(true).unwrap();
        tokio::time::timeout(WAIT, h)
            .await
            .expect("the feed stops within WAIT")
            .expect("the feed task ends without a panic");
    }

    fn ids(events: &[Event]) -> HashSet<String> {
        events.iter().map(Event::id_string).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn feed_delivers_commits_and_resumes_after_restart() {
        let b = Broker::start();
        let cfg = config(&b);
        let topic = unique("feed");
        b.create_topic(&topic, 2).await;
        let log = KafkaLog::new(&cfg, 1 << 20).expect("a kafka log");
        let fake = FakeTelegram::start().await;
        let d = dispatcher(&fake, Arc::new(MemoryDeadLetter::new()));
        let group = unique("dispatch");

        let first: Vec<Event> = (1..=4).map(|n| event(&topic, n)).collect();
        for e in &first {
            log.append(e).await.expect("kafka takes the append");
        }
        // A record not written by hookgate: skipped, its offset stored all the same.
        let raw: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", b.bootstrap())
            .create()
            .unwrap();
        raw.send(
            FutureRecord::<str, str>::to(&topic)
                .payload("not hookgate")
                .key("key-1"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

        let (tx, h) = start(&cfg, &group, &topic, &d);
        received(&fake, 4).await;
        assert_eq!(
            delivered(&fake).into_iter().collect::<HashSet<_>>(),
            ids(&first)
        );
        stop(tx, h).await;

        let second: Vec<Event> = (5..=6).map(|n| event(&topic, n)).collect();
        for e in &second {
            log.append(e).await.expect("kafka takes the append");
        }
        let (tx, h) = start(&cfg, &group, &topic, &d);
        received(&fake, 6).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop(tx, h).await;
        let got = delivered(&fake);
        assert_eq!(
            got.len(),
            6,
            "nothing committed is delivered again: {got:?}"
        );
        assert_eq!(
            got[4..].iter().cloned().collect::<HashSet<_>>(),
            ids(&second)
        );
        log.flush(Duration::from_secs(5)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_sink_holds_back_only_its_own_partition() {
        let b = Broker::start();
        let cfg = config(&b);
        let topic = unique("parts");
        b.create_topic(&topic, 2).await;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", b.bootstrap())
            .create()
            .unwrap();
        let evs: Vec<Event> = (1..=2).map(|n| event(&topic, n)).collect();
        for (p, e) in evs.iter().enumerate() {
            let mut headers = rdkafka::message::OwnedHeaders::new();
            for (k, v) in e.record_headers() {
                headers = headers.insert(rdkafka::message::Header {
                    key: k,
                    value: Some(v.as_ref()),
                });
            }
            let rec = FutureRecord::to(&topic)
                .partition(p as i32)
                .payload(&e.body[..])
                .key(&e.key[..])
                .headers(headers);
            producer
                .send(rec, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .expect("produce a test record");
        }
        let fake = FakeTelegram::start().await;
        // Whichever event goes first is answered after 4 s.
        fake.push(Reply::Delay(Duration::from_secs(4)));
        let d = dispatcher(&fake, Arc::new(MemoryDeadLetter::new()));
        let (tx, h) = start(&cfg, &unique("dispatch"), &topic, &d);
        received(&fake, 1).await;
        let t0 = std::time::Instant::now();
        fake.wait_for(2, Duration::from_secs(3)).await;
        assert_eq!(fake.count(), 2, "the other partition was not held back");
        assert!(t0.elapsed() < Duration::from_secs(3));
        stop(tx, h).await;
        assert_eq!(
            delivered(&fake).into_iter().collect::<HashSet<_>>(),
            ids(&evs)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dead_letters_are_listed_and_replayed_once() {
        let b = Broker::start();
        let cfg = config(&b);
        let dlq_topic = unique("dlq");
        b.create_topic(&dlq_topic, 2).await;
        let dlq = KafkaDeadLetter::new(&cfg, &dlq_topic).expect("a kafka DLQ");
        let fake = FakeTelegram::start().await;
        let d = dispatcher(&fake, Arc::new(dlq.clone()));
        let store = DlqStore::Kafka(dlq.clone());
        assert!(dlq_list(&store, None)
            .await
            .expect("the DLQ lists")
            .is_empty());

        // Dead-lettered by the dispatcher itself.
        let failing = event("webhooks.github", 1);
        fake.push(Reply::BadRequest);
        let report = d.dispatch(&failing).await;
        assert!(report.is_done());
        assert!(matches!(
            report.deliveries[0].outcome,
            DeliveryOutcome::DeadLettered { .. }
        ));
        let mut other = event("webhooks.github", 2);
        other.event_type = "ping".into();
        store
            .dead_letter(&other, "tg2", "boom")
            .await
            .expect("the DLQ takes a dead letter");

        let listed = dlq_list(&store, None).await.expect("the DLQ lists");
        assert_eq!(listed.len(), 2);
        let mine = listed
            .iter()
            .find(|e| e.sink == "tg")
            .expect("the dead letter of sink tg is listed");
        assert_eq!(
            mine.event, failing,
            "original record back, topic and headers included"
        );
        assert!(mine.at.ends_with('Z'));
        assert!(!mine.error.is_empty());
        assert_eq!(
            dlq_list(&store, Some("tg2"))
                .await
                .expect("the DLQ lists")
                .len(),
            1
        );

        let r = dlq_replay(&store, &d, Some("tg"))
            .await
            .expect("the DLQ replays");
        assert_eq!((r.replayed, r.failed, r.remaining), (1, 0, 0));
        assert_eq!(delivered(&fake).last(), Some(&failing.id_string()));
        let r = dlq_replay(&store, &d, Some("tg"))
            .await
            .expect("the DLQ replays");
        assert_eq!((r.replayed, r.failed), (0, 0));
        let left = dlq_list(&store, None).await.expect("the DLQ lists");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].event.id, other.id);

        fake.push(Reply::BadRequest);
        let r = dlq_replay(&store, &d, None).await.expect("the DLQ replays");
        assert_eq!((r.replayed, r.failed, r.remaining), (0, 1, 1));
        let r = dlq_replay(&store, &d, None).await.expect("the DLQ replays");
        assert_eq!((r.replayed, r.failed, r.remaining), (1, 0, 0));
        let r = dlq_replay(&store, &d, None).await.expect("the DLQ replays");
        assert_eq!((r.replayed, r.failed, r.remaining), (0, 0, 0));
        assert!(dlq_list(&store, None)
            .await
            .expect("the DLQ lists")
            .is_empty());
        // 1 failed dispatch + 1 replay to tg, 1 failed + 1 ok replay to tg2.
        assert_eq!(fake.count(), 4);
    }
}
