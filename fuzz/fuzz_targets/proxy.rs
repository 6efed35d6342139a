#![no_main]
//! Body: `hookgate_ingest::fuzzing::proxy` (replayed by the unit tests in `ingest/src/fuzzing/corpus.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookgate_ingest::fuzzing::proxy(data));
