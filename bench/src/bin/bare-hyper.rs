//! `bare-hyper`: the ceiling. A bare hyper 1 HTTP/1.1 keep-alive server that reads each
//! request body in full and answers 200 with a body shaped like hookgate's
//! (`{"id":"<ULID>","duplicate":false}`), doing nothing else. Driven by `hookgate-load`,
//! it tells what the machine, the loopback and the generator allow before hookgate does
//! any work; `run.sh` reports every scenario as a ratio of it.
//!
//! With `--delay 5s` it holds every answer that long, so it can stand in for a slow HTTP
//! destination (`run.sh` scenario 5 points a hookgate `http` sink at it). On exit (SIGTERM,
//! SIGINT or `--exit-after`) it prints `requests: received N, answered M`, so a script can
//! tell that the destination was really called.
//!
//! Two controls for bench/run.sh (what the machine allows, not what hookgate does):
//! - `--work 2us` spins that long per request after reading the body: plain CPU work of a
//!   known size, to tell a cost of hookgate's code from what any extra per-request CPU costs
//!   on this machine (scenario 1w).
//! - `--kafka BROKERS` appends each body to Kafka through hookgate's own producer
//!   (`KafkaLog`, as `hookgate serve` builds it: idempotent, acks=all) and answers 200 after
//!   the broker's ack: the ceiling of "hyper + librdkafka" with no verify, dedupe or routing
//!   (scenario 3k). The delivery id comes from `X-GitHub-Delivery`; the answer carries the
//!   record's `hookgate-id`, so `hookgate-load --verify-kafka` can read it back.
//!
//! Run: `cargo run --release -p hookgate-bench --bin bare-hyper -- --listen 127.0.0.1:0
//! [--delay 5s]` (prints `listening on ADDR` when ready; exits by itself after
//! `--exit-after`).

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use hookgate_proto::{Event, Ulid};
use hookgate_sinks::log::kafka::{KafkaConfig, KafkaLog};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A bare hyper server: read the body, answer 200.
#[derive(Parser)]
#[command(name = "bare-hyper", about)]
struct Args {
    /// Address to listen on (loopback only is sensible).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads (default: one per core, like hookgate's).
    #[arg(long)]
    threads: Option<usize>,
    /// Exit after this many seconds even if nobody stops it.
    #[arg(long, default_value_t = 600)]
    exit_after: u64,
    /// Hold every answer this long after reading the request body (e.g. `5s`): a slow
    /// destination.
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
    /// Spin this long per request after reading the body (e.g. `2us`): known CPU work.
    #[arg(long, value_parser = humantime::parse_duration)]
    work: Option<Duration>,
    /// Append each body to Kafka (these brokers) and answer after the ack.
    #[arg(long)]
    kafka: Option<String>,
    /// The topic for `--kafka` (created with `--partitions` if missing).
    #[arg(long, default_value = "bare-hyper")]
    topic: String,
    /// Partitions of a topic `--kafka` creates.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
}

/// `--kafka`: hookgate's producer and the topic's name.
struct Kafka {
    log: KafkaLog,
    topic: Arc<str>,
}

impl Kafka {
    async fn new(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<Kafka> {
        let cfg: KafkaConfig = serde_json::from_value(serde_json::json!({
            "brokers": brokers,
            "default_topic": topic,
            "create_topics": true,
            "topic_partitions": partitions,
        }))
        .context("kafka config")?;
        let log = KafkaLog::new(&cfg, 1 << 20).context("producer")?;
        log.ensure_topics(&[topic.to_owned()])
            .await
            .context("topic")?;
        Ok(Kafka {
            log,
            topic: topic.into(),
        })
    }

    /// Appends `body` as hookgate would (a fresh hookgate-id, the delivery id as the key);
    /// the id on success.
    async fn append(&self, delivery_id: String, body: Bytes) -> Option<Ulid> {
        let id = Ulid::new();
        let event = Event {
            id,
            source: "github".into(),
            provider: "github".into(),
            topic: self.topic.clone(),
            event_type: "push".into(),
            key: Bytes::from(delivery_id.clone()),
            delivery_id,
            received_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as i64,
            content_type: Some("application/json".into()),
            kept_headers: Vec::new(),
            body,
        };
        self.log.append(&event).await.ok().map(|_| id)
    }
}

/// Busy for `d` (spinning on the clock, so it is CPU time, not a sleep).
fn spin(d: Duration) {
    let t = std::time::Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    rt.build()?.block_on(run(args))
}

/// Requests seen and answered, printed on exit.
#[derive(Default)]
struct Counts {
    received: AtomicU64,
    answered: AtomicU64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let counts = Arc::new(Counts::default());
    let deadline = tokio::time::sleep(Duration::from_secs(args.exit_after));
    tokio::pin!(deadline);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (delay, work) = (args.delay, args.work);
    let kafka = match &args.kafka {
        Some(b) => Some(Arc::new(Kafka::new(b, &args.topic, args.partitions).await?)),
        None => None,
    };
    let result = loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => break Err(e.into()),
            },
            _ = &mut deadline => break Ok(()),
            _ = term.recv() => break Ok(()),
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let counts = counts.clone();
        let kafka = kafka.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let counts = counts.clone();
            let kafka = kafka.clone();
            async move {
                let n = counts.received.fetch_add(1, Ordering::Relaxed) + 1;
                let delivery = req
                    .headers()
                    .get("x-github-delivery")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                // Read the whole body, as hookgate must before verifying.
                let body = req.into_body().collect().await.map(|c| c.to_bytes());
                if let Some(d) = work {
                    spin(d);
                }
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                let mut id = Ulid(u128::from(n));
                if let Some(k) = &kafka {
                    let stored = match body {
                        Ok(b) => {
                            k.append(delivery.unwrap_or_else(|| format!("bare-{n}")), b)
                                .await
                        }
                        Err(_) => None,
                    };
                    match stored {
                        Some(at) => id = at,
                        None => {
                            let mut r = Response::new(Full::new(Bytes::from_static(
                                b"{\"error\":\"append_failed\"}",
                            )));
                            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                            return Ok::<_, Infallible>(r);
                        }
                    }
                }
                counts.answered.fetch_add(1, Ordering::Relaxed);
                let mut r = Response::new(Full::new(Bytes::from(format!(
                    "{{\"id\":\"{id}\",\"duplicate\":false}}"
                ))));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(r)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    };
    println!(
        "requests: received {}, answered {}",
        counts.received.load(Ordering::Relaxed),
        counts.answered.load(Ordering::Relaxed)
    );
    std::io::stdout().flush()?;
    result
}
