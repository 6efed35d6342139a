//! [`run_spool_feed`]: dispatches the spool's events in order, from the `dispatcher` cursor.
//!
//! Delivery guarantee: at-least-once. The cursor moves past an event only after its
//! dispatch is done; a crash re-dispatches at most the events since the last commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::feed::{dispatch_until_done, stopped};
use crate::log::spool::Spool;

/// Name of the spool cursor of the dispatcher feed.
pub const DISPATCH_CURSOR: &str = "dispatcher";

/// Events read from the spool at a time.
const BATCH: usize = 64;

/// Dispatches every spooled event in order, committing the `dispatcher` cursor after each
/// event that reached a sink (and at the end of each batch), until `stop` fires.
/// `consumers` lists every spool consumer (this one included), for segment deletion.
pub async fn run_spool_feed(
    spool: Spool,
    dispatcher: Dispatcher,
    consumers: Arc<Vec<String>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut wake = spool.subscribe();
    let refs: Vec<&str> = consumers.iter().map(String::as_str).collect();
    let commit = |to: u64| {
        if let Err(e) = spool.commit(DISPATCH_CURSOR, to, &refs) {
            // The next commit covers it; until then a restart re-dispatches a few events.
            tracing::error!(error = %e, "dispatcher cannot save its spool cursor");
        }
    };
    let mut from = loop {
        match spool.cursor(DISPATCH_CURSOR) {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(error = %e, "dispatcher cannot read its spool cursor");
                if pause(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    };
    loop {
        if stopped(&stop) {
            return;
        }
        metrics::gauge!("hookgate_dispatch_lag", "log" => "spool")
            .set(spool.end_offset().saturating_sub(from) as f64);
        let (batch, next) = match spool.read(from, BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "dispatcher cannot read the spool");
                if pause(&mut stop, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        if batch.is_empty() {
            if next > from {
                // Only undecodable records were passed over.
                from = next;
                commit(from);
                continue;
            }
            // Caught up: wait for the writer's next fsync (or stop).
            crate::log::spool::wait_for_more(&mut wake, &mut stop).await;
            continue;
        }
        // Events no route matched cost nothing to redo, so they share one commit (an
        // fsync) at the end of the batch; an event that reached a sink is committed at once.
        let mut uncommitted = false;
        let mut offsets = batch.iter().map(|(o, _)| *o).skip(1).chain([next]);
        for (_, ev) in &batch {
            let after = offsets.next().unwrap_or(next);
            let Some(report) = dispatch_until_done(&dispatcher, ev, &mut stop, &|| true).await
            else {
                break;
            };
            from = after;
            if report.deliveries.is_empty() {
                uncommitted = true;
            } else {
                commit(from);
                uncommitted = false;
            }
            if stopped(&stop) {
                break;
            }
        }
        if uncommitted {
            commit(from);
        }
    }
}

/// Sleeps `d` or until `stop` fires; true when the feed should stop.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
    stopped(stop)
}
