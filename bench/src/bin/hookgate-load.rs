//! `hookgate-load`: the load generator. It measures end-to-end throughput and latency of
//! hookgate (or the `bare-hyper` ceiling) over HTTP/1.1 keep-alive on loopback.
//!
//! Before the clock starts it pre-signs a corpus of webhook requests (GitHub `push` of
//! about 1 KB by default) with `hookgate_ingest::verify::sign` and serializes each one
//! into the exact bytes of its HTTP/1.1 request (request line, `host`, the signed
//! headers, `content-length`, body: the bytes hyper's client wrote for it). Then one task
//! per connection drives a minimal HTTP/1.1 client over a `tokio::net::TcpStream`
//! (nodelay, keep-alive): one `writev` of the pre-serialized bytes per request (for
//! GitHub, GitLab and Shopify the unsigned delivery-id header's value is spliced in per
//! send), then the answer is read into a reusable per-connection buffer, its head parsed
//! with `httparse` and its body read by `Content-Length` (an answer without one, or with
//! `Transfer-Encoding`, counts as a `framing` error and the connection is dropped). EOF
//! and I/O errors count as `io`; an answer with `Connection: close` counts as an answer
//! plus one `io` error (as the lost connection did with hyper); either way the next
//! request reconnects. `--timeout` has no timer per request: a watchdog task looks at
//! every connection's in-flight send time every 100 ms (a quarter of `--timeout` if that
//! is less) and shuts down the socket of a request that is older; it counts as `timeout`
//! and the connection is reopened. The modes:
//! - `--mode closed`: each connection sends its next request as soon as the previous
//!   answer arrives (maximum rate);
//! - `--mode open --rate R`: requests are scheduled at a fixed rate and latency is measured
//!   from each request's *intended* send time (coordinated-omission correction).
//!
//! It reports req/s, every status code seen and p50/p90/p99/p99.9/max from an HDR
//! histogram, as a table and as JSON (`--json FILE`). With `--verify-kafka BROKERS
//! --topic T` it then reads the topic from the beginning to the high watermark and reports
//! the accepted ids missing from Kafka and the ids written twice; it exits with status 3
//! when any accepted id is missing or stored twice (issue 16: every accepted id exactly
//! once; the bench's producer is idempotent, so a copy is a failure, not a retry).
//!
//! `--cpu NAME=PID` (repeatable) reports each process's CPU (utime + stime from
//! `/proc/PID/stat`, all threads) over the measured window per 2xx answer, and the
//! generator's own as `generator`. `--write-corpus FILE --count N` writes N distinct
//! pre-signed requests for wrk (`hookgate_bench::replay`); `--wrk --corpus-file FILE` drives
//! a closed-loop run with wrk and `bench/wrk/replay.lua` over it instead (a warm-up wrk run,
//! then the measured one from where it stopped) and reports it the same way. A run whose
//! corpus wrapped is refused: exit status 4, no JSON.
//!
//! Run: `cargo run --release -p hookgate-bench --bin hookgate-load -- --url
//! http://127.0.0.1:8080/hooks/github --connections 64 --duration 10s`; see `--help`.
//! `--report DIR` prints the markdown table of the `*.json` results in DIR instead.
//! Load goes to loopback only, bounded by `--duration` and `--requests`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IoSlice, Write as _};
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use hookgate_bench::corpus::{self, SignedRequest};
use hookgate_bench::cpu;
use hookgate_bench::replay::{self, CorpusWriter, WrkRun};
use hookgate_bench::report::{self, KafkaCheck, Latency, ProcCpu, RunResult};
use hookgate_ingest::verify::Provider;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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
    /// exactly once. Exit status 3 when an accepted id is missing or stored twice.
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
    /// Watch this process's CPU over the measured window: `NAME=PID` (repeatable; e.g.
    /// `hookgate=4242`, `tansu=4243`). The generator's own CPU is always reported, as
    /// `generator`.
    #[arg(long = "cpu", value_name = "NAME=PID")]
    cpu: Vec<cpu::Watched>,
    /// Instead of a run: write `--count` distinct pre-signed requests (with `--dup-ratio`
    /// of them re-sending an earlier one) to this file, for `--wrk` (format:
    /// `hookgate_bench::replay`).
    #[arg(long, value_name = "FILE")]
    write_corpus: Option<PathBuf>,
    /// `--write-corpus`: how many requests.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Drive the load with wrk (one process, `--wrk-threads` threads, `--connections`)
    /// replaying the corpus file `--corpus-file` with `bench/wrk/replay.lua`: a warm-up
    /// run, then the measured run from where it stopped. Closed loop only.
    #[arg(long, requires = "corpus_file")]
    wrk: bool,
    /// `--wrk`: the corpus written by `--write-corpus`.
    #[arg(long, value_name = "FILE")]
    corpus_file: Option<PathBuf>,
    /// `--wrk`: wrk threads.
    #[arg(long, default_value_t = 1)]
    wrk_threads: usize,
}

/// The exit status when `--verify-kafka` found accepted ids missing from the topic, or
/// stored twice (the run itself completed, and its table and JSON are written); 1 is any
/// other failure.
const EXIT_MISSING: u8 = 3;
/// The exit status of a run refused because its corpus wrapped (no JSON is written).
const EXIT_REFUSED: u8 = 4;

/// The wrk script, written next to the corpus for each `--wrk` run.
const REPLAY_LUA: &str = include_str!("../../wrk/replay.lua");

fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    if let Some(dir) = &args.report {
        let runs = RunResult::load_dir(dir)?;
        print!("{}", report::markdown_table(&runs, &args.baseline));
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Some(path) = &args.write_corpus {
        write_corpus(&args, path)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let result = if args.wrk {
        run_wrk(&args)?
    } else {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads.max(1))
            .enable_all()
            .build()?;
        rt.block_on(run(&args))?
    };
    let result = match result {
        Ok(r) => r,
        Err(why) => {
            eprintln!("REFUSED: {why}");
            println!("REFUSED: {why}");
            return Ok(std::process::ExitCode::from(EXIT_REFUSED));
        }
    };
    print_table(&result);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&result)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(k) = result.kafka.as_ref().filter(|k| k.missing > 0) {
        eprintln!(
            "error: {} accepted id(s) are missing from {}: exit status {EXIT_MISSING}",
            k.missing, k.topic
        );
        return Ok(std::process::ExitCode::from(EXIT_MISSING));
    }
    if let Some(k) = result
        .kafka
        .as_ref()
        .filter(|k| k.written_twice + k.delivery_ids_twice > 0)
    {
        eprintln!(
            "error: {} id(s) written twice and {} delivery id(s) under two event ids in {}: exit status {EXIT_MISSING}",
            k.written_twice, k.delivery_ids_twice, k.topic
        );
        return Ok(std::process::ExitCode::from(EXIT_MISSING));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// One pre-signed request as the bytes of a whole HTTP/1.1 request.
struct Wire {
    bytes: Box<[u8]>,
    /// Where the value of the unsigned delivery-id header sits in `bytes` (providers with
    /// one): every send puts its own id there.
    id_at: Option<(usize, usize)>,
}

impl Wire {
    /// Serializes `entry` as hyper's HTTP/1.1 client did for the request this generator
    /// used to build: `POST <path> HTTP/1.1`, then the headers of a `HeaderMap` filled with
    /// `host` and `entry.headers` by `insert` (so in that order, a repeated name keeping
    /// its first place and last value), the unsigned `id_header` set to `id`, then
    /// `content-length`, a blank line and the body.
    fn serialize(
        entry: &SignedRequest,
        host: &HeaderValue,
        id_header: Option<&HeaderName>,
        id: &str,
    ) -> anyhow::Result<Wire> {
        let mut h = HeaderMap::with_capacity(entry.headers.len() + 2);
        h.insert(http::header::HOST, host.clone());
        for (k, v) in &entry.headers {
            h.insert(k.clone(), v.clone());
        }
        if let Some(name) = id_header {
            h.insert(name.clone(), HeaderValue::try_from(id)?);
        }
        if !h.contains_key(http::header::CONTENT_LENGTH) {
            h.insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(entry.body.len()),
            );
        }
        let mut out = Vec::with_capacity(entry.body.len() + 64 * (h.len() + 1));
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(entry.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut id_at = None;
        for (k, v) in &h {
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            if id_header == Some(k) {
                id_at = Some((out.len(), out.len() + v.len()));
            }
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&entry.body);
        Ok(Wire {
            bytes: out.into_boxed_slice(),
            id_at,
        })
    }

    /// The request's bytes with `id` as its delivery id (`id` is ignored without an
    /// unsigned id header): up to three slices, to write as they are.
    fn parts<'a>(&'a self, id: &'a [u8]) -> [&'a [u8]; 3] {
        match self.id_at {
            Some((a, b)) => [&self.bytes[..a], id, &self.bytes[b..]],
            None => [&self.bytes, &[], &[]],
        }
    }
}

/// The pre-serialized requests and how to pick one per send.
struct Corpus {
    provider: Provider,
    entries: Vec<Wire>,
    /// The delivery id lives in an unsigned header: a fresh one is put there per send.
    id_header: bool,
    nonce: u64,
}

impl Corpus {
    /// The request for sequence number `seq`; `dup_of` repeats an earlier send's id.
    /// Returns the entry, the sequence number whose delivery id goes in its unsigned id
    /// header (if it has one) and whether the corpus had to wrap.
    fn pick(&self, seq: u64, dup_of: Option<u64>) -> (&Wire, u64, bool) {
        let id_seq = dup_of.unwrap_or(seq);
        let n = self.entries.len() as u64;
        let entry = &self.entries[(id_seq % n) as usize];
        let wrapped = !self.id_header && id_seq >= n;
        (entry, id_seq, wrapped && dup_of.is_none())
    }

    /// Puts in `out` the delivery id of `id_seq` for the unsigned id header (nothing
    /// for providers without one).
    fn write_id(&self, out: &mut String, id_seq: u64) {
        out.clear();
        if self.id_header {
            corpus::write_delivery_id(out, self.provider, self.nonce, id_seq);
        }
    }
}

/// What the timeout watchdog knows of one connection.
struct Slot {
    /// `IDLE`, `TIMED_OUT`, or when the request in flight was sent (µs since
    /// `Shared::origin`, plus one).
    sent: AtomicU64,
    /// A second handle on the connection's socket (a dup of its fd), to shut it down.
    sock: Mutex<Option<std::net::TcpStream>>,
}

const IDLE: u64 = 0;
const TIMED_OUT: u64 = u64::MAX;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// One per connection task, for the watchdog.
    slots: Vec<Slot>,
    /// The zero of `Slot::sent`.
    origin: Instant,
}

impl Shared {
    /// `t` as a `Slot::sent` stamp.
    fn stamp(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_micros() as u64 + 1
    }
}

/// What one connection task saw.
struct ConnStats {
    hist: Histogram<u64>,
    lag: Histogram<u64>,
    status: HashMap<u16, u64>,
    measured: u64,
    /// Measured answers to sends of a delivery id not sent before.
    distinct: u64,
    errors: BTreeMap<String, u64>,
    accepted: u64,
    duplicates: u64,
    /// Sends that repeated the delivery id of this connection's previous new send.
    resent: u64,
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

async fn run(args: &Args) -> anyhow::Result<Result<RunResult, String>> {
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
    let host_header = HeaderValue::try_from(format!("{host}:{port}"))?;
    let mut entries = Vec::with_capacity(unique);
    for seq in 0..unique as u64 {
        let id = corpus::delivery_id(provider, nonce, seq);
        let signed = corpus::signed_request(provider, &secret, args.size, &id, now, &path)?;
        entries.push(Wire::serialize(
            &signed,
            &host_header,
            id_header.as_ref(),
            &id,
        )?);
    }
    eprintln!("signed in {:.2?}; running…", t.elapsed());
    let origin = Instant::now();
    let start = origin + Duration::from_millis(50);
    let shared = Arc::new(Shared {
        addr,
        corpus: Corpus {
            provider,
            entries,
            id_header: id_header.is_some(),
            nonce,
        },
        next_seq: AtomicU64::new(0),
        limit: args.requests.unwrap_or(u64::MAX),
        start,
        measure_from: start + args.warmup,
        end: start + args.warmup + args.duration,
        dup_ratio: args.dup_ratio,
        timeout: args.timeout,
        keep_ids: args.verify_kafka.is_some(),
        slots: (0..connections)
            .map(|_| Slot {
                sent: AtomicU64::new(IDLE),
                sock: Mutex::new(None),
            })
            .collect(),
        origin,
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
    // CPU of the watched processes and of this one, at the start of the measured window
    // (the end is sampled once every connection is done).
    let hz = cpu::clock_ticks_per_second();
    let sampler = {
        let watched = args.cpu.clone();
        let from = shared.measure_from;
        tokio::spawn(async move {
            tokio::time::sleep_until(from.into()).await;
            (
                Instant::now(),
                cpu::sample(&watched, hz),
                cpu::own_cpu_seconds(hz),
            )
        })
    };
    let dog = tokio::spawn(watchdog(shared.clone()));
    let mut tasks = Vec::with_capacity(connections);
    for (k, ticket) in tickets.into_iter().enumerate() {
        tasks.push(tokio::spawn(connection(shared.clone(), k, ticket)));
    }
    let mut hist = histogram();
    let mut lag = histogram();
    let mut status: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut measured, mut accepted, mut duplicates, mut resent, mut wrapped) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut distinct = 0u64;
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
        distinct += s.distinct;
        accepted += s.accepted;
        duplicates += s.duplicates;
        resent += s.resent;
        wrapped += s.wrapped;
        ids.extend(s.ids);
        dup_ids.extend(s.dup_ids);
    }
    let (t1, after, own_after) = (
        Instant::now(),
        cpu::sample(&args.cpu, hz),
        cpu::own_cpu_seconds(hz),
    );
    dog.abort();
    if let Some(p) = pacer {
        let _ = p.join();
    }
    let (t0, before, own_before) = sampler.await?;
    let window = t1.saturating_duration_since(t0).as_secs_f64();
    let ok: u64 = status
        .iter()
        .filter(|(k, _)| k.starts_with('2'))
        .map(|(_, v)| v)
        .sum();
    let mut cpu_used = Vec::new();
    for (w, (b, a)) in args.cpu.iter().zip(before.iter().zip(&after)) {
        if let (Some(b), Some(a)) = (b, a) {
            cpu_used.push(ProcCpu::between(&w.name, *b, *a, window, ok));
        }
    }
    if let (Some(b), Some(a)) = (own_before, own_after) {
        cpu_used.push(ProcCpu::between("generator", b, a, window, ok));
    }
    if wrapped > 0 {
        return Ok(Err(format!(
            "the pre-signed corpus wrapped: {wrapped} sends repeated a signed request (their delivery ids were sent before), so the run is refused (raise --corpus)"
        )));
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
        (Some(brokers), Some(topic)) if wrapped == 0 => {
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
    Ok(Ok(RunResult {
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
        resent,
        corpus_wrapped: wrapped,
        threads: args.threads,
        kafka,
        generator: "hookgate-load".into(),
        distinct_ids: distinct,
        cpu: cpu_used,
    }))
}

/// `--write-corpus FILE`: `--count` whole requests, each with its own delivery id (and,
/// for providers that sign it, its own signature), `--dup-ratio` of them re-sending the
/// bytes of a request at least 16,384 records earlier (long answered by then at any
/// connection count this bench uses).
fn write_corpus(args: &Args, path: &std::path::Path) -> anyhow::Result<()> {
    const BEHIND: usize = 16_384;
    let uri: http::Uri = args.url.parse().context("--url")?;
    let host = uri.host().context("--url has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let host_header = HeaderValue::try_from(format!("{host}:{port}"))?;
    let provider = Provider::parse(&args.provider)
        .with_context(|| format!("unknown provider `{}`", args.provider))?;
    if !(0.0..1.0).contains(&args.dup_ratio) {
        bail!("--dup-ratio must be in [0, 1)");
    }
    let secret = args
        .secret
        .clone()
        .unwrap_or_else(|| corpus::default_secret(provider).to_owned());
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let now = (nonce / 1_000_000_000) as i64;
    let id_header = corpus::unsigned_id_header(provider);
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = CorpusWriter::new(
        std::io::BufWriter::with_capacity(8 << 20, file),
        args.count,
        provider.as_str(),
    )?;
    let t = Instant::now();
    let mut recent: std::collections::VecDeque<Box<[u8]>> =
        std::collections::VecDeque::with_capacity(2 * BEHIND);
    let mut rng = nonce | 1;
    let mut seq = 0u64;
    while w.written() < args.count {
        if recent.len() == 2 * BEHIND
            && args.dup_ratio > 0.0
            && next_rand(&mut rng) < args.dup_ratio
        {
            let k = (next_rand(&mut rng) * BEHIND as f64) as usize;
            w.record(replay::Kind::Resend, &recent[k.min(BEHIND - 1)])?;
            continue;
        }
        let id = corpus::delivery_id(provider, nonce, seq);
        seq += 1;
        let signed = corpus::signed_request(provider, &secret, args.size, &id, now, uri.path())?;
        let wire = Wire::serialize(&signed, &host_header, id_header.as_ref(), &id)?;
        w.record(replay::Kind::New, &wire.bytes)?;
        if recent.len() == 2 * BEHIND {
            recent.pop_front();
        }
        recent.push_back(wire.bytes);
    }
    w.finish()?;
    eprintln!(
        "wrote {} requests ({} distinct delivery ids) to {} in {:.1?}",
        args.count,
        seq,
        path.display(),
        t.elapsed()
    );
    Ok(())
}

/// One wrk process: its output, and the CPU samples taken when it started measuring
/// (`Running …`) and when its `done()` began (`DONE`).
struct WrkOnce {
    output: String,
    /// (when, CPU seconds of each watched process then, of wrk then).
    samples: Vec<(Instant, Vec<Option<f64>>, Option<f64>)>,
}

fn wrk_once(
    args: &Args,
    script: &std::path::Path,
    start: u64,
    duration: Duration,
    ids: Option<&std::path::Path>,
    hz: u64,
) -> anyhow::Result<WrkOnce> {
    use std::io::BufRead as _;
    let corpus = args
        .corpus_file
        .as_ref()
        .context("--wrk needs --corpus-file")?;
    let secs = duration.as_secs().max(1);
    // Line-buffered, so `Running` and `DONE` arrive when wrk prints them.
    let mut cmd = std::process::Command::new("stdbuf");
    cmd.args(["-oL", "wrk", "-t"])
        .arg(args.wrk_threads.max(1).to_string())
        .arg("-c")
        .arg(args.connections.max(args.wrk_threads).to_string())
        .arg("-d")
        .arg(format!("{secs}s"))
        .arg("--timeout")
        .arg(format!("{}s", args.timeout.as_secs().max(1)))
        .arg("-s")
        .arg(script)
        .arg(&args.url)
        .env("HG_CORPUS", corpus)
        .env("HG_START", start.to_string())
        .stdout(std::process::Stdio::piped());
    match ids {
        Some(p) => cmd.env("HG_IDS", p),
        None => cmd.env_remove("HG_IDS"),
    };
    let mut child = cmd.spawn().context("run wrk (apt-get install -y wrk)")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("wrk's stdout")?;
    let mut output = String::new();
    let mut samples = Vec::new();
    // wrk has no timeout of its own beyond -d: a watchdog kills it if it overstays.
    let deadline = Instant::now() + duration + Duration::from_secs(300);
    let killer = std::thread::spawn(move || {
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if line.starts_with("Running ") || line == "DONE" {
            samples.push((
                Instant::now(),
                cpu::sample(&args.cpu, hz),
                cpu::process_cpu_seconds(pid, hz),
            ));
        }
        output.push_str(&line);
        output.push('\n');
    }
    let status = child.wait()?;
    let _ = killer.join();
    if !status.success() {
        bail!("wrk exited with {status}:\n{output}");
    }
    Ok(WrkOnce { output, samples })
}

/// `--wrk`: a warm-up wrk run, then the measured one from where the warm-up stopped in the
/// corpus, with the CPU of every watched process and of wrk over the measured window;
/// `Err` (refused) when the corpus wrapped.
fn run_wrk(args: &Args) -> anyhow::Result<Result<RunResult, String>> {
    if args.mode != Mode::Closed {
        bail!("--wrk drives a closed loop only (open loop: hookgate-load itself)");
    }
    let hz = cpu::clock_ticks_per_second();
    let corpus = args
        .corpus_file
        .as_ref()
        .context("--wrk needs --corpus-file")?;
    let tmp = tempfile_dir(corpus)?;
    let script = tmp.join("replay.lua");
    std::fs::write(&script, REPLAY_LUA)?;
    let ids = args.verify_kafka.is_some().then(|| tmp.join("ids"));
    let mut ids_text = String::new();
    let mut start = 0;
    if !args.warmup.is_zero() {
        let warm = wrk_once(args, &script, 0, args.warmup, ids.as_deref(), hz)?;
        let w = WrkRun::parse(&warm.output)?;
        if let Some(why) = w.refusal() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(Err(format!("warm-up: {why}")));
        }
        start = w.end;
        if let Some(p) = &ids {
            ids_text.push_str(&std::fs::read_to_string(p)?);
        }
    }
    let run = wrk_once(args, &script, start, args.duration, ids.as_deref(), hz)?;
    if let Some(p) = &ids {
        ids_text.push_str(&std::fs::read_to_string(p)?);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let w = WrkRun::parse(&run.output)?;
    if let Some(why) = w.refusal() {
        return Ok(Err(why));
    }
    let [(t0, before, wrk0), (t1, after, wrk1)] = run.samples.as_slice() else {
        bail!(
            "wrk did not print both `Running` and `DONE`:\n{}",
            run.output
        );
    };
    let window = t1.saturating_duration_since(*t0).as_secs_f64();
    let ok = w.ok();
    let mut cpu_used = Vec::new();
    for (p, (b, a)) in args.cpu.iter().zip(before.iter().zip(after)) {
        if let (Some(b), Some(a)) = (b, a) {
            cpu_used.push(ProcCpu::between(&p.name, *b, *a, window, ok));
        }
    }
    if let (Some(b), Some(a)) = (wrk0, wrk1) {
        cpu_used.push(ProcCpu::between("generator", *b, *a, window, ok));
    }
    let secs = (w.duration_us as f64 / 1e6).max(1e-9);
    let kafka = match (&args.verify_kafka, &args.topic) {
        (Some(brokers), Some(topic)) => {
            let (accepted, dups) = replay::read_answer_ids(&ids_text)?;
            Some(verify_kafka(
                brokers,
                topic,
                &accepted,
                &dups,
                args.verify_nudge,
            )?)
        }
        _ => None,
    };
    let us = |x: f64| x.max(0.0) as u64;
    Ok(Ok(RunResult {
        label: args.label.clone().unwrap_or_else(|| "run".into()),
        url: args.url.clone(),
        mode: "closed".into(),
        provider: args.provider.clone(),
        body_bytes: args.size,
        dup_ratio: args.dup_ratio,
        connections: args.connections,
        target_rate: None,
        duration_s: secs,
        requests: w.requests,
        rps: w.requests as f64 / secs,
        status: w.status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        non_2xx: w.requests - ok,
        errors: w.errors.clone(),
        latency_us: Latency {
            p50: us(w.latency_us[0]),
            p90: us(w.latency_us[1]),
            p99: us(w.latency_us[2]),
            p999: us(w.latency_us[3]),
            max: us(w.latency_us[4]),
            mean: w.latency_us[5],
        },
        sched_lag_us: None,
        accepted: w.accepted,
        duplicates: w.duplicates,
        resent: w.sent - w.fresh,
        corpus_wrapped: w.wrapped,
        threads: args.wrk_threads,
        kafka,
        generator: "wrk".into(),
        distinct_ids: w.fresh,
        cpu: cpu_used,
    }))
}

/// A fresh folder next to `corpus` for one run's script and answer ids.
fn tempfile_dir(corpus: &std::path::Path) -> anyhow::Result<PathBuf> {
    let parent = corpus
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = parent.join(format!(".wrk-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
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

/// Opens a connection for slot `slot` (nodelay) and hands the watchdog a dup of it.
async fn connect(addr: SocketAddr, slot: &Slot) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let watch = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned()?);
    *lock(&slot.sock) = Some(watch);
    Ok(stream)
}

/// Closes a connection (both handles on its socket).
fn hang_up(conn: &mut Option<TcpStream>, slot: &Slot) {
    *conn = None;
    lock(&slot.sock).take();
}

/// The `--timeout` watchdog: every 100 ms (or a quarter of the timeout, if less) it shuts
/// down the socket of every request in flight for longer than the timeout, which wakes
/// its task with an error; the task then sees `TIMED_OUT` and counts a timeout.
async fn watchdog(shared: Arc<Shared>) {
    let limit = shared.timeout.as_micros() as u64;
    let tick = (shared.timeout / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
    let mut every = tokio::time::interval(tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = shared.stamp(Instant::now());
        for slot in &shared.slots {
            let sent = slot.sent.load(Ordering::Acquire);
            if sent == IDLE || sent == TIMED_OUT || now.saturating_sub(sent) < limit {
                continue;
            }
            // Under the lock, so the socket is the one this request went out on: the
            // task replaces it only after it saw `TIMED_OUT` or went idle.
            let sock = lock(&slot.sock);
            if slot
                .sent
                .compare_exchange(sent, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if let Some(s) = sock.as_ref() {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }
        }
    }
}

/// Writes every byte of `parts` (a `writev` each time, usually once).
async fn write_all_parts(stream: &mut TcpStream, parts: [&[u8]; 3]) -> std::io::Result<()> {
    let mut slices = parts.map(IoSlice::new);
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        let n = stream.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Most bytes of an answer's head (status line and headers).
const MAX_HEAD: usize = 64 << 10;
/// Largest answer body accepted (hookgate's are tens of bytes).
const MAX_BODY: u64 = 16 << 20;

/// What an answer's head says.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    /// Bytes of the head in the buffer.
    len: usize,
    status: u16,
    /// Body length; `None` without `Content-Length` or with `Transfer-Encoding`.
    body: Option<u64>,
    /// The server closes the connection after this answer.
    close: bool,
}

/// Parses the head at the start of `buf`: `Ok(None)` when it is not all there yet.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err("io"),
    };
    let status = resp.code.ok_or("io")?;
    let http10 = resp.version == Some(0);
    let (mut length, mut chunked, mut close, mut keep_alive) = (None, false, false, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("io")?;
            if length.is_some_and(|l| l != n) {
                return Err("io");
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    // 1xx, 204 and 304 answers have no body, whatever their headers say.
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        Some(0)
    } else if chunked {
        None
    } else {
        length
    };
    Ok(Some(Head {
        len,
        status,
        body,
        close: close || (http10 && !keep_alive),
    }))
}

/// An answer read whole into the connection's buffer.
struct Answer {
    status: u16,
    /// The body's place in the buffer.
    body: (usize, usize),
    /// The connection cannot carry another request.
    close: bool,
}

/// Sends one request and reads its answer into `buf` (emptied first). Errors name the
/// `errors` entry to count.
async fn exchange(
    stream: &mut TcpStream,
    parts: [&[u8]; 3],
    buf: &mut Vec<u8>,
) -> Result<Answer, &'static str> {
    buf.clear();
    // Whatever readiness is left from the previous answer is stale (it was read whole):
    // forget it, so the first read below waits for the answer instead of trying a
    // `read` that can only say "would block". Done before the write, so the answer's
    // own wake-up comes after it.
    let _ = stream.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
    write_all_parts(stream, parts).await.map_err(|_| "io")?;
    let head = loop {
        if !buf.is_empty() {
            if let Some(head) = parse_head(buf)? {
                if (100..200).contains(&head.status) && head.status != 101 {
                    // An interim answer: the real one follows.
                    buf.drain(..head.len);
                    continue;
                }
                break head;
            }
            if buf.len() >= MAX_HEAD {
                return Err("io");
            }
        }
        if stream.read_buf(buf).await.map_err(|_| "io")? == 0 {
            return Err("io");
        }
    };
    let Some(len) = head.body.filter(|n| *n <= MAX_BODY) else {
        return Err("framing");
    };
    let end = head.len + len as usize;
    if buf.len() < end {
        buf.reserve(end - buf.len());
        while buf.len() < end {
            if stream.read_buf(buf).await.map_err(|_| "io")? == 0 {
                return Err("io");
            }
        }
    }
    Ok(Answer {
        status: head.status,
        body: (head.len, end),
        // Bytes past the answer were never asked for: do not reuse the connection.
        close: head.close || buf.len() > end,
    })
}

/// Reads `{"id":"…","duplicate":true|false}`: hookgate's exact shape directly, anything
/// else through serde_json.
fn parse_answer(body: &[u8]) -> Option<(&str, bool)> {
    if let Some(rest) = body.strip_prefix(b"{\"id\":\"".as_slice()) {
        if rest.len() > ulid::ULID_LEN {
            let (id, tail) = rest.split_at(ulid::ULID_LEN);
            let duplicate = match tail {
                b"\",\"duplicate\":true}" => Some(true),
                b"\",\"duplicate\":false}" => Some(false),
                _ => None,
            };
            if let (Some(d), Ok(id)) = (duplicate, std::str::from_utf8(id)) {
                return Some((id, d));
            }
        }
    }
    serde_json::from_slice::<Accepted<'_>>(body)
        .ok()
        .map(|a| (a.id, a.duplicate))
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
        distinct: 0,
        errors: BTreeMap::new(),
        accepted: 0,
        duplicates: 0,
        resent: 0,
        wrapped: 0,
        ids: Vec::new(),
        dup_ids: Vec::new(),
    };
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (k as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
    let mut last_seq: Option<u64> = None;
    let slot = &shared.slots[k];
    let mut conn: Option<TcpStream> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut id = String::with_capacity(32);
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
        if conn.is_none() {
            match connect(shared.addr, slot).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    err(&mut s, "connect");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(stream) = conn.as_mut() else {
            continue;
        };
        let dup_of = match last_seq {
            Some(prev) if shared.dup_ratio > 0.0 && next_rand(&mut rng) < shared.dup_ratio => {
                Some(prev)
            }
            _ => None,
        };
        let (wire, id_seq, wrapped) = shared.corpus.pick(seq, dup_of);
        shared.corpus.write_id(&mut id, id_seq);
        if wrapped {
            s.wrapped += 1;
        }
        match dup_of {
            None => last_seq = Some(seq),
            Some(_) => s.resent += 1,
        }
        let sent = Instant::now();
        let stamp = shared.stamp(sent);
        slot.sent.store(stamp, Ordering::Release);
        let res = exchange(stream, wire.parts(id.as_bytes()), &mut buf).await;
        let done = Instant::now();
        // The watchdog may have given up on this request (and shut its socket).
        let in_time = slot
            .sent
            .compare_exchange(stamp, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !in_time {
            slot.sent.store(IDLE, Ordering::Release);
            hang_up(&mut conn, slot);
            err(&mut s, "timeout");
            continue;
        }
        let began = intended.unwrap_or(sent);
        match res {
            Ok(answer) => {
                let status = answer.status;
                if began >= shared.measure_from {
                    s.measured += 1;
                    if dup_of.is_none() {
                        s.distinct += 1;
                    }
                    *s.status.entry(status).or_default() += 1;
                    s.hist
                        .saturating_record((done - began).as_micros().max(1) as u64);
                    if let Some(t) = intended {
                        s.lag
                            .saturating_record((sent - t).as_micros().max(1) as u64);
                    }
                }
                if status == 200 {
                    if let Some((id, duplicate)) = parse_answer(&buf[answer.body.0..answer.body.1])
                    {
                        if duplicate {
                            s.duplicates += 1;
                        } else {
                            s.accepted += 1;
                        }
                        if shared.keep_ids {
                            if let Ok(id) = ulid::Ulid::from_string(id) {
                                if duplicate {
                                    s.dup_ids.push(id.0);
                                } else {
                                    s.ids.push(id.0);
                                }
                            }
                        }
                    }
                }
                if answer.close {
                    // As with hyper: the connection is gone, which costs an `io` error.
                    hang_up(&mut conn, slot);
                    err(&mut s, "io");
                }
            }
            Err(what) => {
                hang_up(&mut conn, slot);
                err(&mut s, what);
            }
        }
    }
    hang_up(&mut conn, slot);
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
    let mut tally = Tally::new(accepted, dup_answers);
    let mut pos: HashMap<i32, i64> = parts.iter().map(|p| (*p, 0)).collect();
    eprintln!("watermarks of {topic}: low {low_marks:?}, high {high:?}");
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
        tally.record(id, delivery);
    }
    if past_high > 0 {
        eprintln!(
            "note: {past_high} record(s) were served past the high watermark the broker reported"
        );
    }
    let missing_ids = tally.missing();
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
            "{} accepted id(s) are not in {topic} (run's ids span {oldest:?}..{newest:?} ms); first ones:",
            missing_ids.len()
        );
        for id in missing_ids.iter().take(10) {
            let u = ulid::Ulid(*id);
            eprintln!("  {u} accepted at {} ms", u.timestamp_ms());
        }
    }
    Ok(tally.check(topic))
}

/// What `--verify-kafka` counts while it reads the topic: the records that carry one of
/// this run's ids, how often each id was seen, and under which delivery ids.
struct Tally<'a> {
    /// Ids answered `"duplicate":false`: each must be in the topic.
    accepted: &'a [u128],
    /// Those and the ids answered `"duplicate":true` (records of this run).
    ours: HashSet<u128>,
    seen: HashMap<u128, u32>,
    deliveries: HashMap<String, HashSet<u128>>,
    records: u64,
    records_of_run: u64,
}

impl<'a> Tally<'a> {
    fn new(accepted: &'a [u128], dup_answers: &[u128]) -> Tally<'a> {
        Tally {
            accepted,
            ours: accepted.iter().chain(dup_answers).copied().collect(),
            seen: HashMap::with_capacity(accepted.len()),
            deliveries: HashMap::new(),
            records: 0,
            records_of_run: 0,
        }
    }

    /// One record read: its `hookgate-id` (`None` if it has none, as the nudge markers and
    /// other producers' records) and its delivery id.
    fn record(&mut self, id: Option<u128>, delivery: Option<String>) {
        self.records += 1;
        let Some(id) = id.filter(|id| self.ours.contains(id)) else {
            return;
        };
        self.records_of_run += 1;
        *self.seen.entry(id).or_default() += 1;
        if let Some(d) = delivery {
            self.deliveries.entry(d).or_default().insert(id);
        }
    }

    /// The accepted ids no record carried, in the order they were answered.
    fn missing(&self) -> Vec<u128> {
        self.accepted
            .iter()
            .filter(|id| !self.seen.contains_key(id))
            .copied()
            .collect()
    }

    fn check(&self, topic: &str) -> KafkaCheck {
        KafkaCheck {
            topic: topic.into(),
            records: self.records,
            records_of_run: self.records_of_run,
            missing: self.missing().len() as u64,
            written_twice: self.seen.values().filter(|n| **n > 1).count() as u64,
            delivery_ids_twice: self.deliveries.values().filter(|s| s.len() > 1).count() as u64,
        }
    }
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
        "answers      {} accepted, {} duplicate (whole run; {} sends re-sent an earlier delivery id)",
        r.accepted, r.duplicates, r.resent
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    const HOST: &str = "127.0.0.1:8080";
    const NONCE: u64 = 0x1234_5678_9abc;

    /// The request this generator handed hyper before it wrote its own bytes.
    fn hyper_request(
        entry: &SignedRequest,
        id_header: Option<&HeaderName>,
        id: &str,
    ) -> http::Request<Full<Bytes>> {
        let mut b = http::Request::post(entry.path.as_str());
        let h = b.headers_mut().expect("valid request");
        h.insert(http::header::HOST, HeaderValue::from_static(HOST));
        for (k, v) in &entry.headers {
            h.insert(k.clone(), v.clone());
        }
        if let Some(name) = id_header {
            h.insert(name.clone(), HeaderValue::try_from(id).expect("valid id"));
        }
        b.body(Full::new(entry.body.clone()))
            .expect("valid request")
    }

    /// A corpus of `n` entries for `name`, and the signed requests it was made of.
    fn corpus_of(name: &str, n: u64) -> (Corpus, Vec<SignedRequest>) {
        let p = Provider::parse(name).expect("provider");
        let id_header = corpus::unsigned_id_header(p);
        let host = HeaderValue::from_static(HOST);
        let mut signed = Vec::new();
        let mut entries = Vec::new();
        for seq in 0..n {
            let id = corpus::delivery_id(p, NONCE, seq);
            let r = corpus::signed_request(
                p,
                corpus::default_secret(p),
                1024,
                &id,
                1_714_564_800,
                "/hooks/x",
            )
            .expect("signed");
            entries.push(Wire::serialize(&r, &host, id_header.as_ref(), &id).expect("wire"));
            signed.push(r);
        }
        let c = Corpus {
            provider: p,
            entries,
            id_header: id_header.is_some(),
            nonce: NONCE,
        };
        (c, signed)
    }

    /// The bytes the generator writes for (`seq`, `dup_of`), and the entry and delivery
    /// id they must carry.
    fn send_bytes(c: &Corpus, seq: u64, dup_of: Option<u64>) -> (Vec<u8>, u64, bool) {
        let (wire, id_seq, wrapped) = c.pick(seq, dup_of);
        let mut id = String::new();
        c.write_id(&mut id, id_seq);
        (wire.parts(id.as_bytes()).concat(), id_seq, wrapped)
    }

    #[test]
    fn pre_serialized_requests_parse_back_to_the_signed_ones() {
        for name in corpus::providers() {
            let (c, signed) = corpus_of(name, 3);
            let id_header = corpus::unsigned_id_header(c.provider);
            for (seq, dup_of) in [(0, None), (2, None), (5, None), (7, Some(4)), (9, Some(1))] {
                let (bytes, id_seq, _) = send_bytes(&c, seq, dup_of);
                let entry = &signed[(id_seq % 3) as usize];
                let id = corpus::delivery_id(c.provider, NONCE, id_seq);
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut req = httparse::Request::new(&mut headers);
                let n = match req.parse(&bytes) {
                    Ok(httparse::Status::Complete(n)) => n,
                    other => panic!("{name}: {other:?}"),
                };
                assert_eq!(req.method, Some("POST"), "{name}");
                assert_eq!(req.path, Some(entry.path.as_str()), "{name}");
                assert_eq!(req.version, Some(1), "{name}");
                let got: Vec<(String, Vec<u8>)> = req
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), h.value.to_vec()))
                    .collect();
                let mut want = vec![("host".to_owned(), HOST.as_bytes().to_vec())];
                for (k, v) in &entry.headers {
                    let v = match &id_header {
                        Some(h) if h == k => id.as_bytes().to_vec(),
                        _ => v.as_bytes().to_vec(),
                    };
                    want.push((k.as_str().to_owned(), v));
                }
                want.push((
                    "content-length".to_owned(),
                    entry.body.len().to_string().into_bytes(),
                ));
                assert_eq!(got, want, "{name} seq {seq} dup_of {dup_of:?}");
                assert_eq!(&bytes[n..], &entry.body[..], "{name}");
            }
        }
    }

    #[test]
    fn picks_entries_ids_and_wraps_as_before() {
        let (c, _) = corpus_of("stripe", 3);
        assert!(!c.id_header);
        assert_eq!(c.pick(2, None).1, 2);
        assert!(!c.pick(2, None).2);
        let (_, id_seq, wrapped) = c.pick(3, None);
        assert_eq!((id_seq, wrapped), (3, true));
        assert!(std::ptr::eq(c.pick(3, None).0, &c.entries[0]));
        // A duplicate send never counts as a wrap.
        let (wire, id_seq, wrapped) = c.pick(8, Some(4));
        assert_eq!((id_seq, wrapped), (4, false));
        assert!(std::ptr::eq(wire, &c.entries[1]));
        let (g, _) = corpus_of("github", 3);
        let (wire, id_seq, wrapped) = g.pick(1000, None);
        assert_eq!((id_seq, wrapped), (1000, false));
        assert!(std::ptr::eq(wire, &g.entries[1]));
        let (bytes, _, _) = send_bytes(&g, 1000, None);
        let id = corpus::delivery_id(g.provider, NONCE, 1000);
        let line = format!("\r\nx-github-delivery: {id}\r\n");
        assert!(bytes.windows(line.len()).any(|w| w == line.as_bytes()));
    }

    /// Byte for byte what hyper's HTTP/1.1 client wrote for the same send.
    #[tokio::test]
    async fn pre_serialized_requests_are_the_bytes_hyper_wrote() {
        for name in ["github", "stripe", "standard-webhooks", "telegram"] {
            let (c, signed) = corpus_of(name, 2);
            let id_header = corpus::unsigned_id_header(c.provider);
            for (seq, dup_of) in [(0, None), (3, None), (5, Some(2))] {
                let (ours, id_seq, _) = send_bytes(&c, seq, dup_of);
                let id = corpus::delivery_id(c.provider, NONCE, id_seq);
                let req = hyper_request(&signed[(id_seq % 2) as usize], id_header.as_ref(), &id);
                let (client, mut server) = tokio::io::duplex(1 << 20);
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
                        .await
                        .expect("handshake");
                let driver = tokio::spawn(conn);
                let send = tokio::spawn(async move { sender.send_request(req).await });
                let mut theirs = vec![0u8; ours.len()];
                tokio::time::timeout(Duration::from_secs(5), server.read_exact(&mut theirs))
                    .await
                    .expect("hyper wrote as many bytes")
                    .expect("hyper's bytes");
                assert_eq!(
                    String::from_utf8_lossy(&theirs),
                    String::from_utf8_lossy(&ours),
                    "{name} seq {seq}"
                );
                send.abort();
                driver.abort();
            }
        }
    }

    #[test]
    fn answer_heads() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 52\r\ndate: x\r\n\r\n{";
        let head = parse_head(ok).expect("valid").expect("complete");
        assert_eq!(
            head,
            Head {
                len: ok.len() - 1,
                status: 200,
                body: Some(52),
                close: false
            }
        );
        assert_eq!(parse_head(&ok[..20]), Ok(None));
        let close =
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n";
        let head = parse_head(close).expect("valid").expect("complete");
        assert!(head.close);
        assert_eq!((head.status, head.body), (503, Some(0)));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(
            parse_head(chunked).expect("valid").expect("complete").body,
            None
        );
        let unframed = b"HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(
            parse_head(unframed).expect("valid").expect("complete").body,
            None
        );
        let empty = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            parse_head(empty).expect("valid").expect("complete").body,
            Some(0)
        );
        let old = b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(parse_head(old).expect("valid").expect("complete").close);
        assert!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
    }

    #[test]
    fn answer_bodies() {
        let id = ulid::Ulid(7).to_string();
        let yes = format!("{{\"id\":\"{id}\",\"duplicate\":true}}");
        let no = format!("{{\"id\":\"{id}\",\"duplicate\":false}}");
        assert_eq!(parse_answer(yes.as_bytes()), Some((id.as_str(), true)));
        assert_eq!(parse_answer(no.as_bytes()), Some((id.as_str(), false)));
        let spaced = format!("{{ \"duplicate\": true, \"id\": \"{id}\" }}");
        assert_eq!(parse_answer(spaced.as_bytes()), Some((id.as_str(), true)));
        assert_eq!(parse_answer(b"{\"error\":\"x\"}"), None);
        assert_eq!(parse_answer(b""), None);
    }

    #[test]
    fn the_kafka_tally_counts_missing_twice_and_split_deliveries() {
        let accepted = [1u128, 2, 3, 4];
        let dup_answers = [2u128];
        let mut t = Tally::new(&accepted, &dup_answers);
        let d = |s: &str| Some(s.to_owned());
        // 1: once. 2: written twice (a producer retry). 3: missing. 4: under delivery
        // "d4", and a foreign id 9 also under "d4" does not count (not this run's).
        t.record(Some(1), d("d1"));
        t.record(Some(2), d("d2"));
        t.record(Some(2), d("d2"));
        t.record(Some(4), d("d4"));
        t.record(Some(9), d("d4"));
        t.record(None, None); // a nudge marker
        let c = t.check("t");
        assert_eq!(t.missing(), vec![3]);
        assert_eq!(
            (c.records, c.records_of_run, c.missing, c.written_twice),
            (6, 4, 1, 1)
        );
        assert_eq!(c.delivery_ids_twice, 0);
        // The same delivery under two of this run's ids: a dedupe failure.
        t.record(Some(3), d("d1"));
        let c = t.check("t");
        assert_eq!((c.missing, c.delivery_ids_twice), (0, 1));
        assert!(t.missing().is_empty());
    }
}
