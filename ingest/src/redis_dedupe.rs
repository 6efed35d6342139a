//! Dedupe shared by every replica through Redis (`[dedupe.redis]`), with the semantics of
//! the local set (DESIGN.md) held across processes.
//!
//! [`SharedDedupe`] is what the request path calls. The local [`Dedupe`] stays in front: a
//! hit there costs no round trip, and duplicates inside one replica still coalesce onto one
//! attempt before Redis is asked. A local miss claims the key in Redis:
//!
//! - One Lua script claims the key in one round trip, and tells what it holds: a claim
//!   `c:<owner token>:<hookgate-id>:<received-at ms>:<lease end ms>` (another attempt is
//!   running), `d:<hookgate-id>` (committed), or `r:<hookgate-id>:<received-at ms>` (an
//!   earlier attempt failed and released it). The lease end is on the Redis server's clock
//!   (`TIME`), so replicas' clocks do not matter.
//! - **One hookgate-id per delivery.** A claim carries the record the owner is about to
//!   append (its hookgate-id and received-at time). A later claim on a key whose earlier
//!   attempt released it (the append failed, perhaps after the broker got it) or whose
//!   owner died (the lease ended: a replica killed between its append and its answer) takes
//!   the key over *with that id and time*: if the dead attempt's record did reach Kafka,
//!   the retry's record is the same record again (same `hookgate-id`, same
//!   `hookgate-received-at`), which a consumer deduping on `hookgate-id` sees as one
//!   event. The key itself lives for the dedupe TTL from the first claim, so the id is not
//!   forgotten when a lease ends.
//! - The owner runs the append, renewing its lease every `claim_ttl / 3` while it runs (a
//!   slow append is not mistaken for a dead owner). Success: a compare-and-set (Lua) turns
//!   the key into `d:<event id>` with the dedupe TTL. Failure: a compare-and-set turns it
//!   into `r:…` (released, id kept), so the provider's retry is accepted at once. Both
//!   compare the owner token: a replica whose claim was taken over cannot release or
//!   overwrite the new owner's claim.
//! - A claim held by another replica is waited on by polling the same claim script with
//!   backoff (2 ms doubling to 100 ms): committed → a duplicate with the owner's event id;
//!   released or lease ended (the owner failed or died) → this call claims and appends
//!   itself, with the earlier attempt's id. The wait is bounded by `claim_ttl` plus a
//!   margin; unresolved, the request is refused with 503 + Retry-After and the provider
//!   retries. Polling rather than pub/sub: waits are rare (only concurrent copies on
//!   different replicas), it needs no subscriber connection per replica, and it works
//!   unchanged on Redis Cluster.
//!
//! Redis unavailable is decided per operation: a command that fails or times out (refused,
//! a paused server, a paused Cluster node) fails *that* request per `on_unavailable`
//! (`reject`: 503 `dedupe_unavailable`; `local`: this replica's set alone decides, and the
//! id is queued to be written back to Redis once it answers, so a retry landing on
//! another replica later is still a duplicate). Requests whose keys live on nodes that
//! answer go on as usual. Health is a gauge of recent failures, not a gate: the first
//! failure marks the store failing, a prober pings every [`PROBE_EVERY`], and a probe that
//! every node answered clears it, unless an operation failed since the probe before it
//! (a PING can succeed while commands fail: Redis at `maxmemory` refusing writes, or a
//! Cluster node the client holds no connection to). [`Health`] tells whether any operation has succeeded
//! since the failures began (`Partial`: e.g. one Cluster node down) or none (`Down`).
//!
//! **Value formats** (replicas of different versions share the keys during a rolling
//! update, so every version must read the others' values):
//! - first format (`4e495fa`): `c:<token>` (a claim, key TTL `claim_ttl`, renewed with
//!   `PEXPIRE`, released with `DEL`) and `d:<hookgate-id>` (committed);
//! - this format: `c:<token>:<hookgate-id>:<received-at>:<lease end>` (key TTL the dedupe
//!   TTL), `r:<hookgate-id>:<received-at>` and the same `d:<hookgate-id>`.
//!
//! This version reads both: a first-format claim is waited on like any live claim (its key
//! expires after `claim_ttl` if its owner died). From this version on, a later one may
//! append `:`-separated fields to any value (they are ignored here), and a change that must
//! not be ignored uses a new leading letter: this version then refuses the delivery with
//! 503 `dedupe_unreadable` (never an append, under `local` too), counts it
//! (`hookgate_dedupe_redis_unreadable_total`) and logs it once. `d:<hookgate-id>` stays as it
//! is: committed keys are most keys, and every version reads it.
//!
//! Keys are `key_prefix` + source name + `:` + the first 128 bits of SHA-256 of the
//! delivery id (hex): bounded whatever the id's length, and not forgeable into a collision.
//! The URL may hold a password: it is never logged, and errors name only their kind.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hookgate_proto::Ulid;
use hookgate_sinks::Secret;
use metrics::{Counter, Gauge, Histogram};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use crate::config::{OnUnavailable, RedisDedupeConfig};
use crate::dedupe::{Admission, Dedupe};

/// How often the store is pinged (to notice an outage with no traffic, and a recovery).
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How much longer than `claim_ttl` a duplicate waits for another replica's attempt.
pub const WAIT_MARGIN: Duration = Duration::from_secs(2);
/// `Retry-After` when Redis is unavailable (seconds).
pub const UNAVAILABLE_RETRY_AFTER: u32 = 1;
/// `Retry-After` when another replica's attempt did not finish in time (seconds).
pub const PENDING_RETRY_AFTER: u32 = 2;

/// Ids committed on one replica alone while Redis failed (`local`) that are kept to be
/// written back; more are dropped (and counted).
pub const WRITE_BACK_MAX: usize = 100_000;
/// Ids written back per prober round at most.
const WRITE_BACK_BATCH: usize = 512;

const FIRST_POLL: Duration = Duration::from_millis(2);
const MAX_POLL: Duration = Duration::from_millis(100);

/// Why the shared store could not decide on a delivery. The request path answers 503 with
/// `Retry-After`; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreRefusal {
    /// Redis cannot be reached (and `on_unavailable = "reject"`).
    #[error("the shared dedupe store is unavailable")]
    Unavailable,
    /// Another replica holds the delivery's claim and did not finish within the wait.
    #[error("another replica's attempt at this delivery did not finish in time")]
    Pending,
    /// The delivery's key holds a value this version cannot read (a later version's
    /// format, or not hookgate's). Refused whatever `on_unavailable` says.
    #[error("the shared dedupe store holds this delivery in a format this version does not read")]
    Unreadable,
}

/// Checks a Redis URL without echoing it (it may hold a password).
pub fn check_url(url: &str) -> Result<(), String> {
    let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
        .iter()
        .any(|s| url.starts_with(s));
    if !scheme_ok {
        return Err("must start with redis:// (rediss:// for TLS, or unix://)".into());
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| format!("is not a usable Redis URL ({})", e.category()))
}

/// Reads `[dedupe.redis] ca_file`: PEM holding at least one certificate. The error names the
/// file and the key, never its contents.
pub fn load_ca(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;
    let pem = std::fs::read(path)
        .map_err(|e| format!("ca_file {}: cannot be read ({})", path.display(), e.kind()))?;
    let mut n = 0usize;
    for c in CertificateDer::pem_slice_iter(&pem) {
        if c.is_err() {
            return Err(format!("ca_file {}: is not valid PEM", path.display()));
        }
        n += 1;
    }
    if n == 0 {
        return Err(format!(
            "ca_file {}: holds no CERTIFICATE block",
            path.display()
        ));
    }
    Ok(pem)
}

/// The trust roots for `rediss://` when `ca_file` is set.
fn tls_certs(cfg: &RedisDedupeConfig) -> Result<Option<redis::TlsCertificates>, String> {
    let Some(path) = &cfg.ca_file else {
        return Ok(None);
    };
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(load_ca(path)?),
    }))
}

/// A connection: one multiplexed, reconnecting connection to a server, a cluster client,
/// or the master that Sentinel names.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

impl Conn {
    /// A command on this connection failed or timed out: with Sentinel, ask again which
    /// server is the master before the next one (it may have failed over).
    fn failed(&self) {
        if let Conn::Sentinel(s) = self {
            s.forget();
        }
    }
}

/// One multiplexed connection to the master Sentinel names, found again after a failure.
struct SentinelConn {
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    current: Mutex<Option<redis::aio::MultiplexedConnection>>,
    config: redis::AsyncConnectionConfig,
}

impl SentinelConn {
    fn cached(&self) -> Option<redis::aio::MultiplexedConnection> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    /// The connection to the master, asking the sentinels when there is none.
    async fn get(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut client = self.client.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let c = client
            .get_async_connection_with_config(&self.config)
            .await?;
        if let Ok(mut slot) = self.current.lock() {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    fn forget(&self) {
        if let Ok(mut slot) = self.current.lock() {
            *slot = None;
        }
    }

    /// Whether `e` says the server is gone or no longer the master. (A timeout is not
    /// decided here: see [`RedisStore::run_on`].)
    fn is_lost(e: &redis::RedisError) -> bool {
        e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut c = s.get().await.inspect_err(|_| s.forget())?;
                c.req_packed_command(cmd).await.inspect_err(|e| {
                    if SentinelConn::is_lost(e) {
                        s.forget();
                    }
                })
            }),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut c = s.get().await.inspect_err(|_| s.forget())?;
                c.req_packed_commands(pipeline, offset, count)
                    .await
                    .inspect_err(|e| {
                        if SentinelConn::is_lost(e) {
                            s.forget();
                        }
                    })
            }),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(s) => s.cached().map(|c| c.get_db()).unwrap_or(0),
        }
    }
}

/// The operations timed and counted (the `op` label).
#[derive(Clone, Copy)]
enum Op {
    Claim,
    Renew,
    Commit,
    Release,
    Ping,
    WriteBack,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::Claim,
        Op::Renew,
        Op::Commit,
        Op::Release,
        Op::Ping,
        Op::WriteBack,
    ];
    fn name(self) -> &'static str {
        match self {
            Op::Claim => "claim",
            Op::Renew => "renew",
            Op::Commit => "commit",
            Op::Release => "release",
            Op::Ping => "ping",
            Op::WriteBack => "write_back",
        }
    }
}

/// Pre-registered metric handles, so the request path builds no labels.
struct Meters {
    seconds: Vec<Histogram>,
    errors_timeout: Vec<Counter>,
    errors_other: Vec<Counter>,
    claims: Counter,
    waits: Counter,
    remote_hits: Counter,
    local_fallbacks: Counter,
    refused_unavailable: Counter,
    refused_pending: Counter,
    refused_unreadable: Counter,
    claims_lost: Counter,
    reused: Counter,
    unreadable: Counter,
    written_back: Counter,
    write_back_present: Counter,
    write_back_dropped: Counter,
    write_back_pending: Gauge,
    degraded: Gauge,
    degraded_total: Counter,
}

impl Meters {
    fn new() -> Meters {
        let per_op = |f: &dyn Fn(&'static str) -> Counter| -> Vec<Counter> {
            Op::ALL.iter().map(|o| f(o.name())).collect()
        };
        Meters {
            seconds: Op::ALL
                .iter()
                .map(|o| metrics::histogram!("hookgate_dedupe_redis_seconds", "op" => o.name()))
                .collect(),
            errors_timeout: per_op(
                &|op| metrics::counter!("hookgate_dedupe_redis_errors_total", "op" => op, "kind" => "timeout"),
            ),
            errors_other: per_op(
                &|op| metrics::counter!("hookgate_dedupe_redis_errors_total", "op" => op, "kind" => "error"),
            ),
            claims: metrics::counter!("hookgate_dedupe_redis_claims_total"),
            waits: metrics::counter!("hookgate_dedupe_redis_waits_total"),
            remote_hits: metrics::counter!("hookgate_dedupe_redis_hits_total"),
            local_fallbacks: metrics::counter!("hookgate_dedupe_redis_local_total"),
            refused_unavailable: metrics::counter!("hookgate_dedupe_redis_refused_total", "reason" => "unavailable"),
            refused_pending: metrics::counter!("hookgate_dedupe_redis_refused_total", "reason" => "pending"),
            refused_unreadable: metrics::counter!("hookgate_dedupe_redis_refused_total", "reason" => "unreadable"),
            claims_lost: metrics::counter!("hookgate_dedupe_redis_claims_lost_total"),
            reused: metrics::counter!("hookgate_dedupe_redis_reused_total"),
            unreadable: metrics::counter!("hookgate_dedupe_redis_unreadable_total"),
            written_back: metrics::counter!("hookgate_dedupe_redis_write_back_total", "result" => "written"),
            write_back_present: metrics::counter!("hookgate_dedupe_redis_write_back_total", "result" => "present"),
            write_back_dropped: metrics::counter!("hookgate_dedupe_redis_write_back_total", "result" => "dropped"),
            write_back_pending: metrics::gauge!("hookgate_dedupe_redis_write_back_pending"),
            degraded: metrics::gauge!("hookgate_dedupe_redis_degraded"),
            degraded_total: metrics::counter!("hookgate_dedupe_redis_degraded_total"),
        }
    }
}

/// The record a delivery is appended as: its hookgate-id and received-at time. A claim in
/// Redis carries it, so whichever replica appends the delivery appends the same record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intent {
    /// The event's hookgate-id.
    pub id: Ulid,
    /// The event's received-at time (ms since the epoch).
    pub received_at_ms: i64,
}

/// Claims a key (KEYS[1]; ARGV: owner token, hookgate-id, received-at ms, claim TTL ms,
/// key TTL ms). Returns `o:<id>:<received-at>` (this call owns it, and appends as that:
/// its own intent, or an earlier attempt's), `d:<id>…` (committed), `w` (another attempt
/// holds a live claim), or a value it cannot read as it is.
///
/// Formats it reads (see "Value formats" in the module docs): `d:<id>`, `c:<token>:<id>:
/// <received-at>:<lease end>`, `r:<id>:<received-at>`, each possibly followed by more
/// `:`-separated fields (a later version's additions, ignored); and the first format's
/// claim `c:<token>`, which has no lease: it lives until its key expires (`claim_ttl`) or
/// its owner commits or deletes it, so it is waited on.
const CLAIM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('GET', KEYS[1])
local id, at = ARGV[2], ARGV[3]
if v then
  local kind = string.sub(v, 1, 2)
  if kind == 'd:' then return v end
  if kind == 'c:' then
    local owner, cid, cat, lease = string.match(v, '^c:([^:]+):([^:]+):([^:]+):(%d+)')
    if not owner then
      if string.match(v, '^c:[^:]+$') then return 'w' end
      return v
    end
    if tonumber(lease) > now then return 'w' end
    id, at = cid, cat
  elseif kind == 'r:' then
    local rid, rat = string.match(v, '^r:([^:]+):([^:]+)')
    if not rid then return v end
    id, at = rid, rat
  else
    return v
  end
end
redis.call('SET', KEYS[1], 'c:' .. ARGV[1] .. ':' .. id .. ':' .. at .. ':' .. string.format('%d', now + tonumber(ARGV[4])), 'PX', ARGV[5])
return 'o:' .. id .. ':' .. at";

/// Turns a claim into a commit: only the owner's claim (or a key gone meanwhile: the event
/// is in the log either way) becomes `d:<event id>`.
const COMMIT: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or string.match(v, '^c:([^:]+):') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";

/// Releases the owner's claim, keeping the id it carried (`r:<id>:<received-at>`): the
/// failed append may have reached the broker, and the retry must append the same record.
const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local owner, id, at = string.match(v, '^c:([^:]+):([^:]+):([^:]+):')
if owner == ARGV[1] then
  redis.call('SET', KEYS[1], 'r:' .. id .. ':' .. at, 'KEEPTTL')
  return 1
end
return 0";

/// Writes back an id committed while Redis failed: SET NX with the dedupe TTL, and over a
/// released key (the request's own timed-out claim, released when the server woke).
const WRITE_BACK: &str = r"
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 2) == 'r:' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Extends the owner's lease only if it still holds the claim.
const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local owner, id, at = string.match(v, '^c:([^:]+):([^:]+):([^:]+):')
if owner ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], 'c:' .. owner .. ':' .. id .. ':' .. at .. ':' .. string.format('%d', now + tonumber(ARGV[2])), 'KEEPTTL')
return 1";

/// A Lua script on one key, run by its SHA1 (`EVALSHA`) and, when the server does not
/// hold it (`NOSCRIPT`: a restarted node, a promoted replica, `SCRIPT FLUSH`), by its body
/// (`EVAL`, which also caches it there). Both are routed by the key, so on a Cluster they go
/// to the key's node only. Not `redis::Script::invoke_async`: that loads a missing script
/// with `SCRIPT LOAD`, which the cluster client sends to every node and which fails while
/// any one node does not answer, failing deliveries whose keys live on answering nodes.
struct Lua {
    script: Script,
    body: &'static str,
}

impl Lua {
    fn new(body: &'static str) -> Lua {
        Lua {
            script: Script::new(body),
            body,
        }
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        c: &mut Conn,
        key: &str,
        args: &[String],
    ) -> redis::RedisResult<T> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(1).arg(key).arg(args);
        match cmd.query_async(c).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(self.body).arg(1).arg(key).arg(args);
                cmd.query_async(c).await
            }
            other => other,
        }
    }
}

/// What claiming a key found.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// This call owns the key under this token, and appends as this intent.
    Owner(String, Intent),
    /// Committed, by this or another replica, as this event.
    Committed(Ulid),
}

/// How the shared store is doing (`/readyz`, [`RedisStore::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No operation failed since the last probe every node answered.
    Ok,
    /// Some operations failed, and some succeeded since (e.g. one Cluster node down).
    Partial,
    /// Operations fail, and none succeeded since the failures began.
    Down,
}

/// The Redis side: connections, the claim protocol, health.
pub struct RedisStore {
    conns: Vec<Conn>,
    next: AtomicUsize,
    prefix: String,
    /// Source names by index (the request path knows sources by index; replicas share names).
    sources: Vec<String>,
    on_unavailable: OnUnavailable,
    command_timeout: Duration,
    claim_ttl: Duration,
    ttl: Duration,
    /// The origin of the millisecond instants below.
    epoch: Instant,
    /// When operations began to fail (ms after `epoch`, plus one; 0: they do not): set by
    /// the first failure, cleared by a probe that every node answered.
    failing_since: AtomicU64,
    /// When an operation last succeeded (ms after `epoch`, plus one).
    last_ok: AtomicU64,
    /// When an operation last failed (ms after `epoch`, plus one; 0: never).
    last_fail: AtomicU64,
    /// When the previous probe began (ms after `epoch`, plus one; 0: none yet).
    last_probe: AtomicU64,
    /// Keys and ids committed locally while Redis failed, and commits whose command
    /// failed (with the owner's token), to write back (bounded).
    write_back: Mutex<VecDeque<WriteBack>>,
    /// The queue on disk (`serve` with a spool: `<spool>/dedupe/redis-write-back.jsonl`),
    /// so a restart or a crash during an outage does not lose it. Locked before
    /// `write_back` wherever both are.
    journal: Mutex<Option<Journal>>,
    write_back_script: Lua,
    claim: Lua,
    commit: Lua,
    release: Lua,
    renew: Lua,
    meters: Meters,
    /// A client for the first URL, used once per outage to learn why connecting fails
    /// (a distrusted certificate, a wrong password): the pooled connections only time out.
    diag: Option<redis::Client>,
    diagnosed: AtomicBool,
    /// Whether an unreadable value was logged (once per process).
    warned_unreadable: AtomicBool,
    connect_timeout: Duration,
    urls: Vec<Secret>,
}

impl RedisStore {
    /// Builds the store from config (connections are made lazily: an unreachable Redis at
    /// start is an outage like any other, handled per `on_unavailable`). `sources` are the
    /// configured source names in order; `ttl` is the dedupe TTL.
    pub fn new(
        cfg: &RedisDedupeConfig,
        sources: Vec<String>,
        ttl: Duration,
    ) -> Result<RedisStore, String> {
        let urls = cfg.node_urls()?;
        let redact = |e: redis::RedisError| redact(&urls, &e.to_string());
        let certs = tls_certs(cfg)?;
        let diag = urls.first().and_then(|u| {
            match certs.clone() {
                Some(c) => redis::Client::build_with_tls(u.expose(), c),
                None => redis::Client::open(u.expose()),
            }
            .ok()
        });
        let mut conns = Vec::with_capacity(cfg.pool_size);
        if !cfg.sentinels.is_empty() {
            let name = cfg.service_name.clone().unwrap_or_default();
            for _ in 0..cfg.pool_size.max(1) {
                let client = redis::sentinel::SentinelClient::build(
                    urls.iter().map(|u| u.expose().to_owned()).collect(),
                    name.clone(),
                    None,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| format!("redis sentinel: {}", redact(e)))?;
                conns.push(Conn::Sentinel(Arc::new(SentinelConn {
                    client: tokio::sync::Mutex::new(client),
                    current: Mutex::new(None),
                    // No response timeout here: `run_on` bounds every command, and decides
                    // when a slow server is given up for another.
                    config: redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(cfg.connect_timeout))
                        .set_response_timeout(None),
                })));
            }
        } else if cfg.cluster {
            let mut builder = redis::cluster::ClusterClientBuilder::new(
                urls.iter().map(|u| u.expose().to_owned()),
            )
            .connection_timeout(cfg.connect_timeout)
            .response_timeout(cfg.command_timeout)
            .retries(1);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            let client = builder
                .build()
                .map_err(|e| format!("redis cluster: {}", redact(e)))?;
            for _ in 0..cfg.pool_size.max(1) {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(cfg.connect_timeout)
                    .set_response_timeout(cfg.command_timeout);
                conns.push(Conn::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ));
            }
        } else {
            let url = urls.first().ok_or("no Redis URL")?;
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(url.expose(), certs),
                None => redis::Client::open(url.expose()),
            }
            .map_err(|e| format!("redis: {}", redact(e)))?;
            for _ in 0..cfg.pool_size.max(1) {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(cfg.connect_timeout))
                    .set_response_timeout(Some(cfg.command_timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let m = ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map_err(|e| format!("redis: {}", redact(e)))?;
                conns.push(Conn::Single(m));
            }
        }
        let meters = Meters::new();
        meters.degraded.set(0.0);
        Ok(RedisStore {
            conns,
            next: AtomicUsize::new(0),
            prefix: cfg.key_prefix.clone(),
            sources,
            on_unavailable: cfg.on_unavailable,
            command_timeout: cfg.command_timeout,
            claim_ttl: cfg.claim_ttl,
            ttl,
            epoch: Instant::now(),
            failing_since: AtomicU64::new(0),
            last_ok: AtomicU64::new(0),
            last_fail: AtomicU64::new(0),
            last_probe: AtomicU64::new(0),
            write_back: Mutex::new(VecDeque::new()),
            journal: Mutex::new(None),
            write_back_script: Lua::new(WRITE_BACK),
            claim: Lua::new(CLAIM),
            commit: Lua::new(COMMIT),
            release: Lua::new(RELEASE),
            renew: Lua::new(RENEW),
            meters,
            diag,
            diagnosed: AtomicBool::new(false),
            warned_unreadable: AtomicBool::new(false),
            connect_timeout: cfg.connect_timeout,
            urls,
        })
    }

    /// Whether no operation has failed since the last probe every node answered.
    pub fn is_healthy(&self) -> bool {
        self.failing_since.load(Ordering::Relaxed) == 0
    }

    /// How the store is doing: see [`Health`].
    pub fn health(&self) -> Health {
        let since = self.failing_since.load(Ordering::Relaxed);
        if since == 0 {
            Health::Ok
        } else if self.last_ok.load(Ordering::Relaxed) > since {
            Health::Partial
        } else {
            Health::Down
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// Ids waiting to be written back to Redis.
    pub fn write_back_pending(&self) -> usize {
        self.write_back.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Queues an id committed on this replica alone while Redis failed.
    fn queue_write_back(&self, key: String, id: Ulid) {
        self.queue(WriteBack {
            key,
            id,
            owner: None,
        });
    }

    fn queue(&self, w: WriteBack) {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(mut q) = self.write_back.lock() else {
            return;
        };
        if q.len() >= WRITE_BACK_MAX {
            self.meters.write_back_dropped.increment(1);
            return;
        }
        if let Some(j) = journal.as_mut() {
            // Written before the delivery is answered, like the spool's id store: a process
            // killed after the answer still has it (fsync'd by the next write-back pass).
            j.append(&w);
        }
        q.push_back(w);
        self.meters.write_back_pending.set(q.len() as f64);
    }

    /// Keeps the write-back queue in the file at `path` from now on, and queues what an
    /// earlier process left there (ids it accepted alone, or commits it could not tell
    /// Redis, before it stopped or was killed during an outage). Returns how many were
    /// re-queued. Call before serving.
    pub fn open_journal(&self, path: &std::path::Path) -> std::io::Result<usize> {
        let (file, left) = Journal::open(path)?;
        let n = left.len();
        *self.journal.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        // Re-written by `queue`: the file was emptied, so what is still to do is in it once.
        for w in left {
            self.queue(w);
        }
        Ok(n)
    }

    /// Writes queued ids back to Redis (at most a batch), stopping at the first failure
    /// (the id stays queued). Returns how many were handled.
    pub async fn write_back(&self) -> usize {
        let px = self.ttl.as_millis().max(1) as u64;
        let mut done = 0;
        while done < WRITE_BACK_BATCH {
            let next = self.write_back.lock().ok().and_then(|mut q| q.pop_front());
            let Some(w) = next else { break };
            let value = format!("d:{}", w.id);
            let res: Result<i64, ()> = self
                .run(Op::WriteBack, |mut c| {
                    let key = &w.key;
                    let (script, args) = match &w.owner {
                        None => (&self.write_back_script, vec![value.clone(), px.to_string()]),
                        Some(token) => (
                            &self.commit,
                            vec![token.clone(), value.clone(), px.to_string()],
                        ),
                    };
                    async move { script.eval(&mut c, key, &args).await }
                })
                .await;
            match res {
                Ok(1) => self.meters.written_back.increment(1),
                Ok(_) => self.meters.write_back_present.increment(1),
                Err(()) => {
                    if let Ok(mut q) = self.write_back.lock() {
                        q.push_front(w);
                    }
                    break;
                }
            }
            done += 1;
        }
        {
            // Everything queued was handled: nothing in the file is left to do. (Entries
            // are queued with the journal locked, so none is added between the two locks.)
            let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(j) = journal.as_mut() {
                if self.write_back_pending() == 0 {
                    j.clear();
                } else {
                    j.sync();
                }
            }
        }
        self.meters
            .write_back_pending
            .set(self.write_back_pending() as f64);
        done
    }

    /// What an outage does.
    pub fn on_unavailable(&self) -> OnUnavailable {
        self.on_unavailable
    }

    /// The Redis key of delivery id `id` of the source with index `source` (config order).
    pub fn key(&self, source: u32, id: &str) -> String {
        let name = self
            .sources
            .get(source as usize)
            .map(String::as_str)
            .unwrap_or("?");
        let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
        let mut k = String::with_capacity(self.prefix.len() + name.len() + 33);
        k.push_str(&self.prefix);
        k.push_str(name);
        k.push(':');
        k.push_str(&hex::encode(d.as_ref().get(..16).unwrap_or_default()));
        k
    }

    fn conn(&self) -> Option<Conn> {
        let n = self.conns.len();
        if n == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        self.conns.get(i).cloned()
    }

    /// Runs one command (or script) on the next connection; see [`RedisStore::run_on`].
    async fn run<T, Fut>(&self, op: Op, f: impl FnOnce(Conn) -> Fut) -> Result<T, ()>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let Some(conn) = self.conn() else {
            return Err(());
        };
        self.run_on(conn, op, f).await
    }

    /// Runs one command (or script) on `conn` under `command_timeout`, timed and counted;
    /// a failure marks the store degraded.
    async fn run_on<T, Fut>(&self, conn: Conn, op: Op, f: impl FnOnce(Conn) -> Fut) -> Result<T, ()>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let start = Instant::now();
        let on_fail = conn.clone();
        let res = tokio::time::timeout(self.command_timeout, f(conn)).await;
        // A claim that failed is released down the same connection first (see `claim`),
        // which then gives the connection up if that fails too.
        if !matches!(res, Ok(Ok(_))) && !matches!(op, Op::Claim) {
            on_fail.failed();
        }
        let i = op as usize;
        if let Some(h) = self.meters.seconds.get(i) {
            h.record(start.elapsed().as_secs_f64());
        }
        match res {
            Ok(Ok(v)) => {
                self.last_ok.fetch_max(self.now_ms(), Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => {
                let (counters, kind) = if e.is_timeout() {
                    (&self.meters.errors_timeout, "timeout")
                } else {
                    (&self.meters.errors_other, "error")
                };
                if let Some(c) = counters.get(i) {
                    c.increment(1);
                }
                // The kind and category only: a RedisError's text can name the server.
                self.set_degraded(op, kind, Some(e.category()));
                Err(())
            }
            Err(_) => {
                if let Some(c) = self.meters.errors_timeout.get(i) {
                    c.increment(1);
                }
                self.set_degraded(op, "timeout", None);
                Err(())
            }
        }
    }

    fn set_degraded(&self, op: Op, kind: &str, detail: Option<&str>) {
        let now = self.now_ms();
        self.last_fail.fetch_max(now, Ordering::Relaxed);
        let first = self
            .failing_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if first {
            self.meters.degraded.set(1.0);
            self.meters.degraded_total.increment(1);
            let mode = match self.on_unavailable {
                OnUnavailable::Reject => {
                    "deliveries whose commands fail are refused with 503 until it answers"
                }
                OnUnavailable::Local => {
                    "deliveries whose commands fail are deduped on this replica alone and written back later (on_unavailable = local)"
                }
            };
            tracing::warn!(
                op = op.name(),
                kind,
                detail = detail.unwrap_or(""),
                "redis dedupe store unavailable: {mode}"
            );
        }
    }

    fn set_healthy(&self) {
        if self.failing_since.swap(0, Ordering::Relaxed) != 0 {
            self.diagnosed.store(false, Ordering::Relaxed);
            self.meters.degraded.set(0.0);
            tracing::info!("redis dedupe store reachable again: shared dedupe resumed");
        }
    }

    /// A PING on every connection (on a Cluster, every node); marks the store healthy when
    /// all answered and no operation failed since the previous probe began. So a store
    /// that answers PING while its commands keep failing stays failing (before, each probe
    /// cleared it and the next failure set it again: `/readyz` and the gauge flapped).
    pub async fn probe(&self) -> bool {
        let began = self.now_ms();
        let previous = self.last_probe.swap(began, Ordering::Relaxed);
        for conn in &self.conns {
            let ok = self
                .run_on(conn.clone(), Op::Ping, |mut c| async move {
                    redis::cmd("PING").query_async::<String>(&mut c).await
                })
                .await
                .is_ok();
            if !ok {
                if !self.diagnosed.swap(true, Ordering::Relaxed) {
                    self.diagnose().await;
                }
                return false;
            }
        }
        let failed = self.last_fail.load(Ordering::Relaxed);
        if failed != 0 && failed >= previous {
            return false;
        }
        self.set_healthy();
        true
    }

    /// Connects once, outside the pool, and logs why it fails (once per outage). The text
    /// is the client's (e.g. `invalid peer certificate: UnknownIssuer`, `WRONGPASS`) with
    /// every URL and password cut out.
    async fn diagnose(&self) {
        let Some(client) = &self.diag else { return };
        let res = tokio::time::timeout(
            self.connect_timeout,
            client.get_multiplexed_async_connection(),
        )
        .await;
        match res {
            Ok(Err(e)) => tracing::warn!(
                detail = %redact(&self.urls, &e.to_string()),
                "redis dedupe store: connecting fails (for rediss://, check ca_file and the server's certificate)"
            ),
            Err(_) => tracing::warn!("redis dedupe store: connecting timed out"),
            Ok(Ok(_)) => {}
        }
    }

    /// Pings Redis every [`PROBE_EVERY`] until `stop` fires.
    pub fn spawn_prober(
        self: &Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.probe().await;
                if me.write_back_pending() > 0 {
                    me.write_back().await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(PROBE_EVERY) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    }

    /// Claims `key` for `intent`, waiting on another replica's claim (bounded) until it is
    /// committed, released or its lease ends. A key an earlier attempt released or left
    /// behind is claimed with that attempt's intent, returned in [`Claim::Owner`].
    async fn claim(self: &Arc<Self>, key: &str, intent: Intent) -> Result<Claim, StoreRefusal> {
        let token = format!("{:032x}", rand::random::<u128>());
        let px = self.claim_ttl.as_millis().max(1) as u64;
        let keep_px = self.ttl.as_millis().max(1) as u64;
        let id = intent.id.to_string();
        let deadline = Instant::now() + self.claim_ttl + WAIT_MARGIN;
        let mut pause = FIRST_POLL;
        let mut waited = false;
        loop {
            let Some(conn) = self.conn() else {
                return Err(StoreRefusal::Unavailable);
            };
            let found: String = match self
                .run_on(conn.clone(), Op::Claim, |mut c| {
                    let args = [
                        token.clone(),
                        id.clone(),
                        intent.received_at_ms.to_string(),
                        px.to_string(),
                        keep_px.to_string(),
                    ];
                    async move { self.claim.eval(&mut c, key, &args).await }
                })
                .await
            {
                Ok(found) => found,
                Err(()) => {
                    // A hung server may still run the claim when it wakes: the release goes
                    // down the same connection, so it runs after the claim and frees the key
                    // for the provider's retry at once instead of after `claim_ttl`. (With
                    // Sentinel the connection is given up only if the release fails too:
                    // a new one could run the release before the claim.)
                    let (me, key, token) = (self.clone(), key.to_owned(), token.clone());
                    tokio::spawn(async move { me.release_on(Some(conn), &key, &token).await });
                    return Err(StoreRefusal::Unavailable);
                }
            };
            if let Some(owned) = found.strip_prefix("o:") {
                let Some(got) = parse_intent(owned) else {
                    return Err(self.unreadable());
                };
                self.meters.claims.increment(1);
                if got != intent {
                    self.meters.reused.increment(1);
                }
                return Ok(Claim::Owner(token, got));
            }
            if let Some(done) = found.strip_prefix("d:") {
                // A later version may append fields after the id.
                let done = done.split(':').next().unwrap_or_default();
                return match Ulid::from_string(done) {
                    Ok(u) => {
                        self.meters.remote_hits.increment(1);
                        Ok(Claim::Committed(u))
                    }
                    Err(_) => Err(self.unreadable()),
                };
            }
            if found != "w" {
                return Err(self.unreadable());
            }
            if !waited {
                waited = true;
                self.meters.waits.increment(1);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreRefusal::Pending);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// A key under the prefix holds a value this version cannot read: written by a later
    /// hookgate in a format it changed incompatibly (a mixed-version rollout), or by
    /// something else sharing the prefix. The delivery is refused without an append, under
    /// `local` too: the value may stand for a committed or running attempt.
    fn unreadable(&self) -> StoreRefusal {
        self.meters.unreadable.increment(1);
        if !self.warned_unreadable.swap(true, Ordering::Relaxed) {
            tracing::error!(
                "redis dedupe: a key under key_prefix holds a value this version cannot read (a newer hookgate's format, or the prefix is shared with something else); such deliveries are refused with 503 dedupe_unreadable until every replica runs the same version (logged once; hookgate_dedupe_redis_unreadable_total counts them)"
            );
        }
        StoreRefusal::Unreadable
    }

    /// Turns the owner's claim into `d:<id>` for the dedupe TTL. `false` when the store
    /// could not be told (the key then frees itself when the claim expires).
    async fn commit(&self, key: &str, token: &str, id: Ulid) -> bool {
        let px = self.ttl.as_millis().max(1) as u64;
        let value = format!("d:{id}");
        let res: Result<i64, ()> = self
            .run(Op::Commit, |mut c| async move {
                let args = [token.to_owned(), value, px.to_string()];
                self.commit.eval(&mut c, key, &args).await
            })
            .await;
        match res {
            Ok(1) => true,
            Ok(_) => {
                self.meters.claims_lost.increment(1);
                tracing::warn!("redis dedupe: this replica's claim expired and another replica took the delivery over while the append ran; the delivery may be in the log twice (raise claim_ttl?)");
                true
            }
            Err(()) => {
                tracing::warn!("redis dedupe: the event is in the log but could not be recorded as committed in Redis; the commit is queued and written back when Redis answers (until then its claim's lease runs out after claim_ttl)");
                self.queue(WriteBack {
                    key: key.to_owned(),
                    id,
                    owner: Some(token.to_owned()),
                });
                false
            }
        }
    }

    /// Releases the owner's claim (the append failed), so a retry is accepted at once.
    async fn release(&self, key: &str, token: &str) {
        self.release_on(None, key, token).await;
    }

    /// [`RedisStore::release`] on `conn` (else the next connection).
    async fn release_on(&self, conn: Option<Conn>, key: &str, token: &str) {
        let Some(conn) = conn.or_else(|| self.conn()) else {
            return;
        };
        let _ = self
            .run_on(conn, Op::Release, |mut c| async move {
                self.release
                    .eval::<i64>(&mut c, key, &[token.to_owned()])
                    .await
            })
            .await;
    }

    /// Extends the owner's claim while its append runs.
    async fn renew(&self, key: &str, token: &str) {
        let px = self.claim_ttl.as_millis().max(1) as u64;
        let res: Result<i64, ()> = self
            .run(Op::Renew, |mut c| async move {
                let args = [token.to_owned(), px.to_string()];
                self.renew.eval(&mut c, key, &args).await
            })
            .await;
        if res == Ok(0) {
            self.meters.claims_lost.increment(1);
        }
    }

    /// Runs `append` as the owner of `key`: renews the claim while it runs, then commits
    /// (success) or releases (failure). A dropped call releases the claim in the background.
    async fn run_owned<E, F>(
        self: &Arc<Self>,
        key: String,
        token: String,
        append: F,
    ) -> Result<Ulid, E>
    where
        F: Future<Output = Result<Ulid, E>>,
    {
        let mut guard = ClaimGuard {
            store: self.clone(),
            key: Some((key, token)),
        };
        let mut append = std::pin::pin!(append);
        let renew_every = self.claim_ttl / 3;
        let res = loop {
            tokio::select! {
                r = &mut append => break r,
                _ = tokio::time::sleep(renew_every) => {
                    if let Some((k, t)) = &guard.key {
                        self.renew(k, t).await;
                    }
                }
            }
        };
        if let Some((key, token)) = guard.key.take() {
            match &res {
                Ok(id) => {
                    self.commit(&key, &token, *id).await;
                }
                Err(_) => self.release(&key, &token).await,
            }
        }
        res
    }
}

/// An id to record in Redis once it answers again.
struct WriteBack {
    key: String,
    id: Ulid,
    /// `Some(token)`: this replica's own claim, whose commit failed (only that claim, or
    /// an absent key, becomes the commit: a replica that took the key over after the
    /// lease ended keeps it). `None`: an id committed under `local` while Redis failed.
    owner: Option<String>,
}

/// The write-back queue on disk: one JSON line `[key, hookgate-id, owner token or null]`
/// per queued entry, appended; emptied when the queue is; read back at start.
struct Journal {
    file: std::fs::File,
    /// A write failed part-way: the next line starts with a newline.
    broken_line: bool,
}

impl Journal {
    /// Opens (creating) the file at `path`, returning what it held and emptying it. Lines
    /// that cannot be read (torn by a crash) are skipped and logged.
    fn open(path: &std::path::Path) -> std::io::Result<(Journal, Vec<WriteBack>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut left = Vec::new();
        let mut bad = 0usize;
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let parsed = serde_json::from_slice::<(String, String, Option<String>)>(line)
                .ok()
                .and_then(|(key, id, owner)| {
                    Some(WriteBack {
                        key,
                        id: Ulid::from_string(&id).ok()?,
                        owner,
                    })
                });
            match parsed {
                Some(w) => left.push(w),
                None => bad += 1,
            }
        }
        if bad > 0 {
            tracing::warn!(
                lines = bad,
                file = %path.display(),
                "redis dedupe: skipped unreadable lines of the write-back file (torn by a crash, or damaged)"
            );
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        file.set_len(0)?;
        file.sync_all()?;
        Ok((
            Journal {
                file,
                broken_line: false,
            },
            left,
        ))
    }

    fn append(&mut self, w: &WriteBack) {
        let json = serde_json::json!([w.key, w.id.to_string(), w.owner]).to_string();
        let res = crate::dedupe::append_line(&mut self.file, &mut self.broken_line, &json);
        if let Err(e) = res {
            tracing::warn!(error = %e, "redis dedupe: could not write the write-back file; this entry is kept in memory only");
            metrics::counter!("hookgate_dedupe_store_errors_total").increment(1);
        }
    }

    fn sync(&mut self) {
        if let Err(e) = self.file.sync_data() {
            tracing::warn!(error = %e, "redis dedupe: fsync of the write-back file failed");
            metrics::counter!("hookgate_dedupe_store_errors_total").increment(1);
        }
    }

    fn clear(&mut self) {
        if let Err(e) = self.file.set_len(0) {
            tracing::warn!(error = %e, "redis dedupe: could not empty the write-back file; its entries will be written back again at the next start (harmless: only where absent)");
            metrics::counter!("hookgate_dedupe_store_errors_total").increment(1);
        }
        self.broken_line = false;
    }
}

/// `<hookgate-id>:<received-at ms>` as the claim script returns it.
fn parse_intent(s: &str) -> Option<Intent> {
    let (id, at) = s.split_once(':')?;
    Some(Intent {
        id: Ulid::from_string(id).ok()?,
        received_at_ms: at.parse().ok()?,
    })
}

/// Releases a claim whose owner's future was dropped before it finished.
struct ClaimGuard {
    store: Arc<RedisStore>,
    key: Option<(String, String)>,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some((key, token)) = self.key.take() {
            let store = self.store.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { store.release(&key, &token).await });
            }
        }
    }
}

/// Redacts the URLs (and their passwords) from an error text.
fn redact(urls: &[Secret], text: &str) -> String {
    let mut out = text.to_owned();
    for u in urls {
        out = u.redact(&out);
        if let Some(pw) = password_of(u.expose()) {
            out = Secret::new(pw).redact(&out);
        }
    }
    out
}

/// The password of a `scheme://user:password@host…` URL, if it has one.
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    userinfo
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

/// The dedupe the request path calls: the local set, and Redis behind it when configured.
#[derive(Clone)]
pub struct SharedDedupe {
    local: Dedupe,
    redis: Option<Arc<RedisStore>>,
}

impl SharedDedupe {
    /// This replica's set alone.
    pub fn local(local: Dedupe) -> SharedDedupe {
        SharedDedupe { local, redis: None }
    }

    /// The local set in front of a shared store.
    pub fn with_redis(local: Dedupe, redis: Arc<RedisStore>) -> SharedDedupe {
        SharedDedupe {
            local,
            redis: Some(redis),
        }
    }

    /// The local set (seeded at start from the spool's id store).
    pub fn local_set(&self) -> &Dedupe {
        &self.local
    }

    /// The shared store, when configured.
    pub fn redis(&self) -> Option<&Arc<RedisStore>> {
        self.redis.as_ref()
    }

    /// For `/readyz`: `None` without Redis, else `ok`, `degraded` (some operations fail
    /// while others succeed, e.g. one Cluster node down; or, under `local`, any failure:
    /// deduping alone) or `unavailable` (`reject`, and no operation has succeeded since
    /// the failures began: every delivery is refused).
    pub fn status(&self) -> Option<&'static str> {
        let r = self.redis.as_ref()?;
        Some(match (r.health(), r.on_unavailable) {
            (Health::Ok, _) => "ok",
            (Health::Down, OnUnavailable::Reject) => "unavailable",
            _ => "degraded",
        })
    }

    /// Runs `append` unless `(source, id)` was already committed (here or, with Redis, on
    /// any replica) or is being committed; semantics of [`Dedupe::admit`], across replicas.
    /// `append` gets the record to write: `intent`, or with Redis the intent of an earlier
    /// attempt at the same delivery that failed or died (one hookgate-id per delivery).
    /// A store that cannot decide refuses with `E::from(`[`StoreRefusal`]`)`.
    pub async fn admit<E, F, Fut>(
        &self,
        source: u32,
        id: &str,
        intent: Intent,
        append: F,
    ) -> Result<Admission, Arc<E>>
    where
        E: From<StoreRefusal> + Send + Sync + 'static,
        F: FnOnce(Intent) -> Fut,
        Fut: Future<Output = Result<Ulid, E>>,
    {
        match &self.redis {
            None => self.local.admit(source, id, append(intent)).await,
            // Boxed: the claim, wait and renewal states would otherwise size (and be copied
            // with) every request's future, with Redis or not.
            Some(store) => Box::pin(self.admit_shared(store, source, id, intent, append)).await,
        }
    }

    async fn admit_shared<E, F, Fut>(
        &self,
        store: &Arc<RedisStore>,
        source: u32,
        id: &str,
        intent: Intent,
        append: F,
    ) -> Result<Admission, Arc<E>>
    where
        E: From<StoreRefusal> + Send + Sync + 'static,
        F: FnOnce(Intent) -> Fut,
        Fut: Future<Output = Result<Ulid, E>>,
    {
        let mut remote = false;
        let res = self
            .local
            .admit(source, id, async {
                let key = store.key(source, id);
                match store.claim(&key, intent).await {
                    Ok(Claim::Owner(token, got)) => store.run_owned(key, token, append(got)).await,
                    Ok(Claim::Committed(u)) => {
                        remote = true;
                        Ok(u)
                    }
                    Err(StoreRefusal::Unavailable)
                        if store.on_unavailable == OnUnavailable::Local =>
                    {
                        store.meters.local_fallbacks.increment(1);
                        let res = append(intent).await;
                        if let Ok(id) = &res {
                            // Known to this replica alone until Redis hears of it.
                            store.queue_write_back(key, *id);
                        }
                        res
                    }
                    Err(r) => {
                        match r {
                            StoreRefusal::Unavailable => &store.meters.refused_unavailable,
                            StoreRefusal::Pending => &store.meters.refused_pending,
                            StoreRefusal::Unreadable => &store.meters.refused_unreadable,
                        }
                        .increment(1);
                        Err(E::from(r))
                    }
                }
            })
            .await;
        match res {
            Ok(Admission::New(u)) if remote => Ok(Admission::Duplicate(u)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_back_file_is_read_back_torn_lines_skipped_and_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/redis-write-back.jsonl");
        let (mut j, left) = Journal::open(&path).unwrap();
        assert!(left.is_empty());
        let (a, b) = (Ulid::new(), Ulid::new());
        j.append(&WriteBack {
            key: "hg:github:k1".into(),
            id: a,
            owner: None,
        });
        j.append(&WriteBack {
            key: "hg:github:\"k2\"".into(),
            id: b,
            owner: Some("tok".into()),
        });
        drop(j);
        // A crash tore a third line; a damaged line in between.
        let mut data = std::fs::read(&path).unwrap();
        data.extend_from_slice(b"[\"hg:github:k3\",\"01J");
        let at = data.iter().position(|c| *c == b'\n').unwrap() + 1;
        data.splice(at..at, b"not json\n".iter().copied());
        std::fs::write(&path, data).unwrap();
        let (j, left) = Journal::open(&path).unwrap();
        let got: Vec<_> = left
            .iter()
            .map(|w| (w.key.as_str(), w.id, w.owner.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("hg:github:k1", a, None),
                ("hg:github:\"k2\"", b, Some("tok"))
            ]
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        drop(j);
        assert!(Journal::open(&path).unwrap().1.is_empty());
    }

    #[test]
    fn urls_are_checked_without_echoing_them() {
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_url("rediss://user:pw@example.com:6380").is_ok());
        let e = check_url("http://:hunter22@x:1").unwrap_err();
        assert!(!e.contains("hunter22"), "{e}");
        let e = check_url("redis://:hunter22@[bad").unwrap_err();
        assert!(!e.contains("hunter22"), "{e}");
    }

    #[test]
    fn redaction_removes_the_url_and_its_password() {
        let urls = [Secret::new("redis://:s3cr3tpw@10.0.0.1:6379/0")];
        let t = redact(
            &urls,
            "failed: redis://:s3cr3tpw@10.0.0.1:6379/0 and s3cr3tpw",
        );
        assert!(!t.contains("s3cr3tpw"), "{t}");
    }
}
