//! What the tests that run `sync-server` and `sync-client` as processes share: starting a
//! process and reading its output, a server on a database, the client's commands, a fresh
//! directory.

// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a process may take to print what a test waits for.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A child process, killed when dropped, with its standard output read line by line.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub fn spawn(command: &mut Command) -> Running {
        let mut child = command
            .env("RUST_LOG", "warn")
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
        Running { child, lines }
    }

    /// The first line of output that satisfies `wanted`, within [`PATIENCE`].
    pub fn wait_for(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no {what} within {PATIENCE:?}; the output was: {seen:#?}"),
            }
        }
    }
}

/// A `sync-server` on `database` (a `sqlite://` or `postgres://` URL) and its base URL.
pub fn server(database: &str) -> (Running, String) {
    let server = Running::spawn(Command::new(env!("CARGO_BIN_EXE_sync-server")).args([
        "--listen",
        "127.0.0.1:0",
        "--database",
        database,
    ]));
    let line = server.wait_for("listening line", |l| l.starts_with("listening on "));
    let url = line.trim().trim_start_matches("listening on ").to_owned();
    (server, url)
}

/// A `sync-server` on a SQLite file in `dir`.
pub fn sqlite_server(dir: &Path) -> (Running, String) {
    server(&format!("sqlite://{}", dir.join("server.sqlite").display()))
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
