//! Criterion benches of every stage of hookgate's request path, on 1 KB and 64 KB bodies:
//!
//! - `verify/<provider>/<size>`: `Verifier::verify` per provider (HMAC, tokens, Ed25519);
//! - `verify/hmac-sha256-only/<size>`: ring's HMAC of the body alone, the floor under
//!   `verify/github`; `verify/hmac-sha256-only/1KB+56B`: of 1 KB + 56 bytes, the floor of
//!   the schemes whose signed prefix adds a SHA-256 block (Twitch, HubSpot v3);
//! - `extract/{header,simd-json-pointer,serde_json-pointer}/<size>`: delivery id / event /
//!   partition key from headers only; from a JSON pointer with simd-json into the reused
//!   scratch buffer (`Extractor`); and `serde_json::from_slice::<Value>` + `pointer()` as
//!   the comparison;
//! - `dedupe/{miss-insert,hit,miss-insert-2-threads,hit-2-threads}`: `Dedupe::admit`
//!   (independent of body size, so measured once);
//! - `kafka-record/<size>`: `Event::record_headers` + rdkafka `OwnedHeaders` and
//!   `FutureRecord` construction, no send;
//! - `spool/append-<N>-appenders/<size>`: per-append cost of `Spool::append` (write + group
//!   commit fdatasync) with N concurrent appenders, in a temp dir under `target/`;
//! - `spool-vs-redb/{append-1-appender,append-16-appenders,read-10k}/{spool,redb}`: the
//!   spool against redb (an embedded B-tree store) holding the same 1 KB `Event::encode`
//!   frames keyed by a u64 sequence, `Durability::Immediate`, both in temp dirs under
//!   `target/`. Appends: per-append wall time (criterion's `elem/s` is appends/s) with 1
//!   appender (one commit per append) and 16 concurrent appenders (the spool's own group
//!   commit; for redb a writer thread that drains a channel and commits one write
//!   transaction per batch, the same shape as the spool's writer). `read-10k`: read back
//!   10,000 records in order and decode them into `Event`s (warm page cache);
//! - `handler/<size>`: `App::handle` end to end with no socket and `Log::Discard`, each
//!   request a new delivery id, the source on hookgate's defaults (the delivery id from its
//!   header is also the partition key, so the body is not parsed);
//!   `handler/duplicate-1KB`: the dedupe-hit path; `handler/json-key-1KB`: with
//!   `partition_key = "/repository/full_name"`, i.e. plus one simd-json parse of the body;
//!   `handler/own-body-1KB` vs `handler/body-digest-1KB`: a body of its own per request,
//!   without and with the replay defence (`dedupe_body`: SHA-256 of the body, a second
//!   dedupe key), so their difference is the defence's cost;
//!   `handler-prometheus/1KB`: the same with the Prometheus recorder installed, as in
//!   `hookgate serve` (runs last, because the recorder is process-global).
//!
//! Run all: `cargo bench -p hookgate-bench --bench stages`; one group:
//! `cargo bench -p hookgate-bench --bench stages -- verify/github`. Medians land in
//! `target/criterion/<id>/new/estimates.json`, which `budgets` reads.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hookgate_bench::corpus::{self, SignedRequest};
use hookgate_ingest::config::Config;
use hookgate_ingest::dedupe::Dedupe;
use hookgate_ingest::extract::{Extractor, FieldSpec};
use hookgate_ingest::server::App;
use hookgate_ingest::verify::{Provider, Verifier};
use hookgate_proto::{Event, Ulid};
use hookgate_sinks::log::spool::{Spool, SpoolConfig};
use hookgate_sinks::units::ByteSize;
use hookgate_sinks::Log;
use http::HeaderMap;
use http_body_util::Full;
use rdkafka::producer::FutureRecord;
use redb::{Database, Durability, ReadableDatabase as _, TableDefinition};
use std::hint::black_box;

// The `hookgate` binary's allocator, so allocation costs here are the ones it pays.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [(usize, &str); 2] = [(1024, "1KB"), (64 << 10, "64KB")];
/// The signing time of every request (verification uses the same `now`).
const NOW: i64 = 1_714_564_800;

fn header_map(r: &SignedRequest) -> HeaderMap {
    let mut hm = HeaderMap::new();
    for (k, v) in &r.headers {
        hm.insert(k.clone(), v.clone());
    }
    hm
}

fn provider(name: &str) -> Provider {
    Provider::parse(name).expect("known provider")
}

fn signed(p: Provider, size: usize, path: &str) -> SignedRequest {
    let id = corpus::delivery_id(p, 1, 1);
    corpus::signed_request(p, corpus::default_secret(p), size, &id, NOW, path)
        .expect("sign a bench request")
}

fn verify(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify");
    for name in corpus::providers() {
        let p = provider(name);
        let secret = corpus::config_secret(p, corpus::default_secret(p)).expect("secret");
        let v = Verifier::with_options(p, &[secret], corpus::options(p)).expect("verifier");
        for (size, label) in SIZES {
            let r = signed(p, size, "/");
            let hm = header_map(&r);
            v.verify(&hm, &r.body, NOW)
                .expect("the bench request verifies");
            g.throughput(Throughput::Bytes(r.body.len() as u64));
            g.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter(|| v.verify(black_box(&hm), black_box(&r.body), NOW))
            });
        }
    }
    // The floor under `github`: ring's HMAC-SHA256 of the same body with a prepared key,
    // no header lookup, hex decoding or comparison (SHA-NI bound on this CPU).
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, corpus::HMAC_SECRET.as_bytes());
    for (size, label) in SIZES {
        let r = signed(provider("github"), size, "/");
        g.throughput(Throughput::Bytes(r.body.len() as u64));
        g.bench_function(BenchmarkId::new("hmac-sha256-only", label), |b| {
            b.iter(|| ring::hmac::sign(&key, black_box(&r.body)))
        });
    }
    // The second floor: schemes that sign 56 bytes besides a 1 KB body (Twitch's message id
    // and timestamp, HubSpot v3's method, URL and timestamp) cross into one more SHA-256
    // block than the body alone; this is the HMAC of exactly that many bytes.
    let r = signed(provider("github"), 1024, "/");
    let mut longer = r.body.to_vec();
    longer.extend_from_slice(&[b'x'; 56]);
    g.throughput(Throughput::Bytes(longer.len() as u64));
    g.bench_function(BenchmarkId::new("hmac-sha256-only", "1KB+56B"), |b| {
        b.iter(|| ring::hmac::sign(&key, black_box(&longer)))
    });
    g.finish();
}

fn extract(c: &mut Criterion) {
    let mut g = c.benchmark_group("extract");
    let header = Extractor::new(provider("github"), None, None, None);
    let pointer = Extractor::new(
        provider("github"),
        None,
        None,
        Some(FieldSpec::parse("/repository/full_name").expect("pointer")),
    );
    for (size, label) in SIZES {
        let r = signed(provider("github"), size, "/");
        let hm = header_map(&r);
        assert!(pointer.extract(&hm, &r.body).is_ok());
        g.throughput(Throughput::Bytes(r.body.len() as u64));
        g.bench_function(BenchmarkId::new("header", label), |b| {
            b.iter(|| header.extract(black_box(&hm), black_box(&r.body)))
        });
        g.bench_function(BenchmarkId::new("simd-json-pointer", label), |b| {
            b.iter(|| pointer.extract(black_box(&hm), black_box(&r.body)))
        });
        g.bench_function(BenchmarkId::new("serde_json-pointer", label), |b| {
            b.iter(|| {
                // The same three fields, the body parsed by serde_json into a Value.
                let hm = black_box(&hm);
                let delivery = hm
                    .get("x-github-delivery")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let event = hm
                    .get("x-github-event")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let v: serde_json::Value =
                    serde_json::from_slice(black_box(&r.body)).expect("json");
                let key = v
                    .pointer("/repository/full_name")
                    .and_then(|v| v.as_str())
                    .map(|s| Bytes::copy_from_slice(s.as_bytes()));
                (delivery, event, key)
            })
        });
    }
    g.finish();
}

/// Writes `n` as 16 hex digits into `buf`: a unique key without `format!`'s cost.
fn hex_key(n: u64, buf: &mut [u8; 16]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    std::str::from_utf8(buf).unwrap_or("0")
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn dedupe(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedupe");
    let rt = current_thread();
    let d = Dedupe::new(1_000_000, Duration::from_secs(24 * 3600));
    let next = Arc::new(AtomicU64::new(1));
    let ok = |id: Ulid| async move { Ok::<_, ()>(id) };
    let id = Ulid::new();
    // Each iteration admits a delivery id never seen before.
    let miss_insert = |d: &Dedupe, iters: u64| {
        rt.block_on(async {
            let mut buf = [0u8; 16];
            let first = next.fetch_add(iters, Ordering::Relaxed);
            let t = Instant::now();
            for i in first..first + iters {
                let key = hex_key(i, &mut buf);
                black_box(d.admit(0, key, ok(id)).await.expect("admit"));
            }
            t.elapsed()
        })
    };
    g.bench_function("miss-insert", |b| {
        b.iter_custom(|iters| miss_insert(&d, iters))
    });
    // The same with a set small enough to stay in the CPU caches: the difference to
    // miss-insert is what a million remembered ids cost in memory latency.
    let small = Dedupe::new(10_000, Duration::from_secs(24 * 3600));
    g.bench_function("miss-insert-10k", |b| {
        b.iter_custom(|iters| miss_insert(&small, iters))
    });
    rt.block_on(d.admit(0, "hot", ok(id))).expect("admit");
    g.bench_function("hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(d.admit(0, "hot", ok(id)).await.expect("admit"));
                }
                t.elapsed()
            })
        })
    });
    // Two threads admitting at once into one cache; time per iteration = one admit on
    // each thread.
    let two = |hot: bool| {
        let d = d.clone();
        let next = next.clone();
        move |iters: u64| {
            let barrier = Barrier::new(3);
            let first = next.fetch_add(2 * iters, Ordering::Relaxed);
            std::thread::scope(|s| {
                for t in 0..2u64 {
                    let (d, barrier) = (&d, &barrier);
                    s.spawn(move || {
                        let rt = current_thread();
                        barrier.wait();
                        rt.block_on(async {
                            let mut buf = [0u8; 16];
                            for i in 0..iters {
                                let key = if hot {
                                    "hot"
                                } else {
                                    hex_key(first + 2 * i + t, &mut buf)
                                };
                                black_box(d.admit(0, key, ok(id)).await.expect("admit"));
                            }
                        });
                        barrier.wait();
                    });
                }
                barrier.wait();
                let t = Instant::now();
                barrier.wait();
                t.elapsed()
            })
        }
    };
    g.bench_function("miss-insert-2-threads", |b| b.iter_custom(two(false)));
    g.bench_function("hit-2-threads", |b| b.iter_custom(two(true)));
    g.finish();
}

fn event(size: usize) -> Event {
    let r = signed(provider("github"), size, "/");
    Event {
        id: Ulid::new(),
        source: Arc::from("github"),
        provider: Arc::from("github"),
        topic: Arc::from("webhooks.github"),
        event_type: "push".into(),
        delivery_id: r.delivery_id.clone(),
        key: Bytes::from_static(b"octo-org/hello-world"),
        received_at_ms: NOW * 1000,
        content_type: Some("application/json".into()),
        kept_headers: Vec::new(),
        body: r.body,
    }
}

fn kafka_record(c: &mut Criterion) {
    let mut g = c.benchmark_group("kafka-record");
    for (size, label) in SIZES {
        let ev = event(size);
        g.throughput(Throughput::Bytes(ev.body.len() as u64));
        g.bench_function(label, |b| {
            b.iter(|| {
                let ev = black_box(&ev);
                let oh = hookgate_sinks::log::kafka::record_headers(ev, 0);
                let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&ev.topic)
                    .payload(&ev.body[..])
                    .key(&ev.key[..])
                    .headers(oh);
                black_box(record);
            })
        });
    }
    g.finish();
}

/// Where spool benches put their files: on the disk `target/` is on (a tmpfs would make
/// fsync free and the number meaningless).
fn spool_parent() -> std::path::PathBuf {
    let dir = option_env!("CARGO_TARGET_TMPDIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The two-worker runtime the async stages run on (the machine has 2 cores).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn spool(c: &mut Criterion) {
    let mut g = c.benchmark_group("spool");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    let rt = runtime();
    let parent = spool_parent();
    for (size, label) in SIZES {
        let ev = Arc::new(event(size));
        for n in [1u64, 16, 64] {
            g.bench_function(
                BenchmarkId::new(format!("append-{n}-appenders"), label),
                |b| {
                    b.iter_custom(|iters| {
                        // A fresh spool per sample keeps the files small; deleted after.
                        let (spool, _dir) = Store::create("spool", &parent);
                        spool.append_many(&rt, &ev, n, iters)
                    })
                },
            );
        }
    }
    g.finish();
}

/// The redb table of the comparison: sequence number → `Event::encode` frame.
const EVENTS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("events");

struct RedbAppend {
    frame: Vec<u8>,
    done: tokio::sync::oneshot::Sender<Result<u64, String>>,
}

/// redb with the spool's write path: callers encode the frame and hand it to one writer
/// thread, which takes every append queued meanwhile and commits them in one write
/// transaction with `Durability::Immediate` (group commit); each caller then gets its key.
#[derive(Clone)]
struct RedbLog {
    db: Arc<Database>,
    tx: std::sync::mpsc::Sender<RedbAppend>,
}

impl RedbLog {
    fn create(path: &std::path::Path) -> RedbLog {
        let db = Arc::new(Database::create(path).expect("create redb"));
        let w = db.begin_write().expect("redb write txn");
        w.open_table(EVENTS).expect("create redb table");
        w.commit().expect("redb commit");
        let (tx, rx) = std::sync::mpsc::channel::<RedbAppend>();
        let writer = db.clone();
        std::thread::Builder::new()
            .name("redb-writer".into())
            .spawn(move || redb_writer(&writer, &rx))
            .expect("start redb writer");
        RedbLog { db, tx }
    }

    async fn append(&self, ev: &Event) -> u64 {
        let mut frame = Vec::with_capacity(ev.body.len() + 256);
        ev.encode(&mut frame);
        let (done, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(RedbAppend { frame, done })
            .expect("redb writer alive");
        rx.await.expect("redb writer answers").expect("redb append")
    }

    /// Reads the first `n` records in key order, decoded.
    fn read(&self, n: usize) -> Vec<(u64, Event)> {
        let r = self.db.begin_read().expect("redb read txn");
        let t = r.open_table(EVENTS).expect("redb table");
        let mut out = Vec::with_capacity(n);
        for kv in t.range(0u64..).expect("redb range").take(n) {
            let (k, v) = kv.expect("redb record");
            let frame = Bytes::copy_from_slice(v.value());
            out.push((k.value(), Event::decode(&frame).expect("decode")));
        }
        out
    }
}

fn redb_writer(db: &Database, rx: &std::sync::mpsc::Receiver<RedbAppend>) {
    let mut next = 0u64;
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let commit = || -> Result<(), redb::Error> {
            let mut w = db.begin_write()?;
            w.set_durability(Durability::Immediate)?;
            {
                let mut t = w.open_table(EVENTS)?;
                for (i, a) in batch.iter().enumerate() {
                    t.insert(next + i as u64, a.frame.as_slice())?;
                }
            }
            w.commit()?;
            Ok(())
        };
        let res = commit();
        let n = batch.len() as u64;
        for (i, a) in batch.drain(..).enumerate() {
            let _ = a.done.send(match &res {
                Ok(()) => Ok(next + i as u64),
                Err(e) => Err(e.to_string()),
            });
        }
        if res.is_ok() {
            next += n;
        }
    }
}

/// One of the two stores under comparison.
#[derive(Clone)]
enum Store {
    Spool(Spool),
    Redb(RedbLog),
}

impl Store {
    /// A fresh store of `kind` in a new temp dir under `parent` (deleted with the guard).
    fn create(kind: &str, parent: &std::path::Path) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir_in(parent).expect("temp dir");
        let store = match kind {
            "spool" => Store::Spool(
                Spool::open(&SpoolConfig {
                    path: dir.path().to_path_buf(),
                    max_bytes: ByteSize(u64::MAX / 2),
                    segment_bytes: ByteSize(64 << 20),
                    ..SpoolConfig::default()
                })
                .expect("open spool"),
            ),
            _ => Store::Redb(RedbLog::create(&dir.path().join("events.redb"))),
        };
        (store, dir)
    }

    async fn append(&self, ev: &Event) -> u64 {
        match self {
            Store::Spool(s) => s.append(ev).await.expect("spool append"),
            Store::Redb(r) => r.append(ev).await,
        }
    }

    fn read(&self, n: usize) -> Vec<(u64, Event)> {
        match self {
            Store::Spool(s) => s.read(0, n).expect("spool read").0,
            Store::Redb(r) => r.read(n),
        }
    }

    /// `iters` appends of `ev` spread over `n` concurrent tasks; wall time.
    fn append_many(
        &self,
        rt: &tokio::runtime::Runtime,
        ev: &Arc<Event>,
        n: u64,
        iters: u64,
    ) -> Duration {
        rt.block_on(async {
            let t = Instant::now();
            let tasks: Vec<_> = (0..n)
                .map(|j| {
                    let (store, ev) = (self.clone(), ev.clone());
                    let share = iters / n + u64::from(j < iters % n);
                    tokio::spawn(async move {
                        for _ in 0..share {
                            store.append(&ev).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("appender");
            }
            t.elapsed()
        })
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Records in the read-back comparison.
const READ_BACK: usize = 10_000;

fn spool_vs_redb(c: &mut Criterion) {
    let mut g = c.benchmark_group("spool-vs-redb");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    let rt = runtime();
    let parent = spool_parent();
    let ev = Arc::new(event(1024));
    for (n, shape) in [(1u64, "append-1-appender"), (16, "append-16-appenders")] {
        for kind in ["spool", "redb"] {
            g.throughput(Throughput::Elements(1));
            g.bench_function(BenchmarkId::new(shape, kind), |b| {
                b.iter_custom(|iters| {
                    // A fresh store per sample, deleted after; only the appends are timed.
                    let (store, _dir) = Store::create(kind, &parent);
                    let elapsed = store.append_many(&rt, &ev, n, iters);
                    drop(store);
                    elapsed
                })
            });
        }
    }
    for kind in ["spool", "redb"] {
        // Filled the way production fills it (64 concurrent appenders, group commit).
        let (store, dir) = Store::create(kind, &parent);
        store.append_many(&rt, &ev, 64, READ_BACK as u64);
        eprintln!(
            "spool-vs-redb: {kind} holds {READ_BACK} records of {} B bodies in {} bytes on disk",
            ev.body.len(),
            dir_bytes(dir.path())
        );
        assert_eq!(store.read(READ_BACK).len(), READ_BACK);
        g.throughput(Throughput::Elements(READ_BACK as u64));
        g.bench_function(BenchmarkId::new("read-10k", kind), |b| {
            b.iter(|| {
                let recs = store.read(READ_BACK);
                assert_eq!(recs.len(), READ_BACK);
                black_box(recs)
            })
        });
        drop(store);
        drop(dir);
    }
    g.finish();
}

/// The in-process app: one GitHub source on hookgate's defaults plus `extra` TOML lines.
/// (`handler/*` sends one signed body under fresh delivery ids, which the replay defence
/// answers as duplicates, so those apps set `dedupe_body = false`; `body-digest-1KB`
/// measures the defence with a body of its own per request.)
fn build_app(extra: &str) -> Arc<App> {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n{}{extra}",
        corpus::source_toml("github", provider("github"), corpus::HMAC_SECRET).expect("source")
    );
    let (cfg, _) = Config::parse(&text, "bench", &HashMap::new()).expect("bench config");
    Arc::new(App::new(&cfg, Log::Discard, None).expect("app"))
}

/// How the requests of [`handle_iters`] differ from one another.
#[derive(Clone, Copy, PartialEq)]
enum Vary {
    /// A fresh delivery id, the same signed body.
    Id,
    /// The same delivery id every time (the dedupe-hit path).
    Nothing,
    /// A fresh delivery id and a body of its own (signed outside the clock).
    IdAndBody,
}

/// Times `App::handle` on `iters` requests built in chunks outside the clock.
fn handle_iters(
    rt: &tokio::runtime::Runtime,
    app: &Arc<App>,
    r: &SignedRequest,
    next: &AtomicU64,
    iters: u64,
    vary: Vary,
) -> Duration {
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut total = Duration::ZERO;
    let mut done = 0;
    let mut buf = [0u8; 16];
    while done < iters {
        let n = (iters - done).min(1024);
        let first = next.fetch_add(n, Ordering::Relaxed);
        let reqs: Vec<_> = (0..n)
            .map(|i| {
                let own;
                let r = if vary == Vary::IdAndBody {
                    let id = corpus::delivery_id(provider("github"), 2, first + i);
                    own = corpus::signed_request(
                        provider("github"),
                        corpus::HMAC_SECRET,
                        r.body.len(),
                        &id,
                        NOW,
                        &r.path,
                    )
                    .expect("sign");
                    &own
                } else {
                    r
                };
                let mut b = http::Request::post(r.path.as_str());
                let h = b.headers_mut().expect("request builder");
                for (k, v) in &r.headers {
                    h.insert(k.clone(), v.clone());
                }
                let id = if vary == Vary::Nothing {
                    "same"
                } else {
                    hex_key(first + i, &mut buf)
                };
                h.insert(
                    "x-github-delivery",
                    http::HeaderValue::from_str(id).expect("header value"),
                );
                b.body(Full::new(r.body.clone())).expect("request")
            })
            .collect();
        let t = Instant::now();
        rt.block_on(async {
            for req in reqs {
                black_box(app.handle(req, peer).await);
            }
        });
        total += t.elapsed();
        done += n;
    }
    total
}

fn handler_group(c: &mut Criterion, group: &str, sizes: &[(usize, &str)], dup: bool) {
    let rt = current_thread();
    let app = build_app("dedupe_body = false\n");
    let next = AtomicU64::new(1 << 40);
    let mut g = c.benchmark_group(group);
    for &(size, label) in sizes {
        let r = signed(provider("github"), size, "/hooks/github");
        let resp = rt.block_on(
            app.handle(
                http::Request::post("/hooks/github")
                    .body(Full::new(r.body.clone()))
                    .map(|mut q| {
                        *q.headers_mut() = header_map(&r);
                        q
                    })
                    .expect("request"),
                IpAddr::V4(Ipv4Addr::LOCALHOST),
            ),
        );
        assert_eq!(resp.status(), 200, "the bench request is accepted");
        g.throughput(Throughput::Bytes(r.body.len() as u64));
        g.bench_function(label, |b| {
            b.iter_custom(|iters| handle_iters(&rt, &app, &r, &next, iters, Vary::Id))
        });
        if dup && size == 1024 {
            g.bench_function("duplicate-1KB", |b| {
                b.iter_custom(|iters| handle_iters(&rt, &app, &r, &next, iters, Vary::Nothing))
            });
            let keyed =
                build_app("dedupe_body = false\npartition_key = \"/repository/full_name\"\n");
            g.bench_function("json-key-1KB", |b| {
                b.iter_custom(|iters| handle_iters(&rt, &keyed, &r, &next, iters, Vary::Id))
            });
            // The same with a body of its own per request: with and without the replay
            // defence (dedupe on the body's SHA-256), so the pair is its cost.
            let digest = build_app("");
            g.bench_function("own-body-1KB", |b| {
                b.iter_custom(|iters| handle_iters(&rt, &app, &r, &next, iters, Vary::IdAndBody))
            });
            g.bench_function("body-digest-1KB", |b| {
                b.iter_custom(|iters| handle_iters(&rt, &digest, &r, &next, iters, Vary::IdAndBody))
            });
        }
    }
    g.finish();
}

fn handler(c: &mut Criterion) {
    handler_group(c, "handler", &SIZES, true);
}

fn handler_prometheus(c: &mut Criterion) {
    // Process-global: every bench after this one would pay for it too, so it runs last.
    if metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .is_err()
    {
        eprintln!("a metrics recorder is already installed; handler-prometheus measures it");
    }
    handler_group(c, "handler-prometheus", &SIZES[..1], false);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

/// The group lives in a private module so the `pub fn` the macro writes needs no docs.
mod group {
    use super::*;
    criterion_group! {
        name = stages;
        config = config();
        targets = verify, extract, dedupe, kafka_record, spool, spool_vs_redb, handler, handler_prometheus
    }
}
criterion_main!(group::stages);
