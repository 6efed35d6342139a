//! The measuring instruments, run as people run them: `hookgate-load` against `bare-hyper`
//! and against `hookgate serve` (discard mode, and into a Tansu broker with
//! `--verify-kafka`), and `budgets` over criterion medians and load results. Nothing here
//! asserts a speed: these tests check what the instruments count and report. The one
//! duration checked is a lower bound that a server's deliberate delay guarantees.

#![allow(missing_docs, clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../../tests/it/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{Broker, Hookgate};
use hookgate_bench::replay::{self, Kind};
use hookgate_bench::report::{KafkaCheck, Latency, ProcCpu, RunResult};

/// hookgate-load's arguments for a run with 10% re-sends whose topic is read back.
fn resends_read_back<'a>(bootstrap: &'a str, topic: &'a str) -> [&'a str; 7] {
    [
        "--dup-ratio",
        "0.1",
        "--verify-kafka",
        bootstrap,
        "--topic",
        topic,
        "--verify-nudge",
    ]
}

/// A bench config of this workspace, with its listen address left to the harness.
fn bench_config(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"{listen}\"")
}

/// Runs `hookgate-load` for `requests` requests over `connections` to `url`, no warm-up,
/// with `args` on top (and `--json`); returns its JSON result and its table (stdout).
fn load(url: &str, requests: u32, connections: u32, args: &[&str]) -> (RunResult, String) {
    load_exiting(0, url, requests, connections, args)
}

/// [`load`], expecting exit status `code`.
fn load_exiting(
    code: i32,
    url: &str,
    requests: u32,
    connections: u32,
    args: &[&str],
) -> (RunResult, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let out = harness::run(
        Command::new(env!("CARGO_BIN_EXE_hookgate-load"))
            .args(["--url", url, "--requests", &requests.to_string()])
            .args(["--connections", &connections.to_string()])
            .args(["--warmup", "0s", "--duration", "60s"])
            .args(args)
            .arg("--json")
            .arg(&json),
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "hookgate-load {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (RunResult::load(&json).unwrap(), stdout)
}

/// A `bare-hyper` process: its address, and on [`BareHyper::stop`] what it printed last.
struct BareHyper {
    child: std::process::Child,
    addr: String,
    rest: std::thread::JoinHandle<Vec<String>>,
}

impl BareHyper {
    fn start(extra: &[&str]) -> BareHyper {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bare-hyper"))
            .args(["--listen", "127.0.0.1:0", "--exit-after", "300"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("listening on ") {
                        break a.to_owned();
                    }
                }
                _ => panic!("bare-hyper did not start"),
            }
        };
        let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect());
        BareHyper { child, addr, rest }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/github", self.addr)
    }

    /// SIGTERM; returns what it printed after `listening on`.
    fn stop(mut self) -> Vec<String> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap();
        self.rest.join().unwrap()
    }
}

fn ordered(l: &Latency) -> bool {
    0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max
}

#[test]
fn the_generator_and_bare_hyper_count_the_same_requests() {
    let bare = BareHyper::start(&[]);
    let (r, table) = load(&bare.url(), 300, 4, &["--label", "ceiling"]);
    let said = bare.stop();
    assert_eq!(r.label, "ceiling");
    assert_eq!(r.mode, "closed");
    assert_eq!(r.requests, 300);
    assert_eq!(r.status, BTreeMap::from([("200".to_owned(), 300)]));
    assert_eq!((r.non_2xx, r.errors.values().sum::<u64>()), (0, 0));
    // bare-hyper answers like hookgate (`"duplicate":false`), so every answer parsed.
    assert_eq!((r.accepted, r.duplicates, r.resent), (300, 0, 0));
    assert!(r.rps > 0.0 && r.duration_s > 0.0, "{r:?}");
    assert!(ordered(&r.latency_us), "{:?}", r.latency_us);
    assert!(r.sched_lag_us.is_none() && r.target_rate.is_none());
    assert!(table.contains("req/s"), "{table}");
    // The server saw exactly what the generator sent.
    assert!(
        said.iter()
            .any(|l| l == "requests: received 300, answered 300"),
        "{said:?}"
    );

    // `--report` (run.sh's table): each result as a ratio to the baseline's req/s.
    let dir = tempfile::tempdir().unwrap();
    let half = RunResult {
        label: "half".into(),
        rps: r.rps / 2.0,
        ..r.clone()
    };
    load_result(dir.path(), r);
    load_result(dir.path(), half);
    let out = Command::new(env!("CARGO_BIN_EXE_hookgate-load"))
        .arg("--report")
        .arg(dir.path())
        .args(["--baseline", "ceiling"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    let ratio = |label: &str| {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no {label} row: {report}"));
        row.split(" | ").nth(5).unwrap().to_owned()
    };
    assert_eq!(
        (ratio("ceiling"), ratio("half")),
        ("100.0%".into(), "50.0%".into())
    );
}

#[test]
fn open_loop_latency_counts_from_the_intended_send_time() {
    // One connection, a server that holds each answer 100 ms, and sends intended every
    // 20 ms: request k (from 0) is intended at 20k ms and cannot be answered before
    // (k + 1) * 100 ms, so its latency is at least 100 + 80k ms, whatever the machine.
    // A generator that timed from the actual send would see about 100 ms each.
    let bare = BareHyper::start(&["--delay", "100ms"]);
    let (r, table) = load(&bare.url(), 10, 1, &["--mode", "open", "--rate", "50"]);
    bare.stop();
    assert_eq!(r.mode, "open");
    assert_eq!(r.target_rate, Some(50.0));
    assert_eq!(r.requests, 10);
    assert_eq!(r.status, BTreeMap::from([("200".to_owned(), 10)]));
    assert!(ordered(&r.latency_us), "{:?}", r.latency_us);
    // k = 9: at least 820 ms; the median (k = 4): at least 420 ms.
    assert!(r.latency_us.max >= 820_000, "{:?}", r.latency_us);
    assert!(r.latency_us.p50 >= 420_000, "{:?}", r.latency_us);
    assert!(r.sched_lag_us.is_some(), "{r:?}");
    assert!(table.contains("intended send time"), "{table}");
}

/// `hookgate serve` on the bench's spool config with `HOOKGATE__BENCH__DISCARD=true`, as
/// `bench/run.sh` runs scenario 2.
fn discarding_hookgate(dir: &Path) -> Hookgate {
    let spool = dir.join("spool");
    Hookgate::start_in(
        dir,
        &bench_config("spool.toml"),
        &[
            ("HOOKGATE__BENCH__DISCARD", "true"),
            ("HOOKGATE_BENCH_SPOOL", spool.to_str().unwrap()),
        ],
    )
}

#[test]
fn discard_mode_acknowledges_without_storing_and_the_generator_counts_its_answers() {
    let dir = tempfile::tempdir().unwrap();
    let hg = discarding_hookgate(dir.path());
    assert!(
        hg.log().contains("ACKNOWLEDGED WITHOUT BEING STORED"),
        "no loud warning at start: {}",
        hg.log()
    );
    let url = hg.url("/hooks/github");

    // 1 send in 4 re-sends the connection's previous delivery id, after its answer: each
    // is answered as a duplicate, everything else is accepted.
    let (r, _) = load(&url, 400, 4, &["--dup-ratio", "0.25"]);
    assert_eq!(r.status, BTreeMap::from([("200".to_owned(), 400)]));
    assert!(r.resent > 0, "{r:?}");
    assert_eq!(r.duplicates, r.resent, "{r:?}");
    assert_eq!(r.accepted + r.duplicates, 400, "{r:?}");
    // Acknowledged, never stored: not even the spool folder was made.
    assert!(!dir.path().join("spool").exists());

    // Signed with the wrong secret: every answer is a 401, and the report says so.
    let (r, table) = load(&url, 50, 2, &["--secret", "not-the-secret"]);
    assert_eq!(r.status, BTreeMap::from([("401".to_owned(), 50)]));
    assert_eq!((r.non_2xx, r.accepted, r.duplicates), (50, 0, 0));
    assert!(table.contains("401"), "{table}");

    // `hookgate check` flags the setting.
    let out = Command::new(harness::hookgate_bin())
        .args(["check", "--config"])
        .arg(dir.path().join("hookgate.toml"))
        .env("HOOKGATE__BENCH__DISCARD", "true")
        .env("HOOKGATE_BENCH_SPOOL", dir.path().join("spool"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("bench.discard = true"), "{said}");
}

#[tokio::test]
async fn verify_kafka_finds_every_accepted_id_once_and_reports_ids_never_stored() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();

    // hookgate into Kafka (the bench's scenario 3 config; it creates its topic).
    let topic = "instruments-kafka";
    let dir = tempfile::tempdir().unwrap();
    let hg = Hookgate::start_in(
        dir.path(),
        &bench_config("kafka.toml"),
        &[
            ("HOOKGATE_BENCH_BROKERS", bootstrap.as_str()),
            ("HOOKGATE_BENCH_TOPIC", topic),
        ],
    );
    let (r, table) = load(
        &hg.url("/hooks/github"),
        300,
        8,
        &resends_read_back(&bootstrap, topic),
    );
    assert_eq!(r.status, BTreeMap::from([("200".to_owned(), 300)]));
    assert_eq!(r.duplicates, r.resent, "{r:?}");
    let k = r.kafka.clone().expect("a kafka check");
    assert_eq!(
        (k.missing, k.written_twice, k.delivery_ids_twice),
        (0, 0, 0),
        "{k:?}"
    );
    assert_eq!(k.records_of_run, r.accepted, "{k:?}");
    assert!(k.records > k.records_of_run, "the nudge markers: {k:?}");
    assert!(table.contains("missing 0, written twice 0"), "{table}");
    drop(hg);

    // hookgate in discard mode answers 200 but stores nothing: every accepted id is
    // reported missing from the (existing, empty) topic.
    let empty = "instruments-empty";
    broker.create_topic(empty, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let hg = discarding_hookgate(dir.path());
    // The run's result is still written; the exit status says ids are missing.
    let (r, _) = load_exiting(
        3,
        &hg.url("/hooks/github"),
        40,
        2,
        &["--verify-kafka", &bootstrap, "--topic", empty],
    );
    assert_eq!(r.accepted, 40);
    let k = r.kafka.expect("a kafka check");
    assert_eq!(
        (k.missing, k.records_of_run, k.records),
        (40, 0, 0),
        "{k:?}"
    );
}

/// The Kafka ceiling (`bare-hyper --kafka`, bench/run.sh's kafka-ceiling) really stores
/// what it acknowledges: every answered id is in the topic exactly once, and a re-sent
/// delivery (it has no dedupe) is stored again under a new id, which the read-back reports.
#[tokio::test]
async fn bare_hyper_kafka_stores_every_body_it_acknowledges() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let topic = "instruments-ceiling";
    let bare = BareHyper::start(&["--kafka", &bootstrap, "--topic", topic]);
    let (r, _) = load_exiting(
        3,
        &bare.url(),
        200,
        8,
        &resends_read_back(&bootstrap, topic),
    );
    let said = bare.stop();
    assert_eq!(r.status, BTreeMap::from([("200".to_owned(), 200)]));
    assert!(r.resent > 0, "{r:?}");
    let k = r.kafka.clone().expect("a kafka check");
    assert_eq!((k.missing, k.written_twice), (0, 0), "{k:?}");
    assert_eq!(k.records_of_run, r.accepted, "{k:?}");
    // Counted per delivery id: one re-sent twice counts once.
    assert!(
        0 < k.delivery_ids_twice && k.delivery_ids_twice <= r.resent,
        "{k:?} {r:?}"
    );
    assert!(
        said.iter()
            .any(|l| l == "requests: received 200, answered 200"),
        "{said:?}"
    );
}

/// `bare-hyper --work` spins that long on every request (a lower bound on each latency).
#[test]
fn bare_hyper_work_holds_every_request_at_least_that_long() {
    let bare = BareHyper::start(&["--work", "30ms", "--threads", "1"]);
    let (r, _) = load(&bare.url(), 20, 1, &[]);
    bare.stop();
    assert_eq!(r.status, BTreeMap::from([("200".to_owned(), 20)]));
    assert!(r.latency_us.p50 >= 30_000, "{:?}", r.latency_us);
}

/// Writes criterion's `estimates.json` for `bench` with `median_ns`.
fn criterion_median(target: &Path, bench: &str, median_ns: f64) {
    let dir = target.join("criterion").join(bench).join("new");
    std::fs::create_dir_all(&dir).unwrap();
    let text = serde_json::json!({
        "mean": {"point_estimate": median_ns * 1.1},
        "median": {"point_estimate": median_ns},
    });
    std::fs::write(dir.join("estimates.json"), text.to_string()).unwrap();
}

fn load_result(dir: &Path, r: RunResult) {
    std::fs::write(
        dir.join(format!("{}.json", r.label)),
        serde_json::to_string(&r).unwrap(),
    )
    .unwrap();
}

/// Runs `budgets --skip-bench` on `budgets` with `target` as the target folder; returns
/// the exit code and each budget's verdict by name.
fn budgets(target: &Path, budgets: &str, loads: &Path) -> (i32, BTreeMap<String, String>) {
    let file: PathBuf = target.join("budgets.toml");
    std::fs::write(&file, budgets).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_budgets"))
        .args(["--skip-bench", "--budgets"])
        .arg(&file)
        .arg("--load-results")
        .arg(loads)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let verdicts = stdout
        .lines()
        .skip(2)
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            assert_eq!(cells.len(), 4, "{l}");
            let name = cells[0].split(" (`").next().unwrap().trim().to_owned();
            (name, cells[3].trim().trim_matches('*').to_owned())
        })
        .collect();
    (out.status.code().unwrap(), verdicts)
}

#[test]
fn budgets_compares_medians_and_load_results_with_their_limits() {
    let target = tempfile::tempdir().unwrap();
    let loads = tempfile::tempdir().unwrap();
    criterion_median(target.path(), "verify/github/1KB", 900.0);
    criterion_median(target.path(), "dedupe/hit", 300.0);
    let run = |label: &str, rps: f64, p99_us: u64| RunResult {
        label: label.into(),
        rps,
        latency_us: Latency {
            p99: p99_us,
            ..Latency::default()
        },
        ..RunResult::default()
    };
    let with_cpu = |r: RunResult, name: &str, us: f64| RunResult {
        cpu: vec![ProcCpu {
            name: name.into(),
            cpu_s: 1.0,
            window_s: 1.0,
            us_per_event: us,
        }],
        ..r
    };
    load_result(
        loads.path(),
        with_cpu(run("bare", 50_000.0, 900), "bare-hyper", 20.0),
    );
    load_result(
        loads.path(),
        with_cpu(run("discard", 45_000.0, 1_000), "hookgate", 30.0),
    );
    load_result(
        loads.path(),
        RunResult {
            kafka: Some(KafkaCheck {
                delivery_ids_twice: 1,
                ..KafkaCheck::default()
            }),
            ..with_cpu(run("kafka-twice", 60_000.0, 2_000), "hookgate", 11.0)
        },
    );
    load_result(
        loads.path(),
        RunResult {
            kafka: Some(KafkaCheck {
                missing: 1,
                ..KafkaCheck::default()
            }),
            ..run("kafka", 40_000.0, 2_500)
        },
    );
    load_result(loads.path(), run("unverified", 40_000.0, 2_500));
    let (code, v) = budgets(
        target.path(),
        r#"
load_results = "unused: --load-results wins"

[[stage]]
name = "under"
bench = "verify/github/1KB"
max_ns = 1_000

[[stage]]
name = "over"
bench = "dedupe/hit"
max_ns = 200

[[stage]]
name = "never measured"
bench = "nothing/here"
max_ns = 5

[[load]]
name = "ratio"
scenario = "discard"
ratio_to = "bare"
min_ratio = 0.85

[[load]]
name = "rate and p99 met, one id missing"
scenario = "kafka"
min_rps = 36_000
max_p99_ms = 3.0
max_non_2xx = 0
max_missing = 0

[[load]]
name = "not read back from kafka"
scenario = "unverified"
max_missing = 0

[[load]]
name = "no such run"
scenario = "absent"
min_rps = 1

[[load]]
name = "server CPU 1.5x the baseline's"
scenario = "discard"
ratio_to = "bare"
max_cpu_ratio = 1.3

[[load]]
name = "CPU per event met, a delivery stored twice"
scenario = "kafka-twice"
max_cpu_us = 12.0
max_missing = 0
max_twice = 0

[[load]]
name = "no CPU measured"
scenario = "unverified"
max_cpu_us = 12.0
"#,
        loads.path(),
    );
    let want = [
        ("under", "PASS"),
        ("over", "FAIL"),
        ("never measured", "MISSING"),
        ("ratio", "PASS"),
        ("rate and p99 met, one id missing", "FAIL"),
        ("not read back from kafka", "MISSING"),
        ("no such run", "MISSING"),
        ("server CPU 1.5x the baseline's", "FAIL"),
        ("CPU per event met, a delivery stored twice", "FAIL"),
        ("no CPU measured", "MISSING"),
    ];
    let want: BTreeMap<String, String> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(v, want);
    assert_eq!(code, 1, "a failed budget fails the command");

    // Only budgets that pass: exit 0.
    let (code, v) = budgets(
        target.path(),
        r#"
load_results = "unused"

[[stage]]
name = "under"
bench = "verify/github/1KB"
max_ns = 1_000

[[load]]
name = "ratio"
scenario = "discard"
ratio_to = "bare"
min_ratio = 0.85
max_p99_ms = 1.0
max_cpu_ratio = 1.6

[[load]]
name = "cpu"
scenario = "kafka-twice"
max_cpu_us = 12.0
"#,
        loads.path(),
    );
    assert_eq!(v.values().collect::<Vec<_>>(), ["PASS", "PASS", "PASS"]);
    assert_eq!(code, 0);
}

/// `hookgate-load --write-corpus` into `dir/corpus`.
fn write_corpus(dir: &Path, count: u32, dup_ratio: &str) -> PathBuf {
    let path = dir.join("corpus");
    let out = harness::run(
        Command::new(env!("CARGO_BIN_EXE_hookgate-load"))
            .arg("--write-corpus")
            .arg(&path)
            .args(["--count", &count.to_string(), "--dup-ratio", dup_ratio]),
        Duration::from_secs(240),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The `x-github-delivery` of one serialized request.
fn delivery_of(request: &[u8]) -> String {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    assert!(req.parse(request).unwrap().is_complete());
    let h = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-github-delivery"))
        .unwrap();
    String::from_utf8(h.value.to_vec()).unwrap()
}

#[test]
fn the_corpus_holds_distinct_requests_and_resends_only_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Re-sends start once 32,768 new requests are behind (each re-sends one of the 16,384
    // oldest of them): 40,000 records with 20% re-sends has some.
    let path = write_corpus(dir.path(), 40_000, "0.2");
    let file = std::io::BufReader::new(std::fs::File::open(&path).unwrap());
    let (count, records) = replay::read_corpus(file).unwrap();
    assert_eq!((count, records.len()), (40_000, 40_000));
    let mut seen = std::collections::HashMap::new();
    let mut resends = 0;
    for (i, (kind, bytes)) in records.iter().enumerate() {
        let id = delivery_of(bytes);
        match kind {
            Kind::New => {
                assert!(
                    seen.insert(id, (i, bytes)).is_none(),
                    "record {i}: a repeated new id"
                );
            }
            Kind::Resend => {
                resends += 1;
                let (first, original) = seen
                    .get(&id)
                    .unwrap_or_else(|| panic!("record {i}: re-sends an unknown id"));
                assert_eq!(
                    original, &bytes,
                    "record {i}: a re-send is the same request"
                );
                assert!(
                    i - first >= 16_384,
                    "record {i} re-sends record {first}: too recent"
                );
            }
        }
    }
    assert!(resends > 0 && resends < 40_000 / 4, "{resends} re-sends");
}

/// `hookgate-load --wrk` over `corpus` to `url` for `secs`, no warm-up; its exit code,
/// stdout and JSON result (if written).
fn wrk(corpus: &Path, url: &str, secs: u32, extra: &[&str]) -> (i32, String, Option<RunResult>) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let out = harness::run(
        Command::new(env!("CARGO_BIN_EXE_hookgate-load"))
            .arg("--wrk")
            .arg("--corpus-file")
            .arg(corpus)
            .args(["--url", url, "--warmup", "0s", "--connections", "4"])
            .args(["--duration", &format!("{secs}s"), "--label", "wrk-run"])
            .args(extra)
            .arg("--json")
            .arg(&json),
        Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out.status.code().unwrap_or(-1);
    let result = json.exists().then(|| RunResult::load(&json).unwrap());
    (code, stdout + &String::from_utf8_lossy(&out.stderr), result)
}

fn have_wrk() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

#[test]
fn wrk_replays_the_corpus_once_and_reports_cpu_per_process() {
    if !have_wrk() {
        eprintln!("SKIP: wrk is not installed (apt-get install -y wrk)");
        return;
    }
    let corpus_dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(corpus_dir.path(), 30_000, "0.01");
    let dir = tempfile::tempdir().unwrap();
    let hg = discarding_hookgate(dir.path());
    let pid = hg.pid().unwrap();
    let (code, out, r) = wrk(
        &corpus,
        &hg.url("/hooks/github"),
        1,
        &["--cpu", &format!("hookgate={pid}")],
    );
    assert_eq!(code, 0, "{out}");
    let r = r.expect("a result");
    assert_eq!(r.generator, "wrk");
    // Every record verified (no 401: the Lua script sent the signed bytes whole), none was
    // a duplicate (re-sends only start after 32,768 records), and every one is distinct.
    assert!(r.requests > 0, "{r:?}");
    assert_eq!(
        r.status,
        BTreeMap::from([("200".to_owned(), r.requests)]),
        "{out}"
    );
    assert_eq!(
        (r.duplicates, r.resent, r.corpus_wrapped),
        (0, 0, 0),
        "{r:?}"
    );
    assert_eq!(r.accepted, r.requests, "{r:?}");
    // Sent: answered, plus at most one in flight per connection at the end.
    assert!(
        r.distinct_ids >= r.requests && r.distinct_ids <= r.requests + 4,
        "{r:?}"
    );
    let names: Vec<&str> = r.cpu.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["hookgate", "generator"], "{r:?}");
    for c in &r.cpu {
        assert!(
            c.window_s > 0.5 && c.cpu_s > 0.0 && c.us_per_event > 0.0,
            "{c:?}"
        );
        let per_event = c.cpu_s * 1e6 / r.requests as f64;
        assert!(
            (per_event - c.us_per_event).abs() < 1e-6 * per_event.max(1.0),
            "{c:?}"
        );
    }
}

#[test]
fn a_run_whose_corpus_wrapped_is_refused() {
    if !have_wrk() {
        eprintln!("SKIP: wrk is not installed (apt-get install -y wrk)");
        return;
    }
    let corpus_dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(corpus_dir.path(), 20, "0");
    let bare = BareHyper::start(&[]);
    let (code, out, r) = wrk(&corpus, &bare.url(), 1, &[]);
    bare.stop();
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("REFUSED") && out.contains("wrapped"), "{out}");
    assert!(r.is_none(), "a refused run writes no result: {r:?}");
}
