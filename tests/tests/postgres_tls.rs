//! The server reaches PostgreSQL over TLS as the URL's `sslmode` asks, through rustls. The
//! local PostgreSQL serves Debian's self-signed certificate for `localhost` (ssl-cert's
//! snakeoil, `ssl = on`); without it (or without PostgreSQL) these tests say so and pass.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::path::{Path, PathBuf};
use sync_runtime::server::postgres_tls::PgConnect;
use sync_runtime::server::{Server, ServerConfig, router};
use tests::server::{Backend, fresh_database};
use tower::ServiceExt;

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// The test PostgreSQL's URL, when it serves TLS with the snakeoil certificate.
async fn tls_postgres(test: &str) -> Option<String> {
    let url = tests::postgres_url(test)?;
    let served = tests::server::postgres(&url)
        .await
        .query_one(
            "SELECT current_setting('ssl') = 'on' AND current_setting('ssl_cert_file') = $1",
            &[&SNAKEOIL],
        )
        .await
        .is_ok_and(|row| row.get::<_, bool>(0));
    if !served || !Path::new(SNAKEOIL).exists() {
        eprintln!("skipped: the test PostgreSQL does not serve TLS with {SNAKEOIL}");
        return None;
    }
    Some(url)
}

/// `url` with `params` added to its query, and its host replaced by `host`.
fn with(url: &str, host: &str, params: &str) -> String {
    let url = url.replacen("127.0.0.1", host, 1);
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// Whether a connection made as `url` (and `ca`) asks is encrypted; an error when refused.
async fn encrypted(url: &str, ca: Option<&Path>) -> Result<bool, String> {
    let to = PgConnect::parse(url, ca).map_err(|e| e.to_string())?;
    let (client, conn) = to
        .config
        .connect(to.tls.clone())
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn sslmode_is_obeyed_as_libpq_obeys_it() {
    let Some(url) = tls_postgres("sslmode").await else {
        return;
    };
    assert_eq!(encrypted(&url, None).await, Ok(false), "no sslmode: plain");
    assert_eq!(
        encrypted(&with(&url, "127.0.0.1", "sslmode=require"), None).await,
        Ok(true),
        "require without a CA: encrypted, unverified"
    );
    let full = with(
        &url,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={SNAKEOIL}"),
    );
    assert_eq!(encrypted(&full, None).await, Ok(true));
    let by_address = with(&url, "127.0.0.1", "sslmode=verify-full");
    assert!(
        encrypted(&by_address, Some(Path::new(SNAKEOIL)))
            .await
            .is_err(),
        "verify-full refuses a certificate made out to another host"
    );
    let ca_only = with(&url, "127.0.0.1", "sslmode=verify-ca");
    assert_eq!(
        encrypted(&ca_only, Some(Path::new(SNAKEOIL))).await,
        Ok(true),
        "verify-ca checks the signature, not the name"
    );
    let public_roots = with(&url, "localhost", "sslmode=verify-full");
    assert!(
        encrypted(&public_roots, None).await.is_err(),
        "without a CA file, the public web's roots do not sign a self-signed certificate"
    );
}

#[tokio::test]
async fn the_server_runs_on_a_verified_connection_with_a_ca_file() {
    if tls_postgres("server_over_tls").await.is_none() {
        return;
    }
    let (url, _cleanup) = fresh_database(Backend::Postgres, "server_over_tls")
        .await
        .unwrap();
    let config = ServerConfig {
        postgres_ca_file: Some(PathBuf::from(SNAKEOIL)),
        ..ServerConfig::default()
    };
    let server = Server::open(
        &with(&url, "localhost", "sslmode=verify-full"),
        entities::app(),
        config,
    )
    .await
    .expect("the server starts over TLS");
    // Readiness asks the database on a pooled connection, over TLS like the migrations before.
    let answer = router(server)
        .oneshot(
            Request::get("/api/health/ready")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
}
