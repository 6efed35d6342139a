//! Deliveries whose append failed without knowing whether Kafka has the record: the
//! message timed out (or was purged) while a produce request carrying it was in flight,
//! and a broker that was only slow may still write it. The request got a 503; when the
//! provider retries, the retry is produced under the **same** `hookgate-id`, so a record
//! that does appear twice carries one id (the record contract's "at least once, same
//! `hookgate-id`") instead of two events for one delivery.
//!
//! Bounded: at most [`CAPACITY`] deliveries, the oldest forgotten first. Only filled while
//! Kafka fails; the request path checks one atomic while it is empty.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use hookgate_proto::Ulid;

/// Most deliveries remembered.
pub const CAPACITY: usize = 65_536;

type Key = (u32, Box<str>);

/// The deliveries whose last append may have been written.
#[derive(Default)]
pub struct MaybeWritten {
    len: AtomicUsize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    ids: HashMap<Key, Ulid>,
    order: VecDeque<Key>,
}

impl MaybeWritten {
    /// The `hookgate-id` a retry of this delivery must reuse, if any.
    pub fn id_for(&self, source: u32, delivery_id: &str) -> Option<Ulid> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        e.ids.get(&(source, Box::from(delivery_id))).copied()
    }

    /// Remembers that `id`'s append may have been written.
    pub fn note(&self, source: u32, delivery_id: &str, id: Ulid) {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key: Key = (source, Box::from(delivery_id));
        if e.ids.insert(key.clone(), id).is_none() {
            e.order.push_back(key);
        }
        while e.order.len() > CAPACITY {
            if let Some(old) = e.order.pop_front() {
                e.ids.remove(&old);
            }
        }
        self.len.store(e.ids.len(), Ordering::Relaxed);
    }

    /// Forgets a delivery once an append of it succeeded.
    pub fn clear(&self, source: u32, delivery_id: &str) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key: Key = (source, Box::from(delivery_id));
        if e.ids.remove(&key).is_some() {
            e.order.retain(|k| k != &key);
        }
        self.len.store(e.ids.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_noted_delivery_keeps_its_id_until_cleared_and_the_oldest_go_first() {
        let m = MaybeWritten::default();
        assert_eq!(m.id_for(0, "d"), None);
        let id = Ulid::new();
        m.note(0, "d", id);
        assert_eq!(m.id_for(0, "d"), Some(id));
        assert_eq!(m.id_for(1, "d"), None);
        m.clear(0, "d");
        assert_eq!(m.id_for(0, "d"), None);
        for n in 0..CAPACITY + 10 {
            m.note(0, &n.to_string(), Ulid::new());
        }
        assert_eq!(m.id_for(0, "0"), None);
        assert!(m.id_for(0, &(CAPACITY + 9).to_string()).is_some());
    }
}
