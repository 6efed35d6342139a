//! The Kafka producer: idempotent, `acks=all`, one record per accepted event, keyed and
//! headed per the record contract. Each append waits for its own delivery report.
//!
//! Errors are sorted once, here (the list vector keeps in `sinks/kafka/service.rs`):
//! - final, the event can never be written as is: message too large, record/batch invalid,
//!   topic or cluster authorization failed, unknown topic after the start-up check;
//! - retriable, the provider should try again later (503): queue full, message timed out,
//!   all brokers down, transport errors, not enough replicas, leader changes — everything else.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// How long a request waits for the broker before spilling to the spool (ack = "kafka"
    /// with a `[spool]` section).
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
    /// Passed to librdkafka as is (SASL, TLS, compression, …); these win over hookgate's
    /// defaults.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
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
        for (k, v) in &self.options {
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
fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}
fn default_retry_after() -> u32 {
    5
}

/// Why the producer could not take an event.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// Retriable: the broker is down, slow, or the local queue is full.
    #[error("kafka unavailable: {0}")]
    Unavailable(KafkaError),
    /// The record is larger than the broker or producer accepts.
    #[error("record too large for kafka: {0}")]
    TooLarge(KafkaError),
    /// Final: the broker refuses this record (authorization, unknown topic, invalid).
    #[error("kafka rejected the record: {0}")]
    Rejected(KafkaError),
    /// The producer could not be built from config.
    #[error("kafka config: {0}")]
    Config(KafkaError),
    /// Topics missing at start.
    #[error("kafka topics missing: {0:?} (create them, or set kafka.create_topics = true)")]
    MissingTopics(Vec<String>),
}

/// librdkafka callbacks: note when every broker connection is down.
#[derive(Clone)]
pub struct Ctx {
    down: Arc<AtomicBool>,
}

impl ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.down.store(true, Ordering::Relaxed);
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

type Inner = FutureProducer<Ctx>;

/// The Kafka producer hookgate appends to.
///
/// The producer is rebuilt (a new idempotent producer id) when librdkafka reports a fatal
/// error — its documented remedy — and when the cluster comes back after every broker was
/// down: a broker that lost its producer state (Tansu with sqlite storage panics on a
/// produce from a producer id issued before its restart) must not see the old id again.
/// While the cluster is known to be down, appends fail fast with `Unavailable` instead of
/// each waiting out `delivery_timeout`.
#[derive(Clone)]
pub struct KafkaLog {
    producer: Arc<RwLock<Inner>>,
    client_config: Arc<ClientConfig>,
    ctx: Ctx,
    cfg: Arc<KafkaConfig>,
    ready: Arc<AtomicBool>,
    delivery_seconds: metrics::Histogram,
    /// Whether librdkafka's own message timeout is `delivery_timeout` (not overridden in
    /// `[kafka.options]`), so a full-length wait needs no timer of ours.
    rdkafka_times_out: bool,
}

impl KafkaLog {
    /// Builds the producer (idempotent, acks=all, lz4, small linger; user options on top).
    pub fn new(cfg: &KafkaConfig) -> Result<KafkaLog, KafkaSinkError> {
        let in_flight = cfg.max_in_flight.to_string();
        let cc = cfg.producer_config(
            "hookgate",
            &[
                ("compression.codec", "lz4"),
                // Produce requests go out as soon as a batch is ready (Nagle would hold
                // small ones back for the previous one's ACK).
                ("socket.nagle.disable", "true"),
                ("max.in.flight.requests.per.connection", &in_flight),
                ("queue.buffering.max.messages", "1000000"),
            ],
        );
        let ctx = Ctx {
            down: Arc::new(AtomicBool::new(false)),
        };
        let producer: Inner = cc
            .create_with_context(ctx.clone())
            .map_err(KafkaSinkError::Config)?;
        Ok(KafkaLog {
            producer: Arc::new(RwLock::new(producer)),
            client_config: Arc::new(cc),
            ctx,
            cfg: Arc::new(cfg.clone()),
            ready: Arc::new(AtomicBool::new(true)),
            delivery_seconds: metrics::histogram!("hookgate_kafka_delivery_seconds"),
            rdkafka_times_out: !cfg
                .options
                .keys()
                .any(|k| k == "message.timeout.ms" || k == "delivery.timeout.ms"),
        })
    }

    fn current(&self) -> Inner {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the producer with a fresh one (new producer id); the old one's queue is
    /// flushed briefly in the background and then dropped (its undelivered messages fail,
    /// and their requests have already been answered non-2xx).
    fn rebuild(&self, why: &str) {
        match self
            .client_config
            .create_with_context::<Ctx, Inner>(self.ctx.clone())
        {
            Ok(fresh) => {
                let old = std::mem::replace(
                    &mut *self.producer.write().unwrap_or_else(|p| p.into_inner()),
                    fresh,
                );
                tracing::warn!(why, "kafka producer rebuilt");
                metrics::counter!("hookgate_kafka_producer_rebuilds_total").increment(1);
                std::thread::spawn(move || {
                    let _ = old.flush(Duration::from_millis(500));
                });
            }
            Err(e) => tracing::error!(error = %e, "kafka producer could not be rebuilt"),
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
            .map_err(KafkaSinkError::Config)?;
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
        let producer = self.current();
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

    /// Produces one event and waits for its delivery report.
    pub async fn append(&self, ev: &Event) -> Result<(), KafkaSinkError> {
        self.append_within(ev, self.cfg.delivery_timeout).await
    }

    /// Produces one event and waits at most `wait` for its delivery report. On a timeout the
    /// message may still be delivered later (at-least-once; consumers dedupe by `hookgate-id`).
    pub async fn append_within(&self, ev: &Event, wait: Duration) -> Result<(), KafkaSinkError> {
        let oh = record_headers(ev, 0);
        let mut record = FutureRecord::to(&ev.topic)
            .payload(&ev.body[..])
            .key(&ev.key[..])
            .headers(oh);
        if self.ctx.down.load(Ordering::Relaxed) {
            return Err(KafkaSinkError::Unavailable(KafkaError::MessageProduction(
                RDKafkaErrorCode::AllBrokersDown,
            )));
        }
        let producer = self.current();
        let started = Instant::now();
        let deadline = started + wait;
        let fut = loop {
            match producer.send_result(record) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // Backpressure: librdkafka's queue is full; wait for room until the deadline.
                    if Instant::now() >= deadline {
                        return Err(KafkaSinkError::Unavailable(KafkaError::MessageProduction(
                            RDKafkaErrorCode::QueueFull,
                        )));
                    }
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(classify(e)),
            }
        };
        // librdkafka reports every message by `message.timeout.ms` (= delivery_timeout), so
        // a wait that long needs no timer of ours; a shorter one (spill_after) does.
        let res = if self.rdkafka_times_out && wait >= self.cfg.delivery_timeout {
            Ok(fut.await)
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, fut).await
        };
        self.delivery_seconds
            .record(started.elapsed().as_secs_f64());
        match res {
            Ok(Ok(Ok(_))) => {
                self.ready.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(Ok(Err((e, _)))) => {
                let err = classify(e);
                if matches!(err, KafkaSinkError::Unavailable(_)) {
                    self.ready.store(false, Ordering::Relaxed);
                }
                Err(err)
            }
            Ok(Err(_canceled)) => Err(KafkaSinkError::Unavailable(KafkaError::Canceled)),
            Err(_elapsed) => Err(KafkaSinkError::Unavailable(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            ))),
        }
    }

    /// Whether the broker looked reachable at the last delivery or probe.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Probes the cluster with a metadata request, updates readiness, and rebuilds the
    /// producer after a fatal error or once the cluster is back from a full outage.
    pub async fn probe(&self) -> bool {
        let producer = self.current();
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
            self.rebuild("fatal error");
        } else if ok && self.ctx.down.load(Ordering::Relaxed) {
            self.rebuild("cluster back after all brokers were down");
        }
        if ok {
            self.ctx.down.store(false, Ordering::Relaxed);
        }
        self.ready.store(ok, Ordering::Relaxed);
        ok
    }

    /// Waits for every queued message to be delivered (or `timeout`).
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.current();
        let res = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        match res {
            Ok(Ok(())) => tracing::info!("kafka producer flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "kafka producer flush incomplete"),
            Err(_) => tracing::warn!("kafka flush task failed"),
        }
    }
}

/// The contract headers of `ev` as an rdkafka header block, with room for `extra` more.
pub fn record_headers(ev: &Event, extra: usize) -> OwnedHeaders {
    let headers = ev.record_headers();
    let mut oh = OwnedHeaders::new_with_capacity(headers.len() + extra);
    for (k, v) in &headers {
        oh = oh.insert(Header {
            key: k,
            value: Some(v.as_ref()),
        });
    }
    oh
}

fn classify(e: KafkaError) -> KafkaSinkError {
    use RDKafkaErrorCode as C;
    let code = match &e {
        KafkaError::MessageProduction(c) => Some(*c),
        other => other.rdkafka_error_code(),
    };
    match code {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize) => KafkaSinkError::TooLarge(e),
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::InvalidMessage
            | C::InvalidRecord
            | C::UnknownTopic
            | C::InvalidTopic,
        ) => KafkaSinkError::Rejected(e),
        _ => KafkaSinkError::Unavailable(e),
    }
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
