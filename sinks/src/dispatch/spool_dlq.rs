//! [`SpoolDeadLetter`]: dead letters kept in a spool of their own (default
//! `<spool path>/dlq`), for installations without Kafka.
//!
//! An entry is the event itself with the `hookgate-dlq-sink`, `-error` and `-at` headers
//! appended to its kept headers. The replay position is the DLQ spool's `replay` cursor;
//! segments the replay has passed are deleted. An entry replayed out of order (under a sink
//! filter, behind another sink's pending entry) gets a marker record appended instead.

use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use hookgate_proto::{Event, Ulid};

use crate::dispatch::dead_letter::{DeadLetter, DlqError};
use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::dlq::{
    classify, count_dlq_error, count_dlq_write, dlq_header, now_rfc3339, pending, pending_selected,
    replay_records, DlqEntry, DlqRecord, OnStep, Progress, ReplayReport, Selection, REPLAY_CURSOR,
};
use crate::dispatch::feed::FeedError;
use crate::log::spool::{Spool, SpoolConfig};

/// Records read per spool read while scanning the DLQ.
const SCAN_BATCH: usize = 1024;

/// A dead-letter store in a local spool. Cheap to clone.
#[derive(Clone)]
pub struct SpoolDeadLetter {
    spool: Spool,
}

impl SpoolDeadLetter {
    /// Opens (or creates) the DLQ spool described by `cfg` (its `path` is the DLQ's own
    /// directory).
    pub fn open(cfg: &SpoolConfig) -> Result<Self, FeedError> {
        Ok(SpoolDeadLetter {
            spool: Spool::open(cfg)?,
        })
    }

    /// Opens the DLQ spool in `dlq/` under the main spool's directory, with its size limits.
    pub fn open_beside(main: &SpoolConfig) -> Result<Self, FeedError> {
        let mut cfg = main.clone();
        cfg.path = dlq_dir(&main.path);
        Self::open(&cfg)
    }

    /// Opens the DLQ spool beside `main` for reading only: no lock, so it works while
    /// `hookgate serve` has it open (listing); replaying needs the writable store. A DLQ
    /// that was never created reads as empty.
    pub fn open_read_only_beside(main: &SpoolConfig) -> Result<Self, FeedError> {
        let mut cfg = main.clone();
        cfg.path = dlq_dir(&main.path);
        if !cfg.path.exists() {
            std::fs::create_dir_all(&cfg.path).map_err(|e| {
                FeedError::Spool(crate::log::spool::SpoolError::Io {
                    op: "create dead-letter spool directory",
                    source: e,
                })
            })?;
        }
        Ok(SpoolDeadLetter {
            spool: Spool::open_read_only(&cfg)?,
        })
    }

    /// The underlying spool (stats, tests).
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Pending entries in order, only those for `sink_filter` when given.
    pub async fn list(&self, sink_filter: Option<&str>) -> Result<Vec<DlqEntry>, FeedError> {
        Ok(pending(&self.scan()?, sink_filter))
    }

    /// Replays pending entries (see [`dlq_replay`](crate::dispatch::dlq_replay)).
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
        Ok(pending_selected(&self.scan()?, sel))
    }

    /// Replays the pending entries `sel` takes, calling `on_step` after each one.
    pub async fn replay_selected(
        &self,
        dispatcher: &Dispatcher,
        sel: &Selection<'_>,
        on_step: OnStep<'_>,
    ) -> Result<ReplayReport, FeedError> {
        let records = self.scan()?;
        replay_records(&records, dispatcher, sel, self, on_step).await
    }

    /// Every record from the replay cursor to the durable end.
    fn scan(&self) -> Result<Vec<DlqRecord>, FeedError> {
        let mut at = self.spool.cursor(REPLAY_CURSOR)?;
        // A snapshot: entries dead-lettered while a replay runs wait for the next one.
        let end = self.spool.end_offset();
        let mut out = Vec::new();
        loop {
            let (batch, next) = self.spool.read(at, SCAN_BATCH)?;
            let mut iter = batch.into_iter().peekable();
            while let Some((off, ev)) = iter.next() {
                let after = iter.peek().map(|(o, _)| *o).unwrap_or(next);
                out.push(DlqRecord {
                    partition: 0,
                    position: off,
                    next: after,
                    kind: classify(ev, 0, off),
                });
            }
            if next >= end || next <= at {
                return Ok(out);
            }
            at = next;
        }
    }
}

/// `<main spool dir>/dlq`.
pub fn dlq_dir(main: &Path) -> std::path::PathBuf {
    main.join("dlq")
}

#[async_trait]
impl DeadLetter for SpoolDeadLetter {
    async fn dead_letter(&self, ev: &Event, sink: &str, error: &str) -> Result<(), DlqError> {
        let mut rec = ev.clone();
        rec.kept_headers.extend([
            (dlq_header::SINK.to_owned(), Bytes::from(sink.to_owned())),
            (dlq_header::ERROR.to_owned(), Bytes::from(error.to_owned())),
            (dlq_header::AT.to_owned(), Bytes::from(now_rfc3339())),
        ]);
        // The spool resolves only after the fdatasync that covers the record.
        match self.spool.append(&rec).await {
            Ok(_) => {
                count_dlq_write(sink);
                Ok(())
            }
            Err(e) => {
                count_dlq_error(sink);
                Err(DlqError(format!("dlq spool: {e}")))
            }
        }
    }
}

#[async_trait]
impl Progress for SpoolDeadLetter {
    async fn commit(&self, _partition: i32, next: u64) -> Result<(), FeedError> {
        // The replay cursor is the DLQ spool's only consumer: segments behind it can go.
        Ok(self.spool.commit(REPLAY_CURSOR, next, &[REPLAY_CURSOR])?)
    }

    async fn mark(&self, _partition: i32, position: u64) -> Result<(), FeedError> {
        let marker = Event {
            id: Ulid::nil(),
            source: "".into(),
            provider: "".into(),
            topic: "".into(),
            event_type: String::new(),
            delivery_id: String::new(),
            key: Bytes::new(),
            received_at_ms: hookgate_proto::now_ms(),
            content_type: None,
            kept_headers: vec![(
                dlq_header::REPLAYED.to_owned(),
                Bytes::from(position.to_string()),
            )],
            body: Bytes::new(),
        };
        self.spool.append(&marker).await?;
        Ok(())
    }
}
