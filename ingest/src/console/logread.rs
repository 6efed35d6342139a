//! Reading events back from the log for the console: one Kafka record by its position
//! (topic, partition, offset, as the producer's delivery report gave it), and the newest
//! records of the source topics to refill the recent-events index after a restart. The
//! spool's side is [`hookgate_sinks::log::spool::Spool::read`] and `tail`.
//!
//! An event no longer in the index is looked for by its id's time ([`KafkaReader::find`]):
//! the hookgate-id is a ULID whose timestamp is when the event was accepted, so each
//! partition of the source topics is sought to that time (Kafka's offsets-for-times) and
//! a bounded window after it is read for the record carrying that `hookgate-id`.
//!
//! Every read uses a `BaseConsumer` that is assigned partitions at given offsets: no group
//! membership, no offset commit, `auto.offset.reset = error` (a record past retention is
//! reported gone, not replaced by another), and a bounded wait. All of it blocks, so
//! callers run it in `spawn_blocking`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookgate_proto::{Event, Ulid};
use hookgate_sinks::log::kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers as _, Message};
use rdkafka::{Offset, TopicPartitionList};

/// How long one event's read-back waits for its record.
pub const READ_WAIT: Duration = Duration::from_secs(5);
/// How long the refill at start may read the topics' tails.
pub const TAIL_WAIT: Duration = Duration::from_secs(20);
/// Metadata and watermark requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A search by time starts this long before the id's time (the broker's and hookgate's
/// clocks may differ a little; the record is produced after the id is made).
pub const FIND_BEFORE: Duration = Duration::from_secs(5);
/// A search by time reads records up to this long after the id's time (by the records'
/// timestamps) in each partition: an event is produced within its `delivery_timeout`.
pub const FIND_AFTER: Duration = Duration::from_secs(60);
/// A search by time reads at most this many records per partition.
pub const FIND_RECORDS: i64 = 10_000;
/// How long one search by time may take in all.
pub const FIND_WAIT: Duration = Duration::from_secs(10);
/// The consumer group id the readers carry (they never join it nor commit to it).
const GROUP: &str = "hookgate-console";

/// Why a record could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Kafka no longer holds the offset (retention), or holds another event there.
    #[error("{0}")]
    Gone(&'static str),
    /// The cluster did not answer in time, or refused the read.
    #[error("kafka: {0}")]
    Kafka(String),
}

/// Reads single records for `GET /api/v1/events/{id}`. Each read makes its own consumer
/// and drops it (a connection per read: this is the admin path; a kept consumer would hold
/// a connection and refresh metadata forever, and carried stale metadata across a broker
/// restart into a librdkafka crash, see `read`). Reads take turns, so at most one
/// consumer exists at a time.
pub struct KafkaReader {
    cfg: KafkaConfig,
    turn: Mutex<()>,
}

fn consumer(cfg: &KafkaConfig, client_id: &str) -> Result<BaseConsumer, ReadError> {
    let mut cc = cfg.client_config(&[]);
    // Set after the user's options: these readers must never move a group's offsets.
    cc.set("group.id", GROUP)
        .set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false");
    cc.create()
        .map_err(|e| ReadError::Kafka(cfg.options.redact(&e.to_string())))
}

/// The event a record holds, with `body` as its body.
fn event_of<M: Message>(m: &M, body: Bytes) -> Option<Event> {
    let headers: Vec<(&str, &[u8])> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key, h.value.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Event::from_record(m.topic(), m.key(), body, headers).ok()
}

fn is_out_of_range(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset)
    )
}

/// What a search by time looked at, for the answer when it found nothing.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Searched {
    /// Partitions read (of all the topics).
    pub partitions: usize,
    /// Records read.
    pub records: u64,
    /// Whether every partition's window was read to its end (else the search ran out of
    /// time, [`FIND_WAIT`]).
    pub complete: bool,
    /// Whether the broker could not seek by time and the partitions were read from their
    /// earliest offset instead.
    pub from_earliest: bool,
}

impl std::fmt::Display for Searched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "searched {} partition(s) of the source topics, {} record(s), from {}s before to {}s after the time in the id (at most {} records per partition{}){}",
            self.partitions,
            self.records,
            FIND_BEFORE.as_secs(),
            FIND_AFTER.as_secs(),
            FIND_RECORDS,
            if self.from_earliest {
                "; the broker could not seek by time, so from each partition's earliest offset"
            } else {
                ""
            },
            if self.complete {
                String::new()
            } else {
                format!("; the search stopped after {}s", FIND_WAIT.as_secs())
            },
        )
    }
}

/// How a search by time ended without the event.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// The window was read and the event is not in it.
    #[error("{0}")]
    NotFound(Searched),
    /// The cluster did not answer, or refused.
    #[error("kafka: {0}")]
    Kafka(String),
}

/// The value of header `name` of a record.
fn header<'a, M: Message>(m: &'a M, name: &str) -> Option<&'a [u8]> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

impl KafkaReader {
    /// Looks for event `id` in `topics` by the time in its id: each partition is sought
    /// to [`FIND_BEFORE`] before that time with offsets-for-times (from its earliest
    /// offset when the broker cannot), then read until a record's timestamp is more than
    /// [`FIND_AFTER`] after it, [`FIND_RECORDS`] records, or the partition's end, all
    /// within `wait`. Blocks.
    /// `Ok` has the event, its partition and offset.
    pub fn find(
        &self,
        topics: &[String],
        id: Ulid,
        wait: Duration,
    ) -> Result<(Event, i32, i64), FindError> {
        let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        let redact = |m: String| FindError::Kafka(self.cfg.options.redact(&m));
        let c = consumer(&self.cfg, "hookgate-console-find").map_err(|e| redact(e.to_string()))?;
        let deadline = Instant::now() + wait;
        let at_ms = id.timestamp_ms().min(i64::MAX as u64) as i64;
        let from_ms = at_ms.saturating_sub(FIND_BEFORE.as_millis() as i64);
        let until_ms = at_ms.saturating_add(FIND_AFTER.as_millis() as i64);
        let marks = watermarks(&c, topics).map_err(|e| redact(e.to_string()))?;
        let mut searched = Searched {
            partitions: marks.len(),
            ..Searched::default()
        };
        let starts = match seek_by_time(&c, &marks, from_ms) {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(error = %self.cfg.options.redact(&e), "console: cannot seek by time; reading from the earliest offsets");
                searched.from_earliest = true;
                marks
                    .iter()
                    .map(|(k, (low, _))| (k.clone(), *low))
                    .collect()
            }
        };
        // (topic, partition) -> the offset past the last one to read.
        let mut ends: HashMap<(String, i32), i64> = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for (k, &(low, high)) in &marks {
            let start = starts.get(k).copied().unwrap_or(low).clamp(low, high);
            let end = high.min(start.saturating_add(FIND_RECORDS));
            if end > start {
                tpl.add_partition_offset(&k.0, k.1, Offset::Offset(start))
                    .map_err(|e| redact(e.to_string()))?;
                ends.insert(k.clone(), end);
            }
        }
        if !ends.is_empty() {
            c.assign(&tpl).map_err(|e| redact(e.to_string()))?;
        }
        let wanted = id.to_string();
        while !ends.is_empty() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err(FindError::NotFound(searched));
            };
            let m = match c.poll(left) {
                None => continue,
                Some(Err(e)) if is_out_of_range(&e) => {
                    // Retention moved past the start meanwhile: nothing older to read.
                    tracing::debug!(error = %e, "console: search by time out of range");
                    continue;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %self.cfg.options.redact(&e.to_string()), "console: search read error");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            let key = (m.topic().to_owned(), m.partition());
            let Some(&end) = ends.get(&key) else {
                continue;
            };
            if m.offset() >= end {
                ends.remove(&key);
                continue;
            }
            searched.records += 1;
            if header(&m, hookgate_proto::header::ID) == Some(wanted.as_bytes()) {
                let body = Bytes::copy_from_slice(m.payload().unwrap_or_default());
                if let Some(ev) = event_of(&m, body).filter(|ev| ev.id == id) {
                    return Ok((ev, m.partition(), m.offset()));
                }
            }
            let past = m.timestamp().to_millis().is_some_and(|t| t > until_ms);
            if past || m.offset() + 1 >= end {
                ends.remove(&key);
            }
        }
        searched.complete = true;
        Err(FindError::NotFound(searched))
    }

    /// A reader of the cluster `cfg` names (connects at each read).
    pub fn new(cfg: &KafkaConfig) -> KafkaReader {
        KafkaReader {
            cfg: cfg.clone(),
            turn: Mutex::new(()),
        }
    }

    /// Reads the record at `offset` of `partition` of `topic`, which must be event `id`
    /// (its `hookgate-id` header), waiting at most `wait`. Blocks.
    pub fn read(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        id: Ulid,
        wait: Duration,
    ) -> Result<Event, ReadError> {
        let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
        let c = consumer(&self.cfg, "hookgate-console-read")?;
        read_one(&c, topic, partition, offset, id, wait).map_err(|e| match e {
            ReadError::Kafka(m) => ReadError::Kafka(self.cfg.options.redact(&m)),
            gone => gone,
        })
    }
}

fn read_one(
    c: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
    id: Ulid,
    wait: Duration,
) -> Result<Event, ReadError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(|e| ReadError::Kafka(e.to_string()))?;
    c.assign(&tpl)
        .map_err(|e| ReadError::Kafka(e.to_string()))?;
    let deadline = Instant::now() + wait;
    let mut last_error = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match c.poll(left) {
            None => break,
            Some(Err(e)) if is_out_of_range(&e) => {
                return Err(ReadError::Gone(
                    "Kafka no longer holds this offset (retention)",
                ))
            }
            // Transient (a broker reconnecting): keep waiting until the deadline.
            Some(Err(e)) => last_error = Some(e.to_string()),
            Some(Ok(m)) => {
                if m.topic() != topic || m.partition() != partition || m.offset() < offset {
                    continue;
                }
                if m.offset() > offset {
                    return Err(ReadError::Gone("Kafka holds no record at this offset"));
                }
                let body = Bytes::copy_from_slice(m.payload().unwrap_or_default());
                return match event_of(&m, body) {
                    Some(ev) if ev.id == id => Ok(ev),
                    _ => Err(ReadError::Gone(
                        "the record at this offset is not this event (its hookgate-id differs)",
                    )),
                };
            }
        }
    }
    Err(ReadError::Kafka(last_error.unwrap_or_else(|| {
        format!("no record within {}s", wait.as_secs())
    })))
}

/// (topic, partition) -> (low, high) watermarks.
type Marks = HashMap<(String, i32), (i64, i64)>;

/// The low and high watermarks of every partition of `topics` (a topic the broker does not
/// know has none), by (topic, partition).
fn watermarks(c: &BaseConsumer, topics: &[String]) -> Result<Marks, KafkaError> {
    let mut marks = HashMap::new();
    for topic in topics {
        let md = c.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        for t in md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
        {
            for p in t.partitions() {
                let (low, high) = c.fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)?;
                marks.insert((topic.clone(), p.id()), (low, high));
            }
        }
    }
    Ok(marks)
}

/// The first offset at or after `from_ms` of each partition in `marks`, by offsets-for-
/// times; a partition with no record that new starts at its end. `Err` when the broker
/// cannot answer it.
fn seek_by_time(
    c: &BaseConsumer,
    marks: &Marks,
    from_ms: i64,
) -> Result<HashMap<(String, i32), i64>, String> {
    let mut out = HashMap::new();
    if marks.is_empty() {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in marks.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Offset(from_ms.max(0)))
            .map_err(|e| e.to_string())?;
    }
    let found = c
        .offsets_for_times(tpl, REQUEST_TIMEOUT)
        .map_err(|e| e.to_string())?;
    for e in found.elements() {
        if let Err(err) = e.error() {
            return Err(err.to_string());
        }
        let key = (e.topic().to_owned(), e.partition());
        let Some(&(low, high)) = marks.get(&key) else {
            continue;
        };
        let at = match e.offset() {
            Offset::Offset(o) => o,
            // No record at or after the time.
            Offset::End => high,
            Offset::Beginning => low,
            other => return Err(format!("unexpected offset {other:?}")),
        };
        out.insert(key, at);
    }
    Ok(out)
}

/// One record of a topic's tail, without its body.
pub struct TailRecord {
    /// The event's metadata (its `body` is empty).
    pub event: Event,
    /// The body's length.
    pub body_bytes: usize,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// The newest `per_partition` records of each partition of each of `topics` that carry a
/// `hookgate-id`, bodies left out, in no particular order. Reads until every partition's
/// high watermark (as it was at the start) or `wait`. Blocks.
pub fn tail(
    cfg: &KafkaConfig,
    topics: &[String],
    per_partition: usize,
    wait: Duration,
) -> Result<Vec<TailRecord>, ReadError> {
    let c = consumer(cfg, "hookgate-console-tail")?;
    let redact = |e: KafkaError| ReadError::Kafka(cfg.options.redact(&e.to_string()));
    let mut tpl = TopicPartitionList::new();
    // (topic, partition) -> the last offset to read.
    let mut last: HashMap<(String, i32), i64> = HashMap::new();
    for ((topic, p), (low, high)) in watermarks(&c, topics).map_err(redact)? {
        let start = low.max(high.saturating_sub(per_partition as i64));
        if high > start {
            tpl.add_partition_offset(&topic, p, Offset::Offset(start))
                .map_err(redact)?;
            last.insert((topic, p), high - 1);
        }
    }
    let mut out = Vec::new();
    if last.is_empty() {
        return Ok(out);
    }
    c.assign(&tpl).map_err(redact)?;
    let deadline = Instant::now() + wait;
    while !last.is_empty() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            tracing::warn!(
                partitions = last.len(),
                "console: reading the topics' tails took too long; the index is partly filled"
            );
            break;
        };
        let m = match c.poll(left) {
            None => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %cfg.options.redact(&e.to_string()), "console: tail read error");
                continue;
            }
            Some(Ok(m)) => m,
        };
        let key = (m.topic().to_owned(), m.partition());
        let Some(&end) = last.get(&key) else {
            continue;
        };
        if m.offset() >= end {
            last.remove(&key);
        }
        if m.offset() > end {
            continue;
        }
        if let Some(event) = event_of(&m, Bytes::new()) {
            out.push(TailRecord {
                event,
                body_bytes: m.payload_len(),
                partition: m.partition(),
                offset: m.offset(),
            });
        }
    }
    Ok(out)
}
