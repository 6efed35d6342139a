//! hookgate's measuring instruments, shared by the criterion benches (`benches/stages.rs`)
//! and the binaries (`hookgate-load`, `bare-hyper`, `budgets`).
//!
//! This library holds what both sides need to agree on:
//! - [`corpus`]: realistic webhook bodies of a chosen size per provider, signed with
//!   `hookgate_ingest::verify::sign` before any clock starts;
//! - [`replay`]: the corpus file `wrk` replays (`bench/wrk/replay.lua`) and what the
//!   script prints at the end of a run;
//! - [`cpu`]: CPU time per process from `/proc`, for CPU per event of every process;
//! - [`report`]: the JSON a load run writes (`hookgate-load --json FILE`) and the
//!   markdown table `run.sh` puts in `bench/RESULTS.md`.
//!
//! Nothing here is on hookgate's request path; it only drives and observes it.

pub mod corpus;
pub mod cpu;
pub mod replay;
pub mod report;
