//! The client address behind trusted proxies (issue 13): a real HAProxy in front of
//! hookgate, once with the PROXY protocol v2 and once with X-Forwarded-For; clients bound
//! to 127.0.0.2 and 127.0.0.3 look like two hosts, and `allow_ips` lets only .2 in.
//! Headers and PROXY lines from an untrusted peer change nothing.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{free_port, Hookgate, KillOnDrop};
use crate::tls::push;

pub(crate) const HAPROXY: &str = "/usr/sbin/haproxy";

/// `None` (after saying why) when HAProxy is not installed and this is not CI; under CI a
/// missing HAProxy fails the test.
pub(crate) fn haproxy_available() -> bool {
    if Path::new(HAPROXY).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{HAPROXY} is missing under CI: scripts/test.sh installs the `haproxy` package"
    );
    eprintln!(
        "SKIPPED: {HAPROXY} is not installed (apt-get install -y haproxy; scripts/test.sh does it)"
    );
    false
}

/// HAProxy on loopback: `v2` forwards TCP to `pp_backend` with a PROXY v2 header, `xff`
/// forwards HTTP to `xff_backend` adding X-Forwarded-For. Killed on drop.
struct HaProxy {
    _child: KillOnDrop,
    v2: SocketAddr,
    xff: SocketAddr,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    fn start(pp_backend: SocketAddr, xff_backend: SocketAddr) -> HaProxy {
        let (v2, xff) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                r#"
global
    maxconn 512

defaults
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend proxy_v2
    mode tcp
    bind 127.0.0.1:{v2}
    default_backend hookgate_pp

backend hookgate_pp
    mode tcp
    server hg {pp_backend} send-proxy-v2 proxy-v2-options crc32c

frontend forwardfor
    mode http
    bind 127.0.0.1:{xff}
    option forwardfor
    default_backend hookgate_xff

backend hookgate_xff
    mode http
    server hg {xff_backend}
"#
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let child = KillOnDrop(child);
        let (v2, xff) = (
            SocketAddr::from(([127, 0, 0, 1], v2)),
            SocketAddr::from(([127, 0, 0, 1], xff)),
        );
        let end = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(v2).is_err()
            || std::net::TcpStream::connect(xff).is_err()
        {
            assert!(
                Instant::now() < end,
                "haproxy did not start: {}",
                std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        HaProxy {
            _child: child,
            v2,
            xff,
            _dir: dir,
        }
    }
}

/// A hookgate whose `github` source allows only 127.0.0.2, trusting 127.0.0.1 as a proxy.
fn gate(extra_server: &str, admin_port: u16) -> Hookgate {
    Hookgate::start(&format!(
        r#"
[server]
listen = "{{listen}}"
trusted_proxies = ["127.0.0.1"]
{extra_server}

[admin]
listen = "127.0.0.1:{admin_port}"

[spool]
path = "{{dir}}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]
allow_ips = ["127.0.0.2/32"]
"#
    ))
}

/// A client whose connections come from `source` (127.0.0.x).
fn from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(source))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn post(
    c: &reqwest::Client,
    to: SocketAddr,
    delivery: &str,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let (body, headers) = push(delivery);
    let mut req = c.post(format!("http://{to}/hooks/github")).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    (status, v["error"].as_str().unwrap_or("").to_owned())
}

async fn admin_metric(port: u16, name: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The metric once it reaches `want` (the server may count a refused connection just after
/// closing it), or its value after 10 s, for the assertion to show.
async fn metric_reaching(port: u16, name: &str, want: f64) -> f64 {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin_metric(port, name).await;
        if v >= want || std::time::Instant::now() > end {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `prefix` and then a signed webhook over a raw connection from `source`; returns
/// what came back (empty when the connection was closed without an answer).
async fn raw(source: [u8; 4], to: SocketAddr, prefix: &[u8], delivery: &str) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((source, 0))).unwrap();
    let mut s = tokio::time::timeout(Duration::from_secs(5), sock.connect(to))
        .await
        .expect("connect in time")
        .expect("connect");
    let (body, headers) = push(delivery);
    let mut req = prefix.to_vec();
    req.extend_from_slice(
        b"POST /hooks/github HTTP/1.1\r\nhost: hookgate\r\nconnection: close\r\n",
    );
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    req.extend_from_slice(&body);
    // The server may close before reading it all; what it answers is what counts.
    let _ = s.write_all(&req).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server answers or closes in time");
    String::from_utf8_lossy(&out).into_owned()
}

/// Through HAProxy with PROXY v2 (tcp mode) and with X-Forwarded-For (http mode), the
/// client at 127.0.0.2 is allowed and the one at 127.0.0.3 refused with 403, although every
/// connection hookgate sees comes from HAProxy at 127.0.0.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_with_proxy_v2_and_with_x_forwarded_for_passes_the_real_client_address() {
    if !haproxy_available() {
        return;
    }
    let (pp_admin, xff_admin) = (free_port(), free_port());
    let pp = gate("proxy_protocol = true", pp_admin);
    let xff = gate("", xff_admin);
    let ha = HaProxy::start(pp.addr, xff.addr);
    let (two, three) = (from([127, 0, 0, 2]), from([127, 0, 0, 3]));
    for (mode, front) in [("proxy-v2", ha.v2), ("x-forwarded-for", ha.xff)] {
        for round in 0..3 {
            assert_eq!(
                post(&two, front, &format!("{mode}-2-{round}"), &[]).await,
                (200, String::new()),
                "{mode}: 127.0.0.2 is allowed"
            );
            assert_eq!(
                post(&three, front, &format!("{mode}-3-{round}"), &[]).await,
                (403, "ip_not_allowed".into()),
                "{mode}: 127.0.0.3 is not"
            );
        }
    }
    // A header the client adds itself is not believed: HAProxy appends the real address,
    // which is the right-most untrusted one.
    assert_eq!(
        post(
            &three,
            ha.xff,
            "xff-spoof-through",
            &[("x-forwarded-for", "127.0.0.2")]
        )
        .await,
        (403, "ip_not_allowed".into())
    );
    assert_eq!(
        admin_metric(pp_admin, "hookgate_proxy_protocol_errors_total").await,
        0.0
    );
}

/// Direct to hookgate from an untrusted peer: X-Forwarded-For / Forwarded naming the
/// allowed address are ignored (403), while the same header from the trusted 127.0.0.1 is
/// believed (200). With `proxy_protocol = true`, a forged PROXY header from an untrusted
/// peer, and a trusted peer without a header, are closed without an answer; a real header
/// from the trusted peer works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_proxy_lines_from_untrusted_peers_change_nothing() {
    let (pp_admin, xff_admin) = (free_port(), free_port());
    let xff = gate("", xff_admin);
    let three = from([127, 0, 0, 3]);
    for h in [
        ("x-forwarded-for", "127.0.0.2"),
        ("forwarded", "for=127.0.0.2"),
    ] {
        assert_eq!(
            post(&three, xff.addr, &format!("spoof-{}", h.0), &[h]).await,
            (403, "ip_not_allowed".into()),
            "{h:?} from an untrusted peer"
        );
        assert_eq!(
            post(
                &from([127, 0, 0, 1]),
                xff.addr,
                &format!("trusted-{}", h.0),
                &[h]
            )
            .await,
            (200, String::new()),
            "{h:?} from the trusted proxy"
        );
    }

    let pp = gate("proxy_protocol = true", pp_admin);
    let forged = b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 80\r\n";
    let got = raw([127, 0, 0, 3], pp.addr, forged, "forged-pp").await;
    assert_eq!(got, "", "a PROXY header from an untrusted peer is refused");
    assert_eq!(
        metric_reaching(
            pp_admin,
            "hookgate_proxy_protocol_errors_total{reason=\"untrusted_peer\"}",
            1.0
        )
        .await,
        1.0
    );
    let got = raw([127, 0, 0, 1], pp.addr, b"", "no-pp").await;
    assert_eq!(got, "", "a trusted peer without a PROXY header is refused");
    assert_eq!(
        metric_reaching(
            pp_admin,
            "hookgate_proxy_protocol_errors_total{reason=\"missing\"}",
            1.0
        )
        .await,
        1.0
    );
    // A trusted peer that connects and sends nothing does not hold up the next one.
    let _silent = tokio::net::TcpStream::connect(pp.addr).await.unwrap();
    let got = raw([127, 0, 0, 1], pp.addr, forged, "good-pp-v1").await;
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "PROXY v1 from the trusted peer: {got}"
    );
    let got = raw(
        [127, 0, 0, 1],
        pp.addr,
        b"PROXY TCP4 127.0.0.3 127.0.0.1 40000 80\r\n",
        "good-pp-v1-3",
    )
    .await;
    assert!(
        got.starts_with("HTTP/1.1 403"),
        "the PROXY source is the client: {got}"
    );
}

/// The per-client limits key on the resolved client, not on the proxy: through HAProxy
/// (PROXY v2 and X-Forwarded-For alike), 127.0.0.2 spends its own token bucket and gets
/// 429 `client_rate`, while 127.0.0.3, behind the same proxy address, still gets 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_rate_limits_behind_haproxy_apply_to_each_real_client() {
    if !haproxy_available() {
        return;
    }
    let start = |extra: &str| {
        Hookgate::start(&format!(
            r#"
[server]
listen = "{{listen}}"
trusted_proxies = ["127.0.0.1"]
rate_limit_per_client = {{ per_second = 0.01, burst = 2 }}
{extra}

[spool]
path = "{{dir}}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]
"#
        ))
    };
    let pp = start("proxy_protocol = true");
    let xff = start("");
    let ha = HaProxy::start(pp.addr, xff.addr);
    let (two, three) = (from([127, 0, 0, 2]), from([127, 0, 0, 3]));
    for (mode, front) in [("proxy-v2", ha.v2), ("x-forwarded-for", ha.xff)] {
        for n in 0..2 {
            assert_eq!(
                post(&two, front, &format!("{mode}-rate-2-{n}"), &[]).await,
                (200, String::new()),
                "{mode}: within 127.0.0.2's burst"
            );
        }
        assert_eq!(
            post(&two, front, &format!("{mode}-rate-2-x"), &[]).await,
            (429, "client_rate".into()),
            "{mode}: 127.0.0.2's bucket is empty"
        );
        assert_eq!(
            post(&three, front, &format!("{mode}-rate-3-0"), &[]).await,
            (200, String::new()),
            "{mode}: 127.0.0.3 has a bucket of its own behind the same proxy"
        );
    }
}
