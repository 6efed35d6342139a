//! [`run_kafka_feed`]: dispatches hookgate's Kafka topics through a consumer group.
//!
//! Delivery guarantee: at-least-once. Auto-commit is on, but only offsets the feed stored
//! are committed (`enable.auto.offset.store=false`), and an offset is stored only after the
//! dispatch of its message (and so of every earlier message of the partition) is done. A
//! crash or a rebalance re-dispatches at most what was processed since the last commit;
//! librdkafka commits the stored offsets itself before it gives partitions up.
//!
//! Partitions are processed concurrently, each in order, by one worker task per partition:
//! the consumer's stream hands each message to its partition's queue. A queue holding
//! [`PAUSE_AT`] messages (or [`PAUSE_AT_BYTES`] of payload) pauses the partition's fetching
//! until the worker is down to [`RESUME_AT`] (and [`RESUME_AT_BYTES`]), so a slow sink holds
//! back only its partition and memory stays bounded. Each pause makes librdkafka drop what
//! it had fetched ahead for the partition and fetch it again on resume, so the bounds are
//! wide: with 64/16 one dispatcher carried 278 events/s into a sink that answers at once,
//! `bench/dispatch-rate.sh`, see bench/RESULTS.md.
//! Every assignment of a partition gets a new epoch; messages received under an older one
//! (the partition was revoked meanwhile) are dropped unprocessed, since the new owner (or
//! the new assignment) reads them again from the committed offset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookgate_proto::Event;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::{mpsc, watch};

use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::feed::{
    count_invalid, dispatch_until_done, message_headers, stopped, FeedError,
};
use crate::log::kafka::KafkaConfig;

/// Queued messages of one partition at which its fetching is paused.
pub const PAUSE_AT: usize = 1024;
/// Queued messages of a paused partition at which its fetching resumes.
pub const RESUME_AT: usize = 256;
/// Queued payload bytes of one partition at which its fetching is paused (bodies can be
/// large: the count alone would let 1,024 one-megabyte events queue up).
pub const PAUSE_AT_BYTES: usize = 16 << 20;
/// Queued payload bytes of a paused partition at which its fetching resumes.
pub const RESUME_AT_BYTES: usize = 4 << 20;

type Key = (String, i32);

/// Consumer callbacks: assignment epochs and the lag gauge.
#[derive(Default)]
struct FeedContext {
    epochs: Mutex<HashMap<Key, u64>>,
    next_epoch: AtomicU64,
}

impl FeedContext {
    fn epoch(&self, key: &Key) -> Option<u64> {
        self.lock().get(key).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u64>> {
        self.epochs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for FeedContext {
    fn stats(&self, statistics: Statistics) {
        // consumer_lag_stored: records between the stored (= dispatched) offset and the
        // high watermark; -1 when unknown, and partition -1 is librdkafka's internal one.
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag_stored > 0)
            .map(|p| p.consumer_lag_stored)
            .sum();
        metrics::gauge!("hookgate_dispatch_lag", "log" => "kafka").set(lag as f64);
    }
}

impl ConsumerContext for FeedContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut epochs = self.lock();
            for e in tpl.elements() {
                epochs.remove(&(e.topic().to_owned(), e.partition()));
            }
            tracing::info!(partitions = tpl.count(), "dispatcher: partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut epochs = self.lock();
                for e in tpl.elements() {
                    let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
                    epochs.insert((e.topic().to_owned(), e.partition()), epoch);
                }
                tracing::info!(partitions = tpl.count(), "dispatcher: partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "dispatcher: rebalance error"),
        }
    }
}

type Feed = StreamConsumer<FeedContext>;

/// One partition's queue length and whether its fetching is paused. Changed only under
/// the lock, so a pause and the resume that undoes it cannot pass each other.
#[derive(Default)]
struct Flow {
    queued: usize,
    queued_bytes: usize,
    paused: bool,
}

struct Item {
    msg: OwnedMessage,
    epoch: Option<u64>,
}

struct Worker {
    tx: mpsc::UnboundedSender<Item>,
    flow: Arc<Mutex<Flow>>,
    task: tokio::task::JoinHandle<()>,
}

/// Consumes `topics` in consumer group `group_id` (the CLI's default is
/// [`DISPATCH_GROUP`](crate::dispatch::feed::DISPATCH_GROUP)) and dispatches every hookgate
/// record, storing its offset only once the dispatch is done. Records without a valid `hookgate-id` are skipped with a
/// warning. On `stop`: each partition finishes its current message, stored offsets are
/// committed synchronously, and the function returns. Errors only when the consumer
/// cannot be built or subscribed.
pub async fn run_kafka_feed(
    kafka: &KafkaConfig,
    group_id: &str,
    topics: Vec<String>,
    dispatcher: Dispatcher,
    mut stop: watch::Receiver<bool>,
) -> Result<(), FeedError> {
    let mut cc = kafka.client_config(&[
        ("client.id", "hookgate-dispatcher"),
        ("auto.offset.reset", "earliest"),
        ("statistics.interval.ms", "10000"),
    ]);
    cc.set_log_level(RDKafkaLogLevel::Warning);
    // Set after the user's options: the delivery guarantee rests on these.
    cc.set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false");
    let consumer: Arc<Feed> = Arc::new(
        cc.create_with_context(FeedContext::default())
            .map_err(|e| FeedError::Client(kafka.options.redact(&e.to_string())))?,
    );
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    tracing::info!(group = group_id, topics = ?topics, "dispatcher consuming kafka");

    let mut workers: HashMap<Key, Worker> = HashMap::new();
    loop {
        if stopped(&stop) {
            break;
        }
        let msg = tokio::select! {
            _ = stop.changed() => continue,
            m = consumer.recv() => m,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                // Broker and transport errors are informational: librdkafka reconnects
                // and retries by itself. Counted, so a stalled dispatcher shows why
                // (`code` is librdkafka's error code: a small fixed set).
                let code = e
                    .rdkafka_error_code()
                    .map_or_else(|| "other".to_owned(), |c| format!("{c:?}"));
                metrics::counter!("hookgate_dispatch_kafka_errors_total", "code" => code)
                    .increment(1);
                tracing::warn!(error = %e, "dispatcher: kafka consumer error");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        let key: Key = (msg.topic().to_owned(), msg.partition());
        let size = item_size(&msg);
        let item = Item {
            epoch: consumer.context().epoch(&key),
            msg: msg.detach(),
        };
        let worker = workers.entry(key.clone()).or_insert_with(|| {
            spawn_worker(
                consumer.clone(),
                key.clone(),
                dispatcher.clone(),
                stop.clone(),
            )
        });
        {
            let mut flow = lock(&worker.flow);
            flow.queued += 1;
            flow.queued_bytes += size;
            if (flow.queued >= PAUSE_AT || flow.queued_bytes >= PAUSE_AT_BYTES) && !flow.paused {
                flow.paused = true;
                metrics::counter!("hookgate_dispatch_partition_pauses_total").increment(1);
                if let Err(e) = consumer.pause(&one(&key)) {
                    tracing::debug!(topic = %key.0, partition = key.1, error = %e, "pause failed");
                }
            }
        }
        if worker.tx.send(item).is_err() {
            // The worker ended (stop); the message is not stored and is read again later.
            tracing::debug!(topic = %key.0, partition = key.1, "partition worker gone");
        }
    }

    // Closing the queues lets each worker finish its current message and exit; queued
    // ones are not processed (their offsets are not stored).
    let tasks: Vec<_> = workers.into_values().map(|w| w.task).collect();
    for t in tasks {
        let _ = t.await;
    }
    let c = consumer.clone();
    let res = tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync)).await;
    match res {
        Ok(Ok(())) => tracing::info!("dispatcher: offsets committed"),
        // Nothing stored since the last commit.
        Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "dispatcher: final commit failed"),
        Err(_) => tracing::warn!("dispatcher: final commit task failed"),
    }
    consumer.unsubscribe();
    // Closing the consumer leaves the group, a blocking round trip: off the runtime.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    Ok(())
}

/// What a queued message holds in memory, for the byte bounds.
fn item_size(msg: &impl Message) -> usize {
    msg.payload().map_or(0, <[u8]>::len) + msg.key().map_or(0, <[u8]>::len)
}

fn lock(flow: &Mutex<Flow>) -> std::sync::MutexGuard<'_, Flow> {
    flow.lock().unwrap_or_else(|p| p.into_inner())
}

fn one(key: &Key) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&key.0, key.1);
    tpl
}

fn spawn_worker(
    consumer: Arc<Feed>,
    key: Key,
    dispatcher: Dispatcher,
    mut stop: watch::Receiver<bool>,
) -> Worker {
    let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
    let flow = Arc::new(Mutex::new(Flow::default()));
    let wflow = flow.clone();
    let task = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            if stopped(&stop) {
                break;
            }
            let size = item_size(&item.msg);
            let current = || consumer.context().epoch(&key) == item.epoch;
            if item.epoch.is_some() && current() {
                let offset = item.msg.offset();
                match process(&item.msg, &dispatcher, &mut stop, &current).await {
                    Processed::Done => {
                        if let Err(e) = consumer.store_offset(&key.0, key.1, offset) {
                            // The partition was revoked meanwhile; its new owner redoes it.
                            tracing::debug!(topic = %key.0, partition = key.1, offset, error = %e, "offset not stored");
                        }
                    }
                    Processed::NotDone => {
                        if stopped(&stop) {
                            break;
                        }
                    }
                }
            }
            let mut flow = lock(&wflow);
            flow.queued = flow.queued.saturating_sub(1);
            flow.queued_bytes = flow.queued_bytes.saturating_sub(size);
            if flow.paused && flow.queued <= RESUME_AT && flow.queued_bytes <= RESUME_AT_BYTES {
                flow.paused = false;
                if let Err(e) = consumer.resume(&one(&key)) {
                    tracing::debug!(topic = %key.0, partition = key.1, error = %e, "resume failed");
                }
            }
        }
    });
    Worker { tx, flow, task }
}

enum Processed {
    /// Dispatched (or skipped as foreign): the offset may be stored.
    Done,
    /// Stopped or revoked before the dispatch was done.
    NotDone,
}

async fn process(
    msg: &OwnedMessage,
    dispatcher: &Dispatcher,
    stop: &mut watch::Receiver<bool>,
    current: &(dyn Fn() -> bool + Send + Sync),
) -> Processed {
    let headers = message_headers(msg);
    let body = Bytes::copy_from_slice(msg.payload().unwrap_or_default());
    let ev = match Event::from_record(msg.topic(), msg.key(), body, headers) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %e, "record without a valid hookgate-id header; skipped");
            count_invalid();
            return Processed::Done;
        }
    };
    match dispatch_until_done(dispatcher, &ev, stop, current).await {
        Some(_) => Processed::Done,
        None => Processed::NotDone,
    }
}
