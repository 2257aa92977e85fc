//! What the tests that run `sync-server` and `sync-client` as processes share: starting a
//! process and reading its output, a server on a database, the client's commands, a fresh
//! directory.

// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

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

    /// The process, logging at `level` (`RUST_LOG`).
    pub fn spawn_logging(command: &mut Command, level: &str) -> Running {
        let mut child = command
            .env("RUST_LOG", level)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
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

/// A `sync-server` on `database` (a `sqlite://` or `postgres://` URL) and its base URL.
pub fn server(database: &str) -> (Running, String) {
    server_with(database, &[], "warn")
}

/// A `sync-server` on `database` with `args` on top of the defaults, logging at `level`, and
/// its base URL.
pub fn server_with(database: &str, args: &[&str], level: &str) -> (Running, String) {
    let server = Running::spawn_logging(
        Command::new(env!("CARGO_BIN_EXE_sync-server"))
            .args(["--listen", "127.0.0.1:0", "--database", database])
            .args(args),
        level,
    );
    let line = server.wait_for("listening line", |l| l.starts_with("listening on "));
    let url = line.trim().trim_start_matches("listening on ").to_owned();
    (server, url)
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
