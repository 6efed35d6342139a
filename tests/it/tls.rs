//! HTTPS on the public listener (issue 13): rustls with RSA and ECDSA keys, ALPN h2 and
//! http/1.1, TLS 1.2+ only, certificates swapped under load, client certificates.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber,
    PKCS_RSA_SHA256,
};

use crate::harness::{free_port, now, run, sign, Hookgate, COMMAND_TIMEOUT};

/// A test certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate and its key, as PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

#[derive(Clone, Copy)]
pub enum KeyKind {
    /// ECDSA P-256, written as SEC1 (`EC PRIVATE KEY`).
    EcdsaSec1,
    /// ECDSA P-256, PKCS#8.
    EcdsaPkcs8,
    /// RSA 2048 (made by `openssl`: ring cannot generate RSA keys), written as PKCS#1.
    RsaPkcs1,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, cn: &str, serial: u64, kind: KeyKind) -> Leaf {
        self.leaf(cn, serial, kind, &["127.0.0.1", "localhost"], false)
    }

    /// A client certificate.
    pub fn client(&self, cn: &str) -> Leaf {
        self.leaf(cn, 7, KeyKind::EcdsaPkcs8, &[], true)
    }

    fn leaf(&self, cn: &str, serial: u64, kind: KeyKind, names: &[&str], client: bool) -> Leaf {
        let key = match kind {
            KeyKind::RsaPkcs1 => {
                let out = run(
                    Command::new("openssl").args([
                        "genpkey",
                        "-algorithm",
                        "RSA",
                        "-pkeyopt",
                        "rsa_keygen_bits:2048",
                    ]),
                    COMMAND_TIMEOUT,
                );
                assert!(out.status.success(), "openssl genpkey failed");
                KeyPair::from_pem_and_sign_algo(
                    &String::from_utf8(out.stdout).unwrap(),
                    &PKCS_RSA_SHA256,
                )
                .unwrap()
            }
            _ => KeyPair::generate().unwrap(),
        };
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from(serial));
        p.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let key_pem = match kind {
            KeyKind::EcdsaPkcs8 => key.serialize_pem(),
            KeyKind::EcdsaSec1 => openssl_convert(&key.serialize_pem(), &["ec"]),
            KeyKind::RsaPkcs1 => openssl_convert(&key.serialize_pem(), &["rsa", "-traditional"]),
        };
        Leaf {
            cert_pem: cert.pem(),
            key_pem,
            der: cert.der().to_vec(),
        }
    }
}

/// Re-encodes a PKCS#8 key with `openssl <args>` (PKCS#1 or SEC1).
fn openssl_convert(pkcs8: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    std::fs::write(&path, pkcs8).unwrap();
    let out = run(
        Command::new("openssl").args(args).arg("-in").arg(&path),
        COMMAND_TIMEOUT,
    );
    assert!(out.status.success(), "openssl {args:?} failed");
    let pem = String::from_utf8(out.stdout).unwrap();
    assert!(
        pem.contains("RSA PRIVATE KEY") || pem.contains("EC PRIVATE KEY"),
        "{pem}"
    );
    pem
}

/// Writes `text` to `path` atomically (a new file renamed over the old one), as tools that
/// renew certificates do.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A folder with `ca.pem`, `cert.pem`, `key.pem` for `leaf`.
pub struct CertDir {
    pub dir: PathBuf,
}

impl CertDir {
    pub fn new(ca: &Ca, leaf: &Leaf) -> CertDir {
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
        let d = CertDir { dir };
        d.install(leaf);
        d
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// Replaces the pair: certificate first, then key (a reader in between sees a mismatch).
    pub fn install(&self, leaf: &Leaf) {
        write_atomic(&self.path("cert.pem"), &leaf.cert_pem);
        write_atomic(&self.path("key.pem"), &leaf.key_pem);
    }
}

/// A hookgate with TLS on its public port and a plaintext admin port (for /metrics).
struct TlsGate {
    hg: Hookgate,
    admin: String,
}

impl TlsGate {
    fn start(certs: &CertDir, extra_tls: &str) -> TlsGate {
        let admin_port = free_port();
        let hg = Hookgate::start(&format!(
            r#"
[server]
listen = "{{listen}}"

[server.tls]
cert = "{}"
key = "{}"
{extra_tls}

[admin]
listen = "127.0.0.1:{admin_port}"

[spool]
path = "{{dir}}/spool"

[[sources]]
name = "github"
provider = "github"
secrets = ["gh-secret"]
"#,
            certs.path("cert.pem").display(),
            certs.path("key.pem").display(),
        ));
        TlsGate {
            hg,
            admin: format!("http://127.0.0.1:{admin_port}"),
        }
    }
    fn https(&self, path: &str) -> String {
        format!("https://{}{path}", self.hg.addr)
    }
    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.admin))
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
}

/// An HTTPS client that trusts only `ca_pem` and reports the server's certificate.
pub fn https_client(ca_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_info(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
}

pub fn push(delivery: &str) -> (Vec<u8>, Vec<(String, String)>) {
    let body = format!(
        r#"{{"ref":"refs/heads/main","repository":{{"full_name":"o/r"}},"n":"{delivery}"}}"#
    )
    .into_bytes();
    let mut h: Vec<(String, String)> = sign("github", "gh-secret", &body, now())
        .into_iter()
        .collect();
    h.push(("x-github-event".into(), "push".into()));
    h.push(("x-github-delivery".into(), delivery.into()));
    h.push(("content-type".into(), "application/json".into()));
    (body, h)
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    delivery: &str,
) -> reqwest::Result<reqwest::Response> {
    let (body, headers) = push(delivery);
    let mut req = c.post(url).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    req.send().await
}

fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .expect("TLS info with the peer certificate")
}

/// curl against `url` with `args`; returns (success, stdout, stderr).
fn curl(url: &str, ca: &Path, delivery: &str, args: &[&str]) -> (bool, String, String) {
    let (body, headers) = push(delivery);
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("body.json");
    std::fs::write(&body_path, body).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        "--cacert",
    ])
    .arg(ca)
    .args(args)
    .arg("--data-binary")
    .arg(format!("@{}", body_path.display()));
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(url);
    let out = run(&mut cmd, COMMAND_TIMEOUT);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// HTTPS with an ECDSA (SEC1 key) and an RSA (PKCS#1 key) certificate: HTTP/1.1 and h2 by
/// ALPN from reqwest and curl; TLS 1.1 refused while the same curl flags with 1.2 work;
/// plaintext HTTP to the TLS port gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http1_and_h2_with_ecdsa_and_rsa_keys_and_refuses_old_tls_and_plaintext() {
    let ca = Ca::new("hookgate test ca");
    for (i, kind) in [KeyKind::EcdsaSec1, KeyKind::RsaPkcs1]
        .into_iter()
        .enumerate()
    {
        let certs = CertDir::new(&ca, &ca.server("server", 1, kind));
        let g = TlsGate::start(&certs, "");
        let url = g.https("/hooks/github");

        let h1 = https_client(&ca.pem).http1_only().build().unwrap();
        let r = post(&h1, &url, &format!("h1-{i}"))
            .await
            .expect("https http/1.1");
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        let h2 = https_client(&ca.pem).build().unwrap();
        let r = post(&h2, &url, &format!("h2-{i}")).await.expect("https h2");
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN picks h2");
        assert_eq!(r.status(), 200);

        let ca_path = certs.path("ca.pem");
        let (ok, out, err) = curl(&url, &ca_path, &format!("curl-h2-{i}"), &["--http2"]);
        assert!(ok, "curl --http2: {err}");
        assert_eq!(out, "200 2");
        let (ok, out, err) = curl(&url, &ca_path, &format!("curl-h1-{i}"), &["--http1.1"]);
        assert!(ok, "curl --http1.1: {err}");
        assert_eq!(out, "200 1.1");
        // The same flags that would allow TLS 1.1 on curl's side: 1.2 works, 1.1 does not.
        let low = ["--ciphers", "DEFAULT@SECLEVEL=0"];
        let (ok, out, err) = curl(
            &url,
            &ca_path,
            &format!("curl-12-{i}"),
            &[&low[..], &["--tlsv1.2", "--tls-max", "1.2"]].concat(),
        );
        assert!(ok && out.starts_with("200"), "TLS 1.2: {out} {err}");
        let (ok, _, err) = curl(
            &url,
            &ca_path,
            &format!("curl-11-{i}"),
            &[&low[..], &["--tlsv1.1", "--tls-max", "1.1"]].concat(),
        );
        assert!(!ok, "TLS 1.1 must be refused");
        assert!(
            err.contains("SSL") || err.contains("TLS") || err.contains("alert"),
            "{err}"
        );

        // Plaintext HTTP to the TLS port: no HTTP answer, the handshake fails and is counted.
        let before = g.metric("hookgate_tls_handshake_errors_total").await;
        let plain = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let r = post(
            &plain,
            &format!("http://{}/hooks/github", g.hg.addr),
            "plain",
        )
        .await;
        assert!(
            r.is_err(),
            "plaintext got an answer: {:?}",
            r.map(|r| r.status())
        );
        let end = Instant::now() + Duration::from_secs(20);
        while g.metric("hookgate_tls_handshake_errors_total").await <= before {
            assert!(Instant::now() < end, "the failed handshake was not counted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Senders keep posting distinct events over HTTPS (HTTP/1.1 keep-alive and h2) while the
/// certificate is replaced by a file change, then by a file change announced with SIGHUP,
/// then with a pair whose key does not match: no request fails, new connections get each
/// new certificate, and the bad pair is logged, counted and not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_swap_under_load_without_a_failed_request() {
    let ca = Ca::new("hookgate test ca");
    let a = ca.server("cert-a", 1, KeyKind::EcdsaPkcs8);
    let certs = CertDir::new(&ca, &a);
    let g = TlsGate::start(&certs, "");
    let url = g.https("/hooks/github");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for s in 0..4 {
        let b = https_client(&ca.pem);
        let c = if s % 2 == 0 { b.http1_only() } else { b }.build().unwrap();
        let (stop, ok, failures, url) = (stop.clone(), ok.clone(), failures.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match post(&c, &url, &format!("swap-{s}-{n}")).await {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{s}-{n}: {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("{s}-{n}: {e}")),
                }
            }
            n
        }));
    }
    // What a new connection is served.
    let fresh = || async {
        let c = https_client(&ca.pem).build().unwrap();
        let r = c
            .get(g.https("/nowhere"))
            .send()
            .await
            .expect("fresh https connection");
        peer_cert(&r)
    };
    let wait_for = |want: Vec<u8>, what: &'static str| {
        let fresh = &fresh;
        async move {
            let end = Instant::now() + Duration::from_secs(30);
            while fresh().await != want {
                assert!(Instant::now() < end, "new connections never got {what}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(fresh().await, a.der);
    let progress = |ok: &AtomicU64| ok.load(Ordering::Relaxed);
    let wait_traffic = |since: u64| {
        let ok = ok.clone();
        async move {
            let end = Instant::now() + Duration::from_secs(30);
            while progress(&ok) < since + 50 {
                assert!(Instant::now() < end, "the senders stalled");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_traffic(0).await;

    // 1. By file change alone.
    let b = ca.server("cert-b", 2, KeyKind::EcdsaPkcs8);
    certs.install(&b);
    wait_for(b.der.clone(), "cert-b (file change)").await;
    wait_traffic(progress(&ok)).await;

    // 2. Announced with SIGHUP (loaded at once, before the poller sees the files settle).
    let c = ca.server("cert-c", 3, KeyKind::RsaPkcs1);
    certs.install(&c);
    let pid = g.hg.pid().unwrap().to_string();
    assert!(
        run(Command::new("kill").args(["-HUP", &pid]), COMMAND_TIMEOUT)
            .status
            .success()
    );
    wait_for(c.der.clone(), "cert-c (SIGHUP)").await;
    let end = Instant::now() + Duration::from_secs(30);
    while !g
        .hg
        .log()
        .lines()
        .any(|l| l.contains("TLS certificate reloaded") && l.contains("sighup"))
    {
        assert!(
            Instant::now() < end,
            "no SIGHUP reload in the log: {}",
            g.hg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_traffic(progress(&ok)).await;

    // 3. A bad pair: cert-d with another certificate's key.
    let errors_before = g
        .metric("hookgate_tls_reloads_total{result=\"error\"}")
        .await;
    let d = ca.server("cert-d", 4, KeyKind::EcdsaPkcs8);
    let e = ca.server("cert-e", 5, KeyKind::EcdsaPkcs8);
    write_atomic(&certs.path("cert.pem"), &d.cert_pem);
    write_atomic(&certs.path("key.pem"), &e.key_pem);
    let end = Instant::now() + Duration::from_secs(30);
    while g
        .metric("hookgate_tls_reloads_total{result=\"error\"}")
        .await
        <= errors_before
    {
        assert!(
            Instant::now() < end,
            "the bad pair was not refused: {}",
            g.hg.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        g.hg.log().lines().any(|l| l.contains("ERROR")
            && l.contains("reload refused")
            && l.contains("does not match")),
        "the refusal is logged as an error: {}",
        g.hg.log()
    );
    // No key material in the log.
    let key_body: String = e.key_pem.lines().nth(1).unwrap().to_owned();
    assert!(!g.hg.log().contains(&key_body));
    assert_eq!(fresh().await, c.der, "the old certificate stays");
    assert!(
        run(Command::new("kill").args(["-HUP", &pid]), COMMAND_TIMEOUT)
            .status
            .success()
    );
    wait_traffic(progress(&ok)).await;
    assert_eq!(
        fresh().await,
        c.der,
        "still the old certificate after SIGHUP"
    );

    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for s in senders {
        sent += s.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(progress(&ok), sent);
    assert!(g.metric("hookgate_tls_reloads_total{result=\"ok\"}").await >= 2.0);
}

/// With `client_ca`: no client certificate, or one from another CA, is refused; one the CA
/// signed gets 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_verified_with_client_ca() {
    let ca = Ca::new("hookgate test ca");
    let clients = Ca::new("client ca");
    let stranger = Ca::new("another ca");
    let certs = CertDir::new(&ca, &ca.server("server", 1, KeyKind::EcdsaPkcs8));
    std::fs::write(certs.path("clients.pem"), &clients.pem).unwrap();
    let g = TlsGate::start(
        &certs,
        &format!("client_ca = \"{}\"", certs.path("clients.pem").display()),
    );
    let url = g.https("/hooks/github");
    let with = |leaf: Option<&Leaf>| {
        let mut b = https_client(&ca.pem);
        if let Some(l) = leaf {
            let pem = format!("{}{}", l.cert_pem, l.key_pem);
            b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    // A client that connects and says nothing does not hold up the others' handshakes.
    let _silent = tokio::net::TcpStream::connect(g.hg.addr).await.unwrap();
    let r = post(&with(None), &url, "mtls-none").await;
    assert!(
        r.is_err(),
        "no client certificate: {:?}",
        r.map(|r| r.status())
    );
    let r = post(
        &with(Some(&stranger.client("intruder"))),
        &url,
        "mtls-stranger",
    )
    .await;
    assert!(
        r.is_err(),
        "a certificate from another CA: {:?}",
        r.map(|r| r.status())
    );
    let r = post(&with(Some(&clients.client("partner"))), &url, "mtls-good")
        .await
        .expect("a good client certificate");
    assert_eq!(r.status(), 200);
    assert!(g.metric("hookgate_tls_handshake_errors_total").await >= 2.0);

    // The CA file is replaced (a partner moved to another CA): new handshakes verify
    // against the new file, without a restart; the old CA's clients are then refused.
    write_atomic(&certs.path("clients.pem"), &stranger.pem);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let r = post(
            &with(Some(&stranger.client("moved"))),
            &url,
            &format!("mtls-moved-{n}"),
        )
        .await;
        if r.as_ref().is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new client_ca was never loaded: {:?}",
            r.map(|r| r.status())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = post(&with(Some(&clients.client("partner"))), &url, "mtls-old-ca").await;
    assert!(
        r.is_err(),
        "a certificate of the replaced CA: {:?}",
        r.map(|r| r.status())
    );
    // An unreadable CA file is refused and the current one stays.
    write_atomic(&certs.path("clients.pem"), "not a certificate");
    let before = g
        .metric("hookgate_tls_reloads_total{result=\"error\"}")
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while g
        .metric("hookgate_tls_reloads_total{result=\"error\"}")
        .await
        <= before
    {
        assert!(
            std::time::Instant::now() < deadline,
            "a bad client_ca was not refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = post(&with(Some(&stranger.client("moved"))), &url, "mtls-kept")
        .await
        .expect("the current client_ca stays after a bad one");
    assert_eq!(r.status(), 200);
}
