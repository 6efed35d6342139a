//! Admission control an anonymous client cannot exhaust: per-client limits on requests in
//! flight and open connections, a cap on connections in total, and optional token-bucket
//! rate limits per client and per source.
//!
//! The counts of what a client holds now (requests in flight, open connections) live in
//! sharded maps whose entries are removed when they fall back to zero, so their size is
//! bounded by what is open at once (itself capped by `max_connections`), whatever number of
//! addresses a client sprays. The rate-limit buckets must outlive the requests that drained
//! them, so they live in a bounded cache with expiry (moka): at most
//! `client_state_capacity` clients are tracked, and a bucket idle for long enough to have
//! refilled is forgotten (forgetting a full bucket changes nothing).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use metrics::Counter;
use serde::Deserialize;

/// A token bucket: `per_second` tokens added each second, at most `burst` held.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once above the sustained rate (the bucket's size); default
    /// one second's worth.
    pub burst: Option<u32>,
}

impl RateLimit {
    /// Checks the values; the message names what is wrong.
    pub fn check(&self) -> Result<(), String> {
        if !(self.per_second.is_finite() && self.per_second > 0.0 && self.per_second <= 1e9) {
            return Err("per_second must be a number above 0 (at most 1e9)".into());
        }
        if self.burst == Some(0) {
            return Err("burst must be at least 1".into());
        }
        Ok(())
    }

    fn quota(&self) -> Quota {
        let burst = self
            .burst
            .unwrap_or(self.per_second.ceil().clamp(1.0, u32::MAX as f64) as u32);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        // One token every 1/per_second; a period of at least 1 ns.
        let period = Duration::from_secs_f64(1.0 / self.per_second).max(Duration::from_nanos(1));
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }

    /// A bucket for one key (one source, or one client).
    pub fn bucket(&self) -> Bucket {
        Bucket(Arc::new(DefaultDirectRateLimiter::direct(self.quota())))
    }

    /// How long a bucket takes to refill from empty: after that long idle, forgetting it
    /// is the same as keeping it.
    fn refill_time(&self) -> Duration {
        let burst = self.burst.unwrap_or(self.per_second.ceil() as u32).max(1);
        Duration::from_secs_f64(f64::from(burst) / self.per_second).max(Duration::from_secs(1))
    }
}

/// One token bucket.
#[derive(Clone)]
pub struct Bucket(Arc<DefaultDirectRateLimiter>);

impl Bucket {
    /// Takes a token; `Err(seconds)` to wait (at least 1) when the bucket is empty.
    pub fn take(&self) -> Result<(), u32> {
        self.0.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs_f64().ceil().clamp(1.0, u32::MAX as f64) as u32
        })
    }
}

const SHARDS: usize = 16;

/// How many of something each client holds now; an entry exists only while non-zero.
struct Counts {
    shards: [Mutex<HashMap<IpAddr, u32, foldhash::fast::RandomState>>; SHARDS],
    hasher: foldhash::fast::RandomState,
}

impl Counts {
    fn new() -> Counts {
        Counts {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32, foldhash::fast::RandomState>> {
        use std::hash::BuildHasher;
        &self.shards[(self.hasher.hash_one(ip) as usize) % SHARDS]
    }

    /// One more for `ip`, unless it already holds `max`.
    fn try_add(&self, ip: IpAddr, max: u32) -> bool {
        let mut m = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn remove_one(&self, ip: IpAddr) {
        let mut m = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }

    fn get(&self, ip: IpAddr) -> u32 {
        let m = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        m.get(&ip).copied().unwrap_or(0)
    }

    fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// The limits, as configured (`[server]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests in flight per client address.
    pub in_flight_per_client: u32,
    /// Open connections in total.
    pub connections: usize,
    /// Open connections per client address.
    pub connections_per_client: u32,
    /// Token bucket per client address, over all sources.
    pub client_rate: Option<RateLimit>,
    /// Most clients whose buckets are remembered.
    pub client_state_capacity: u64,
}

/// Why admission refused something: the metric label and the error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client has `in_flight_per_client` requests in flight.
    ClientInFlight,
    /// The client's token bucket is empty.
    ClientRate,
    /// The source's token bucket is empty.
    SourceRate,
    /// `max_connections` are open.
    Connections,
    /// The client has `max_connections_per_client` open.
    ClientConnections,
}

impl Refusal {
    /// The stable reason (metric label, error code).
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ClientInFlight => "client_in_flight",
            Refusal::ClientRate => "client_rate",
            Refusal::SourceRate => "source_rate",
            Refusal::Connections => "connections",
            Refusal::ClientConnections => "client_connections",
        }
    }
}

const REFUSALS: [Refusal; 5] = [
    Refusal::ClientInFlight,
    Refusal::ClientRate,
    Refusal::SourceRate,
    Refusal::Connections,
    Refusal::ClientConnections,
];

/// Per-client state and the counters of what was refused.
pub struct Gate {
    limits: Limits,
    in_flight: Counts,
    conns: Counts,
    open: AtomicUsize,
    buckets: Option<(
        RateLimit,
        moka::sync::Cache<IpAddr, Bucket, foldhash::fast::RandomState>,
    )>,
    refused: [Counter; 5],
}

impl Gate {
    /// A gate with these limits (and its metrics registered).
    pub fn new(limits: Limits) -> Gate {
        let buckets = limits.client_rate.map(|r| {
            let cache = moka::sync::Cache::builder()
                .max_capacity(limits.client_state_capacity.max(1))
                .time_to_idle(r.refill_time())
                .build_with_hasher(foldhash::fast::RandomState::default());
            (r, cache)
        });
        Gate {
            refused: REFUSALS.map(
                |r| metrics::counter!("hookgate_admission_refused_total", "reason" => r.as_str()),
            ),
            limits,
            in_flight: Counts::new(),
            conns: Counts::new(),
            open: AtomicUsize::new(0),
            buckets,
        }
    }

    fn refuse(&self, r: Refusal) -> Refusal {
        self.refused[r as usize].increment(1);
        r
    }

    /// A request from `client`: a slot among its requests in flight, held until the guard
    /// is dropped (after the request's append, which may outlive the request).
    pub fn request(self: &Arc<Self>, client: IpAddr) -> Result<RequestSlot, (Refusal, u32)> {
        if let Some((rate, buckets)) = &self.buckets {
            if let Err(wait) = buckets.get_with(client, || rate.bucket()).take() {
                return Err((self.refuse(Refusal::ClientRate), wait));
            }
        }
        if !self
            .in_flight
            .try_add(client, self.limits.in_flight_per_client)
        {
            return Err((self.refuse(Refusal::ClientInFlight), 1));
        }
        Ok(RequestSlot {
            gate: self.clone(),
            client,
        })
    }

    /// Counts a refusal by the source's own bucket.
    pub fn refused_by_source_rate(&self) {
        self.refuse(Refusal::SourceRate);
    }

    /// A new connection from `client`; `per_client` is false for a trusted proxy's
    /// connection (it carries many clients), which counts only towards the total.
    pub fn connection(
        self: &Arc<Self>,
        client: IpAddr,
        per_client: bool,
    ) -> Result<ConnSlot, Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.limits.connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse(Refusal::Connections));
        }
        if per_client
            && !self
                .conns
                .try_add(client, self.limits.connections_per_client)
        {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse(Refusal::ClientConnections));
        }
        Ok(ConnSlot {
            gate: self.clone(),
            client: per_client.then_some(client),
        })
    }

    /// Counts connection `slot` (so far only in the total) against `client`'s cap too: a
    /// trusted proxy's connection once its PROXY header named the client.
    pub fn add_client(&self, slot: &mut ConnSlot, client: IpAddr) -> Result<(), Refusal> {
        if slot.client.is_some() {
            return Ok(());
        }
        if !self
            .conns
            .try_add(client, self.limits.connections_per_client)
        {
            return Err(self.refuse(Refusal::ClientConnections));
        }
        slot.client = Some(client);
        Ok(())
    }

    /// Requests `client` has in flight now.
    pub fn in_flight_of(&self, client: IpAddr) -> u32 {
        self.in_flight.get(client)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Clients with anything tracked now: (with requests in flight, with connections
    /// open, with a rate bucket).
    pub fn tracked_clients(&self) -> (usize, usize, u64) {
        let buckets = self.buckets.as_ref().map_or(0, |(_, b)| {
            b.run_pending_tasks();
            b.entry_count()
        });
        (self.in_flight.clients(), self.conns.clients(), buckets)
    }
}

/// A request slot of one client; released when dropped.
pub struct RequestSlot {
    gate: Arc<Gate>,
    client: IpAddr,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.gate.in_flight.remove_one(self.client);
    }
}

/// An open connection; released when dropped.
pub struct ConnSlot {
    gate: Arc<Gate>,
    client: Option<IpAddr>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(c) = self.client {
            self.gate.conns.remove_one(c);
        }
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn gate(client_rate: Option<RateLimit>, capacity: u64) -> Arc<Gate> {
        Arc::new(Gate::new(Limits {
            in_flight_per_client: 3,
            connections: 5,
            connections_per_client: 2,
            client_rate,
            client_state_capacity: capacity,
        }))
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn a_client_holds_at_most_its_share_and_gets_it_back() {
        let g = gate(None, 10);
        let held: Vec<_> = (0..3).map(|_| g.request(ip(1)).unwrap()).collect();
        assert_eq!(
            g.request(ip(1)).err().map(|e| e.0),
            Some(Refusal::ClientInFlight)
        );
        // Another client is not affected.
        let other = g.request(ip(2)).unwrap();
        drop(held);
        assert_eq!(g.in_flight_of(ip(1)), 0);
        let _again = g.request(ip(1)).unwrap();
        drop(other);
        // Entries of clients with nothing in flight are gone.
        assert_eq!(g.tracked_clients().0, 1);
    }

    #[test]
    fn connections_are_capped_per_client_and_in_total_and_proxies_count_only_in_total() {
        let g = gate(None, 10);
        let a1 = g.connection(ip(1), true).unwrap();
        let _a2 = g.connection(ip(1), true).unwrap();
        assert_eq!(
            g.connection(ip(1), true).err(),
            Some(Refusal::ClientConnections)
        );
        // A trusted proxy is not held to the per-client cap.
        let _p: Vec<_> = (0..3)
            .map(|_| g.connection(ip(9), false).unwrap())
            .collect();
        assert_eq!(g.open_connections(), 5);
        assert_eq!(g.connection(ip(2), true).err(), Some(Refusal::Connections));
        drop(a1);
        let _b = g.connection(ip(2), true).unwrap();
        assert_eq!(g.open_connections(), 5);
    }

    #[test]
    fn a_spray_of_addresses_leaves_no_state_behind() {
        let g = gate(
            Some(RateLimit {
                per_second: 1000.0,
                burst: Some(10),
            }),
            100,
        );
        for n in 0..20_000 {
            let slot = g.request(ip(n)).unwrap();
            let conn = g.connection(ip(n), true).unwrap();
            drop((slot, conn));
        }
        let (in_flight, conns, buckets) = g.tracked_clients();
        assert_eq!((in_flight, conns), (0, 0));
        assert!(buckets <= 100, "the bucket cache is bounded: {buckets}");
    }

    #[test]
    fn an_empty_bucket_refuses_with_a_wait_of_at_least_a_second() {
        let g = gate(
            Some(RateLimit {
                per_second: 0.5,
                burst: Some(2),
            }),
            10,
        );
        let _a = g.request(ip(1)).unwrap();
        drop(_a);
        let _b = g.request(ip(1)).unwrap();
        drop(_b);
        let (why, wait) = g.request(ip(1)).err().unwrap();
        assert_eq!(why, Refusal::ClientRate);
        assert!((1..=2).contains(&wait), "{wait}");
        // Another client has its own bucket.
        assert!(g.request(ip(2)).is_ok());
    }

    #[test]
    fn rate_limits_are_checked() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(RateLimit {
                per_second: bad,
                burst: None
            }
            .check()
            .is_err());
        }
        assert!(RateLimit {
            per_second: 1.0,
            burst: Some(0)
        }
        .check()
        .is_err());
        assert!(RateLimit {
            per_second: 0.01,
            burst: None
        }
        .check()
        .is_ok());
        // A tiny rate still gives a bucket of one.
        let b = RateLimit {
            per_second: 0.01,
            burst: None,
        }
        .bucket();
        assert!(b.take().is_ok());
        assert!(b.take().is_err());
    }
}
