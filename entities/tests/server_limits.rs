//! The `sync-server` binary against slow, idle, malformed and greedy clients over a real
//! socket: timeouts, the connection cap, JSON from hyper's own answers, and bounded memory.
//! Traffic goes to 127.0.0.1 only; every test is bounded in count and time.

mod common;

use common::{Running, address, answer};
use serde_json::{Value as Json, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

struct Process {
    server: Running,
    addr: String,
    path: std::path::PathBuf,
}

impl Process {
    /// The server on a fresh SQLite file, with `args` on top of the defaults.
    fn start(name: &str, args: &[&str]) -> Process {
        let path = std::env::temp_dir().join(format!(
            "server-limits-{name}-{}.sqlite",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let database = format!("sqlite://{}", path.display());
        let (server, url) = common::server_with(&database, args, "error");
        Process {
            server,
            addr: address(&url),
            path,
        }
    }

    fn connect(&self) -> TcpStream {
        TcpStream::connect(&self.addr).unwrap()
    }

    /// The process's peak resident memory, in MiB.
    fn peak_mib(&self) -> u64 {
        self.server.peak_mib()
    }

    /// One request over a fresh connection: (status, JSON body or null).
    fn http(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Json) {
        common::http(&self.addr, method, path, token, body)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.server.stop();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.path.display()));
        }
    }
}

/// Whether the server closed `stream` within `within` (reads end, or the connection resets).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn hypers_own_error_answers_are_json_too() {
    let server = Process::start("hyper-errors", &[]);
    let mut garbage = server.connect();
    garbage.write_all(b"NOT A REQUEST\r\n\r\n").unwrap();
    let (st, b) = answer(&mut garbage);
    assert_eq!((st, b["error"].as_str()), (400, Some("bad_request")), "{b}");
    let mut huge = server.connect();
    let header = format!(
        "GET /api/health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let _ = huge.write_all(header.as_bytes());
    let (st, b) = answer(&mut huge);
    assert_eq!((st, b["error"].as_str()), (431, Some("too_large")), "{b}");
    let (st, b) = server.http("GET", "/nowhere", None, "");
    assert_eq!((st, b["error"].as_str()), (404, Some("not_found")));
}

#[test]
fn unfinished_headers_and_idle_connections_are_closed_after_the_header_timeout() {
    let server = Process::start("header-timeout", &["--header-timeout-secs", "1"]);
    let mut slow = server.connect();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(4)));
    // A kept-alive connection that sends nothing more.
    let mut idle = server.connect();
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 16];
    idle.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    assert!(closed_within(&mut idle, Duration::from_secs(4)));
}

#[test]
fn a_body_sent_too_slowly_is_answered_408() {
    let server = Process::start("body-timeout", &["--body-timeout-secs", "1"]);
    let mut slow = server.connect();
    slow.write_all(
        b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
    )
    .unwrap();
    let started = Instant::now();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 12];
    slow.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 408");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = Process::start(
        "connection-cap",
        &["--max-connections", "2", "--header-timeout-secs", "30"],
    );
    let held: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = server.connect();
    third
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(
        third.read(&mut buf).is_err(),
        "not served while two connections are open"
    );
    drop(held);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (st, health) = answer(&mut third);
    assert_eq!(st, 200, "{health}");
}

#[test]
fn health_answers_at_once_under_3000_idle_connections() {
    let server = Process::start("idle-flood", &[]);
    let idle: Vec<TcpStream> = (0..3000)
        .map(|_| {
            let mut s = server.connect();
            let _ = s.write_all(b"GET /api/health HTTP/1.1\r\n");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let (st, _) = server.http("GET", "/api/health", None, "");
        assert_eq!(st, 200);
        worst = worst.max(t.elapsed());
    }
    eprintln!(
        "health latency under {} idle connections: worst of 5 {} ms",
        idle.len(),
        worst.as_millis()
    );
    assert!(worst < Duration::from_secs(1), "{worst:?}");
}

#[test]
fn two_hundred_registrations_at_once_keep_memory_bounded() {
    let server = Process::start("register-burst", &["--max-registrations", "1000"]);
    let server = std::sync::Arc::new(server);
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let s = server.clone();
            std::thread::spawn(move || {
                let body =
                    json!({"email": format!("burst{i}@example.org"), "password": "long enough"});
                s.http("POST", "/api/auth/register", None, &body.to_string())
                    .0
            })
        })
        .collect();
    let answers: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let created = answers.iter().filter(|a| **a == 201).count();
    let busy = answers.iter().filter(|a| **a == 503).count();
    let peak = server.peak_mib();
    eprintln!(
        "200 registrations at once: {created} created, {busy} busy (503); peak memory {peak} MiB"
    );
    assert_eq!(created + busy, 200, "{answers:?}");
    assert!(created > 0);
    // Without the bound, 200 at once took 3.3 GB. With it, two hashes run at a time; the
    // allocator keeps some freed 19 MiB blocks, so the peak sits near 400 MiB in a debug build.
    assert!(peak < 800, "peak memory {peak} MiB");
}

/// The page-size case at full scale: 30 records of 15 MiB (450 MB), pulled. Slow in a debug
/// build and writes 450 MB to the temporary directory: run with `--ignored`.
#[test]
#[ignore]
fn pulling_450_mb_of_records_holds_one_record_at_a_time() {
    let server = Process::start(
        "pull-450mb",
        &[
            "--max-value-bytes",
            "16000000",
            "--max-body-bytes",
            "17000000",
        ],
    );
    let (st, session) = server.http(
        "POST",
        "/api/auth/register",
        None,
        &json!({"email": "big@example.org", "password": "long enough"}).to_string(),
    );
    assert_eq!(st, 201);
    let token = session["token"].as_str().unwrap();
    let device = uuid::Uuid::now_v7().to_string();
    let big = "x".repeat(15 * 1024 * 1024);
    for i in 0..30 {
        let rid = uuid::Uuid::now_v7().to_string();
        let at = "2026-11-28T07:49:06.123Z";
        let body = json!({"device_id": device, "schema_version": 1, "changes": {"settings_profiles": [
            {"remote_id": rid, "updated_at": at, "deleted_at": null, "name": format!("{i}{big}"),
             "is_default": false, "created_at": at, "tmdb_catalog_config": null}]}});
        let (st, r) = server.http("POST", "/api/sync/push", Some(token), &body.to_string());
        assert_eq!(st, 200);
        assert_eq!(
            r["results"]["settings_profiles"][0]["status"], "applied",
            "{r}"
        );
    }
    let before = server.peak_mib();
    let (mut cursor, mut pages, mut rows) = (String::new(), 0, 0);
    loop {
        let path = if cursor.is_empty() {
            "/api/sync/pull?limit=1000".to_owned()
        } else {
            format!("/api/sync/pull?limit=1000&since={cursor}")
        };
        let (st, page) = server.http("GET", &path, Some(token), "");
        assert_eq!(st, 200);
        pages += 1;
        rows += page["changes"]["settings_profiles"]
            .as_array()
            .unwrap()
            .len();
        cursor = page["cursor"].as_str().unwrap().to_owned();
        if page["has_more"] != true {
            break;
        }
    }
    let peak = server.peak_mib();
    eprintln!(
        "450 MB pulled in {pages} pages ({rows} rows); peak memory {peak} MiB (after the pushes: {before} MiB)"
    );
    assert_eq!(rows, 30);
    // Without the page cut, one such pull took 1 GB.
    assert!(peak < 600, "peak memory {peak} MiB");
}
