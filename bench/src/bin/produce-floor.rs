//! The floor of hookgate's Kafka path: hookgate's own producer (`KafkaLog`, built as
//! `hookgate serve` builds it: idempotent, acks=all, lz4, `max_in_flight`, `linger`) fed by
//! `--conns` tasks in a closed loop, each appending a ~1.1 KB event and waiting for its
//! delivery report, with no HTTP, no verify and no dedupe in front. What it reports is what
//! librdkafka's threads (and the delivery path to the waiting task) cost per event with an
//! empty request handler: the part of hookgate's CPU per event that no change to the
//! HTTP side can remove.
//!
//! Per thread group (tokio workers, librdkafka's broker threads, its main thread, the
//! delivery-report poll thread): CPU µs per event (utime + stime from
//! `/proc/self/task/*/stat`, over the measured window only) and voluntary / involuntary
//! context switches per event. `bench/produce-floor.sh` starts a fresh Tansu for it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use hookgate_proto::{Event, Ulid};
use hookgate_sinks::log::kafka::{KafkaConfig, KafkaLog};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "hookgate's Kafka producer alone, closed loop: CPU per event of each thread")]
struct Args {
    /// Bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Topic (created with `--partitions` if missing).
    #[arg(long, default_value = "produce-floor")]
    topic: String,
    /// Appends in flight (like wrk's connections).
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// Measured seconds (after `--warmup`).
    #[arg(long, default_value_t = 8)]
    secs: u64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Body bytes per event.
    #[arg(long, default_value_t = 1100)]
    body_bytes: usize,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// `[kafka] max_in_flight`.
    #[arg(long, default_value_t = 1)]
    max_in_flight: u32,
    /// `[kafka] linger`, e.g. `0ms`, `1ms`.
    #[arg(long, default_value = "0ms")]
    linger: String,
    /// tokio worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// CPU ticks and context switches of each of this process's threads, by thread group.
fn threads() -> BTreeMap<String, (u64, u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let p = task.path();
        let Ok(stat) = std::fs::read_to_string(p.join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let group = if name.starts_with("rdk:broker") {
            "librdkafka broker threads"
        } else if name.starts_with("rdk:main") {
            "librdkafka main thread"
        } else if name.starts_with("producer pollin") {
            "delivery-report poll thread"
        } else if name.starts_with("worker") {
            "tokio workers"
        } else {
            "other"
        };
        let ticks = hookgate_bench::cpu::parse_stat_ticks(&stat).unwrap_or(0);
        let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
        let field = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let e = out.entry(group.to_owned()).or_default();
        e.0 += ticks;
        e.1 += field("voluntary_ctxt_switches:");
        e.2 += field("nonvoluntary_ctxt_switches:");
    }
    out
}

fn event(topic: &Arc<str>, body: &Bytes, n: u64) -> Event {
    let delivery_id = format!("floor-{n}");
    Event {
        id: Ulid::new(),
        source: "github".into(),
        provider: "github".into(),
        topic: topic.clone(),
        event_type: "push".into(),
        key: Bytes::from(delivery_id.clone()),
        delivery_id,
        received_at_ms: 0,
        content_type: Some("application/json".into()),
        kept_headers: Vec::new(),
        body: body.clone(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .thread_name("worker")
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg: KafkaConfig = serde_json::from_value(serde_json::json!({
        "brokers": args.brokers,
        "default_topic": args.topic,
        "create_topics": true,
        "topic_partitions": args.partitions,
        "max_in_flight": args.max_in_flight,
        "linger": args.linger,
    }))
    .context("kafka config")?;
    let log = KafkaLog::new(&cfg, 1 << 20).context("producer")?;
    log.ensure_topics(std::slice::from_ref(&args.topic))
        .await
        .context("topic")?;
    let topic: Arc<str> = args.topic.as_str().into();
    let body = Bytes::from(vec![b'x'; args.body_bytes]);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.conns.max(1) {
        let (log, topic, body) = (log.clone(), topic.clone(), body.clone());
        let (done, failed, stop, next) = (done.clone(), failed.clone(), stop.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let ev = event(&topic, &body, next.fetch_add(1, Ordering::Relaxed));
                match log.append(&ev).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    let (n0, t0, c0) = (done.load(Ordering::Relaxed), Instant::now(), threads());
    // bench/produce-floor.sh starts reading the broker's CPU at this line.
    println!("measuring");
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    let (n1, wall, c1) = (done.load(Ordering::Relaxed), t0.elapsed(), threads());
    println!("measured");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let n = (n1 - n0).max(1) as f64;
    let tick = hookgate_bench::cpu::clock_ticks_per_second() as f64;
    println!(
        "events {} in {:.1} s = {:.0}/s, failed {}, conns {}, partitions {}, max_in_flight {}, linger {}",
        n1 - n0,
        wall.as_secs_f64(),
        n / wall.as_secs_f64(),
        failed.load(Ordering::Relaxed),
        args.conns,
        args.partitions,
        args.max_in_flight,
        args.linger
    );
    let mut total = 0.0;
    for (group, (t, v, iv)) in &c1 {
        let (t0, v0, iv0) = c0.get(group).copied().unwrap_or_default();
        let us = t.saturating_sub(t0) as f64 / tick * 1e6 / n;
        total += us;
        println!(
            "{group:30} {us:6.2} us/event  vcsw {:.3}/event  ivcsw {:.3}/event",
            v.saturating_sub(v0) as f64 / n,
            iv.saturating_sub(iv0) as f64 / n
        );
    }
    println!("{:30} {total:6.2} us/event", "all threads");
    Ok(())
}
