//! [`KafkaDeadLetter`]: dead letters as records on a DLQ topic (default `hookgate.dlq`).
//!
//! A DLQ record is the original record (value = raw body, key, every `hookgate-*` contract
//! header and the kept headers) plus `hookgate-dlq-sink`, `-error`, `-at` and `-topic` (the
//! topic the event was on). A write resolves Ok only on the broker's delivery report
//! (idempotent producer, acks=all).
//!
//! Replay progress is the committed offsets of the consumer group `hookgate-dlq-replay`.
//! `list` and `replay` read each partition from that position (or the beginning) up to the
//! high watermark read at the start, with explicitly assigned partitions (no group join,
//! no rebalance), and stop there. An entry replayed out of order (under a sink filter,
//! behind another sink's pending entry) gets a marker record in its partition instead.
//! Two replays of the same DLQ must not run at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hookgate_proto::Event;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::dispatch::dead_letter::{DeadLetter, DlqError};
use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::dlq::{
    classify, count_dlq_error, count_dlq_write, dlq_header, now_rfc3339, pending, pending_selected,
    replay_records, DlqEntry, DlqRecord, OnStep, Progress, RecordKind, ReplayReport, Selection,
    REPLAY_GROUP,
};
use crate::dispatch::feed::{message_headers, FeedError};
use crate::log::kafka::KafkaConfig;

/// The DLQ topic when the config names none.
pub const DEFAULT_DLQ_TOPIC: &str = "hookgate.dlq";

/// How long a metadata, watermark or commit request, or one poll, may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A dead-letter store on a Kafka topic. Cheap to clone.
#[derive(Clone)]
pub struct KafkaDeadLetter {
    producer: FutureProducer,
    cfg: Arc<KafkaConfig>,
    topic: Arc<str>,
}

impl KafkaDeadLetter {
    /// Builds the DLQ producer (idempotent, acks=all; `kafka.options` on top) for `topic`.
    /// The topic must exist (see `KafkaLog::ensure_topics`).
    pub fn new(kafka: &KafkaConfig, topic: &str) -> Result<Self, FeedError> {
        // The user's options win, as for the main producer (SASL, TLS, compression, …).
        let cc = kafka.producer_config("hookgate-dlq", &[]);
        Ok(KafkaDeadLetter {
            producer: cc
                .create()
                .map_err(|e| FeedError::Client(kafka.options.redact(&e.to_string())))?,
            cfg: Arc::new(kafka.clone()),
            topic: Arc::from(topic),
        })
    }

    /// The DLQ topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Pending entries, partition by partition in offset order, only those for
    /// `sink_filter` when given.
    pub async fn list(&self, sink_filter: Option<&str>) -> Result<Vec<DlqEntry>, FeedError> {
        let (_, records) = self.scan().await?;
        Ok(pending(&records, sink_filter))
    }

    /// Replays pending entries (see [`dlq_replay`](crate::dispatch::dlq_replay)), committing the replay group's
    /// offset after each one.
    pub async fn replay(
        &self,
        dispatcher: &Dispatcher,
        sink_filter: Option<&str>,
    ) -> Result<ReplayReport, FeedError> {
        self.replay_selected(dispatcher, &Selection::sink(sink_filter), &|_| {})
            .await
    }

    /// Pending entries that `sel` takes, in order.
    pub async fn list_selected(&self, sel: &Selection<'_>) -> Result<Vec<DlqEntry>, FeedError> {
        let (_, records) = self.scan().await?;
        Ok(pending_selected(&records, sel))
    }

    /// Replays the pending entries `sel` takes, calling `on_step` after each one.
    pub async fn replay_selected(
        &self,
        dispatcher: &Dispatcher,
        sel: &Selection<'_>,
        on_step: OnStep<'_>,
    ) -> Result<ReplayReport, FeedError> {
        let (consumer, records) = self.scan().await?;
        let progress = KafkaProgress {
            consumer: Arc::new(consumer),
            producer: self.producer.clone(),
            topic: self.topic.clone(),
            timeout: self.cfg.delivery_timeout,
        };
        replay_records(&records, dispatcher, sel, &progress, on_step).await
    }

    /// Reads every record from the replay position to the high watermark. Returns the
    /// consumer too, so a replay commits through the client that read.
    async fn scan(&self) -> Result<(BaseConsumer, Vec<DlqRecord>), FeedError> {
        let cfg = self.cfg.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || scan_blocking(&cfg, &topic))
            .await
            .map_err(|_| FeedError::Kafka(KafkaError::Canceled))?
    }
}

fn scan_blocking(
    kafka: &KafkaConfig,
    topic: &str,
) -> Result<(BaseConsumer, Vec<DlqRecord>), FeedError> {
    let mut cc = kafka.client_config(&[]);
    // Set after the options: the replay position must only move through our commits.
    cc.set("group.id", REPLAY_GROUP)
        .set("client.id", "hookgate-dlq-replay")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cc
        .create()
        .map_err(|e| FeedError::Client(kafka.options.redact(&e.to_string())))?;
    let md = consumer
        .client()
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(FeedError::MissingTopic(topic.to_owned()));
    }
    let mut query = TopicPartitionList::new();
    for p in &partitions {
        query.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(query, REQUEST_TIMEOUT)?;
    let mut assign = TopicPartitionList::new();
    // Per partition: (next offset expected, high watermark).
    let mut want: std::collections::BTreeMap<i32, (i64, i64)> = Default::default();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT)?;
        let start = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            // No commit yet: from the oldest record kept.
            _ => low,
        };
        if start < high {
            assign.add_partition_offset(topic, p, Offset::Offset(start))?;
            want.insert(p, (start, high));
        }
    }
    let mut out = Vec::new();
    if want.is_empty() {
        return Ok((consumer, out));
    }
    consumer.assign(&assign)?;
    while let Some((&first, &(at, high))) = want.iter().next() {
        let msg = match consumer.poll(REQUEST_TIMEOUT) {
            None => {
                return Err(FeedError::Timeout {
                    topic: topic.to_owned(),
                    partition: first,
                    at,
                    high,
                })
            }
            Some(r) => r?,
        };
        let (p, off) = (msg.partition(), msg.offset());
        let Some(&(_, high)) = want.get(&p) else {
            continue;
        };
        if off < high {
            out.push(DlqRecord {
                partition: p,
                position: off as u64,
                next: off as u64 + 1,
                kind: record_kind(topic, &msg, p),
            });
        }
        if off + 1 >= high {
            want.remove(&p);
        } else {
            want.insert(p, (off + 1, high));
        }
    }
    consumer.unassign()?;
    // Partition by partition, in offset order, so the replay walk sees each run in order.
    out.sort_by_key(|r| (r.partition, r.position));
    Ok((consumer, out))
}

fn record_kind(topic: &str, msg: &impl Message, partition: i32) -> RecordKind {
    let headers = message_headers(msg);
    let offset = msg.offset() as u64;
    if let Some((_, v)) = headers.iter().find(|(k, _)| *k == dlq_header::REPLAYED) {
        // A marker has no hookgate-id, so it is recognised before decoding.
        return match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
            Some(target) => RecordKind::Marker { target },
            None => RecordKind::Foreign,
        };
    }
    let body = Bytes::copy_from_slice(msg.payload().unwrap_or_default());
    match Event::from_record(topic, msg.key(), body, headers) {
        Ok(ev) => classify(ev, partition, offset),
        Err(e) => {
            tracing::warn!(topic, partition, offset, error = %e, "dlq record is not a hookgate record; passed over");
            RecordKind::Foreign
        }
    }
}

#[async_trait]
impl DeadLetter for KafkaDeadLetter {
    async fn dead_letter(&self, ev: &Event, sink: &str, error: &str) -> Result<(), DlqError> {
        let at = now_rfc3339();
        let mut headers = crate::log::kafka::record_headers(ev, 4);
        for (k, v) in [
            (dlq_header::SINK, sink),
            (dlq_header::ERROR, error),
            (dlq_header::AT, at.as_str()),
            (dlq_header::TOPIC, &*ev.topic),
        ] {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let record = FutureRecord::to(&self.topic)
            .payload(&ev.body[..])
            .key(&ev.key[..])
            .headers(headers);
        // Waits for the delivery report; the queue wait is bounded like a delivery.
        match self.producer.send(record, self.cfg.delivery_timeout).await {
            Ok(_) => {
                count_dlq_write(sink);
                Ok(())
            }
            Err((e, _)) => {
                count_dlq_error(sink);
                Err(DlqError(format!("dlq topic {}: {e}", self.topic)))
            }
        }
    }
}

/// Replay progress on Kafka: group commits and marker records.
struct KafkaProgress {
    consumer: Arc<BaseConsumer>,
    producer: FutureProducer,
    topic: Arc<str>,
    timeout: Duration,
}

#[async_trait]
impl Progress for KafkaProgress {
    async fn commit(&self, partition: i32, next: u64) -> Result<(), FeedError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next as i64))?;
        let consumer = self.consumer.clone();
        // A synchronous commit blocks on the broker's answer: keep it off the runtime.
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|_| FeedError::Kafka(KafkaError::Canceled))??;
        Ok(())
    }

    async fn mark(&self, partition: i32, position: u64) -> Result<(), FeedError> {
        let value = position.to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: dlq_header::REPLAYED,
            value: Some(value.as_bytes()),
        });
        // Same partition as the entry, so the marker always comes after it.
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .partition(partition)
            .headers(headers);
        self.producer
            .send(record, self.timeout)
            .await
            .map_err(|(e, _)| FeedError::Kafka(e))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PASSWORD: &str = "hunter2-dlq-secret";

    /// A client librdkafka refuses to create quotes the refused value: the error that reaches
    /// logs and the CLI has it replaced.
    #[test]
    fn client_creation_errors_are_redacted() {
        let cfg: KafkaConfig = serde_json::from_str(&format!(
            r#"{{"brokers": "127.0.0.1:1", "options": {{"sasl.oauthbearer.client.secret": "{PASSWORD}"}}}}"#
        ))
        .unwrap();
        let e = KafkaDeadLetter::new(&cfg, "hookgate.dlq")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("kafka: ") && !e.contains(PASSWORD), "{e}");
        let e = scan_blocking(&cfg, "hookgate.dlq")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("kafka: ") && !e.contains(PASSWORD), "{e}");
    }
}
