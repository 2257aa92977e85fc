//! A device app serving the control API and settings page on a loopback port, as an app built
//! on the framework does, for tests of the API and of the page in a browser.

use serde_json::Value as Json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use sync_runtime::Store;
use sync_runtime::client::ServiceOptions;
use sync_runtime::control::{SyncControl, router};

pub struct LocalApp {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    pub control: Arc<SyncControl>,
    pub path: PathBuf,
    pub http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl LocalApp {
    /// An app over a fresh database file.
    pub async fn start(name: &str) -> LocalApp {
        Self::start_with(name, ServiceOptions::default()).await
    }

    /// An app whose background service runs with `options`.
    pub async fn start_with(name: &str, options: ServiceOptions) -> LocalApp {
        let path = std::env::temp_dir().join(format!(
            "local-app-{name}-{}-{}.sqlite",
            std::process::id(),
            sync_runtime::server::db::new_id()
        ));
        let store = Store::open(&path, entities::app()).unwrap();
        let control = SyncControl::start(store, options).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(control.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        LocalApp {
            url: format!("http://{addr}"),
            addr,
            control,
            path,
            http: reqwest::Client::new(),
            task,
        }
    }

    /// A second connection to the app's database, to write rows as the app would.
    pub fn store(&self) -> Store {
        Store::open(&self.path, entities::app()).unwrap()
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// Sends `req`; the status and the JSON body (`null` when empty).
    pub async fn send(req: reqwest::RequestBuilder) -> (u16, Json) {
        let resp = req.send().await.expect("the local app answers");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Json) {
        Self::send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: Option<Json>) -> (u16, Json) {
        let mut req = self.request(reqwest::Method::POST, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::send(req).await
    }
}

impl Drop for LocalApp {
    fn drop(&mut self) {
        self.task.abort();
        for suffix in ["", "-wal", "-shm", "-sync-token"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}
