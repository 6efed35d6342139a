//! Client-side rate limiting: a token bucket, per-key spacing, and a pause gate that
//! 429s and "remaining = 0" headers close. All on tokio time so tests can pause it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::chat::metrics;

/// A token bucket: `rate` tokens per second, bursts up to `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket refilling `rate` tokens per second up to `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        let rate = if rate > 0.0 { rate } else { 1.0 };
        let burst = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token, returning how long the caller must wait first. Tokens may go
    /// negative: that reserves a slot, so concurrent callers queue fairly.
    pub fn reserve(&self) -> Duration {
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(st.1).as_secs_f64();
        st.0 = (st.0 + elapsed * self.rate).min(self.burst);
        st.1 = now;
        st.0 -= 1.0;
        if st.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-st.0 / self.rate)
        }
    }
}

/// Keeps messages to one key (a chat) at least `interval` apart. Bounded: idle keys are
/// dropped once the map grows past `max_keys`.
#[derive(Debug)]
pub struct KeyedSpacing {
    interval: Duration,
    max_keys: usize,
    next: Mutex<HashMap<String, Instant>>,
}

impl KeyedSpacing {
    /// Spacing of `interval` per key.
    pub fn new(interval: Duration) -> Self {
        KeyedSpacing {
            interval,
            max_keys: 4096,
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves the next slot for `key`, returning how long to wait for it.
    pub fn reserve(&self, key: &str) -> Duration {
        let now = Instant::now();
        let mut map = self.next.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_keys && !map.contains_key(key) {
            // Keys whose slot has passed carry no state worth keeping.
            map.retain(|_, t| *t > now);
        }
        let slot = map.get(key).copied().unwrap_or(now).max(now);
        map.insert(key.to_owned(), slot + self.interval);
        slot - now
    }
}

/// A sink's limiter: optional bucket, optional per-key spacing, and a pause gate.
#[derive(Debug, Default)]
pub struct Limiter {
    bucket: Option<TokenBucket>,
    spacing: Option<KeyedSpacing>,
    paused_until: Mutex<Option<Instant>>,
}

impl Limiter {
    /// A limiter with the given parts.
    pub fn new(bucket: Option<TokenBucket>, spacing: Option<KeyedSpacing>) -> Self {
        Limiter {
            bucket,
            spacing,
            paused_until: Mutex::new(None),
        }
    }

    /// Blocks every caller for `d` from now (server said remaining = 0 or 429).
    pub fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut p = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        *p = Some(p.map_or(until, |old| old.max(until)));
    }

    /// Waits until a message for `key` may be sent; counts a rate-limit wait for `sink` if it had to wait.
    pub async fn acquire(&self, sink: &str, key: &str) {
        let mut wait = Duration::ZERO;
        let paused = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = paused {
            wait = until.saturating_duration_since(Instant::now());
        }
        if let Some(s) = &self.spacing {
            wait = wait.max(s.reserve(key));
        }
        if let Some(b) = &self.bucket {
            wait = wait.max(b.reserve());
        }
        if !wait.is_zero() {
            metrics::rate_limit_wait(sink);
            tracing::debug!(sink, wait_ms = wait.as_millis() as u64, "rate limit wait");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing test should panic
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_spaces_after_burst() {
        let b = TokenBucket::new(2.0, 2.0);
        assert_eq!(b.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), Duration::from_millis(500));
        assert_eq!(b.reserve(), Duration::from_millis(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn per_key_spacing() {
        let s = KeyedSpacing::new(Duration::from_secs(1));
        assert_eq!(s.reserve("a"), Duration::ZERO);
        assert_eq!(s.reserve("b"), Duration::ZERO);
        assert_eq!(s.reserve("a"), Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(s.reserve("a"), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_blocks_acquire() {
        let l = Limiter::new(None, None);
        l.pause(Duration::from_secs(3));
        let t = Instant::now();
        l.acquire("s", "k").await;
        assert!(t.elapsed() >= Duration::from_secs(3));
    }
}
