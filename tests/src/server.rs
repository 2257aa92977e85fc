//! A sync server for tests, in-process (the router driven directly) on either backend.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value as Json, json};
use std::sync::Arc;
use sync_runtime::App;
use sync_runtime::protocol::paths;
use sync_runtime::protocol::pull::PullQuery;
use sync_runtime::schema::{ColumnType, DefaultValue, Table};
use sync_runtime::server::{Server, ServerConfig, router};
use tower::ServiceExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server with its own empty database: a temporary SQLite file, or a fresh schema
/// in the test PostgreSQL database (dropped afterwards).
pub struct TestServer {
    pub server: Arc<Server>,
    pub backend: Backend,
    router: axum::Router,
    // Dropped with the server: the database goes with it.
    _cleanup: Cleanup,
}

pub enum Cleanup {
    File(std::path::PathBuf),
    Schema(String, String),
}

/// What a fresh database leaves behind, removed when dropped (a test server's file, or its
/// schema in the test PostgreSQL database).
impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::File(p) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
                }
            }
            Cleanup::Schema(url, schema) => {
                let (url, schema) = (url.clone(), schema.clone());
                // Drop the schema on a thread of its own: Drop cannot await.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    rt.block_on(async {
                        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                            .await
                            .ok()?;
                        tokio::spawn(conn);
                        client
                            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .await
                            .ok()
                    })
                })
                .join();
            }
        }
    }
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A connection to the PostgreSQL database at `url`, driven by a task of its own.
pub async fn postgres(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    client
}

/// A connection to the PostgreSQL server the tests were given (`SYNC_TEST_POSTGRES_URL`), for
/// what a test does beside the server under test: watching or ending its connections.
pub async fn postgres_admin() -> tokio_postgres::Client {
    let url = std::env::var(crate::POSTGRES_URL_VAR).expect("a PostgreSQL URL");
    postgres(&url).await
}

/// A database URL for a fresh, empty store on `backend` (None: PostgreSQL is not configured).
pub async fn fresh_database(backend: Backend, test: &str) -> Option<(String, Cleanup)> {
    match backend {
        Backend::Sqlite => {
            let path = std::env::temp_dir().join(format!("{}.sqlite", unique("sync_server")));
            Some((format!("sqlite://{}", path.display()), Cleanup::File(path)))
        }
        Backend::Postgres => {
            let url = crate::postgres_url(test)?;
            let schema = unique("srv");
            postgres(&url)
                .await
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .await
                .expect("create a test schema");
            let sep = if url.contains('?') { '&' } else { '?' };
            let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
            Some((scoped, Cleanup::Schema(url, schema)))
        }
    }
}

impl TestServer {
    pub async fn start(backend: Backend, test: &str) -> Option<TestServer> {
        Self::start_with(backend, test, entities::app(), ServerConfig::default()).await
    }

    pub async fn start_with(
        backend: Backend,
        test: &str,
        app: &'static App,
        config: ServerConfig,
    ) -> Option<TestServer> {
        let (url, cleanup) = fresh_database(backend, test).await?;
        let server = Server::open(&url, app, config)
            .await
            .expect("the server starts");
        Some(TestServer {
            router: router(server.clone()),
            server,
            backend,
            _cleanup: cleanup,
        })
    }

    /// Sends a request; returns the status and the JSON body (`null` if empty).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Json>,
    ) -> (StatusCode, Json) {
        let body = body.map(|b| b.to_string().into_bytes());
        self.raw(method, uri, token, body, "application/json", &[])
            .await
    }

    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        content_type: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Json) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", content_type);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        self.send(req).await
    }

    /// The first pull page's body as the bytes the server wrote.
    pub async fn pull_text(&self, token: &str) -> (StatusCode, String) {
        let req = Request::builder()
            .method(Method::GET)
            .uri(paths::PULL)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Sends a JSON request as if it came over a socket from `from`.
    pub async fn call_from(
        &self,
        from: &str,
        method: Method,
        uri: &str,
        body: Option<Json>,
    ) -> (StatusCode, Json) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let addr: std::net::SocketAddr = from.parse().expect("an address like 10.0.0.1:5000");
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        self.send(req).await
    }

    /// Sends a request; returns the status and the JSON body (`null` if empty).
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Json) {
        let (status, _, json) = self.send_with_headers(req).await;
        (status, json)
    }

    /// The same, with the answer's headers.
    pub async fn send_with_headers(
        &self,
        req: Request<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, Json) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = if bytes.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, headers, json)
    }

    /// Registers `email` and returns (user_id, token).
    pub async fn register(&self, email: &str) -> (String, String) {
        let (s, b) = self
            .call(
                Method::POST,
                paths::REGISTER,
                None,
                Some(json!({"email": email, "password": "correct horse"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        (
            b["user_id"].as_str().unwrap().to_owned(),
            b["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Pushes `changes` as `device`; asserts 200 and returns the results.
    pub async fn push(&self, token: &str, device: &str, changes: Json) -> Json {
        let (s, b) = self.push_raw(token, device, changes).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["results"].clone()
    }

    pub async fn push_raw(&self, token: &str, device: &str, changes: Json) -> (StatusCode, Json) {
        let body = json!({"device_id": device, "schema_version": 1, "changes": changes});
        self.call(Method::POST, paths::PUSH, Some(token), Some(body))
            .await
    }

    /// Pushes `body` as it is, bytes the test wrote (not always valid JSON).
    pub async fn push_body(&self, token: &str, body: impl Into<Vec<u8>>) -> (StatusCode, Json) {
        self.raw(
            Method::POST,
            paths::PUSH,
            Some(token),
            Some(body.into()),
            "application/json",
            &[],
        )
        .await
    }

    /// A pull with `query` as the test wrote it (`since=…&limit=…`, valid or not).
    pub async fn pull_query(&self, token: &str, query: &str) -> (StatusCode, Json) {
        self.call(
            Method::GET,
            &format!("{}?{query}", paths::PULL),
            Some(token),
            None,
        )
        .await
    }

    /// The first page of a pull by a client of schema `version` (its `x-sync-schema-version`).
    pub async fn pull_as_version(&self, token: &str, version: &str) -> (StatusCode, Json) {
        self.raw(
            Method::GET,
            paths::PULL,
            Some(token),
            None,
            "",
            &[("x-sync-schema-version", version)],
        )
        .await
    }

    pub async fn pull_page(
        &self,
        token: &str,
        since: Option<&str>,
        limit: Option<usize>,
        device: Option<&str>,
    ) -> (StatusCode, Json) {
        let query = PullQuery {
            since: since.map(str::to_owned),
            limit: limit.map(|l| l as i64),
            device_id: device.map(str::to_owned),
            wait: None,
        };
        self.pull_query(token, &query.encode()).await
    }

    /// Pulls every page after `since`; returns the rows per table (in pull order) and the cursor.
    pub async fn pull_all(
        &self,
        token: &str,
        since: Option<&str>,
        limit: usize,
        device: Option<&str>,
    ) -> (Vec<(String, Json)>, String) {
        let mut rows = Vec::new();
        let mut cursor = since.map(str::to_owned);
        loop {
            let (s, b) = self
                .pull_page(token, cursor.as_deref(), Some(limit), device)
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            for (table, list) in b["changes"].as_object().unwrap() {
                for r in list.as_array().unwrap() {
                    rows.push((table.clone(), r.clone()));
                }
            }
            cursor = Some(b["cursor"].as_str().unwrap().to_owned());
            if !b["has_more"].as_bool().unwrap() {
                return (rows, cursor.unwrap());
            }
        }
    }
}

/// The status of row `i` of `table` in a push's results ("" when there is none).
pub fn status<'a>(results: &'a Json, table: &str, i: usize) -> &'a str {
    results[table][i]["status"].as_str().unwrap_or_default()
}

/// A new UUIDv7, as a remote id or device id.
pub fn id() -> String {
    sync_runtime::server::db::new_id()
}

/// A wire row of `table`: every column present, NOT NULL ones without a default given a
/// plain value, then `fields` over them.
pub fn row(table: &str, remote_id: &str, updated_at: &str, fields: Json) -> Json {
    let t: &Table = entities::app().schema.table(table).expect("a synced table");
    let mut m = serde_json::Map::new();
    m.insert("remote_id".into(), json!(remote_id));
    m.insert("updated_at".into(), json!(updated_at));
    m.insert("deleted_at".into(), Json::Null);
    for c in t
        .columns
        .iter()
        .filter(|c| c.on_wire() && c.name != "updated_at")
    {
        let v = if c.nullable || c.reference.is_some() {
            Json::Null
        } else {
            match (&c.default, c.ty) {
                (Some(DefaultValue::Integer(i)), _) => json!(i),
                (Some(DefaultValue::Boolean(b)), _) => json!(b),
                (_, ColumnType::Integer) => json!(0),
                (_, ColumnType::Boolean) => json!(false),
                (_, ColumnType::Real) => json!(0.0),
                _ => json!("x"),
            }
        };
        m.insert(c.name.clone(), v);
    }
    for (k, v) in fields.as_object().expect("fields as an object") {
        m.insert(k.clone(), v.clone());
    }
    Json::Object(m)
}

/// `2026-11-28T07:49:06.123Z` plus `ms` milliseconds: deterministic stamps for tests.
pub fn at(ms: i64) -> String {
    sync_runtime::Timestamp::parse_wire("2026-11-28T07:00:00.000Z")
        .unwrap()
        .add_millis(ms)
        .to_wire()
}

/// Runs an async test body once per backend; the PostgreSQL test is ignored, with the reason,
/// unless `SYNC_TEST_POSTGRES_URL` was set when the tests were built (`cfg(postgres)`).
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(s) = $crate::server::TestServer::start(
                    $crate::server::Backend::Sqlite,
                    stringify!($name),
                )
                .await
                {
                    super::$body(s).await;
                }
            }
            #[cfg_attr(
                not(postgres),
                ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
            )]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(s) = $crate::server::TestServer::start(
                    $crate::server::Backend::Postgres,
                    stringify!($name),
                )
                .await
                {
                    super::$body(s).await;
                }
            }
        }
    };
}

/// Runs an async test body `$body(backend)` once per backend, for bodies that start their own
/// server; the PostgreSQL test is ignored, with the reason, unless `SYNC_TEST_POSTGRES_URL` was
/// set when the tests were built (`cfg(postgres)`).
#[macro_export]
macro_rules! by_backend {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::server::Backend::Sqlite).await;
            }
            #[cfg_attr(
                not(postgres),
                ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
            )]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::server::Backend::Postgres).await;
            }
        }
    };
}
