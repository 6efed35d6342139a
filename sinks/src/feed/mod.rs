//! The dispatcher's feed: reads accepted events from the durable log, hands each to the
//! [`Dispatcher`], and moves the log position only once the dispatcher reports the event
//! done (delivered, skipped or dead-lettered). Plus the dead-letter stores the dispatcher
//! writes to and the operator's `dlq list` / `dlq replay`.
//!
//! Delivery guarantee: at-least-once. A crash, a rebalance or a not-done dispatch means
//! the event is dispatched again, to every matching sink (chat messages may repeat; the
//! http sink's receivers dedupe by `webhook-id`). Nothing is committed before it is done.
//!
//! Layout:
//! - [`kafka_feed`]: [`run_kafka_feed`], a consumer group with one ordered worker per
//!   assigned partition; offsets are stored after the dispatch is done, auto-committed.
//! - [`spool_feed`]: [`run_spool_feed`], the same over the local spool with the
//!   `dispatcher` cursor.
//! - [`kafka_dlq`]: [`KafkaDeadLetter`], dead letters as records on a DLQ topic; replay
//!   progress is the `hookgate-dlq-replay` group's committed offsets.
//! - [`spool_dlq`]: [`SpoolDeadLetter`], dead letters in a separate spool; replay progress
//!   is its `replay` cursor.
//! - here: [`DlqEntry`], [`ReplayReport`], [`DlqStore`] with [`dlq_list`] / [`dlq_replay`],
//!   [`FeedError`], the DLQ header names, and the replay walk both stores share.

pub mod kafka_dlq;
pub mod kafka_feed;
pub mod spool_dlq;
pub mod spool_feed;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hookgate_proto::Event;
use tokio::sync::watch;

use crate::{
    chat::{DeadLetter, DeliveryOutcome, DispatchReport, Dispatcher, DlqError},
    log::spool::SpoolError,
};

pub use kafka_dlq::KafkaDeadLetter;
pub use kafka_feed::run_kafka_feed;
pub use spool_dlq::SpoolDeadLetter;
pub use spool_feed::run_spool_feed;

/// Names of the headers a dead-lettered record carries on top of the event's own.
pub mod dlq_header {
    /// The sink the delivery failed for.
    pub const SINK: &str = "hookgate-dlq-sink";
    /// The last (already redacted) delivery error.
    pub const ERROR: &str = "hookgate-dlq-error";
    /// When the event was dead-lettered: RFC 3339, UTC, milliseconds.
    pub const AT: &str = "hookgate-dlq-at";
    /// The topic the event was on (Kafka DLQ only: the record's own topic is the DLQ's).
    pub const TOPIC: &str = "hookgate-dlq-topic";
    /// On a marker record: the position of an entry replayed out of order.
    pub const REPLAYED: &str = "hookgate-dlq-replayed";
    /// Prefix shared by every DLQ header; stripped when an entry is read back.
    pub const PREFIX: &str = "hookgate-dlq-";
}

/// Kafka consumer group whose committed offsets are the DLQ replay position.
pub const REPLAY_GROUP: &str = "hookgate-dlq-replay";
/// Spool cursor name of the DLQ replay position.
pub const REPLAY_CURSOR: &str = "replay";
/// Default Kafka consumer group of the dispatcher feed.
pub const DISPATCH_GROUP: &str = "hookgate-dispatch";

/// Why the feed or a DLQ operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// A Kafka client error (config, broker, commit).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A spool error.
    #[error("{0}")]
    Spool(#[from] SpoolError),
    /// The DLQ topic does not exist (create it, or set kafka.create_topics = true).
    #[error("kafka topic '{0}' does not exist")]
    MissingTopic(String),
    /// A partition did not deliver records up to the high watermark in time.
    #[error(
        "timed out reading '{topic}' partition {partition} (at offset {at}, high watermark {high})"
    )]
    Timeout {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The next offset that was expected.
        at: i64,
        /// The high watermark read before.
        high: i64,
    },
}

/// One pending dead-lettered delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqEntry {
    /// The event as dispatched (without the DLQ headers).
    pub event: Event,
    /// The sink it failed for.
    pub sink: String,
    /// The last (redacted) delivery error.
    pub error: String,
    /// When it was dead-lettered: RFC 3339, UTC, ms.
    pub at: String,
    /// Kafka partition of the DLQ record (0 for the spool).
    pub partition: i32,
    /// Offset of the DLQ record in its partition (spool: byte offset).
    pub position: u64,
}

impl DlqEntry {
    /// The entry as one JSON object (what `hookgate dlq list` prints): the event's JSON plus
    /// `dlq_sink`, `dlq_error`, `dlq_at`, `dlq_partition`, `dlq_position`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = self.event.to_json();
        if let Some(m) = v.as_object_mut() {
            m.insert("dlq_sink".into(), self.sink.clone().into());
            m.insert("dlq_error".into(), self.error.clone().into());
            m.insert("dlq_at".into(), self.at.clone().into());
            m.insert("dlq_partition".into(), self.partition.into());
            m.insert("dlq_position".into(), self.position.into());
        }
        v
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Entries delivered and marked done.
    pub replayed: usize,
    /// Entries whose delivery failed (0 or 1: the replay stops at the first failure).
    pub failed: usize,
    /// Entries (for the sink filter, if any) still pending afterwards, the failed one included.
    pub remaining: usize,
    /// The failed entry and its (redacted) error.
    pub failure: Option<(DlqEntry, String)>,
}

/// The configured dead-letter store, for the dispatcher and the `dlq` commands.
#[derive(Clone)]
pub enum DlqStore {
    /// Records on a Kafka topic.
    Kafka(KafkaDeadLetter),
    /// A local spool.
    Spool(SpoolDeadLetter),
}

#[async_trait]
impl DeadLetter for DlqStore {
    async fn dead_letter(&self, ev: &Event, sink: &str, error: &str) -> Result<(), DlqError> {
        match self {
            DlqStore::Kafka(k) => k.dead_letter(ev, sink, error).await,
            DlqStore::Spool(s) => s.dead_letter(ev, sink, error).await,
        }
    }
}

/// Pending entries of `store`, in log order, only those for `sink_filter` when given.
pub async fn dlq_list(
    store: &DlqStore,
    sink_filter: Option<&str>,
) -> Result<Vec<DlqEntry>, FeedError> {
    match store {
        DlqStore::Kafka(k) => k.list(sink_filter).await,
        DlqStore::Spool(s) => s.list(sink_filter).await,
    }
}

/// Delivers pending entries (for `sink_filter`, when given) through
/// [`Dispatcher::replay`], in log order, recording progress durably; stops at the first
/// failure and leaves that entry pending.
pub async fn dlq_replay(
    store: &DlqStore,
    dispatcher: &Dispatcher,
    sink_filter: Option<&str>,
) -> Result<ReplayReport, FeedError> {
    match store {
        DlqStore::Kafka(k) => k.replay(dispatcher, sink_filter).await,
        DlqStore::Spool(s) => s.replay(dispatcher, sink_filter).await,
    }
}

/// A consumed record's headers as `(name, value)` pairs (absent values as empty).
pub(crate) fn message_headers<M: rdkafka::message::Message>(msg: &M) -> Vec<(&str, &[u8])> {
    use rdkafka::message::Headers as _;
    msg.headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key, h.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// What one DLQ log record is.
#[derive(Debug)]
pub(crate) enum RecordKind {
    /// A dead-lettered delivery (boxed: markers are tiny and may be many).
    Entry(Box<DlqEntry>),
    /// Entry at `target` (same partition) was replayed out of order.
    Marker { target: u64 },
    /// Not written by hookgate's DLQ; passed over.
    Foreign,
}

/// One record of the DLQ log from the replay position on.
#[derive(Debug)]
pub(crate) struct DlqRecord {
    pub(crate) partition: i32,
    pub(crate) position: u64,
    /// The position just past this record (what to commit once it is done).
    pub(crate) next: u64,
    pub(crate) kind: RecordKind,
}

/// Turns a decoded DLQ event into an entry (or a marker), taking the DLQ headers out.
pub(crate) fn classify(mut ev: Event, partition: i32, position: u64) -> RecordKind {
    let mut sink = None;
    let mut error = String::new();
    let mut at = String::new();
    let mut replayed = None;
    let mut bad = false;
    ev.kept_headers.retain(|(name, value)| {
        let Some(_) = name.strip_prefix(dlq_header::PREFIX) else {
            return true;
        };
        let text = String::from_utf8_lossy(value).into_owned();
        match name.as_str() {
            dlq_header::SINK => sink = Some(text),
            dlq_header::ERROR => error = text,
            dlq_header::AT => at = text,
            dlq_header::TOPIC => ev.topic = Arc::from(text),
            dlq_header::REPLAYED => match text.parse::<u64>() {
                Ok(t) => replayed = Some(t),
                Err(_) => bad = true,
            },
            _ => {}
        }
        false
    });
    match (replayed, sink) {
        (Some(target), _) => RecordKind::Marker { target },
        (None, Some(sink)) if !bad => RecordKind::Entry(Box::new(DlqEntry {
            event: ev,
            sink,
            error,
            at,
            partition,
            position,
        })),
        _ => RecordKind::Foreign,
    }
}

/// Entries not yet replayed, in order, filtered by sink.
pub(crate) fn pending(records: &[DlqRecord], sink_filter: Option<&str>) -> Vec<DlqEntry> {
    let done = marked(records);
    records
        .iter()
        .filter_map(|r| match &r.kind {
            RecordKind::Entry(e)
                if !done.contains(&(r.partition, r.position))
                    && sink_filter.is_none_or(|s| s == e.sink) =>
            {
                Some((**e).clone())
            }
            _ => None,
        })
        .collect()
}

fn marked(records: &[DlqRecord]) -> std::collections::HashSet<(i32, u64)> {
    records
        .iter()
        .filter_map(|r| match r.kind {
            RecordKind::Marker { target } => Some((r.partition, target)),
            _ => None,
        })
        .collect()
}

/// How a store records replay progress.
#[async_trait]
pub(crate) trait Progress: Send + Sync {
    /// Durably moves the replay position of `partition` to `next`.
    async fn commit(&self, partition: i32, next: u64) -> Result<(), FeedError>;
    /// Durably records that the entry at `position` was replayed although an earlier entry
    /// is still pending (so the position cannot move past it).
    async fn mark(&self, partition: i32, position: u64) -> Result<(), FeedError>;
}

/// The replay walk: per partition in order, the position advances over the unbroken run of
/// done records; an entry replayed behind a pending one (another sink's, under a filter)
/// gets a marker instead, so it is not replayed again either.
pub(crate) async fn replay_records(
    records: &[DlqRecord],
    dispatcher: &Dispatcher,
    sink_filter: Option<&str>,
    progress: &dyn Progress,
) -> Result<ReplayReport, FeedError> {
    let done = marked(records);
    let mut report = ReplayReport {
        remaining: pending(records, sink_filter).len(),
        ..Default::default()
    };
    // Whether every record of the partition so far is done (the position may move).
    let mut unbroken: std::collections::HashMap<i32, bool> = Default::default();
    // Commits owed for done records at the head of a partition: one commit covers a run.
    let mut owed: std::collections::BTreeMap<i32, u64> = Default::default();
    for r in records {
        let run = unbroken.entry(r.partition).or_insert(true);
        let entry = match &r.kind {
            RecordKind::Entry(e) if !done.contains(&(r.partition, r.position)) => e,
            _ => {
                // Markers, foreign records and entries already replayed are done.
                if *run {
                    owed.insert(r.partition, r.next);
                }
                continue;
            }
        };
        if sink_filter.is_some_and(|s| s != entry.sink) {
            *run = false;
            continue;
        }
        match dispatcher.replay(&entry.event, &entry.sink).await {
            Ok(()) => {
                if *run {
                    owed.remove(&r.partition);
                    progress.commit(r.partition, r.next).await?;
                } else {
                    progress.mark(r.partition, r.position).await?;
                }
                report.replayed += 1;
                report.remaining -= 1;
                metrics::counter!("hookgate_dlq_replays_total", "outcome" => "ok").increment(1);
            }
            Err(e) => {
                tracing::warn!(sink = %entry.sink, event = %entry.event.id, error = %e, "dlq replay failed; entry stays pending");
                metrics::counter!("hookgate_dlq_replays_total", "outcome" => "failed").increment(1);
                report.failed = 1;
                report.failure = Some(((**entry).clone(), e.to_string()));
                break;
            }
        }
    }
    for (partition, next) in owed {
        progress.commit(partition, next).await?;
    }
    Ok(report)
}

/// `now` as the `hookgate-dlq-at` header value.
pub(crate) fn now_rfc3339() -> String {
    humantime_serde::re::humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Counts a successful DLQ write.
pub(crate) fn count_dlq_write(sink: &str) {
    metrics::counter!("hookgate_dlq_writes_total", "sink" => sink.to_owned()).increment(1);
}

/// Counts a failed DLQ write (the event stays un-committed and is retried).
pub(crate) fn count_dlq_error(sink: &str) {
    metrics::counter!("hookgate_dlq_write_errors_total", "sink" => sink.to_owned()).increment(1);
}

/// How a dispatch attempt ended, as a metric label.
fn outcome(report: &DispatchReport) -> &'static str {
    if !report.is_done() {
        "retried"
    } else if report.deliveries.is_empty() {
        "unrouted"
    } else if report
        .deliveries
        .iter()
        .any(|d| matches!(d.outcome, DeliveryOutcome::DeadLettered { .. }))
    {
        "dead_lettered"
    } else {
        "delivered"
    }
}

/// Counts one event the feed passed over because it is not a hookgate record.
pub(crate) fn count_invalid() {
    metrics::counter!("hookgate_dispatch_events_total", "outcome" => "invalid").increment(1);
}

const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Dispatches `ev` until the report is done. Returns the report, or `None` when `stop`
/// fired or `keep_going` turned false between attempts (the event is then not done and
/// must not be committed).
pub(crate) async fn dispatch_until_done(
    dispatcher: &Dispatcher,
    ev: &Event,
    stop: &mut watch::Receiver<bool>,
    keep_going: &(dyn Fn() -> bool + Send + Sync),
) -> Option<DispatchReport> {
    let mut wait = RETRY_FIRST;
    loop {
        let report = dispatcher.dispatch(ev).await;
        let label = outcome(&report);
        metrics::counter!("hookgate_dispatch_events_total", "outcome" => label).increment(1);
        if report.is_done() {
            return Some(report);
        }
        // Moving on would lose the event for the failed sinks (their dead-letter write
        // failed too), so the same event is tried again, as a whole.
        tracing::warn!(event = %ev.id, retry_in = ?wait, "event not done (dead-letter write failed); retrying it");
        if stopped(stop) || !keep_going() {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if stopped(stop) || !keep_going() {
            return None;
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Whether the feed should stop: `stop` is true, or its sender is gone (nobody could stop
/// the feed any more, and a closed channel would make every wait return at once).
pub(crate) fn stopped(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}
