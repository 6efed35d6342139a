//! Shared HTTP plumbing: clients, destination filtering (SSRF), bounded body reads.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A destination refused because it is loopback, private, link-local or similar.
#[derive(Debug, thiserror::Error)]
#[error("destination refused: {0} is a private, loopback or link-local address (set allow_private = true to allow)")]
pub struct RefusedDestination(pub String);

/// Whether `ip` is in a range the http sink refuses unless `allow_private`:
/// loopback, RFC 1918, ULA fc00::/7, site-local fec0::/10, link-local, unspecified,
/// "this network" 0/8, CGNAT 100.64/10, IETF protocol assignments 192.0.0/24, benchmarking
/// 198.18/15, reserved 240/4 (with broadcast) and multicast. IPv6 forms that carry an IPv4
/// address are refused when that IPv4 is, or as a whole where the embedded address depends
/// on a translator we cannot see: IPv4-mapped (::ffff:a.b.c.d) is judged by its IPv4;
/// IPv4-compatible (::a.b.c.d, deprecated, never a legitimate destination) and NAT64
/// (64:ff9b::/96, 64:ff9b:1::/48) are refused whole, since a translator may route them anywhere.
pub fn is_refused_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            let s = v6.segments();
            // ::/96 holds ::, ::1 and the IPv4-compatible addresses: all refused.
            let v4_compatible = s[..6] == [0, 0, 0, 0, 0, 0];
            let nat64_well_known = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            let nat64_local = s[0] == 0x64 && s[1] == 0xff9b && s[2] == 0x0001;
            v4_compatible
                || nat64_well_known
                || nat64_local
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] & 0xf0) == 240
}

/// A DNS resolver that drops refused addresses and fails when none are left, so a public
/// name pointing at a private address is refused too (checked at connect time, which
/// also defeats DNS rebinding between a check and the connect).
#[derive(Debug, Default)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_refused_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(RefusedDestination(host)) as Box<_>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// A client for chat APIs: request timeout, no redirects (a redirect could carry the
/// token elsewhere), and the system proxy settings.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hookgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("http client: {}", e.without_url()))
}

/// Reads at most `limit` bytes of a response body as text (lossy); servers we talk to
/// are not trusted to send small bodies.
pub async fn body_text(mut resp: reqwest::Response, limit: usize) -> String {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= limit {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Parses a `Retry-After`-style header given in (possibly fractional) seconds.
pub fn header_secs(headers: &reqwest::header::HeaderMap, name: &str) -> Option<Duration> {
    let v = headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()?;
    secs(v)
}

/// A non-negative, finite number of seconds as a duration (capped at a day).
pub fn secs(v: f64) -> Option<Duration> {
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v.min(86_400.0)))
}

/// Shortens an API error text for messages and logs.
pub fn short(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing test should panic
mod tests {
    use super::*;

    fn refused(ip: &str) -> bool {
        is_refused_ip(ip.parse().unwrap())
    }

    /// Each range: its first and last address are refused, the neighbours just outside pass.
    fn range(first: &str, last: &str, below: Option<&str>, above: Option<&str>) {
        assert!(refused(first), "{first} must be refused");
        assert!(refused(last), "{last} must be refused");
        for ip in below.into_iter().chain(above) {
            assert!(!refused(ip), "{ip} must pass");
        }
    }

    #[test]
    fn benchmarking_198_18_0_0_15() {
        range(
            "198.18.0.0",
            "198.19.255.255",
            Some("198.17.255.255"),
            Some("198.20.0.0"),
        );
    }

    #[test]
    fn ietf_protocol_192_0_0_0_24() {
        range(
            "192.0.0.0",
            "192.0.0.255",
            Some("191.255.255.255"),
            Some("192.0.1.0"),
        );
    }

    #[test]
    fn reserved_240_0_0_0_4_with_broadcast() {
        // Just below is multicast 224/4, refused on its own account; below that passes.
        range(
            "240.0.0.0",
            "255.255.255.255",
            Some("223.255.255.255"),
            None,
        );
        assert!(refused("239.255.255.255"));
        assert!(refused("255.255.255.254"));
    }

    #[test]
    fn ipv4_compatible_ipv6() {
        // ::/96: ::, ::1 and every ::a.b.c.d, even of a public IPv4.
        range("::", "::255.255.255.255", None, Some("::1:0:0"));
        assert!(refused("::1"));
        assert!(refused("::8.8.8.8"));
        assert!(refused("::127.0.0.1"));
    }

    #[test]
    fn nat64_well_known_64_ff9b_96() {
        range(
            "64:ff9b::",
            "64:ff9b::ffff:ffff",
            Some("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff"),
            Some("64:ff9b::1:0:0"),
        );
        assert!(refused("64:ff9b::8.8.8.8"));
    }

    #[test]
    fn nat64_local_64_ff9b_1_48() {
        range(
            "64:ff9b:1::",
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            Some("64:ff9b:0:ffff:ffff:ffff:ffff:ffff"),
            Some("64:ff9b:2::"),
        );
    }

    #[test]
    fn site_local_fec0_10() {
        // Its neighbours are refused on their own account: link-local fe80::/10 below,
        // multicast ff00::/8 above; fc00::/7 (ULA) before that. The first address that
        // passes below it is the one just under fc00::.
        range(
            "fec0::",
            "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Some("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            None,
        );
        assert!(refused("fed0::1"));
        assert!(refused("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        assert!(refused("ff02::1"));
    }

    #[test]
    fn ipv4_mapped_of_each_refused_v4() {
        for (v4, public_neighbour) in [
            ("198.18.0.0", "198.20.0.0"),
            ("198.19.255.255", "198.17.255.255"),
            ("192.0.0.0", "192.0.1.0"),
            ("192.0.0.255", "191.255.255.255"),
            ("240.0.0.0", "223.255.255.255"),
            ("255.255.255.255", "8.8.8.8"),
            ("127.0.0.1", "1.1.1.1"),
            ("10.0.0.1", "11.0.0.1"),
        ] {
            assert!(refused(&format!("::ffff:{v4}")), "::ffff:{v4}");
            assert!(
                !refused(&format!("::ffff:{public_neighbour}")),
                "::ffff:{public_neighbour}"
            );
        }
    }

    #[test]
    fn refused_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "100.127.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_refused_ip(ip), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_refused_ip(ip), "{ip}");
        }
    }
}
