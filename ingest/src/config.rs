//! The config file: one TOML document, `${VAR}` interpolation, `HOOKGATE__SECTION__KEY`
//! environment overrides, unknown keys rejected, every problem reported with its location.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hookgate_sinks::chat::{ChatConfig, RouteConfig, SinkConfig};
use hookgate_sinks::dispatch;
use hookgate_sinks::log::kafka::KafkaConfig;
use hookgate_sinks::log::spool::SpoolConfig;
use hookgate_sinks::units::ByteSize;
use hookgate_sinks::Secret;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::extract::FieldSpec;
use crate::verify::{
    GenericHmacOptions, GraphOptions, HmacAlgorithm, KeyError, Options, Provider, SigEncoding,
    Verifier,
};

/// Room a record needs beyond its body (key, contract headers, kept headers, framing): the
/// same allowance for a Kafka record as for a spool record.
pub const RECORD_OVERHEAD: u64 = hookgate_sinks::log::spool::FRAME_OVERHEAD;

/// The whole config, validated.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[kafka]`; absent: the spool is the log.
    pub kafka: Option<KafkaConfig>,
    /// `[spool]`; the log when `[kafka]` is absent, the safety net when both are present.
    pub spool: Option<SpoolConfig>,
    /// `[dedupe]`
    pub dedupe: DedupeConfig,
    /// `[dispatch]`
    pub dispatch: DispatchConfig,
    /// `[bench]`
    pub bench: BenchConfig,
    /// `[admin]`; absent: the public listener also serves the probes and metrics.
    pub admin: Option<AdminConfig>,
    /// `[[sources]]`
    pub sources: Vec<SourceConfig>,
    /// `[[sinks]]`
    pub sinks: Vec<SinkConfig>,
    /// `[[routes]]`
    pub routes: Vec<RouteConfig>,
}

/// `[server]`: the HTTP listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted (413 beyond).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: ByteSize,
    /// Time allowed to receive a request's headers (HTTP/1).
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time allowed to receive a request's body (408 beyond).
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Most headers in one request (431 beyond).
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Most requests handled at once (503 + Retry-After beyond).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// How long shutdown waits for in-flight requests.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Most requests in flight from one client address (429 + Retry-After beyond);
    /// default an eighth of `max_concurrency`.
    pub max_in_flight_per_client: Option<usize>,
    /// Most connections open at once (new ones are closed beyond).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections open at once from one client address (trusted proxies exempt).
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// Token bucket per client address over all sources (429 + Retry-After when empty).
    pub rate_limit_per_client: Option<crate::admission::RateLimit>,
    /// Most client addresses whose rate-limit buckets are remembered at once.
    #[serde(default = "default_client_state_capacity")]
    pub client_state_capacity: u64,
    /// A connection with no request in flight for this long is closed (HTTP/1 keep-alive
    /// and HTTP/2 alike).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// HTTP/2: most streams a client may open at once on one connection.
    #[serde(default = "default_h2_max_concurrent_streams")]
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: largest header list (decoded) a client may send.
    #[serde(default = "default_h2_max_header_list_size")]
    pub h2_max_header_list_size: ByteSize,
    /// HTTP/2: interval of keep-alive pings; a connection whose ping is not answered
    /// within `h2_keep_alive_timeout` is closed.
    #[serde(default = "default_h2_keep_alive", with = "humantime_serde")]
    pub h2_keep_alive_interval: Duration,
    /// HTTP/2: how long a keep-alive ping may go unanswered.
    #[serde(default = "default_h2_keep_alive", with = "humantime_serde")]
    pub h2_keep_alive_timeout: Duration,
    /// `[server.tls]`: serve HTTPS on `listen` (the admin listener stays plaintext).
    #[serde(default)]
    pub tls: Option<crate::edge::tls::TlsFiles>,
    /// Peers (CIDR; a bare IP is one host) whose PROXY header and `Forwarded` /
    /// `X-Forwarded-For` headers are believed.
    #[serde(default, deserialize_with = "de_nets")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Every connection must start with a PROXY protocol header from a trusted proxy.
    #[serde(default)]
    pub proxy_protocol: bool,
}

impl ServerConfig {
    /// The admission limits these settings give.
    pub fn admission(&self) -> crate::admission::Limits {
        crate::admission::Limits {
            in_flight_per_client: self
                .max_in_flight_per_client
                .unwrap_or(self.max_concurrency / 8)
                .clamp(1, u32::MAX as usize) as u32,
            connections: self.max_connections.max(1),
            connections_per_client: self.max_connections_per_client.clamp(1, u32::MAX as usize)
                as u32,
            client_rate: self.rate_limit_per_client,
            client_state_capacity: self.client_state_capacity,
        }
    }
}

/// A list of networks where a bare address means that one host (`/32`, `/128`).
fn de_nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{s}` is not an IP address or network (e.g. 10.0.0.0/8, 192.0.2.1, 2001:db8::/32)"
                    ))
                })
        })
        .collect()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_headers() -> usize {
    100
}
fn default_max_concurrency() -> usize {
    4096
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_connections_per_client() -> usize {
    256
}
fn default_client_state_capacity() -> u64 {
    100_000
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_h2_max_concurrent_streams() -> u32 {
    100
}
fn default_h2_max_header_list_size() -> ByteSize {
    ByteSize(16 << 10)
}
fn default_h2_keep_alive() -> Duration {
    Duration::from_secs(20)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body_bytes: default_max_body(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            max_headers: default_max_headers(),
            max_concurrency: default_max_concurrency(),
            shutdown_timeout: default_shutdown_timeout(),
            max_in_flight_per_client: None,
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            rate_limit_per_client: None,
            client_state_capacity: default_client_state_capacity(),
            idle_timeout: default_idle_timeout(),
            h2_max_concurrent_streams: default_h2_max_concurrent_streams(),
            h2_max_header_list_size: default_h2_max_header_list_size(),
            h2_keep_alive_interval: default_h2_keep_alive(),
            h2_keep_alive_timeout: default_h2_keep_alive(),
            tls: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
        }
    }
}

/// `[dedupe]`: the delivery-id cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// How long a delivery id is remembered.
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// Most delivery ids remembered (the oldest accepted forgotten first).
    #[serde(default = "default_capacity")]
    pub capacity: u64,
    /// `[dedupe.redis]`: dedupe shared by every replica; absent, each replica dedupes alone.
    #[serde(default)]
    pub redis: Option<RedisDedupeConfig>,
}

/// `[dedupe.redis]`: the shared store that makes N replicas dedupe as one (see
/// `crate::redis_dedupe`). The URL may carry a password: it is a secret, never logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisDedupeConfig {
    /// `redis://[user:password@]host:port/db`, or `rediss://…` for TLS.
    #[serde(default)]
    pub url: Option<Secret>,
    /// A file holding the URL instead of `url` (a mounted Kubernetes secret).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Redis Cluster: the seed nodes' URLs (with `cluster = true`).
    #[serde(default)]
    pub urls: Vec<Secret>,
    /// Talk Redis Cluster protocol (`urls`, or `url` as the one seed node).
    #[serde(default)]
    pub cluster: bool,
    /// Redis Sentinel: the sentinels' URLs (`redis://host:26379`), with `service_name`.
    /// The master is asked of them, and asked again after a failure (a failover).
    #[serde(default)]
    pub sentinels: Vec<Secret>,
    /// The master's name in Sentinel (`sentinel monitor <name> …`), with `sentinels`.
    #[serde(default)]
    pub service_name: Option<String>,
    /// PEM file of the CA certificate(s) that sign the Redis server's certificate
    /// (`rediss://` only). Absent: the system's roots. Read at start (a restart picks up a
    /// new file); it replaces the system roots rather than adding to them.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// What a request does while Redis cannot be reached: `reject` (503 + Retry-After) or
    /// `local` (this replica's own dedupe only; `/readyz` says degraded).
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    /// Prefix of every key hookgate writes.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Connections per replica (each multiplexes many requests; cluster: per node).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Time allowed to connect.
    #[serde(default = "default_redis_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for one command's answer; longer counts as unavailable.
    #[serde(default = "default_redis_command_timeout", with = "humantime_serde")]
    pub command_timeout: Duration,
    /// How long a claim outlives a replica that died holding it (a live owner renews it).
    #[serde(default = "default_claim_ttl", with = "humantime_serde")]
    pub claim_ttl: Duration,
}

/// `[dedupe.redis] on_unavailable`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnavailable {
    /// Refuse with 503 + Retry-After: nothing is written, the provider retries.
    #[default]
    Reject,
    /// Fall back to this replica's dedupe; cross-replica duplicates become possible.
    Local,
}

fn default_key_prefix() -> String {
    "hookgate:dedupe:".into()
}
fn default_pool_size() -> usize {
    4
}
fn default_redis_connect_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_redis_command_timeout() -> Duration {
    Duration::from_millis(250)
}
fn default_claim_ttl() -> Duration {
    Duration::from_secs(30)
}

impl RedisDedupeConfig {
    /// The node URLs: `urls`, else `url` or the contents of `url_file` (exactly one form).
    pub fn node_urls(&self) -> Result<Vec<Secret>, String> {
        let one = hookgate_sinks::secret::inline_or_file(
            "url",
            self.url.as_ref(),
            self.url_file.as_deref(),
        )?;
        if !self.sentinels.is_empty() {
            if one.is_some() || !self.urls.is_empty() {
                return Err("set `sentinels` or `url`/`url_file`/`urls`, not both".into());
            }
            return Ok(self.sentinels.clone());
        }
        match (one, self.urls.is_empty()) {
            (Some(_), false) => Err("set `url` (or `url_file`) or `urls`, not both".into()),
            (Some(u), true) => Ok(vec![u]),
            (None, false) => Ok(self.urls.clone()),
            (None, true) => Err("set `url`, `url_file` or `urls`".into()),
        }
    }

    /// Problems with these settings (each message names its key, never the URL).
    pub fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.node_urls() {
            Err(m) => out.push(m),
            Ok(urls) => {
                if urls.len() > 1 && !self.cluster && self.sentinels.is_empty() {
                    out.push("several `urls` need `cluster = true` (one URL otherwise)".into());
                }
                if self.ca_file.is_some()
                    && urls.iter().any(|u| !u.expose().starts_with("rediss://"))
                {
                    out.push(
                        "ca_file needs rediss:// URLs (TLS); a redis:// URL would ignore it".into(),
                    );
                }
                for (i, u) in urls.iter().enumerate() {
                    if let Err(m) = crate::redis_dedupe::check_url(u.expose()) {
                        out.push(if !self.sentinels.is_empty() {
                            format!("sentinels[{i}]: {m}")
                        } else if urls.len() > 1 {
                            format!("urls[{i}]: {m}")
                        } else {
                            format!("url: {m}")
                        });
                    }
                }
            }
        }
        if let Some(p) = &self.ca_file {
            if let Err(m) = crate::redis_dedupe::load_ca(p) {
                out.push(m);
            }
        }
        match (self.sentinels.is_empty(), &self.service_name) {
            (false, None) => {
                out.push("`sentinels` need `service_name` (the master's name in Sentinel)".into())
            }
            (false, Some(n)) if n.is_empty() => out.push("service_name must not be empty".into()),
            (true, Some(_)) => out.push("`service_name` needs `sentinels`".into()),
            _ => {}
        }
        if !self.sentinels.is_empty() {
            if self.cluster {
                out.push("`sentinels` and `cluster = true` exclude each other".into());
            }
            if self.ca_file.is_some() {
                out.push(
                    "ca_file is not supported with `sentinels` (TLS through Sentinel is not)"
                        .into(),
                );
            }
        }
        if self.key_prefix.is_empty() {
            out.push("key_prefix must not be empty (keys would mix with other data)".into());
        }
        if !(1..=256).contains(&self.pool_size) {
            out.push(format!("pool_size = {}: must be 1 to 256", self.pool_size));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if d.is_zero() {
                out.push(format!("{name} must be longer than 0s"));
            }
        }
        if self.claim_ttl < Duration::from_secs(1) {
            out.push("claim_ttl must be at least 1s".into());
        } else if self.claim_ttl <= self.command_timeout.saturating_mul(3) {
            out.push("claim_ttl must be more than 3 x command_timeout (a live owner renews its claim every claim_ttl/3)".into());
        }
        out
    }
}

fn default_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_capacity() -> u64 {
    1_000_000
}

impl Default for DedupeConfig {
    fn default() -> Self {
        DedupeConfig {
            ttl: default_ttl(),
            capacity: default_capacity(),
            redis: None,
        }
    }
}

/// `[dispatch]`: the dispatcher that feeds routes from the log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// Run the dispatcher inside `hookgate serve` (when there are routes).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Kafka consumer group of the dispatchers.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Kafka topic of dead letters.
    #[serde(default = "default_dlq_topic")]
    pub dlq_topic: String,
}

fn yes() -> bool {
    true
}
fn default_group() -> String {
    "hookgate-dispatch".into()
}
fn default_dlq_topic() -> String {
    "hookgate.dlq".into()
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            enabled: true,
            group_id: default_group(),
            dlq_topic: default_dlq_topic(),
        }
    }
}

/// `[admin]`: a second listener for operators. When set, it serves `/metrics`, `/healthz`
/// and `/readyz`, and the public listener serves only `/hooks/*` (404 elsewhere), so
/// metrics and probes need not be exposed where providers call in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (e.g. `127.0.0.1:9090`, or the pod IP for probes).
    pub listen: SocketAddr,
    /// The web console's and admin API's access token (`/console/`, `/api/v1`). A secret:
    /// never logged. Absent (and no `token_file`): the console is off, the API answers 404.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token (re-read on SIGHUP); instead of `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// How many recent accepted events the console keeps in memory (metadata only).
    #[serde(default = "default_console_kept")]
    pub console_events: usize,
    /// How many recent refused requests the console keeps in memory.
    #[serde(default = "default_console_kept")]
    pub console_rejections: usize,
    /// The `/metrics` URLs of `hookgate dispatch` processes (their `[admin] listen`) whose
    /// sink deliveries and lag the console shows, summed with this process's own.
    #[serde(default)]
    pub dispatchers: Vec<String>,
}

/// A dispatcher's metrics URL from `[admin] dispatchers`, checked: http(s), a host, no
/// credentials (the message never repeats what may be a password).
pub fn dispatcher_url(u: &str) -> Result<url::Url, String> {
    let hint =
        "e.g. \"http://10.0.0.7:9091/metrics\", a `hookgate dispatch` process's [admin] listen";
    let url = url::Url::parse(u).map_err(|e| format!("not a URL ({e}); {hint}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("a URL with credentials is not allowed; {hint}"));
    }
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{u:?} is not an http(s) URL with a host; {hint}"));
    }
    Ok(url)
}

fn default_console_kept() -> usize {
    1000
}

impl AdminConfig {
    /// The console token in force: `token`, or `token_file` read now; `None` when neither
    /// is set (the console is off).
    pub fn resolve_token(&self) -> Result<Option<Secret>, String> {
        hookgate_sinks::secret::inline_or_file(
            "token",
            self.token.as_ref(),
            self.token_file.as_deref(),
        )
    }

    /// Whether a token is configured (the console is on).
    pub fn console_on(&self) -> bool {
        self.token.is_some() || self.token_file.is_some()
    }
}

impl Config {
    /// What `hookgate check` says about the console.
    pub fn console_line(&self) -> String {
        match &self.admin {
            Some(a) if a.console_on() => format!("console: on at http://{}/console/", a.listen),
            _ => "console: off (no [admin] token)".to_owned(),
        }
    }
}

/// `[bench]`: measuring aids. Never for production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchConfig {
    /// Acknowledge verified, deduplicated events WITHOUT storing them.
    #[serde(default)]
    pub discard: bool,
}

/// One `[[sources]]` entry: a path `/hooks/{name}` and how its requests are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Path segment: `POST /hooks/{name}`.
    pub name: String,
    /// Signature scheme / provider, kebab-case (`github`, `stripe`, …).
    pub provider: String,
    /// Secrets accepted at once (several during a rotation).
    #[serde(default, deserialize_with = "hookgate_sinks::secret::list")]
    pub secrets: Vec<Secret>,
    /// A file of secrets instead of `secrets`: one per line, blank lines and `#` comments
    /// ignored (e.g. a mounted Kubernetes secret). Re-read on SIGHUP.
    pub secrets_file: Option<PathBuf>,
    /// Kafka topic; default `[kafka] default_topic`.
    pub topic: Option<String>,
    /// Allowed clock skew for timestamped schemes: a duration (`"5m"`, `"90s"`,
    /// `"1500ms"`) or a number of seconds.
    #[serde(default = "default_tolerance", deserialize_with = "duration_or_secs")]
    pub tolerance: Duration,
    /// URL-signing schemes (Twilio, Square, Trello…): the URL the provider calls, as
    /// registered with it (scheme, host, path); the request's query string is appended
    /// as received.
    pub public_url: Option<String>,
    /// Subscription handshakes that present a token of your choosing (Meta's
    /// `hub.verify_token`): the token. A secret: never logged.
    pub verify_token: Option<Secret>,
    /// Microsoft Graph rich notifications: a PEM file of the RSA private key(s) of the
    /// subscription's `encryptionCertificate`; with it every `encryptedContent` must carry a
    /// `dataSignature` made with the `dataKey` this key decrypts. Read at start-up and on
    /// SIGHUP; never logged.
    pub encryption_key_file: Option<PathBuf>,
    /// Microsoft Graph: the `encryptionCertificateId`s accepted (empty: any).
    #[serde(default)]
    pub encryption_certificate_ids: Vec<String>,
    /// Microsoft Graph: a JWKS file of Microsoft's token signing keys; with it the
    /// `validationTokens` of rich notifications are verified (needs `app_ids`, `tenant_ids`).
    pub jwks_file: Option<PathBuf>,
    /// Microsoft Graph: the app ids the validation tokens may be issued for (`aud`).
    #[serde(default)]
    pub app_ids: Vec<String>,
    /// Microsoft Graph: the tenants whose tokens are accepted (`iss`).
    #[serde(default)]
    pub tenant_ids: Vec<String>,
    /// Where the delivery id comes from: `header:NAME` or a JSON pointer (`/id`).
    pub dedupe_key: Option<String>,
    /// Where the event type comes from: `header:NAME` or a JSON pointer.
    pub event_type: Option<String>,
    /// Where the Kafka partition key comes from: `header:NAME` or a JSON pointer;
    /// default the delivery id.
    pub partition_key: Option<String>,
    /// Original request headers copied onto the Kafka record.
    #[serde(default)]
    pub keep_headers: Vec<String>,
    /// Client networks allowed to post (CIDR); empty = any.
    #[serde(default)]
    pub allow_ips: Vec<ipnet::IpNet>,
    /// generic-hmac: the signature header.
    pub signature_header: Option<String>,
    /// generic-hmac: `sha1`, `sha256` or `sha512`.
    pub algorithm: Option<String>,
    /// generic-hmac: `hex` or `base64`.
    pub encoding: Option<String>,
    /// generic-hmac: text before the encoded signature (e.g. `sha256=`).
    pub prefix: Option<String>,
    /// Token bucket for the whole source (429 + Retry-After when empty).
    pub rate_limit: Option<crate::admission::RateLimit>,
    /// Also dedupe on a digest of the signed body, so a captured request replayed under a
    /// new delivery id is answered as a duplicate. Default on for schemes that sign only
    /// the body (github, gitlab, shopify, generic-hmac), off (and not allowed) elsewhere;
    /// `false` for senders that legitimately send identical bodies as new deliveries.
    pub dedupe_body: Option<bool>,
}

impl SourceConfig {
    /// Whether the source's verifier is built from files re-read on SIGHUP: `secrets_file`,
    /// Microsoft Graph's `encryption_key_file` and `jwks_file`.
    pub fn reads_files(&self) -> bool {
        self.secrets_file.is_some()
            || self.encryption_key_file.is_some()
            || self.jwks_file.is_some()
    }

    /// Whether requests of this source are also deduplicated on their body's digest.
    pub fn dedupe_body(&self) -> bool {
        self.dedupe_body.unwrap_or_else(|| {
            Provider::parse(&self.provider).is_some_and(Provider::signs_body_only)
        })
    }
}

/// `public_url` is an absolute http(s) URL without query or fragment (the request's query
/// string is appended as received).
fn check_public_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with https:// (or http://)")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("has no host".into());
    }
    if url.contains(['?', '#']) {
        return Err(
            "must not carry a query or fragment: the request's own query string is appended".into(),
        );
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII (percent-encode anything else)".into());
    }
    Ok(())
}

/// A humantime duration string or a whole number of seconds.
fn duration_or_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{t}` is not a duration ({e}); write e.g. \"5m\", \"90s\" or a number of seconds"
            ))
        }),
    }
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

/// One problem found in the config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `file:line` or the key path (`sources[1].provider`).
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found; loading fails if there is any.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<Problem>);

impl Config {
    /// Reads, interpolates, overrides and validates a config file.
    pub fn load(path: &Path) -> Result<(Config, Vec<String>), ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![Problem {
                location: path.display().to_string(),
                message: format!("cannot read config: {e}"),
            }])
        })?;
        Config::parse(&text, &path.display().to_string(), &env_map())
    }

    /// The built-in config used by `hookgate serve` without `--config`, with environment
    /// overrides applied.
    pub fn embedded() -> Result<(Config, Vec<String>), ConfigErrors> {
        Config::parse(EMBEDDED, "<embedded>", &env_map())
    }

    /// Parses config text. `env` supplies `${VAR}` values and `HOOKGATE__…` overrides.
    /// Returns the config and warnings (things that work but should be looked at).
    pub fn parse(
        text: &str,
        origin: &str,
        env: &HashMap<String, String>,
    ) -> Result<(Config, Vec<String>), ConfigErrors> {
        let mut problems = Vec::new();
        let mut table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let loc = e
                    .span()
                    .map(|s| format!("{origin}:{}", line_of(text, s.start)))
                    .unwrap_or_else(|| origin.to_owned());
                problems.push(Problem {
                    location: loc,
                    message: e.message().to_owned(),
                });
                return Err(ConfigErrors(problems));
            }
        };
        // Interpolate inside string values only: `${…}` in a comment is just text.
        for (_, v) in table.iter_mut() {
            interpolate_value(v, text, origin, env, &mut problems);
        }
        apply_env_overrides(&mut table, env, &mut problems);
        let lines = SectionLines::new(text, origin);
        let mut cfg = Config::default();
        for key in table.keys() {
            if !matches!(
                key.as_str(),
                "server"
                    | "kafka"
                    | "spool"
                    | "dedupe"
                    | "dispatch"
                    | "bench"
                    | "admin"
                    | "sources"
                    | "sinks"
                    | "routes"
            ) {
                problems.push(Problem {
                    location: format!("{origin}: `{key}`"),
                    message: format!("unknown section `{key}` (expected server, kafka, spool, dedupe, dispatch, bench, admin, sources, sinks, routes)"),
                });
            }
        }
        let mut section = |name: &str| table.remove(name);
        if let Some(v) = section("server") {
            if let Some(s) = de(v, &lines.at("server", None), &mut problems) {
                cfg.server = s;
            }
        }
        if let Some(v) = section("kafka") {
            cfg.kafka = de(v, &lines.at("kafka", None), &mut problems);
        }
        if let Some(v) = section("spool") {
            cfg.spool = de(v, &lines.at("spool", None), &mut problems);
        }
        if let Some(v) = section("dedupe") {
            if let Some(s) = de(v, &lines.at("dedupe", None), &mut problems) {
                cfg.dedupe = s;
            }
        }
        if let Some(v) = section("dispatch") {
            if let Some(s) = de(v, &lines.at("dispatch", None), &mut problems) {
                cfg.dispatch = s;
            }
        }
        if let Some(v) = section("bench") {
            if let Some(s) = de(v, &lines.at("bench", None), &mut problems) {
                cfg.bench = s;
            }
        }
        if let Some(v) = section("admin") {
            cfg.admin = de(v, &lines.at("admin", None), &mut problems);
        }
        for (name, out) in [("sources", 0), ("sinks", 1), ("routes", 2)] {
            let Some(v) = section(name) else { continue };
            let toml::Value::Array(items) = v else {
                problems.push(Problem {
                    location: lines.at(name, None),
                    message: format!("`{name}` must be an array of tables: [[{name}]]"),
                });
                continue;
            };
            for (i, item) in items.into_iter().enumerate() {
                let loc = lines.at(name, Some(i));
                match out {
                    0 => cfg.sources.extend(de(item, &loc, &mut problems)),
                    1 => cfg.sinks.extend(de(item, &loc, &mut problems)),
                    _ => cfg.routes.extend(de(item, &loc, &mut problems)),
                }
            }
        }
        let warnings = cfg.validate(&lines, &mut problems);
        if problems.is_empty() {
            Ok((cfg, warnings))
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Semantic checks across sections; returns warnings.
    fn validate(&self, lines: &SectionLines, problems: &mut Vec<Problem>) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut names = HashMap::new();
        for (i, s) in self.sources.iter().enumerate() {
            let loc = lines.at("sources", Some(i));
            let mut bad = |m: String| {
                problems.push(Problem {
                    location: loc.clone(),
                    message: format!("source `{}`: {m}", s.name),
                })
            };
            if s.name.is_empty()
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                bad("name must be non-empty and use only letters, digits, `-`, `_`, `.`".into());
            }
            if names.insert(s.name.clone(), i).is_some() {
                bad("a source of this name is already defined".into());
            }
            if let Err(m) = s.build_verifier() {
                bad(m);
            }
            if s.provider().is_ok_and(|p| p.spec().learns_secret())
                && s.secrets.is_empty()
                && s.secrets_file.is_none()
                && self.state_dir().is_none()
            {
                bad("this provider learns its secret from a handshake and keeps it under the spool directory: add a [spool] section (or configure `secrets`)".into());
            }
            let graph_only = [
                ("encryption_key_file", s.encryption_key_file.is_some()),
                (
                    "encryption_certificate_ids",
                    !s.encryption_certificate_ids.is_empty(),
                ),
                ("jwks_file", s.jwks_file.is_some()),
                ("app_ids", !s.app_ids.is_empty()),
                ("tenant_ids", !s.tenant_ids.is_empty()),
            ];
            if s.provider().is_ok_and(|p| p.as_str() != "microsoft-graph") {
                for (key, _) in graph_only.iter().filter(|(_, set)| *set) {
                    warnings.push(format!(
                        "source `{}`: {key} is set but only provider `microsoft-graph` uses it; it is ignored",
                        s.name
                    ));
                }
            }
            if let Some(url) = &s.public_url {
                if let Err(m) = check_public_url(url) {
                    bad(format!("public_url: {m}"));
                } else if s.provider().is_ok_and(|p| !p.spec().url_signed()) {
                    warnings.push(format!(
                        "source `{}`: public_url is set but provider `{}` does not sign the URL; it is ignored",
                        s.name, s.provider
                    ));
                }
            }
            for (field, v) in [
                ("dedupe_key", &s.dedupe_key),
                ("event_type", &s.event_type),
                ("partition_key", &s.partition_key),
            ] {
                if let Some(v) = v {
                    if let Err(m) = FieldSpec::parse(v) {
                        bad(format!("{field}: {m}"));
                    }
                }
            }
            for h in &s.keep_headers {
                if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    bad(format!("keep_headers: `{h}` is not a header name"));
                }
            }
            if let Some(r) = &s.rate_limit {
                if let Err(m) = r.check() {
                    bad(format!("rate_limit: {m}"));
                }
            }
            if s.dedupe_body == Some(true)
                && Provider::parse(&s.provider).is_some_and(|p| !p.signs_body_only())
            {
                bad("dedupe_body = true: this provider signs a timestamp or id with the body, so a replay is already refused; leave dedupe_body unset".into());
            }
        }
        if self.sources.is_empty() {
            warnings.push("no [[sources]] defined: every POST /hooks/… will answer 404".into());
        }
        let chat = ChatConfig {
            sinks: self.sinks.clone(),
            routes: self.routes.clone(),
        };
        for e in dispatch::check(&chat) {
            problems.push(Problem {
                location: "sinks/routes".into(),
                message: e.to_string(),
            });
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !self.sources.iter().any(|s| s.name == r.source) {
                problems.push(Problem {
                    location: lines.at("routes", Some(i)),
                    message: format!("route source `{}` is not a defined source", r.source),
                });
            }
        }
        if self.bench.discard {
            warnings.push(
                "bench.discard = true: events are ACKNOWLEDGED WITHOUT BEING STORED (measuring only)"
                    .into(),
            );
        }
        if let Some(r) = &self.server.rate_limit_per_client {
            if let Err(m) = r.check() {
                problems.push(Problem {
                    location: lines.at("server", None),
                    message: format!("server.rate_limit_per_client: {m}"),
                });
            }
        }
        if self.server.idle_timeout < Duration::from_secs(1) {
            problems.push(Problem {
                location: lines.at("server", None),
                message: "server.idle_timeout must be at least 1s".into(),
            });
        }
        if self.server.h2_max_concurrent_streams == 0 {
            problems.push(Problem {
                location: lines.at("server", None),
                message: "server.h2_max_concurrent_streams must be at least 1".into(),
            });
        }
        if let Some(a) = &self.admin {
            if a.listen == self.server.listen && a.listen.port() != 0 {
                problems.push(Problem {
                    location: lines.at("admin", None),
                    message: format!(
                        "admin.listen = {} is server.listen too: give the admin listener its own port",
                        a.listen
                    ),
                });
            }
            if let Err(m) = a.resolve_token() {
                problems.push(Problem {
                    location: lines.at("admin", None),
                    message: format!("admin.{m}"),
                });
            }
            if a.token.as_ref().is_some_and(|t| t.expose().len() < 16) {
                problems.push(Problem {
                    location: lines.at("admin", None),
                    message: "admin.token must be at least 16 characters (it guards replays and event bodies)".into(),
                });
            }
            if a.console_events == 0 || a.console_rejections == 0 {
                problems.push(Problem {
                    location: lines.at("admin", None),
                    message: "admin.console_events and admin.console_rejections must be at least 1"
                        .into(),
                });
            }
            for u in &a.dispatchers {
                if let Err(m) = dispatcher_url(u) {
                    problems.push(Problem {
                        location: lines.at("admin", None),
                        message: format!("admin.dispatchers: {m}"),
                    });
                }
            }
            if a.dispatchers.len() > 64 {
                problems.push(Problem {
                    location: lines.at("admin", None),
                    message: "admin.dispatchers: at most 64 URLs".into(),
                });
            }
            if !a.dispatchers.is_empty() && a.token.is_none() && a.token_file.is_none() {
                warnings.push(
                    "admin.dispatchers is set but the console is off (no admin.token or admin.token_file): nothing reads those URLs"
                        .into(),
                );
            }
        }
        if self.server.proxy_protocol && self.server.trusted_proxies.is_empty() {
            problems.push(Problem {
                location: lines.at("server", None),
                message: "server.proxy_protocol = true needs server.trusted_proxies: the proxies whose PROXY header is believed".into(),
            });
        }
        if let Some(t) = &self.server.tls {
            if let Err(e) = crate::edge::tls::check(t) {
                problems.push(Problem {
                    location: lines.at("server", None),
                    message: format!("server.tls: {e}"),
                });
            }
        }
        if self.kafka.is_none() && self.spool.is_none() {
            warnings.push("neither [kafka] nor [spool]: events go to the default spool directory ./hookgate-spool".into());
        }
        self.validate_spool(lines, problems, &mut warnings);
        let max_ids = crate::dedupe::MAX_CAPACITY;
        if !(1..=max_ids).contains(&self.dedupe.capacity) {
            problems.push(Problem {
                location: lines.at("dedupe", None),
                message: format!(
                    "dedupe.capacity = {}: must be 1 to {max_ids} (each remembered id takes about 60 bytes of memory)",
                    self.dedupe.capacity
                ),
            });
        }
        if let Some(r) = &self.dedupe.redis {
            for m in r.check() {
                problems.push(Problem {
                    location: lines.at("dedupe", None),
                    message: format!("dedupe.redis: {m}"),
                });
            }
        }
        if let Some(k) = &self.kafka {
            if k.ack == hookgate_sinks::log::kafka::AckMode::Spool && self.spool.is_none() {
                problems.push(Problem {
                    location: lines.at("kafka", None),
                    message: "kafka.ack = \"spool\" needs a [spool] section".into(),
                });
            }
            if !(1..=5).contains(&k.max_in_flight) {
                problems.push(Problem {
                    location: lines.at("kafka", None),
                    message: format!(
                        "kafka.max_in_flight = {}: must be 1 to 5 (the idempotent producer keeps order only up to 5)",
                        k.max_in_flight
                    ),
                });
            }
            if let Err(m) = k.options.check() {
                problems.push(Problem {
                    location: lines.at("kafka", None),
                    message: m,
                });
            }
            let unsafe_opts = hookgate_sinks::log::kafka::unsafe_options(&k.options);
            if k.allow_unsafe_options {
                for (opt, why) in &unsafe_opts {
                    warnings.push(format!(
                        "kafka.options.\"{opt}\" weakens durability ({why}); allowed by kafka.allow_unsafe_options: a 2xx may not mean durable"
                    ));
                }
            } else {
                for (opt, why) in unsafe_opts {
                    problems.push(Problem {
                        location: lines.at("kafka", None),
                        message: format!(
                            "kafka.options.\"{opt}\" is refused: {why} (set kafka.allow_unsafe_options = true to force it, at the cost of \"2xx means durable\")"
                        ),
                    });
                }
            }
            let need = self.max_record_bytes();
            if let Some(v) = k.options.get("message.max.bytes") {
                match v.trim().parse::<u64>() {
                    Ok(n) if n < need => problems.push(Problem {
                        location: lines.at("kafka", None),
                        message: format!(
                            "kafka.options.\"message.max.bytes\" = {n} is below server.max_body_bytes plus record overhead ({need}): every larger event would be refused by the producer; raise it or lower max_body_bytes"
                        ),
                    }),
                    Ok(_) => {}
                    Err(_) => problems.push(Problem {
                        location: lines.at("kafka", None),
                        message: format!("kafka.options.\"message.max.bytes\" = `{v}` is not a number of bytes"),
                    }),
                }
            }
        }
        warnings
    }

    /// The largest Kafka record the server can produce: the body limit plus room for the key,
    /// the contract headers and `keep_headers` (which hyper bounds by `max_headers`).
    pub fn max_record_bytes(&self) -> u64 {
        self.server.max_body_bytes.0 + RECORD_OVERHEAD
    }

    /// `[spool]` checks: every accepted body must fit one spool record, and retention
    /// must keep something.
    fn validate_spool(
        &self,
        lines: &SectionLines,
        problems: &mut Vec<Problem>,
        warnings: &mut Vec<String>,
    ) {
        use hookgate_sinks::log::spool;
        let in_force = self.spool.is_some() || self.kafka.is_none();
        if !in_force || self.bench.discard {
            return;
        }
        let body = self.server.max_body_bytes.0;
        if body > spool::max_body_bytes() {
            problems.push(Problem {
                location: lines.at("server", None),
                message: format!(
                    "server.max_body_bytes = {body}: a spool record holds at most {} bytes of body ({} bytes per record less {} for the event's other fields)",
                    spool::max_body_bytes(),
                    spool::MAX_FRAME,
                    spool::FRAME_OVERHEAD,
                ),
            });
        }
        let Some(sc) = &self.spool else { return };
        if sc.retention.is_zero() {
            problems.push(Problem {
                location: lines.at("spool", None),
                message: "spool.retention must be longer than 0s".into(),
            });
        }
        if sc.max_bytes.0 < body.saturating_add(spool::FRAME_OVERHEAD) {
            warnings.push(format!(
                "spool.max_bytes = {} is smaller than one record of server.max_body_bytes ({body}): such events are always refused with 503",
                sc.max_bytes.0
            ));
        }
    }

    /// Where state beside the log lives (learned secrets): the spool directory when the
    /// spool is in use (`[spool]` set, or no `[kafka]`); `None` for Kafka without a spool.
    pub fn state_dir(&self) -> Option<std::path::PathBuf> {
        match (&self.spool, &self.kafka) {
            (Some(s), _) => Some(s.path.clone()),
            (None, None) => Some(SpoolConfig::default().path),
            (None, Some(_)) => None,
        }
    }

    /// The topic of a source (its own, else the Kafka default).
    pub fn topic_of(&self, s: &SourceConfig) -> String {
        s.topic.clone().unwrap_or_else(|| {
            self.kafka
                .as_ref()
                .map(|k| k.default_topic.clone())
                .unwrap_or_else(|| "webhooks".into())
        })
    }
}

impl SourceConfig {
    /// The parsed provider.
    pub fn provider(&self) -> Result<Provider, String> {
        Provider::lookup(&self.provider)
    }

    /// Builds the verifier; the message never contains a secret.
    pub fn build_verifier(&self) -> Result<Verifier, String> {
        let provider = self.provider()?;
        let generic = self.generic_options(provider)?;
        let secrets = self.resolve_secrets()?;
        self.build_verifier_with(provider, &secrets, generic)
    }

    /// The verifier of this source with `secrets` (those of a reload).
    pub fn build_verifier_from(&self, secrets: &[Secret]) -> Result<Verifier, String> {
        let provider = self.provider()?;
        let generic = self.generic_options(provider)?;
        self.build_verifier_with(provider, secrets, generic)
    }

    fn build_verifier_with(
        &self,
        provider: Provider,
        secrets: &[Secret],
        generic: Option<GenericHmacOptions>,
    ) -> Result<Verifier, String> {
        // The verifier prepares its keys from plain strings once; this copy lives only
        // for the call.
        let plain: Vec<String> = secrets.iter().map(|s| s.expose().to_owned()).collect();
        let options = Options {
            tolerance: self.tolerance,
            generic,
            public_url: self.public_url.clone(),
            verify_token: self.verify_token.as_ref().map(|t| t.expose().to_owned()),
            graph: GraphOptions {
                encryption_key_file: self.encryption_key_file.clone(),
                encryption_certificate_ids: self.encryption_certificate_ids.clone(),
                jwks_file: self.jwks_file.clone(),
                app_ids: self.app_ids.clone(),
                tenant_ids: self.tenant_ids.clone(),
            },
        };
        Verifier::with_options(provider, &plain, options).map_err(|e| match e {
            KeyError::MissingOption { .. }
            | KeyError::MissingOptions
            | KeyError::BadOption { .. } => e.to_string(),
            _ => format!("secrets: {e}"),
        })
    }

    fn generic_options(&self, provider: Provider) -> Result<Option<GenericHmacOptions>, String> {
        if provider.as_str() != "generic-hmac" {
            return Ok(None);
        }
        let header = self
            .signature_header
            .as_deref()
            .ok_or("generic-hmac needs `signature_header`")?;
        let header = http::HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("signature_header `{header}` is not a header name"))?;
        let algorithm = HmacAlgorithm::parse(self.algorithm.as_deref().unwrap_or("sha256"))
            .ok_or("algorithm must be sha1, sha256 or sha512")?;
        let encoding = SigEncoding::parse(self.encoding.as_deref().unwrap_or("hex"))
            .ok_or("encoding must be hex or base64")?;
        Ok(Some(GenericHmacOptions {
            header,
            algorithm,
            encoding,
            prefix: self.prefix.clone().unwrap_or_default(),
        }))
    }

    /// The source's secrets: `secrets`, or the lines of `secrets_file` read now. Both
    /// set is an error; so is a file that cannot be read or holds no secret.
    pub fn resolve_secrets(&self) -> Result<Vec<Secret>, String> {
        match (&self.secrets_file, self.secrets.is_empty()) {
            (Some(_), false) => Err("set `secrets` or `secrets_file`, not both".into()),
            (Some(p), true) => {
                hookgate_sinks::secret::read_lines(p).map_err(|e| format!("secrets_file: {e}"))
            }
            (None, _) => Ok(self.secrets.clone()),
        }
    }
}

/// The embedded default: one GitHub source on 127.0.0.1:8080, the spool as the log.
pub const EMBEDDED: &str = include_str!("../../deploy/examples/embedded.toml");

/// The development secrets built into [`EMBEDDED`]: each `${VAR:-default}` there, as
/// (`VAR`, `default`). They are public (they ship in the binary), so a source still
/// using one accepts events anyone can sign.
pub fn dev_secret_defaults() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let mut rest = EMBEDDED;
    while let Some(i) = rest.find("${") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find('}') else { break };
        if let Some((var, default)) = rest[..end].split_once(":-") {
            if !default.is_empty() {
                out.push((var, default));
            }
        }
        rest = &rest[end..];
    }
    out
}

impl Config {
    /// Sources whose secrets include a built-in development default, each with the
    /// variable that replaces it: (source name, `VAR`).
    pub fn dev_secrets_in_use(&self) -> Vec<(String, &'static str)> {
        let defaults = dev_secret_defaults();
        let mut out = Vec::new();
        for s in &self.sources {
            for (var, default) in &defaults {
                if s.secrets.iter().any(|x| x.expose() == *default) {
                    out.push((s.name.clone(), *var));
                }
            }
        }
        out
    }

    /// Refuses a public listener while development secrets are in use: `Err` holds a
    /// message naming the variables to set. Loopback listeners are always fine.
    pub fn check_dev_secrets(&self) -> Result<(), String> {
        let dev = self.dev_secrets_in_use();
        if dev.is_empty() || self.server.listen.ip().is_loopback() {
            return Ok(());
        }
        let sources: Vec<&str> = dev.iter().map(|(s, _)| s.as_str()).collect();
        let mut vars: Vec<&str> = dev.iter().map(|(_, v)| *v).collect();
        vars.dedup();
        Err(format!(
            "dev_secrets_on_public_listener: refusing to listen on {}: source(s) {} still use the built-in development secret(s), which anyone can sign with; set {} (or listen on a loopback address such as 127.0.0.1)",
            self.server.listen,
            sources.join(", "),
            vars.join(", "),
        ))
    }
}

fn env_map() -> HashMap<String, String> {
    std::env::vars().collect()
}

fn de<T: DeserializeOwned>(v: toml::Value, loc: &str, problems: &mut Vec<Problem>) -> Option<T> {
    match T::deserialize(v) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(Problem {
                location: loc.to_owned(),
                message: e.message().trim().to_owned(),
            });
            None
        }
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text.get(..byte.min(text.len()))
        .map(|s| s.bytes().filter(|b| *b == b'\n').count() + 1)
        .unwrap_or(1)
}

/// Where each section header stands in the text, for `file:line` locations.
struct SectionLines {
    origin: String,
    map: HashMap<String, Vec<usize>>,
}

impl SectionLines {
    fn new(text: &str, origin: &str) -> Self {
        let mut map: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            let name = t
                .strip_prefix("[[")
                .and_then(|r| r.split_once("]]"))
                .or_else(|| t.strip_prefix('[').and_then(|r| r.split_once(']')))
                .map(|(n, _)| n.trim().to_owned());
            if let Some(n) = name {
                map.entry(n).or_default().push(i + 1);
            }
        }
        SectionLines {
            origin: origin.to_owned(),
            map,
        }
    }

    fn at(&self, section: &str, index: Option<usize>) -> String {
        let line = self
            .map
            .get(section)
            .and_then(|v| v.get(index.unwrap_or(0)))
            .map(|l| format!(":{l}"))
            .unwrap_or_default();
        match index {
            Some(i) => format!("{}{line} [{section}][{i}]", self.origin),
            None => format!("{}{line} [{section}]", self.origin),
        }
    }
}

fn interpolate_value(
    v: &mut toml::Value,
    text: &str,
    origin: &str,
    env: &HashMap<String, String>,
    problems: &mut Vec<Problem>,
) {
    match v {
        toml::Value::String(s) if s.contains("${") => {
            *s = interpolate(s, text, origin, env, problems);
        }
        toml::Value::Array(a) => {
            for x in a {
                interpolate_value(x, text, origin, env, problems);
            }
        }
        toml::Value::Table(t) => {
            for (_, x) in t.iter_mut() {
                interpolate_value(x, text, origin, env, problems);
            }
        }
        _ => {}
    }
}

/// Replaces `${VAR}` in one string value with the variable's value (`${VAR:-default}` falls
/// back to `default`); an unset variable without a default is a problem, located at the
/// first line of the file that uses it outside a comment. `$${` stays a literal `${`.
fn interpolate(
    value: &str,
    text: &str,
    origin: &str,
    env: &HashMap<String, String>,
    problems: &mut Vec<Problem>,
) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(j) = after.find('}') else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let inner = &after[..j];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match env.get(name).map(String::as_str).or(default) {
            Some(v) => out.push_str(v),
            None => {
                let needle = format!("${{{inner}}}");
                let line = text
                    .lines()
                    .position(|l| l.split('#').next().unwrap_or("").contains(&needle))
                    .map(|n| format!(":{}", n + 1))
                    .unwrap_or_default();
                problems.push(Problem {
                    location: format!("{origin}{line}"),
                    message: format!("environment variable `{name}` is not set"),
                });
                // Keep the reference so later checks do not report a second, derived
                // problem (an empty secret) for the same cause.
                out.push_str(&needle);
            }
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

/// `HOOKGATE__SERVER__LISTEN=…` sets `server.listen`; numeric segments index arrays
/// (`HOOKGATE__SOURCES__0__SECRETS`). Values are read as TOML when they parse as a value
/// (`true`, `5`, `["a"]`), else as strings.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: &HashMap<String, String>,
    problems: &mut Vec<Problem>,
) {
    let mut keys: Vec<&String> = env.keys().filter(|k| k.starts_with("HOOKGATE__")).collect();
    keys.sort();
    for k in keys {
        let path: Vec<String> = k["HOOKGATE__".len()..]
            .split("__")
            .map(|s| s.to_ascii_lowercase())
            .collect();
        let raw = &env[k];
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        if let Err(m) = set_path(table, &path, value) {
            problems.push(Problem {
                location: format!("environment `{k}`"),
                message: m,
            });
        }
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Err("empty key".into());
    };
    if first.is_empty() {
        return Err("empty key segment".into());
    }
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in_value(entry, rest, value)
}

fn set_in_value(v: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    match v {
        toml::Value::Table(t) => set_path(t, path, value),
        toml::Value::Array(a) => {
            let Some((first, rest)) = path.split_first() else {
                return Err("empty key".into());
            };
            let i: usize = first
                .parse()
                .map_err(|_| format!("`{first}` is not an array index"))?;
            let slot = a
                .get_mut(i)
                .ok_or_else(|| format!("index {i} is past the end of the array"))?;
            if rest.is_empty() {
                *slot = value;
                Ok(())
            } else {
                set_in_value(slot, rest, value)
            }
        }
        _ => Err("cannot set a key inside a plain value".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"
max_body_bytes = "64KiB"
body_timeout = "3s"

[dedupe]
ttl = "5m"

[[sources]]
name = "github"
provider = "github"
secrets = ["${GH_SECRET}"]
partition_key = "/repository/full_name"
"#;

    #[test]
    fn parses_durations_sizes_and_interpolates() {
        let (c, _) = Config::parse(GOOD, "t.toml", &env(&[("GH_SECRET", "s3\"cr")])).unwrap();
        assert_eq!(c.server.max_body_bytes, ByteSize(64 << 10));
        assert_eq!(c.server.body_timeout, Duration::from_secs(3));
        assert_eq!(c.dedupe.ttl, Duration::from_secs(300));
        assert_eq!(c.sources[0].secrets, vec![Secret::new("s3\"cr")]);
    }

    #[test]
    fn env_overrides_win() {
        let (c, _) = Config::parse(
            GOOD,
            "t.toml",
            &env(&[
                ("GH_SECRET", "x"),
                ("HOOKGATE__SERVER__LISTEN", "0.0.0.0:7000"),
                ("HOOKGATE__BENCH__DISCARD", "true"),
                ("HOOKGATE__SOURCES__0__TOPIC", "t.gh"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 7000);
        assert!(c.bench.discard);
        assert_eq!(c.sources[0].topic.as_deref(), Some("t.gh"));
    }

    #[test]
    fn reports_every_problem_with_location() {
        let text = r#"
[server]
listen = "127.0.0.1:9000"
bogus = 1

[[sources]]
name = "a"
provider = "nope"
secrets = ["x"]

[[sources]]
name = "b"
provider = "github"
secrets = []

[[sources]]
name = "c"
provider = "stripe"
secrets = ["${MISSING}"]
"#;
        let err = Config::parse(text, "t.toml", &env(&[])).unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("t.toml:19: environment variable `MISSING`"),
            "{all}"
        );
        assert!(
            all.contains("t.toml:2 [server]") && all.contains("bogus"),
            "{all}"
        );
        assert!(
            all.contains("[sources][0]") && all.contains("unknown provider `nope`"),
            "{all}"
        );
        assert!(
            all.contains("[sources][1]") && all.contains("secrets"),
            "{all}"
        );
        assert_eq!(err.0.len(), 4, "{all}");
    }

    #[test]
    fn admin_dispatchers_without_a_console_are_warned_about() {
        let with = |token: &str| {
            format!(
                "{GOOD}\n[admin]\nlisten = \"127.0.0.1:9090\"\n{token}dispatchers = [\"http://10.0.0.7:9091/metrics\"]\n"
            )
        };
        let says = "admin.dispatchers is set but the console is off";
        let (_, warnings) =
            Config::parse(&with(""), "t.toml", &env(&[("GH_SECRET", "x")])).unwrap();
        assert!(warnings.iter().any(|w| w.contains(says)), "{warnings:?}");
        let (_, warnings) = Config::parse(
            &with("token = \"0123456789abcdef\"\n"),
            "t.toml",
            &env(&[("GH_SECRET", "x")]),
        )
        .unwrap();
        assert!(!warnings.iter().any(|w| w.contains(says)), "{warnings:?}");
    }

    #[test]
    fn admin_dispatchers_are_http_urls_without_credentials() {
        let with = |urls: &str| {
            format!(
                "{GOOD}\n[admin]\nlisten = \"127.0.0.1:9090\"\ntoken = \"0123456789abcdef\"\ndispatchers = [{urls}]\n"
            )
        };
        let ok = with(r#""http://10.0.0.7:9091/metrics", "https://d.example/metrics""#);
        let (c, _) = Config::parse(&ok, "t.toml", &env(&[("GH_SECRET", "x")])).unwrap();
        assert_eq!(c.admin.map(|a| a.dispatchers.len()), Some(2));
        for (bad, says) in [
            (r#""ftp://10.0.0.7/metrics""#, "not an http(s) URL"),
            (r#""10.0.0.7:9091""#, "not a URL"),
            (r#""not a url""#, "not a URL"),
            (r#""http://op:hunter2pass@10.0.0.7/metrics""#, "credentials"),
        ] {
            let all = Config::parse(&with(bad), "t.toml", &env(&[("GH_SECRET", "x")]))
                .unwrap_err()
                .to_string();
            assert!(
                all.contains("admin.dispatchers") && all.contains(says),
                "{bad}: {all}"
            );
            assert!(!all.contains("hunter2pass"), "{all}");
        }
    }

    #[test]
    fn tolerance_takes_any_duration_or_seconds() {
        for (written, secs) in [
            ("\"90s\"", 90),
            ("\"10m\"", 600),
            ("\"1500ms\"", 2),
            ("45", 45),
            ("0", 0),
            ("\"2days\"", 172_800),
        ] {
            let text = format!(
                "[[sources]]\nname = \"s\"\nprovider = \"stripe\"\nsecrets = [\"x\"]\ntolerance = {written}\n"
            );
            let (cfg, _) = Config::parse(&text, "t.toml", &env(&[])).unwrap();
            let v = cfg.sources[0].build_verifier().unwrap();
            assert_eq!(v.tolerance_secs(), secs, "{written}");
        }
        let text = "[[sources]]\nname = \"s\"\nprovider = \"stripe\"\nsecrets = [\"x\"]\ntolerance = \"soon\"\n";
        let all = Config::parse(text, "t.toml", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(all.contains("`soon` is not a duration"), "{all}");
    }

    #[test]
    fn graph_key_files_are_read_at_load_and_ignored_elsewhere_with_a_warning() {
        let source = |provider: &str, extra: &str| {
            format!("[[sources]]\nname = \"s\"\nprovider = \"{provider}\"\nsecrets = [\"x\"]\n{extra}\n")
        };
        let all = Config::parse(
            &source(
                "microsoft-graph",
                "encryption_key_file = \"/nonexistent/key.pem\"",
            ),
            "t.toml",
            &env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            all.contains("encryption_key_file: cannot read /nonexistent/key.pem"),
            "{all}"
        );
        assert!(!all.contains("secrets:"), "{all}");
        let all = Config::parse(
            &source("microsoft-graph", "app_ids = [\"a\"]\ntenant_ids = [\"t\"]"),
            "t.toml",
            &env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(all.contains("needs `jwks_file`"), "{all}");
        let (_, warnings) = Config::parse(
            &source("github", "encryption_key_file = \"/nonexistent/key.pem\""),
            "t.toml",
            &env(&[]),
        )
        .unwrap();
        assert!(
            warnings.iter().any(|w| w.contains(
                "encryption_key_file is set but only provider `microsoft-graph` uses it"
            )),
            "{warnings:?}"
        );
    }

    #[test]
    fn public_url_is_an_absolute_url_without_query() {
        let source = |url: &str| {
            format!("[[sources]]\nname = \"s\"\nprovider = \"github\"\nsecrets = [\"x\"]\npublic_url = \"{url}\"\n")
        };
        for bad in [
            "hooks.example.com/x",
            "ftp://hooks.example.com/x",
            "https://",
            "https:///x",
            "https://hooks.example.com/x?a=1",
            "https://hooks.example.com/x#f",
            "https://hooks.example.com/ x",
        ] {
            let all = Config::parse(&source(bad), "t.toml", &env(&[]))
                .unwrap_err()
                .to_string();
            assert!(all.contains("public_url"), "{bad}: {all}");
        }
        let (_, warnings) = Config::parse(
            &source("https://hooks.example.com/hooks/s"),
            "t.toml",
            &env(&[]),
        )
        .unwrap();
        assert!(
            warnings.iter().any(|w| w.contains("does not sign the URL")),
            "{warnings:?}"
        );
    }

    #[test]
    fn dedupe_capacity_is_bounded() {
        let text = "[dedupe]\ncapacity = 0\n\n[[sources]]\nname = \"g\"\nprovider = \"github\"\nsecrets = [\"s\"]\n";
        for bad in ["0", "1000000001"] {
            let t = text.replace("capacity = 0", &format!("capacity = {bad}"));
            let all = Config::parse(&t, "d.toml", &env(&[]))
                .unwrap_err()
                .to_string();
            assert!(
                all.contains("d.toml:1 [dedupe]")
                    && all.contains(&format!("dedupe.capacity = {bad}: must be 1 to 1000000000")),
                "{all}"
            );
        }
        let ok = text.replace("capacity = 0", "capacity = 1000000000");
        let (c, _) = Config::parse(&ok, "d.toml", &env(&[])).unwrap();
        assert_eq!(c.dedupe.capacity, 1_000_000_000);
    }

    #[test]
    fn dedupe_redis_settings_are_checked_without_echoing_the_url() {
        let src = "\n[[sources]]\nname = \"g\"\nprovider = \"github\"\nsecrets = [\"s\"]\n";
        let parse = |redis: &str| {
            Config::parse(
                &format!("[dedupe.redis]\n{redis}{src}"),
                "r.toml",
                &env(&[]),
            )
        };
        let (c, _) =
            parse("url = \"redis://:pw@127.0.0.1:6379/0\"\non_unavailable = \"local\"\n").unwrap();
        let r = c.dedupe.redis.unwrap();
        assert_eq!(r.on_unavailable, OnUnavailable::Local);
        assert_eq!(r.claim_ttl, Duration::from_secs(30));
        assert_eq!(r.key_prefix, "hookgate:dedupe:");
        assert!(!format!("{r:?}").contains("pw@"), "the URL prints as ***");
        let (c, _) = parse(
            "sentinels = [\"redis://127.0.0.1:26379\", \"redis://127.0.0.2:26379\"]\nservice_name = \"mymaster\"\n",
        )
        .unwrap();
        let r = c.dedupe.redis.unwrap();
        assert_eq!(r.node_urls().unwrap().len(), 2);
        assert_eq!(r.service_name.as_deref(), Some("mymaster"));
        for (bad, want) in [
            ("", "set `url`, `url_file` or `urls`"),
            (
                "url = \"http://:hunter2x@h:1\"\n",
                "url: must start with redis://",
            ),
            (
                "url = \"redis://:hunter2x@[::1\"\n",
                "url: is not a usable Redis URL",
            ),
            (
                "urls = [\"redis://a:1\", \"redis://b:1\"]\n",
                "need `cluster = true`",
            ),
            (
                "url = \"redis://a:1\"\nurls = [\"redis://b:1\"]\n",
                "not both",
            ),
            (
                "url = \"redis://a:1\"\non_unavailable = \"ignore\"\n",
                "unknown variant",
            ),
            (
                "url = \"redis://a:1\"\nclaim_ttl = \"500ms\"\n",
                "claim_ttl must be at least 1s",
            ),
            (
                "url = \"redis://a:1\"\nclaim_ttl = \"1s\"\ncommand_timeout = \"400ms\"\n",
                "more than 3 x command_timeout",
            ),
            ("url = \"redis://a:1\"\npool_size = 0\n", "pool_size = 0"),
            (
                "url = \"redis://a:1\"\nsentinels = [\"redis://s:26379\"]\nservice_name = \"m\"\n",
                "set `sentinels` or `url`/`url_file`/`urls`, not both",
            ),
            (
                "sentinels = [\"redis://s:26379\"]\n",
                "`sentinels` need `service_name`",
            ),
            (
                "url = \"redis://a:1\"\nservice_name = \"m\"\n",
                "`service_name` needs `sentinels`",
            ),
            (
                "sentinels = [\"redis://s:26379\"]\nservice_name = \"m\"\ncluster = true\n",
                "`sentinels` and `cluster = true` exclude each other",
            ),
            (
                "sentinels = [\"http://:hunter2x@s:26379\"]\nservice_name = \"m\"\n",
                "sentinels[0]: must start with redis://",
            ),
            (
                "url = \"redis://:hunter2x@a:1\"\nca_file = \"/dev/null\"\n",
                "ca_file needs rediss://",
            ),
            (
                "url = \"rediss://:hunter2x@a:1\"\nca_file = \"/nonexistent/ca.pem\"\n",
                "ca_file /nonexistent/ca.pem: cannot be read",
            ),
            (
                "url = \"rediss://:hunter2x@a:1\"\nca_file = \"/dev/null\"\n",
                "holds no CERTIFICATE block",
            ),
        ] {
            let all = parse(bad).unwrap_err().to_string();
            assert!(all.contains(want), "{bad}: {all}");
            assert!(!all.contains("hunter2x"), "{all}");
        }
    }

    #[test]
    fn kafka_max_in_flight_is_bounded_by_idempotence() {
        let text = "[kafka]\nbrokers = \"127.0.0.1:9092\"\nmax_in_flight = 6\n\n[[sources]]\nname = \"g\"\nprovider = \"github\"\nsecrets = [\"s\"]\n";
        let err = Config::parse(text, "k.toml", &env(&[])).unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains("k.toml:1 [kafka]") && all.contains("max_in_flight = 6"),
            "{all}"
        );
        let ok = text.replace("max_in_flight = 6", "max_in_flight = 5");
        let (c, _) = Config::parse(&ok, "k.toml", &env(&[])).unwrap();
        assert_eq!(c.kafka.unwrap().max_in_flight, 5);
        let default = text.replace("max_in_flight = 6\n", "");
        let (c, _) = Config::parse(&default, "k.toml", &env(&[])).unwrap();
        let k = c.kafka.unwrap();
        assert_eq!((k.max_in_flight, k.linger_ms().as_str()), (1, "0"));
    }

    #[test]
    fn secrets_never_in_problems() {
        let text = "[[sources]]\nname = \"x\"\nprovider = \"discord\"\nsecrets = [\"not-hex-supersecret\"]\n";
        let err = Config::parse(text, "t", &env(&[])).unwrap_err();
        assert!(!err.to_string().contains("supersecret"));
    }

    #[test]
    fn dev_secrets_only_on_loopback() {
        let defaults = dev_secret_defaults();
        assert!(defaults
            .iter()
            .any(|(v, d)| *v == "HOOKGATE_GITHUB_SECRET" && *d == "dev-github-secret"));
        let (c, _) = Config::parse(EMBEDDED, "<embedded>", &env(&[])).unwrap();
        assert_eq!(c.dev_secrets_in_use().len(), c.sources.len());
        assert_eq!(c.check_dev_secrets(), Ok(()));
        let public = env(&[("HOOKGATE__SERVER__LISTEN", "0.0.0.0:8080")]);
        let (c, _) = Config::parse(EMBEDDED, "<embedded>", &public).unwrap();
        let e = c.check_dev_secrets().unwrap_err();
        assert!(e.starts_with("dev_secrets_on_public_listener"), "{e}");
        assert!(
            e.contains("HOOKGATE_GITHUB_SECRET") && e.contains("HOOKGATE_TELEGRAM_SECRET"),
            "{e}"
        );
        // One variable left unset: only its variable is named.
        let mut almost = public.clone();
        for (var, _) in &defaults {
            almost.insert(
                var.to_string(),
                "whsec_cHJvZHVjdGlvbi1zZWNyZXQtdmFsdWU=".into(),
            );
        }
        almost.insert(
            "HOOKGATE_TELEGRAM_SECRET".into(),
            "prod-telegram-secret".into(),
        );
        almost.remove("HOOKGATE_STRIPE_SECRET");
        let (c, _) = Config::parse(EMBEDDED, "<embedded>", &almost).unwrap();
        let e = c.check_dev_secrets().unwrap_err();
        assert!(
            e.contains("HOOKGATE_STRIPE_SECRET") && !e.contains("HOOKGATE_GITHUB_SECRET"),
            "{e}"
        );
        almost.insert("HOOKGATE_STRIPE_SECRET".into(), "prod-stripe-secret".into());
        let (c, _) = Config::parse(EMBEDDED, "<embedded>", &almost).unwrap();
        assert_eq!(c.check_dev_secrets(), Ok(()));
    }

    #[test]
    fn embedded_default_parses() {
        let (c, _) = Config::parse(EMBEDDED, "<embedded>", &env(&[])).unwrap();
        assert!(c.kafka.is_none());
        assert!(c.spool.is_some());
        assert!(!c.sources.is_empty());
    }

    #[test]
    fn spool_retention_and_the_record_limit_are_checked() {
        let src = "\n[[sources]]\nname = \"g\"\nprovider = \"github\"\nsecrets = [\"s\"]\n";
        let (c, _) = Config::parse(
            &format!("[spool]\npath = \"/x\"\n{src}"),
            "s.toml",
            &env(&[]),
        )
        .unwrap();
        let sc = c.spool.unwrap();
        assert_eq!(sc.retention, Duration::from_secs(7 * 24 * 3600));
        let (c, _) = Config::parse(
            &format!("[spool]\nretention = \"36h\"\n{src}"),
            "s.toml",
            &env(&[]),
        )
        .unwrap();
        assert_eq!(c.spool.unwrap().retention, Duration::from_secs(36 * 3600));
        let err = Config::parse(
            &format!("[spool]\nretention = \"0s\"\n{src}"),
            "s.toml",
            &env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("s.toml:1 [spool]") && err.contains("retention"),
            "{err}"
        );
        // A body limit above one spool record: an error with the spool as the log (the
        // embedded default too), none with Kafka alone.
        let big = "[server]\nmax_body_bytes = \"300MiB\"\n";
        for log in ["[spool]\npath = \"/x\"\n", ""] {
            let err = Config::parse(&format!("{big}{log}{src}"), "b.toml", &env(&[]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("b.toml:1 [server]") && err.contains("max_body_bytes = 314572800"),
                "{err}"
            );
        }
        let kafka = "[kafka]\nbrokers = \"127.0.0.1:9092\"\n";
        // (Kafka has limits of its own; none of them is the spool's.)
        if let Err(e) = Config::parse(&format!("{big}{kafka}{src}"), "b.toml", &env(&[])) {
            assert!(!e.to_string().contains("spool record"), "{e}");
        }
    }

    #[test]
    fn trusted_proxies_tls_and_proxy_protocol_are_checked() {
        let src = "[[sources]]\nname = \"g\"\nprovider = \"github\"\nsecrets = [\"s\"]\n";
        let (c, _) = Config::parse(
            &format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\", \"2001:db8::1\"]\nproxy_protocol = true\n{src}"),
            "t.toml",
            &env(&[]),
        )
        .unwrap();
        let nets: Vec<String> = c
            .server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::1/128"]);
        assert!(c.server.proxy_protocol);

        let e = Config::parse(
            &format!("[server]\nproxy_protocol = true\n{src}"),
            "t.toml",
            &env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("proxy_protocol = true needs server.trusted_proxies"),
            "{e}"
        );
        let e = Config::parse(
            &format!("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{src}"),
            "t.toml",
            &env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`10.0.0.0/33` is not an IP address or network"),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not pem at all").unwrap();
        let tls = format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n{src}",
            cert.display(),
            key.display()
        );
        let e = Config::parse(&tls, "t.toml", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.tls") && e.contains(&cert.display().to_string()),
            "{e}"
        );
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&cert, ca.cert.pem()).unwrap();
        let e = Config::parse(&tls, "t.toml", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&key.display().to_string()) && e.contains("cannot read"),
            "{e}"
        );
        // A key that is not the certificate's: named, and no key material in the message.
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key, other.serialize_pem()).unwrap();
        let e = Config::parse(&tls, "t.toml", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not match the certificate"), "{e}");
        assert!(
            !e.contains("PRIVATE KEY") && !e.contains(&other.serialize_pem()[40..80]),
            "{e}"
        );
        std::fs::write(&key, ca.signing_key.serialize_pem()).unwrap();
        let (c, _) = Config::parse(&tls, "t.toml", &env(&[])).unwrap();
        assert_eq!(c.server.tls.unwrap().cert, cert);
    }
}
