//! `cargo xtask bench`: the sync's speed over real loopback HTTP, as ratios within one run.
//! Numbers are printed and written to docs/bench.md, never asserted.

mod chart;
mod flood;
mod requests;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sync_runtime::client::{self, Activity, Limits, Transport};
use sync_runtime::server::ServerConfig;
use sync_runtime::{Store, Timestamp};
use tests::device::LiveServer;
use tests::server::Backend;

/// The workloads `--only` can pick; the bound always runs, since the others are ratios to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    FirstSync,
    Upload,
    Latency,
    WritePath,
    Load,
    Memory,
    Live,
    /// One account's history in 1,000-row requests over plain HTTP, each request timed.
    Requests,
    /// Cost per row by rows in the account and by devices at once: the chart.
    Growth,
    /// Many devices pushing one row at a time.
    SmallPushes,
    /// One account's concurrent maximum-size pushes: the server's memory, and another
    /// account's waits meanwhile.
    Flood,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let v = self.to_possible_value().ok_or(std::fmt::Error)?;
        f.write_str(v.get_name())
    }
}

struct Sizes {
    rows: usize,
    runs: usize,
    latency_samples: usize,
    devices: usize,
    /// Edits timed from device to device with services running; held pulls kept idle.
    live_edits: usize,
    idle_pulls: usize,
    /// Rows of the account of the timed 1,000-row requests.
    request_rows: usize,
    /// Points of the growth curve: rows in the account, and devices pushing at once.
    growth_rows: Vec<usize>,
    growth_devices: Vec<usize>,
    /// Devices pushing one row at a time, and for how long.
    small_devices: usize,
    small_for: Duration,
    /// Concurrent maximum-size pushes of one account.
    flood_pushes: usize,
}

/// What a run measured: the page of docs/bench.md and the growth chart (SVG).
pub struct Report {
    pub markdown: String,
    pub chart: Option<String>,
}

/// The file the growth chart is written to, beside docs/bench.md.
pub const CHART_FILE: &str = "bench-growth.svg";

/// Median, min and max of samples (seconds).
#[derive(Clone, Copy)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.total_cmp(b));
    Stat {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "bench-{}-{name}-{}.sqlite",
        std::process::id(),
        sync_runtime::server::db::new_id()
    ));
    let _ = std::fs::remove_file(&p);
    p
}

fn remove(p: &Path) {
    for suffix in ["", "-wal", "-shm", "-sync-token"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
}

/// A device database holding one profile and `rows` dirty watch_history rows with realistic values.
fn device_with_history(path: &Path, rows: usize) -> Store {
    let mut store = Store::open(path, entities::app()).unwrap();
    let mut profile = entities::Profile {
        id: None,
        user_id: String::new(),
        name: "Alice".into(),
        avatar: "A".into(),
        avatar_type: None,
        avatar_style: None,
        is_default: Some(true),
        settings_profile_id: None,
        created_at: Some(Timestamp::now()),
        updated_at: Timestamp::now(),
    };
    let p = store.insert(&mut profile).unwrap();
    insert_history(store.connection(), p, rows, true);
    store
}

/// `rows` watch_history rows in one transaction with one prepared statement: dirty, each with
/// its `remote_id`, when `synced` (rows waiting for upload); as a plain table's rows otherwise
/// (no `remote_id`, not dirty: the bound).
fn insert_history(conn: &rusqlite::Connection, profile: i64, rows: usize, synced: bool) {
    let tx = conn.unchecked_transaction().unwrap();
    let mut stmt = tx
        .prepare(
            "INSERT INTO watch_history (profile_id, meta_id, meta_type, season, episode, episode_id, title, poster, duration, position, is_watched, watched_at, last_stream, updated_at, remote_id, dirty) \
             VALUES (?1, ?2, 'series', ?3, ?4, ?5, ?6, ?7, 3480000, ?8, ?9, ?10, ?11, ?10, ?12, ?13)",
        )
        .unwrap();
    let stamp = Timestamp::now().to_wire();
    for i in 0..rows {
        let meta = format!("tt{:07}", i / 100);
        let (season, episode) = ((i % 100 / 20) as i64, (i % 20) as i64);
        let episode_id = format!("{meta}:{season}:{episode}");
        let title = format!("Series {} — episode {episode}", i / 100);
        let poster = format!("https://images.example/{meta}/poster.jpg");
        let stream = format!(
            r#"{{"url":"magnet:?xt=urn:btih:{i:040}","title":"1080p WEB-DL","size":{}}}"#,
            1_500_000_000 + i
        );
        let position = (i * 7919 % 3_480_000) as i64;
        stmt.execute(rusqlite::params![
            profile,
            meta,
            season,
            episode,
            episode_id,
            title,
            poster,
            position,
            i % 3 == 0,
            stamp,
            stream,
            synced.then(sync_runtime::server::db::new_id),
            synced,
        ])
        .unwrap();
    }
    drop(stmt);
    tx.commit().unwrap();
}

/// A server in the bench process. Its hundreds of accounts all sign up from this one address,
/// past the registration cap a server has by default against sign-up floods.
async fn bench_server(backend: Backend, name: &str) -> Option<LiveServer> {
    let config = ServerConfig {
        max_registrations: 100_000,
        ..ServerConfig::default()
    };
    LiveServer::start_with(backend, name, config).await
}

fn quiet() -> impl FnMut(Activity) + Send {
    |_| {}
}

async fn connect(store: &mut Store, url: &str, email: &str, register: bool) {
    let remote = client::Remote::new(url).unwrap();
    let session = if register {
        remote.sign_in(email, "bench password", true).await.unwrap()
    } else {
        remote
            .sign_in(email, "bench password", false)
            .await
            .unwrap()
    };
    store
        .save_session(url, &session.user_id, &session.token)
        .unwrap();
}

/// The yardstick: plain SQLite inserting the rows, natural-key index present.
fn bound(rows: usize) -> f64 {
    let path = temp("bound");
    let store = Store::open(&path, entities::app()).unwrap();
    store
        .connection()
        .execute_batch("INSERT INTO profiles (user_id, name, avatar) VALUES ('u', 'P', 'a')")
        .unwrap();
    let t = Instant::now();
    insert_history(store.connection(), 1, rows, false);
    let s = t.elapsed().as_secs_f64();
    drop(store);
    remove(&path);
    s
}

/// Uploads `rows` watched episodes from a new device into the new account `email`; seconds.
async fn upload_once(url: &str, email: &str, rows: usize) -> Result<f64, String> {
    let path = temp("upload");
    let mut d = device_with_history(&path, rows);
    connect(&mut d, url, email, true).await;
    let t = Instant::now();
    let r = client::push_pending(&mut d, Limits::default())
        .await
        .map_err(|e| e.to_string())?;
    let seconds = t.elapsed().as_secs_f64();
    if r.pushed != rows + 1 {
        return Err(format!("pushed {} rows of {}", r.pushed, rows + 1));
    }
    drop(d);
    remove(&path);
    Ok(seconds)
}

/// Pulls the account `email` (one profile and `rows` rows) into a fresh device; seconds.
async fn first_sync_once(url: &str, email: &str, rows: usize) -> Result<f64, String> {
    let path = temp("first");
    let mut d = Store::open(&path, entities::app()).unwrap();
    connect(&mut d, url, email, false).await;
    let t = Instant::now();
    let r = client::sync_once(&mut d, &mut quiet())
        .await
        .map_err(|e| e.to_string())?;
    let seconds = t.elapsed().as_secs_f64();
    if r.pulled != rows + 1 {
        return Err(format!("pulled {} rows of {}", r.pulled, rows + 1));
    }
    drop(d);
    remove(&path);
    Ok(seconds)
}

/// `devices` devices of as many new accounts pushing `rows` rows each, all at once; seconds.
async fn devices_at_once(url: &str, tag: &str, devices: usize, rows: usize) -> Result<f64, String> {
    let mut stores = Vec::new();
    for d in 0..devices {
        let path = temp("load");
        let mut s = device_with_history(&path, rows);
        connect(&mut s, url, &format!("{tag}{d}@bench.example"), true).await;
        stores.push((path, s));
    }
    let t = Instant::now();
    let tasks: Vec<_> = stores
        .into_iter()
        .map(|(path, mut s)| {
            tokio::spawn(async move {
                let r = client::push_pending(&mut s, Limits::default()).await;
                drop(s);
                remove(&path);
                r.map(|r| r.pushed).map_err(|e| e.to_string())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(t.elapsed().as_secs_f64())
}

fn peak_rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn run(quick: bool, million: bool, only: &[Workload]) -> Result<Report, String> {
    let sizes = if quick {
        Sizes {
            rows: 10_000,
            runs: 3,
            latency_samples: 50,
            devices: 10,
            live_edits: 30,
            idle_pulls: 500,
            request_rows: 10_000,
            growth_rows: vec![1_000, 10_000],
            growth_devices: vec![1, 10],
            small_devices: 20,
            small_for: Duration::from_secs(2),
            flood_pushes: 10,
        }
    } else {
        let mut growth_rows = vec![10_000, 100_000];
        if million {
            growth_rows.push(1_000_000);
        }
        Sizes {
            rows: 100_000,
            runs: 5,
            latency_samples: 300,
            devices: 50,
            live_edits: 200,
            idle_pulls: 10_000,
            request_rows: 100_000,
            growth_rows,
            growth_devices: vec![1, 10, 50, 200],
            small_devices: 200,
            small_for: Duration::from_secs(5),
            flood_pushes: 100,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_all(&sizes, quick, only))
}

async fn run_all(z: &Sizes, quick: bool, only: &[Workload]) -> Result<Report, String> {
    let want = |w: Workload| only.is_empty() || only.contains(&w);
    let n = z.rows;
    let mut table: Vec<(String, String, Stat, String)> = Vec::new();
    let fmt_s = |s: f64| format!("{s:.3} s");
    let fmt_ms = |s: f64| format!("{:.3} ms", s * 1000.0);

    eprintln!("bound: {n} rows into plain SQLite");
    let bound_stat = stat((0..z.runs).map(|_| bound(n)).collect());
    let b = bound_stat.median;
    table.push((
        format!("bound: insert {n} watch_history rows, one transaction"),
        "seconds".into(),
        bound_stat,
        "yardstick".into(),
    ));

    let srv = bench_server(Backend::Sqlite, "bench")
        .await
        .ok_or("no server")?;
    // The account holding the history, uploaded once, for the device process's memory.
    if want(Workload::Memory) {
        upload_once(&srv.url, "history@bench.example", n).await?;
    }

    // The first sync and the upload on each backend, PostgreSQL beside the embedded SQLite.
    let mut on_sqlite: Option<(f64, f64)> = None;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if !want(Workload::FirstSync) && !want(Workload::Upload) {
            break;
        }
        let Some(server) = bench_server(backend, "bench_transfer").await else {
            eprintln!("first sync and upload on {backend:?}: skipped (set SYNC_TEST_POSTGRES_URL)");
            continue;
        };
        let (mut first, mut up) = (Vec::new(), Vec::new());
        if want(Workload::FirstSync) {
            eprintln!("first sync from {backend:?}: {n} rows pulled into a fresh device");
            upload_once(&server.url, "history@bench.example", n).await?;
            for _ in 0..z.runs {
                first.push(first_sync_once(&server.url, "history@bench.example", n).await?);
            }
        }
        if want(Workload::Upload) {
            eprintln!("upload to {backend:?}: {n} dirty rows pushed to an empty account");
            for run in 0..z.runs {
                up.push(upload_once(&server.url, &format!("upload{run}@bench.example"), n).await?);
            }
        }
        let (first, up) = (
            (!first.is_empty()).then(|| stat(first)),
            (!up.is_empty()).then(|| stat(up)),
        );
        let median = |s: &Option<Stat>| s.as_ref().map_or(f64::NAN, |s| s.median);
        let versus = |i: usize, s: &Option<Stat>, target: &str| match (backend, on_sqlite) {
            (Backend::Postgres, Some(sq)) => (
                format!(
                    "; {:.2}x the same on SQLite",
                    median(s) / if i == 0 { sq.0 } else { sq.1 }
                ),
                "within 1.5x of SQLite".to_owned(),
            ),
            _ => (String::new(), target.to_owned()),
        };
        let on = if backend == Backend::Sqlite {
            String::new()
        } else {
            format!(", {backend:?}")
        };
        if let Some(s) = &first {
            let (vs, target) = versus(0, &first, "within 2x");
            let ratio = s.median / b;
            table.push((
                format!("first sync: {n} rows pulled into a fresh device{on}"),
                format!("seconds; {ratio:.2}x the bound{vs}"),
                *s,
                target,
            ));
        }
        if let Some(s) = &up {
            let (vs, target) = versus(1, &up, "within 2.5x");
            let ratio = s.median / b;
            table.push((
                format!("upload: {n} dirty rows pushed to an empty account{on}"),
                format!("seconds; {ratio:.2}x the bound{vs}"),
                *s,
                target,
            ));
        }
        if backend == Backend::Sqlite {
            on_sqlite = Some((median(&first), median(&up)));
        }
    }

    if want(Workload::Latency) || want(Workload::WritePath) {
        eprintln!("latency: a sync with nothing to do, and one edit reaching another device");
        let (pa, pb) = (temp("a"), temp("b"));
        let (mut a, mut bdev) = (
            Store::open(&pa, entities::app()).unwrap(),
            Store::open(&pb, entities::app()).unwrap(),
        );
        connect(&mut a, &srv.url, "latency@bench.example", true).await;
        connect(&mut bdev, &srv.url, "latency@bench.example", false).await;
        let mut list = entities::List {
            id: None,
            profile_id: 0,
            name: "L".into(),
            is_default: None,
            created_at: None,
            updated_at: Timestamp::now(),
        };
        let mut prof = entities::Profile {
            id: None,
            user_id: String::new(),
            name: "P".into(),
            avatar: "a".into(),
            avatar_type: None,
            avatar_style: None,
            is_default: None,
            settings_profile_id: None,
            created_at: None,
            updated_at: Timestamp::now(),
        };
        // Each device keeps its remote (and its kept-alive connection), as an app's service does.
        let (mut ra, mut rb): (Option<client::Remote>, Option<client::Remote>) = (None, None);
        list.profile_id = a.insert(&mut prof).unwrap();
        a.insert(&mut list).unwrap();
        client::sync_using(&mut a, &mut ra, Limits::default(), &mut quiet())
            .await
            .map_err(|e| e.to_string())?;
        client::sync_using(&mut bdev, &mut rb, Limits::default(), &mut quiet())
            .await
            .map_err(|e| e.to_string())?;
        if want(Workload::Latency) {
            let mut idle = Vec::new();
            for _ in 0..z.latency_samples {
                let t = Instant::now();
                client::sync_using(&mut a, &mut ra, Limits::default(), &mut quiet())
                    .await
                    .map_err(|e| e.to_string())?;
                idle.push(t.elapsed().as_secs_f64());
            }
            table.push((
                "sync with nothing to do".into(),
                "latency".into(),
                stat(idle),
                "under 1 ms".into(),
            ));
            let mut edit = Vec::new();
            for i in 0..z.latency_samples {
                list.name = format!("L{i}");
                let t = Instant::now();
                a.update(&list).unwrap();
                client::sync_using(&mut a, &mut ra, Limits::default(), &mut quiet())
                    .await
                    .map_err(|e| e.to_string())?;
                let r = client::sync_using(&mut bdev, &mut rb, Limits::default(), &mut quiet())
                    .await
                    .map_err(|e| e.to_string())?;
                edit.push(t.elapsed().as_secs_f64());
                assert_eq!(r.pulled, 1);
            }
            table.push((
                "one edit reaching another device (push on A, pull on B)".into(),
                "latency".into(),
                stat(edit),
                "under 5 ms".into(),
            ));
        }

        if want(Workload::WritePath) {
            eprintln!("local write path against a plain UPDATE");
            let writes = z.latency_samples * 10;
            let mut ratios = Vec::new();
            for _ in 0..z.runs {
                let t = Instant::now();
                for i in 0..writes {
                    list.name = format!("W{i}");
                    a.update(&list).unwrap();
                }
                let framework = t.elapsed().as_secs_f64();
                let id = list.id.unwrap();
                let t = Instant::now();
                for i in 0..writes {
                    a.connection()
                        .execute(
                            "UPDATE lists SET name = ?1 WHERE id = ?2",
                            rusqlite::params![format!("W{i}"), id],
                        )
                        .unwrap();
                }
                let plain = t.elapsed().as_secs_f64();
                ratios.push(framework / plain);
            }
            let s = stat(ratios);
            table.push((
        format!(
            "local write through the write path vs a plain UPDATE ({writes} autocommit writes)"
        ),
        "ratio".into(),
        s,
        "under 1.2x".into(),
    ));
        }
        drop((a, bdev));
        remove(&pa);
        remove(&pb);
    }

    for backend in [Backend::Sqlite, Backend::Postgres] {
        if !want(Workload::Load) {
            break;
        }
        let Some(srv) = bench_server(backend, "bench_load").await else {
            eprintln!("load on {backend:?}: skipped (set SYNC_TEST_POSTGRES_URL)");
            continue;
        };
        eprintln!(
            "load on {backend:?}: {} devices of {} users pushing 1000-row batches",
            z.devices, z.devices
        );
        let batches = 2;
        // One device alone first, on an account of its own; then all `devices` at once.
        let mut stores = Vec::new();
        for d in 0..=z.devices {
            let path = temp("load");
            let mut s = device_with_history(&path, 1000 * batches);
            connect(
                &mut s,
                &srv.url,
                &format!("load{d}-{backend:?}@bench.example"),
                true,
            )
            .await;
            stores.push((path, s));
        }
        let (path0, mut alone) = stores.pop().unwrap();
        let t = Instant::now();
        let r = client::push_pending(&mut alone, Limits::default())
            .await
            .map_err(|e| e.to_string())?;
        let alone_rate = r.pushed as f64 / t.elapsed().as_secs_f64();
        drop(alone);
        remove(&path0);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (path, mut s) in stores {
            tasks.push(tokio::spawn(async move {
                let r = client::push_pending(&mut s, Limits::default()).await;
                drop(s);
                remove(&path);
                r.map(|r| r.pushed).map_err(|e| e.to_string())
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.map_err(|e| e.to_string())??;
        }
        let rate = total as f64 / t.elapsed().as_secs_f64();
        let s = Stat {
            median: rate / alone_rate,
            min: rate / alone_rate,
            max: rate / alone_rate,
        };
        table.push((
            format!(
                "{} devices of {} users pushing 1000-row batches at once, {backend:?}",
                z.devices, z.devices
            ),
            format!("{rate:.0} rows/s, ratio to one device alone ({alone_rate:.0} rows/s)"),
            s,
            "at least 0.8x".into(),
        ));
    }

    if want(Workload::Memory) {
        eprintln!("peak memory of a device process during the first sync");
        let client_bin = std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("sync-client");
        let rss = if client_bin.exists() {
            let db = temp("rss");
            let mut child = std::process::Command::new(&client_bin)
                .arg("--db")
                .arg(&db)
                .args([
                    "connect",
                    &srv.url,
                    "--email",
                    "history@bench.example",
                    "--password",
                    "bench password",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            let pid = child.id();
            let mut peak = 0;
            loop {
                if let Some(kb) = peak_rss_of(pid) {
                    peak = peak.max(kb);
                }
                if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                    if !status.success() {
                        return Err(format!(
                            "the device process failed its first sync: {status}"
                        ));
                    }
                    let mut out = String::new();
                    if let Some(mut stdout) = child.stdout.take() {
                        use std::io::Read;
                        let _ = stdout.read_to_string(&mut out);
                    }
                    if !out.contains(&format!("pulled {} rows", n + 1)) {
                        return Err(format!("the device process did not pull every row: {out}"));
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            remove(&db);
            Some(peak as f64 / 1024.0)
        } else {
            eprintln!(
                "peak memory: skipped, {} is not built",
                client_bin.display()
            );
            None
        };
        if let Some(mib) = rss {
            table.push((
                format!("peak RSS of the device process during a {n}-row first sync"),
                "MiB".into(),
                Stat {
                    median: mib,
                    min: mib,
                    max: mib,
                },
                "under 64 MiB".into(),
            ));
        }
    }

    if want(Workload::Live) {
        live(z, &mut table).await?;
    }
    let mut over_http: Vec<(Backend, f64)> = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if !want(Workload::Requests) {
            break;
        }
        let Some(server) = bench_server(backend, "bench_requests").await else {
            eprintln!("requests on {backend:?}: skipped (set SYNC_TEST_POSTGRES_URL)");
            continue;
        };
        let rows = z.request_rows;
        eprintln!("requests on {backend:?}: {rows} rows of one account in 1000-row requests");
        let times =
            requests::timed_requests(&server.url, "requests@bench.example", rows, 1000).await?;
        let total: f64 = times.iter().sum();
        // Medians of three requests at each end, so that one scheduling hiccup on the shared
        // machine does not make the ratio.
        let ends = times.len().min(3);
        let first = stat(times[..ends].to_vec()).median;
        let last = stat(times[times.len() - ends..].to_vec()).median;
        let single = |v: f64| Stat {
            median: v,
            min: v,
            max: v,
        };
        table.push((
            format!(
                "one account: {rows} rows pushed in 1000-row requests over plain HTTP, {backend:?}"
            ),
            format!("seconds; {:.0} rows/s", rows as f64 / total),
            stat(vec![total]),
            if backend == Backend::Postgres {
                "within 1.5x of SQLite".into()
            } else {
                "yardstick of PostgreSQL".into()
            },
        ));
        table.push((
            format!("last 1000-row request vs the first, {rows} rows, {backend:?}"),
            format!(
                "ratio; {:.1} ms vs {:.1} ms (medians of the last and the first three)",
                last * 1000.0,
                first * 1000.0
            ),
            single(last / first),
            "within 1.3x".into(),
        ));
        over_http.push((backend, total));
    }
    if let [(Backend::Sqlite, sqlite), (Backend::Postgres, pg)] = over_http[..] {
        let r = pg / sqlite;
        table.push((
            format!(
                "that upload over plain HTTP: PostgreSQL vs embedded SQLite ({} rows)",
                z.request_rows
            ),
            "ratio".into(),
            Stat {
                median: r,
                min: r,
                max: r,
            },
            "within 1.5x".into(),
        ));
    }

    let mut by_rows: Vec<chart::Series> = Vec::new();
    let mut by_devices: Vec<chart::Series> = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if !want(Workload::Growth) {
            break;
        }
        let Some(server) = bench_server(backend, "bench_growth").await else {
            eprintln!("growth on {backend:?}: skipped (set SYNC_TEST_POSTGRES_URL)");
            continue;
        };
        let (mut upload, mut first) = (Vec::new(), Vec::new());
        for &rows in &z.growth_rows {
            eprintln!("growth on {backend:?}: upload and first sync of {rows} rows");
            let email = format!("growth{rows}@bench.example");
            let up = upload_once(&server.url, &email, rows).await?;
            let down = first_sync_once(&server.url, &email, rows).await?;
            upload.push((rows as f64, up * 1e6 / rows as f64));
            first.push((rows as f64, down * 1e6 / rows as f64));
        }
        let mut devices = Vec::new();
        for &d in &z.growth_devices {
            eprintln!("growth on {backend:?}: {d} devices pushing 1000 rows each at once");
            let seconds = devices_at_once(&server.url, &format!("growth-{d}-"), d, 1000).await?;
            devices.push((d as f64, seconds * 1e6 / (d * 1001) as f64));
        }
        for (what, points) in [("upload", &upload), ("first sync", &first)] {
            let (Some(small), Some(large)) = (points.first(), points.last()) else {
                continue;
            };
            let r = large.1 / small.1;
            let curve: Vec<String> = points.iter().map(|p| format!("{:.1}", p.1)).collect();
            table.push((
                format!(
                    "{what}: cost per row at {} rows vs at {} rows, {backend:?}",
                    large.0, small.0
                ),
                format!("ratio; µs per row: {}", curve.join(" / ")),
                Stat {
                    median: r,
                    min: r,
                    max: r,
                },
                "within 1.3x".into(),
            ));
        }
        if let (Some(one), Some(most)) = (devices.first(), devices.last()) {
            let r = most.1 / one.1;
            let curve: Vec<String> = devices.iter().map(|p| format!("{:.1}", p.1)).collect();
            table.push((
                format!(
                    "devices pushing 1000 rows each at once: cost per row with {} vs 1, {backend:?}",
                    most.0
                ),
                format!("ratio; µs per row: {}", curve.join(" / ")),
                Stat {
                    median: r,
                    min: r,
                    max: r,
                },
                "measured".into(),
            ));
        }
        by_rows.push(chart::Series {
            label: format!("upload, {backend:?}"),
            points: upload,
        });
        by_rows.push(chart::Series {
            label: format!("first sync, {backend:?}"),
            points: first,
        });
        by_devices.push(chart::Series {
            label: format!("upload, {backend:?}"),
            points: devices,
        });
    }

    for backend in [Backend::Sqlite, Backend::Postgres] {
        if !want(Workload::SmallPushes) {
            break;
        }
        let Some(server) = bench_server(backend, "bench_small_pushes").await else {
            eprintln!("small pushes on {backend:?}: skipped (set SYNC_TEST_POSTGRES_URL)");
            continue;
        };
        eprintln!(
            "small pushes on {backend:?}: {} devices pushing one row at a time",
            z.small_devices
        );
        let rate = requests::one_row_pushes(
            &server.url,
            &format!("{backend:?}"),
            z.small_devices,
            z.small_for,
        )
        .await?;
        table.push((
            format!(
                "{} devices of their own accounts, each pushing one row at a time, {backend:?}",
                z.small_devices
            ),
            "pushes per second".into(),
            Stat {
                median: rate,
                min: rate,
                max: rate,
            },
            "measured".into(),
        ));
    }

    if want(Workload::Flood) {
        flood(z, &mut table).await?;
    }

    let mut md = String::from("# Benchmarks\n\n");
    md.push_str(&format!(
        "Written by `cargo xtask bench{}` ({} runs each, release build, server in process over loopback HTTP, SQLite unless named). \
         Numbers from a shared 2-core machine: compare ratios within one run.\n\n",
        if quick { " --quick" } else { "" },
        z.runs
    ));
    md.push_str("| workload | measure | median | min | max | target |\n| --- | --- | --- | --- | --- | --- |\n");
    for (name, measure, s, target) in &table {
        let f = |v: f64| {
            if measure.starts_with("seconds") {
                fmt_s(v)
            } else if measure.starts_with("latency") {
                fmt_ms(v)
            } else {
                format!("{v:.2}")
            }
        };
        md.push_str(&format!(
            "| {name} | {measure} | {} | {} | {} | {target} |\n",
            f(s.median),
            f(s.min),
            f(s.max)
        ));
    }
    let chart = (!by_rows.is_empty())
        .then(|| chart::growth_svg(&by_rows, &by_devices))
        .transpose()?;
    if chart.is_some() {
        let rows: Vec<String> = z.growth_rows.iter().map(usize::to_string).collect();
        let devices: Vec<String> = z.growth_devices.iter().map(usize::to_string).collect();
        md.push_str(&format!(
            "\n## Growth\n\nCost per row of the upload and the first sync by rows in the account ({}), \
             and of 1000-row uploads by devices of as many accounts pushing at once ({}), both backends. \
             Flat lines: the cost per row does not grow.\n\n![cost per row by rows and by devices]({CHART_FILE})\n",
            rows.join(", "),
            devices.join(", ")
        ));
        if !quick && !z.growth_rows.contains(&1_000_000) {
            md.push_str(
                "\nThe 1,000,000-row point runs with `cargo xtask bench --million`; this run left it out.\n",
            );
        }
    }
    Ok(Report {
        markdown: md,
        chart,
    })
}

/// Live sync as a user sees it (`bench_live`), on `sync-server` processes.
async fn live(z: &Sizes, table: &mut Vec<(String, String, Stat, String)>) -> Result<(), String> {
    use crate::bench_live::{
        Latencies, ServerProcess, all_waiting, idle_accounts, idle_pulls, propagation,
    };
    let edits = z.live_edits;
    let row = |what: String, l: &Latencies, target: &str| {
        (
            what,
            format!("latency; p99 {:.1} ms", l.p99 * 1000.0),
            Stat {
                median: l.p50,
                min: l.min,
                max: l.max,
            },
            target.to_owned(),
        )
    };
    let target = "p50 under 30 ms, p99 under 200 ms";

    eprintln!("live: {edits} edits from device A to device B, services running, on SQLite");
    let db = temp("live-server");
    let sqlite = format!("sqlite://{}", db.display());
    {
        let server = ServerProcess::start(&sqlite, &[])?;
        let l = propagation(&server.url, &server.url, "live@bench.example", edits).await?;
        table.push(row(
            format!("live: an insert on A readable in B's SQLite, services running ({edits} edits), Sqlite"),
            &l,
            target,
        ));
    }
    remove(&db);

    match tests::server::fresh_database(Backend::Postgres, "bench_live").await {
        None => eprintln!("live on PostgreSQL: skipped (set SYNC_TEST_POSTGRES_URL)"),
        Some((url, _cleanup)) => {
            eprintln!("live: {edits} edits, A and B on two server processes, on PostgreSQL");
            let (one, two) = (
                ServerProcess::start(&url, &[])?,
                ServerProcess::start(&url, &[])?,
            );
            let l = propagation(&one.url, &two.url, "live@bench.example", edits).await?;
            table.push(row(
                format!("live: an insert on A readable in B's SQLite, A and B on two server processes ({edits} edits), Postgres"),
                &l,
                target,
            ));
        }
    }

    let idle = z.idle_pulls;
    eprintln!("live: {idle} idle held pulls on one server process (SQLite)");
    let db = temp("idle-server");
    let database = format!("sqlite://{}", db.display());
    let per_account = 25;
    // The accounts sign up on another process: argon2's memory would stay in the measured one.
    // Its registration limit (100 an hour from one address by default) is raised to let this one
    // address register them all.
    let accounts = {
        let limit = idle.div_ceil(per_account).to_string();
        let signup = ServerProcess::start(&database, &["--max-registrations", &limit])?;
        idle_accounts(&signup.url, idle.div_ceil(per_account)).await?
    };
    {
        // Room for every held pull's connection beside the measuring ones (the default cap is
        // 8192 connections).
        let connections = (idle + 100).to_string();
        let server = ServerProcess::start(
            &database,
            &[
                "--max-wait-seconds",
                "3600",
                "--max-connections",
                &connections,
            ],
        )?;
        let before = server.rss_mib().ok_or("no resident memory")?;
        let held = idle_pulls(&server.url, &accounts, idle, per_account).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !all_waiting(&held) {
            return Err("an idle held pull was answered".into());
        }
        let rss = server.rss_mib().ok_or("no resident memory")?;
        let l = propagation(
            &server.url,
            &server.url,
            "live-idle@bench.example",
            edits / 2,
        )
        .await?;
        if !all_waiting(&held) {
            return Err("another account's edits answered an idle held pull".into());
        }
        table.push((
            format!(
                "server process holding {idle} idle pulls ({} accounts)",
                accounts.len()
            ),
            format!("MiB resident ({before:.1} MiB before they came)"),
            Stat {
                median: rss,
                min: rss,
                max: rss,
            },
            "under 256 MiB".into(),
        ));
        table.push(row(
            format!("live: an insert on A readable in B's SQLite while {idle} pulls are held ({} edits)", edits / 2),
            &l,
            "p50 under 100 ms",
        ));
        drop(held);
    }
    remove(&db);
    Ok(())
}

/// One account's concurrent maximum-size pushes (`bench/flood.rs`), on both backends.
async fn flood(z: &Sizes, table: &mut Vec<(String, String, Stat, String)>) -> Result<(), String> {
    let pushes = z.flood_pushes;
    // The largest body the server takes by default (16 MiB), less room for the envelope.
    let bytes = ServerConfig::default().max_body_bytes / 32 * 31;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let (database, _cleanup) = match backend {
            Backend::Sqlite => {
                let db = temp("flood");
                (format!("sqlite://{}", db.display()), None)
            }
            Backend::Postgres => {
                match tests::server::fresh_database(backend, "bench_flood").await {
                    Some((url, cleanup)) => (url, Some(cleanup)),
                    None => {
                        eprintln!("flood on {backend:?}: skipped (set SYNC_TEST_POSTGRES_URL)");
                        continue;
                    }
                }
            }
        };
        eprintln!(
            "flood on {backend:?}: {pushes} pushes of {} MiB from one account at once",
            bytes >> 20
        );
        let f = flood::one_account_flood(&database, pushes, bytes).await?;
        if let Some(path) = database.strip_prefix("sqlite://") {
            remove(Path::new(path));
        }
        let single = |v: f64| Stat {
            median: v,
            min: v,
            max: v,
        };
        let what = format!(
            "one account's {pushes} concurrent {} MiB pushes, {backend:?}",
            bytes >> 20
        );
        table.push((
            format!("{what}: peak RSS of the server process"),
            format!(
                "MiB ({:.1} MiB before; {:.0} s, {} refused for a while)",
                f.before_mib, f.seconds, f.refused
            ),
            single(f.peak_mib),
            "measured".into(),
        ));
        for (name, samples) in [("push", &f.other_push), ("pull", &f.other_pull)] {
            table.push((
                format!(
                    "{what}: another account's one-row {name} meanwhile ({} samples)",
                    samples.len()
                ),
                format!(
                    "latency; p99 {:.1} ms",
                    flood::quantile(samples, 0.99) * 1000.0
                ),
                Stat {
                    median: flood::quantile(samples, 0.5),
                    min: samples[0],
                    max: samples[samples.len() - 1],
                },
                "measured".into(),
            ));
        }
    }
    Ok(())
}
