//! What the feeds share: [`FeedError`], the default consumer group, and the loop that
//! dispatches one event until it is done (delivered, skipped or dead-lettered), so the
//! feed never moves its log position past an event that is not.

use std::time::Duration;

use hookgate_proto::Event;
use tokio::sync::watch;

use crate::dispatch::dispatcher::{DeliveryOutcome, DispatchReport, Dispatcher};
use crate::log::spool::SpoolError;

/// Default Kafka consumer group of the dispatcher feed.
pub const DISPATCH_GROUP: &str = "hookgate-dispatch";

/// Why the feed or a DLQ operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// A Kafka client error (config, broker, commit).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A Kafka client could not be created from `[kafka]` (the text is redacted: no
    /// sensitive option's value).
    #[error("kafka: {0}")]
    Client(String),
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
