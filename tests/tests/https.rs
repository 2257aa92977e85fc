//! HTTPS served by the server itself (`--tls-cert`, `--tls-key`), with certificates made in the
//! test by a CA of the test's own: a device told of the CA connects, syncs and another device
//! pulls what it pushed; a device not told refuses the server; a renewed certificate is served
//! without a restart, when its file changes and on SIGHUP.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use sync_runtime::client::{self, Activity, LocalData, SyncError};
use sync_runtime::server::tls::{ServerTls, TlsFiles};
use sync_runtime::server::{Server, ServerConfig, serve_tls};
use tests::by_backend;
use tests::device::Device;
use tests::fixtures::{live_count, settings_profile};
use tests::local_app::LocalApp;
use tests::server::{Backend, Cleanup, fresh_database};

/// A certificate authority of the test's own.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1: its chain and its key, as PEM.
    fn server_cert(&self) -> (String, String) {
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory of the test's own, removed afterwards.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "https-{name}-{}-{}",
            std::process::id(),
            sync_runtime::server::db::new_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `ca`'s new server certificate where `files` says.
fn install(files: &TlsFiles, ca: &Ca) {
    let (cert, key) = ca.server_cert();
    // The key first: a reload between the two writes finds a pair that does not match, and
    // keeps the certificate it served.
    std::fs::write(&files.key, key).unwrap();
    std::fs::write(&files.cert, cert).unwrap();
}

/// A server on HTTPS at `url`, stopped when dropped.
struct HttpsServer {
    url: String,
    task: tokio::task::JoinHandle<()>,
    _server: Arc<Server>,
    _cleanup: Cleanup,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn https_server(backend: Backend, test: &str, files: TlsFiles) -> Option<HttpsServer> {
    let (db_url, cleanup) = fresh_database(backend, test).await?;
    let server = Server::open(&db_url, entities::app(), ServerConfig::default())
        .await
        .unwrap();
    let tls = ServerTls::start(files).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serving = server.clone();
    let task = tokio::spawn(async move {
        let _ = serve_tls(listener, serving, &tls, std::future::pending()).await;
    });
    Some(HttpsServer {
        url: format!("https://localhost:{port}"),
        task,
        _server: server,
        _cleanup: cleanup,
    })
}

async fn connect(device: &mut Device, url: &str, register: bool) -> Result<(), SyncError> {
    client::connect(
        &mut device.store,
        url,
        "tls@example.org",
        "correct horse",
        register,
        LocalData::Upload,
        &mut |_: Activity| {},
    )
    .await
    .map(|_| ())
}

/// Whether a client trusting `ca` alone gets an answer from `url`'s health check.
async fn trusted_by(ca: &Ca, url: &str) -> bool {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    client
        .get(format!("{url}/api/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Whether `url` is trusted by a client of `ca` within 5 s.
async fn soon_trusted_by(ca: &Ca, url: &str) -> bool {
    for _ in 0..50 {
        if trusted_by(ca, url).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn a_device_told_of_the_ca_syncs_over_https(backend: Backend) {
    let dir = TempDir::new("sync");
    let ca = Ca::new("sync test CA");
    let files = TlsFiles::new(dir.0.join("cert.pem"), dir.0.join("key.pem"));
    install(&files, &ca);
    let Some(server) = https_server(backend, "https_sync", files).await else {
        return;
    };

    let mut stranger = Device::new("https-stranger");
    assert!(
        connect(&mut stranger, &server.url, true).await.is_err(),
        "a device that trusts only the public web's roots refuses the server"
    );

    let mut a = Device::new("https-a");
    a.store.insert(&mut settings_profile("Over TLS")).unwrap();
    a.store.set_server_ca(Some(&ca.pem())).unwrap();
    connect(&mut a, &server.url, true).await.unwrap();
    assert_eq!(
        a.store.server_ca().unwrap(),
        Some(ca.pem()),
        "kept for later syncs"
    );
    a.sync().await.unwrap();

    let mut b = Device::new("https-b");
    b.store.set_server_ca(Some(&ca.pem())).unwrap();
    connect(&mut b, &server.url, false).await.unwrap();
    assert_eq!(live_count(&b.store, "settings_profiles"), 1);
}

by_backend!(
    a_device_told_of_the_ca_syncs_over_https,
    a_device_told_of_the_ca_syncs_over_https
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_page_connects_with_the_servers_ca() {
    let dir = TempDir::new("page");
    let ca = Ca::new("page CA");
    let files = TlsFiles::new(dir.0.join("cert.pem"), dir.0.join("key.pem"));
    install(&files, &ca);
    let server = https_server(Backend::Sqlite, "https_page", files)
        .await
        .unwrap();
    let app = LocalApp::start("https-page").await;
    let body = |server_ca: Option<String>| {
        json!({"remote_url": server.url, "email": "page@example.org",
            "password": "correct horse", "register": true, "server_ca": server_ca})
    };
    let (s, e) = app.post("/api/sync/connect", Some(body(None))).await;
    assert_eq!((s, e["error"].as_str()), (502, Some("unreachable")), "{e}");
    let (s, e) = app
        .post(
            "/api/sync/connect",
            Some(body(Some("not a certificate".into()))),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    let (s, status) = app
        .post("/api/sync/connect", Some(body(Some(ca.pem()))))
        .await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["state"], "connected");
    let (s, v) = app.post("/api/sync/sync", None).await;
    assert_eq!(s, 200, "later syncs trust the CA kept: {v}");
    let (_, config) = app.get("/api/sync/config").await;
    assert_eq!(
        config["server_ca"],
        ca.pem().trim(),
        "kept as given, trimmed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_when_its_file_changes() {
    let dir = TempDir::new("renewed");
    let (old, new) = (Ca::new("old CA"), Ca::new("new CA"));
    let files = TlsFiles {
        check_every: Duration::from_millis(100),
        ..TlsFiles::new(dir.0.join("cert.pem"), dir.0.join("key.pem"))
    };
    install(&files, &old);
    let server = https_server(Backend::Sqlite, "renewed", files.clone())
        .await
        .unwrap();
    assert!(trusted_by(&old, &server.url).await);
    assert!(!trusted_by(&new, &server.url).await);

    std::fs::write(&files.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        trusted_by(&old, &server.url).await,
        "a file that does not load leaves the served certificate in place"
    );

    install(&files, &new);
    let served = soon_trusted_by(&new, &server.url).await;
    assert!(
        served,
        "the renewed certificate is served without a restart"
    );
    assert!(!trusted_by(&old, &server.url).await);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    let dir = TempDir::new("sighup");
    let (old, new) = (Ca::new("old CA"), Ca::new("new CA"));
    // Files checked once an hour: only the signal reloads them here.
    let files = TlsFiles {
        check_every: Duration::from_secs(3600),
        ..TlsFiles::new(dir.0.join("cert.pem"), dir.0.join("key.pem"))
    };
    install(&files, &old);
    let server = https_server(Backend::Sqlite, "sighup", files.clone())
        .await
        .unwrap();
    assert!(trusted_by(&old, &server.url).await);
    // The reloader has its SIGHUP handler once it has run (it runs before its first tick);
    // the server answered a request, so its runtime has had the time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    install(&files, &new);
    let pid = std::process::id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let served = soon_trusted_by(&new, &server.url).await;
    assert!(served, "SIGHUP reloads the certificate");
}
