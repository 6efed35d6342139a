#![no_main]
//! Body: `hookgate_ingest::fuzzing::verify` (replayed by `ingest/tests/fuzz_corpus.rs`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookgate_ingest::fuzzing::verify(data));
