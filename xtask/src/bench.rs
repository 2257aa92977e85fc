//! `cargo xtask bench`: the sync's speed over real loopback HTTP, as ratios within one run.
//! Numbers are printed and written to docs/bench.md, never asserted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use sync_runtime::client::{self, Activity, Limits};
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
}

/// Median, min and max of samples (seconds).
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
    for suffix in ["", "-wal", "-shm"] {
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

fn quiet() -> impl FnMut(Activity) + Send {
    |_| {}
}

async fn connect(store: &mut Store, url: &str, email: &str, register: bool) {
    let remote = client::Remote::new(url).unwrap();
    let session = if register {
        remote.register(email, "bench password").await.unwrap()
    } else {
        remote.login(email, "bench password").await.unwrap()
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

pub fn run(quick: bool, only: &[Workload]) -> Result<String, String> {
    let sizes = if quick {
        Sizes {
            rows: 10_000,
            runs: 3,
            latency_samples: 50,
            devices: 10,
            live_edits: 30,
            idle_pulls: 500,
        }
    } else {
        Sizes {
            rows: 100_000,
            runs: 5,
            latency_samples: 300,
            devices: 50,
            live_edits: 200,
            idle_pulls: 10_000,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_all(&sizes, quick, only))
}

async fn run_all(z: &Sizes, quick: bool, only: &[Workload]) -> Result<String, String> {
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

    let srv = LiveServer::start(Backend::Sqlite, "bench")
        .await
        .ok_or("no server")?;
    // The account holding the history, uploaded once.
    let seed_path = temp("seed");
    if want(Workload::FirstSync) || want(Workload::Memory) {
        let mut seed = device_with_history(&seed_path, n);
        connect(&mut seed, &srv.url, "history@bench.example", true).await;
        client::push_pending(&mut seed, Limits::default())
            .await
            .map_err(|e| e.to_string())?;
    }
    remove(&seed_path);

    if want(Workload::FirstSync) {
        eprintln!("first sync: {n} rows pulled into a fresh device");
        let mut first = Vec::new();
        for _ in 0..z.runs {
            let path = temp("first");
            let mut d = Store::open(&path, entities::app()).unwrap();
            connect(&mut d, &srv.url, "history@bench.example", false).await;
            let t = Instant::now();
            let r = client::sync_once(&mut d, &mut quiet())
                .await
                .map_err(|e| e.to_string())?;
            first.push(t.elapsed().as_secs_f64());
            assert_eq!(r.pulled, n + 1, "every row pulled");
            drop(d);
            remove(&path);
        }
        let s = stat(first);
        let ratio = s.median / b;
        table.push((
            format!("first sync: {n} rows pulled into a fresh device"),
            format!("seconds; {ratio:.2}x the bound"),
            s,
            "within 2x".into(),
        ));
    }

    if want(Workload::Upload) {
        eprintln!("upload: {n} dirty rows pushed to an empty account");
        let mut up = Vec::new();
        for run in 0..z.runs {
            let path = temp("upload");
            let mut d = device_with_history(&path, n);
            connect(
                &mut d,
                &srv.url,
                &format!("upload{run}@bench.example"),
                true,
            )
            .await;
            let t = Instant::now();
            let r = client::push_pending(&mut d, Limits::default())
                .await
                .map_err(|e| e.to_string())?;
            up.push(t.elapsed().as_secs_f64());
            assert_eq!(r.pushed, n + 1);
            drop(d);
            remove(&path);
        }
        let s = stat(up);
        let ratio = s.median / b;
        table.push((
            format!("upload: {n} dirty rows pushed to an empty account"),
            format!("seconds; {ratio:.2}x the bound"),
            s,
            "within 2.5x".into(),
        ));
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
        let (mut ra, mut rb) = (None, None);
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
        let Some(srv) = LiveServer::start(backend, "bench_load").await else {
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
    Ok(md)
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
    let accounts = {
        let signup = ServerProcess::start(&database, &[])?;
        idle_accounts(&signup.url, idle.div_ceil(per_account)).await?
    };
    {
        let server = ServerProcess::start(&database, &["--max-wait-seconds", "3600"])?;
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
