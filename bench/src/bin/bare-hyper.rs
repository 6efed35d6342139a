//! `bare-hyper`: the ceiling. A bare hyper 1 HTTP/1.1 keep-alive server that reads each
//! request body in full and answers 200 with a body shaped like hookgate's
//! (`{"id":"<ULID>","duplicate":false}`), doing nothing else. Driven by `hookgate-load`,
//! it tells what the machine, the loopback and the generator allow before hookgate does
//! any work; `run.sh` reports every scenario as a ratio of it.
//!
//! With `--delay 5s` it holds every answer that long, so it can stand in for a slow HTTP
//! destination (`run.sh` scenario 5 points a hookgate `http` sink at it). On exit (SIGTERM,
//! SIGINT or `--exit-after`) it prints `requests: received N, answered M`, so a script can
//! tell that the destination was really called.
//!
//! Run: `cargo run --release -p hookgate-bench --bin bare-hyper -- --listen 127.0.0.1:0
//! [--delay 5s]` (prints `listening on ADDR` when ready; exits by itself after
//! `--exit-after`).

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A bare hyper server: read the body, answer 200.
#[derive(Parser)]
#[command(name = "bare-hyper", about)]
struct Args {
    /// Address to listen on (loopback only is sensible).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads (default: one per core, like hookgate's).
    #[arg(long)]
    threads: Option<usize>,
    /// Exit after this many seconds even if nobody stops it.
    #[arg(long, default_value_t = 600)]
    exit_after: u64,
    /// Hold every answer this long after reading the request body (e.g. `5s`): a slow
    /// destination.
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    rt.build()?.block_on(run(args))
}

/// Requests seen and answered, printed on exit.
#[derive(Default)]
struct Counts {
    received: AtomicU64,
    answered: AtomicU64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let counts = Arc::new(Counts::default());
    let deadline = tokio::time::sleep(Duration::from_secs(args.exit_after));
    tokio::pin!(deadline);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let delay = args.delay;
    let result = loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => break Err(e.into()),
            },
            _ = &mut deadline => break Ok(()),
            _ = term.recv() => break Ok(()),
            _ = tokio::signal::ctrl_c() => break Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let counts = counts.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let counts = counts.clone();
            async move {
                let n = counts.received.fetch_add(1, Ordering::Relaxed) + 1;
                // Read the whole body, as hookgate must before verifying.
                let _body = req.into_body().collect().await.map(|c| c.to_bytes());
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                counts.answered.fetch_add(1, Ordering::Relaxed);
                let id = ulid::Ulid(u128::from(n));
                let mut r = Response::new(Full::new(Bytes::from(format!(
                    "{{\"id\":\"{id}\",\"duplicate\":false}}"
                ))));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(r)
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    };
    println!(
        "requests: received {}, answered {}",
        counts.received.load(Ordering::Relaxed),
        counts.answered.load(Ordering::Relaxed)
    );
    std::io::stdout().flush()?;
    result
}
