//! Devices and a real server over loopback HTTP, for end-to-end tests of the device runtime.

use crate::server::{Backend, Cleanup, fresh_database, postgres};
use std::path::PathBuf;
use std::sync::Arc;
use sync_runtime::Store;
use sync_runtime::client::{self, Activity, Limits, LocalData, SyncError, SyncReport};
use sync_runtime::server::{Server, ServerConfig, router};

/// A sync server listening on a loopback port, which a test can stop and start again on the
/// same port and database (the server "going down").
pub struct LiveServer {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub server: Option<Arc<Server>>,
    db_url: String,
    config: ServerConfig,
    task: Option<tokio::task::JoinHandle<()>>,
    _cleanup: Cleanup,
}

impl LiveServer {
    pub async fn start(backend: Backend, test: &str) -> Option<LiveServer> {
        Self::start_with(backend, test, ServerConfig::default()).await
    }

    pub async fn start_with(
        backend: Backend,
        test: &str,
        config: ServerConfig,
    ) -> Option<LiveServer> {
        let (db_url, cleanup) = fresh_database(backend, test).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut s = LiveServer {
            url: format!("http://{addr}"),
            addr,
            server: None,
            db_url,
            config,
            task: None,
            _cleanup: cleanup,
        };
        s.serve(listener).await;
        Some(s)
    }

    async fn serve(&mut self, listener: tokio::net::TcpListener) {
        let server = Server::open(&self.db_url, entities::app(), self.config.clone())
            .await
            .unwrap();
        let app =
            router(server.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
        self.server = Some(server);
    }

    /// The URL of the server's database (`sqlite://PATH`, or PostgreSQL's scoped to its schema).
    pub fn database_url(&self) -> &str {
        &self.db_url
    }

    /// Signs `email` in over HTTP, at `path` (register or login) with the password "correct
    /// horse": its user id and token.
    pub async fn sign_in(&self, path: &str, email: &str) -> (String, String) {
        let session: serde_json::Value = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .json(&serde_json::json!({"email": email, "password": "correct horse"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let field = |name: &str| {
            session[name]
                .as_str()
                .unwrap_or_else(|| panic!("not a session: {session}"))
                .to_owned()
        };
        (field("user_id"), field("token"))
    }

    /// The server goes down: the port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        self.server = None;
    }

    /// The server comes back on the same port with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        // While the server was down, its port may have gone to another socket for a moment
        // (an outgoing connection's ephemeral port: a soak hit it once in 600 seeds); wait
        // for it to come free rather than fail the run.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("the server cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener).await;
    }
}

/// A copy of a live server's database, to restore later (an operator's backup).
pub enum Backup {
    Files(Vec<(PathBuf, Vec<u8>)>),
    Schema(String),
}

impl LiveServer {
    /// Copies the server's database while it is stopped for a moment.
    pub async fn backup(&mut self) -> Backup {
        self.stop().await;
        let backup = match &self._cleanup {
            Cleanup::File(path) => Backup::Files(
                ["", "-wal", "-shm"]
                    .iter()
                    .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
                    .filter_map(|p| std::fs::read(&p).ok().map(|bytes| (p, bytes)))
                    .collect(),
            ),
            Cleanup::Schema(url, schema) => {
                let copy = format!("{schema}_backup");
                let client = postgres(url).await;
                client
                    .batch_execute(&format!("CREATE SCHEMA {copy}"))
                    .await
                    .unwrap();
                for t in tables(&client, schema).await {
                    client
                        .batch_execute(&format!("CREATE TABLE {copy}.{t} AS TABLE {schema}.{t}"))
                        .await
                        .unwrap();
                }
                Backup::Schema(copy)
            }
        };
        self.restart().await;
        backup
    }

    /// Puts the server's database back as it was at `backup`, and starts the server again.
    pub async fn restore(&mut self, backup: &Backup) {
        self.stop().await;
        match (&self._cleanup, backup) {
            (Cleanup::File(path), Backup::Files(files)) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
                for (p, bytes) in files {
                    std::fs::write(p, bytes).unwrap();
                }
            }
            (Cleanup::Schema(url, schema), Backup::Schema(copy)) => {
                let client = postgres(url).await;
                for t in tables(&client, schema).await {
                    client
                        .batch_execute(&format!(
                            "TRUNCATE {schema}.{t}; INSERT INTO {schema}.{t} SELECT * FROM {copy}.{t}"
                        ))
                        .await
                        .unwrap();
                }
                client
                    .batch_execute(&format!("DROP SCHEMA {copy} CASCADE"))
                    .await
                    .unwrap();
            }
            _ => unreachable!("a backup of another backend"),
        }
        self.restart().await;
    }
}

async fn tables(client: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// One device: its own database file.
pub struct Device {
    pub store: Store,
    pub path: PathBuf,
    pub limits: Limits,
}

impl Device {
    pub fn new(name: &str) -> Device {
        let path = std::env::temp_dir().join(format!(
            "device-{name}-{}-{}.sqlite",
            std::process::id(),
            sync_runtime::server::db::new_id()
        ));
        Device::at(path)
    }

    pub fn at(path: PathBuf) -> Device {
        let store = Store::open(&path, entities::app()).unwrap();
        Device {
            store,
            path,
            limits: Limits::default(),
        }
    }

    /// A device whose wall clock runs `wall()` instead of the real one.
    pub fn with_wall_clock(name: &str, wall: fn() -> sync_runtime::Timestamp) -> Device {
        let d = Device::new(name);
        let store = Store::open_with_wall_clock(&d.path, entities::app(), wall).unwrap();
        Device {
            store,
            path: d.path.clone(),
            limits: Limits::default(),
        }
    }

    /// The process dies and starts again: the same file, a new connection, a clock derived anew.
    pub fn restart(&mut self) {
        self.store = Store::open(&self.path, entities::app()).unwrap();
    }

    pub async fn connect(&mut self, url: &str, email: &str, register: bool) -> SyncReport {
        self.connect_with(url, email, register, LocalData::Upload)
            .await
            .unwrap()
    }

    pub async fn connect_with(
        &mut self,
        url: &str,
        email: &str,
        register: bool,
        local: LocalData,
    ) -> Result<SyncReport, SyncError> {
        client::connect(
            &mut self.store,
            url,
            email,
            "correct horse",
            register,
            local,
            &mut |_: Activity| {},
        )
        .await
    }

    pub async fn sync(&mut self) -> Result<SyncReport, SyncError> {
        client::sync_with(&mut self.store, self.limits, &mut |_: Activity| {}).await
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-sync-token"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}
