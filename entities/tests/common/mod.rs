//! What the tests that run `sync-server` and `sync-client` as processes share: starting a
//! process and reading its output, a server on a database, the client's commands, a fresh
//! directory.

// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

#[cfg(feature = "client")]
pub mod devices;

use serde_json::Value as Json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a process may take to print what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A child process, killed when dropped, with its standard output read line by line.
pub struct Running {
    pub child: Child,
    /// Behind a lock so that threads may share the process (a receiver alone is not `Sync`).
    lines: Mutex<mpsc::Receiver<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Running {
    /// The process, logging warnings and errors.
    pub fn spawn(command: &mut Command) -> Running {
        Running::spawn_logging(command, "warn")
    }

    /// The process, logging at `level` (`RUST_LOG`). Its lines of standard error come with
    /// those of its output, so that a process that fails shows why in the test's message.
    pub fn spawn_logging(command: &mut Command, level: &str) -> Running {
        let mut child = command
            .env("RUST_LOG", level)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = BufReader::new(child.stderr.take().unwrap());
        let err_tx = tx.clone();
        std::thread::spawn(move || forward_lines(err, &err_tx));
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || forward_lines(out, &tx));
        Running {
            child,
            lines: Mutex::new(lines),
        }
    }

    /// Kills the process and waits for its end.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's peak resident memory, in MiB.
    pub fn peak_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap();
        kib / 1024
    }

    /// The first line of output that satisfies `wanted`, within [`PATIENCE`].
    pub fn wait_for(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        let lines = self.lines.lock().unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no {what} within {PATIENCE:?}; the output was: {seen:#?}"),
            }
        }
    }
}

/// Sends each line `from` reads until it ends or nobody listens.
fn forward_lines(from: impl BufRead, to: &mpsc::Sender<String>) {
    for line in from.lines().map_while(Result::ok) {
        if to.send(line).is_err() {
            return;
        }
    }
}

/// A `sync-server` on `database` (a `sqlite://` or `postgres://` URL) and its base URL.
pub fn server(database: &str) -> (Running, String) {
    server_with(database, &[], "warn")
}

/// A `sync-server` on `database` with `args` on top of the defaults, logging at `level`, and
/// its base URL.
pub fn server_with(database: &str, args: &[&str], level: &str) -> (Running, String) {
    let server = start_server(database, args, level);
    let url = listening_url(&server);
    (server, url)
}

/// `sync-server` on `database` with `args`, logging at `level`, started without waiting for
/// it: several start at the same moment.
pub fn start_server(database: &str, args: &[&str], level: &str) -> Running {
    Running::spawn_logging(
        Command::new(env!("CARGO_BIN_EXE_sync-server"))
            .args(["--listen", "127.0.0.1:0", "--database", database])
            .args(args),
        level,
    )
}

/// Runs `sync-server` on `database`, which must fail to start; what it wrote.
pub fn failed_start(database: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sync-server"))
        .args(["--listen", "127.0.0.1:0", "--database", database])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("sync-server started on {database}, where it must not");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The base URL a started `sync-server` prints once it listens.
pub fn listening_url(server: &Running) -> String {
    let line = server.wait_for("listening line", |l| l.starts_with("listening on "));
    line.trim().trim_start_matches("listening on ").to_owned()
}

/// A `sync-server` on a SQLite file in `dir`.
pub fn sqlite_server(dir: &Path) -> (Running, String) {
    server(&format!("sqlite://{}", dir.join("server.sqlite").display()))
}

/// The `host:port` of a `sync-server`'s base URL.
pub fn address(url: &str) -> String {
    url.strip_prefix("http://")
        .unwrap_or_else(|| panic!("unexpected: {url}"))
        .to_owned()
}

/// One HTTP/1.1 request to `addr` over a fresh connection: (status, JSON body or null).
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Json) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    answer(&mut stream)
}

/// Reads an answer to its end (the server closes the connection): (status, JSON body or null).
pub fn answer(stream: &mut TcpStream) -> (u16, Json) {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {text:?}"));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = if body.is_empty() {
        Json::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, json)
}

/// A connection to the PostgreSQL database at `url`, driven by a task of its own.
pub async fn postgres(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(conn);
    client
}

/// A schema of its own in the test PostgreSQL database (`SYNC_TEST_POSTGRES_URL`), dropped with
/// this value; `None` when PostgreSQL is not configured.
pub struct PgSchema {
    admin_url: String,
    name: String,
    /// The database URL of a server whose tables live in this schema.
    pub url: String,
}

impl PgSchema {
    pub fn create(purpose: &str) -> Option<PgSchema> {
        let Ok(admin_url) = std::env::var("SYNC_TEST_POSTGRES_URL") else {
            eprintln!("skipped: needs PostgreSQL; set SYNC_TEST_POSTGRES_URL (as .ci/run does)");
            return None;
        };
        let name = format!("{purpose}_{}", std::process::id());
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-c%20search_path%3D{name}");
        let schema = PgSchema {
            admin_url,
            name,
            url,
        };
        schema.admin(format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
            schema.name
        ));
        Some(schema)
    }

    fn admin(&self, sql: String) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            postgres(&self.admin_url)
                .await
                .batch_execute(&sql)
                .await
                .unwrap();
        })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        self.admin(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

/// `sync-client --db <db> <args>`, run to its end.
pub fn client(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sync-client"))
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

/// The output of a `sync-client` command that must succeed.
pub fn ok(db: &Path, args: &[&str]) -> String {
    let out = client(db, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "sync-client {args:?} failed: {stdout}{stderr}"
    );
    stdout.into_owned()
}

/// `sync-client --db <db> connect <url>` as `email`, registering the account first if asked;
/// it must succeed.
pub fn connect(db: &Path, url: &str, email: &str, password: &str, register: bool) -> String {
    let mut args = vec!["connect", url, "--email", email, "--password", password];
    if register {
        args.push("--register");
    }
    ok(db, &args)
}

/// A new directory under the system's temporary one, named after `purpose`.
pub fn temp_dir(purpose: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "{purpose}-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `work` with a connection to the PostgreSQL database at `url`, on a thread and runtime
/// of its own, so that sync code, async tests and `Drop` can all call it.
pub fn with_postgres<R, F>(
    url: &str,
    work: impl FnOnce(tokio_postgres::Client) -> F + Send + 'static,
) -> R
where
    R: Send + 'static,
    F: std::future::Future<Output = R>,
{
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { work(postgres(&url).await).await })
    })
    .join()
    .unwrap()
}

/// Runs `sql` on the PostgreSQL database at `url`.
pub fn postgres_batch(url: &str, sql: &str) {
    let sql = sql.to_owned();
    with_postgres(url, move |client| async move {
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty server database, removed when dropped: a SQLite file, or a schema of the
/// test PostgreSQL database.
pub struct FreshDatabase {
    pub url: String,
    pub backend: Backend,
    place: Place,
}

enum Place {
    File(PathBuf),
    Schema { admin_url: String, schema: String },
}

impl FreshDatabase {
    /// None, after saying plainly that `test` is skipped, on PostgreSQL without
    /// `SYNC_TEST_POSTGRES_URL`.
    pub fn new(backend: Backend, test: &str) -> Option<FreshDatabase> {
        let name = format!("{test}_{}", uuid::Uuid::now_v7().simple());
        let place = match backend {
            Backend::Sqlite => Place::File(std::env::temp_dir().join(format!("{name}.sqlite"))),
            Backend::Postgres => {
                let Some(admin_url) = std::env::var("SYNC_TEST_POSTGRES_URL")
                    .ok()
                    .filter(|u| !u.is_empty())
                else {
                    eprintln!(
                        "skipped: {test} needs PostgreSQL; set SYNC_TEST_POSTGRES_URL (as .ci/run does)"
                    );
                    return None;
                };
                postgres_batch(&admin_url, &format!("CREATE SCHEMA {name}"));
                Place::Schema {
                    admin_url,
                    schema: name,
                }
            }
        };
        let url = match &place {
            Place::File(path) => format!("sqlite://{}", path.display()),
            Place::Schema { admin_url, schema } => {
                let sep = if admin_url.contains('?') { '&' } else { '?' };
                format!("{admin_url}{sep}options=-c%20search_path%3D{schema}")
            }
        };
        Some(FreshDatabase {
            url,
            backend,
            place,
        })
    }

    /// Runs `sql` in this database: on PostgreSQL in its schema.
    pub fn execute(&self, sql: &str) {
        match &self.place {
            Place::File(path) => rusqlite::Connection::open(path)
                .and_then(|c| c.execute_batch(sql))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Place::Schema { .. } => postgres_batch(&self.url, sql),
        }
    }

    /// The text of the first column of the first row `sql` finds.
    pub fn text(&self, sql: &str) -> Option<String> {
        match &self.place {
            Place::File(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            Place::Schema { .. } => {
                let sql = sql.to_owned();
                with_postgres(&self.url, move |client| async move {
                    client.query_one(&sql, &[]).await.unwrap().get(0)
                })
            }
        }
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        match &self.place {
            Place::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Place::Schema { admin_url, schema } => {
                postgres_batch(
                    admin_url,
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                );
            }
        }
    }
}
