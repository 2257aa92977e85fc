//! TLS to PostgreSQL, through rustls on ring (tokio-postgres-rustls), as hosted PostgreSQL
//! services require. The URL says what is wanted, in libpq's words:
//!
//! - no `sslmode`, or `sslmode=disable`: plain TCP (a database on the same machine or network);
//! - `sslmode=prefer` (or `allow`): TLS when the server offers it, unverified, as libpq does;
//! - `sslmode=require`: TLS always; the certificate is verified against the CA file when one is
//!   given (as libpq does), else not at all;
//! - `sslmode=verify-ca`: TLS, the certificate signed by the CA; `verify-full`: that, and made out
//!   to the host named in the URL.
//!
//! The CA is `sslrootcert=FILE` in the URL or `--postgres-ca-file` (which wins); without one,
//! `verify-ca` and `verify-full` trust the public web's roots (Mozilla's list), which signs the
//! certificates of many hosted services.

use crate::server::db::DbError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How to reach a PostgreSQL database: its connection settings and the TLS connector they use.
#[derive(Clone)]
pub struct PgConnect {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

/// What `sslmode` asks of the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// TLS without looking at the certificate (libpq's `prefer` and `require` without a CA).
    Nothing,
    /// Signed by a trusted CA.
    Chain,
    /// Signed by a trusted CA and made out to the host.
    ChainAndName,
}

impl PgConnect {
    /// The settings of `url` (`postgres://...`), with `sslmode` and `sslrootcert` read as libpq
    /// reads them; `ca_file`, when given, is the CA instead of the URL's.
    pub fn parse(url: &str, ca_file: Option<&Path>) -> Result<PgConnect, DbError> {
        let bad = |m: String| DbError::Config(format!("the PostgreSQL URL: {m}"));
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut mode, mut root_cert) = (None, None);
        // The rest is left as written: tokio-postgres decodes it.
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => mode = Some(percent_decode(value).map_err(bad)?),
                "sslrootcert" => {
                    root_cert = Some(PathBuf::from(percent_decode(value).map_err(bad)?))
                }
                _ => kept.push(pair),
            }
        }
        let ca = ca_file
            .map(Path::to_owned)
            .or(root_cert.filter(|p| p.as_os_str() != "system"));
        let (ssl_mode, check) = match mode.as_deref() {
            None | Some("disable") => (SslMode::Disable, Check::Nothing),
            Some("allow" | "prefer") => (SslMode::Prefer, Check::Nothing),
            Some("require") if ca.is_some() => (SslMode::Require, Check::Chain),
            Some("require") => (SslMode::Require, Check::Nothing),
            Some("verify-ca") => (SslMode::Require, Check::Chain),
            Some("verify-full") => (SslMode::Require, Check::ChainAndName),
            Some(other) => {
                return Err(bad(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        };
        let rest = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = format!("{base}{rest}").parse()?;
        config.ssl_mode(ssl_mode);
        let tls = MakeRustlsConnect::new(client_config(check, ca.as_deref())?);
        Ok(PgConnect { config, tls })
    }
}

/// `%XX` escapes decoded (libpq's URLs know no `+` for a space).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`{text}` has a bad % escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` is not UTF-8"))
}

fn client_config(check: Check, ca: Option<&Path>) -> Result<rustls::ClientConfig, DbError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let bad = |m: String| DbError::Config(format!("the PostgreSQL CA: {m}"));
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            for cert in CertificateDer::pem_slice_iter(&bytes) {
                let cert = cert.map_err(|e| bad(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(bad(format!("{} holds no certificate", path.display())));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let chain = match check {
        Check::Nothing => None,
        Check::Chain | Check::ChainAndName => Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| bad(e.to_string()))?,
        ),
    };
    let verifier = Arc::new(Verifier {
        chain,
        check_name: check == Check::ChainAndName,
        algorithms: provider.signature_verification_algorithms,
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The checks of `sslmode` on the server's certificate. The handshake's signatures are always
/// verified: whatever the mode, the server holds the key of the certificate it shows.
#[derive(Debug)]
struct Verifier {
    /// The CA's check, when the mode asks for one.
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            checked => checked,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_words_become_tokio_postgres_settings() {
        let plain = PgConnect::parse("postgres://u@h:5432/db?options=-c%20x%3Dy", None).unwrap();
        assert_eq!(plain.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(plain.config.get_options(), Some("-c x=y"));
        let full = PgConnect::parse("postgres://u@h/db?sslmode=verify-full", None).unwrap();
        assert_eq!(full.config.get_ssl_mode(), SslMode::Require);
        let prefer = PgConnect::parse("postgres://u@h/db?sslmode=prefer", None).unwrap();
        assert_eq!(prefer.config.get_ssl_mode(), SslMode::Prefer);
        assert!(PgConnect::parse("postgres://u@h/db?sslmode=sometimes", None).is_err());
        assert!(
            PgConnect::parse(
                "postgres://u@h/db?sslmode=require&sslrootcert=/no/such.pem",
                None
            )
            .is_err(),
            "a CA file that is not there is said at once"
        );
        assert_eq!(percent_decode("/a%20b/c+d.pem").unwrap(), "/a b/c+d.pem");
    }
}
