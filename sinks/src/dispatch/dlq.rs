//! What both dead-letter stores share: [`DlqEntry`], [`ReplayReport`], the DLQ header
//! names, reading a DLQ record back into an entry or a marker, and the replay walk that
//! moves the replay position only over done records.

use std::sync::Arc;

use async_trait::async_trait;
use hookgate_proto::Event;

use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::feed::FeedError;

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

/// Which pending entries a replay takes: those for one sink, and/or a set of entries
/// named by (partition, position) (the console's "replay one / a selection").
#[derive(Debug, Clone, Copy, Default)]
pub struct Selection<'a> {
    /// Only entries for this sink.
    pub sink: Option<&'a str>,
    /// Only these entries, by `(partition, position)`.
    pub positions: Option<&'a [(i32, u64)]>,
}

impl Selection<'_> {
    /// Every entry for `sink` (all when `None`).
    pub fn sink(sink: Option<&str>) -> Selection<'_> {
        Selection {
            sink,
            positions: None,
        }
    }

    fn takes(&self, e: &DlqEntry) -> bool {
        self.sink.is_none_or(|s| s == e.sink)
            && self
                .positions
                .is_none_or(|p| p.contains(&(e.partition, e.position)))
    }
}

/// Called after each replayed (or failed) entry with the report so far.
pub type OnStep<'a> = &'a (dyn Fn(&ReplayReport) + Send + Sync);

/// Entries not yet replayed, in order, filtered by sink.
pub(crate) fn pending(records: &[DlqRecord], sink_filter: Option<&str>) -> Vec<DlqEntry> {
    pending_selected(records, &Selection::sink(sink_filter))
}

/// Entries not yet replayed, in order, that `sel` takes.
pub(crate) fn pending_selected(records: &[DlqRecord], sel: &Selection<'_>) -> Vec<DlqEntry> {
    let done = marked(records);
    records
        .iter()
        .filter_map(|r| match &r.kind {
            RecordKind::Entry(e) if !done.contains(&(r.partition, r.position)) && sel.takes(e) => {
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
    sel: &Selection<'_>,
    progress: &dyn Progress,
    on_step: OnStep<'_>,
) -> Result<ReplayReport, FeedError> {
    let done = marked(records);
    let mut report = ReplayReport {
        remaining: pending_selected(records, sel).len(),
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
        if !sel.takes(entry) {
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
                on_step(&report);
            }
            Err(e) => {
                tracing::warn!(sink = %entry.sink, event = %entry.event.id, error = %e, "dlq replay failed; entry stays pending");
                metrics::counter!("hookgate_dlq_replays_total", "outcome" => "failed").increment(1);
                report.failed = 1;
                report.failure = Some(((**entry).clone(), e.to_string()));
                on_step(&report);
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
