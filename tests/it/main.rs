//! hookgate's end-to-end suite: one test binary (so the 2-core CI links the dependency tree
//! once), with a module per capability. Every test starts its own real processes on
//! 127.0.0.1 — a Tansu broker, the `hookgate` binary, fake chat APIs — and uses its own
//! topic and ports, so tests run in parallel.

#![allow(missing_docs, clippy::unwrap_used)]

mod admission;
mod chat_errors;
mod chat_lib;
mod console;
mod console_browser;
mod console_kafka;
mod deploy;
mod dispatch;
mod edge;
mod fakes;
mod faults;
mod feed_lib;
mod handshakes;
mod harness;
mod ingest;
mod kafka_faults;
mod proxies;
mod redis_dedupe;
mod replay;
mod replicas;
mod scenarios;
mod secrets;
mod spool;
mod spool_faults;
mod tls;
mod webdriver;
