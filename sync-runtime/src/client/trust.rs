//! Which servers' certificates a device trusts: the public web's (reqwest's built-in roots), and
//! a self-hosted server's own CA when the device is told to (`--ca-file`, the settings page).
//! The CA's certificates (PEM) are kept in the device's database with the session, so every
//! later sync, in any process, trusts the same server.

use super::remote::RemoteError;

/// The certificates of `pem`, or why it holds none a client can trust.
fn certificates(pem: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the CA certificate holds no `-----BEGIN CERTIFICATE-----` block".to_owned());
    }
    Ok(certs)
}

/// Checks that `pem` holds CA certificates (before it is stored for a server).
pub fn check_server_ca(pem: &str) -> Result<(), String> {
    certificates(pem).map(|_| ())
}

/// `builder`, trusting `ca_pem`'s certificates too when given.
pub(crate) fn trusting(
    mut builder: reqwest::ClientBuilder,
    ca_pem: Option<&str>,
) -> Result<reqwest::ClientBuilder, RemoteError> {
    if let Some(pem) = ca_pem {
        for cert in certificates(pem).map_err(RemoteError::Protocol)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}
