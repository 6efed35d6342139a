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
//!
//! When every broker connection is down ([`RDKafkaErrorCode::AllBrokersDown`]) after the
//! consumer has had partitions, the feed pauses them at once, closes that consumer and
//! builds a new one after [`REBUILD_AFTER`] (counted in
//! `hookgate_dispatch_consumer_rebuilds_total`). The reason is a crash in librdkafka
//! 2.12.1, not a preference: a consumer that goes on fetching after its broker came back
//! without its topics (Tansu with in-memory storage, after a restart) sends Fetch v16 with
//! the topic ids it had cached; Tansu answers an unknown topic id with a zero id, a
//! `CurrentLeader` tag (leader 0) per partition and an empty `NodeEndpoints` tag
//! (tansu-storage 0.6 `service/fetch.rs`, `unknown_topic_response`), and librdkafka's
//! `rd_kafka_handle_Fetch_metadata_update` (rdkafka_fetcher.c) turns that into a metadata
//! update for a topic with a NULL name and a zero id, which `rd_kafka_metadata_update_op`
//! (rdkafka_metadata.c) looks up with `rd_kafka_metadata_cache_find(rk, NULL)`: strcmp on
//! NULL, SIGSEGV, and `serve` dies with its ingest (hookgate now builds librdkafka with that
//! lookup guarded: `vendor/rdkafka-sys/HOOKGATE-PATCH.md`; the rebuild stays, so a consumer
//! never fetches from a broker that lost its state). No client setting avoids it: the Fetch
//! version is negotiated (librdkafka uses v16 whenever its topics have ids, and there is no
//! option to cap one request's version; `api.version.request=false` falls back to 0.9
//! protocols without headers). A paused partition is not fetched, and a new consumer
//! learns the topics' current ids from metadata before its first fetch. Nothing
//! acknowledged is lost: offsets are committed only after delivery, so the new consumer
//! (same group) reads again from the last commit.

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
/// How long the feed waits, after closing a consumer whose broker connections all went
/// down, before it builds the next one.
pub const REBUILD_AFTER: Duration = Duration::from_secs(1);
/// How long closing such a consumer may take before the feed goes on without waiting (it
/// is paused, so it fetches nothing while it finishes closing in the background).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

type Key = (String, i32);

/// Consumer callbacks: assignment epochs, the lag gauge, and whether fetching is halted.
#[derive(Default)]
struct FeedContext {
    epochs: Mutex<HashMap<Key, u64>>,
    next_epoch: AtomicU64,
    /// Set (under this lock) when every broker connection went down: from then on this
    /// consumer fetches nothing. Workers resume a partition only under the lock and only
    /// while it is false, so a flow-control resume cannot undo the halt.
    halted: Mutex<bool>,
}

impl FeedContext {
    fn epoch(&self, key: &Key) -> Option<u64> {
        self.lock().get(key).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, u64>> {
        self.epochs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn halt_lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.halted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether partitions were ever assigned to this consumer (it then holds topic ids).
    fn ever_assigned(&self) -> bool {
        self.next_epoch.load(Ordering::Relaxed) > 0
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

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                {
                    let mut epochs = self.lock();
                    for e in tpl.elements() {
                        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed) + 1;
                        epochs.insert((e.topic().to_owned(), e.partition()), epoch);
                    }
                }
                // A halted consumer is being closed; it must not start fetching again.
                let halted = self.halt_lock();
                if *halted {
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::debug!(error = %e, "pause of a halted consumer's assignment failed");
                    }
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
/// record, storing its offset only once the dispatch is done. Records without a valid
/// `hookgate-id` are skipped with a warning. When every broker connection goes down after
/// partitions were assigned, the consumer is closed and a new one built (see the module
/// doc). On `stop`: each partition finishes its current message, stored offsets are
/// committed synchronously, and the function returns. Errors only when the first consumer
/// cannot be built or subscribed.
pub async fn run_kafka_feed(
    kafka: &KafkaConfig,
    group_id: &str,
    topics: Vec<String>,
    dispatcher: Dispatcher,
    mut stop: watch::Receiver<bool>,
) -> Result<(), FeedError> {
    let mut first = true;
    loop {
        let consumer = match build_consumer(kafka, group_id, &topics) {
            Ok(c) => c,
            Err(e) if first => return Err(e),
            Err(e) => {
                // The same config built one before: a transient failure (subscribe).
                tracing::warn!(error = %e, retry_in = ?REBUILD_AFTER, "dispatcher: kafka consumer not rebuilt");
                if wait_or_stop(REBUILD_AFTER, &mut stop).await {
                    return Ok(());
                }
                continue;
            }
        };
        if first {
            tracing::info!(group = group_id, topics = ?topics, "dispatcher consuming kafka");
        } else {
            tracing::info!(group = group_id, "dispatcher: kafka consumer rebuilt");
        }
        first = false;
        match consume(consumer, &dispatcher, &mut stop).await {
            SessionEnd::Stopped => return Ok(()),
            SessionEnd::BrokersDown => {
                if wait_or_stop(REBUILD_AFTER, &mut stop).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Sleeps `d`; true when `stop` fired meanwhile (or had).
async fn wait_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if stopped(stop) {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
    stopped(stop)
}

fn build_consumer(
    kafka: &KafkaConfig,
    group_id: &str,
    topics: &[String],
) -> Result<Arc<Feed>, FeedError> {
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
    Ok(consumer)
}

/// Why one consumer's run ended.
enum SessionEnd {
    /// `stop` fired: offsets were committed, the consumer closed.
    Stopped,
    /// Every broker connection went down after partitions were assigned: the consumer was
    /// halted and closed; build a new one.
    BrokersDown,
}

/// Runs one consumer until `stop` or until every broker connection is down.
async fn consume(
    consumer: Arc<Feed>,
    dispatcher: &Dispatcher,
    stop: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let mut workers: HashMap<Key, Worker> = HashMap::new();
    let end = loop {
        if stopped(stop) {
            break SessionEnd::Stopped;
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
                // (`code` is librdkafka's error code: a small fixed set). No wait here:
                // librdkafka paces its errors (reconnect and fetch backoffs), and an
                // AllBrokersDown must be acted on before the broker is back.
                let code = e.rdkafka_error_code();
                let label = code.map_or_else(|| "other".to_owned(), |c| format!("{c:?}"));
                metrics::counter!("hookgate_dispatch_kafka_errors_total", "code" => label)
                    .increment(1);
                tracing::warn!(error = %e, "dispatcher: kafka consumer error");
                if code == Some(RDKafkaErrorCode::AllBrokersDown)
                    && consumer.context().ever_assigned()
                {
                    halt(&consumer);
                    break SessionEnd::BrokersDown;
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
    };

    // Closing the queues lets each worker finish its current message and exit; queued
    // ones are not processed (their offsets are not stored).
    let tasks: Vec<_> = workers.into_values().map(|w| w.task).collect();
    for t in tasks {
        let _ = t.await;
    }
    match end {
        SessionEnd::Stopped => {
            let c = consumer.clone();
            let res =
                tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync))
                    .await;
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
        }
        SessionEnd::BrokersDown => {
            // No explicit commit: no broker answers. Closing commits what was stored if
            // it can; what it cannot is read again by the next consumer.
            let started = std::time::Instant::now();
            let close = tokio::task::spawn_blocking(move || {
                consumer.unsubscribe();
                drop(consumer);
            });
            match tokio::time::timeout(CLOSE_WAIT, close).await {
                Ok(_) => {
                    tracing::info!(took = ?started.elapsed(), "dispatcher: halted kafka consumer closed")
                }
                Err(_) => tracing::warn!(
                    after = ?CLOSE_WAIT,
                    "dispatcher: halted kafka consumer still closing; building the next one meanwhile"
                ),
            }
        }
    }
    end
}

/// Stops every fetch of `consumer` at once: its broker connections are all down, and when
/// a broker is back its cached topic ids may be stale (see the module doc). Under the halt
/// lock, so no worker resumes a partition afterwards.
fn halt(consumer: &Feed) {
    let ctx = consumer.context();
    let mut halted = ctx.halt_lock();
    *halted = true;
    match consumer.assignment() {
        Ok(tpl) => {
            if let Err(e) = consumer.pause(&tpl) {
                tracing::warn!(error = %e, "dispatcher: pausing the assignment failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "dispatcher: reading the assignment failed"),
    }
    drop(halted);
    // Messages already handed to workers are dropped unprocessed (not stored): the next
    // consumer reads them again.
    ctx.lock().clear();
    metrics::counter!("hookgate_dispatch_consumer_rebuilds_total").increment(1);
    tracing::warn!(
        rebuild_in = ?REBUILD_AFTER,
        "dispatcher: every kafka broker connection is down; consumer halted, closing it and building a new one"
    );
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
                let halted = consumer.context().halt_lock();
                if !*halted {
                    if let Err(e) = consumer.resume(&one(&key)) {
                        tracing::debug!(topic = %key.0, partition = key.1, error = %e, "resume failed");
                    }
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
