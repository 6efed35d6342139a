//! Real processes for the end-to-end tests: a Tansu broker on a free loopback port, the
//! `hookgate` binary with a config written for the test, and Kafka read-back helpers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

// A submodule (not a sibling in main.rs) so the bench crate, which includes this file by
// path, gets it too.
#[path = "faultproxy.rs"]
pub mod faultproxy;
#[allow(unused_imports)] // the bench crate's copy uses none of it
pub use faultproxy::{Fault, FaultProxy};

/// How long a command that should exit promptly (a CLI call, `kill`) may take before the
/// test gives up on it: a bound, not an expectation of speed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` to completion with its output captured, killing it and failing the test if it
/// has not exited within `within` (a CLI that hangs must fail the test, not stall the suite).
pub fn run(cmd: &mut Command, within: Duration) -> std::process::Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let Some(status) = wait_within(&mut child, within) else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = err.join().unwrap_or_default();
        panic!(
            "{what} did not exit within {within:?}; stderr: {}",
            String::from_utf8_lossy(&stderr)
        )
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Waits for `child` to exit, at most `within`; `None` if it is still running.
pub fn wait_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + within;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => return None,
            Err(e) => panic!("wait for pid {}: {e}", child.id()),
        }
    }
}

/// Sends `SIG<name>` to a child process, failing the test if `kill` fails.
fn signal(child: &Child, name: &str) {
    let out = run(
        Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]),
        COMMAND_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "kill -{name} {}: {}",
        child.id(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed when the test ends, also when it fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_port(port: u16, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Where the Tansu binary is: `$HOOKGATE_TANSU`, `~/.cargo/bin/tansu`, or `tansu` on PATH.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HOOKGATE_TANSU") {
        return PathBuf::from(p);
    }
    if let Ok(home) = std::env::var("HOME") {
        let p = Path::new(&home).join(".cargo/bin/tansu");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("tansu")
}

/// A Tansu broker process. Killed on drop.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    storage: String,
    child: Option<Child>,
    /// When set, the broker advertises this proxy's address in metadata, so every Kafka
    /// client (hookgate's producer, the test's readers) talks to it through the proxy.
    proxy: Option<FaultProxy>,
}

impl Broker {
    /// A broker with in-memory storage.
    pub fn start() -> Broker {
        Broker::start_with("memory://tansu/")
    }

    /// A broker whose data survives a restart (sqlite in its own temp dir).
    pub fn start_persistent() -> Broker {
        Broker::start_with("sqlite://tansu.db")
    }

    /// A broker (in-memory storage) behind a [`FaultProxy`]: it listens on its own port but
    /// advertises the proxy's, so Kafka clients, which connect to the advertised address
    /// after the bootstrap, cannot bypass the faults.
    pub fn start_behind_proxy() -> Broker {
        let port = free_port();
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], port)));
        let mut b = Broker {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            storage: "memory://tansu/".to_owned(),
            child: None,
            proxy: Some(proxy),
        };
        b.spawn();
        b
    }

    fn start_with(storage: &str) -> Broker {
        let mut b = Broker {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            storage: storage.to_owned(),
            child: None,
            proxy: None,
        };
        b.spawn();
        b
    }

    /// The fault proxy in front of a broker from [`Broker::start_behind_proxy`].
    pub fn proxy(&self) -> &FaultProxy {
        self.proxy
            .as_ref()
            .expect("this broker was not started behind a proxy")
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = match &self.proxy {
            Some(p) => format!("tcp://{}", p.addr()),
            None => url.clone(),
        };
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).expect("log file");
        let child = Command::new(tansu_bin())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
                "--storage-engine",
                &self.storage,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the Tansu broker ({}): {e}. Run `bash .ci/run` (or scripts/install-tansu.sh) to install it",
                    tansu_bin().display()
                )
            });
        self.child = Some(child);
        assert!(
            wait_port(self.port, Duration::from_secs(30)),
            "tansu did not listen on {}: {}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
        );
    }

    /// `host:port` for clients: the proxy's when there is one.
    pub fn bootstrap(&self) -> String {
        match &self.proxy {
            Some(p) => p.addr().to_string(),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    /// Stops the broker (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is answered — a hung
    /// broker, without a restart.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal(c, "STOP");
        }
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal(c, "CONT");
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Creates a topic (Tansu does not auto-create).
    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client")
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin = self.admin();
        let res = admin
            .create_topics(
                &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("create_topics");
        for r in res {
            if let Err((t, e)) = r {
                assert_eq!(
                    e,
                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    "create topic {t}"
                );
            }
        }
    }
}

impl Broker {
    /// Deletes `name` (the broker stays up); an unknown topic is not an error.
    pub async fn delete_topic(&self, name: &str) {
        let admin = self.admin();
        let res = admin
            .delete_topics(
                &[name],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("delete_topics");
        for r in res {
            if let Err((t, e)) = r {
                assert_eq!(
                    e,
                    rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
                    "delete topic {t}"
                );
            }
        }
    }

    /// What the broker logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- tansu log tail ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.stop();
    }
}

/// One record read back from Kafka.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Reads every record of `topic` from the beginning until `min` have arrived and no more
/// arrive for a short while, or `within` passes.
pub fn read_topic(bootstrap: &str, topic: &str, min: usize, within: Duration) -> Vec<Record> {
    read_topic_until(bootstrap, topic, within, |recs| recs.len() >= min)
}

/// Reads every record of `topic` from the beginning until `enough` holds for what arrived
/// and no more arrive for a short while (so late extra copies are read too), or `within`
/// passes.
pub fn read_topic_until(
    bootstrap: &str,
    topic: &str,
    within: Duration,
    enough: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("it-reader-{}", ulid::Ulid::new()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka consumer for reading back");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("metadata of {topic} from {bootstrap}: {e}"));
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("tpl");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let end = Instant::now() + within;
    let mut quiet_since = Instant::now();
    while Instant::now() < end {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Record {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            // Transient while a broker restarts; a dead broker shows up as missing records.
            Some(Err(e)) => {
                eprintln!("consume {topic}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            None => {
                if quiet_since.elapsed() > Duration::from_millis(1500) && enough(&out) {
                    break;
                }
            }
        }
    }
    out
}

/// Anything with an address to post to.
pub trait Target {
    /// The base URL plus `path`.
    fn url(&self, path: &str) -> String;
}

/// Just an address of a running hookgate (for tasks that must not own the process).
pub struct HookgateRef(pub SocketAddr);

impl Target for HookgateRef {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.0, path)
    }
}

impl Target for Hookgate {
    fn url(&self, path: &str) -> String {
        Hookgate::url(self, path)
    }
}

/// A running `hookgate serve`. Killed on drop; then every secret of its config must be
/// absent from what it wrote (stdout and stderr), see [`config_secrets`].
pub struct Hookgate {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    pub stderr_log: PathBuf,
    /// Everything the process wrote to stdout (the log scan reads it too).
    pub stdout_log: PathBuf,
    /// The secrets of its config (values of secret-looking keys, `${VAR}` resolved, and the
    /// lines of `*_file`s), checked against its output on drop.
    secrets: Vec<String>,
    /// Made by [`Hookgate::start`]: removed on drop unless the test failed (then it stays
    /// for a look, and its path is in the failure output).
    owned_dir: bool,
}

/// Shortest value the log scan looks for: shorter ones match unrelated text.
pub const MIN_SCANNED_SECRET: usize = 6;

/// Whether a config key names a secret: `secrets`, tokens, passwords, keys, webhook URLs
/// (the URL is the credential), Kafka SASL/SSL passwords.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k == "secrets"
        || k == "webhook_url"
        || k.contains("token")
        || k.contains("password")
        || k.contains("secret")
        || k.contains("api_key")
        || k.contains("passphrase")
        || k.ends_with(".pem")
}

/// Every secret value in a config text: the string values (in lists too) of secret-looking
/// keys anywhere in the TOML, with `${VAR}` / `${VAR:-default}` resolved from `env` then
/// the process environment, plus each line of a `*_file` a secret key points at.
pub fn config_secrets(config: &str, env: &[(&str, &str)]) -> Vec<String> {
    fn resolve(v: &str, env: &[(&str, &str)]) -> String {
        let mut out = String::new();
        let mut rest = v;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(j) = after.find('}') else {
                out.push_str(&rest[i..]);
                return out;
            };
            let (name, default) = match after[..j].split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (&after[..j], None),
            };
            let val = env
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .or_else(|| std::env::var(name).ok())
                .or(default.map(str::to_owned))
                .unwrap_or_default();
            out.push_str(&val);
            rest = &after[j + 1..];
        }
        out.push_str(rest);
        out
    }
    fn walk(
        v: &toml::Value,
        secret: bool,
        file: bool,
        env: &[(&str, &str)],
        out: &mut Vec<String>,
    ) {
        match v {
            toml::Value::String(s) if file => {
                if let Ok(text) = std::fs::read_to_string(resolve(s, env)) {
                    out.extend(
                        text.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(str::to_owned),
                    );
                }
            }
            toml::Value::String(s) if secret => out.push(resolve(s, env)),
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, secret, file, env, out)),
            toml::Value::Table(t) => {
                for (k, x) in t {
                    let (key, is_file) = match k.strip_suffix("_file") {
                        Some(base) => (base, true),
                        None => (k.as_str(), false),
                    };
                    let sec = is_secret_key(key);
                    walk(x, sec && !is_file, sec && is_file, env, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(t) = config.parse::<toml::Table>() {
        walk(&toml::Value::Table(t), false, false, env, &mut out);
    }
    out.retain(|s| s.len() >= MIN_SCANNED_SECRET);
    out.sort();
    out.dedup();
    out
}

/// The secrets of `secrets` found in `text`, for the log scan.
pub fn leaked<'a>(secrets: &'a [String], text: &str) -> Vec<&'a str> {
    secrets
        .iter()
        .filter(|s| text.contains(s.as_str()))
        .map(String::as_str)
        .collect()
}

/// The `hookgate` binary: cargo's, for this package's tests; for the bench package's
/// instrument tests (which include this file), the one built next to them in the same
/// target folder (`cargo test --workspace` builds it).
pub fn hookgate_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_hookgate") {
        return PathBuf::from(p);
    }
    // <target>/<profile>/deps/<test executable> → <target>/<profile>/hookgate
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("hookgate"))
        .expect("target folder");
    assert!(
        bin.exists(),
        "{} is not built: run the whole suite (`cargo test --workspace`) or `cargo build -p hookgate-ingest` first",
        bin.display()
    );
    bin
}

impl Hookgate {
    /// Writes `config` (with `{listen}` and `{dir}` replaced) into a fresh directory and
    /// starts `hookgate serve --config` there.
    pub fn start(config: &str) -> Hookgate {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let mut h = Hookgate::start_in(&dir, config, &[]);
        h.owned_dir = true;
        h
    }

    /// Like [`Hookgate::start`] in a given directory, with extra environment.
    pub fn start_in(dir: &Path, config: &str, env: &[(&str, &str)]) -> Hookgate {
        let port = free_port();
        let text = config
            .replace("{listen}", &format!("127.0.0.1:{port}"))
            .replace("{dir}", &dir.display().to_string());
        let path = dir.join("hookgate.toml");
        std::fs::write(&path, &text).expect("write config");
        let mut h = Hookgate {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.to_path_buf(),
            config: path,
            child: None,
            stderr_log: dir.join("hookgate.log"),
            stdout_log: dir.join("hookgate.stdout"),
            secrets: config_secrets(&text, env),
            owned_dir: false,
        };
        h.spawn(env);
        h
    }

    fn spawn(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)
            .expect("log");
        let mut cmd = Command::new(hookgate_bin());
        cmd.current_dir(&self.dir)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hookgate");
        let stdout = child.stdout.take().expect("stdout");
        let mut copy = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stdout_log)
            .expect("stdout log");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(l)) = lines.next() {
                let _ = writeln!(copy, "{l}");
                if let Some(a) = l.strip_prefix("listening on ") {
                    let _ = tx.send(a.to_owned());
                }
            }
        });
        let got = rx.recv_timeout(Duration::from_secs(60));
        self.child = Some(child);
        if got.is_err() {
            panic!("hookgate did not start: {}", self.log());
        }
    }

    /// The instance's working directory (`{dir}` in its config).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Restarts with the same config and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn(&[]);
    }

    /// The base URL.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM; returns the exit status once it stopped. Fails the test (after a SIGKILL)
    /// if it is still running after `within`: a shutdown that never ends is a bug.
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("hookgate is running");
        signal(&c, "TERM");
        match wait_within(&mut c, within) {
            Some(s) => s,
            None => {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "hookgate did not exit within {within:?} of SIGTERM: {}",
                    self.log()
                )
            }
        }
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Runs another `hookgate` subcommand against this instance's config.
    /// Fails the test if it does not exit within [`COMMAND_TIMEOUT`].
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        run(
            Command::new(hookgate_bin())
                .current_dir(&self.dir)
                .args(args)
                .arg("--config")
                .arg(&self.config),
            COMMAND_TIMEOUT,
        )
    }
}

impl Hookgate {
    /// The secrets of this instance's config the log scan looks for.
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// Everything the process wrote, stdout then stderr.
    pub fn output(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout_log).unwrap_or_default();
        format!("{out}{}", self.log())
    }
}

impl Drop for Hookgate {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- hookgate log ---\n{}", self.log());
        }
        self.kill();
        // The log scan: no configured secret may appear in anything hookgate wrote.
        // (Not while already panicking: a second panic would abort the test binary.)
        if !std::thread::panicking() {
            let output = self.output();
            // Named by their first characters only: the test output is a log too.
            let found: Vec<String> = leaked(&self.secrets, &output)
                .iter()
                .map(|s| format!("{}…", s.chars().take(3).collect::<String>()))
                .collect();
            assert!(
                found.is_empty(),
                "configured secret(s) {found:?} appear in hookgate's output ({} and {})",
                self.stdout_log.display(),
                self.stderr_log.display()
            );
            // Spools of load tests take hundreds of MB: leave nothing behind.
            if self.owned_dir {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        } else {
            eprintln!("hookgate's directory is kept: {}", self.dir.display());
        }
    }
}

/// The headers hookgate's own signer produces for a provider.
pub fn sign(provider: &str, secret: &str, body: &[u8], now: i64) -> HashMap<String, String> {
    let p = hookgate_ingest::verify::Provider::parse(provider).expect("provider");
    hookgate_ingest::verify::sign(p, secret, body, now, None)
        .expect("sign")
        .into_iter()
        .collect()
}

/// Unix seconds now.
pub fn now() -> i64 {
    hookgate_proto::now_ms() / 1000
}

/// How long a test client waits for an answer. Longer than any `delivery_timeout` a test
/// configures, so a timeout means the gateway parked the request instead of answering.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A plain HTTP client for the tests; every request times out after [`CLIENT_TIMEOUT`].
pub fn client() -> reqwest::Client {
    client_with_timeout(CLIENT_TIMEOUT)
}

/// A test client whose requests time out after `timeout` (connects after 5 s).
pub fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .build()
        .expect("client")
}

/// Whether a reconciliation may find more than one record for a delivery id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// No process crashed: exactly one record per delivery id.
    Forbidden,
    /// A process crashed (kill -9): at-least-once, extra copies are counted and reported,
    /// but each must still carry the `hookgate-id` the 2xx returned.
    AllowedAfterCrash,
    /// Deliveries failed while their messages were in flight (a broker paused past
    /// `delivery_timeout`, a fenced producer replaced): such a message may have reached the
    /// broker and was sent again (spooled, or retried by the forwarder). Counted and
    /// reported, same `hookgate-id`.
    AllowedAfterFailedDelivery,
}

/// What a reconciliation found.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// Records in the topic.
    pub records: usize,
    /// Acknowledged delivery ids checked.
    pub acked: usize,
    /// Records beyond the first for their delivery id (acknowledged or not).
    pub duplicates: usize,
    /// Delivery ids in Kafka that never got a 2xx (a 503'd or timed-out attempt that was
    /// written after all); allowed, reported.
    pub unacked_ids: usize,
}

/// Reads `topic` back and checks it against what was acknowledged (`acked`: delivery id ->
/// the `hookgate-id` its 2xx returned): every acknowledged delivery id is there, every record
/// of it carries that `hookgate-id`, and, unless a crash allows them, no delivery id has
/// more than one record. Every problem found goes into one failure message.
pub fn reconcile(
    broker: &Broker,
    topic: &str,
    acked: &HashMap<String, String>,
    dups: Duplicates,
) -> Reconciled {
    reconcile_within(broker, topic, acked, dups, Duration::from_secs(90))
}

/// [`reconcile`], waiting at most `within` for missing records.
pub fn reconcile_within(
    broker: &Broker,
    topic: &str,
    acked: &HashMap<String, String>,
    dups: Duplicates,
    within: Duration,
) -> Reconciled {
    let recs = read_topic_until(&broker.bootstrap(), topic, within, |recs| {
        let seen: std::collections::HashSet<String> = recs
            .iter()
            .filter_map(|r| r.header("hookgate-delivery-id"))
            .collect();
        acked.keys().all(|d| seen.contains(d))
    });
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    let mut unlabelled = 0;
    for r in &recs {
        match r.header("hookgate-delivery-id") {
            Some(d) => per
                .entry(d)
                .or_default()
                .push(r.header("hookgate-id").unwrap_or_default()),
            None => unlabelled += 1,
        }
    }
    let mut missing = Vec::new();
    let mut wrong_id = Vec::new();
    for (d, want) in acked {
        match per.get(d) {
            None => missing.push(d.as_str()),
            Some(ids) if ids.iter().any(|i| i != want) => {
                wrong_id.push(format!("{d}: acked as {want}, in Kafka as {ids:?}"));
            }
            Some(_) => {}
        }
    }
    missing.sort_unstable();
    wrong_id.sort_unstable();
    let mut doubled: Vec<String> = per
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(d, ids)| format!("{d} x{}", ids.len()))
        .collect();
    doubled.sort_unstable();
    let report = Reconciled {
        records: recs.len(),
        acked: acked.len(),
        duplicates: per.values().map(|ids| ids.len() - 1).sum(),
        unacked_ids: per.keys().filter(|d| !acked.contains_key(*d)).count(),
    };
    eprintln!("reconcile {topic}: {report:?}");
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "{} of {} acknowledged delivery ids missing from Kafka, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    if !wrong_id.is_empty() {
        problems.push(format!(
            "{} delivery ids have a record whose hookgate-id is not the one the 2xx returned, e.g. {:?}",
            wrong_id.len(),
            &wrong_id[..wrong_id.len().min(5)]
        ));
    }
    if dups == Duplicates::Forbidden && !doubled.is_empty() {
        problems.push(format!(
            "{} duplicate records without a crash ({} delivery ids written more than once), e.g. {:?}",
            report.duplicates,
            doubled.len(),
            &doubled[..doubled.len().min(5)]
        ));
    }
    if unlabelled > 0 {
        problems.push(format!(
            "{unlabelled} records without a hookgate-delivery-id header"
        ));
    }
    assert!(
        problems.is_empty(),
        "reconcile {topic}: {report:?}\n{}",
        problems.join("\n")
    );
    report
}

/// The sum of every sample of a Prometheus metric whose line starts with `name` (a name,
/// or a name with labels such as `x_total{reason="y"}`), 0 when absent.
pub async fn metric(hg: &Hookgate, name: &str) -> f64 {
    let text = client()
        .get(hg.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    metric_in(&text, name)
}

/// The sum of every sample in Prometheus text `text` whose line starts with `name` (see
/// [`metric`]), 0 when absent.
pub fn metric_in(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A topic name of its own for one test: `it.<name>.<ulid>`.
pub fn topic(name: &str) -> String {
    format!("it.{name}.{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// hookgate with `ack = "kafka"` and a spool as safety net, one `github` source (secret
/// `gh-secret`) on `topic`; `kafka_extra` adds `[kafka]` lines (timeouts).
pub fn spill_config(broker: &Broker, topic: &str, kafka_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"

[kafka]
brokers = "{boot}"
create_topics = true
ack = "kafka"
retry_after_secs = 1
{kafka_extra}

[spool]
path = "{{dir}}/spool"

[dedupe]
capacity = 100000

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]
topic = "{topic}"
"#,
        boot = broker.bootstrap()
    )
}

pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
pub const REDIS_CLI: &str = "/usr/bin/redis-cli";

/// Whether `redis-server` is installed. When it is not: under CI (`CI` set) the test fails
/// (scripts/test.sh installs it); elsewhere it prints a SKIPPED line and returns `false`.
pub fn redis_available() -> bool {
    if Path::new(REDIS_SERVER).exists() && Path::new(REDIS_CLI).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{REDIS_SERVER} is missing under CI: scripts/test.sh installs the `redis-server` package"
    );
    eprintln!("SKIPPED: {REDIS_SERVER} is not installed (apt-get install -y redis-server; scripts/test.sh does it)");
    false
}

/// A `redis-server` on a free loopback port, without persistence (`--save "" --appendonly
/// no`) unless started with [`Redis::start_with`]. Killed on drop.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    /// TLS only (`--port 0 --tls-port`): `ca.pem`, `cert.pem`, `key.pem` are in `dir`.
    tls: bool,
    child: Option<Child>,
}

impl Redis {
    /// A throwaway Redis: nothing is written to disk.
    pub fn start() -> Redis {
        Redis::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// A Redis with extra arguments (e.g. `--requirepass`, or AOF persistence).
    pub fn start_with(args: &[&str]) -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            args: args.iter().map(|s| s.to_string()).collect(),
            tls: false,
            child: None,
        };
        r.spawn();
        r
    }

    /// A throwaway Redis that speaks TLS only (`--port 0 --tls-port P`, clients not asked
    /// for certificates), serving `cert_pem`/`key_pem`; `ca_pem` is what `redis-cli` trusts.
    pub fn start_tls(ca_pem: &str, cert_pem: &str, key_pem: &str, args: &[&str]) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, pem) in [
            ("ca.pem", ca_pem),
            ("cert.pem", cert_pem),
            ("key.pem", key_pem),
        ] {
            std::fs::write(dir.path().join(name), pem).expect("write pem");
        }
        let mut r = Redis {
            port: free_port(),
            dir,
            args: ["--save", "", "--appendonly", "no"]
                .iter()
                .chain(args)
                .map(|s| s.to_string())
                .collect(),
            tls: true,
            child: None,
        };
        r.spawn();
        r
    }

    /// The arguments that say where to listen (and, with TLS, with which certificate).
    fn listen_args(&self) -> Vec<String> {
        let p = |n: &str| self.dir.path().join(n).display().to_string();
        if self.tls {
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                self.port.to_string(),
                "--tls-cert-file".into(),
                p("cert.pem"),
                "--tls-key-file".into(),
                p("key.pem"),
                "--tls-ca-cert-file".into(),
                p("ca.pem"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]
        } else {
            vec!["--port".into(), self.port.to_string()]
        }
    }

    /// `redis-cli` with this server's port, password and TLS settings.
    fn cli_cmd(&self) -> Command {
        let mut c = Command::new(REDIS_CLI);
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "--no-auth-warning",
        ])
        .args(self.auth_args());
        if self.tls {
            c.arg("--tls")
                .arg("--cacert")
                .arg(self.dir.path().join("ca.pem"));
        }
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let child = Command::new(REDIS_SERVER)
            .current_dir(self.dir.path())
            .args(self.listen_args())
            .args(["--bind", "127.0.0.1"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let pong = run(self.cli_cmd().arg("PING"), COMMAND_TIMEOUT);
            if String::from_utf8_lossy(&pong.stdout).contains("PONG") {
                return;
            }
            assert!(
                Instant::now() < end,
                "redis-server did not answer on {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn auth_args(&self) -> Vec<String> {
        let pw = self
            .args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| self.args.get(i + 1));
        match pw {
            Some(p) => vec!["-a".into(), p.clone()],
            None => Vec::new(),
        }
    }

    /// `redis://127.0.0.1:PORT/0` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The path of a file in the server's directory (`ca.pem` for a TLS server).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs one command with `redis-cli` and returns its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = run(self.cli_cmd().args(args), COMMAND_TIMEOUT);
        assert!(
            out.status.success(),
            "redis-cli {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            signal(c, "STOP");
        }
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            signal(c, "CONT");
        }
    }

    /// Stops the server (SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL, then starts it again on the same port, directory and arguments.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- redis log ---\n{}", self.log());
        }
        self.stop();
    }
}

/// A Redis Cluster of `n` masters (no replicas) on free loopback ports, joined with
/// `redis-cli --cluster create` and waited on until every node says `cluster_state:ok`.
/// Each node is a [`Redis`] (killed on drop).
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start(n: usize) -> RedisCluster {
        let nodes: Vec<Redis> = (0..n)
            .map(|_| {
                // The bus port is set: the default (port + 10000) can exceed 65535.
                let bus = free_port().to_string();
                Redis::start_with(&[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    "--cluster-node-timeout",
                    "5000",
                    // Live masters keep serving their slots once a paused one is marked
                    // failed (the default refuses every key then: CLUSTERDOWN).
                    "--cluster-require-full-coverage",
                    "no",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let out = run(
            Command::new(REDIS_CLI)
                .arg("--cluster")
                .arg("create")
                .args(&addrs)
                .args(["--cluster-replicas", "0", "--cluster-yes"]),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let end = Instant::now() + Duration::from_secs(60);
        for r in &nodes {
            while !r.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < end, "cluster_state never ok on {}", r.port);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster { nodes }
    }

    /// The `urls = [...]` value for hookgate's config.
    pub fn urls_toml(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|r| format!("\"{}\"", r.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// The index of the node that holds `key`'s slot: the one node that answers `EXISTS key`
    /// itself instead of `MOVED`.
    pub fn owner(&self, key: &str) -> usize {
        let owners: Vec<usize> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                let out = run(r.cli_cmd().args(["EXISTS", key]), COMMAND_TIMEOUT);
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                !text.contains("MOVED")
            })
            .map(|(i, _)| i)
            .collect();
        assert_eq!(owners.len(), 1, "one owner for {key}: {owners:?}");
        owners[0]
    }
}
