//! `sync-client ui` run as a process: it serves the settings page for a database on a loopback
//! port, connects through the page's API, and the command line then sees the account by email.

mod common;

use common::client;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program args` and returns it with the first line it prints.
fn start(program: &str, args: &[&str]) -> (Process, String) {
    let mut child = Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = Process(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    (process, line.trim().to_owned())
}

/// One HTTP/1.1 request to `addr`; the status and the body.
fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn temp_dir() -> PathBuf {
    common::temp_dir("cli-ui-test")
}

#[test]
fn ui_serves_the_settings_page_and_connects_through_it() {
    let dir = temp_dir();
    let database = format!("sqlite://{}", dir.join("server.sqlite").display());
    let (_server, line) = start(
        env!("CARGO_BIN_EXE_sync-server"),
        &["--listen", "127.0.0.1:0", "--database", &database],
    );
    let server_url = line.strip_prefix("listening on ").unwrap().to_owned();
    let db = dir.join("a.sqlite");
    let db_arg = db.display().to_string();
    let (_ui, line) = start(
        env!("CARGO_BIN_EXE_sync-client"),
        &["--db", &db_arg, "ui", "--listen", "127.0.0.1:0"],
    );
    let page = line.strip_prefix("settings page: ").unwrap();
    let addr = page
        .strip_prefix("http://")
        .and_then(|a| a.strip_suffix("/sync"))
        .unwrap();

    let (status, html) = http(addr, "GET", "/sync", None);
    assert_eq!(status, 200);
    assert!(html.contains("Connect to Cloud"));
    let body = format!(
        r#"{{"remote_url": "{server_url}", "email": "ui@example.org", "password": "ui password", "register": true}}"#
    );
    let (status, answer) = http(addr, "POST", "/api/sync/connect", Some(&body));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""state":"connected""#), "{answer}");

    // The command line, on the same database, names the account by its email.
    let out = client(&db, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("connected to {server_url} as ui@example.org")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ui_listens_on_loopback_only() {
    let dir = temp_dir();
    let out = client(&dir.join("a.sqlite"), &["ui", "--listen", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("loopback"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
