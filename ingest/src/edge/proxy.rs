//! Who the client is behind a proxy: HAProxy's PROXY protocol (v1 text, v2 binary; the
//! spec is HAProxy's `doc/proxy-protocol.txt`) at the start of a connection, and the
//! `Forwarded` (RFC 7239) / `X-Forwarded-For` request headers, both believed only from
//! `[server] trusted_proxies`.
//!
//! [`parse`] is a pure function over the bytes read so far (no I/O, no panic, bounded), so a
//! fuzz target can call it; [`read_header`] feeds it from a stream without reading one byte
//! past the header (TLS or HTTP follows on the same stream). Written here rather than taken
//! from `ppp`: the reader needs to know how many more bytes the header can need (to read
//! exactly that), the errors feed a metric label, and the whole format is ~150 lines.

// Attacker-controlled bytes: no shortcut that could panic on them.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The v2 signature: the first 12 bytes of every binary header.
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v2 TLV of a CRC32c checksum of the header.
const PP2_TYPE_CRC32C: u8 = 0x03;
/// CRC32c (Castagnoli), as PROXY v2 uses it.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
/// The longest v1 header, CRLF included (the spec's bound).
pub const V1_MAX: usize = 107;
/// The longest v2 header accepted, 16-byte preamble included. The spec allows 16 + 65535;
/// real proxies send the address block (at most 216 bytes) and a few small TLVs.
pub const V2_MAX: usize = 2048;
/// The shortest v1 header (`PROXY UNKNOWN\r\n`); also less than any v2 header, so reading
/// this many bytes first never reads past a header.
const V1_MIN: usize = 15;

/// A parsed PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 1 (text) or 2 (binary).
    pub version: u8,
    /// The original client's address; `None` for v1 `UNKNOWN`, v2 `LOCAL` (a health check
    /// from the proxy itself) and address families without an IP: use the TCP peer.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
}

/// Why a connection's PROXY header was refused. [`ProxyError::reason`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes are not a PROXY header at all (e.g. a direct HTTP or TLS client).
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// It starts like a PROXY header but breaks the format.
    #[error("the PROXY protocol header is malformed")]
    Malformed,
    /// A v2 header that says it is longer than we accept, or a v1 line past 107 bytes.
    #[error("the PROXY protocol header is too long")]
    TooLong,
    /// The peer closed or the read failed before the header was complete.
    #[error("the connection closed before the PROXY protocol header was complete")]
    Truncated,
    /// The header did not arrive within `server.header_timeout`.
    #[error("the PROXY protocol header did not arrive in time")]
    Timeout,
    /// A v2 header carries a CRC32c (`PP2_TYPE_CRC32C`) that does not match its bytes.
    #[error("the PROXY protocol header's CRC32c checksum does not match")]
    Checksum,
    /// `proxy_protocol = true` and the TCP peer is not in `trusted_proxies`.
    #[error("PROXY protocol connection from a peer that is not a trusted proxy")]
    UntrustedPeer,
}

impl ProxyError {
    /// A stable, low-cardinality label for `hookgate_proxy_protocol_errors_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            ProxyError::Missing => "missing",
            ProxyError::Malformed => "malformed",
            ProxyError::TooLong => "too_long",
            ProxyError::Checksum => "checksum",
            ProxyError::Truncated => "truncated",
            ProxyError::Timeout => "timeout",
            ProxyError::UntrustedPeer => "untrusted_peer",
        }
    }
}

/// Parses a PROXY header (v1 or v2) at the start of `buf`. `Ok(None)`: `buf` is a prefix of
/// a header that may still be valid, read more ([`needed`] says how much at least);
/// `Ok(Some((header, n)))`: the header is the first `n` bytes, the rest belongs to the
/// protocol that follows. Never reads past a complete header, never panics.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let head = buf.get(..buf.len().min(V2_SIG.len())).unwrap_or_default();
    if V2_SIG.starts_with(head) && !head.is_empty() {
        return parse_v2(buf);
    }
    let head = buf.get(..buf.len().min(6)).unwrap_or_default();
    if b"PROXY ".starts_with(head) {
        return parse_v1(buf);
    }
    Err(ProxyError::Missing)
}

/// After [`parse`] returned `Ok(None)` for `buf`: the total length `buf` must reach before
/// parsing again can make progress (always more than `buf.len()`, never past the header).
pub fn needed(buf: &[u8]) -> usize {
    let n = buf.len();
    let want = if n < V1_MIN {
        V1_MIN
    } else if buf.starts_with(&V2_SIG[..]) {
        match (buf.get(14), buf.get(15)) {
            (Some(hi), Some(lo)) => 16 + usize::from(u16::from_be_bytes([*hi, *lo])),
            _ => 16,
        }
    } else {
        // v1: the line ends somewhere in the next bytes; one at a time, so nothing past
        // its CRLF is read.
        n + 1
    };
    want.max(n + 1)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let window = buf.get(..buf.len().min(V1_MAX)).unwrap_or_default();
    let Some(cr) = window.iter().position(|b| *b == b'\r') else {
        if window.iter().any(|b| !(b' '..=b'~').contains(b)) {
            return Err(ProxyError::Malformed);
        }
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    };
    match buf.get(cr + 1) {
        None if cr + 2 <= V1_MAX => return Ok(None),
        None => return Err(ProxyError::TooLong),
        Some(b'\n') => {}
        Some(_) => return Err(ProxyError::Malformed),
    }
    let line = window.get(6..cr).ok_or(ProxyError::Malformed)?;
    if line.iter().any(|b| !(b' '..=b'~').contains(b)) {
        return Err(ProxyError::Malformed);
    }
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed)?;
    let mut words = line.split(' ');
    let family = words.next().unwrap_or_default();
    let (source, destination) = match family {
        // Anything may follow UNKNOWN; the receiver ignores it and uses the peer.
        "UNKNOWN" => (None, None),
        "TCP4" | "TCP6" => {
            let v: Vec<&str> = words.collect();
            let [src, dst, sport, dport] = v.as_slice() else {
                return Err(ProxyError::Malformed);
            };
            let ip = |s: &str| -> Result<IpAddr, ProxyError> {
                if family == "TCP4" {
                    s.parse::<Ipv4Addr>().map(IpAddr::V4)
                } else {
                    s.parse::<Ipv6Addr>().map(IpAddr::V6)
                }
                .map_err(|_| ProxyError::Malformed)
            };
            let port = |s: &str| -> Result<u16, ProxyError> {
                // Decimal, no sign, no leading zero (the spec's form).
                if s.is_empty()
                    || s.len() > 5
                    || (s.len() > 1 && s.starts_with('0'))
                    || !s.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(ProxyError::Malformed);
                }
                s.parse().map_err(|_| ProxyError::Malformed)
            };
            (
                Some(SocketAddr::new(ip(src)?, port(sport)?)),
                Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            )
        }
        _ => return Err(ProxyError::Malformed),
    };
    Ok(Some((
        Header {
            version: 1,
            source,
            destination,
        },
        cr + 2,
    )))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let Some(pre) = buf.get(..16) else {
        return Ok(None);
    };
    let &[.., ver_cmd, fam, hi, lo] = pre else {
        return Err(ProxyError::Malformed);
    };
    if pre.get(..12) != Some(&V2_SIG[..]) {
        return Err(ProxyError::Missing);
    }
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed);
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::Malformed),
    };
    let (af, transport) = (fam >> 4, fam & 0x0f);
    if af > 3 || transport > 2 {
        return Err(ProxyError::Malformed);
    }
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = 16 + len;
    if total > V2_MAX {
        return Err(ProxyError::TooLong);
    }
    let Some(body) = buf.get(16..total) else {
        return Ok(None);
    };
    let addr_len = match af {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    let (addrs, mut tlvs) = (body.get(..addr_len), body.get(addr_len..));
    let Some(addrs) = addrs else {
        return Err(ProxyError::Malformed);
    };
    // Type-length-value records fill the rest; each must fit. Only a CRC32c is read: the
    // checksum of the whole header with its own four bytes zeroed.
    let mut at = 16 + addr_len;
    while let Some(rest) = tlvs.filter(|t| !t.is_empty()) {
        let (Some(&kind), Some(&h), Some(&l)) = (rest.first(), rest.get(1), rest.get(2)) else {
            return Err(ProxyError::Malformed);
        };
        let len = usize::from(u16::from_be_bytes([h, l]));
        if kind == PP2_TYPE_CRC32C {
            let (Some(sent), 4) = (rest.get(3..7), len) else {
                return Err(ProxyError::Malformed);
            };
            let mut digest = CRC32C.digest();
            digest.update(buf.get(..at + 3).unwrap_or_default());
            digest.update(&[0; 4]);
            digest.update(buf.get(at + 7..total).unwrap_or_default());
            if digest.finalize().to_be_bytes() != sent {
                return Err(ProxyError::Checksum);
            }
        }
        at += 3 + len;
        tlvs = Some(rest.get(3 + len..).ok_or(ProxyError::Malformed)?);
    }
    let (source, destination) = match (local, af) {
        (false, 1) => {
            let b = |i: usize| addrs.get(i).copied().unwrap_or(0);
            let ip = |i: usize| IpAddr::V4(Ipv4Addr::new(b(i), b(i + 1), b(i + 2), b(i + 3)));
            let port = |i: usize| u16::from_be_bytes([b(i), b(i + 1)]);
            (
                Some(SocketAddr::new(ip(0), port(8))),
                Some(SocketAddr::new(ip(4), port(10))),
            )
        }
        (false, 2) => {
            let b = |i: usize| addrs.get(i).copied().unwrap_or(0);
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                for (k, x) in o.iter_mut().enumerate() {
                    *x = b(i + k);
                }
                IpAddr::V6(Ipv6Addr::from(o))
            };
            let port = |i: usize| u16::from_be_bytes([b(i), b(i + 1)]);
            (
                Some(SocketAddr::new(ip(0), port(32))),
                Some(SocketAddr::new(ip(16), port(34))),
            )
        }
        // LOCAL (the proxy's own health check), UNSPEC and UNIX: no client IP; use the peer.
        _ => (None, None),
    };
    Ok(Some((
        Header {
            version: 2,
            source,
            destination,
        },
        total,
    )))
}

/// Reads one PROXY header from the start of `stream`, exactly: not one byte of what
/// follows is consumed. Bounded by [`V2_MAX`]; the caller bounds the time.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Header, ProxyError> {
    let mut buf = [0u8; V2_MAX];
    let mut have = 0usize;
    loop {
        let seen = buf.get(..have).unwrap_or_default();
        if let Some((h, _)) = parse(seen)? {
            return Ok(h);
        }
        let want = needed(seen).min(V2_MAX);
        if want <= have {
            return Err(ProxyError::TooLong);
        }
        let Some(dst) = buf.get_mut(have..want) else {
            return Err(ProxyError::TooLong);
        };
        stream
            .read_exact(dst)
            .await
            .map_err(|_| ProxyError::Truncated)?;
        have = want;
    }
}

/// `ip` as hookgate compares it: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
/// dual-stack socket reports for IPv4 clients) as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `ip` is in one of the `trusted` networks.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// One hop named in a forwarding header.
enum Hop {
    Addr(IpAddr),
    /// `unknown`, an obfuscated identifier (`_hidden`) or anything that does not parse.
    Opaque,
}

/// The client address of one request: `conn` (the TCP peer, or the PROXY header's source)
/// unless it is a trusted proxy, in which case the forwarding headers are walked from the
/// right: trusted hops are skipped, the first untrusted address is the client; if every hop
/// is trusted, the left-most is. `Forwarded` (its `for=` parameters) is used when present,
/// else `X-Forwarded-For`; several lines of a header are read as one list, in order. An
/// `unknown`, obfuscated or malformed entry ends the walk at the last good address (the
/// trusted hop that named it), so nothing a client writes can make it look like another
/// address than its own or a trusted proxy's.
pub fn resolve_client(conn: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let conn = canonical(conn);
    if !is_trusted(conn, trusted) {
        return conn;
    }
    let forwarded = headers.get_all(http::header::FORWARDED);
    let hops: Box<dyn Iterator<Item = Hop> + '_> = if forwarded.iter().next().is_some() {
        Box::new(
            forwarded
                .iter()
                .rev()
                .flat_map(|v| split_outside_quotes(v.to_str().unwrap_or("\u{0}"), b',').rev())
                .filter_map(forwarded_for),
        )
    } else {
        Box::new(
            headers
                .get_all("x-forwarded-for")
                .iter()
                .rev()
                .flat_map(|v| v.to_str().unwrap_or("\u{0}").rsplit(','))
                .map(|s| node(s.trim())),
        )
    };
    let mut last_good = conn;
    for hop in hops {
        match hop {
            Hop::Addr(ip) if is_trusted(ip, trusted) => last_good = ip,
            Hop::Addr(ip) => return ip,
            Hop::Opaque => return last_good,
        }
    }
    last_good
}

/// The `for=` node of one `Forwarded` element; `None` when the element has no `for`
/// (a proxy that only reports `proto=` or `host=`).
fn forwarded_for(element: &str) -> Option<Hop> {
    for pair in split_outside_quotes(element, b';') {
        let Some((k, v)) = pair.split_once('=') else {
            if pair.trim().is_empty() {
                continue;
            }
            return Some(Hop::Opaque);
        };
        if k.trim().eq_ignore_ascii_case("for") {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            return Some(node(v));
        }
    }
    None
}

/// `s` split at each `sep` that is not inside a quoted string (RFC 7239 values may be
/// quoted strings, which may hold `,` and `;` and backslash-escaped quotes).
fn split_outside_quotes(s: &str, sep: u8) -> std::vec::IntoIter<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, &b) in s.as_bytes().iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                parts.push(s.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(s.get(start..).unwrap_or(""));
    parts.into_iter()
}

/// One address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`; anything else is opaque.
fn node(s: &str) -> Hop {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Hop::Addr(canonical(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Hop::Addr(canonical(sa.ip()));
    }
    if let Some(ip) = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
    {
        return Hop::Addr(canonical(IpAddr::V6(ip)));
    }
    Hop::Opaque
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIG.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// Feeds `bytes` one at a time as the stream reader would (via `needed`) and checks
    /// every strict prefix is "need more" and the whole is the header.
    fn whole(bytes: &[u8]) -> (Header, usize) {
        for i in 0..bytes.len() {
            assert_eq!(parse(&bytes[..i]), Ok(None), "prefix of {i} bytes");
            assert!(
                needed(&bytes[..i]) <= bytes.len(),
                "needed() overshoots at {i}"
            );
        }
        parse(bytes).unwrap().unwrap()
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        let mut with_rest = h.to_vec();
        with_rest.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (hd, n) = parse(&with_rest).unwrap().unwrap();
        assert_eq!(n, h.len(), "stops at the CRLF");
        assert_eq!(hd.version, 1);
        assert_eq!(hd.source, sa("192.0.2.1:56324"));
        assert_eq!(hd.destination, sa("198.51.100.2:443"));
        assert_eq!(whole(h).1, h.len());

        let h = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 1\r\n";
        let (hd, _) = whole(h);
        assert_eq!(hd.source, sa("[2001:db8::1]:65535"));

        let (hd, n) = whole(b"PROXY UNKNOWN\r\n");
        assert_eq!((hd.source, n), (None, 15));
        let (hd, _) = whole(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
        assert_eq!(hd.source, None);
    }

    #[test]
    fn v1_malformed_truncated_oversized() {
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 1\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 01 1\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 1\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 1 1\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 1\rX",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 1\r\n",
            b"PROXY TCP4 192.0.2.1\x00198.51.100.2 1 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 1 extra\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Err(ProxyError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Truncated: a prefix is "need more", never a header.
        assert_eq!(parse(b"PROXY TCP4 192.0.2.1 198.5"), Ok(None));
        assert_eq!(parse(b"PROX"), Ok(None));
        // Past 107 bytes without CRLF.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'a');
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        long.truncate(V1_MAX - 1);
        assert_eq!(parse(&long), Ok(None));
        // CR as byte 107: the LF would be the 108th.
        long.push(b'\r');
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
    }

    #[test]
    fn v2_ipv4_ipv6_local_tlvs() {
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        let h = v2(1, 0x11, &body);
        let mut with_rest = h.clone();
        with_rest.extend_from_slice(b"\x16\x03\x01");
        let (hd, n) = parse(&with_rest).unwrap().unwrap();
        assert_eq!(n, 28);
        assert_eq!(hd.version, 2);
        assert_eq!(hd.source, sa("192.0.2.1:56324"));
        assert_eq!(hd.destination, sa("198.51.100.2:443"));
        whole(&h);

        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0, 80, 1, 187]);
        // TLVs: ALPN "h2", an authority, a no-op of length 0.
        body.extend_from_slice(&[0x01, 0, 2, b'h', b'2']);
        body.extend_from_slice(&[0x02, 0, 3, b'a', b'.', b'b']);
        body.extend_from_slice(&[0x04, 0, 0]);
        let h = v2(1, 0x21, &body);
        let (hd, n) = whole(&h);
        assert_eq!(n, h.len());
        assert_eq!(hd.source, sa("[2001:db8::1]:80"));
        assert_eq!(hd.destination, sa("[2001:db8::2]:443"));

        // LOCAL: a health check by the proxy itself; the addresses (if any) are ignored.
        let (hd, n) = whole(&v2(0, 0x00, &[]));
        assert_eq!((hd.source, n), (None, 16));
        let (hd, _) = whole(&v2(0, 0x11, &[1; 12]));
        assert_eq!(hd.source, None);
        // UNIX addresses: no IP, use the peer.
        let (hd, _) = whole(&v2(1, 0x31, &[0; 216]));
        assert_eq!(hd.source, None);
    }

    #[test]
    fn v2_crc32c_is_checked_when_present() {
        // The algorithm's check value (CRC-32C of "123456789").
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        let with_crc = |fix: bool| {
            let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2, 0, 80, 1, 187];
            body.extend_from_slice(&[0x01, 0, 2, b'h', b'2']);
            body.extend_from_slice(&[PP2_TYPE_CRC32C, 0, 4, 0, 0, 0, 0]);
            let mut h = v2(1, 0x11, &body);
            if fix {
                let sum = CRC32C.checksum(&h).to_be_bytes();
                let at = h.len() - 4;
                h[at..].copy_from_slice(&sum);
            }
            h
        };
        let good = with_crc(true);
        let (hd, n) = whole(&good);
        assert_eq!((hd.source, n), (sa("192.0.2.1:80"), good.len()));
        // A zero checksum, a flipped address bit, a flipped checksum bit.
        assert_eq!(parse(&with_crc(false)), Err(ProxyError::Checksum));
        let mut bad = good.clone();
        bad[16] ^= 1;
        assert_eq!(parse(&bad), Err(ProxyError::Checksum));
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 0x80;
        assert_eq!(parse(&bad), Err(ProxyError::Checksum));
        // A CRC TLV that is not four bytes long.
        let mut body = vec![0; 12];
        body.extend_from_slice(&[PP2_TYPE_CRC32C, 0, 2, 0, 0]);
        assert_eq!(parse(&v2(1, 0x11, &body)), Err(ProxyError::Malformed));
        assert_eq!(ProxyError::Checksum.reason(), "checksum");
    }

    #[test]
    fn v2_malformed_truncated_oversized() {
        // Version 1 in the binary form, an unknown command, family, transport.
        let mut h = v2(1, 0x11, &[0; 12]);
        h[12] = 0x11;
        assert_eq!(parse(&h), Err(ProxyError::Malformed));
        assert_eq!(parse(&v2(2, 0x11, &[0; 12])), Err(ProxyError::Malformed));
        assert_eq!(parse(&v2(1, 0x41, &[0; 12])), Err(ProxyError::Malformed));
        assert_eq!(parse(&v2(1, 0x13, &[0; 12])), Err(ProxyError::Malformed));
        // Shorter than its address block.
        assert_eq!(parse(&v2(1, 0x11, &[0; 11])), Err(ProxyError::Malformed));
        assert_eq!(parse(&v2(1, 0x21, &[0; 12])), Err(ProxyError::Malformed));
        // A TLV running past the end, a TLV cut in its own header.
        let mut body = vec![0; 12];
        body.extend_from_slice(&[0x01, 0, 5, b'h']);
        assert_eq!(parse(&v2(1, 0x11, &body)), Err(ProxyError::Malformed));
        let mut body = vec![0; 12];
        body.extend_from_slice(&[0x01, 0]);
        assert_eq!(parse(&v2(1, 0x11, &body)), Err(ProxyError::Malformed));
        // Truncated: need more, and `needed` says exactly how much.
        let full = v2(1, 0x11, &[7; 12]);
        assert_eq!(parse(&full[..20]), Ok(None));
        assert_eq!(needed(&full[..20]), 28);
        assert_eq!(needed(&full[..3]), V1_MIN);
        // Oversized: refused from the preamble, before the body is read.
        let mut pre = V2_SIG.to_vec();
        pre.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&pre), Err(ProxyError::TooLong));
        // A broken signature.
        let mut sig = full.clone();
        sig[5] = b'X';
        assert_eq!(parse(&sig), Err(ProxyError::Missing));
    }

    #[test]
    fn garbage_is_not_a_header_and_nothing_panics() {
        for g in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"proxy TCP4",
            b"\r\n\r\n\0\r\nQUIX\n",
            b"\x00",
        ] {
            assert_eq!(parse(g), Err(ProxyError::Missing), "{g:?}");
        }
        assert_eq!(parse(b""), Ok(None));
        // Every byte string of a few bytes, and pseudo-random longer ones: no panic, and
        // `needed` always asks for more than it has.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..600 {
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if len % 3 == 0 && len >= 12 {
                b[..12].copy_from_slice(V2_SIG);
            }
            if len % 3 == 1 && len >= 6 {
                b[..6].copy_from_slice(b"PROXY ");
            }
            if let Ok(None) = parse(&b) {
                assert!(needed(&b) > b.len());
            }
        }
    }

    #[tokio::test]
    async fn the_reader_stops_exactly_at_the_end_of_the_header() {
        for h in [
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(1, 0x11, &[1; 12]),
            v2(0, 0x00, &[]),
        ] {
            let mut wire = h.clone();
            wire.extend_from_slice(b"NEXT");
            let mut r = &wire[..];
            read_header(&mut r).await.unwrap();
            assert_eq!(r, b"NEXT", "left for what follows");
            let mut short = &h[..h.len() - 1];
            assert_eq!(read_header(&mut short).await, Err(ProxyError::Truncated));
        }
    }

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn forwarding_headers_resolve_to_the_right_most_untrusted_address() {
        let trusted: Vec<IpNet> = ["10.0.0.0/8", "2001:db8:ffff::/48", "127.0.0.1/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        type Case<'a> = (IpAddr, &'a [(&'a str, &'a str)], &'a str);
        let table: &[Case] = &[
            // An untrusted peer: its headers are ignored.
            (
                stranger,
                &[("x-forwarded-for", "192.0.2.1")],
                "198.51.100.7",
            ),
            (stranger, &[("forwarded", "for=192.0.2.1")], "198.51.100.7"),
            // A trusted peer without headers: itself.
            (proxy, &[], "10.0.0.1"),
            // Several hops; trusted ones skipped from the right.
            (
                proxy,
                &[("x-forwarded-for", "203.0.113.9, 192.0.2.1, 10.1.1.1")],
                "192.0.2.1",
            ),
            // Several lines, joined in order.
            (
                proxy,
                &[
                    ("x-forwarded-for", "203.0.113.9"),
                    ("x-forwarded-for", "10.2.2.2, 10.1.1.1"),
                ],
                "203.0.113.9",
            ),
            // All trusted: the left-most.
            (
                proxy,
                &[("x-forwarded-for", "10.9.9.9, 10.1.1.1")],
                "10.9.9.9",
            ),
            // Ports and IPv6, with and without brackets.
            (proxy, &[("x-forwarded-for", "192.0.2.1:4711")], "192.0.2.1"),
            (
                proxy,
                &[("x-forwarded-for", "[2001:db8::1]:443")],
                "2001:db8::1",
            ),
            (proxy, &[("x-forwarded-for", "2001:db8::1")], "2001:db8::1"),
            (
                proxy,
                &[("x-forwarded-for", "::ffff:192.0.2.1")],
                "192.0.2.1",
            ),
            // unknown / garbage: stop at the last good (trusted) address.
            (
                proxy,
                &[("x-forwarded-for", "192.0.2.1, unknown, 10.1.1.1")],
                "10.1.1.1",
            ),
            (
                proxy,
                &[("x-forwarded-for", "192.0.2.1, 999.1.1.1")],
                "10.0.0.1",
            ),
            (proxy, &[("x-forwarded-for", "")], "10.0.0.1"),
            // A garbage entry left of the client is never reached.
            (
                proxy,
                &[("x-forwarded-for", "garbage, 192.0.2.1")],
                "192.0.2.1",
            ),
            // Forwarded wins over X-Forwarded-For.
            (
                proxy,
                &[
                    ("forwarded", "for=192.0.2.60;proto=https;by=203.0.113.43"),
                    ("x-forwarded-for", "192.0.2.99"),
                ],
                "192.0.2.60",
            ),
            (
                proxy,
                &[("forwarded", "for=\"[2001:db8:cafe::17]:4711\"")],
                "2001:db8:cafe::17",
            ),
            (
                proxy,
                &[("forwarded", "For=192.0.2.43, for=\"[2001:db8:ffff::1]\"")],
                "192.0.2.43",
            ),
            (
                proxy,
                &[
                    ("forwarded", "for=192.0.2.43"),
                    ("forwarded", "for=10.3.3.3"),
                ],
                "192.0.2.43",
            ),
            // Obfuscated / unknown: stop at the last good address.
            (
                proxy,
                &[("forwarded", "for=192.0.2.43, for=_hidden, for=10.3.3.3")],
                "10.3.3.3",
            ),
            (proxy, &[("forwarded", "for=unknown")], "10.0.0.1"),
            (proxy, &[("forwarded", "for=\"[2001:db8::1\"")], "10.0.0.1"),
            (proxy, &[("forwarded", "garbage")], "10.0.0.1"),
            // Quoted strings may hold `,` and `;` (and escaped quotes): they do not split
            // elements or pairs, so a quoted value cannot pose as another hop.
            (
                proxy,
                &[(
                    "forwarded",
                    "for=192.0.2.43;host=\"a,for=198.51.100.1;b\", for=10.3.3.3",
                )],
                "192.0.2.43",
            ),
            (
                proxy,
                &[(
                    "forwarded",
                    "for=192.0.2.44;x=\"q\\\",for=198.51.100.1\", for=10.3.3.3",
                )],
                "192.0.2.44",
            ),
            // An element without `for` (proto only) is skipped.
            (
                proxy,
                &[("forwarded", "for=192.0.2.43, proto=https")],
                "192.0.2.43",
            ),
            // An IPv4-mapped peer is the IPv4 peer.
            (
                ip("::ffff:10.0.0.1"),
                &[("x-forwarded-for", "192.0.2.1")],
                "192.0.2.1",
            ),
        ];
        for (peer, hs, want) in table {
            assert_eq!(
                resolve_client(*peer, &headers(hs), &trusted),
                ip(want),
                "peer {peer}, headers {hs:?}"
            );
        }
        // Nothing trusted: headers never count.
        assert_eq!(
            resolve_client(proxy, &headers(&[("x-forwarded-for", "192.0.2.1")]), &[]),
            proxy
        );
        // Non-ASCII bytes in a header value: opaque, stop.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            http::HeaderValue::from_bytes(b"192.0.2.1\xff").unwrap(),
        );
        assert_eq!(resolve_client(proxy, &h, &trusted), proxy);
    }
}
