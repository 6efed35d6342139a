//! TLS on the public listener: rustls (ring provider), TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`, optional client certificates (`client_ca`), and a certificate that can be
//! replaced while serving.
//!
//! A reload builds a whole new server configuration (the pair and, with `client_ca`, the
//! client verifier) and swaps the acceptor new connections use, so it touches no
//! connection: handshakes in progress keep the configuration they started with, the next
//! ones get the new one. Reloads happen on SIGHUP and when any of the files change (their
//! mtime, size or inode, polled every [`POLL`]: works on every filesystem and with the
//! symlink swap Kubernetes does for mounted secrets, which file-notification APIs watch
//! poorly; no extra dependency). A configuration that does not load (a bad pair, an
//! unreadable `client_ca`) is refused, logged and counted, and the old one stays.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are checked for changes.
pub const POLL: Duration = Duration::from_secs(1);

/// `[server.tls]`: where the certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain: the server's certificate first, then intermediates.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) of the first certificate.
    pub key: PathBuf,
    /// PEM CA certificates: when set, every client must present a certificate they signed.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS configuration could not be loaded. Names the file; never shows key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or has nothing usable in it.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The key is not the certificate's.
    #[error("{key} does not match the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the assembled configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, what: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// A PEM error in words, without echoing any of the file's content.
fn pem_err(path: &Path, kind: &str, e: rustls::pki_types::pem::Error) -> TlsError {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::Io(io) => file_err(path, format!("cannot read: {io}")),
        E::NoItemsFound => file_err(path, format!("no {kind} found (expected PEM)")),
        _ => file_err(path, format!("is not valid PEM ({kind})")),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, kind: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, kind, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, kind, e))?;
    if certs.is_empty() {
        return Err(file_err(path, format!("no {kind} found (expected PEM)")));
    }
    Ok(certs)
}

/// Loads and checks a certificate chain and its key: both parse, the key is a supported
/// kind (RSA, ECDSA, Ed25519) and it is the first certificate's key.
pub fn load_pair(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs(&files.cert, "CERTIFICATE")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| pem_err(&files.key, "PRIVATE KEY", e))?;
    match CertifiedKey::from_der(certs, key, &provider()) {
        Ok(ck) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        }),
        Err(rustls::Error::InvalidCertificate(_)) | Err(rustls::Error::NoCertificatesPresented) => {
            Err(file_err(
                &files.cert,
                "the first certificate cannot be parsed",
            ))
        }
        Err(rustls::Error::General(_)) => Err(file_err(
            &files.key,
            "the key is not a supported RSA, ECDSA or Ed25519 private key",
        )),
        Err(e) => Err(TlsError::Config(e.to_string())),
    }
}

/// Everything `hookgate check` verifies about `[server.tls]`: the same loading `serve` does.
pub fn check(files: &TlsFiles) -> Result<(), TlsError> {
    Tls::new(files).map(|_| ())
}

/// The certificate of one server configuration (any key type, chain included).
struct OneCert(Arc<CertifiedKey>);

impl fmt::Debug for OneCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneCert")
    }
}

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The public listener's TLS: the acceptor of the current configuration, swapped whole
/// on reload.
pub struct Tls {
    acceptor: RwLock<TlsAcceptor>,
    files: TlsFiles,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Loads the pair (and `client_ca`) and builds the server configuration.
    pub fn new(files: &TlsFiles) -> Result<Tls, TlsError> {
        Ok(Tls {
            acceptor: RwLock::new(build(files)?),
            files: files.clone(),
        })
    }

    /// The acceptor for a new connection (of the configuration current now).
    pub fn acceptor(&self) -> TlsAcceptor {
        // A poisoned lock still holds a valid acceptor (the writer only assigns it).
        match self.acceptor.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Loads the files again and, if they are good, makes them the configuration new
    /// handshakes get; a bad pair or `client_ca` is logged and counted, and the current
    /// configuration stays.
    pub fn reload(&self, why: &'static str) -> bool {
        match build(&self.files) {
            Ok(acceptor) => {
                match self.acceptor.write() {
                    Ok(mut g) => *g = acceptor,
                    Err(p) => *p.into_inner() = acceptor,
                }
                metrics::counter!("hookgate_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!(trigger = why, cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                metrics::counter!("hookgate_tls_reloads_total", "result" => "error").increment(1);
                tracing::error!(trigger = why, error = %e, "TLS certificate reload refused; keeping the current certificate");
                false
            }
        }
    }

    /// What identifies the current content of the files (changes when any is written,
    /// replaced or re-pointed).
    fn stamp(&self) -> Stamp {
        let one = |p: &Path| {
            std::fs::metadata(p).ok().map(|m| {
                use std::os::unix::fs::MetadataExt as _;
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    m.ino(),
                )
            })
        };
        (
            one(&self.files.cert),
            one(&self.files.key),
            self.files.client_ca.as_deref().and_then(one),
        )
    }

    /// Reloads on SIGHUP and when the files change, until `stop`. A change is loaded once
    /// the files have stayed the same for one poll (so a cert written before its key is
    /// not tried half-way); a refused pair is not tried again until the files change.
    pub fn spawn_reloader(
        self: &Arc<Self>,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hup = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS reloads only on file change");
                    None
                }
            };
            let mut loaded = tls.stamp();
            let mut seen = loaded;
            let mut refused: Option<Stamp> = None;
            loop {
                let hup_fired = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = hup_fired => {
                        let now = tls.stamp();
                        if tls.reload("sighup") {
                            loaded = now;
                            refused = None;
                        } else {
                            refused = Some(now);
                        }
                        seen = now;
                    }
                    _ = tokio::time::sleep(POLL) => {
                        let now = tls.stamp();
                        if now != loaded && now == seen && refused != Some(now) {
                            if tls.reload("file_change") {
                                loaded = now;
                                refused = None;
                            } else {
                                refused = Some(now);
                            }
                        }
                        seen = now;
                    }
                }
            }
        })
    }
}

type FileStamp = Option<(SystemTime, u64, u64)>;
type Stamp = (FileStamp, FileStamp, FileStamp);

/// The server configuration of `files`: the pair, and the client verifier of `client_ca`.
fn build(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let cert = Arc::new(OneCert(load_pair(files)?));
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca, "CA CERTIFICATE")? {
                roots
                    .add(c)
                    .map_err(|e| file_err(ca, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| file_err(ca, format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
