//! `bare-hyper`: the ceiling. A bare hyper 1 HTTP/1.1 keep-alive server that reads each
//! request body in full and answers 200 with a body shaped like hookgate's
//! (`{"id":"<ULID>","duplicate":false}`), doing nothing else. Driven by `hookgate-load`,
//! it tells what the machine, the loopback and the generator allow before hookgate does
//! any work; `run.sh` reports every scenario as a ratio of it.
//!
//! Run: `cargo run --release -p hookgate-bench --bin bare-hyper -- --listen 127.0.0.1:0`
//! (prints `listening on ADDR` when ready; exits by itself after `--exit-after`).

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

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let counter = Arc::new(AtomicU64::new(1));
    let deadline = tokio::time::sleep(Duration::from_secs(args.exit_after));
    tokio::pin!(deadline);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = &mut deadline => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let counter = counter.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let counter = counter.clone();
            async move {
                // Read the whole body, as hookgate must before verifying.
                let _body = req.into_body().collect().await.map(|c| c.to_bytes());
                let id = ulid::Ulid(u128::from(counter.fetch_add(1, Ordering::Relaxed)));
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
    }
}
