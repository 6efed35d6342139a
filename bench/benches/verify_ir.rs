//! Instructions per verify, for callgrind (deterministic, unlike criterion's seconds on a
//! shared machine). One process verifies one provider's 1 KB bench request (the same
//! request `stages` builds for `verify/<provider>/1KB`) `N` times, or computes ring's
//! HMAC-SHA256 of `LEN` bytes `N` times (`floor:LEN`, the floor of a scheme that signs
//! `LEN` bytes). Run each twice under callgrind with two `N`s; the difference of the
//! totals over the difference of the `N`s is the cost of one call, without start-up:
//!
//!     cargo bench --workspace --bench verify_ir --no-run
//!     bench/verify-ir.sh github box floor:1024 floor:1080
//!
//! `--signed-len` prints nothing but the request's body length and headers, to work out
//! what a scheme signs.

use hookgate_bench::corpus;
use hookgate_ingest::verify::{Provider, Verifier};
use http::HeaderMap;
use std::hint::black_box;

const NOW: i64 = 1_714_564_800;

#[inline(never)]
fn run_verify(v: &Verifier, hm: &HeaderMap, body: &[u8], n: u64) {
    for _ in 0..n {
        let r = v.verify(black_box(hm), black_box(body), NOW);
        assert!(r.is_ok(), "the bench request verifies");
    }
}

#[inline(never)]
fn run_floor(key: &ring::hmac::Key, msg: &[u8], n: u64) {
    for _ in 0..n {
        black_box(ring::hmac::sign(key, black_box(msg)));
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(what), Some(n)) = (args.first(), args.get(1)) else {
        eprintln!("usage: verify_ir <provider | floor:LEN> <N> | verify_ir <provider> --show");
        std::process::exit(2);
    };
    if let Some(len) = what.strip_prefix("floor:") {
        let len: usize = len.parse().expect("floor:LEN");
        let n: u64 = n.parse().expect("N");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, corpus::HMAC_SECRET.as_bytes());
        run_floor(&key, &vec![b'x'; len], n);
        return;
    }
    let p = Provider::parse(what).expect("known provider");
    let secret = corpus::config_secret(p, corpus::default_secret(p)).expect("secret");
    let v = Verifier::with_options(p, &[secret], corpus::options(p)).expect("verifier");
    let id = corpus::delivery_id(p, 1, 1);
    let r = corpus::signed_request(p, corpus::default_secret(p), 1024, &id, NOW, "/")
        .expect("sign a bench request");
    let mut hm = HeaderMap::new();
    for (k, val) in &r.headers {
        hm.insert(k.clone(), val.clone());
    }
    // `VERIFY_IR_REALISTIC=1`: also the headers a real delivery carries besides the
    // signed ones (host, user agent, proxy headers…), for schemes that read their
    // headers in one pass over the map, whose cost grows with the map.
    if std::env::var_os("VERIFY_IR_REALISTIC").is_some() {
        for (k, val) in [
            ("host", "hooks.example.com"),
            ("user-agent", "Webhook-Sender/2.1 (+https://example.com)"),
            ("content-length", "1024"),
            ("accept", "*/*"),
            ("accept-encoding", "gzip, deflate"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "3f1c0c9e-8e0b-4a51-9d3c-6f2f0c1b2a3d"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ] {
            hm.insert(
                http::HeaderName::from_static(k),
                http::HeaderValue::from_static(val),
            );
        }
    }
    if n == "--show" {
        println!("body {} bytes", r.body.len());
        for (k, val) in &r.headers {
            println!("{k}: {} ({} bytes)", val.to_str().unwrap_or("?"), val.len());
        }
        return;
    }
    run_verify(&v, &hm, &r.body, n.parse().expect("N"));
}
