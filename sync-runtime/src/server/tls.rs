//! HTTPS for the server itself (`--tls-cert`, `--tls-key`), with rustls on ring: a self-hoster
//! needs no proxy in front, since devices refuse plain HTTP to anything but loopback.
//!
//! The certificate and key are PEM files, read again when either file changes (checked every
//! few seconds) and at once on SIGHUP, so a renewed certificate (certbot, an ACME client) is
//! served without a restart. A pair that does not load (a half-written renewal, a key that does
//! not match) leaves the one served before in place, and says so in the log.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How often the files are checked for a change.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Where the certificate (its chain, leaf first) and its private key are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often the files are checked for a change ([`CHECK_EVERY`] unless a test says).
    pub check_every: Duration,
}

impl TlsFiles {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
            check_every: CHECK_EVERY,
        }
    }
}

/// Why a certificate and key could not be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key in `files`, checked against each other.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| TlsError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&files.cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsError::Invalid(format!(
                "{}: not PEM certificates: {e}",
                files.cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{} holds no certificate",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| {
        TlsError::Invalid(format!(
            "{}: not a PEM private key: {e}",
            files.key.display()
        ))
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        TlsError::Invalid(format!(
            "{} and {} do not make a certificate to serve: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

/// The certificate served now, which a reload replaces.
struct Current(RwLock<Arc<CertifiedKey>>);

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the served certificate")
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// HTTPS as the listener serves it: the acceptor, and the task that reloads its certificate
/// (stopped when this is dropped).
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    reloader: tokio::task::JoinHandle<()>,
}

impl Drop for ServerTls {
    fn drop(&mut self) {
        self.reloader.abort();
    }
}

impl ServerTls {
    /// Loads `files` (an error says what is wrong with them) and starts watching them.
    pub fn start(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let provider = provider();
        let current = Arc::new(Current(RwLock::new(load(&files, &provider)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let reloader = tokio::spawn(watch(files, provider, current));
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            reloader,
        })
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.clone()
    }
}

/// When each file last changed, as far as its metadata tells.
fn stamps(files: &TlsFiles) -> [Option<(SystemTime, u64)>; 2] {
    [&files.cert, &files.key].map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
}

/// Reloads the certificate when a file changes or SIGHUP arrives.
async fn watch(files: TlsFiles, provider: Arc<CryptoProvider>, current: Arc<Current>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = stamps(&files);
    let mut tick = tokio::time::interval(files.check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        let why = tokio::select! {
            () = signalled => "SIGHUP",
            _ = tick.tick() => {
                let now = stamps(&files);
                if now == seen {
                    continue;
                }
                seen = now;
                "a file changed"
            }
        };
        match load(&files, &provider) {
            Ok(fresh) => {
                *current.0.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                tracing::info!(cert = %files.cert.display(), why, "reloaded the TLS certificate");
            }
            Err(e) => {
                tracing::warn!(error = %e, why, "the TLS certificate did not reload; serving the previous one");
            }
        }
    }
}
