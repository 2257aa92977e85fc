//! `cargo xtask bench --only live`: what a user of live sync sees. Two devices run their
//! `SyncService`s (nothing calls sync by hand); an insert on A goes through A's store, and the
//! clock stops when the row is readable in B's SQLite file. On embedded SQLite, and on
//! PostgreSQL with A and B on two server processes; then one server process holding many idle
//! pulls: its resident memory, and the propagation while they wait. The servers are real
//! `sync-server` processes, so their memory is theirs alone.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sync_runtime::Store;
use sync_runtime::client::{self, ServiceOptions, SyncService, Transport};
use sync_runtime::protocol::{headers, paths};
use tokio::io::AsyncWriteExt;

/// Latencies in seconds: p50, p99, min, max.
pub struct Latencies {
    pub p50: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

fn latencies(mut v: Vec<f64>) -> Latencies {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Latencies {
        p50: at(0.50),
        p99: at(0.99),
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// A `sync-server` child process.
pub struct ServerProcess {
    child: Child,
    pub url: String,
}

impl ServerProcess {
    /// Starts `sync-server` (built beside this binary, or the one `SYNC_BENCH_SERVER_BIN` names)
    /// on `database`, with `args` added.
    pub fn start(database: &str, args: &[&str]) -> Result<ServerProcess, String> {
        // Another build's server may be measured against this one's (before and after a fix).
        let bin = match std::env::var_os("SYNC_BENCH_SERVER_BIN") {
            Some(bin) => PathBuf::from(bin),
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .with_file_name("sync-server"),
        };
        if !bin.exists() {
            return Err(format!("{} is not built", bin.display()));
        }
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--database", database])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .map_err(|e| e.to_string())?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("sync-server said {line:?}"))?
            .to_owned();
        Ok(ServerProcess { child, url })
    }

    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "bench-live-{}-{name}-{}.sqlite",
        std::process::id(),
        sync_runtime::server::db::new_id()
    ))
}

fn remove(p: &Path) {
    for suffix in ["", "-wal", "-shm", "-sync-token"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
}

fn profile(name: String) -> entities::Profile {
    entities::Profile {
        id: None,
        user_id: String::new(),
        name,
        avatar: "A".into(),
        avatar_type: None,
        avatar_style: None,
        is_default: None,
        settings_profile_id: None,
        created_at: None,
        updated_at: sync_runtime::Timestamp::now(),
    }
}

/// `edits` inserts on device A (connected to `url_a`), each timed until the row is readable in
/// device B's database (B connected to `url_b`), both devices' services running.
pub async fn propagation(
    url_a: &str,
    url_b: &str,
    email: &str,
    edits: usize,
) -> Result<Latencies, String> {
    let (pa, pb) = (temp("a"), temp("b"));
    let result = propagation_between(&pa, &pb, url_a, url_b, email, edits).await;
    remove(&pa);
    remove(&pb);
    result
}

async fn propagation_between(
    pa: &Path,
    pb: &Path,
    url_a: &str,
    url_b: &str,
    email: &str,
    edits: usize,
) -> Result<Latencies, String> {
    let e = |e: client::SyncError| e.to_string();
    let mut a = Store::open(pa, entities::app()).map_err(|e| e.to_string())?;
    let mut b = Store::open(pb, entities::app()).map_err(|e| e.to_string())?;
    let password = "bench password";
    let none = &mut |_| {};
    client::connect(
        &mut a,
        url_a,
        email,
        password,
        true,
        Default::default(),
        none,
    )
    .await
    .map_err(e)?;
    client::connect(
        &mut b,
        url_b,
        email,
        password,
        false,
        Default::default(),
        none,
    )
    .await
    .map_err(e)?;
    let options = ServiceOptions {
        // Only the live path may bring an edit within the measurement.
        period: Duration::from_secs(3600),
        ..ServiceOptions::default()
    };
    let service_a = SyncService::start(a.reopen().map_err(|e| e.to_string())?, options.clone());
    a.set_write_hook(service_a.write_hook());
    let service_b = SyncService::start(b.reopen().map_err(|e| e.to_string())?, options);
    let mut changes = service_b.changes();
    let mut status = service_b.status();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.live))
        .await
        .map_err(|_| "device B did not go live")?
        .map_err(|e| e.to_string())?;
    // The app's own connection to B's database, as a screen reading it would have.
    let reader = rusqlite::Connection::open(pb).map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(edits);
    for i in 0..edits {
        let name = format!("live {i}");
        let started = Instant::now();
        a.insert(&mut profile(name.clone()))
            .map_err(|e| e.to_string())?;
        loop {
            let found: Option<i64> = reader
                .query_row("SELECT id FROM profiles WHERE name = ?1", [&name], |r| {
                    r.get(0)
                })
                .ok();
            if found.is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(format!("edit {i} did not reach device B in 30 s"));
            }
            // Look again when B's service says it changed something, or soon anyway.
            let _ = tokio::time::timeout(Duration::from_millis(2), changes.recv()).await;
        }
        samples.push(started.elapsed().as_secs_f64());
        // A pause, as between a person's edits.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    service_a.stop();
    service_b.stop();
    Ok(latencies(samples))
}

/// Registers `accounts` accounts on `url`; returns each one's token and the cursor of a
/// fresh account (at its sequence, so a pull from it waits).
pub async fn idle_accounts(url: &str, accounts: usize) -> Result<Vec<(String, String)>, String> {
    let remote = client::Remote::new(url).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(accounts);
    for n in 0..accounts {
        let session = remote
            .sign_in(&format!("idle{n}@bench.example"), "bench password", true)
            .await
            .map_err(|e| e.to_string())?;
        let schema = &entities::app().schema;
        let (body, _) = remote
            .pull_head(client::PullRequest {
                token: &session.token,
                device_id: None,
                schema_version: schema.version(),
                since: None,
                limit: 1,
            })
            .await
            .map_err(|e| e.to_string())?;
        let cursor = client::transport::read_page(&remote, schema, body)
            .await
            .map_err(|e| e.to_string())?
            .cursor;
        out.push((session.token, cursor));
    }
    Ok(out)
}

/// `count` pulls held on `url`, `per_account` for each of `accounts`, by bare HTTP/1.1
/// connections (a device's held pull is one such connection). They stay held while the
/// returned connections live.
pub async fn idle_pulls(
    url: &str,
    accounts: &[(String, String)],
    count: usize,
    per_account: usize,
) -> Result<Vec<tokio::net::TcpStream>, String> {
    let addr = url.trim_start_matches("http://").to_owned();
    let mut held = Vec::with_capacity(count);
    for (token, cursor) in accounts {
        let (path, version) = (paths::PULL, headers::SCHEMA_VERSION);
        let request = format!(
            "GET {path}?since={cursor}&wait=3600 HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: Bearer {token}\r\n{version}: 1\r\n\r\n"
        );
        for _ in 0..per_account.min(count - held.len()) {
            let mut conn = tokio::net::TcpStream::connect(&addr)
                .await
                .map_err(|e| format!("connection {}: {e}", held.len()))?;
            conn.write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            held.push(conn);
        }
    }
    Ok(held)
}

/// Whether every connection is still waiting (no answer has arrived on any).
pub fn all_waiting(conns: &[tokio::net::TcpStream]) -> bool {
    let mut buf = [0u8; 1];
    conns.iter().all(
        |c| matches!(c.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
    )
}
