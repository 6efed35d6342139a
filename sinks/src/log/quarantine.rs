//! The quarantine: events Kafka refuses for good (too large, topic deleted, not
//! authorized), kept on disk beside the spool so they never block the events behind them.
//!
//! One file per event, `<dir>/<hookgate-id>.q`: a JSON line with what an operator needs to
//! know (the [`QuarantineMeta`]), then the event in the spool's frame encoding. A file is
//! written to a temporary name, fsync'd, renamed and the directory fsync'd, so an entry is
//! either whole or absent. Files make `hookgate quarantine replay` (another process) safe
//! beside a running server: it deletes exactly the entries it delivered. Quarantined events
//! are rare; listing reads the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use hookgate_proto::Event;
use serde::{Deserialize, Serialize};

use super::error::RefuseReason;

/// What `hookgate quarantine list` prints for one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineMeta {
    /// The event's `hookgate-id`.
    pub id: String,
    /// The source it came in on.
    pub source: String,
    /// The provider's delivery id.
    pub delivery_id: String,
    /// The provider's event type.
    pub event: String,
    /// The topic it was bound for.
    pub topic: String,
    /// Why Kafka refused it (`too_large`, `unknown_topic`, `not_authorized`, `invalid`).
    pub reason: String,
    /// librdkafka's error.
    pub error: String,
    /// When it was quarantined: RFC 3339, UTC, ms.
    pub at: String,
    /// CRC-32 of the encoded event that follows the JSON line.
    pub crc: u32,
}

/// One quarantined event.
#[derive(Debug, Clone)]
pub struct QuarantineEntry {
    /// What is known about it.
    pub meta: QuarantineMeta,
    /// The event, as accepted.
    pub event: Event,
}

/// What [`Quarantine::list`] found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Entries that read back whole.
    pub entries: Vec<QuarantineEntry>,
    /// Files that did not, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// The quarantine directory. Cheap to clone.
#[derive(Clone)]
pub struct Quarantine {
    dir: PathBuf,
    /// Entries on disk as last counted (this process's writes included), for `/readyz`.
    count: Arc<AtomicU64>,
}

impl Quarantine {
    /// Opens (or creates) the quarantine at `dir` and counts its entries.
    pub fn open(dir: &Path) -> io::Result<Quarantine> {
        fs::create_dir_all(dir)?;
        let q = Quarantine {
            dir: dir.to_path_buf(),
            count: Arc::new(AtomicU64::new(0)),
        };
        q.recount()?;
        Ok(q)
    }

    /// `<spool dir>/quarantine`.
    pub fn dir_beside(spool_dir: &Path) -> PathBuf {
        spool_dir.join("quarantine")
    }

    /// Entries on disk, as last counted.
    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether no entry was on disk at the last count.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts the entries on disk again (another process may have replayed some).
    pub fn recount(&self) -> io::Result<u64> {
        let n = self.files()?.len() as u64;
        self.count.store(n, Ordering::Relaxed);
        metrics::gauge!("hookgate_quarantine_records").set(n as f64);
        Ok(n)
    }

    fn files(&self) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "q") {
                out.push(p);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Writes `ev` durably with why Kafka refused it. Blocking (file I/O and fsyncs): call
    /// it from a blocking context ([`Quarantine::put`] does).
    pub fn put_blocking(&self, ev: &Event, reason: RefuseReason, error: &str) -> io::Result<()> {
        let mut frame = Vec::with_capacity(ev.body.len() + 256);
        ev.encode(&mut frame);
        let meta = QuarantineMeta {
            id: ev.id.to_string(),
            source: ev.source.to_string(),
            delivery_id: ev.delivery_id.clone(),
            event: ev.event_type.clone(),
            topic: ev.topic.to_string(),
            reason: reason.as_str().to_owned(),
            error: error.to_owned(),
            at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            crc: crc32fast::hash(&frame),
        };
        let mut line = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        line.push(b'\n');
        let name = format!("{}.q", meta.id);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&line)?;
            f.write_all(&frame)?;
            f.sync_all()?;
        }
        let path = self.dir.join(&name);
        let existed = path.exists();
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        if !existed {
            let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::gauge!("hookgate_quarantine_records").set(n as f64);
        }
        metrics::counter!(
            "hookgate_quarantined_total",
            "source" => ev.source.to_string(),
            "reason" => reason.as_str()
        )
        .increment(1);
        tracing::error!(
            id = %ev.id,
            source = %ev.source,
            topic = %ev.topic,
            reason = reason.as_str(),
            error,
            "kafka refused an event for good; it is in the quarantine (hookgate quarantine list / replay)"
        );
        Ok(())
    }

    /// [`Quarantine::put_blocking`] on tokio's blocking pool; resolves once it is on disk.
    pub async fn put(&self, ev: &Event, reason: RefuseReason, error: String) -> io::Result<()> {
        let (q, ev) = (self.clone(), ev.clone());
        tokio::task::spawn_blocking(move || q.put_blocking(&ev, reason, &error))
            .await
            .map_err(io::Error::other)?
    }

    /// Every entry, oldest `hookgate-id` first. An unreadable file is listed in
    /// `unreadable`, not fatal for the others.
    pub fn list(&self) -> io::Result<Listing> {
        let mut listing = Listing::default();
        for p in self.files()? {
            match read_entry(&p) {
                Ok(e) => listing.entries.push(e),
                Err(e) => listing.unreadable.push((p, e)),
            }
        }
        Ok(listing)
    }

    /// The entry of `id` (a `hookgate-id`), if the quarantine holds it whole.
    pub fn get(&self, id: &hookgate_proto::Ulid) -> Option<QuarantineEntry> {
        read_entry(&self.dir.join(format!("{id}.q"))).ok()
    }

    /// Deletes the entry of `id` (after it was delivered).
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(format!("{id}.q"))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        File::open(&self.dir)?.sync_all()?;
        let _ = self
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        Ok(())
    }
}

fn read_entry(path: &Path) -> Result<QuarantineEntry, String> {
    let data = fs::read(path).map_err(|e| format!("read: {e}"))?;
    let nl = data
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no metadata line")?;
    let (line, rest) = data.split_at(nl);
    let frame = rest.get(1..).unwrap_or_default();
    let meta: QuarantineMeta =
        serde_json::from_slice(line).map_err(|e| format!("metadata: {e}"))?;
    if crc32fast::hash(frame) != meta.crc {
        return Err("checksum mismatch".into());
    }
    let event = Event::decode(&Bytes::copy_from_slice(frame)).map_err(|e| format!("event: {e}"))?;
    Ok(QuarantineEntry { meta, event })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ev(n: u32) -> Event {
        crate::log::test_support::event("gone", n)
    }

    #[test]
    fn entries_round_trip_survive_reopen_and_are_removed_once() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::open(dir.path()).unwrap();
        let (a, b) = (ev(1), ev(2));
        q.put_blocking(&a, RefuseReason::UnknownTopic, "Broker: Unknown topic")
            .unwrap();
        q.put_blocking(&b, RefuseReason::TooLarge, "too large")
            .unwrap();
        assert_eq!(q.len(), 2);
        let q = Quarantine::open(dir.path()).unwrap();
        assert_eq!(q.len(), 2);
        let listing = q.list().unwrap();
        assert!(listing.unreadable.is_empty());
        let list = listing.entries;
        let got: Vec<&Event> = list.iter().map(|e| &e.event).collect();
        assert!(got.contains(&&a) && got.contains(&&b));
        let ma = list.iter().find(|e| e.event == a).unwrap();
        assert_eq!(ma.meta.reason, "unknown_topic");
        assert_eq!(ma.meta.delivery_id, "d1");
        assert_eq!(ma.meta.topic, "gone");
        q.remove(&a.id.to_string()).unwrap();
        q.remove(&a.id.to_string()).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q.recount().unwrap(), 1);
    }

    #[test]
    fn a_damaged_file_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::open(dir.path()).unwrap();
        let a = ev(1);
        q.put_blocking(&a, RefuseReason::Invalid, "bad").unwrap();
        let p = dir.path().join(format!("{}.q", a.id));
        let mut data = fs::read(&p).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(&p, data).unwrap();
        q.put_blocking(&ev(2), RefuseReason::Invalid, "bad")
            .unwrap();
        let listing = q.list().unwrap();
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.unreadable.len(), 1);
        assert!(listing.unreadable[0].1.contains("checksum"));
    }
}
