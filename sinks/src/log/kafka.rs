//! The Kafka producer: idempotent, `acks=all`, one record per accepted event, keyed and
//! headed per the record contract. Each append waits for its own delivery report.
//!
//! Errors are sorted once, here, into [`AppendError`] (the list vector keeps in
//! `sinks/kafka/service.rs`):
//! - final (`Refused`, the record goes to the quarantine): message too large, record/batch
//!   invalid, topic or cluster authorization failed, unknown topic (deleted after start);
//! - retriable (`Unavailable`): queue full, message timed out, all brokers down, transport
//!   errors, not enough replicas, leader changes, fencing — everything else.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookgate_proto::Event;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer, ProducerContext};
use serde::Deserialize;
use std::sync::RwLock;

use super::error::{AppendError, Cause, RefuseReason};
use super::Position;

/// `[kafka]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topic for sources that name none.
    #[serde(default = "default_topic")]
    pub default_topic: String,
    /// When an event is acknowledged: `kafka` (on the broker's ack; spill to the spool when
    /// the broker is slower than `spill_after`) or `spool` (after the local fsync, forwarded
    /// in the background).
    #[serde(default)]
    pub ack: AckMode,
    /// A delivery slower than this marks the broker slow (ack = "kafka" with a `[spool]`):
    /// the next events spill to the spool at admission until deliveries are prompt again.
    /// Requests whose message is already with librdkafka keep waiting for its report (up to
    /// `delivery_timeout`), so no event is both spooled and delivered.
    #[serde(default = "default_spill_after", with = "humantime_serde")]
    pub spill_after: Duration,
    /// How long a request waits for the broker's ack before answering 503; also librdkafka's
    /// `message.timeout.ms`, so a message that got a 503 is not delivered later.
    #[serde(default = "default_delivery_timeout", with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// librdkafka `linger.ms`: how long the producer waits to fill a batch. 0 sends at once;
    /// with `max_in_flight = 1` batches still fill while the previous request is acked.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: Duration,
    /// librdkafka `max.in.flight.requests.per.connection` (1..=5 with idempotence). 1 makes
    /// each produce request carry everything that arrived during the previous one (natural
    /// batching): fewer, larger requests, measured +20–30% req/s and a third lower p99 than
    /// 5 with `linger = 1ms` (bench/RESULTS.md). Raise it on links with a long round trip.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Create missing topics at start (else a missing topic is a start-up error).
    #[serde(default)]
    pub create_topics: bool,
    /// Partitions for topics hookgate creates.
    #[serde(default = "default_partitions")]
    pub topic_partitions: i32,
    /// Replication factor for topics hookgate creates.
    #[serde(default = "default_replication")]
    pub topic_replication: i32,
    /// Seconds in the `Retry-After` of a 503 when the broker cannot take the event.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u32,
    /// A producer whose deliveries keep failing this long while the cluster answers
    /// metadata requests is replaced by a new one (fencing and fatal errors replace it at
    /// once). Each replacement can write records that were in flight twice (same
    /// `hookgate-id`).
    #[serde(default = "default_replace_after", with = "humantime_serde")]
    pub replace_producer_after: Duration,
    /// Passed to librdkafka as is (SASL, TLS, compression, …); these win over hookgate's
    /// defaults. Options that would weaken "2xx means durable" are refused (see
    /// [`unsafe_options`]) unless `allow_unsafe_options` is set.
    /// Values of sensitive options (`sasl.password`, `ssl.key.password`, … see
    /// [`is_sensitive_option`]) never print: `Debug` and errors show `***`.
    #[serde(default)]
    pub options: KafkaOptions,
    /// Lets `[kafka.options]` change acks, idempotence, timeouts or offset storage. A 2xx
    /// then may not mean durable. Never set it for production traffic.
    #[serde(default)]
    pub allow_unsafe_options: bool,
}

/// `[kafka.options]`: librdkafka properties as given. `Debug` prints the values of
/// sensitive properties as `***`; deserializing accepts strings, integers, floats and
/// booleans (librdkafka takes every value as a string) and its errors name the key, never
/// the value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaOptions(pub BTreeMap<String, String>);

impl std::ops::Deref for KafkaOptions {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown: &dyn std::fmt::Debug = if is_sensitive_option(k) { &"***" } else { v };
                (k, shown)
            }))
            .finish()
    }
}

impl KafkaOptions {
    /// Replaces the value of every sensitive option found in `text` with `***` (librdkafka's
    /// own config errors quote the value they refuse).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (k, v) in &self.0 {
            if is_sensitive_option(k) && !v.is_empty() {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }

    /// Checks every option with librdkafka itself (unknown property, invalid value), as
    /// `hookgate check` should, without connecting. Errors are redacted.
    pub fn check(&self) -> Result<(), String> {
        for (k, v) in &self.0 {
            let mut cc = ClientConfig::new();
            cc.set(k, v);
            if let Err(e) = cc.create_native_config() {
                let msg = match e {
                    KafkaError::ClientConfig(_, desc, _, _) => desc,
                    other => other.to_string(),
                };
                let msg = if is_sensitive_option(k) && !v.is_empty() {
                    msg.replace(v.as_str(), "***")
                } else {
                    msg
                };
                return Err(format!("kafka.options.\"{k}\": {}", self.redact(&msg)));
            }
        }
        Ok(())
    }
}

/// Whether a librdkafka property holds a secret: the ones librdkafka itself marks
/// sensitive (`rdkafka_conf.c`, `_RK_SENSITIVE`), plus any name containing `password`,
/// `secret` or ending in `.pem`/`key` material, so a future property is covered too.
pub fn is_sensitive_option(key: &str) -> bool {
    const SENSITIVE: &[&str] = &[
        "sasl.username",
        "sasl.password",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "sasl.oauthbearer.assertion.private.key.pem",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl_key",
        "ssl.keystore.password",
        "ssl.ca.pem",
    ];
    let k = key.trim().to_ascii_lowercase();
    SENSITIVE.contains(&k.as_str())
        || k.contains("password")
        || k.contains("secret")
        || k.contains("passphrase")
        || k.ends_with(".pem")
}

impl<'de> Deserialize<'de> for KafkaOptions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};
        struct Options;
        struct Value(String);
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value(v.to_owned()))
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value(v.to_string()))
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value(v.to_string()))
            }
            fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
                Ok(Value(v.to_string()))
            }
            fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
                Err(A::Error::custom("found a list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
                Err(A::Error::custom("found a table"))
            }
        }
        impl<'de> Deserialize<'de> for Value {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(ValueVisitor)
            }
        }
        impl<'de> Visitor<'de> for Options {
            type Value = KafkaOptions;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table of librdkafka properties")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KafkaOptions, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v = map.next_value::<Value>().map_err(|_| {
                        A::Error::custom(format_args!(
                            "kafka.options.\"{k}\": expected a string, number or boolean (value not shown)"
                        ))
                    })?;
                    out.insert(k, v.0);
                }
                Ok(KafkaOptions(out))
            }
        }
        d.deserialize_map(Options)
    }
}

/// Options in `[kafka.options]` that would break "2xx means durable" (or the dispatcher's
/// commit-after-delivery), each with why: acks below all, no idempotence, a message timeout
/// other than `delivery_timeout` (a request answered 503 could still be delivered, and a
/// spilled one written twice), transactions, and offsets stored before delivery.
pub fn unsafe_options(options: &BTreeMap<String, String>) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for (k, v) in options {
        let v = v.trim().to_ascii_lowercase();
        let why = match k.as_str() {
            "acks" | "request.required.acks" if v != "all" && v != "-1" => {
                "acks below `all`: a 2xx would not mean every in-sync replica has the event"
            }
            "enable.idempotence" if v != "true" => {
                "without idempotence a retried produce can write an event twice or out of order"
            }
            "message.timeout.ms" | "delivery.timeout.ms" => {
                "set `[kafka] delivery_timeout` instead: it is also the 503 deadline"
            }
            "transactional.id" => "hookgate's producer is not transactional",
            "enable.auto.offset.store" if v != "false" => {
                "the dispatcher stores offsets only after delivery"
            }
            _ => continue,
        };
        out.push((k.clone(), why));
    }
    out
}

/// When an event is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckMode {
    /// 2xx on the broker's ack.
    #[default]
    Kafka,
    /// 2xx after the spool's fsync; forwarded in the background.
    Spool,
}

impl KafkaConfig {
    /// `linger` as librdkafka's `linger.ms`, which takes fractions (`"500us"` is 0.5).
    pub fn linger_ms(&self) -> String {
        (self.linger.as_secs_f64() * 1000.0).to_string()
    }

    /// A librdkafka client of these brokers: `settings`, then the user's
    /// `[kafka.options]` (SASL, TLS, compression, …), which win.
    pub fn client_config(&self, settings: &[(&str, &str)]) -> ClientConfig {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.brokers);
        for (k, v) in settings {
            cc.set(*k, *v);
        }
        for (k, v) in self.options.iter() {
            cc.set(k, v);
        }
        cc
    }

    /// A producer as every hookgate producer is: idempotent, `acks=all`, `linger`, and
    /// librdkafka's message timeout at `delivery_timeout` (so a message that got a 503 is
    /// not delivered later); then `settings`, then the user's options.
    pub fn producer_config(&self, client_id: &str, settings: &[(&str, &str)]) -> ClientConfig {
        let linger = self.linger_ms();
        let timeout = self.delivery_timeout.as_millis().max(1).to_string();
        let mut all = vec![
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("linger.ms", linger.as_str()),
            ("message.timeout.ms", timeout.as_str()),
            ("client.id", client_id),
        ];
        all.extend_from_slice(settings);
        self.client_config(&all)
    }
}

fn default_topic() -> String {
    "webhooks".into()
}
fn default_spill_after() -> Duration {
    Duration::from_secs(2)
}
fn default_delivery_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_linger() -> Duration {
    Duration::ZERO
}
fn default_max_in_flight() -> u32 {
    1
}
fn default_replace_after() -> Duration {
    Duration::from_secs(20)
}
fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}
fn default_retry_after() -> u32 {
    5
}

/// Why the producer could not be built or its topics checked (start-up and CLI errors; an
/// append's errors are [`AppendError`]s).
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// The broker could not be reached or did not answer in time.
    #[error("kafka unavailable: {0}")]
    Unavailable(KafkaError),
    /// The broker refused to create a topic.
    #[error("kafka refused: {0}")]
    Rejected(KafkaError),
    /// The producer could not be built from config.
    #[error("kafka config: {0}")]
    Config(String),
    /// Topics missing at start.
    #[error("kafka topics missing: {0:?} (create them, or set kafka.create_topics = true)")]
    MissingTopics(Vec<String>),
}

/// librdkafka callbacks: note when every broker connection is down.
#[derive(Clone)]
pub struct ClientEvents {
    down: Arc<AtomicBool>,
}

impl ClientContext for ClientEvents {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.down.store(true, Ordering::Relaxed);
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ProducerContext for ClientEvents {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

type RdProducer = FutureProducer<ClientEvents>;

/// The producer in use and its generation (bumped by each replacement).
struct Current {
    producer: RdProducer,
    generation: u64,
}

/// What the producer's recent deliveries say about the cluster.
struct Health {
    /// The broker looked reachable at the last delivery or probe (`/readyz`).
    ready: AtomicBool,
    /// A delivery waited longer than `spill_after` or failed: with a spool, new events are
    /// spilled at admission (never handed to librdkafka) until a delivery is prompt again.
    slow: AtomicBool,
    /// Milliseconds after `epoch` of the first retriable failure since the last success
    /// (0: none); the probe replaces a producer whose failures persist.
    failing_since_ms: AtomicU64,
    epoch: Instant,
}

impl Health {
    fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }

    /// Called on every delivery: loads first, so a healthy run writes no shared cache line.
    fn success(&self, prompt: bool) {
        if !self.ready.load(Ordering::Relaxed) {
            self.ready.store(true, Ordering::Relaxed);
        }
        if self.failing_since_ms.load(Ordering::Relaxed) != 0 {
            self.failing_since_ms.store(0, Ordering::Relaxed);
        }
        if prompt && self.slow.load(Ordering::Relaxed) {
            self.slow.store(false, Ordering::Relaxed);
        }
    }

    fn failure(&self) {
        self.slow.store(true, Ordering::Relaxed);
        let _ = self.failing_since_ms.compare_exchange(
            0,
            self.now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// How long retriable failures have gone on without a success.
    fn failing_for(&self) -> Option<Duration> {
        match self.failing_since_ms.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(self.now_ms().saturating_sub(since))),
        }
    }
}

/// The Kafka producer hookgate appends to.
///
/// A producer whose errors persist is replaced by a new one (a new idempotent producer id),
/// never retried forever: at once on a fatal error or a fencing error (`PRODUCER_FENCED`,
/// `INVALID_PRODUCER_EPOCH`, `UNKNOWN_PRODUCER_ID`, `OUT_OF_ORDER_SEQUENCE_NUMBER`: after
/// message timeouts librdkafka bumps its epoch and Tansu fences every later produce), when
/// the cluster is back after every broker was down, and when retriable failures have gone on
/// for `replace_producer_after` while the cluster answers metadata requests. While the
/// cluster is known to be down, appends fail fast instead of each waiting out
/// `delivery_timeout`.
#[derive(Clone)]
pub struct KafkaLog {
    current: Arc<RwLock<Current>>,
    client_config: Arc<ClientConfig>,
    events: ClientEvents,
    cfg: Arc<KafkaConfig>,
    health: Arc<Health>,
    delivery_seconds: metrics::Histogram,
    /// `hookgate_kafka_maybe_written_total`: failed deliveries that may have been written.
    maybe_written: metrics::Counter,
}

/// librdkafka's `message.max.bytes` default, when neither hookgate nor the user sets it.
pub const LIBRDKAFKA_MESSAGE_MAX_BYTES: u64 = 1_000_000;

impl KafkaLog {
    /// Builds the producer (idempotent, acks=all, lz4; user options on top).
    /// `max_record_bytes` is the largest record the server can hand it (body plus
    /// overhead): librdkafka's `message.max.bytes` is raised to it unless the user set it.
    pub fn new(cfg: &KafkaConfig, max_record_bytes: u64) -> Result<KafkaLog, KafkaSinkError> {
        let in_flight = cfg.max_in_flight.to_string();
        let max_message = max_record_bytes
            .max(LIBRDKAFKA_MESSAGE_MAX_BYTES)
            .to_string();
        let cc = cfg.producer_config(
            "hookgate",
            &[
                ("compression.codec", "lz4"),
                // Produce requests go out as soon as a batch is ready (Nagle would hold
                // small ones back for the previous one's ACK).
                ("socket.nagle.disable", "true"),
                ("max.in.flight.requests.per.connection", &in_flight),
                ("queue.buffering.max.messages", "1000000"),
                ("message.max.bytes", &max_message),
            ],
        );
        let events = ClientEvents {
            down: Arc::new(AtomicBool::new(false)),
        };
        let producer: RdProducer = cc
            .create_with_context(events.clone())
            .map_err(|e| KafkaSinkError::Config(cfg.options.redact(&e.to_string())))?;
        Ok(KafkaLog {
            current: Arc::new(RwLock::new(Current {
                producer,
                generation: 0,
            })),
            client_config: Arc::new(cc),
            events,
            cfg: Arc::new(cfg.clone()),
            health: Arc::new(Health {
                ready: AtomicBool::new(true),
                slow: AtomicBool::new(false),
                failing_since_ms: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
            delivery_seconds: metrics::histogram!("hookgate_kafka_delivery_seconds"),
            maybe_written: metrics::counter!("hookgate_kafka_maybe_written_total"),
        })
    }

    fn current(&self) -> (RdProducer, u64) {
        let c = self.current.read().unwrap_or_else(|p| p.into_inner());
        (c.producer.clone(), c.generation)
    }

    /// Replaces the producer with a fresh one (new producer id), unless it was already
    /// replaced since generation `seen`. The old one is dropped in the background after a
    /// short flush; its undelivered messages then fail (purged), and their appends see a
    /// retriable error (spilled to the spool, or 503).
    fn replace(&self, seen: u64, why: &'static str) {
        let mut c = self.current.write().unwrap_or_else(|p| p.into_inner());
        if c.generation != seen {
            return;
        }
        match self
            .client_config
            .create_with_context::<ClientEvents, RdProducer>(self.events.clone())
        {
            Ok(fresh) => {
                let old = std::mem::replace(&mut c.producer, fresh);
                c.generation += 1;
                drop(c);
                self.health.failing_since_ms.store(0, Ordering::Relaxed);
                tracing::warn!(why, "kafka producer replaced");
                metrics::counter!("hookgate_kafka_producer_replaced_total", "reason" => why)
                    .increment(1);
                std::thread::spawn(move || {
                    let _ = old.flush(Duration::from_millis(500));
                });
            }
            Err(e) => {
                let error = self.cfg.options.redact(&e.to_string());
                tracing::error!(%error, "kafka producer could not be replaced")
            }
        }
    }

    /// The config this producer was built from.
    pub fn config(&self) -> &KafkaConfig {
        &self.cfg
    }

    /// Checks that every topic exists; creates the missing ones when configured to.
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<(), KafkaSinkError> {
        let missing = self.missing_topics(topics).await?;
        if missing.is_empty() {
            return Ok(());
        }
        if !self.cfg.create_topics {
            return Err(KafkaSinkError::MissingTopics(missing));
        }
        let admin: AdminClient<DefaultClientContext> = self
            .cfg
            .client_config(&[])
            .create()
            .map_err(|e| KafkaSinkError::Config(self.cfg.options.redact(&e.to_string())))?;
        let news: Vec<NewTopic> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.cfg.topic_partitions,
                    TopicReplication::Fixed(self.cfg.topic_replication),
                )
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = admin
            .create_topics(&news, &opts)
            .await
            .map_err(KafkaSinkError::Unavailable)?;
        for r in results {
            match r {
                Ok(t) => tracing::info!(topic = %t, "created kafka topic"),
                Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(topic = %t, "topic already exists")
                }
                Err((t, code)) => {
                    tracing::error!(topic = %t, error = %code, "could not create kafka topic");
                    return Err(KafkaSinkError::Rejected(KafkaError::AdminOp(code)));
                }
            }
        }
        Ok(())
    }

    async fn missing_topics(&self, topics: &[String]) -> Result<Vec<String>, KafkaSinkError> {
        let (producer, _) = self.current();
        let topics = topics.to_vec();
        tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map_err(KafkaSinkError::Unavailable)?;
            let have: std::collections::HashSet<&str> =
                md.topics().iter().map(|t| t.name()).collect();
            let mut missing: Vec<String> = topics
                .iter()
                .filter(|t| !have.contains(t.as_str()))
                .cloned()
                .collect();
            missing.sort();
            missing.dedup();
            Ok(missing)
        })
        .await
        .map_err(|_| KafkaSinkError::Unavailable(KafkaError::Canceled))?
    }

    /// Whether `topic` exists, by a metadata request; `None` when the cluster did not answer.
    /// Tells a deleted topic (quarantine its records) from an outage (retry them).
    pub async fn topic_exists(&self, topic: &str) -> Option<bool> {
        let (producer, _) = self.current();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .ok()?;
            if md.brokers().is_empty() {
                return None;
            }
            // A deleted topic is left out of the answer, or listed with an error.
            Some(
                md.topics()
                    .iter()
                    .any(|t| t.name() == topic && t.error().is_none()),
            )
        })
        .await
        .ok()
        .flatten()
    }

    /// Whether new events should go to the spool at admission instead of to librdkafka:
    /// the cluster is down, or a recent delivery was slow or failed.
    pub fn should_spill(&self) -> bool {
        self.events.down.load(Ordering::Relaxed)
            || self.health.slow.load(Ordering::Relaxed)
            || !self.health.ready.load(Ordering::Relaxed)
    }

    /// Produces one event and waits for its delivery report (librdkafka reports every
    /// message within `message.timeout.ms` = `delivery_timeout`).
    /// Returns where the broker put it (from the delivery report).
    pub async fn append(&self, ev: &Event) -> Result<Position, AppendError> {
        self.produce(ev, false).await
    }

    /// Like [`KafkaLog::append`], and marks the log slow once the wait passes `spill_after`,
    /// so the caller spills the next events at admission. The message already handed to
    /// librdkafka is still waited for: spilling it too could write it twice.
    pub async fn append_watching(&self, ev: &Event) -> Result<Position, AppendError> {
        self.produce(ev, true).await
    }

    async fn produce(&self, ev: &Event, watch_slow: bool) -> Result<Position, AppendError> {
        let oh = record_headers(ev, 0);
        let mut record = FutureRecord::to(&ev.topic)
            .payload(&ev.body[..])
            .key(&ev.key[..])
            .headers(oh);
        if self.events.down.load(Ordering::Relaxed) {
            return Err(self.unavailable(KafkaError::MessageProduction(
                RDKafkaErrorCode::AllBrokersDown,
            )));
        }
        let (producer, generation) = self.current();
        let started = Instant::now();
        let deadline = started + self.cfg.delivery_timeout;
        let mut fut = loop {
            match producer.send_result(record) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Backpressure: librdkafka's queue is full; wait for room until the deadline.
                    if Instant::now() >= deadline {
                        return Err(self.unavailable(KafkaError::MessageProduction(
                            RDKafkaErrorCode::QueueFull,
                        )));
                    }
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(self.failed(e, generation)),
            }
        };
        let res = if watch_slow {
            match tokio::time::timeout(self.cfg.spill_after, &mut fut).await {
                Ok(r) => r,
                Err(_) => {
                    self.health.slow.store(true, Ordering::Relaxed);
                    fut.await
                }
            }
        } else {
            fut.await
        };
        let took = started.elapsed();
        self.delivery_seconds.record(took.as_secs_f64());
        match res {
            Ok(Ok(delivery)) => {
                self.health.success(took < self.cfg.spill_after);
                Ok(Position::Kafka {
                    partition: delivery.partition,
                    offset: delivery.offset,
                })
            }
            Ok(Err((e, _))) => Err(self.failed(e, generation)),
            Err(_canceled) => Err(self.unavailable(KafkaError::Canceled)),
        }
    }

    fn unavailable(&self, e: KafkaError) -> AppendError {
        AppendError::Unavailable {
            retry_after: self.cfg.retry_after_secs,
            cause: Cause::Kafka(e),
        }
    }

    /// Sorts a failed produce, notes it for health, and replaces a fenced producer.
    fn failed(&self, e: KafkaError, generation: u64) -> AppendError {
        let err = classify(e, self.cfg.retry_after_secs);
        if err.maybe_written() {
            // The record may still reach the broker: whoever sends it again (a spill, the
            // forwarder's retry, a provider's retry) can write it twice, same hookgate-id.
            self.maybe_written.increment(1);
        }
        if let AppendError::Unavailable {
            cause: Cause::Kafka(k),
            ..
        } = &err
        {
            self.health.failure();
            self.health.ready.store(false, Ordering::Relaxed);
            if is_fencing(k) {
                self.replace(generation, "fenced");
            }
        }
        err
    }

    /// Whether the broker looked reachable at the last delivery or probe.
    pub fn is_ready(&self) -> bool {
        self.health.ready.load(Ordering::Relaxed)
    }

    /// Probes the cluster with a metadata request, updates readiness, and replaces the
    /// producer after a fatal error, once the cluster is back from a full outage, or when
    /// deliveries have failed for `replace_producer_after` while the cluster answers.
    pub async fn probe(&self) -> bool {
        let (producer, generation) = self.current();
        let (ok, fatal) = tokio::task::spawn_blocking(move || {
            let ok = producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|md| !md.brokers().is_empty())
                .unwrap_or(false);
            (ok, producer.client().fatal_error())
        })
        .await
        .unwrap_or((false, None));
        if let Some((code, reason)) = fatal {
            tracing::error!(error = %code, reason, "kafka producer hit a fatal error");
            self.replace(generation, "fatal");
        } else if ok && self.events.down.load(Ordering::Relaxed) {
            self.replace(generation, "cluster_back");
        } else if ok
            && self
                .health
                .failing_for()
                .is_some_and(|d| d >= self.cfg.replace_producer_after)
        {
            self.replace(generation, "persistent_errors");
        }
        if ok {
            self.events.down.store(false, Ordering::Relaxed);
        }
        self.health.ready.store(ok, Ordering::Relaxed);
        ok
    }

    /// Waits for every queued message to be delivered (or `timeout`).
    pub async fn flush(&self, timeout: Duration) {
        let (producer, _) = self.current();
        let res = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        match res {
            Ok(Ok(())) => tracing::info!("kafka producer flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "kafka producer flush incomplete"),
            Err(_) => tracing::warn!("kafka flush task failed"),
        }
    }
}

/// Errors after which this producer id is of no more use: only a new producer clears them.
fn is_fencing(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    let code = match e {
        KafkaError::MessageProduction(c) => Some(*c),
        other => other.rdkafka_error_code(),
    };
    matches!(
        code,
        Some(
            C::ProducerFenced
                | C::InvalidProducerEpoch
                | C::UnknownProducerId
                | C::OutOfOrderSequenceNumber
                | C::InvalidProducerIdMapping
                | C::Fatal
        )
    )
}

/// The contract headers of `ev` as an rdkafka header block, with room for `extra` more.
pub fn record_headers(ev: &Event, extra: usize) -> OwnedHeaders {
    // Written straight into librdkafka's header list: no list of pairs, no `String` for
    // the id or the time (three allocations per event fewer on the request path).
    let mut oh = Some(OwnedHeaders::new_with_capacity(
        ev.record_header_count() + extra,
    ));
    ev.for_each_record_header(|key, value| {
        oh = oh.take().map(|h| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        });
    });
    oh.unwrap_or_else(|| OwnedHeaders::new_with_capacity(extra))
}

/// Sorts a producer error: final (the record can never be written as is) or retriable.
pub fn classify(e: KafkaError, retry_after: u32) -> AppendError {
    use RDKafkaErrorCode as C;
    let code = match &e {
        KafkaError::MessageProduction(c) => Some(*c),
        other => other.rdkafka_error_code(),
    };
    let reason = match code {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize) => RefuseReason::TooLarge,
        Some(C::UnknownTopic | C::UnknownTopicOrPartition) => RefuseReason::UnknownTopic,
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed,
        ) => RefuseReason::NotAuthorized,
        Some(C::InvalidMessage | C::InvalidRecord | C::InvalidTopic) => RefuseReason::Invalid,
        _ => {
            return AppendError::Unavailable {
                retry_after,
                cause: Cause::Kafka(e),
            }
        }
    };
    AppendError::Refused { reason, error: e }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::KafkaConfig;

    #[test]
    fn producers_share_the_durable_settings_and_user_options_win() {
        let cfg: KafkaConfig = serde_json::from_str(
            r#"{"brokers": "b1:9092", "linger": "500us",
                "options": {"compression.codec": "zstd", "security.protocol": "ssl"}}"#,
        )
        .unwrap();
        let cc = cfg.producer_config("hookgate", &[("compression.codec", "lz4")]);
        assert_eq!(cc.get("bootstrap.servers"), Some("b1:9092"));
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
        assert_eq!(cc.get("acks"), Some("all"));
        assert_eq!(cc.get("linger.ms"), Some("0.5"));
        assert_eq!(cc.get("message.timeout.ms"), Some("10000"));
        assert_eq!(cc.get("client.id"), Some("hookgate"));
        assert_eq!(cc.get("compression.codec"), Some("zstd"));
        assert_eq!(cc.get("security.protocol"), Some("ssl"));
        let admin = cfg.client_config(&[]);
        assert_eq!(admin.get("bootstrap.servers"), Some("b1:9092"));
        assert_eq!(admin.get("acks"), None);
        assert_eq!(admin.get("security.protocol"), Some("ssl"));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod option_tests {
    use super::{is_sensitive_option, KafkaConfig};

    const PASSWORD: &str = "kafka-pass-0451";

    #[test]
    fn sensitive_options_never_print() {
        let cfg: KafkaConfig = serde_json::from_str(&format!(
            r#"{{"brokers": "b1:9092", "options": {{"sasl.password": "{PASSWORD}",
                "ssl.key.password": "{PASSWORD}", "ssl.keystore.password": "{PASSWORD}",
                "sasl.oauthbearer.client.secret": "{PASSWORD}", "compression.codec": "zstd",
                "batch.num.messages": 1000, "socket.keepalive.enable": true}}}}"#
        ))
        .unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains(PASSWORD), "{dbg}");
        assert!(
            dbg.contains("\"sasl.password\": \"***\"") && dbg.contains("zstd"),
            "{dbg}"
        );
        // Numbers and booleans are accepted as librdkafka strings.
        assert_eq!(cfg.options.get("batch.num.messages").unwrap(), "1000");
        assert_eq!(cfg.options.get("socket.keepalive.enable").unwrap(), "true");
        // (This librdkafka build has no OAuth/OIDC: `check` reports that option, redacted.)
        let e = cfg.options.check().unwrap_err();
        assert!(
            e.contains("sasl.oauthbearer.client.secret") && !e.contains(PASSWORD),
            "{e}"
        );
        let mut without_oauth = cfg.options.clone();
        without_oauth.0.remove("sasl.oauthbearer.client.secret");
        assert_eq!(without_oauth.check(), Ok(()));
        // The client still gets the real value.
        assert_eq!(cfg.client_config(&[]).get("sasl.password"), Some(PASSWORD));
        for k in [
            "sasl.password",
            "SSL.KEY.PASSWORD",
            "sasl.oauthbearer.config",
            "ssl.key.pem",
        ] {
            assert!(is_sensitive_option(k), "{k}");
        }
        assert!(!is_sensitive_option("compression.codec"));
    }

    #[test]
    fn option_errors_name_the_key_not_the_value() {
        // A table where a value belongs: refused without echoing what is inside.
        let e = serde_json::from_str::<KafkaConfig>(&format!(
            r#"{{"brokers": "b", "options": {{"sasl.password": ["{PASSWORD}"]}}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(!e.contains(PASSWORD) && e.contains("sasl.password"), "{e}");
        // librdkafka refuses an unknown property; a misspelt password key is still redacted.
        let cfg: KafkaConfig = serde_json::from_str(&format!(
            r#"{{"brokers": "b", "options": {{"sasl.pasword": "{PASSWORD}"}}}}"#
        ))
        .unwrap();
        let e = cfg.options.check().unwrap_err();
        assert!(!e.contains(PASSWORD) && e.contains("sasl.pasword"), "{e}");
        let cfg: KafkaConfig =
            serde_json::from_str(r#"{"brokers": "b", "options": {"linger.ms": "soon"}}"#).unwrap();
        let e = cfg.options.check().unwrap_err();
        assert!(e.contains("linger.ms"), "{e}");
    }
}
