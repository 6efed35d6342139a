//! The forwarder: drains the spool into Kafka in order, for `ack = "spool"` and for events
//! spilled while the broker was slow or down.

use std::sync::Arc;
use std::time::Duration;

use hookgate_proto::Event;

use super::kafka::{KafkaLog, KafkaSinkError};
use super::spool::Spool;
use super::FORWARDER;

/// Drains the spool into Kafka in order, committing the forwarder cursor only after the
/// broker acknowledged every record up to it. Runs until `stop` fires.
pub async fn run(
    kafka: KafkaLog,
    spool: Spool,
    consumers: Arc<Vec<String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut wake = spool.subscribe();
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let from = match spool.cursor(FORWARDER) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "forwarder cannot read its cursor");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let (batch, next) = match spool.read(from, 512) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "forwarder cannot read the spool");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            if next > from {
                let refs: Vec<&str> = consumers.iter().map(String::as_str).collect();
                let _ = spool.commit(FORWARDER, next, &refs);
                continue;
            }
            super::spool::wait_for_more(&mut wake, &mut stop).await;
            continue;
        }
        // Sent together, acknowledged per partition in order (idempotent producer).
        let results =
            futures_util::future::join_all(batch.iter().map(|(_, ev)| kafka.append(ev))).await;
        let mut done_to = from;
        let mut failed = false;
        for ((off, ev), r) in batch.iter().zip(results) {
            match r {
                Ok(()) => done_to = next_offset(&batch, *off, next),
                Err(KafkaSinkError::Unavailable(e)) => {
                    tracing::warn!(error = %e, "forwarder: kafka unavailable; will retry");
                    failed = true;
                    break;
                }
                Err(e) => {
                    // A final error cannot be retried; keep the record for an operator.
                    tracing::error!(error = %e, id = %ev.id, "forwarder: kafka refused a spooled record for good; left in the spool");
                    failed = true;
                    break;
                }
            }
        }
        if done_to > from {
            metrics::counter!("hookgate_spool_forwarded_total")
                .increment(batch.iter().filter(|(o, _)| *o < done_to).count() as u64);
            let refs: Vec<&str> = consumers.iter().map(String::as_str).collect();
            if let Err(e) = spool.commit(FORWARDER, done_to, &refs) {
                tracing::error!(error = %e, "forwarder cannot save its cursor");
            }
        }
        if failed {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(100);
        }
    }
}

/// The offset just past the record at `off`: the next record's offset, or `end`.
fn next_offset(batch: &[(u64, Event)], off: u64, end: u64) -> u64 {
    batch
        .iter()
        .map(|(o, _)| *o)
        .find(|o| *o > off)
        .unwrap_or(end)
}
