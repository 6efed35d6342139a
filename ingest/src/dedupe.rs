//! Dedupe of `(source, delivery id)`: a sharded, fixed-TTL set of committed ids plus the
//! attempts under way.
//!
//! Semantics (DESIGN.md): concurrent duplicates coalesce onto the first attempt and get its
//! outcome; a failed (or dropped) append leaves no key, so the provider's retry is accepted;
//! a duplicate of a committed event answers 200 `"duplicate":true` and produces nothing.
//!
//! Why not moka (the design card's first choice, used here until the budgets were measured):
//! every id lives exactly `ttl` from its commit, so expiry order *is* insertion order and a
//! FIFO per shard evicts exactly what an LRU-with-TTL would expire, oldest first; a new key is
//! always admitted (the property DESIGN.md asks of moka's LRU policy). moka's general
//! machinery (per-entry `Arc`s, write-op channel, timer wheel, housekeeping) measured
//! 2.2 µs per miss+insert against a 0.5 µs budget (`bench/RESULTS.md`); this set does it
//! with no allocation per id.
//!
//! Keys are stored as a 128-bit XXH3 hash of `(source, delivery id)` under a per-process
//! random seed (re-hashed from the on-disk id log at start): 40 bytes per remembered id in the
//! map and 24 in the FIFO. Two
//! different deliveries share a hash with probability about n²/2¹²⁹ (≈10⁻²⁷ at a million ids),
//! far below the chance of a disk losing the event.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hookgate_proto::Ulid;
use metrics::Counter;
use tokio::sync::watch;

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

/// The most shards; fewer for small capacities so each shard's FIFO stays meaningful.
const MAX_SHARDS: usize = 64;
/// How far over its capacity a shard may run before the oldest ids are forgotten (together).
const EVICT_BATCH: usize = 32;
/// The fewest ids a shard is sized for before the shard count drops.
const MIN_PER_SHARD: u64 = 1024;

/// A key is already a uniform hash: the map uses its low word as it is.
#[derive(Default)]
struct KeyHasher(u64);
impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u128` keys are hashed; kept total for any other use.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // A key's words arrive one after the other; the last (low) one is used.
        self.0 = v;
    }
}

/// A key: the 128-bit hash of `(source, delivery id)`, as two words (8-byte aligned, so a
/// map entry is 40 bytes).
type Key = (u64, u64);

/// `expires` of an entry whose first attempt is still running.
const PENDING: u64 = u64::MAX;

/// One remembered delivery: committed as `id` until `expires` (nanoseconds since the set's
/// epoch), or [`PENDING`].
#[derive(Clone, Copy)]
struct Entry {
    /// The ULID as two words, keeping the entry 8-byte aligned.
    id: (u64, u64),
    expires: u64,
}

impl Entry {
    fn ulid(&self) -> Ulid {
        Ulid((u128::from(self.id.0) << 64) | u128::from(self.id.1))
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<Key, Entry, BuildHasherDefault<KeyHasher>>,
    /// Committed keys in commit order, with the `expires` they were committed with.
    fifo: VecDeque<(Key, u64)>,
    /// Channels of pending attempts that a duplicate is waiting on (made by the first
    /// duplicate, so an attempt nobody waits on allocates nothing).
    waiters: HashMap<Key, watch::Sender<Outcome>, BuildHasherDefault<KeyHasher>>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    seed: u64,
    epoch: Instant,
    ttl_ns: u64,
    per_shard: usize,
    hits: Counter,
    misses: Counter,
    evictions: Counter,
}

/// The delivery-id cache.
#[derive(Clone)]
pub struct Dedupe {
    inner: Arc<Inner>,
}

/// Removes a first attempt's pending entry however its future ends early (dropped), so a
/// cancelled attempt never blocks the provider's retry; dropping the entry's channel wakes
/// the duplicates waiting on it, which then try again.
struct PendingGuard<'a> {
    inner: &'a Inner,
    key: Key,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut shard = self.inner.shard(self.key);
            if shard
                .map
                .get(&self.key)
                .is_some_and(|e| e.expires == PENDING)
            {
                shard.map.remove(&self.key);
            }
            shard.waiters.remove(&self.key);
        }
    }
}

enum Role {
    Wait(watch::Receiver<Outcome>),
    Run,
}

impl Inner {
    fn key(&self, source: u32, id: &str) -> Key {
        let seed = self.seed ^ u64::from(source).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let h = xxhash_rust::xxh3::xxh3_128_with_seed(id.as_bytes(), seed);
        ((h >> 64) as u64, h as u64)
    }

    fn shard(&self, key: Key) -> MutexGuard<'_, Shard> {
        // The high word picks the shard; the map hashes with the low one.
        let i = (key.0 as usize) & (self.shards.len() - 1);
        self.shards
            .get(i)
            .unwrap_or(&self.shards[0])
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Records `key` as committed as `id` from `now` (replacing a pending or expired entry)
    /// and forgets what is expired or over capacity.
    fn commit(&self, shard: &mut Shard, key: Key, id: Ulid, now: u64) {
        let expires = now.saturating_add(self.ttl_ns).min(PENDING - 1);
        shard.map.insert(
            key,
            Entry {
                id: ((id.0 >> 64) as u64, id.0 as u64),
                expires,
            },
        );
        shard.fifo.push_back((key, expires));
        // Forget in batches: the map lookups of a batch are independent, so the CPU overlaps
        // their cache misses instead of paying one full miss per commit.
        let full = shard.fifo.len() > self.per_shard + EVICT_BATCH;
        let stale = shard.fifo.front().is_some_and(|&(_, e)| e <= now);
        if !full && !stale {
            return;
        }
        while let Some(&(k, e)) = shard.fifo.front() {
            let over = shard.fifo.len() > self.per_shard;
            if e > now && !over {
                break;
            }
            shard.fifo.pop_front();
            // Only if the map still holds this very commit (not a later one of the same key).
            if shard.map.get(&k).is_some_and(|x| x.expires == e) {
                shard.map.remove(&k);
                if e > now {
                    self.evictions.increment(1);
                }
            }
        }
    }
}

impl Dedupe {
    /// A set keeping `capacity` ids (up to [`EVICT_BATCH`] more per shard) for `ttl` each.
    pub fn new(capacity: u64, ttl: Duration) -> Dedupe {
        let capacity = capacity.max(1);
        let mut n = MAX_SHARDS;
        while n > 1 && capacity / (n as u64) < MIN_PER_SHARD {
            n /= 2;
        }
        let per_shard = capacity.div_ceil(n as u64) as usize;
        let shards = (0..n).map(|_| Mutex::new(Shard::default())).collect();
        Dedupe {
            inner: Arc::new(Inner {
                shards,
                seed: rand::random(),
                epoch: Instant::now(),
                ttl_ns: u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX),
                per_shard,
                hits: metrics::counter!("hookgate_dedupe_hits_total"),
                misses: metrics::counter!("hookgate_dedupe_misses_total"),
                evictions: metrics::counter!("hookgate_dedupe_evictions_total"),
            }),
        }
    }

    /// Runs `append` unless `(source, id)` was already committed or is being committed;
    /// the id is remembered only if `append` succeeds, for `ttl` from the call. Duplicates
    /// that arrive while the first attempt runs wait for it and get its outcome, success or
    /// error.
    pub async fn admit<E, F>(&self, source: u32, id: &str, append: F) -> Result<Admission, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<Ulid, E>>,
    {
        let inner = &*self.inner;
        let key = inner.key(source, id);
        let now = inner.now();
        let mut append = Some(append);
        loop {
            let role = {
                let mut shard = inner.shard(key);
                match shard.map.get(&key).copied() {
                    Some(e) if e.expires == PENDING => {
                        let tx = shard
                            .waiters
                            .entry(key)
                            .or_insert_with(|| watch::channel(None).0);
                        Role::Wait(tx.subscribe())
                    }
                    Some(e) if e.expires > now => {
                        drop(shard);
                        inner.hits.increment(1);
                        return Ok(Admission::Duplicate(e.ulid()));
                    }
                    // Absent, or committed but expired: this call is the first attempt.
                    _ => {
                        shard.map.insert(
                            key,
                            Entry {
                                id: (0, 0),
                                expires: PENDING,
                            },
                        );
                        Role::Run
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
                Role::Run => {
                    let Some(append) = append.take() else {
                        // Unreachable: a caller runs its append at most once; after that it
                        // only ever returns. Kept total rather than panicking.
                        continue;
                    };
                    let mut guard = PendingGuard {
                        inner,
                        key,
                        armed: true,
                    };
                    inner.misses.increment(1);
                    let res = append.await;
                    guard.armed = false;
                    let mut shard = inner.shard(key);
                    let tx = shard.waiters.remove(&key);
                    match res {
                        Ok(u) => {
                            inner.commit(&mut shard, key, u, now);
                            drop(shard);
                            if let Some(tx) = tx {
                                tx.send_replace(Some(Ok(u)));
                            }
                            return Ok(Admission::New(u));
                        }
                        Err(e) => {
                            shard.map.remove(&key);
                            drop(shard);
                            let e = Arc::new(e);
                            if let Some(tx) = tx {
                                let erased: Arc<dyn Any + Send + Sync> = e.clone();
                                tx.send_replace(Some(Err(erased)));
                            }
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// Remembers an id accepted before a restart (for the rest of a full `ttl`).
    pub async fn seed(&self, source: u32, id: &str, ulid: Ulid) {
        let inner = &*self.inner;
        let key = inner.key(source, id);
        let now = inner.now();
        let mut shard = inner.shard(key);
        if !shard
            .map
            .get(&key)
            .is_some_and(|e| e.expires != PENDING && e.expires > now)
        {
            inner.commit(&mut shard, key, ulid, now);
        }
    }

    /// Ids currently remembered (expired ones count until they are swept).
    pub fn len(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).fifo.len() as u64)
            .sum()
    }

    /// Whether nothing is remembered.
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
    async fn a_duplicate_waiting_on_a_dropped_attempt_runs_its_own() {
        let d = Dedupe::new(100, Duration::from_secs(60));
        let (first_started, started) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let d = d.clone();
            tokio::spawn(async move {
                d.admit::<(), _>(0, "w", async move {
                    let _ = first_started.send(());
                    std::future::pending::<Result<Ulid, ()>>().await
                })
                .await
            })
        };
        started.await.unwrap();
        let waiter = {
            let d = d.clone();
            tokio::spawn(async move { admit_new(&d, "w").await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "the duplicate waits for the first attempt"
        );
        first.abort();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is released")
            .unwrap();
        assert!(matches!(got, Admission::New(_)), "{got:?}");
    }

    async fn admit_new(d: &Dedupe, id: &str) -> Admission {
        d.admit::<(), _>(0, id, async { Ok(Ulid::new()) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn over_capacity_the_oldest_id_is_forgotten_first() {
        let d = Dedupe::new(3, Duration::from_secs(3600));
        let ids: Vec<String> = (0..=EVICT_BATCH + 3).map(|i| i.to_string()).collect();
        // Up to capacity + EVICT_BATCH ids are kept; one more forgets the oldest down to
        // capacity.
        for (n, id) in ids.iter().enumerate() {
            assert!(matches!(admit_new(&d, id).await, Admission::New(_)));
            assert_eq!(
                d.len() as usize,
                if n < 3 + EVICT_BATCH { n + 1 } else { 3 }
            );
        }
        let kept = &ids[ids.len() - 3..];
        for id in kept {
            assert!(
                matches!(admit_new(&d, id).await, Admission::Duplicate(_)),
                "{id} is still remembered"
            );
        }
        // The newest forgotten one is accepted again.
        let forgotten = &ids[ids.len() - 4];
        assert!(matches!(admit_new(&d, forgotten).await, Admission::New(_)));
    }

    #[tokio::test]
    async fn a_key_committed_again_after_expiry_is_not_dropped_by_its_old_entry() {
        let d = Dedupe::new(100, Duration::from_millis(200));
        admit_new(&d, "x").await;
        std::thread::sleep(Duration::from_millis(250));
        let Admission::New(second) = admit_new(&d, "x").await else {
            panic!("x expired, so it is new again")
        };
        // The next commit sweeps x's first (expired) entry; the second commit stays.
        admit_new(&d, "y").await;
        assert_eq!(admit_new(&d, "x").await, Admission::Duplicate(second));
    }

    #[tokio::test]
    async fn seeded_ids_are_duplicates_and_keep_their_id() {
        let d = Dedupe::new(100, Duration::from_secs(60));
        let id = Ulid::new();
        d.seed(0, "seeded", id).await;
        assert_eq!(admit_new(&d, "seeded").await, Admission::Duplicate(id));
        // Seeding again does not replace what is remembered.
        d.seed(0, "seeded", Ulid::new()).await;
        assert_eq!(admit_new(&d, "seeded").await, Admission::Duplicate(id));
    }

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<(Key, Entry)>(), 40);
        assert_eq!(std::mem::size_of::<(Key, u64)>(), 24);
    }

    #[test]
    fn shards_shrink_for_small_capacities() {
        assert_eq!(
            Dedupe::new(100, Duration::from_secs(1)).inner.shards.len(),
            1
        );
        assert_eq!(
            Dedupe::new(1_000_000, Duration::from_secs(1))
                .inner
                .shards
                .len(),
            64
        );
        let d = Dedupe::new(5000, Duration::from_secs(1));
        assert_eq!(d.inner.shards.len(), 4);
        assert_eq!(d.inner.per_shard, 1250);
    }

    #[tokio::test]
    async fn ids_expire_after_ttl() {
        // The set reads the real clock, not tokio's; use a tiny real TTL.
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
