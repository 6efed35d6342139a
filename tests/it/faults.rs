//! Network faults between hookgate and the broker, injected by the harness's TCP proxy
//! ([`crate::harness::faultproxy`]): added latency, a partition, connection resets. hookgate runs
//! with `ack = "kafka"` and a spool, so every request should get a 2xx (acknowledged by the
//! broker, or spilled while the broker is slow), and every acknowledged event must reach
//! Kafka. No process crashes here: a duplicate is excused only where a delivery failed with
//! its produce request possibly at the broker (a partition that swallows the answer), and
//! never more than hookgate counted as `hookgate_kafka_maybe_written_total`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{client, client_with_timeout, reconcile_within, Broker, Duplicates, Fault};
use crate::harness::{metric, spill_config, topic, Hookgate, Reconciled};
use crate::spool::{collect, start_load_with, Load};

/// Clients sending at once.
const CLIENTS: usize = 4;
/// A request unanswered this long was parked, not answered (delivery_timeout is 4 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

fn config(broker: &Broker, topic: &str) -> String {
    spill_config(
        broker,
        topic,
        "spill_after = \"1s\"\ndelivery_timeout = \"4s\"",
    )
}

/// Starts `CLIENTS` clients sending unique events until the returned flag is set.
fn load(hg: &Hookgate, prefix: &str) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<Load>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = start_load_with(
        hg,
        client_with_timeout(CLIENT_TIMEOUT),
        CLIENTS,
        100_000,
        prefix,
        stop.clone(),
    );
    (stop, tasks)
}

/// Waits (at most `within`) until `/readyz` says `ok`: the spool is drained. Returns the
/// last status and `hookgate spool stats`, for the report.
async fn drained(hg: &Hookgate, within: Duration) -> (bool, String) {
    let c = client();
    let end = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < end {
        last = match c.get(hg.url("/readyz")).send().await {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .map(|v| v["status"].as_str().unwrap_or("(no status)").to_owned())
                .unwrap_or_else(|e| format!("(unreadable: {e})")),
            Err(e) => format!("(no answer: {e})"),
        };
        if last == "ok" {
            return (true, last);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stats = String::from_utf8_lossy(&hg.cli(&["spool", "stats"]).stdout).into_owned();
    (
        false,
        format!("readyz {last}, spool stats {}", stats.trim()),
    )
}

/// The answers every test requires: something acknowledged, every request answered, no 5xx
/// (the spool takes what the broker cannot).
fn assert_answers(load: &Load, hg: &Hookgate) {
    let five_xx: usize = load
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    assert!(
        !load.acked.is_empty(),
        "nothing acknowledged: {:?}",
        load.statuses
    );
    assert_eq!(
        load.unanswered(),
        0,
        "requests unanswered within {CLIENT_TIMEOUT:?}: {:?}",
        load.statuses
    );
    assert_eq!(
        five_xx,
        0,
        "5xx with a spool configured: {:?}\n{}",
        load.statuses,
        hg.log()
    );
}

/// Drains, then reconciles; a spool that did not drain is reported with what is missing.
/// With [`Duplicates::AllowedAfterFailedDelivery`], copies are allowed only up to the failed
/// deliveries hookgate counted as possibly written (a produce request that reached the broker just before the
/// fault, whose answer never came back).
async fn settle_and_reconcile(
    hg: &Hookgate,
    broker: &Broker,
    t: &str,
    load: &Load,
    dups: Duplicates,
) -> Reconciled {
    let (ok, status) = drained(hg, Duration::from_secs(30)).await;
    eprintln!("{t}: drained {ok} ({status})");
    let r = reconcile_within(broker, t, &load.acked, dups, Duration::from_secs(20));
    assert!(
        ok,
        "the spool did not drain within 30 s: {status}\n{}",
        hg.log()
    );
    let failed = metric(hg, "hookgate_kafka_maybe_written_total").await;
    eprintln!("{t}: {failed} failed deliveries that may have been written");
    assert!(
        r.duplicates as f64 <= failed,
        "{} duplicate records but {failed} failed deliveries that may have been written",
        r.duplicates
    );
    r
}

fn p99(load: &Load) -> Duration {
    let mut l = load.latencies.clone();
    l.sort_unstable();
    let i = (l.len() * 99).div_ceil(100).saturating_sub(1);
    l.get(i).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_latency_of_200ms_loses_nothing() {
    let broker = Broker::start_behind_proxy();
    let t = topic("latency");
    let hg = Hookgate::start(&config(&broker, &t));
    broker
        .proxy()
        .set(Fault::Latency(Duration::from_millis(200)));
    let (stop, tasks) = load(&hg, "lat");
    tokio::time::sleep(Duration::from_secs(15)).await;
    stop.store(true, Ordering::Relaxed);
    let load = collect(tasks).await;
    broker.proxy().heal();
    eprintln!(
        "200 ms each way: {:?}, {} acked, 2xx p99 {:?}, {} proxied connections",
        load.statuses,
        load.acked.len(),
        p99(&load),
        broker.proxy().accepted()
    );
    assert_answers(&load, &hg);
    settle_and_reconcile(&hg, &broker, &t, &load, Duplicates::Forbidden).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30s_partition_spills_then_every_acked_event_reaches_kafka() {
    let broker = Broker::start_behind_proxy();
    let t = topic("partition");
    let hg = Hookgate::start(&config(&broker, &t));
    let (stop, tasks) = load(&hg, "part");
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.proxy().set(Fault::Blackhole);
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let healed_at = Instant::now();
    broker.proxy().heal();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let load = collect(tasks).await;
    let during = load.acked_within(cut_at, healed_at);
    eprintln!(
        "30 s partition: {:?}, {} acked, {during} sent and acked during the partition",
        load.statuses,
        load.acked.len()
    );
    assert_answers(&load, &hg);
    assert!(
        during > 0,
        "nothing acknowledged (spilled) during the partition"
    );
    settle_and_reconcile(
        &hg,
        &broker,
        &t,
        &load,
        Duplicates::AllowedAfterFailedDelivery,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_mid_produce_lose_nothing_and_duplicate_nothing() {
    let broker = Broker::start_behind_proxy();
    let t = topic("resets");
    let hg = Hookgate::start(&config(&broker, &t));
    let (stop, tasks) = load(&hg, "rst");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A reset every 700 ms for ~14 s, under load: produce requests are in flight at most
    // of them.
    for _ in 0..20 {
        broker.proxy().reset_all();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let load = collect(tasks).await;
    eprintln!(
        "resets: {:?}, {} acked, {} proxied connections",
        load.statuses,
        load.acked.len(),
        broker.proxy().accepted()
    );
    assert_answers(&load, &hg);
    settle_and_reconcile(&hg, &broker, &t, &load, Duplicates::Forbidden).await;
}

/// The proxy itself, against a loopback echo server: it forwards, holds bytes while
/// stalled and delivers them after, resets open connections on demand, and refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_proxy_forwards_stalls_resets_and_refuses() {
    use crate::harness::FaultProxy;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let upstream = echo.local_addr().expect("echo address");
    let echo_task = tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let proxy = FaultProxy::start(upstream);
    const BOUND: Duration = Duration::from_secs(5);
    async fn read4(c: &mut TcpStream) -> std::io::Result<[u8; 4]> {
        let mut buf = [0u8; 4];
        tokio::time::timeout(BOUND, c.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("nothing within 5 s"))??;
        Ok(buf)
    }

    let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
    c.write_all(b"ping").await.expect("write");
    assert_eq!(&read4(&mut c).await.expect("echo"), b"ping");

    // Latency keeps the bytes and their order (the time it adds is printed, not asserted).
    proxy.set(Fault::Latency(Duration::from_millis(150)));
    let t0 = Instant::now();
    c.write_all(b"lat1").await.expect("write");
    c.write_all(b"lat2").await.expect("write");
    assert_eq!(&read4(&mut c).await.expect("echo under latency"), b"lat1");
    assert_eq!(&read4(&mut c).await.expect("echo under latency"), b"lat2");
    eprintln!("round trip with 150 ms each way: {:?}", t0.elapsed());
    proxy.heal();

    proxy.set(Fault::Stall);
    c.write_all(b"held").await.expect("write while stalled");
    let mut one = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), c.read(&mut one)).await;
    assert!(early.is_err(), "bytes went through a stall: {early:?}");
    proxy.heal();
    assert_eq!(
        &read4(&mut c).await.expect("held bytes after the stall"),
        b"held"
    );

    proxy.reset_all();
    let err = read4(&mut c)
        .await
        .expect_err("a reset connection still echoed");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");

    proxy.set(Fault::Refuse);
    // The reset can beat the end of the handshake on loopback: either way it is a reset.
    let err = match TcpStream::connect(proxy.addr()).await {
        Ok(mut d) => {
            let _ = d.write_all(b"nope").await;
            read4(&mut d)
                .await
                .expect_err("a refused connection echoed")
        }
        Err(e) => e,
    };
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");

    proxy.heal();
    let mut e = TcpStream::connect(proxy.addr()).await.expect("connect");
    e.write_all(b"back").await.expect("write");
    assert_eq!(&read4(&mut e).await.expect("echo after healing"), b"back");
    echo_task.abort();
}
