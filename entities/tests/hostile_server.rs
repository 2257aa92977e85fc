//! What a hostile or mistaken server cannot make `sync-client` do: send the password or the
//! token on to the host a redirect names, send them over plain http to another machine, or
//! read an answer without end.

mod common;

use common::{client, connect, sqlite_server};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A listener on a loopback port that answers every request with `answer`, on a thread of
/// its own; `written` counts the bytes of answers the client took before it hung up.
struct FakeServer {
    url: String,
    written: Arc<AtomicUsize>,
}

/// What a [`FakeServer`] answers.
#[derive(Clone)]
enum Answer {
    /// `status` with `Location: location` and no body.
    Redirect(u16, String),
    /// 200 with a JSON body that never ends (up to `bytes`, then the connection closes).
    Endless(usize),
}

impl FakeServer {
    fn start(answer: Answer) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let written = Arc::new(AtomicUsize::new(0));
        let counter = written.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (answer, counter) = (answer.clone(), counter.clone());
                std::thread::spawn(move || {
                    read_request(&mut conn);
                    let _ = match answer {
                        Answer::Redirect(status, location) => write!(
                            conn,
                            "HTTP/1.1 {status} Redirect\r\nLocation: {location}\r\n\
                             Content-Length: 0\r\nConnection: close\r\n\r\n"
                        ),
                        Answer::Endless(bytes) => endless(&mut conn, bytes, &counter),
                    };
                });
            }
        });
        FakeServer { url, written }
    }
}

/// Reads a request's head and the body its `Content-Length` declares.
fn read_request(conn: &mut TcpStream) -> Vec<u8> {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                break;
            }
        }
    }
    raw
}

fn endless(conn: &mut TcpStream, bytes: usize, written: &AtomicUsize) -> std::io::Result<()> {
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[",
    )?;
    let chunk = vec![b' '; 1 << 20];
    while written.load(Ordering::Relaxed) < bytes {
        conn.write_all(&chunk)?;
        written.fetch_add(chunk.len(), Ordering::Relaxed);
    }
    Ok(())
}

/// A loopback listener that keeps whatever reaches it: it must stay empty.
struct Collector {
    url: String,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = received.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let request = read_request(&mut conn);
                kept.lock().unwrap().extend_from_slice(b"<connection>");
                kept.lock().unwrap().extend_from_slice(&request);
                let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            }
        });
        Collector { url, received }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// `sync-client` run with `args` on `db`, expected to fail: its output.
fn fails(db: &Path, args: &[&str]) -> String {
    let out = client(db, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "sync-client {args:?} succeeded: {text}"
    );
    text
}

/// `sync-client connect` to `url` on `db`, expected to fail: its output.
fn connect_fails(db: &Path, url: &str) -> String {
    fails(
        db,
        &[
            "connect",
            url,
            "--email",
            "device@example.org",
            "--password",
            "a secret password",
        ],
    )
}

/// A device of a real server whose stored session then names `url` instead (as a server moved
/// or taken over would); the real server is returned to be kept running.
fn session_moved_to(dir: &Path, db: &Path, url: &str) -> common::Running {
    let (server, real) = sqlite_server(dir);
    connect(db, &real, "device@example.org", "a secret password", true);
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute("UPDATE sync_state SET remote_url = ?1", [url])
        .unwrap();
    server
}

/// Before: `sync-client connect` re-sent `{"email", "password"}` to the host in `Location`.
#[test]
fn sign_in_follows_no_redirect() {
    let dir = common::temp_dir("hostile-server-redirect");
    let collector = Collector::start();
    for status in [307, 308, 302] {
        let server = FakeServer::start(Answer::Redirect(
            status,
            format!("{}/api/auth/login", collector.url),
        ));
        let db = dir.join(format!("redirect-{status}.sqlite"));
        let said = connect_fails(&db, &server.url);
        assert!(said.contains("redirect"), "HTTP {status}: {said}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        collector.received(),
        "",
        "nothing reached the redirect's host"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request that carries the token (a sync) follows no redirect either.
#[test]
fn a_sync_follows_no_redirect() {
    let dir = common::temp_dir("hostile-server-sync-redirect");
    let db = dir.join("device.sqlite");
    let collector = Collector::start();
    let hostile = FakeServer::start(Answer::Redirect(
        307,
        format!("{}/api/sync/push", collector.url),
    ));
    let _server = session_moved_to(&dir, &db, &hostile.url);
    // A row to push: the push carries the token first.
    common::ok(&db, &["insert", "profiles", "name=Zoë", "avatar=Z"]);
    let said = fails(&db, &["sync"]);
    assert!(said.contains("redirect"), "{said}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        collector.received(),
        "",
        "nothing reached the redirect's host"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before: the settings page refused a non-loopback `http://` URL, but `sync-client connect`
/// (and `client::connect`) sent the password there.
#[test]
fn plain_http_goes_to_this_machine_only() {
    let dir = common::temp_dir("hostile-server-plain-http");
    let db = dir.join("device.sqlite");
    // 192.0.2.1 is documentation's own address: nothing answers there.
    let said = connect_fails(&db, "http://192.0.2.1:8787");
    assert!(said.contains("must use https://"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before: a 1.5 GiB answer to sign-in took `sync-client` to 1,561 MiB. Now it stops reading
/// at the bound of an answer that is not a page (4 MiB).
#[test]
fn an_endless_answer_to_sign_in_is_refused_at_its_bound() {
    let dir = common::temp_dir("hostile-server-endless");
    let server = FakeServer::start(Answer::Endless(256 << 20));
    let db = dir.join("device.sqlite");
    let said = connect_fails(&db, &server.url);
    assert!(said.contains("an answer over"), "{said}");
    let written = server_mib(&server);
    assert!(written < 32, "the client took {written} MiB");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pulled page is read within its own bound (64 MiB), not without end.
#[test]
fn an_endless_page_is_refused_at_its_bound() {
    let dir = common::temp_dir("hostile-server-endless-page");
    let db = dir.join("device.sqlite");
    let hostile = FakeServer::start(Answer::Endless(256 << 20));
    // Nothing to push: the sync's first request is the pull.
    let _server = session_moved_to(&dir, &db, &hostile.url);
    let said = fails(&db, &["sync"]);
    assert!(said.contains("an answer over"), "{said}");
    let written = server_mib(&hostile);
    assert!(written < 128, "the client took {written} MiB");
    let _ = std::fs::remove_dir_all(&dir);
}

/// MiB of answers the client took from `server` before it hung up.
fn server_mib(server: &FakeServer) -> usize {
    server.written.load(Ordering::Relaxed) >> 20
}
