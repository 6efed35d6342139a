//! Real processes for the end-to-end tests: a Tansu broker on a free loopback port, the
//! `hookgate` binary with a config written for the test, and Kafka read-back helpers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

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

    fn start_with(storage: &str) -> Broker {
        let mut b = Broker {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            storage: storage.to_owned(),
            child: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).expect("log file");
        let child = Command::new(tansu_bin())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
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

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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
            let _ = Command::new("kill")
                .args(["-STOP", &c.id().to_string()])
                .status();
        }
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Creates a topic (Tansu does not auto-create).
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client");
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
    /// Deletes a topic (as an operator would, while hookgate runs).
    pub async fn delete_topic(&self, name: &str) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client");
        let res = admin
            .delete_topics(
                &[name],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .expect("delete_topics");
        for r in res {
            if let Err((t, e)) = r {
                panic!("delete topic {t}: {e}");
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
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("it-reader-{}", ulid::Ulid::new()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
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
                if out.len() >= min && quiet_since.elapsed() > Duration::from_millis(1500) {
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

/// A running `hookgate serve`. Killed on drop.
pub struct Hookgate {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    pub stderr_log: PathBuf,
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
        Hookgate::start_in(&dir, config, &[])
    }

    /// Like [`Hookgate::start`] in a given directory, with extra environment.
    pub fn start_in(dir: &Path, config: &str, env: &[(&str, &str)]) -> Hookgate {
        let port = free_port();
        let text = config
            .replace("{listen}", &format!("127.0.0.1:{port}"))
            .replace("{dir}", &dir.display().to_string());
        let path = dir.join("hookgate.toml");
        std::fs::write(&path, text).expect("write config");
        let mut h = Hookgate {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: dir.to_path_buf(),
            config: path,
            child: None,
            stderr_log: dir.join("hookgate.log"),
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
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(l)) = lines.next() {
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

    /// SIGTERM; returns the exit status once it stopped.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().expect("wait")
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Runs another `hookgate` subcommand against this instance's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(hookgate_bin())
            .current_dir(&self.dir)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run hookgate")
    }
}

impl Drop for Hookgate {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- hookgate log ---\n{}", self.log());
        }
        self.kill();
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

/// A plain HTTP client for the tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}
