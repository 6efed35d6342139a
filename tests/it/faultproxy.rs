//! A TCP proxy for fault injection, placed between hookgate and the broker
//! ([`super::Broker::start_behind_proxy`]). It forwards bytes both ways and, when
//! told at run time, adds latency, stalls, partitions the network or resets connections.
//!
//! It runs on its own small tokio runtime, so faults keep their timing however busy the
//! test's runtime is, and the proxy can be owned by the (synchronous) `Broker`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards at once.
    None,
    /// Holds every chunk this long before forwarding it, in each direction (a round trip
    /// gets twice this); order and throughput are kept.
    Latency(Duration),
    /// Forwards nothing either way, keeping every connection open and accepting new ones; what
    /// was sent meanwhile flows on when the stall ends (a hung peer that comes back).
    Stall,
    /// A silent network partition: nothing is forwarded, new connections are accepted but
    /// never reach the broker, and no connection that lived through it survives — all are
    /// reset when the partition heals (as TCP gives up on them in a real one).
    Blackhole,
    /// A partition that refuses: every open connection is reset now, every new one is reset
    /// as soon as it is accepted.
    Refuse,
}

struct Shared {
    fault: watch::Sender<Fault>,
    /// Bumped to reset every connection opened before it.
    generation: watch::Sender<u64>,
    accepted: AtomicU64,
    resets: AtomicU64,
}

/// The proxy; stops (and drops every connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        std_listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = std_listener.local_addr().expect("proxy address");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("faultproxy")
            .enable_all()
            .build()
            .expect("the fault proxy's runtime");
        let shared = Arc::new(Shared {
            fault: watch::channel(Fault::None).0,
            generation: watch::channel(0).0,
            accepted: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        });
        let sh = shared.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(std_listener).expect("tokio listener");
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                sh.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(client, upstream, sh.clone()));
            }
        });
        FaultProxy {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Where clients connect (the address the broker advertises).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches to `fault`. Leaving [`Fault::Blackhole`] resets every connection that lived
    /// through it; entering [`Fault::Refuse`] resets every open connection.
    pub fn set(&self, fault: Fault) {
        let before = *self.shared.fault.borrow();
        self.shared.fault.send_replace(fault);
        if fault == Fault::Refuse || (before == Fault::Blackhole && fault != Fault::Blackhole) {
            self.reset_all();
        }
    }

    /// Back to plain forwarding (see [`FaultProxy::set`]).
    pub fn heal(&self) {
        self.set(Fault::None);
    }

    /// Resets (RST, via `SO_LINGER` 0) every connection open now, both sides; later ones
    /// are forwarded as the current fault says.
    pub fn reset_all(&self) {
        self.shared.resets.fetch_add(1, Ordering::Relaxed);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Not `drop(rt)`: that blocks, which panics inside the test's async context.
            rt.shutdown_background();
        }
    }
}

/// Resolves once the generation moves past `born`.
async fn reset_after(mut gen: watch::Receiver<u64>, born: u64) {
    let _ = gen.wait_for(|g| *g != born).await;
}

async fn connection(client: TcpStream, upstream: SocketAddr, sh: Arc<Shared>) {
    // Every close of a proxied connection is a reset: a clean FIN only where a peer closed.
    let _ = client.set_zero_linger();
    let gen = sh.generation.subscribe();
    let born = *gen.borrow();
    let fault = *sh.fault.borrow();
    match fault {
        Fault::Refuse => return,
        Fault::Blackhole => {
            // Accepted, never answered, never forwarded; reset at the heal.
            reset_after(gen, born).await;
            return;
        }
        _ => {}
    }
    let Ok(Ok(server)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream)).await
    else {
        return;
    };
    let _ = server.set_zero_linger();
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // tokio::io::split, not into_split: an OwnedWriteHalf sends a FIN when dropped, which
    // would turn a reset into a clean close.
    let (cr, cw) = tokio::io::split(client);
    let (sr, sw) = tokio::io::split(server);
    let faults = sh.fault.subscribe();
    tokio::select! {
        _ = async {
            tokio::join!(pipe(cr, sw, faults.clone()), pipe(sr, cw, faults.clone()))
        } => {}
        _ = reset_after(gen, born) => {}
    }
    // Dropping both sockets here sends RST both ways (zero linger).
}

/// Waits while the fault forbids forwarding; returns the latency to add.
async fn flowing(faults: &mut watch::Receiver<Fault>) -> Duration {
    let Ok(f) = faults
        .wait_for(|f| !matches!(f, Fault::Stall | Fault::Blackhole | Fault::Refuse))
        .await
    else {
        return Duration::ZERO;
    };
    match *f {
        Fault::Latency(d) => d,
        _ => Duration::ZERO,
    }
}

/// One direction: a reader stamps chunks, a writer forwards each at stamp + latency.
async fn pipe(
    mut from: ReadHalf<TcpStream>,
    mut to: WriteHalf<TcpStream>,
    faults: watch::Receiver<Fault>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let mut rf = faults.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            flowing(&mut rf).await;
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let mut wf = faults;
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            let latency = flowing(&mut wf).await;
            tokio::time::sleep_until(at + latency).await;
            // A stall that began during the wait holds the chunk too.
            flowing(&mut wf).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
