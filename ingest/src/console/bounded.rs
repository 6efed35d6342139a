//! A bounded ring: pushing past its capacity drops the oldest element. One short mutex
//! per push (a pointer move); readers copy out `Arc`s under the same lock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// A bounded, newest-last list of `T`.
pub struct Ring<T> {
    cap: usize,
    items: Mutex<VecDeque<Arc<T>>>,
}

impl<T> Ring<T> {
    /// A ring holding at most `cap` elements (at least 1).
    pub fn new(cap: usize) -> Ring<T> {
        let cap = cap.max(1);
        Ring {
            cap,
            items: Mutex::new(VecDeque::with_capacity(cap)),
        }
    }

    /// Adds `item`, dropping the oldest when full. The old element is dropped after the
    /// lock is released.
    pub fn push(&self, item: T) {
        let item = Arc::new(item);
        let old = {
            let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
            let old = if q.len() >= self.cap {
                q.pop_front()
            } else {
                None
            };
            q.push_back(item);
            old
        };
        drop(old);
    }

    /// Puts `older` (oldest first, all older than what the ring holds) in front of the
    /// ring's elements, skipping those whose `key` an element already has (or a newer one
    /// of `older`), as many as fit (the newest of them). Returns how many went in. For filling the ring from the log
    /// while new elements arrive.
    pub fn fill_older<K: Eq + std::hash::Hash>(
        &self,
        older: Vec<T>,
        key: impl Fn(&T) -> K,
    ) -> usize {
        let mut q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        let mut have: std::collections::HashSet<K> = q.iter().map(|t| key(t)).collect();
        let mut added = 0;
        for item in older.into_iter().rev() {
            if q.len() >= self.cap {
                break;
            }
            if have.insert(key(&item)) {
                q.push_front(Arc::new(item));
                added += 1;
            }
        }
        added
    }

    /// The elements, newest first.
    pub fn newest_first(&self) -> Vec<Arc<T>> {
        let q = self.items.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().rev().cloned().collect()
    }

    /// How many elements it holds.
    pub fn len(&self) -> usize {
        self.items.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn never_grows_past_its_capacity_and_lists_newest_first() {
        let r = Ring::new(3);
        for i in 0..10 {
            r.push(i);
            assert!(r.len() <= 3);
        }
        let v: Vec<i32> = r.newest_first().iter().map(|a| **a).collect();
        assert_eq!(v, [9, 8, 7]);
        assert_eq!(Ring::<u8>::new(0).capacity(), 1);
    }

    #[test]
    fn filling_older_keeps_the_newest_that_fit_and_skips_known_keys() {
        let r = Ring::new(5);
        r.push(10);
        r.push(11);
        // 11 is known already, 9 comes twice; 5..=9 are older, of which only three fit.
        assert_eq!(r.fill_older(vec![5, 6, 7, 8, 9, 9, 11], |x| *x), 3);
        let v: Vec<i32> = r.newest_first().iter().map(|a| **a).collect();
        assert_eq!(v, [11, 10, 9, 8, 7]);
        assert_eq!(r.fill_older(vec![1], |x| *x), 0);
    }
}
