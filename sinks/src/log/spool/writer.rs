//! The spool's writer thread: group commit, fail-stop after an fsync error (and the
//! reopen that ends it), and retention for room.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;

use super::{
    create_segment, io_err, is_disk_full, seg_path, Append, Shared, SpoolError, ToWriter,
    DIR_FSYNC, MAX_BATCH,
};

/// Why and since when the writer refuses appends.
pub(super) struct Stop {
    op: &'static str,
    since: Instant,
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) file: File,
    pub(super) base: u64,
    pub(super) len: u64,
    pub(super) segment_bytes: u64,
    pub(super) stopped: Option<Stop>,
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<ToWriter>) {
        let mut batch: Vec<Append> = Vec::new();
        let mut rolls = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    ToWriter::Append(a) => batch.push(a),
                    ToWriter::RollIdle { cutoff, done } => rolls.push((cutoff, done)),
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_batch(&mut batch, &mut buf);
            }
            for (cutoff, done) in rolls.drain(..) {
                let _ = done.send(self.roll_idle(cutoff));
            }
        }
        // Every acknowledged record was fsync'd already; this only tidies the file size.
        if self.stopped.is_none() {
            if let Err(e) = self.file.sync_all() {
                tracing::warn!(error = %e, "spool: final fsync at shutdown failed");
            }
        }
    }

    fn end(&self) -> u64 {
        self.base + self.len
    }

    fn stop(&mut self, op: &'static str, e: &io::Error) {
        tracing::error!(error = %e, op, "spool writer stopped: every append is refused until it reopens (or hookgate restarts)");
        let since = Instant::now();
        self.stopped = Some(Stop { op, since });
        self.shared.set_stopped(Some(since));
    }

    /// After an fsync error: cuts the segment back to the last acknowledged byte through a
    /// new file handle, fsyncs that, and goes on in a new segment.
    fn reopen(&mut self) -> Result<(), SpoolError> {
        let path = seg_path(&self.shared.dir, self.base);
        let old = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err("reopen segment"))?;
        old.set_len(self.len)
            .map_err(io_err("cut unacknowledged bytes"))?;
        self.shared
            .faults
            .fsync()
            .and_then(|_| old.sync_all())
            .map_err(io_err("fsync segment at reopen"))?;
        let next = self.end();
        let file = create_segment(&self.shared, next)?;
        self.file = file;
        self.base = next;
        self.len = 0;
        self.stopped = None;
        self.shared.set_stopped(None);
        tracing::warn!(
            offset = next,
            "spool writer reopened after an fsync error; appends are taken again"
        );
        Ok(())
    }

    fn refuse(batch: impl IntoIterator<Item = Append>, err: impl Fn() -> SpoolError) {
        for a in batch {
            let _ = a.done.send(Err(err()));
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<Append>, buf: &mut Vec<u8>) {
        if let Some(stop) = &self.stopped {
            let op = stop.op;
            let due = stop.since.elapsed() >= self.shared.faults.reopen_after();
            if !due {
                return Writer::refuse(batch.drain(..), || SpoolError::Stopped { op });
            }
            if let Err(e) = self.reopen() {
                tracing::error!(error = %e, "spool writer could not reopen; still refusing appends");
                if let Some(s) = &mut self.stopped {
                    s.since = Instant::now();
                    self.shared.set_stopped(Some(s.since));
                }
                return Writer::refuse(batch.drain(..), || SpoolError::Stopped { op });
            }
        }
        let max = self.shared.max_bytes;
        // A record larger than max_bytes never fits: no reason to delete anything for it.
        let need: u64 = batch
            .iter()
            .map(|a| a.frame.len() as u64)
            .filter(|n| *n <= max)
            .sum();
        if self.used() + need > max {
            self.make_room(self.used() + need - max);
            // Rolling for room can fail on the directory fsync, which stops the writer.
            if let Some(stop) = &self.stopped {
                let op = stop.op;
                return Writer::refuse(batch.drain(..), || SpoolError::Stopped { op });
            }
        }
        // Admit what fits under max_bytes; the rest is refused as full.
        let mut used = self.used();
        let mut admitted = Vec::with_capacity(batch.len());
        for a in batch.drain(..) {
            let n = a.frame.len() as u64;
            if used + n > max {
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
                let stopped = self.stopped.as_ref().map(|s| s.op);
                let full = matches!(&e, SpoolError::Io { source, .. } if is_disk_full(source));
                return Writer::refuse(admitted, || match stopped {
                    Some(op) => SpoolError::Stopped { op },
                    None if full => SpoolError::Full,
                    None => SpoolError::Io {
                        op: "start segment",
                        source: io::Error::other("segment roll failed"),
                    },
                });
            }
        }
        buf.clear();
        let mut offsets = Vec::with_capacity(admitted.len());
        let mut at = self.end();
        for a in &admitted {
            offsets.push(at);
            at += a.frame.len() as u64;
            buf.extend_from_slice(&a.frame);
        }
        let wrote = self
            .file
            .seek(SeekFrom::Start(self.len))
            .and_then(|_| self.file.write_all(buf));
        if let Err(e) = wrote {
            // Nothing of this batch is acknowledged: cut off what was written so no partial
            // record precedes the next one. If even that fails the file's state is unknown.
            let full = is_disk_full(&e);
            tracing::error!(error = %e, disk_full = full, "spool write failed; batch refused");
            let cut = self
                .file
                .set_len(self.len)
                .and_then(|_| self.shared.faults.fsync())
                .and_then(|_| self.file.sync_all());
            if let Err(e2) = cut {
                self.stop("fsync after cutting a failed write", &e2);
            }
            let kind = e.kind();
            return Writer::refuse(admitted, || {
                if full {
                    SpoolError::Full
                } else {
                    SpoolError::Io {
                        op: "append",
                        source: io::Error::from(kind),
                    }
                }
            });
        }
        let t = Instant::now();
        let synced = self
            .shared
            .faults
            .fsync()
            .and_then(|_| self.file.sync_data());
        metrics::histogram!("hookgate_spool_fsync_seconds").record(t.elapsed().as_secs_f64());
        if let Err(e) = synced {
            // Fail-stop: the written bytes may or may not be on disk, and a later fsync on
            // this file could succeed without them. The reopen cuts them off.
            self.stop("fsync", &e);
            return Writer::refuse(admitted, || SpoolError::Stopped { op: "fsync" });
        }
        self.len += buf.len() as u64;
        self.shared.committed.send_replace(self.end());
        metrics::counter!("hookgate_spool_appends_total").increment(admitted.len() as u64);
        for (a, off) in admitted.into_iter().zip(offsets) {
            let _ = a.done.send(Ok(off));
        }
    }

    fn used(&self) -> u64 {
        self.end()
            .saturating_sub(self.shared.start.load(Ordering::Acquire))
    }

    /// Retention for room: deletes the oldest segments every registered consumer is past
    /// until `over` bytes are free, rolling the open segment when it is what holds them.
    fn make_room(&mut self, over: u64) {
        if self.shared.registered.is_none() {
            return;
        }
        let low = match self.shared.low_water(self.end(), &[]) {
            Ok(Some(low)) => low,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "spool retention cannot read the consumers' cursors");
                return;
            }
        };
        let left = std::cell::Cell::new(over);
        let take = |_: &Path, size: u64| {
            let more = left.get() > 0;
            left.set(left.get().saturating_sub(size));
            more
        };
        if let Err(e) = self.shared.drop_segments(low, Some("space"), take) {
            tracing::error!(error = %e, "spool retention could not delete a segment");
            return;
        }
        if left.get() > 0 && self.len > 0 && low >= self.end() {
            if let Err(e) = self.roll() {
                tracing::error!(error = %e, "spool retention could not roll the segment");
                return;
            }
            if let Err(e) = self.shared.drop_segments(low, Some("space"), take) {
                tracing::error!(error = %e, "spool retention could not delete a segment");
            }
        }
    }

    /// Age retention's roll: a new segment when the open one holds records, was last
    /// written at or before `cutoff` (an append since makes it young again) and every
    /// registered consumer is past its end. Whether it rolled.
    fn roll_idle(&mut self, cutoff: SystemTime) -> bool {
        if self.stopped.is_some() || self.len == 0 {
            return false;
        }
        let idle = std::fs::metadata(seg_path(&self.shared.dir, self.base))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t <= cutoff);
        let consumed =
            matches!(self.shared.low_water(self.end(), &[]), Ok(Some(low)) if low >= self.end());
        if !idle || !consumed {
            return false;
        }
        match self.roll() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "spool age retention could not roll the segment");
                false
            }
        }
    }

    /// Starts a new segment. A failed directory fsync stops the writer: the new file might
    /// not survive a crash, and records acknowledged in it would go with it.
    fn roll(&mut self) -> Result<(), SpoolError> {
        let next = self.end();
        let file = match create_segment(&self.shared, next) {
            Ok(f) => f,
            Err(e) => {
                if let SpoolError::Io {
                    op: DIR_FSYNC,
                    source,
                } = &e
                {
                    self.stop(DIR_FSYNC, source);
                }
                return Err(e);
            }
        };
        self.file = file;
        self.base = next;
        self.len = 0;
        Ok(())
    }
}
