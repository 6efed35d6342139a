//! The dispatcher and what feeds it: reads accepted events from the durable log, hands
//! each to the [`Dispatcher`], and moves the log position only once the dispatcher reports
//! the event done (delivered, skipped or dead-lettered). Plus the dead-letter stores the
//! dispatcher writes to and the operator's `dlq list` / `dlq replay`.
//!
//! Delivery guarantee: at-least-once. A crash, a rebalance or a not-done dispatch means
//! the event is dispatched again, to every matching sink (chat messages may repeat; the
//! http sink's receivers dedupe by `webhook-id`). Nothing is committed before it is done.
//!
//! Layout:
//! - [`dispatcher`]: [`Dispatcher`] (`new`, `dispatch`, `replay`) and [`check`]: one event
//!   to every matching route's sinks, concurrently; an llm sink's answer goes out through
//!   its `reply_via` sink; what fails for good is dead-lettered.
//! - [`routes`]: the routing table built from `[[sinks]]` and `[[routes]]`: which events
//!   match a route, the built sinks, the compiled templates.
//! - [`retry`]: the retry loop (full-jitter backoff, bounded by attempts and event age)
//!   every delivery attempt and llm completion runs in.
//! - [`dead_letter`]: the [`DeadLetter`] interface the dispatcher writes failures to, and
//!   [`MemoryDeadLetter`] for tests.
//! - [`feed`]: what the feeds share: [`FeedError`] and dispatching until done.
//! - [`kafka_feed`]: [`run_kafka_feed`], a consumer group with one ordered worker per
//!   assigned partition; offsets are stored after the dispatch is done, auto-committed.
//! - [`spool_feed`]: [`run_spool_feed`], the same over the local spool with the
//!   `dispatcher` cursor.
//! - [`dlq`]: what both dead-letter stores share: [`DlqEntry`], [`ReplayReport`], the
//!   header names, the replay walk.
//! - [`kafka_dlq`]: [`KafkaDeadLetter`], dead letters as records on a DLQ topic; replay
//!   progress is the `hookgate-dlq-replay` group's committed offsets.
//! - [`spool_dlq`]: [`SpoolDeadLetter`], dead letters in a separate spool; replay progress
//!   is its `replay` cursor.
//! - here: [`DlqStore`], the configured store, with [`dlq_list`] / [`dlq_replay`].
//!
//! Rate limits are not here: each chat sink paces itself to its API's limits inside
//! `send` (see [`crate::chat::ratelimit`]), so `chat` never needs `dispatch`.

pub mod dead_letter;
pub mod dispatcher;
pub mod dlq;
pub mod feed;
pub mod kafka_dlq;
pub mod kafka_feed;
pub mod retry;
pub mod routes;
pub mod spool_dlq;
pub mod spool_feed;

use async_trait::async_trait;
use hookgate_proto::Event;

pub use dead_letter::{DeadLetter, DeadLettered, DlqError, MemoryDeadLetter};
pub use dispatcher::{Delivery, DeliveryOutcome, DispatchReport, Dispatcher};
pub use dlq::{DlqEntry, OnStep, ReplayReport, Selection};
pub use feed::FeedError;
pub use kafka_dlq::KafkaDeadLetter;
pub use kafka_feed::run_kafka_feed;
pub use routes::check;
pub use spool_dlq::SpoolDeadLetter;
pub use spool_feed::run_spool_feed;

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

/// Pending entries of `store` that `sel` takes (one entry, a selection, a sink's, all).
pub async fn dlq_list_selected(
    store: &DlqStore,
    sel: &Selection<'_>,
) -> Result<Vec<DlqEntry>, FeedError> {
    match store {
        DlqStore::Kafka(k) => k.list_selected(sel).await,
        DlqStore::Spool(s) => s.list_selected(sel).await,
    }
}

/// Like [`dlq_replay`] for the entries `sel` takes, calling `on_step` after each entry
/// (the console's progress).
pub async fn dlq_replay_selected(
    store: &DlqStore,
    dispatcher: &Dispatcher,
    sel: &Selection<'_>,
    on_step: OnStep<'_>,
) -> Result<ReplayReport, FeedError> {
    match store {
        DlqStore::Kafka(k) => k.replay_selected(dispatcher, sel, on_step).await,
        DlqStore::Spool(s) => s.replay_selected(dispatcher, sel, on_step).await,
    }
}
