//! The forwarder: drains the spool into Kafka in order, for `ack = "spool"` and for events
//! spilled while the broker was slow or down.
//!
//! A batch is sent together (acknowledged per partition in order by the idempotent
//! producer). Records that fail retriably are sent again — only those: a record of the
//! batch that was acknowledged is never sent a second time. A record Kafka refuses for good
//! goes to the quarantine (fsync'd) and the forwarder moves past it. The cursor is
//! committed once every record of the batch is acknowledged or quarantined; on shutdown,
//! up to the first record still pending.

use std::sync::Arc;
use std::time::Duration;

use hookgate_proto::Event;

use super::error::{AppendError, RefuseReason};
use super::spool::Spool;
use super::{Spilling, FORWARDER};

/// Records read from the spool per batch.
const BATCH: usize = 512;

/// Drains the spool into Kafka until `stop` fires.
pub async fn run(
    log: Spilling,
    consumers: Arc<Vec<String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let spool = &log.spool;
    let mut wake = spool.subscribe();
    loop {
        if *stop.borrow() {
            return;
        }
        let from = match spool.cursor(FORWARDER) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "forwarder cannot read its cursor");
                pause(Duration::from_secs(1), &mut stop).await;
                continue;
            }
        };
        let (batch, next) = match spool.read(from, BATCH) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "forwarder cannot read the spool");
                pause(Duration::from_secs(1), &mut stop).await;
                continue;
            }
        };
        if batch.is_empty() {
            if next > from {
                commit(spool, next, &consumers);
                continue;
            }
            super::spool::wait_for_more(&mut wake, &mut stop).await;
            continue;
        }
        match send_batch(&log, &batch, &mut stop).await {
            None => commit(spool, next, &consumers),
            Some(first_pending) => {
                // Stopping: keep what is done; the rest is sent again after the restart.
                let to = batch.get(first_pending).map_or(next, |(o, _)| *o);
                if to > from {
                    commit(spool, to, &consumers);
                }
                return;
            }
        }
    }
}

/// Sends every record of `batch` until each is acknowledged or quarantined. Returns the
/// index of the first record not done when `stop` fired first, else `None`.
async fn send_batch(
    log: &Spilling,
    batch: &[(u64, Event)],
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<usize> {
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    let mut backoff = Duration::from_millis(100);
    loop {
        let sends = pending
            .iter()
            .filter_map(|&i| batch.get(i))
            .map(|(_, ev)| send(log, ev));
        let results = futures_util::future::join_all(sends).await;
        let sent = pending.len();
        let mut still = Vec::new();
        for (i, done) in pending.into_iter().zip(results) {
            if !done {
                still.push(i);
            }
        }
        if !still.is_empty() {
            still = quarantine_deleted_topics(log, batch, still).await;
        }
        metrics::counter!("hookgate_spool_forwarded_total").increment((sent - still.len()) as u64);
        if still.is_empty() {
            return None;
        }
        pending = still;
        if pause(backoff, stop).await {
            return pending.first().copied();
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Sends one record; true once it is acknowledged or quarantined.
async fn send(log: &Spilling, ev: &Event) -> bool {
    match log.kafka.append(ev).await {
        Ok(_) => true,
        Err(AppendError::Refused { reason, error }) => {
            quarantine(log, ev, reason, error.to_string()).await
        }
        Err(e) => {
            tracing::warn!(error = %e, id = %ev.id, "forwarder: kafka unavailable; will retry");
            false
        }
    }
}

/// Of the records that failed retriably, quarantines those whose topic the cluster says
/// does not exist (a deleted topic can look retriable: the broker answers "unknown topic or
/// partition" and librdkafka retries until the message times out). Returns the rest.
async fn quarantine_deleted_topics(
    log: &Spilling,
    batch: &[(u64, Event)],
    failed: Vec<usize>,
) -> Vec<usize> {
    let mut topics: Vec<&str> = failed
        .iter()
        .filter_map(|&i| batch.get(i))
        .map(|(_, ev)| &*ev.topic)
        .collect();
    topics.sort_unstable();
    topics.dedup();
    let mut gone = Vec::new();
    for t in topics {
        if log.kafka.topic_exists(t).await == Some(false) {
            gone.push(t);
        }
    }
    let mut still = Vec::new();
    for i in failed {
        let Some((_, ev)) = batch.get(i) else {
            continue;
        };
        let done = gone.contains(&&*ev.topic)
            && quarantine(
                log,
                ev,
                RefuseReason::UnknownTopic,
                format!("topic {} does not exist", ev.topic),
            )
            .await;
        if !done {
            still.push(i);
        }
    }
    still
}

async fn quarantine(log: &Spilling, ev: &Event, reason: RefuseReason, error: String) -> bool {
    match log.quarantine.put(ev, reason, error).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, id = %ev.id, "forwarder cannot write the quarantine; will retry");
            false
        }
    }
}

fn commit(spool: &Spool, to: u64, consumers: &[String]) {
    let refs: Vec<&str> = consumers.iter().map(String::as_str).collect();
    if let Err(e) = spool.commit(FORWARDER, to, &refs) {
        tracing::error!(error = %e, "forwarder cannot save its cursor");
    }
}

/// Sleeps `d`; true when `stop` fired instead.
async fn pause(d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::mocking::MockCluster;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};

    use super::super::kafka::{KafkaConfig, KafkaLog};
    use super::super::quarantine::Quarantine;
    use super::super::spool::{Spool, SpoolConfig};
    use super::super::test_support::event;
    use super::super::{Spilling, FORWARDER};

    /// A mock cluster with `topics` (name, partitions), a spool whose registered consumer
    /// is the forwarder, and a quarantine, in a temporary folder.
    struct Fixture {
        mock: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        log: Spilling,
        _dir: tempfile::TempDir,
    }

    fn fixture(topics: &[(&str, i32)]) -> Fixture {
        let mock = MockCluster::new(1).unwrap();
        for (t, parts) in topics {
            mock.create_topic(t, *parts, 1).unwrap();
        }
        let cfg: KafkaConfig = serde_json::from_value(serde_json::json!({
            "brokers": mock.bootstrap_servers(),
            "delivery_timeout": "1500ms",
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open_with_consumers(
            &SpoolConfig {
                path: dir.path().join("spool"),
                ..SpoolConfig::default()
            },
            &[FORWARDER.to_owned()],
        )
        .unwrap();
        let log = Spilling {
            kafka: KafkaLog::new(&cfg, 1 << 20).unwrap(),
            spool,
            quarantine: Quarantine::open(&dir.path().join("quarantine")).unwrap(),
        };
        Fixture {
            mock,
            log,
            _dir: dir,
        }
    }

    /// Waits (at most 30 s) for the forwarder's cursor to reach the end of the spool.
    async fn drained(spool: &Spool) -> bool {
        let end = Instant::now() + Duration::from_secs(30);
        while spool.cursor(FORWARDER).unwrap() < spool.end_offset() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        spool.cursor(FORWARDER).unwrap() == spool.end_offset()
    }

    /// Records per delivery id in `topic` (read from the start until `want` arrived or 20 s).
    fn count(bootstrap: &str, topic: &str, parts: i32, want: usize) -> HashMap<String, usize> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "forwarder-test")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..parts {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let end = Instant::now() + Duration::from_secs(20);
        let mut quiet = Instant::now();
        while Instant::now() < end {
            match c.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    quiet = Instant::now();
                    let d = m.headers().and_then(|h| {
                        h.iter()
                            .find(|x| x.key == "hookgate-delivery-id")
                            .and_then(|x| x.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    });
                    *seen.entry(d.unwrap_or_default()).or_default() += 1;
                }
                _ if seen.len() >= want && quiet.elapsed() > Duration::from_secs(1) => break,
                _ => {}
            }
        }
        seen
    }

    /// One partition without a leader fails its records of a batch while the others are
    /// acknowledged: only the failed ones are sent again, so once the partition is back every
    /// record is in Kafka exactly once (the old forwarder re-sent everything after the first
    /// failure of a batch).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_failing_in_a_batch_resends_only_its_records() {
        let topic = "fwd-partial";
        let Fixture { mock, log, _dir } = fixture(&[(topic, 3)]);
        let (spool, quarantine) = (log.spool.clone(), log.quarantine.clone());
        for n in 0..60 {
            spool.append(&event(topic, n)).await.unwrap();
        }
        mock.partition_leader(topic, 1, None).unwrap();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(super::run(log, Arc::new(vec![FORWARDER.to_owned()]), stop));
        // Long enough for the leaderless partition's records to time out at least once.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(
            spool.cursor(FORWARDER).unwrap() < spool.end_offset(),
            "the batch was committed while a partition had no leader"
        );
        mock.partition_leader(topic, 1, Some(1)).unwrap();
        assert!(drained(&spool).await, "not drained");
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert!(quarantine.is_empty(), "a retriable failure was quarantined");
        let seen = count(&mock.bootstrap_servers(), topic, 3, 60);
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert_eq!(seen.len(), 60, "missing records: {seen:?}");
        assert!(twice.is_empty(), "records sent twice: {twice:?}");
    }

    /// A topic deleted while hookgate runs: its spooled records are quarantined
    /// (`unknown_topic`) once the cluster says the topic is gone, and the other topic's
    /// records, in the same batches, are delivered once and not held up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_of_a_deleted_topic_are_quarantined_and_the_rest_delivered() {
        use rdkafka::types::RDKafkaRespErr;
        let (gone, kept) = ("fwd-gone", "fwd-kept");
        let Fixture { mock, log, _dir } = fixture(&[(gone, 1), (kept, 1)]);
        let (spool, quarantine) = (log.spool.clone(), log.quarantine.clone());
        for n in 0..40 {
            let topic = if n % 4 == 0 { gone } else { kept };
            spool.append(&event(topic, n)).await.unwrap();
        }
        // "Deleted": the mock broker stops leading it and its metadata says unknown topic.
        mock.partition_leader(gone, 0, None).unwrap();
        mock.topic_error(
            gone,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(super::run(log, Arc::new(vec![FORWARDER.to_owned()]), stop));
        assert!(drained(&spool).await, "blocked");
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        let listing = quarantine.list().unwrap();
        let mut held: Vec<String> = listing
            .entries
            .iter()
            .map(|e| {
                assert_eq!(e.meta.reason, "unknown_topic");
                assert_eq!(e.meta.topic, gone);
                e.meta.delivery_id.clone()
            })
            .collect();
        held.sort();
        let mut want: Vec<String> = (0..40)
            .filter(|n| n % 4 == 0)
            .map(|n| format!("d{n}"))
            .collect();
        want.sort();
        assert_eq!(held, want);
        let seen = count(&mock.bootstrap_servers(), kept, 1, 30);
        assert_eq!(seen.len(), 30, "{seen:?}");
        assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    }
}
