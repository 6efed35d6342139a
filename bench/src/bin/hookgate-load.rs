//! `hookgate-load`: the load generator. It measures end-to-end throughput and latency of
//! hookgate (or the `bare-hyper` ceiling) over HTTP/1.1 keep-alive on loopback.
//!
//! Before the clock starts it pre-signs a corpus of webhook requests (GitHub `push` of
//! about 1 KB by default) with `hookgate_ingest::verify::sign`. Then one task per
//! connection drives a hyper 1 client connection (`hyper::client::conn::http1` over a
//! `tokio::net::TcpStream`):
//! - `--mode closed`: each connection sends its next request as soon as the previous
//!   answer arrives (maximum rate);
//! - `--mode open --rate R`: requests are scheduled at a fixed rate and latency is measured
//!   from each request's *intended* send time (coordinated-omission correction).
//!
//! It reports req/s, every status code seen and p50/p90/p99/p99.9/max from an HDR
//! histogram, as a table and as JSON (`--json FILE`). With `--verify-kafka BROKERS
//! --topic T` it then reads the topic from the beginning to the high watermark and reports
//! the accepted ids missing from Kafka and the ids written twice.
//!
//! Run: `cargo run --release -p hookgate-bench --bin hookgate-load -- --url
//! http://127.0.0.1:8080/hooks/github --connections 64 --duration 10s`; see `--help`.
//! `--report DIR` prints the markdown table of the `*.json` results in DIR instead.
//! Load goes to loopback only, bounded by `--duration` and `--requests`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use hookgate_bench::corpus::{self, SignedRequest};
use hookgate_bench::report::{self, KafkaCheck, Latency, RunResult};
use hookgate_ingest::verify::Provider;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Closed or open loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Maximum rate: each connection sends when its previous answer arrives.
    Closed,
    /// Fixed rate (`--rate`), latency from the intended send time.
    Open,
}

/// hookgate's load generator (HTTP/1.1 keep-alive, loopback only).
#[derive(Parser)]
#[command(name = "hookgate-load", about)]
struct Args {
    /// Target URL (host must be loopback).
    #[arg(long, default_value = "http://127.0.0.1:8080/hooks/github")]
    url: String,
    /// Provider whose signed requests to send.
    #[arg(long, default_value = "github")]
    provider: String,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Share of sends (0..1) that repeat an earlier delivery id.
    #[arg(long, default_value_t = 0.0)]
    dup_ratio: f64,
    /// Closed loop (max rate) or open loop (fixed rate).
    #[arg(long, value_enum, default_value_t = Mode::Closed)]
    mode: Mode,
    /// Open loop: requests per second over all connections.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured time, after the warm-up (e.g. `10s`).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before measuring (its responses are not in the statistics).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Stop after this many requests in total (warm-up included).
    #[arg(long)]
    requests: Option<u64>,
    /// HTTP/1.1 keep-alive connections, one task each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Signing secret (default: the bench configs' secret for the provider; for discord the
    /// Ed25519 seed in hex).
    #[arg(long, env = "HOOKGATE_LOAD_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Load-generator runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Give up on one request after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Most distinct pre-signed requests (providers whose delivery id is signed need one
    /// per request; beyond it the corpus wraps and repeats count as duplicates).
    #[arg(long)]
    corpus: Option<usize>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Scenario name in the table and JSON.
    #[arg(long)]
    label: Option<String>,
    /// After the run, read this Kafka cluster's topic and check every accepted id is there
    /// exactly once.
    #[arg(long, requires = "topic")]
    verify_kafka: Option<String>,
    /// Topic for `--verify-kafka`.
    #[arg(long)]
    topic: Option<String>,
    /// `--verify-kafka`: before reading, produce one marker record (no hookgate headers)
    /// to every partition. Tells "the broker holds the last batch but does not serve it
    /// until the next write" (Tansu 0.6's high watermark lags) from a real loss.
    #[arg(long)]
    verify_nudge: bool,
    /// Instead of a run: print the markdown table of the `*.json` results in this folder.
    #[arg(long)]
    report: Option<PathBuf>,
    /// `--report`: the label whose req/s the ratio column divides by.
    #[arg(long, default_value = "bare-hyper")]
    baseline: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.report {
        let runs = RunResult::load_dir(dir)?;
        print!("{}", report::markdown_table(&runs, &args.baseline));
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let result = rt.block_on(run(&args))?;
    print_table(&result);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// The pre-signed requests and how to pick one per send.
struct Corpus {
    provider: Provider,
    entries: Vec<SignedRequest>,
    /// The delivery id lives in an unsigned header: a fresh one is put there per send.
    id_header: Option<http::HeaderName>,
    nonce: u64,
    host: HeaderValue,
}

impl Corpus {
    /// The request for sequence number `seq`; `dup_of` repeats an earlier send's id.
    /// Returns the request and whether the corpus had to wrap.
    fn request(&self, seq: u64, dup_of: Option<u64>) -> (Request<Full<Bytes>>, bool) {
        let id_seq = dup_of.unwrap_or(seq);
        let n = self.entries.len() as u64;
        let (entry, wrapped) = match self.id_header {
            Some(_) => (&self.entries[(id_seq % n) as usize], false),
            None => (&self.entries[(id_seq % n) as usize], id_seq >= n),
        };
        let mut b = Request::post(entry.path.as_str());
        if let Some(h) = b.headers_mut() {
            h.reserve(entry.headers.len() + 2);
            h.insert(http::header::HOST, self.host.clone());
            for (k, v) in &entry.headers {
                h.insert(k.clone(), v.clone());
            }
            if let Some(name) = &self.id_header {
                let id = corpus::delivery_id(self.provider, self.nonce, id_seq);
                if let Ok(v) = HeaderValue::try_from(id) {
                    h.insert(name.clone(), v);
                }
            }
        }
        let req = b
            .body(Full::new(entry.body.clone()))
            .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())));
        (req, wrapped && dup_of.is_none())
    }
}

/// Shared run state.
struct Shared {
    addr: SocketAddr,
    corpus: Corpus,
    next_seq: AtomicU64,
    limit: u64,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    dup_ratio: f64,
    timeout: Duration,
    keep_ids: bool,
}

/// What one connection task saw.
struct ConnStats {
    hist: Histogram<u64>,
    lag: Histogram<u64>,
    status: HashMap<u16, u64>,
    measured: u64,
    errors: BTreeMap<String, u64>,
    accepted: u64,
    duplicates: u64,
    wrapped: u64,
    /// Ids answered `"duplicate":false` (only with `--verify-kafka`).
    ids: Vec<u128>,
    /// Ids answered `"duplicate":true`.
    dup_ids: Vec<u128>,
}

/// Microseconds from 1 µs to 120 s at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

async fn run(args: &Args) -> anyhow::Result<RunResult> {
    let uri: http::Uri = args.url.parse().context("--url")?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http://");
    }
    let host = uri.host().context("--url has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await?
        .find(|a| a.ip().is_loopback())
        .with_context(|| format!("{host} is not a loopback address: load goes to loopback only"))?;
    let provider = Provider::parse(&args.provider)
        .with_context(|| format!("unknown provider `{}`", args.provider))?;
    if !(0.0..1.0).contains(&args.dup_ratio) {
        bail!("--dup-ratio must be in [0, 1)");
    }
    let rate = match (args.mode, args.rate) {
        (Mode::Open, Some(r)) if r > 0.0 => r,
        (Mode::Open, _) => bail!("--mode open needs --rate R > 0"),
        (Mode::Closed, _) => 0.0,
    };
    let connections = args.connections.max(1);
    let secret = args
        .secret
        .clone()
        .unwrap_or_else(|| corpus::default_secret(provider).to_owned());
    let path = uri.path().to_owned();
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let now = (nonce / 1_000_000_000) as i64;
    let id_header = corpus::unsigned_id_header(provider);
    let total_secs = (args.duration + args.warmup).as_secs_f64();
    let wanted = match (args.requests, args.mode) {
        (Some(n), _) => n as usize,
        (None, Mode::Open) => (rate * total_secs * 1.05) as usize + connections,
        (None, Mode::Closed) => 400_000,
    };
    let cap = ((768usize << 20) / args.size.max(256)).max(1000);
    let unique = match id_header {
        Some(_) => wanted.clamp(1, 256),
        None => args.corpus.unwrap_or(wanted).clamp(1, cap),
    };
    eprintln!(
        "pre-signing {unique} {} request(s) of {} bytes…",
        provider.as_str(),
        args.size
    );
    let t = Instant::now();
    let mut entries = Vec::with_capacity(unique);
    for seq in 0..unique as u64 {
        let id = corpus::delivery_id(provider, nonce, seq);
        entries.push(corpus::signed_request(
            provider, &secret, args.size, &id, now, &path,
        )?);
    }
    eprintln!("signed in {:.2?}; running…", t.elapsed());
    let start = Instant::now() + Duration::from_millis(50);
    let shared = Arc::new(Shared {
        addr,
        corpus: Corpus {
            provider,
            entries,
            id_header,
            nonce,
            host: HeaderValue::try_from(format!("{host}:{port}"))?,
        },
        next_seq: AtomicU64::new(0),
        limit: args.requests.unwrap_or(u64::MAX),
        start,
        measure_from: start + args.warmup,
        end: start + args.warmup + args.duration,
        dup_ratio: args.dup_ratio,
        timeout: args.timeout,
        keep_ids: args.verify_kafka.is_some(),
    });
    // Open loop: a pacer thread hands each connection its intended send times. It sleeps
    // with the OS timer (tens of µs late at most) instead of tokio's 1 ms timer wheel,
    // whose rounding would otherwise show up as latency.
    let mut tickets = Vec::with_capacity(connections);
    let mut pacer = None;
    if args.mode == Mode::Open {
        let mut senders = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
            senders.push(tx);
            tickets.push(Some(rx));
        }
        let (start, end, limit) = (shared.start, shared.end, shared.limit);
        pacer = Some(std::thread::spawn(move || {
            pace(senders, start, end, rate, limit)
        }));
    } else {
        tickets.resize_with(connections, || None);
    }
    let mut tasks = Vec::with_capacity(connections);
    for (k, ticket) in tickets.into_iter().enumerate() {
        tasks.push(tokio::spawn(connection(shared.clone(), k, ticket)));
    }
    let mut hist = histogram();
    let mut lag = histogram();
    let mut status: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut measured, mut accepted, mut duplicates, mut wrapped) = (0u64, 0u64, 0u64, 0u64);
    let mut ids = Vec::new();
    let mut dup_ids = Vec::new();
    let mut non_2xx = 0;
    for t in tasks {
        let s = t.await?;
        hist.add(&s.hist)?;
        lag.add(&s.lag)?;
        for (code, n) in s.status {
            if !(200..300).contains(&code) {
                non_2xx += n;
            }
            *status.entry(code.to_string()).or_default() += n;
        }
        for (k, n) in s.errors {
            *errors.entry(k).or_default() += n;
        }
        measured += s.measured;
        accepted += s.accepted;
        duplicates += s.duplicates;
        wrapped += s.wrapped;
        ids.extend(s.ids);
        dup_ids.extend(s.dup_ids);
    }
    if let Some(p) = pacer {
        let _ = p.join();
    }
    let secs = args.duration.as_secs_f64();
    let window = (Instant::now().min(shared.end) - shared.measure_from.min(shared.end))
        .as_secs_f64()
        .max(1e-9);
    // A --requests run may end before the window does.
    let secs = if args.requests.is_some() {
        window.min(secs)
    } else {
        secs
    };
    let kafka = match (&args.verify_kafka, &args.topic) {
        (Some(brokers), Some(topic)) => {
            let (brokers, topic) = (brokers.clone(), topic.clone());
            let nudge = args.verify_nudge;
            Some(
                tokio::task::spawn_blocking(move || {
                    verify_kafka(&brokers, &topic, &ids, &dup_ids, nudge)
                })
                .await??,
            )
        }
        _ => None,
    };
    Ok(RunResult {
        label: args.label.clone().unwrap_or_else(|| "run".into()),
        url: args.url.clone(),
        mode: format!("{:?}", args.mode).to_lowercase(),
        provider: provider.as_str().into(),
        body_bytes: args.size,
        dup_ratio: args.dup_ratio,
        connections,
        target_rate: (args.mode == Mode::Open).then_some(rate),
        duration_s: secs,
        requests: measured,
        rps: measured as f64 / secs,
        status,
        non_2xx,
        errors,
        latency_us: latency(&hist),
        sched_lag_us: (args.mode == Mode::Open).then(|| latency(&lag)),
        accepted,
        duplicates,
        corpus_wrapped: wrapped,
        threads: args.threads,
        kafka,
    })
}

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean(),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A tiny xorshift, so duplicate picks are cheap and reproducible per connection.
fn next_rand(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(serde::Deserialize)]
struct Accepted<'a> {
    #[serde(borrow)]
    id: &'a str,
    duplicate: bool,
}

fn err(s: &mut ConnStats, what: &str) {
    *s.errors.entry(what.into()).or_default() += 1;
}

/// The open-loop clock: send time `i` is `start + i / rate`, given to connection
/// `i % connections` (which, if still busy, sends late; latency still counts from then).
fn pace(
    senders: Vec<tokio::sync::mpsc::UnboundedSender<Instant>>,
    start: Instant,
    end: Instant,
    rate: f64,
    limit: u64,
) {
    let n = senders.len() as u64;
    let mut i: u64 = 0;
    while i < limit {
        let t = start + Duration::from_secs_f64(i as f64 / rate);
        if t >= end {
            break;
        }
        let now = Instant::now();
        if t > now {
            std::thread::sleep(t - now);
        }
        // Hand out every send time that is due now.
        let now = Instant::now();
        loop {
            let t = start + Duration::from_secs_f64(i as f64 / rate);
            if t > now || t >= end || i >= limit {
                break;
            }
            let _ = senders[(i % n) as usize].send(t);
            i += 1;
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    k: usize,
    mut ticket: Option<tokio::sync::mpsc::UnboundedReceiver<Instant>>,
) -> ConnStats {
    let mut s = ConnStats {
        hist: histogram(),
        lag: histogram(),
        status: HashMap::new(),
        measured: 0,
        errors: BTreeMap::new(),
        accepted: 0,
        duplicates: 0,
        wrapped: 0,
        ids: Vec::new(),
        dup_ids: Vec::new(),
    };
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (k as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
    let mut last_seq: Option<u64> = None;
    let mut sender: Option<Sender> = None;
    tokio::time::sleep_until(shared.start.into()).await;
    loop {
        // When should this request go out?
        let intended = match &mut ticket {
            None => None,
            Some(rx) => match rx.recv().await {
                Some(t) => Some(t),
                None => break,
            },
        };
        if intended.is_none() && Instant::now() >= shared.end {
            break;
        }
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        if seq >= shared.limit {
            break;
        }
        let conn = match sender.take() {
            Some(c) => c,
            None => match connect(shared.addr).await {
                Ok(c) => c,
                Err(_) => {
                    err(&mut s, "connect");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let mut conn = conn;
        let dup_of = match last_seq {
            Some(prev) if shared.dup_ratio > 0.0 && next_rand(&mut rng) < shared.dup_ratio => {
                Some(prev)
            }
            _ => None,
        };
        let (req, wrapped) = shared.corpus.request(seq, dup_of);
        if wrapped {
            s.wrapped += 1;
        }
        if dup_of.is_none() {
            last_seq = Some(seq);
        }
        let sent = Instant::now();
        let res = tokio::time::timeout(shared.timeout, async {
            conn.ready().await?;
            let resp = conn.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        })
        .await;
        let done = Instant::now();
        let began = intended.unwrap_or(sent);
        match res {
            Ok(Ok((status, body))) => {
                sender = Some(conn);
                if began >= shared.measure_from {
                    s.measured += 1;
                    *s.status.entry(status).or_default() += 1;
                    s.hist
                        .saturating_record((done - began).as_micros().max(1) as u64);
                    if let Some(t) = intended {
                        s.lag
                            .saturating_record((sent - t).as_micros().max(1) as u64);
                    }
                }
                if status == 200 {
                    if let Ok(a) = serde_json::from_slice::<Accepted<'_>>(&body) {
                        if a.duplicate {
                            s.duplicates += 1;
                        } else {
                            s.accepted += 1;
                        }
                        if shared.keep_ids {
                            if let Ok(id) = ulid::Ulid::from_string(a.id) {
                                if a.duplicate {
                                    s.dup_ids.push(id.0);
                                } else {
                                    s.ids.push(id.0);
                                }
                            }
                        }
                    }
                }
            }
            Ok(Err(_)) => err(&mut s, "io"),
            Err(_) => err(&mut s, "timeout"),
        }
    }
    s
}

/// Reads `topic` from the beginning to its high watermark and checks the run's ids.
fn verify_kafka(
    brokers: &str,
    topic: &str,
    accepted: &[u128],
    dup_answers: &[u128],
    nudge: bool,
) -> anyhow::Result<KafkaCheck> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};

    eprintln!(
        "reading {topic} from {brokers} to check {} accepted id(s)…",
        accepted.len()
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "hookgate-load-verify")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("kafka consumer")?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("kafka metadata")?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        bail!("topic {topic} has no partitions (does it exist?)");
    }
    if nudge {
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .create()
            .context("kafka producer")?;
        for p in &parts {
            producer
                .send(
                    BaseRecord::<[u8], [u8]>::to(topic)
                        .partition(*p)
                        .key(b"hookgate-load-nudge"),
                )
                .map_err(|(e, _)| e)
                .context("produce nudge")?;
        }
        producer
            .flush(Duration::from_secs(10))
            .context("flush nudge")?;
        eprintln!(
            "nudged {} partition(s) of {topic} with a marker record",
            parts.len()
        );
    }
    let mut tpl = TopicPartitionList::new();
    let mut high: HashMap<i32, i64> = HashMap::new();
    let mut low_marks: HashMap<i32, i64> = HashMap::new();
    for p in &parts {
        let (low, hi) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        high.insert(*p, hi);
        low_marks.insert(*p, low);
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let ours: HashSet<u128> = accepted.iter().chain(dup_answers).copied().collect();
    let mut seen: HashMap<u128, u32> = HashMap::with_capacity(accepted.len());
    let mut deliveries: HashMap<String, HashSet<u128>> = HashMap::new();
    let mut pos: HashMap<i32, i64> = parts.iter().map(|p| (*p, 0)).collect();
    eprintln!("watermarks of {topic}: low {low_marks:?}, high {high:?}");
    let mut records = 0u64;
    let mut records_of_run = 0u64;
    let mut past_high = 0u64;
    let mut grace: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last_progress = Instant::now();
    loop {
        if parts.iter().all(|p| pos[p] >= high[p]) {
            // Reached the watermarks read at the start; read on if they moved since.
            let mut moved = false;
            for p in &parts {
                let (_low, hi) = consumer
                    .fetch_watermarks(topic, *p, Duration::from_secs(10))
                    .with_context(|| format!("watermarks of {topic}/{p}"))?;
                if hi > high[p] {
                    eprintln!(
                        "note: high watermark of {topic}/{p} moved from {} to {hi} after the run",
                        high[p]
                    );
                    high.insert(*p, hi);
                    moved = true;
                }
            }
            if !moved {
                // Poll a little longer: a broker whose high watermark lags what it
                // serves would otherwise make records look missing.
                if grace.is_none() {
                    grace = Some(Instant::now() + Duration::from_secs(2));
                }
                if grace.is_some_and(|g| Instant::now() >= g) {
                    break;
                }
            }
        }
        if Instant::now() > deadline
            || (grace.is_none() && last_progress.elapsed() > Duration::from_secs(20))
        {
            bail!("gave up reading {topic}: positions {pos:?}, high watermarks {high:?}");
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.context("kafka consume")?;
        last_progress = Instant::now();
        pos.insert(msg.partition(), msg.offset() + 1);
        records += 1;
        if msg.offset() >= high[&msg.partition()] {
            past_high += 1;
        }
        let mut id = None;
        let mut delivery = None;
        if let Some(h) = msg.headers() {
            for hd in h.iter() {
                match hd.key {
                    hookgate_proto::header::ID => {
                        id = hd
                            .value
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|v| ulid::Ulid::from_string(v).ok())
                            .map(|u| u.0)
                    }
                    hookgate_proto::header::DELIVERY_ID => {
                        delivery = hd
                            .value
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .map(str::to_owned)
                    }
                    _ => {}
                }
            }
        }
        let Some(id) = id else { continue };
        if !ours.contains(&id) {
            continue;
        }
        records_of_run += 1;
        *seen.entry(id).or_default() += 1;
        if let Some(d) = delivery {
            deliveries.entry(d).or_default().insert(id);
        }
    }
    if past_high > 0 {
        eprintln!(
            "note: {past_high} record(s) were served past the high watermark the broker reported"
        );
    }
    let missing_ids: Vec<u128> = accepted
        .iter()
        .filter(|id| !seen.contains_key(id))
        .copied()
        .collect();
    let missing = missing_ids.len() as u64;
    if !missing_ids.is_empty() {
        let newest = accepted
            .iter()
            .map(|id| ulid::Ulid(*id).timestamp_ms())
            .max();
        let oldest = accepted
            .iter()
            .map(|id| ulid::Ulid(*id).timestamp_ms())
            .min();
        eprintln!(
            "{missing} accepted id(s) are not in {topic} (run's ids span {oldest:?}..{newest:?} ms); first ones:"
        );
        for id in missing_ids.iter().take(10) {
            let u = ulid::Ulid(*id);
            eprintln!("  {u} accepted at {} ms", u.timestamp_ms());
        }
    }
    Ok(KafkaCheck {
        topic: topic.into(),
        records,
        records_of_run,
        missing,
        written_twice: seen.values().filter(|n| **n > 1).count() as u64,
        delivery_ids_twice: deliveries.values().filter(|s| s.len() > 1).count() as u64,
    })
}

fn print_table(r: &RunResult) {
    let mut out = std::io::stdout().lock();
    let ms = |us: u64| us as f64 / 1000.0;
    let mode = match r.target_rate {
        Some(rate) => format!("open @ {rate:.0} req/s (latency from intended send time)"),
        None => "closed (max rate)".into(),
    };
    let _ = writeln!(out, "scenario     {}", r.label);
    let _ = writeln!(
        out,
        "target       {}  ({} x {} B, dup {:.0}%)",
        r.url,
        r.provider,
        r.body_bytes,
        r.dup_ratio * 100.0
    );
    let _ = writeln!(
        out,
        "mode         {mode}, {} connections, {} generator thread(s)",
        r.connections, r.threads
    );
    let _ = writeln!(
        out,
        "measured     {} responses in {:.1} s = {:.0} req/s",
        r.requests, r.duration_s, r.rps
    );
    let _ = writeln!(out, "statuses     {}", r.status_text());
    if r.errors.values().any(|n| *n > 0) {
        let _ = writeln!(out, "errors       {:?}", r.errors);
    }
    let l = &r.latency_us;
    let _ = writeln!(
        out,
        "latency ms   p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max),
        l.mean / 1000.0
    );
    if let Some(l) = &r.sched_lag_us {
        let _ = writeln!(
            out,
            "timer lag ms p50 {:.3}  p99 {:.3}  max {:.3} (included above)",
            ms(l.p50),
            ms(l.p99),
            ms(l.max)
        );
    }
    let _ = writeln!(
        out,
        "answers      {} accepted, {} duplicate (whole run)",
        r.accepted, r.duplicates
    );
    if r.corpus_wrapped > 0 {
        let _ = writeln!(
            out,
            "note         the pre-signed corpus wrapped: {} sends repeated a signed request",
            r.corpus_wrapped
        );
    }
    if let Some(k) = &r.kafka {
        let _ = writeln!(
            out,
            "kafka        {}: {} records ({} of this run); missing {}, written twice {}, delivery ids under 2+ ids {}",
            k.topic, k.records, k.records_of_run, k.missing, k.written_twice, k.delivery_ids_twice
        );
    }
}
