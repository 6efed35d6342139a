//! Dedupe of `(source, delivery id)` with moka.
//!
//! Semantics (DESIGN.md): concurrent duplicates coalesce onto the first attempt and get its
//! outcome (`try_get_with`); a failed append inserts nothing, so the provider's retry is
//! accepted; a duplicate of a committed event answers 200 `"duplicate":true` and produces
//! nothing. LRU eviction, because TinyLFU may refuse to admit new keys — and a key that is
//! not admitted is a duplicate that gets through.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookgate_proto::Ulid;
use metrics::Counter;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use tokio::sync::watch;

/// The cache key: source index and delivery id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    source: u32,
    id: Box<str>,
}

/// What an admission found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// This call ran the append; the event has this id.
    New(Ulid),
    /// Another call (earlier or concurrent) committed this delivery as this id.
    Duplicate(Ulid),
}

/// The outcome a first attempt publishes to the duplicates waiting on it. The error is
/// type-erased so one map serves every caller; waiters downcast it back.
type Outcome = Option<Result<Ulid, Arc<dyn Any + Send + Sync>>>;
type Hasher = foldhash::fast::RandomState;
type Inflight = Mutex<HashMap<Key, watch::Receiver<Outcome>, Hasher>>;

const SHARDS: usize = 64;

struct Inner {
    /// Committed ids: moka's LRU with TTL and capacity.
    committed: moka::sync::Cache<Key, Ulid, Hasher>,
    /// Attempts under way, sharded to keep lock hold times short under contention.
    inflight: Box<[Inflight]>,
    hasher: Hasher,
    hits: Counter,
    misses: Counter,
}

/// The delivery-id cache.
#[derive(Clone)]
pub struct Dedupe {
    inner: Arc<Inner>,
}

/// Removes a first attempt's in-flight entry however its future ends (done or dropped),
/// so a cancelled attempt never blocks the provider's retry.
struct InflightGuard<'a> {
    shard: &'a Inflight,
    key: &'a Key,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.shard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.key);
    }
}

enum Role {
    Wait(watch::Receiver<Outcome>),
    Run(watch::Sender<Outcome>),
}

impl Dedupe {
    /// A cache keeping at most `capacity` ids for `ttl` each.
    pub fn new(capacity: u64, ttl: Duration) -> Dedupe {
        let hasher = Hasher::default();
        let committed = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(|_k, _v, cause| {
                if cause == RemovalCause::Size {
                    metrics::counter!("hookgate_dedupe_evictions_total").increment(1);
                }
            })
            .build_with_hasher(hasher.clone());
        let inflight = (0..SHARDS)
            .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
            .collect();
        Dedupe {
            inner: Arc::new(Inner {
                committed,
                inflight,
                hasher,
                hits: metrics::counter!("hookgate_dedupe_hits_total"),
                misses: metrics::counter!("hookgate_dedupe_misses_total"),
            }),
        }
    }

    /// Runs `append` unless `(source, id)` was already committed or is being committed;
    /// the id is remembered only if `append` succeeds. Duplicates that arrive while the
    /// first attempt runs wait for it and get its outcome, success or error.
    pub async fn admit<E, F>(&self, source: u32, id: &str, append: F) -> Result<Admission, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<Ulid, E>>,
    {
        let inner = &*self.inner;
        let key = Key {
            source,
            id: id.into(),
        };
        let shard = &inner.inflight[(inner.hasher.hash_one(&key) as usize) % SHARDS];
        let mut append = Some(append);
        loop {
            if let Some(u) = inner.committed.get(&key) {
                inner.hits.increment(1);
                return Ok(Admission::Duplicate(u));
            }
            let role = {
                let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
                // Re-check under the lock: a first attempt may have committed and left
                // between the lookup above and here.
                if let Some(u) = inner.committed.get(&key) {
                    inner.hits.increment(1);
                    return Ok(Admission::Duplicate(u));
                }
                match map.get(&key) {
                    Some(rx) => Role::Wait(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        map.insert(key.clone(), rx);
                        Role::Run(tx)
                    }
                }
            };
            match role {
                Role::Wait(mut rx) => {
                    let outcome = match rx.wait_for(Option::is_some).await {
                        Ok(o) => o.clone(),
                        // The first attempt was dropped mid-way: try again ourselves.
                        Err(_) => continue,
                    };
                    match outcome {
                        Some(Ok(u)) => {
                            inner.hits.increment(1);
                            return Ok(Admission::Duplicate(u));
                        }
                        Some(Err(e)) => match e.downcast::<E>() {
                            Ok(e) => return Err(e),
                            Err(_) => continue,
                        },
                        None => continue,
                    }
                }
                Role::Run(tx) => {
                    let Some(append) = append.take() else {
                        // Unreachable: a caller runs its append at most once; after that it
                        // only ever returns. Kept total rather than panicking.
                        continue;
                    };
                    let guard = InflightGuard { shard, key: &key };
                    inner.misses.increment(1);
                    let res = append.await;
                    match res {
                        Ok(u) => {
                            // Committed before the in-flight entry goes, so a newcomer
                            // always finds one or the other.
                            inner.committed.insert(key.clone(), u);
                            drop(guard);
                            tx.send_replace(Some(Ok(u)));
                            return Ok(Admission::New(u));
                        }
                        Err(e) => {
                            let e = Arc::new(e);
                            drop(guard);
                            let erased: Arc<dyn Any + Send + Sync> = e.clone();
                            tx.send_replace(Some(Err(erased)));
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// Remembers an id accepted before a restart.
    pub async fn seed(&self, source: u32, id: &str, ulid: Ulid) {
        self.inner.committed.insert(
            Key {
                source,
                id: id.into(),
            },
            ulid,
        );
    }

    /// Ids currently remembered (approximate).
    pub fn len(&self) -> u64 {
        self.inner.committed.entry_count()
    }

    /// Whether nothing is remembered (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn committed_duplicate_and_failed_append() {
        let d = Dedupe::new(100, Duration::from_secs(60));
        let first = d
            .admit::<(), _>(0, "a", async { Ok(Ulid::new()) })
            .await
            .unwrap();
        let Admission::New(id) = first else {
            panic!("{first:?}")
        };
        assert_eq!(
            d.admit::<(), _>(0, "a", async { Ok(Ulid::new()) })
                .await
                .unwrap(),
            Admission::Duplicate(id)
        );
        // Another source, same delivery id: not a duplicate.
        assert!(matches!(
            d.admit::<(), _>(1, "a", async { Ok(Ulid::new()) })
                .await
                .unwrap(),
            Admission::New(_)
        ));
        // A failed append leaves no key: the retry runs.
        assert!(d
            .admit::<&str, _>(0, "b", async { Err("down") })
            .await
            .is_err());
        assert!(matches!(
            d.admit::<(), _>(0, "b", async { Ok(Ulid::new()) })
                .await
                .unwrap(),
            Admission::New(_)
        ));
    }

    #[tokio::test]
    async fn concurrent_duplicates_coalesce_onto_one_append() {
        let d = Dedupe::new(100, Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (d, runs) = (d.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                d.admit::<(), _>(0, "same", async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(Ulid::new())
                })
                .await
                .unwrap()
            }));
        }
        let mut news = 0;
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            match t.await.unwrap() {
                Admission::New(id) => {
                    news += 1;
                    ids.insert(id);
                }
                Admission::Duplicate(id) => {
                    ids.insert(id);
                }
            }
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(news, 1);
        assert_eq!(ids.len(), 1);
    }

    #[tokio::test]
    async fn concurrent_duplicates_share_a_failure_and_a_retry_then_runs() {
        let d = Dedupe::new(100, Duration::from_secs(60));
        let first = {
            let d = d.clone();
            tokio::spawn(async move {
                d.admit::<&str, _>(0, "f", async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err("down")
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let waiter = d.admit::<&str, _>(0, "f", async { Ok(Ulid::new()) }).await;
        assert_eq!(waiter.map_err(|e| *e), Err("down"));
        assert!(first.await.unwrap().is_err());
        assert!(matches!(
            d.admit::<&str, _>(0, "f", async { Ok(Ulid::new()) })
                .await
                .unwrap(),
            Admission::New(_)
        ));
    }

    #[tokio::test]
    async fn a_dropped_first_attempt_does_not_block_the_retry() {
        let d = Dedupe::new(100, Duration::from_secs(60));
        let slow = d.admit::<(), _>(0, "c", std::future::pending());
        let _ = tokio::time::timeout(Duration::from_millis(10), slow).await;
        assert!(matches!(
            tokio::time::timeout(
                Duration::from_secs(5),
                d.admit::<(), _>(0, "c", async { Ok(Ulid::new()) })
            )
            .await
            .unwrap()
            .unwrap(),
            Admission::New(_)
        ));
    }

    #[tokio::test]
    async fn ids_expire_after_ttl() {
        // moka reads its own clock, not tokio's; use a tiny real TTL.
        let d = Dedupe::new(100, Duration::from_millis(50));
        d.admit::<(), _>(0, "x", async { Ok(Ulid::new()) })
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(120));
        assert!(matches!(
            d.admit::<(), _>(0, "x", async { Ok(Ulid::new()) })
                .await
                .unwrap(),
            Admission::New(_)
        ));
    }
}

/// Accepted delivery ids on disk, so a provider's retry after a crash or restart is still
/// recognised: one JSON line per accepted event, appended (one `write`, so a killed process
/// loses nothing the kernel has) before the 2xx, fsync'd every second for power loss.
/// Files roll hourly and are deleted once older than the dedupe TTL.
pub struct DedupeStore {
    dir: std::path::PathBuf,
    ttl: Duration,
    current: std::sync::Mutex<(u64, std::fs::File)>,
}

const HOUR_MS: u64 = 3_600_000;

impl DedupeStore {
    /// Opens (creating) the id log in `dir`.
    pub fn open(dir: &std::path::Path, ttl: Duration) -> std::io::Result<DedupeStore> {
        std::fs::create_dir_all(dir)?;
        let hour = hookgate_proto::now_ms().max(0) as u64 / HOUR_MS;
        let file = open_hour(dir, hour)?;
        Ok(DedupeStore {
            dir: dir.to_path_buf(),
            ttl,
            current: std::sync::Mutex::new((hour, file)),
        })
    }

    /// Records an accepted delivery.
    pub fn record(&self, source: &str, delivery_id: &str, id: Ulid) -> std::io::Result<()> {
        use std::io::Write as _;
        let now = hookgate_proto::now_ms().max(0) as u64;
        let mut line = serde_json::json!([now, source, delivery_id, id.to_string()]).to_string();
        line.push('\n');
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if now / HOUR_MS != cur.0 {
            let _ = cur.1.sync_data();
            *cur = (now / HOUR_MS, open_hour(&self.dir, now / HOUR_MS)?);
        }
        cur.1.write_all(line.as_bytes())
    }

    /// fsyncs the current file and deletes files past the TTL.
    pub fn maintain(&self) {
        {
            let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            let _ = cur.1.sync_data();
        }
        let oldest = (hookgate_proto::now_ms().max(0) as u64)
            .saturating_sub(self.ttl.as_millis() as u64)
            / HOUR_MS;
        for (hour, path) in self.files() {
            if hour < oldest {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Every `(source, delivery id, event id)` accepted within the TTL.
    pub fn load(&self) -> Vec<(String, String, Ulid)> {
        let cutoff =
            (hookgate_proto::now_ms().max(0) as u64).saturating_sub(self.ttl.as_millis() as u64);
        let mut out = Vec::new();
        for (_, path) in self.files() {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines() {
                // A torn last line after a crash simply fails to parse.
                let Ok((at, source, delivery, id)) =
                    serde_json::from_str::<(u64, String, String, String)>(line)
                else {
                    continue;
                };
                if at < cutoff {
                    continue;
                }
                if let Ok(id) = Ulid::from_string(&id) {
                    out.push((source, delivery, id));
                }
            }
        }
        out
    }

    fn files(&self) -> Vec<(u64, std::path::PathBuf)> {
        let mut v: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let hour = name.to_str()?.strip_suffix(".ids")?.parse().ok()?;
                Some((hour, e.path()))
            })
            .collect();
        v.sort();
        v
    }
}

fn open_hour(dir: &std::path::Path, hour: u64) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{hour}.ids")))
}

#[cfg(test)]
mod store_tests {
    use super::*;

    #[test]
    fn ids_survive_reopen_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = DedupeStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let id = Ulid::new();
        s.record("github", "d-1", id).unwrap();
        s.record("github", "d\n\"2", id).unwrap();
        drop(s);
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        std::io::Write::write_all(&mut f, b"[123,\"gith").unwrap();
        let s = DedupeStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let got = s.load();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1, "d\n\"2");
        assert_eq!(got[0].2, id);
    }
}
