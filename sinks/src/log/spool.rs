//! The local spool: a segmented append-only log on disk with per-record checksums and
//! group commit.
//!
//! Files: `{dir}/{base:020}.seg`, where `base` is the global offset of the segment's first
//! byte; a record is `[len u32 BE][crc32 u32 BE][frame]` with `frame` = [`Event::encode`].
//! A record's offset is the global offset of its first byte, so a consumer's position is one
//! `u64`, kept in `{dir}/{name}.cursor` (written to a temp file, fsync'd, renamed).
//!
//! One writer thread owns the open segment. It takes every append that queued while the
//! previous fsync ran, writes them with one `write`, and covers them all with one
//! `fdatasync` (group commit); only then does each caller get its offset. A torn or corrupt
//! tail left by a crash is found at open by length and checksum and cut off.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use hookgate_proto::Event;
use serde::Deserialize;
use tokio::sync::{oneshot, watch};

use crate::units::ByteSize;

const HEADER: usize = 8;
/// A frame larger than this is treated as corruption when reading (no request body may be
/// this big: the server's body limit is far below).
const MAX_FRAME: u32 = 256 << 20;

/// `[spool]` config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of the spool's segment and cursor files (created if missing).
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Upper bound of the spool's size on disk; appends beyond it answer 503.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Size at which a new segment file is started.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: ByteSize,
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

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            path: default_path(),
            max_bytes: default_max_bytes(),
            segment_bytes: default_segment_bytes(),
        }
    }
}

/// Why the spool could not take or give a record.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool reached `max_bytes` or the disk is full.
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
    /// The writer thread is gone (shutdown), or the handle is read-only.
    #[error("spool is closed")]
    Closed,
    /// Another process has this spool open for writing.
    #[error("spool {0} is in use by another hookgate process")]
    Locked(String),
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> SpoolError {
    move |source| SpoolError::Io { op, source }
}

struct Append {
    frame: Vec<u8>,
    done: oneshot::Sender<Result<u64, SpoolError>>,
}

/// Sizes the writer keeps current, read by stats and readers without a lock.
struct Shared {
    dir: PathBuf,
    /// Global offset just past the last fsync'd record.
    committed: watch::Sender<u64>,
    /// Global offset of the oldest byte still on disk.
    start: AtomicU64,
    max_bytes: u64,
    /// Serialises segment deletion with readers opening segments.
    gc: Mutex<()>,
    /// Last known position of each consumer, so the request path need not read files.
    cursors: Mutex<std::collections::HashMap<String, u64>>,
}

/// The spool handle. Cheap to clone; appends go to the one writer thread.
#[derive(Clone)]
pub struct Spool {
    /// `None` for a read-only handle (`hookgate spool read` beside a running server).
    tx: Option<mpsc::Sender<Append>>,
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
    /// Offset of the oldest byte on disk.
    pub start_offset: u64,
    /// Offset just past the newest durable record.
    pub end_offset: u64,
}

impl Spool {
    /// Opens (or creates) the spool at `cfg.path`, cuts any torn tail, and starts the writer.
    /// Fails if another process has it open for writing.
    pub fn open(cfg: &SpoolConfig) -> Result<Spool, SpoolError> {
        let dir = cfg.path.clone();
        fs::create_dir_all(&dir).map_err(io_err("create spool directory"))?;
        let lock = File::create(dir.join("LOCK")).map_err(io_err("create spool lock"))?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::Locked(dir.display().to_string()));
        }
        let segs = list_segments(&dir)?;
        let (file, base, len) = match segs.last() {
            Some(&base) => {
                let path = seg_path(&dir, base);
                let valid = scan_valid_len(&path)?;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open segment"))?;
                let actual = file.metadata().map_err(io_err("stat segment"))?.len();
                if actual != valid {
                    tracing::warn!(
                        segment = %path.display(),
                        cut_bytes = actual - valid,
                        "spool segment had a torn or corrupt tail; cutting it"
                    );
                    file.set_len(valid).map_err(io_err("truncate torn tail"))?;
                    file.sync_all().map_err(io_err("fsync after truncate"))?;
                }
                (file, base, valid)
            }
            None => {
                let file = create_segment(&dir, 0)?;
                (file, 0, 0)
            }
        };
        let start = segs.first().copied().unwrap_or(0);
        let end = base + len;
        let (committed, _) = watch::channel(end);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            committed,
            start: AtomicU64::new(start),
            max_bytes: cfg.max_bytes.0,
            gc: Mutex::new(()),
            cursors: Mutex::new(Default::default()),
        });
        let (tx, rx) = mpsc::channel::<Append>();
        let writer = Writer {
            shared: shared.clone(),
            file,
            base,
            len,
            segment_bytes: cfg.segment_bytes.0.max(4096),
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

    /// Opens the spool for reading only: no writer, nothing truncated, safe beside a
    /// running server. Reads stop at the last whole record.
    pub fn open_read_only(cfg: &SpoolConfig) -> Result<Spool, SpoolError> {
        let dir = cfg.path.clone();
        let segs = list_segments(&dir)?;
        let end = match segs.last() {
            Some(&base) => base + scan_valid_len(&seg_path(&dir, base))?,
            None => 0,
        };
        let (committed, _) = watch::channel(end);
        Ok(Spool {
            tx: None,
            shared: Arc::new(Shared {
                dir,
                committed,
                start: AtomicU64::new(segs.first().copied().unwrap_or(0)),
                max_bytes: cfg.max_bytes.0,
                gc: Mutex::new(()),
                cursors: Mutex::new(Default::default()),
            }),
            _lock: None,
        })
    }

    /// Appends one event; resolves once it is fsync'd, with its offset.
    pub async fn append(&self, ev: &Event) -> Result<u64, SpoolError> {
        let mut frame = Vec::with_capacity(ev.body.len() + 256);
        frame.extend_from_slice(&[0u8; HEADER]);
        ev.encode(&mut frame);
        let payload_len = (frame.len() - HEADER) as u32;
        let crc = crc32fast::hash(&frame[HEADER..]);
        frame[..4].copy_from_slice(&payload_len.to_be_bytes());
        frame[4..8].copy_from_slice(&crc.to_be_bytes());
        let (done, rx) = oneshot::channel();
        self.tx
            .as_ref()
            .ok_or(SpoolError::Closed)?
            .send(Append { frame, done })
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
        self.end_offset() - self.start_offset()
    }

    /// Whether an append of a typical event would be refused as full right now.
    pub fn is_full(&self) -> bool {
        self.used_bytes() >= self.shared.max_bytes
    }

    /// Sizes for `hookgate spool stats` and metrics.
    pub fn stats(&self) -> Result<SpoolStats, SpoolError> {
        let segs = list_segments(&self.shared.dir)?;
        Ok(SpoolStats {
            segments: segs.len(),
            bytes: self.used_bytes(),
            start_offset: self.start_offset(),
            end_offset: self.end_offset(),
        })
    }

    /// Reads durable records starting at `from` (clamped to the oldest on disk), at most
    /// `max` of them. Returns `(offset, event)` pairs and the offset after the last one.
    pub fn read(&self, from: u64, max: usize) -> Result<(Vec<(u64, Event)>, u64), SpoolError> {
        read_records(&self.shared, from, max)
    }

    /// The first durable record at or after `from` (clamped to the oldest on disk), read
    /// alone — for gauges such as the oldest record's age.
    pub fn peek(&self, from: u64) -> Result<Option<Event>, SpoolError> {
        let end = self.end_offset();
        let _g = self.shared.gc.lock().unwrap_or_else(|p| p.into_inner());
        let segs = list_segments(&self.shared.dir)?;
        let at = from.max(segs.first().copied().unwrap_or(0));
        if at >= end {
            return Ok(None);
        }
        let Some(&base) = segs.iter().rev().find(|b| **b <= at) else {
            return Ok(None);
        };
        let mut file =
            File::open(seg_path(&self.shared.dir, base)).map_err(io_err("read segment"))?;
        let head = read_at(&mut file, at - base, HEADER as u64)?;
        if head.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let data = Bytes::from(read_at(&mut file, at - base, HEADER as u64 + len)?);
        Ok(parse_record(&data, 0).and_then(|(r, _)| Event::decode(&data.slice(r)).ok()))
    }

    /// The saved position of consumer `name` (0 when it has none yet).
    pub fn cursor(&self, name: &str) -> Result<u64, SpoolError> {
        let path = self.shared.dir.join(format!("{name}.cursor"));
        match fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().parse().unwrap_or(0)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(SpoolError::Io {
                op: "read cursor",
                source: e,
            }),
        }
    }

    /// The position of consumer `name`, from memory after the first read.
    pub fn cursor_cached(&self, name: &str) -> u64 {
        if let Some(v) = self.lock_cursors().get(name) {
            return *v;
        }
        let v = self.cursor(name).unwrap_or(0).max(self.start_offset());
        self.lock_cursors().insert(name.to_owned(), v);
        v
    }

    fn lock_cursors(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u64>> {
        self.shared
            .cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Durably saves consumer `name`'s position, then deletes segments every consumer is
    /// past. `consumers` lists every consumer whose cursor holds data back.
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
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        self.lock_cursors().insert(name.to_owned(), offset);
        let mut low = offset;
        for c in consumers {
            low = low.min(self.cursor(c)?);
        }
        self.delete_before(low)
    }

    /// Deletes whole segments that end at or before `offset`.
    fn delete_before(&self, offset: u64) -> Result<(), SpoolError> {
        let _g = self.shared.gc.lock().unwrap_or_else(|p| p.into_inner());
        let segs = list_segments(&self.shared.dir)?;
        // The last segment is the writer's; never delete it.
        for w in segs.windows(2) {
            let (base, next) = (w[0], w[1]);
            if next <= offset {
                fs::remove_file(seg_path(&self.shared.dir, base))
                    .map_err(io_err("delete consumed segment"))?;
                self.shared.start.store(next, Ordering::Release);
            } else {
                break;
            }
        }
        Ok(())
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

struct Writer {
    shared: Arc<Shared>,
    file: File,
    base: u64,
    len: u64,
    segment_bytes: u64,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Append>) {
        let mut batch: Vec<Append> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 4096 {
                    break;
                }
            }
            self.commit_batch(&mut batch, &mut buf);
        }
        let _ = self.file.sync_all();
    }

    fn commit_batch(&mut self, batch: &mut Vec<Append>, buf: &mut Vec<u8>) {
        // Admit what fits under max_bytes; the rest is refused as full.
        let start = self.shared.start.load(Ordering::Acquire);
        let mut used = self.base + self.len - start;
        let mut admitted = Vec::with_capacity(batch.len());
        for a in batch.drain(..) {
            let n = a.frame.len() as u64;
            if used + n > self.shared.max_bytes {
                let _ = a.done.send(Err(SpoolError::Full));
                metrics::counter!("hookgate_spool_full_total").increment(1);
            } else {
                used += n;
                admitted.push(a);
            }
        }
        if admitted.is_empty() {
            return;
        }
        if self.len >= self.segment_bytes {
            if let Err(e) = self.roll() {
                tracing::error!(error = %e, "spool could not start a new segment");
                for a in admitted {
                    let _ = a.done.send(Err(SpoolError::Io {
                        op: "start segment",
                        source: io::Error::other("segment roll failed"),
                    }));
                }
                return;
            }
        }
        buf.clear();
        let mut offsets = Vec::with_capacity(admitted.len());
        let mut at = self.base + self.len;
        for a in &admitted {
            offsets.push(at);
            at += a.frame.len() as u64;
            buf.extend_from_slice(&a.frame);
        }
        let t = Instant::now();
        let res = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(buf))
            .and_then(|_| self.file.sync_data());
        metrics::histogram!("hookgate_spool_fsync_seconds").record(t.elapsed().as_secs_f64());
        match res {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.shared.committed.send_replace(self.base + self.len);
                metrics::counter!("hookgate_spool_appends_total").increment(admitted.len() as u64);
                for (a, off) in admitted.into_iter().zip(offsets) {
                    let _ = a.done.send(Ok(off));
                }
            }
            Err(e) => {
                // Nothing of this batch is acknowledged: cut it off so no half-written
                // record precedes the next one.
                let full = e.raw_os_error() == Some(libc::ENOSPC)
                    || e.raw_os_error() == Some(libc::EDQUOT);
                tracing::error!(error = %e, disk_full = full, "spool write failed; batch refused");
                let _ = self.file.set_len(self.len);
                let _ = self.file.sync_all();
                for a in admitted {
                    let err = if full {
                        SpoolError::Full
                    } else {
                        SpoolError::Io {
                            op: "append",
                            source: io::Error::new(e.kind(), e.to_string()),
                        }
                    };
                    let _ = a.done.send(Err(err));
                }
            }
        }
    }

    fn roll(&mut self) -> Result<(), SpoolError> {
        let next = self.base + self.len;
        let file = create_segment(&self.shared.dir, next)?;
        self.file.sync_all().map_err(io_err("fsync segment"))?;
        self.file = file;
        self.base = next;
        self.len = 0;
        Ok(())
    }
}

fn seg_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn create_segment(dir: &Path, base: u64) -> Result<File, SpoolError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(seg_path(dir, base))
        .map_err(io_err("create segment"))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
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

/// Length of the prefix of a segment made of whole records with good checksums.
fn scan_valid_len(path: &Path) -> Result<u64, SpoolError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io_err("read segment"))?;
    let mut pos = 0usize;
    while let Some((_, next)) = parse_record(&data, pos) {
        pos = next;
    }
    Ok(pos as u64)
}

/// The record at `pos`, if whole and intact: (payload range, next position).
fn parse_record(data: &[u8], pos: usize) -> Option<(std::ops::Range<usize>, usize)> {
    let head = data.get(pos..pos + HEADER)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if len == 0 || len > MAX_FRAME {
        return None;
    }
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
        let mut file = File::open(seg_path(&shared.dir, base)).map_err(io_err("read segment"))?;
        while at < seg_end && out.len() < max {
            let want = (seg_end - at).min(READ_CHUNK);
            let data = read_at(&mut file, at - base, want)?;
            let mut data = Bytes::from(data);
            // One record larger than the chunk: read exactly that record.
            if parse_record(&data, 0).is_none() && data.len() >= HEADER {
                let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as u64;
                let need = (HEADER as u64 + len).min(seg_end - at);
                if need > want {
                    data = Bytes::from(read_at(&mut file, at - base, need)?);
                }
            }
            let mut pos = 0usize;
            while out.len() < max {
                let Some((range, next)) = parse_record(&data, pos) else {
                    break;
                };
                match Event::decode(&data.slice(range)) {
                    Ok(ev) => out.push((at + pos as u64, ev)),
                    Err(e) => {
                        tracing::error!(offset = at + pos as u64, error = %e, "spool record undecodable; skipped")
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc as StdArc;

    fn ev(n: u32) -> Event {
        Event {
            id: hookgate_proto::Ulid::new(),
            source: StdArc::from("s"),
            provider: StdArc::from("github"),
            topic: StdArc::from("t"),
            event_type: "push".into(),
            delivery_id: format!("d{n}"),
            key: Bytes::from(format!("k{n}")),
            received_at_ms: 1,
            content_type: None,
            kept_headers: vec![],
            body: Bytes::from(vec![b'x'; 100]),
        }
    }

    fn cfg(dir: &Path) -> SpoolConfig {
        SpoolConfig {
            path: dir.to_path_buf(),
            max_bytes: ByteSize(1 << 20),
            segment_bytes: ByteSize(4096),
        }
    }

    #[tokio::test]
    async fn appends_are_read_back_in_order_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&cfg(dir.path())).unwrap();
        let mut want = Vec::new();
        for i in 0..100 {
            let e = ev(i);
            spool.append(&e).await.unwrap();
            want.push(e);
        }
        assert!(spool.stats().unwrap().segments > 1);
        drop(spool);
        let spool = Spool::open(&cfg(dir.path())).unwrap();
        let (got, next) = spool.read(0, 1000).unwrap();
        assert_eq!(next, spool.end_offset());
        let offs: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        let got: Vec<Event> = got.into_iter().map(|(_, e)| e).collect();
        assert_eq!(got, want);
        assert_eq!(spool.peek(0).unwrap().as_ref(), Some(&want[0]));
        assert_eq!(spool.peek(offs[57]).unwrap().as_ref(), Some(&want[57]));
        assert_eq!(spool.peek(spool.end_offset()).unwrap(), None);
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs_and_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&cfg(dir.path())).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = spool.clone();
            tasks.push(tokio::spawn(async move { s.append(&ev(i)).await }));
        }
        let mut offs = Vec::new();
        for t in tasks {
            offs.push(t.await.unwrap().unwrap());
        }
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), 200);
        assert_eq!(spool.read(0, 1000).unwrap().0.len(), 200);
    }

    #[tokio::test]
    async fn torn_tail_is_cut_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(&cfg(dir.path())).unwrap();
        for i in 0..3 {
            spool.append(&ev(i)).await.unwrap();
        }
        drop(spool);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let seg = seg_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        // A half record: header claims 500 bytes, only some follow.
        f.write_all(&500u32.to_be_bytes()).unwrap();
        f.write_all(&[1, 2, 3, 4, 5, 6]).unwrap();
        drop(f);
        let spool = Spool::open(&cfg(dir.path())).unwrap();
        assert_eq!(spool.read(0, 100).unwrap().0.len(), 3);
        spool.append(&ev(9)).await.unwrap();
        let (all, _) = spool.read(0, 100).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[3].1.delivery_id, "d9");
    }

    #[tokio::test]
    async fn full_spool_refuses_and_recovers_after_consumption() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(dir.path());
        c.max_bytes = ByteSize(8192);
        c.segment_bytes = ByteSize(4096);
        let spool = Spool::open(&c).unwrap();
        let mut accepted = 0;
        let mut refused = 0;
        for i in 0..100 {
            match spool.append(&ev(i)).await {
                Ok(_) => accepted += 1,
                Err(SpoolError::Full) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(accepted > 0 && refused > 0);
        let (recs, next) = spool.read(0, 1000).unwrap();
        assert_eq!(recs.len(), accepted);
        spool.commit("fwd", next, &["fwd"]).unwrap();
        assert_eq!(spool.cursor("fwd").unwrap(), next);
        spool.append(&ev(1000)).await.unwrap();
    }
}
