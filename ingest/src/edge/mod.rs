//! The public listener's edge: what happens to a connection before HTTP, and who the
//! client of a request is.
//!
//! - [`proxy`]: the PROXY protocol header and the `Forwarded` / `X-Forwarded-For` walk,
//!   both believed only from `[server] trusted_proxies`.
//! - [`tls`]: rustls with a certificate reloaded on SIGHUP and on file change.
//!
//! Order on the wire: PROXY header, then TLS, then HTTP. [`Edge::accept`] does the first
//! two inside the connection's own task (never in the accept loop), within
//! `server.header_timeout`, and returns the stream for hyper with the connection's
//! [`ConnAddr`]; [`Edge::client`] gives each request's client address from it.

pub mod proxy;
pub mod tls;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderMap;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use self::proxy::ProxyError;
use self::tls::{Tls, TlsError, TlsFiles};

/// The addresses of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAddr {
    /// The TCP peer (a load balancer, when there is one).
    pub peer: SocketAddr,
    /// The connection's client: the PROXY header's source when `proxy_protocol` is on,
    /// else the peer (IPv4-mapped IPv6 shown as IPv4). Per-request forwarding headers may
    /// still name another client; see [`Edge::client`].
    pub client: IpAddr,
}

/// How the public listener treats connections: TLS or not, PROXY protocol or not, which
/// peers are trusted proxies.
#[derive(Debug)]
pub struct Edge {
    tls: Option<Arc<Tls>>,
    trusted: Vec<IpNet>,
    proxy_protocol: bool,
    handshake_timeout: Duration,
}

impl Edge {
    /// An edge from `[server]`'s settings; loads the certificate when `tls` is given.
    pub fn new(
        tls: Option<&TlsFiles>,
        trusted_proxies: Vec<IpNet>,
        proxy_protocol: bool,
        handshake_timeout: Duration,
    ) -> Result<Edge, TlsError> {
        Ok(Edge {
            tls: tls.map(Tls::new).transpose()?.map(Arc::new),
            trusted: trusted_proxies,
            proxy_protocol,
            handshake_timeout,
        })
    }

    /// Plain TCP, nobody trusted: the admin listener.
    pub fn plain(handshake_timeout: Duration) -> Edge {
        Edge {
            tls: None,
            trusted: Vec::new(),
            proxy_protocol: false,
            handshake_timeout,
        }
    }

    /// Whether `ip` (canonical) is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        !self.trusted.is_empty() && proxy::is_trusted(ip, &self.trusted)
    }

    /// The TLS state, when TLS is on (for the reloader).
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// Reads the PROXY header (when `proxy_protocol`) and does the TLS handshake (when TLS
    /// is on), both within the handshake timeout. `None`: the connection was refused; it is
    /// closed when the stream drops, and the reason was counted.
    pub async fn accept(&self, mut tcp: TcpStream, peer: SocketAddr) -> Option<(Stream, ConnAddr)> {
        let peer_ip = proxy::canonical(peer.ip());
        let mut conn = ConnAddr {
            peer,
            client: peer_ip,
        };
        // Which step a timeout interrupted, for its metric.
        let in_tls = AtomicBool::new(false);
        let setup = async {
            if self.proxy_protocol {
                if !proxy::is_trusted(peer_ip, &self.trusted) {
                    return Err(Refused::Proxy(ProxyError::UntrustedPeer));
                }
                let h = proxy::read_header(&mut tcp).await.map_err(Refused::Proxy)?;
                if let Some(src) = h.source {
                    conn.client = proxy::canonical(src.ip());
                }
            }
            in_tls.store(true, Ordering::Relaxed);
            match &self.tls {
                Some(tls) => match tls.acceptor().accept(tcp).await {
                    Ok(s) => Ok(Stream::Tls(Box::new(s))),
                    Err(e) => Err(Refused::Tls(e)),
                },
                None => Ok(Stream::Plain(tcp)),
            }
        };
        let result = match tokio::time::timeout(self.handshake_timeout, setup).await {
            Ok(r) => r,
            Err(_) if in_tls.load(Ordering::Relaxed) => Err(Refused::TlsTimeout),
            Err(_) => Err(Refused::Proxy(ProxyError::Timeout)),
        };
        match result {
            Ok(s) => Some((s, conn)),
            Err(Refused::Proxy(e)) => {
                metrics::counter!("hookgate_proxy_protocol_errors_total", "reason" => e.reason())
                    .increment(1);
                tracing::debug!(peer = %peer, error = %e, "connection refused");
                None
            }
            Err(Refused::Tls(e)) => {
                metrics::counter!("hookgate_tls_handshake_errors_total").increment(1);
                tracing::debug!(peer = %peer, client = %conn.client, error = %e, "TLS handshake failed");
                None
            }
            Err(Refused::TlsTimeout) => {
                metrics::counter!("hookgate_tls_handshake_errors_total").increment(1);
                tracing::debug!(peer = %peer, client = %conn.client, "TLS handshake timed out");
                None
            }
        }
    }

    /// The client address of one request on connection `conn`: see
    /// [`proxy::resolve_client`] (forwarding headers count only when `conn.client` is a
    /// trusted proxy).
    pub fn client(&self, conn: &ConnAddr, headers: &HeaderMap) -> IpAddr {
        if self.trusted.is_empty() {
            return conn.client;
        }
        proxy::resolve_client(conn.client, headers, &self.trusted)
    }
}

enum Refused {
    Proxy(ProxyError),
    Tls(io::Error),
    TlsTimeout,
}

/// A public-listener connection after its handshakes: plain TCP or TLS over TCP.
pub enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS (boxed: the session state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
