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
//! random seed (re-hashed from the on-disk id log at start). Two different deliveries share a
//! hash with probability about n²/2¹²⁹ (≈10⁻²⁷ at a million ids), far below the chance of a
//! disk losing the event.
//!
//! Layout, chosen so that admitting a new id costs one random memory access (a million ids do
//! not fit the CPU caches; each access that misses them costs ~0.1–0.15 µs here): per shard,
//! a *ring* of committed records `(key, event id, expiry)` in commit order, and an index into
//! it of 8-byte *slots* (32 bits of the key as a tag, 32 bits of the record's ring position),
//! open addressing with linear probing at most half full — 16 MB of slots for a million ids,
//! so a probe reads one cache line. A tag match is confirmed against the full key in the
//! ring, so only a duplicate (or a one-in-~10⁵ tag collision) reads a second line. Forgetting
//! the oldest ids reads the ring in order, in batches, and new records are then written where
//! the batch was, so ring traffic stays sequential and mostly in cache; removing a forgotten
//! id's slot is the one other random access. Attempts under way live in a small map of their
//! own, which stays in cache.
//!
//! Measured (`dedupe/miss-insert`, a million remembered ids, same-session A/B): 0.37–0.55 µs
//! against 0.54–0.77 µs for the previous `HashMap` + `VecDeque` layout (`bench/RESULTS.md`).

use std::any::Any;
use std::collections::HashMap;
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
/// The most ids a set may be configured to keep: ~60 bytes of memory each (a 40-byte record
/// and two to four 8-byte slots), and a ring position must fit the 32 bits a slot has for it.
pub const MAX_CAPACITY: u64 = 1_000_000_000;

/// A key is already a uniform hash: the attempts map uses its low word as it is.
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

/// A key: the 128-bit hash of `(source, delivery id)`, as two words. The high word picks
/// the shard; the low word's high half is the slot tag.
type Key = (u64, u64);

/// A slot's tag for `key`: 32 bits of the key, never 0 (0 marks an empty slot). Its low bits
/// are also the slot the key's probe starts at, so a slot alone says where it belongs.
fn tag_of(key: Key) -> u32 {
    match (key.1 >> 32) as u32 {
        0 => 1,
        t => t,
    }
}

/// One committed delivery, in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    key: Key,
    /// The ULID as two words, keeping the record 8-byte aligned (40 bytes).
    id: (u64, u64),
    /// Nanoseconds since the set's epoch.
    expires: u64,
}

impl Record {
    fn ulid(&self) -> Ulid {
        Ulid((u128::from(self.id.0) << 64) | u128::from(self.id.1))
    }
}

/// One shard's committed ids: the ring of records in commit order and the slot index into
/// it (see the module doc).
///
/// Invariants: every non-empty slot holds the position of a live record (one of the `len`
/// before `head`) whose key has the slot's tag; a key has at most one slot (committing it
/// again moves its slot to the new record; the old record stays in the ring, unreferenced,
/// until it is forgotten); at most `cap` records are live, and the slot array is at least
/// twice as long, so a probe always ends at an empty slot.
///
/// The ring is exactly as long as the most records a shard keeps: the records written next
/// go where the last forgotten batch was, whose lines that batch just read, so the writes
/// find them in cache.
struct Committed {
    /// `tag << 32 | ring position` per slot; 0 is empty. A power of two long.
    slots: Box<[u64]>,
    /// Grows to `cap` records as ids arrive, then is reused in place.
    ring: Vec<Record>,
    cap: usize,
    /// Where the next record goes.
    head: usize,
    /// Live records, the newest just before `head`.
    len: usize,
}

impl Committed {
    /// Room for `cap` live records.
    fn new(cap: usize) -> Committed {
        let cap = cap.max(1);
        Committed {
            slots: vec![0u64; (cap * 2).next_power_of_two()].into_boxed_slice(),
            ring: Vec::with_capacity(cap),
            cap,
            head: 0,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    /// The ring position of the oldest live record.
    fn tail(&self) -> usize {
        // `head < cap` and `len <= cap`, so one subtraction is the modulo.
        let p = self.head + self.cap - self.len;
        if p >= self.cap {
            p - self.cap
        } else {
            p
        }
    }

    /// The slot holding `key`, or the empty slot where its probe ends.
    fn probe(&self, key: Key) -> (usize, Option<u64>) {
        let tag = tag_of(key);
        let mask = self.mask();
        let mut i = self.home(tag);
        // At most half the slots are used, so an empty one comes first; the bound only keeps
        // the loop finite whatever happens.
        for _ in 0..self.slots.len() {
            let s = self.slots.get(i).copied().unwrap_or(0);
            if s == 0 {
                return (i, None);
            }
            if (s >> 32) as u32 == tag
                && self
                    .ring
                    .get(s as u32 as usize)
                    .is_some_and(|r| r.key == key)
            {
                return (i, Some(s));
            }
            i = (i + 1) & mask;
        }
        (i, None)
    }

    /// The latest commit of `key`, expired or not, unless it was forgotten.
    fn get(&self, key: Key) -> Option<Record> {
        let (_, s) = self.probe(key);
        s.and_then(|s| self.ring.get(s as u32 as usize).copied())
    }

    /// Appends a record and points `key`'s slot at it. The caller forgets the oldest record
    /// first when `cap` are live ([`Committed::forget_oldest`]).
    fn push(&mut self, key: Key, id: Ulid, expires: u64) {
        if self.len == self.cap {
            // Never overwrite a live record (the caller's eviction keeps this from happening).
            self.forget_oldest();
        }
        let at = self.head;
        let rec = Record {
            key,
            id: ((id.0 >> 64) as u64, id.0 as u64),
            expires,
        };
        match self.ring.get_mut(at) {
            Some(r) => *r = rec,
            // The ring fills in order from position 0.
            None => self.ring.push(rec),
        }
        self.head = if at + 1 == self.cap { 0 } else { at + 1 };
        self.len += 1;
        let (i, _) = self.probe(key);
        if let Some(s) = self.slots.get_mut(i) {
            *s = (u64::from(tag_of(key)) << 32) | at as u64;
        }
    }

    /// The oldest live record.
    fn oldest(&self) -> Option<Record> {
        (self.len > 0)
            .then(|| self.ring.get(self.tail()).copied())
            .flatten()
    }

    /// Forgets the oldest record; returns it and whether it was still `key`'s latest commit
    /// (so its id is now forgotten, not superseded by a later commit of the same key).
    fn forget_oldest(&mut self) -> Option<(Record, bool)> {
        let rec = self.oldest()?;
        let at = self.tail();
        self.len -= 1;
        let want = (u64::from(tag_of(rec.key)) << 32) | at as u64;
        let mask = self.mask();
        let mut i = self.home(tag_of(rec.key));
        for _ in 0..self.slots.len() {
            match self.slots.get(i).copied().unwrap_or(0) {
                0 => break,
                s if s == want => {
                    self.remove_slot(i);
                    return Some((rec, true));
                }
                _ => i = (i + 1) & mask,
            }
        }
        Some((rec, false))
    }

    /// Empties slot `i`, moving later slots of its probe run back so that every key stays
    /// reachable from its home slot (backward-shift deletion: no tombstones).
    fn remove_slot(&mut self, i: usize) {
        let mask = self.mask();
        let mut hole = i;
        let mut j = i;
        for _ in 0..self.slots.len() {
            j = (j + 1) & mask;
            let s = self.slots.get(j).copied().unwrap_or(0);
            if s == 0 {
                break;
            }
            // `s` may fill the hole if its home is not between the hole and `j` (cyclically).
            let home = self.home((s >> 32) as u32);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = s;
                }
                hole = j;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = 0;
        }
    }
}

struct Shard {
    committed: Committed,
    /// Keys whose first attempt is running, with the channel of the duplicates waiting on it
    /// (made by the first duplicate, so an attempt nobody waits on allocates nothing).
    running: HashMap<Key, Option<watch::Sender<Outcome>>, BuildHasherDefault<KeyHasher>>,
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

/// Removes a first attempt's entry however its future ends early (dropped), so a cancelled
/// attempt never blocks the provider's retry; dropping the entry's channel wakes the
/// duplicates waiting on it, which then try again.
struct PendingGuard<'a> {
    inner: &'a Inner,
    key: Key,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.shard(self.key).running.remove(&self.key);
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

    /// Records `key` as committed as `id` from `now` (superseding an expired commit) and
    /// forgets what is expired or over capacity.
    fn commit(&self, shard: &mut Shard, key: Key, id: Ulid, now: u64) {
        let expires = now.saturating_add(self.ttl_ns);
        let c = &mut shard.committed;
        c.push(key, id, expires);
        // Forget in batches: the batch's ring lines are read together, and the next commits
        // write where they were (in cache). Loading the batch's slots first, so that their
        // misses overlap, measured no gain (bench/RESULTS.md), so each is paid in turn.
        let full = c.len() > self.per_shard + EVICT_BATCH;
        let stale = c.oldest().is_some_and(|r| r.expires <= now);
        if !full && !stale {
            return;
        }
        while let Some(r) = c.oldest() {
            if r.expires > now && c.len() <= self.per_shard {
                break;
            }
            if let Some((r, true)) = c.forget_oldest() {
                if r.expires > now {
                    self.evictions.increment(1);
                }
            }
        }
    }
}

impl Dedupe {
    /// A set keeping `capacity` ids (up to [`EVICT_BATCH`] more per shard) for `ttl` each.
    /// `capacity` is clamped to `1..=`[`MAX_CAPACITY`] (the config refuses more).
    pub fn new(capacity: u64, ttl: Duration) -> Dedupe {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let mut n = MAX_SHARDS;
        while n > 1 && capacity / (n as u64) < MIN_PER_SHARD {
            n /= 2;
        }
        let per_shard = capacity.div_ceil(n as u64) as usize;
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    committed: Committed::new(per_shard + EVICT_BATCH + 1),
                    running: HashMap::default(),
                })
            })
            .collect();
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
                let shard = &mut *shard;
                if let Some(tx) = shard.running.get_mut(&key) {
                    Role::Wait(tx.get_or_insert_with(|| watch::channel(None).0).subscribe())
                } else {
                    match shard.committed.get(key) {
                        Some(r) if r.expires > now => {
                            inner.hits.increment(1);
                            return Ok(Admission::Duplicate(r.ulid()));
                        }
                        // Absent, or committed but expired: this call is the first attempt.
                        _ => {
                            shard.running.insert(key, None);
                            Role::Run
                        }
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
                    let tx = shard.running.remove(&key).flatten();
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
        if shard.committed.get(key).is_none_or(|r| r.expires <= now) {
            inner.commit(&mut shard, key, ulid, now);
        }
    }

    /// Ids currently remembered (expired ones, and earlier commits of an id committed again
    /// after expiry, count until they are swept).
    pub fn len(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).committed.len() as u64)
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
    fn slots_and_records_stay_small() {
        assert_eq!(std::mem::size_of::<Record>(), 40);
        let c = Committed::new(15_625 + EVICT_BATCH + 1);
        // A million ids over 64 shards: 256 KB of slots per shard, 16 MB in all.
        assert_eq!(c.slots.len() * 8, 256 << 10);
        assert_eq!(c.cap, 15_658);
    }

    /// The slot index against a plain model (a queue of commits and a map of each key's
    /// latest), with keys drawn from few tags so that probe runs collide, wrap around the end
    /// of the slot array, share full tags (confirmed against the ring) and are shifted back
    /// on removal; and with the ring wrapping many times.
    #[test]
    fn the_slot_index_agrees_with_a_model() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..20u64 {
            let keep = 1 + (round as usize * 13) % 60;
            let mut c = Committed::new(keep);
            let slots = c.slots.len() as u64;
            // Tags: a few homes, including the last slot (runs wrap) and tag 0 (made 1).
            let tags = [
                0u64,
                1,
                2,
                slots - 1,
                slots + 1,
                2 * slots - 1,
                5 * slots + 2,
            ];
            let keys: Vec<Key> = (0..(keep as u64 * 2 + 3))
                .map(|i| {
                    let t = tags[(next() % tags.len() as u64) as usize];
                    (i, (t << 32) | (next() & 0xffff_ffff))
                })
                .collect();
            let mut queue: std::collections::VecDeque<(u32, Record)> = Default::default();
            let mut latest: HashMap<Key, (u32, Record)> = HashMap::new();
            let mut seq = 0u32;
            for step in 0..1500u64 {
                let key = keys[(next() % keys.len() as u64) as usize];
                match next() % 3 {
                    0 | 1 => {
                        if queue.len() == keep {
                            // A full ring forgets its oldest record to make room.
                            if let Some((s, r)) = queue.pop_front() {
                                if latest.get(&r.key).is_some_and(|l| l.0 == s) {
                                    latest.remove(&r.key);
                                }
                            }
                        }
                        let id = Ulid(u128::from(next()) << 64 | u128::from(step));
                        c.push(key, id, step);
                        let rec = Record {
                            key,
                            id: ((id.0 >> 64) as u64, id.0 as u64),
                            expires: step,
                        };
                        queue.push_back((seq, rec));
                        latest.insert(key, (seq, rec));
                        seq = seq.wrapping_add(1);
                    }
                    _ => {
                        let want = queue.pop_front().map(|(s, r)| {
                            let forgotten = latest.get(&r.key).is_some_and(|l| l.0 == s);
                            if forgotten {
                                latest.remove(&r.key);
                            }
                            (r, forgotten)
                        });
                        assert_eq!(c.forget_oldest(), want, "round {round} step {step}");
                    }
                }
                assert_eq!(c.len(), queue.len());
                for k in &keys {
                    let want = latest.get(k).map(|l| l.1);
                    assert_eq!(c.get(*k), want, "round {round} step {step} key {k:?}");
                }
                let used = c.slots.iter().filter(|s| **s != 0).count();
                assert_eq!(used, latest.len(), "one slot per remembered key");
            }
        }
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
///
/// Crash edges: a file that does not end in a newline (a torn last line) gets one before
/// the next id is appended, and so does the line after a failed write, so a fragment never
/// swallows the id after it. Reading goes line by line: a torn, undecodable or non-UTF-8
/// line is skipped and counted, never the whole file.
pub struct DedupeStore {
    dir: std::path::PathBuf,
    ttl: Duration,
    current: std::sync::Mutex<IdFile>,
}

/// The hour file ids are appended to.
struct IdFile {
    hour: u64,
    file: std::fs::File,
    /// A write failed part-way: the next line starts with a newline.
    broken_line: bool,
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
            current: std::sync::Mutex::new(IdFile {
                hour,
                file,
                broken_line: false,
            }),
        })
    }

    /// Records an accepted delivery.
    pub fn record(&self, source: &str, delivery_id: &str, id: Ulid) -> std::io::Result<()> {
        let now = hookgate_proto::now_ms().max(0) as u64;
        let json = serde_json::json!([now, source, delivery_id, id.to_string()]).to_string();
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if now / HOUR_MS != cur.hour {
            if let Err(e) = cur.file.sync_data() {
                tracing::warn!(error = %e, "dedupe id store: fsync of the previous hour's file failed");
                metrics::counter!("hookgate_dedupe_store_errors_total").increment(1);
            }
            cur.file = open_hour(&self.dir, now / HOUR_MS)?;
            cur.hour = now / HOUR_MS;
            cur.broken_line = false;
        }
        let cur = &mut *cur;
        append_line(&mut cur.file, &mut cur.broken_line, &json)
    }

    /// fsyncs the current file and deletes files past the TTL.
    pub fn maintain(&self) {
        {
            let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = cur.file.sync_data() {
                tracing::warn!(error = %e, "dedupe id store: fsync failed; ids since the last one may not survive a power loss");
                metrics::counter!("hookgate_dedupe_store_errors_total").increment(1);
            }
        }
        let oldest = (hookgate_proto::now_ms().max(0) as u64)
            .saturating_sub(self.ttl.as_millis() as u64)
            / HOUR_MS;
        for (hour, path) in self.files() {
            if hour < oldest {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(error = %e, file = %path.display(), "dedupe id store: cannot delete an expired file");
                }
            }
        }
    }

    /// Every `(source, delivery id, event id)` accepted within the TTL. Lines that cannot
    /// be read are skipped, counted in `hookgate_dedupe_store_bad_lines_total` and logged.
    pub fn load(&self) -> Vec<(String, String, Ulid)> {
        let (ids, bad) = self.load_counted();
        if bad > 0 {
            tracing::warn!(
                lines = bad,
                "dedupe id store: skipped unreadable lines (torn by a crash, or damaged)"
            );
            metrics::counter!("hookgate_dedupe_store_bad_lines_total").increment(bad as u64);
        }
        ids
    }

    /// Like [`DedupeStore::load`], also returning how many lines were skipped.
    pub fn load_counted(&self) -> (Vec<(String, String, Ulid)>, usize) {
        let cutoff =
            (hookgate_proto::now_ms().max(0) as u64).saturating_sub(self.ttl.as_millis() as u64);
        let mut out = Vec::new();
        let mut bad = 0;
        for (_, path) in self.files() {
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, file = %path.display(), "dedupe id store: cannot read a file; its ids are not re-seeded");
                    continue;
                }
            };
            for line in data.split(|b| *b == b'\n') {
                if line.is_empty() {
                    continue;
                }
                let parsed = std::str::from_utf8(line).ok().and_then(|text| {
                    serde_json::from_str::<(u64, String, String, String)>(text).ok()
                });
                let Some((at, source, delivery, id)) = parsed else {
                    bad += 1;
                    continue;
                };
                if at < cutoff {
                    continue;
                }
                match Ulid::from_string(&id) {
                    Ok(id) => out.push((source, delivery, id)),
                    Err(_) => bad += 1,
                }
            }
        }
        (out, bad)
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

/// Appends `text` and a newline to `file` in one `write` (a killed process loses nothing
/// the kernel has), after a newline first if the last append failed part-way (`broken_line`,
/// updated), so a fragment never swallows the line after it.
pub(crate) fn append_line(
    file: &mut std::fs::File,
    broken_line: &mut bool,
    text: &str,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut line = String::with_capacity(text.len() + 2);
    if *broken_line {
        line.push('\n');
    }
    line.push_str(text);
    line.push('\n');
    let res = file.write_all(line.as_bytes());
    *broken_line = res.is_err();
    res
}

/// Opens an hour's file for appending; if it does not end in a newline (a crash tore its
/// last line), ends it with one so the next id starts a line of its own.
fn open_hour(dir: &std::path::Path, hour: u64) -> std::io::Result<std::fs::File> {
    use std::io::Write as _;
    use std::os::unix::fs::FileExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(dir.join(format!("{hour}.ids")))?;
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
    }
    Ok(file)
}

#[cfg(test)]
mod store_tests {
    use super::*;

    fn only_file(dir: &std::path::Path) -> std::path::PathBuf {
        std::fs::read_dir(dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
    }

    #[test]
    fn ids_survive_reopen_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = DedupeStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let id = Ulid::new();
        s.record("github", "d-1", id).unwrap();
        s.record("github", "d\n\"2", id).unwrap();
        drop(s);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(only_file(dir.path()))
            .unwrap();
        std::io::Write::write_all(&mut f, b"[123,\"gith").unwrap();
        let s = DedupeStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let (got, bad) = s.load_counted();
        assert_eq!(got.len(), 2);
        assert_eq!(bad, 1);
        assert_eq!(got[1].1, "d\n\"2");
        assert_eq!(got[0].2, id);
    }

    #[test]
    fn a_torn_last_line_does_not_swallow_the_next_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = DedupeStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        s.record("github", "d-1", Ulid::new()).unwrap();
        drop(s);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(only_file(dir.path()))
            .unwrap();
        std::io::Write::write_all(&mut f, b"[1700000000000,\"github\",\"d-").unwrap();
        // Restart, then the first id accepted after it.
        let s = DedupeStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let next = Ulid::new();
        s.record("github", "d-2", next).unwrap();
        let (got, bad) = s.load_counted();
        let deliveries: Vec<&str> = got.iter().map(|(_, d, _)| d.as_str()).collect();
        assert_eq!(deliveries, ["d-1", "d-2"]);
        assert_eq!(got[1].2, next);
        assert_eq!(bad, 1);
    }

    #[test]
    fn invalid_utf8_drops_only_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = DedupeStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        s.record("github", "d-1", Ulid::new()).unwrap();
        let path = only_file(dir.path());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"[1,\"github\",\"\xff\xfe\",\"x\"]\n").unwrap();
        s.record("github", "d-3", Ulid::new()).unwrap();
        let (got, bad) = s.load_counted();
        let deliveries: Vec<&str> = got.iter().map(|(_, d, _)| d.as_str()).collect();
        assert_eq!(deliveries, ["d-1", "d-3"]);
        assert_eq!(bad, 1);
    }
}
