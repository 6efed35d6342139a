//! hookgate's ingest: the HTTP edge that proves each webhook authentic, drops duplicates
//! and answers 2xx only once the event is durable.
//!
//! Layout:
//! - [`config`]: the TOML config, `${VAR}` interpolation, `HOOKGATE__…` overrides, `check`.
//! - [`verify`]: one pure, constant-time verifier per provider, and `sign` for tests/CLI.
//! - [`extract`]: delivery id / event type / partition key, provider handshakes (simd-json).
//! - [`dedupe`]: `(source, delivery id)` in a sharded fixed-TTL set with coalesced concurrent
//!   duplicates.
//! - [`redis_dedupe`]: the same dedupe shared by replicas through Redis (`[dedupe.redis]`),
//!   the local set in front as a cache.
//! - [`maybe_written`]: deliveries whose failed append may still reach Kafka, so a retry
//!   reuses their `hookgate-id`.
//! - [`edge`]: before HTTP: TLS (reloadable certificate), the PROXY protocol, and the
//!   client address behind trusted proxies (`Forwarded` / `X-Forwarded-For`).
//! - [`server`]: the request path ([`server::App::handle`]) and the hyper listener.
//! - [`console`]: the web console and admin API on the admin listener (`[admin] token`).
//! - [`runtime`]: building the log from config, metrics, signals: what `serve` wires up.
//! - `fuzzing` (hidden): the bodies of the cargo-fuzz targets in `fuzz/`, replayed by
//!   its unit tests (`fuzzing/corpus.rs`); property tests of verify and extract in
//!   `properties.rs` (test-only).
//! - [`telegram_setup`]: the `setWebhook` call `hookgate telegram set-webhook` prints.
//! - `main.rs`: the `hookgate` CLI (`serve`, `check`, `sign`, `spool`, `dispatch`, `dlq`,
//!   `telegram set-webhook`).

pub mod admission;
pub mod config;
pub mod console;
pub mod dedupe;
pub mod edge;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
pub mod learned;
pub mod maybe_written;
pub mod probe;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod properties;
pub mod redis_dedupe;
pub mod runtime;
pub mod server;
pub mod telegram_setup;
pub mod verify;
