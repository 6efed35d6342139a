//! The local spool: a segmented append-only log on disk with per-record checksums and
//! group commit.
//!
//! Files: `{dir}/{base:020}.seg`, where `base` is the global offset of the segment's first
//! byte; a record is `[len u32 BE][crc32 u32 BE][frame]` with `frame` = [`Event::encode`].
//! A record's offset is the global offset of its first byte, so a consumer's position is one
//! `u64`, kept in `{dir}/{name}.cursor` (written to a temp file, fsync'd, renamed, and the
//! directory fsync'd).
//!
//! Writing: one writer thread owns the open segment. It takes every append that queued
//! (in a queue of at most [`WRITER_QUEUE`]) while the previous fsync ran, writes them with
//! one `write`, and covers them all with one `fdatasync` (group commit); only then does each
//! caller get its offset. A failed fsync stops the writer (fail-stop): after one, the kernel
//! may have dropped the dirty pages, and a retried fsync can report success for data that is
//! gone. Every append is then refused until the writer reopens (cuts the segment back to the
//! last acknowledged byte and goes on in a new segment, tried every [`REOPEN_AFTER`]) or the
//! process restarts. A full disk is not an fsync error: the partial write is cut off and the
//! batch refused as full.
//!
//! Retention: a spool opened with its registered consumers ([`Spool::open_with_consumers`])
//! deletes whole segments, oldest first, that every registered consumer is past: when an
//! append would go over `max_bytes` (the open segment is rolled if that is what holds the
//! room), and when a segment's last write is older than `retention`. With no registered
//! consumer nothing waits for the data, so the oldest segments make room instead of a wall
//! of 503s. A lagging consumer holds its segments, and appends are refused at `max_bytes`.
//!
//! Recovery at open: a torn tail (a partial record with nothing valid after it) is cut. A
//! bad record in the last segment whose own length field leads on to intact records is
//! copied to `{dir}/corrupt/{offset}.bin` and overwritten with a padding record that readers
//! skip, so the acknowledged records after it stay. A damaged length field is treated as a
//! torn tail: scanning for the next record-like bytes could land inside an event body,
//! which a sender controls.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hookgate_proto::Event;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::units::ByteSize;

#[doc(hidden)]
pub mod fuzzing;
mod recover;
#[cfg(test)]
mod tests;
mod writer;

use self::recover::{recover_segment, walk};
use self::writer::Writer;

const HEADER: usize = 8;
/// Largest record payload the spool writes or reads; a larger length field is corruption.
pub const MAX_FRAME: u32 = 256 << 20;
/// Room a spool record needs beyond the event body: ids, names, key, content type and kept
/// headers (bounded by hyper's header limits, 64 KiB in all) and the record header.
pub const FRAME_OVERHEAD: u64 = 80 << 10;
/// Appends that may wait for the writer thread. Each holds its encoded event, so the queue
/// holds at most this many bodies; callers beyond it wait in `append` (the request path's
/// concurrency limit bounds those).
pub const WRITER_QUEUE: usize = 1024;
/// Most appends written and fsync'd together.
const MAX_BATCH: usize = 1024;
/// How long a writer stopped by an fsync error waits before it tries to reopen.
pub const REOPEN_AFTER: Duration = Duration::from_secs(5);
/// First payload byte of a padding record (events start with their frame version, 1).
const PAD: u8 = 0;
/// Folder (in the spool directory) of the bytes of bad records found at open.
pub const CORRUPT_DIR: &str = "corrupt";

/// The largest `max_body_bytes` a spool can hold as one record.
pub fn max_body_bytes() -> u64 {
    u64::from(MAX_FRAME) - FRAME_OVERHEAD
}

/// `[spool]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool's segment and cursor files (created if missing).
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Upper bound of the spool's size on disk. Beyond it the oldest segments every
    /// registered consumer is past are deleted; if that is not enough, appends answer 503.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Size at which a new segment file is started (retention deletes whole segments).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: ByteSize,
    /// Segments whose last write is older than this are deleted once every registered
    /// consumer is past them.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
}

fn default_path() -> PathBuf {
    PathBuf::from("./hookgate-spool")
}
fn default_max_bytes() -> ByteSize {
    ByteSize(10 << 30)
}
fn default_segment_bytes() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_retention() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            path: default_path(),
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
            retention: default_retention(),
        }
    }
}

/// Why the spool could not take or give a record.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool reached `max_bytes` (and retention could not make room) or the disk is
    /// full.
    #[error("spool is full")]
    Full,
    /// A disk error; the message names the operation, never event contents.
    #[error("spool I/O error during {op}: {source}")]
    Io {
        /// What the spool was doing.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The writer stopped after a failed fsync and refuses appends until it reopens.
    #[error("spool writer stopped after a failed {op}; appends are refused until it reopens")]
    Stopped {
        /// The operation whose fsync failed.
        op: &'static str,
    },
    /// The event's record is larger than [`MAX_FRAME`].
    #[error("event is too large for a spool record")]
    TooLarge,
    /// The writer thread is gone (shutdown), or the handle is read-only.
    #[error("spool is closed")]
    Closed,
    /// Another process has this spool open for writing.
    #[error("spool {0} is in use by another hookgate process (stop it first; reading commands such as `dlq list` and `spool read` work beside it)")]
    Locked(String),
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> SpoolError {
    move |source| SpoolError::Io { op, source }
}

struct Append {
    frame: Vec<u8>,
    done: oneshot::Sender<Result<u64, SpoolError>>,
}

/// What the writer thread is asked to do.
enum ToWriter {
    Append(Append),
    /// Age retention: start a new segment if the open one was last written at or before
    /// the cutoff and every registered consumer is past its end, so it can be deleted.
    /// Answers whether it rolled.
    RollIdle {
        cutoff: SystemTime,
        done: oneshot::Sender<bool>,
    },
}

/// Failures injected by the unit tests: an fsync error cannot be provoked on a test
/// filesystem (tmpfs never fails one). Empty and free outside tests.
#[derive(Default)]
struct Faults {
    /// Fail this many segment fsyncs with EIO.
    #[cfg(test)]
    fsync: std::sync::atomic::AtomicU32,
    /// Fail this many directory fsyncs with EIO.
    #[cfg(test)]
    dir_fsync: std::sync::atomic::AtomicU32,
    /// Let a stopped writer try to reopen at once instead of after [`REOPEN_AFTER`].
    #[cfg(test)]
    reopen_now: std::sync::atomic::AtomicBool,
}

impl Faults {
    #[cfg(test)]
    fn take(n: &std::sync::atomic::AtomicU32) -> io::Result<()> {
        match n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1)) {
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EIO)),
            Err(_) => Ok(()),
        }
    }
    fn fsync(&self) -> io::Result<()> {
        #[cfg(test)]
        Faults::take(&self.fsync)?;
        Ok(())
    }
    fn dir_fsync(&self) -> io::Result<()> {
        #[cfg(test)]
        Faults::take(&self.dir_fsync)?;
        Ok(())
    }
    fn reopen_after(&self) -> Duration {
        #[cfg(test)]
        if self.reopen_now.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        REOPEN_AFTER
    }
}

/// State the writer keeps current, read by stats, consumers and readers without the writer.
struct Shared {
    dir: PathBuf,
    /// Global offset just past the last fsync'd record.
    committed: watch::Sender<u64>,
    /// Global offset of the oldest byte still on disk.
    start: AtomicU64,
    max_bytes: u64,
    retention: Duration,
    /// Serialises segment deletion with readers opening segments.
    gc: Mutex<()>,
    /// Last known position of each consumer, so the request path need not read files.
    cursors: Mutex<HashMap<String, u64>>,
    /// The consumers whose cursors hold data back. `None`: not declared (a spool opened
    /// with [`Spool::open`]): segments go only once the consumers named to
    /// [`Spool::commit`] are past them, never for room or age.
    registered: Option<Vec<String>>,
    /// Since when the writer is stopped after an fsync error (`None`: it is not), so
    /// readiness can let an append in to try the reopen once it is due.
    stopped: Mutex<Option<Instant>>,
    faults: Faults,
}

impl Shared {
    /// The state of the spool in `cfg.path`: `end` just past the last whole record, `segs`
    /// the segment bases on disk, oldest first.
    fn new(cfg: &SpoolConfig, end: u64, segs: &[u64], registered: Option<Vec<String>>) -> Shared {
        Shared {
            dir: cfg.path.clone(),
            committed: watch::channel(end).0,
            start: AtomicU64::new(segs.first().copied().unwrap_or(0)),
            max_bytes: cfg.max_bytes.0,
            retention: cfg.retention,
            gc: Mutex::new(()),
            cursors: Mutex::new(HashMap::new()),
            registered,
            stopped: Mutex::new(None),
            faults: Faults::default(),
        }
    }

    fn stopped_since(&self) -> Option<Instant> {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_stopped(&self, since: Option<Instant>) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = since;
        metrics::gauge!("hookgate_spool_writer_stopped").set(if since.is_some() {
            1.0
        } else {
            0.0
        });
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.dir_fsync()?;
        File::open(dir)?.sync_all()
    }

    /// The saved position of consumer `name` (0 when it has none yet).
    fn cursor_on_disk(&self, name: &str) -> Result<u64, SpoolError> {
        let path = self.dir.join(format!("{name}.cursor"));
        match fs::read_to_string(&path) {
            // An unreadable cursor restarts that consumer from the oldest record: it sees
            // events again rather than missing any.
            Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(SpoolError::Io {
                op: "read cursor",
                source: e,
            }),
        }
    }

    fn lock_cursors(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.cursors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The position of `name`: from memory once known, else from its file (a consumer
    /// behind the oldest byte on disk starts there, as [`Spool::cursor_cached`] has it).
    fn position(&self, name: &str) -> Result<u64, SpoolError> {
        if let Some(v) = self.lock_cursors().get(name) {
            return Ok(*v);
        }
        let v = self
            .cursor_on_disk(name)?
            .max(self.start.load(Ordering::Acquire));
        self.lock_cursors().insert(name.to_owned(), v);
        Ok(v)
    }

    /// The offset every consumer that holds data back is past: the registered ones and
    /// `also`. `None` when nothing may be deleted (no declared consumers, none named).
    fn low_water(&self, end: u64, also: &[&str]) -> Result<Option<u64>, SpoolError> {
        let registered = self.registered.as_deref();
        if registered.is_none() && also.is_empty() {
            return Ok(None);
        }
        let mut low = end;
        for name in registered
            .into_iter()
            .flatten()
            .map(String::as_str)
            .chain(also.iter().copied())
        {
            low = low.min(self.position(name)?);
        }
        Ok(Some(low))
    }

    /// Deletes whole segments, oldest first, that end at or before `low`, while `more`
    /// agrees (given a segment's path and size). The newest segment (the writer's) is never
    /// deleted. Returns the bytes deleted; `reason` labels the retention metric.
    fn drop_segments(
        &self,
        low: u64,
        reason: Option<&'static str>,
        mut more: impl FnMut(&Path, u64) -> bool,
    ) -> Result<u64, SpoolError> {
        let _g = self.gc.lock().unwrap_or_else(|p| p.into_inner());
        let segs = list_segments(&self.dir)?;
        let mut freed = 0;
        for w in segs.windows(2) {
            let &[base, next] = w else { break };
            let path = seg_path(&self.dir, base);
            if next > low || !more(&path, next - base) {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(SpoolError::Io {
                        op: "delete segment",
                        source: e,
                    })
                }
            }
            self.start.store(next, Ordering::Release);
            freed += next - base;
        }
        if let (Some(reason), true) = (reason, freed > 0) {
            metrics::counter!("hookgate_spool_retention_dropped_bytes_total", "reason" => reason)
                .increment(freed);
            tracing::info!(
                bytes = freed,
                reason,
                start_offset = self.start.load(Ordering::Acquire),
                "spool retention deleted the oldest segments"
            );
        }
        Ok(freed)
    }
}

/// The spool handle. Cheap to clone; appends go to the one writer thread.
#[derive(Clone)]
pub struct Spool {
    /// `None` for a read-only handle (`hookgate spool read` beside a running server).
    tx: Option<mpsc::Sender<ToWriter>>,
    shared: Arc<Shared>,
    /// Held while a writer has the spool open: one writer per directory.
    _lock: Option<Arc<File>>,
}

/// What `hookgate spool stats` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpoolStats {
    /// Segment files on disk.
    pub segments: usize,
    /// Bytes on disk in segments.
    pub bytes: u64,
    /// The configured `max_bytes`.
    pub max_bytes: u64,
    /// Offset of the oldest byte on disk.
    pub start_offset: u64,
    /// Offset just past the newest durable record.
    pub end_offset: u64,
    /// Bad records moved to `corrupt/` at open, over the spool's life.
    pub corrupt_frames: usize,
    /// Each consumer's position.
    pub consumers: Vec<ConsumerStats>,
}

/// One consumer's position in `hookgate spool stats`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsumerStats {
    /// Cursor name (`forwarder`, `dispatcher`, …).
    pub name: String,
    /// Whether the config registers it (its lag holds segments); an unregistered cursor is
    /// a file left by an earlier config.
    pub registered: bool,
    /// Its saved position (0: none yet).
    pub cursor: u64,
    /// Bytes between its position (or the oldest byte on disk) and the end.
    pub lag_bytes: u64,
}

impl Spool {
    /// Opens (or creates) the spool at `cfg.path`, recovers the last segment, and starts the
    /// writer. No consumers are declared: segments are deleted only once the consumers
    /// named to [`Spool::commit`] are past them, never for room or age (a dead-letter
    /// spool keeps every letter until it is replayed). Fails if another process has it open
    /// for writing.
    pub fn open(cfg: &SpoolConfig) -> Result<Spool, SpoolError> {
        Spool::open_inner(cfg, None)
    }

    /// Like [`Spool::open`], with the consumers whose cursors hold data back. Retention
    /// (`max_bytes`, `retention`) deletes only what all of them are past; with none, the
    /// oldest segments are deleted to make room.
    pub fn open_with_consumers(
        cfg: &SpoolConfig,
        consumers: &[String],
    ) -> Result<Spool, SpoolError> {
        Spool::open_inner(cfg, Some(consumers.to_vec()))
    }

    fn open_inner(cfg: &SpoolConfig, registered: Option<Vec<String>>) -> Result<Spool, SpoolError> {
        let dir = cfg.path.clone();
        fs::create_dir_all(&dir).map_err(io_err("create spool directory"))?;
        let lock = File::create(dir.join("LOCK")).map_err(io_err("create spool lock"))?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::Locked(dir.display().to_string()));
        }
        let segs = list_segments(&dir)?;
        let shared = Arc::new(Shared::new(cfg, 0, &segs, registered));
        let (file, base, len) = match segs.last() {
            Some(&base) => {
                let (file, len) = recover_segment(&shared, base)?;
                (file, base, len)
            }
            None => {
                let file = create_segment(&shared, 0)?;
                (file, 0, 0)
            }
        };
        shared.committed.send_replace(base + len);
        Spool::start_writer(shared, file, base, len, cfg, lock)
    }

    fn start_writer(
        shared: Arc<Shared>,
        file: File,
        base: u64,
        len: u64,
        cfg: &SpoolConfig,
        lock: File,
    ) -> Result<Spool, SpoolError> {
        let (tx, rx) = mpsc::channel::<ToWriter>(WRITER_QUEUE);
        let writer = Writer {
            shared: shared.clone(),
            file,
            base,
            len,
            segment_bytes: cfg.segment_bytes.0.max(4096),
            stopped: None,
        };
        std::thread::Builder::new()
            .name("hookgate-spool".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err("start spool writer"))?;
        Ok(Spool {
            tx: Some(tx),
            shared,
            _lock: Some(Arc::new(lock)),
        })
    }

    /// Opens the spool for reading only: no writer, nothing truncated or recovered, safe
    /// beside a running server. Reads stop at the last whole record.
    pub fn open_read_only(cfg: &SpoolConfig) -> Result<Spool, SpoolError> {
        let dir = cfg.path.clone();
        let segs = list_segments(&dir)?;
        let end = match segs.last() {
            Some(&base) => {
                let data = read_file(&seg_path(&dir, base))?;
                base + walk(&data).valid_end as u64
            }
            None => 0,
        };
        Ok(Spool {
            tx: None,
            shared: Arc::new(Shared::new(cfg, end, &segs, None)),
            _lock: None,
        })
    }

    /// Appends one event; resolves once it is fsync'd, with its offset. Waits while the
    /// writer's queue is full.
    pub async fn append(&self, ev: &Event) -> Result<u64, SpoolError> {
        let mut frame = Vec::with_capacity(ev.body.len() + 256);
        frame.extend_from_slice(&[0u8; HEADER]);
        ev.encode(&mut frame);
        let payload = frame.get(HEADER..).unwrap_or_default();
        let payload_len = match u32::try_from(payload.len()) {
            Ok(n) if n <= MAX_FRAME => n,
            _ => return Err(SpoolError::TooLarge),
        };
        let crc = crc32fast::hash(payload);
        frame[..4].copy_from_slice(&payload_len.to_be_bytes());
        frame[4..8].copy_from_slice(&crc.to_be_bytes());
        let (done, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(SpoolError::Closed)?
            .send(ToWriter::Append(Append { frame, done }))
            .await
            .map_err(|_| SpoolError::Closed)?;
        rx.await.map_err(|_| SpoolError::Closed)?
    }

    /// Offset just past the newest durable record.
    pub fn end_offset(&self) -> u64 {
        *self.shared.committed.borrow()
    }

    /// Offset of the oldest record still on disk.
    pub fn start_offset(&self) -> u64 {
        self.shared.start.load(Ordering::Acquire)
    }

    /// A watch that changes whenever more records become durable.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// Bytes the spool holds on disk.
    pub fn used_bytes(&self) -> u64 {
        self.end_offset().saturating_sub(self.start_offset())
    }

    /// The consumers declared at open (`None`: opened with [`Spool::open`]).
    pub fn consumers(&self) -> Option<&[String]> {
        self.shared.registered.as_deref()
    }

    /// Whether the writer is stopped after an fsync error.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped_since().is_some()
    }

    /// Whether an append would be refused right now: the writer is stopped after an fsync
    /// error (until its next reopen attempt is due: the writer tries it on an append, so
    /// readiness lets one in), or the spool is at `max_bytes` and retention cannot make
    /// room.
    pub fn is_full(&self) -> bool {
        if let Some(since) = self.shared.stopped_since() {
            return since.elapsed() < self.shared.faults.reopen_after();
        }
        if self.used_bytes() < self.shared.max_bytes {
            return false;
        }
        let end = self.end_offset();
        let Ok(Some(low)) = self
            .shared
            .registered
            .as_ref()
            .map_or(Ok(None), |_| self.shared.low_water(end, &[]))
        else {
            return true;
        };
        // Room can be made if the oldest segment is wholly consumed (or, with one
        // segment, everything is: the writer rolls then).
        match list_segments(&self.shared.dir) {
            Ok(segs) => match segs.get(1) {
                Some(&second) => low < second,
                None => low < end,
            },
            Err(_) => true,
        }
    }

    /// Sizes for `hookgate spool stats` and metrics, with the declared consumers.
    pub fn stats(&self) -> Result<SpoolStats, SpoolError> {
        let names = self.shared.registered.clone().unwrap_or_default();
        self.stats_for(&names)
    }

    /// Sizes and positions, listing `consumers` as registered, plus any other cursor file
    /// on disk as unregistered.
    pub fn stats_for(&self, consumers: &[String]) -> Result<SpoolStats, SpoolError> {
        let segs = list_segments(&self.shared.dir)?;
        let end = self.end_offset();
        let start = segs.first().copied().unwrap_or(end).min(end);
        let mut names: Vec<(String, bool)> = consumers.iter().map(|c| (c.clone(), true)).collect();
        for entry in fs::read_dir(&self.shared.dir).map_err(io_err("list spool directory"))? {
            let entry = entry.map_err(io_err("list spool directory"))?;
            let file = entry.file_name();
            if let Some(n) = file.to_str().and_then(|f| f.strip_suffix(".cursor")) {
                if !names.iter().any(|(c, _)| c == n) {
                    names.push((n.to_owned(), false));
                }
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for (name, registered) in names {
            let cursor = self.shared.cursor_on_disk(&name)?;
            out.push(ConsumerStats {
                lag_bytes: end.saturating_sub(cursor.max(start)),
                name,
                registered,
                cursor,
            });
        }
        let corrupt_frames = match fs::read_dir(self.shared.dir.join(CORRUPT_DIR)) {
            Ok(rd) => rd.filter(|e| e.is_ok()).count(),
            Err(_) => 0,
        };
        Ok(SpoolStats {
            segments: segs.len(),
            bytes: end - start,
            max_bytes: self.shared.max_bytes,
            start_offset: start,
            end_offset: end,
            corrupt_frames,
            consumers: out,
        })
    }

    /// Reads durable records starting at `from` (clamped to the oldest on disk), at most
    /// `max` of them. Returns `(offset, event)` pairs and the offset after the last one.
    pub fn read(&self, from: u64, max: usize) -> Result<(Vec<(u64, Event)>, u64), SpoolError> {
        read_records(&self.shared, from, max)
    }

    /// The newest `max` durable records, oldest first, each passed through `keep` (which
    /// may drop it, or keep only its metadata). Reads whole segments backwards from the
    /// newest until `max` records are found, so the cost is bounded by `max` records plus
    /// one segment, whatever the spool's size.
    pub fn tail<T>(
        &self,
        max: usize,
        mut keep: impl FnMut(u64, Event) -> Option<T>,
    ) -> Result<Vec<T>, SpoolError> {
        let end = self.end_offset();
        let segs = {
            let _g = self.shared.gc.lock().unwrap_or_else(|p| p.into_inner());
            list_segments(&self.shared.dir)?
        };
        let mut found: std::collections::VecDeque<T> = std::collections::VecDeque::new();
        for (i, &base) in segs.iter().enumerate().rev() {
            if found.len() >= max {
                break;
            }
            let seg_end = segs.get(i + 1).copied().unwrap_or(end).min(end);
            let room = max - found.len();
            let mut newest: std::collections::VecDeque<T> = std::collections::VecDeque::new();
            let mut at = base;
            'segment: while at < seg_end {
                let (batch, next) = self.read(at, 256)?;
                if batch.is_empty() || next <= at {
                    break;
                }
                for (offset, ev) in batch {
                    // A deleted segment makes `read` clamp forward: stop at this one's end.
                    if offset >= seg_end {
                        break 'segment;
                    }
                    if let Some(t) = keep(offset, ev) {
                        newest.push_back(t);
                        if newest.len() > room {
                            newest.pop_front();
                        }
                    }
                }
                at = next;
            }
            for t in newest.into_iter().rev() {
                found.push_front(t);
            }
        }
        Ok(found.into())
    }

    /// The first durable record at or after `from` (clamped to the oldest on disk), read
    /// alone — for gauges such as the oldest record's age.
    pub fn peek(&self, from: u64) -> Result<Option<Event>, SpoolError> {
        let end = self.end_offset();
        let _g = self.shared.gc.lock().unwrap_or_else(|p| p.into_inner());
        let segs = list_segments(&self.shared.dir)?;
        let mut at = from.max(segs.first().copied().unwrap_or(0));
        while at < end {
            let Some(&base) = segs.iter().rev().find(|b| **b <= at) else {
                return Ok(None);
            };
            let mut file = match File::open(seg_path(&self.shared.dir, base)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    return Err(SpoolError::Io {
                        op: "read segment",
                        source: e,
                    })
                }
            };
            let head = read_at(&mut file, at - base, HEADER as u64)?;
            let Some(len) = head_len(&head) else {
                return Ok(None);
            };
            let data = Bytes::from(read_at(&mut file, at - base, HEADER as u64 + len)?);
            let Some((r, next)) = parse_record(&data, 0) else {
                return Ok(None);
            };
            if data.get(r.start) == Some(&PAD) {
                at += next as u64;
                continue;
            }
            return Ok(Event::decode(&data.slice(r)).ok());
        }
        Ok(None)
    }

    /// The saved position of consumer `name` (0 when it has none yet).
    pub fn cursor(&self, name: &str) -> Result<u64, SpoolError> {
        self.shared.cursor_on_disk(name)
    }

    /// The position of consumer `name`, from memory after the first read.
    pub fn cursor_cached(&self, name: &str) -> u64 {
        if let Some(v) = self.shared.lock_cursors().get(name) {
            return *v;
        }
        let v = self.cursor(name).unwrap_or(0).max(self.start_offset());
        self.shared.lock_cursors().insert(name.to_owned(), v);
        v
    }

    /// Durably saves consumer `name`'s position, then deletes segments every consumer is
    /// past: the declared ones and `consumers`.
    pub fn commit(&self, name: &str, offset: u64, consumers: &[&str]) -> Result<(), SpoolError> {
        let dir = &self.shared.dir;
        let tmp = dir.join(format!("{name}.cursor.tmp"));
        let path = dir.join(format!("{name}.cursor"));
        {
            let mut f = File::create(&tmp).map_err(io_err("write cursor"))?;
            f.write_all(offset.to_string().as_bytes())
                .map_err(io_err("write cursor"))?;
            f.sync_all().map_err(io_err("fsync cursor"))?;
        }
        fs::rename(&tmp, &path).map_err(io_err("rename cursor"))?;
        // Until the directory is fsync'd the rename may not survive a crash: report the
        // commit as failed so the consumer commits again (it re-sends at most).
        self.shared
            .sync_dir(dir)
            .map_err(io_err("fsync spool directory after a cursor rename"))?;
        self.shared.lock_cursors().insert(name.to_owned(), offset);
        let mut names = consumers.to_vec();
        names.push(name);
        if let Some(low) = self.shared.low_water(self.end_offset(), &names)? {
            self.shared.drop_segments(low, None, |_, _| true)?;
        }
        Ok(())
    }

    /// Deletes segments whose last write is older than `retention` and that every
    /// registered consumer is past. Returns the bytes deleted. Does nothing on a spool
    /// opened without declared consumers. The writer's open segment is deleted too when it
    /// is that old and wholly consumed: the writer is asked to start a new one first, so a
    /// quiet spool does not keep its last records past `retention`. Blocking (it waits for
    /// the writer): call it from a blocking context.
    pub fn enforce_retention(&self) -> Result<u64, SpoolError> {
        if self.shared.registered.is_none() {
            return Ok(0);
        }
        let Some(cutoff) = SystemTime::now().checked_sub(self.shared.retention) else {
            return Ok(0);
        };
        let old_enough = |path: &Path, _: u64| {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t <= cutoff)
        };
        let Some(low) = self.shared.low_water(self.end_offset(), &[])? else {
            return Ok(0);
        };
        let mut freed = self.shared.drop_segments(low, Some("age"), old_enough)?;
        let end = self.end_offset();
        let open_is_old = match list_segments(&self.shared.dir)?.as_slice() {
            [.., base] => *base < end && old_enough(&seg_path(&self.shared.dir, *base), 0),
            [] => false,
        };
        if open_is_old && low >= end && self.roll_idle(cutoff) {
            if let Some(low) = self.shared.low_water(self.end_offset(), &[])? {
                freed += self.shared.drop_segments(low, Some("age"), old_enough)?;
            }
        }
        Ok(freed)
    }

    /// Asks the writer to roll its open segment if it is still idle since `cutoff` and
    /// consumed; whether it did.
    fn roll_idle(&self, cutoff: SystemTime) -> bool {
        let Some(tx) = &self.tx else { return false };
        let (done, rx) = oneshot::channel();
        if tx
            .blocking_send(ToWriter::RollIdle { cutoff, done })
            .is_err()
        {
            return false;
        }
        rx.blocking_recv().unwrap_or(false)
    }

    #[cfg(test)]
    fn faults(&self) -> &Faults {
        &self.shared.faults
    }
}

/// For consumers that caught up: waits until the writer makes more records durable or
/// `stop` changes; the one-second cap is a safety net should a wake-up be missed.
pub async fn wait_for_more(wake: &mut watch::Receiver<u64>, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = wake.changed() => {}
        _ = stop.changed() => {}
        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

fn seg_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The operation named when the directory fsync after creating a segment fails.
const DIR_FSYNC: &str = "fsync spool directory";

/// Creates (or opens, if a failed roll left it) the segment at `base` and fsyncs the
/// directory so it survives a crash (an error there is an `Io` error with op
/// [`DIR_FSYNC`]).
fn create_segment(shared: &Shared, base: u64) -> Result<File, SpoolError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(seg_path(&shared.dir, base))
        .map_err(io_err("create segment"))?;
    shared.sync_dir(&shared.dir).map_err(io_err(DIR_FSYNC))?;
    Ok(f)
}

fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list spool directory"))? {
        let entry = entry.map_err(io_err("list spool directory"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = name
            .strip_suffix(".seg")
            .and_then(|b| b.parse::<u64>().ok())
        {
            out.push(base);
        }
    }
    out.sort_unstable();
    Ok(out)
}

fn read_file(path: &Path) -> Result<Vec<u8>, SpoolError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io_err("read segment"))?;
    Ok(data)
}

/// The length field of the record header at the start of `head`, if plausible.
fn head_len(head: &[u8]) -> Option<u64> {
    let h = head.get(..4)?;
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    (len != 0 && len <= MAX_FRAME).then_some(u64::from(len))
}

/// The record at `pos`, if whole and intact: (payload range, next position).
fn parse_record(data: &[u8], pos: usize) -> Option<(std::ops::Range<usize>, usize)> {
    let head = data.get(pos..pos.checked_add(HEADER)?)?;
    let len = head_len(head)?;
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let range = pos + HEADER..pos + HEADER + len as usize;
    let payload = data.get(range.clone())?;
    (crc32fast::hash(payload) == crc).then_some((range.clone(), range.end))
}

/// Most bytes one read call loads from a segment (more only for a single larger record).
const READ_CHUNK: u64 = 4 << 20;

fn read_records(
    shared: &Shared,
    from: u64,
    max: usize,
) -> Result<(Vec<(u64, Event)>, u64), SpoolError> {
    let end = *shared.committed.borrow();
    let _g = shared.gc.lock().unwrap_or_else(|p| p.into_inner());
    let segs = list_segments(&shared.dir)?;
    let start = segs.first().copied().unwrap_or(0);
    let mut at = from.max(start);
    let mut out = Vec::new();
    for (i, &base) in segs.iter().enumerate() {
        let seg_end = segs.get(i + 1).copied().unwrap_or(end);
        if seg_end <= at || out.len() >= max {
            continue;
        }
        let mut file = match File::open(seg_path(&shared.dir, base)) {
            Ok(f) => f,
            // Retention in the serving process deleted it after the listing (a read-only
            // reader does not share its lock): its records are gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                at = at.max(seg_end);
                continue;
            }
            Err(e) => {
                return Err(SpoolError::Io {
                    op: "read segment",
                    source: e,
                })
            }
        };
        while at < seg_end && out.len() < max {
            let want = (seg_end - at).min(READ_CHUNK);
            let data = read_at(&mut file, at - base, want)?;
            let mut data = Bytes::from(data);
            // One record larger than the chunk: read exactly that record.
            if parse_record(&data, 0).is_none() {
                if let Some(len) = head_len(&data) {
                    let need = (HEADER as u64 + len).min(seg_end - at);
                    if need > want {
                        data = Bytes::from(read_at(&mut file, at - base, need)?);
                    }
                }
            }
            let mut pos = 0usize;
            while out.len() < max {
                let Some((range, next)) = parse_record(&data, pos) else {
                    break;
                };
                if data.get(range.start) != Some(&PAD) {
                    match Event::decode(&data.slice(range)) {
                        Ok(ev) => out.push((at + pos as u64, ev)),
                        Err(e) => {
                            tracing::error!(offset = at + pos as u64, error = %e, "spool record undecodable; skipped")
                        }
                    }
                }
                pos = next;
            }
            if pos == 0 {
                // A bad record inside a sealed segment: skip the rest of it rather than loop.
                tracing::error!(
                    offset = at,
                    "spool segment corrupt past this offset; skipping to next segment"
                );
                at = seg_end;
                break;
            }
            at += pos as u64;
        }
    }
    Ok((out, at))
}

fn read_at(file: &mut File, pos: u64, len: u64) -> Result<Vec<u8>, SpoolError> {
    file.seek(SeekFrom::Start(pos))
        .map_err(io_err("read segment"))?;
    let mut data = Vec::with_capacity(len as usize);
    file.take(len)
        .read_to_end(&mut data)
        .map_err(io_err("read segment"))?;
    Ok(data)
}
