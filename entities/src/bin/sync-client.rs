//! `sync-client`: plays the app's part on a local database file: connect to a sync server,
//! sync, show status, and read or write rows of any synced table.

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use sync_runtime::client::{self, Activity, LocalData, ServiceOptions, SyncService};
use sync_runtime::schema::{Column, ColumnRole, ColumnType, DefaultValue, Table};
use sync_runtime::{Store, Timestamp, Value};

#[path = "sync-client/settings_page.rs"]
mod settings_page;

#[derive(Parser)]
#[command(
    name = "sync-client",
    version,
    about = "Sync a local app database with a sync server"
)]
struct Cli {
    /// The app's database file (created and migrated when missing).
    #[arg(long, env = "SYNC_DB", default_value = "app.sqlite", global = true)]
    db: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LocalDataArg {
    Upload,
    Discard,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in (or register) and upload this database's data in a first sync.
    Connect {
        #[arg(default_value = client::DEFAULT_REMOTE)]
        url: String,
        #[arg(long)]
        email: String,
        #[arg(long, env = "SYNC_PASSWORD")]
        password: String,
        /// Create the account.
        #[arg(long)]
        register: bool,
        /// If both this database and the account hold data: keep this device's (upload) or drop it.
        #[arg(long, value_enum, default_value = "upload")]
        local_data: LocalDataArg,
    },
    /// Show the sync status.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Sync once; with --watch, keep syncing in the foreground until ctrl-c.
    Sync {
        #[arg(long)]
        watch: bool,
        /// Seconds between syncs with --watch.
        #[arg(long, default_value_t = 300)]
        interval: u64,
    },
    /// Forget the token (signing out on the server when reachable); keep the local data.
    Disconnect,
    /// The live rows of a table.
    List {
        table: String,
        #[arg(long)]
        json: bool,
    },
    /// Insert a row: COL=VALUE... (references as local ids, `null` for NULL).
    Insert { table: String, values: Vec<String> },
    /// Change columns of row ID.
    Update {
        table: String,
        id: i64,
        values: Vec<String>,
    },
    /// Delete row ID (a tombstone; children follow).
    Delete { table: String, id: i64 },
    /// Start an embedded server and two devices, edit on both, sync, and show they converge.
    Demo,
    /// Serve the "Connect to Cloud" settings page for this database, with the background sync
    /// running beside it, until ctrl-c.
    Ui {
        /// A loopback address: the page and its API answer this machine only.
        #[arg(long, default_value = "127.0.0.1:8790")]
        listen: std::net::SocketAddr,
        /// Seconds between background syncs (a local write or "Sync now" syncs sooner).
        #[arg(long, default_value_t = 30)]
        interval: u64,
    },
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn table_of(name: &str) -> Result<&'static Table, String> {
    let schema = &entities::app().schema;
    schema.table(name).ok_or_else(|| {
        let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
        format!("no table `{name}`; the tables are {}", names.join(", "))
    })
}

/// A command-line value as a column's value, by the column's type.
fn parse_value(table: &Table, col: &Column, raw: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("{}.{}: `{raw}` is not {what}", table.name, col.name);
    if raw == "null" {
        return if col.nullable {
            Ok(Value::Null)
        } else {
            Err(format!("{}.{} cannot be null", table.name, col.name))
        };
    }
    Ok(match col.ty {
        ColumnType::Text => Value::Text(raw.to_owned()),
        ColumnType::Integer => Value::Integer(raw.parse().map_err(|_| bad("an integer"))?),
        ColumnType::Real => Value::Real(raw.parse().map_err(|_| bad("a number"))?),
        ColumnType::Boolean => Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(bad("a boolean (true or false)")),
        }),
        ColumnType::DateTime if raw == "now" => Value::DateTime(Timestamp::now()),
        ColumnType::DateTime => Value::DateTime(
            Timestamp::parse_lenient(raw)
                .map_err(|_| bad("a timestamp like 2026-11-28T07:49:06Z"))?,
        ),
        ColumnType::Json => {
            Value::json(&serde_json::from_str::<serde_json::Value>(raw).map_err(|_| bad("JSON"))?)
        }
    })
}

fn assignments(table: &Table, raw: &[String]) -> Result<Vec<(usize, Value)>, String> {
    raw.iter()
        .map(|a| {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| format!("`{a}`: write COLUMN=VALUE"))?;
            let i = table.column_index(k).ok_or_else(|| {
                let cols: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "{} has no column `{k}`; its columns are {}",
                    table.name,
                    cols.join(", ")
                )
            })?;
            Ok((i, parse_value(table, &table.columns[i], v)?))
        })
        .collect()
}

fn default_value(c: &Column) -> Option<Value> {
    Some(match c.default.as_ref()? {
        DefaultValue::Text(s) => Value::Text(s.clone()),
        DefaultValue::Integer(i) => Value::Integer(*i),
        DefaultValue::Real(f) => Value::Real(*f),
        DefaultValue::Boolean(b) => Value::Boolean(*b),
        DefaultValue::Now => Value::DateTime(Timestamp::now()),
    })
}

fn value_json(v: &Value) -> Json {
    sync_runtime::protocol::wire::encode_value(v)
}

fn open(db: &PathBuf) -> Result<Store, String> {
    Store::open(db, entities::app()).map_err(|e| format!("cannot open {}: {e}", db.display()))
}

fn print_status(store: &Store, as_json: bool) -> Result<(), String> {
    let st = client::status(store, Activity::Idle).map_err(|e| e.to_string())?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&st).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let connection = match (&st.remote_url, &st.account, st.connected, st.needs_sign_in) {
        (_, _, _, true) => "sign in again: the server refused the stored token".to_owned(),
        (Some(url), Some(account), true, _) => match &st.email {
            Some(email) => format!("connected to {url} as {email} (account {account})"),
            None => format!("connected to {url} as account {account}"),
        },
        (Some(url), _, false, _) => format!("not connected (last: {url})"),
        _ => "not connected".to_owned(),
    };
    println!("{connection}");
    println!("device:     {}", st.device_id);
    println!(
        "last sync:  {}",
        st.last_sync_at.as_deref().unwrap_or("never")
    );
    if let Some(e) = &st.last_error {
        println!("last error: {e}");
    }
    let waiting: u64 = st.pending.values().sum();
    println!("to push:    {waiting} row(s)");
    for (table, n) in st.pending.iter().filter(|(_, n)| **n > 0) {
        println!("  {table}: {n}");
    }
    for r in &st.rejected {
        println!("rejected:   {} {}: {}", r.table, r.id, r.message);
    }
    if st.parked > 0 {
        println!(
            "held back:  {} pulled row(s) waiting for a parent or a free natural key",
            st.parked
        );
    }
    Ok(())
}

fn progress_bar() -> (indicatif::ProgressBar, impl FnMut(Activity) + Send) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let b = bar.clone();
    let update = move |a: Activity| match a {
        Activity::Pushing { rows } => b.set_message(format!("pushed {rows} rows")),
        Activity::Pulling { pages, rows } => {
            b.set_message(format!("pulled {rows} rows in {pages} pages"));
            b.tick();
        }
        Activity::Idle => {}
    };
    (bar, update)
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Connect {
            url,
            email,
            password,
            register,
            local_data,
        } => {
            let mut store = open(&cli.db)?;
            let local = match local_data {
                LocalDataArg::Upload => LocalData::Upload,
                LocalDataArg::Discard => LocalData::Discard,
            };
            let (bar, mut progress) = progress_bar();
            let report = client::connect(
                &mut store,
                &url,
                &email,
                &password,
                register,
                local,
                &mut progress,
            )
            .await
            .map_err(|e| e.to_string())?;
            bar.finish_and_clear();
            println!(
                "connected; pushed {} rows, pulled {} rows",
                report.pushed, report.pulled
            );
        }
        Command::Status { json } => print_status(&open(&cli.db)?, json)?,
        Command::Sync { watch: false, .. } => {
            let mut store = open(&cli.db)?;
            let (bar, mut progress) = progress_bar();
            let report = client::sync_once(&mut store, &mut progress)
                .await
                .map_err(|e| e.to_string())?;
            bar.finish_and_clear();
            println!(
                "synced: pushed {} rows ({} rejected), pulled {} rows{}",
                report.pushed,
                report.rejected,
                report.pulled,
                if report.full_pull {
                    " (a full pull)"
                } else {
                    ""
                }
            );
        }
        Command::Sync {
            watch: true,
            interval,
        } => {
            let store = open(&cli.db)?;
            let options = ServiceOptions {
                period: Duration::from_secs(interval.max(1)),
                ..ServiceOptions::default()
            };
            let service = SyncService::start(store, options);
            let mut status = service.status();
            let mut changes = service.changes();
            // Rows written by other processes (`sync-client insert`, the app) reach this
            // service through no write hook: watch the file for new dirty rows instead.
            let watcher = open(&cli.db)?;
            let wrote = service.write_hook();
            let pending = |w: &Store| -> u64 {
                w.dirty_counts()
                    .map(|c| c.iter().map(|(_, n)| n).sum())
                    .unwrap_or(0)
            };
            let mut last_pending = pending(&watcher);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            println!(
                "syncing every {interval} s, and live while the server allows; ctrl-c to stop"
            );
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = tick.tick() => {
                        let now = pending(&watcher);
                        if now > last_pending {
                            wrote();
                        }
                        last_pending = now;
                    }
                    changed = changes.recv() => {
                        if let Ok(c) = changed {
                            for (table, t) in &c.tables {
                                if t.all {
                                    println!("received: {table} (whole table)");
                                } else {
                                    println!("received: {table} rows {:?}", t.ids);
                                }
                            }
                        }
                    }
                    changed = status.changed() => {
                        if changed.is_err() { break; }
                        let s = status.borrow_and_update().clone();
                        if !s.syncing {
                            let waiting: u64 = s.pending.values().sum();
                            let live = if s.live { "; live" } else { "" };
                            match &s.last_error {
                                Some(e) => println!("sync failed: {e}"),
                                None => println!("synced at {}; {waiting} row(s) to push{live}", s.last_sync_at.as_deref().unwrap_or("-")),
                            }
                        }
                    }
                }
            }
            service.stop();
        }
        Command::Disconnect => {
            let mut store = open(&cli.db)?;
            client::disconnect(&mut store)
                .await
                .map_err(|e| e.to_string())?;
            println!("disconnected; the local data is kept");
        }
        Command::List { table, json } => {
            let t = table_of(&table)?;
            let store = open(&cli.db)?;
            let rows = store.list_values(&t.name).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for (id, values) in rows {
                let mut m = serde_json::Map::new();
                m.insert("id".into(), json!(id));
                if t.synced {
                    m.insert(
                        "remote_id".into(),
                        json!(store.remote_id(&t.name, id).map_err(|e| e.to_string())?),
                    );
                }
                for (c, v) in t.columns.iter().zip(&values) {
                    m.insert(c.name.clone(), value_json(v));
                }
                out.push(Json::Object(m));
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
                );
            } else {
                for row in &out {
                    let cells: Vec<String> = row
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    println!("{}", cells.join("  "));
                }
                println!("{} row(s)", out.len());
            }
        }
        Command::Insert { table, values } => {
            let t = table_of(&table)?;
            let given = assignments(t, &values)?;
            let mut row = Vec::with_capacity(t.columns.len());
            for (i, c) in t.columns.iter().enumerate() {
                let v = match given.iter().find(|(j, _)| *j == i) {
                    Some((_, v)) => v.clone(),
                    None if c.name == "updated_at" => Value::DateTime(Timestamp::now()),
                    None if c.role == ColumnRole::Owner => Value::Text(String::new()),
                    None => match default_value(c) {
                        Some(v) => v,
                        None if c.nullable => Value::Null,
                        None => {
                            return Err(format!(
                                "{}.{} is required: add {}=VALUE",
                                t.name, c.name, c.name
                            ));
                        }
                    },
                };
                row.push(v);
            }
            let mut store = open(&cli.db)?;
            let id = store
                .insert_values(&t.name, None, row)
                .map_err(|e| e.to_string())?;
            println!("inserted {} {id}", t.name);
        }
        Command::Update { table, id, values } => {
            let t = table_of(&table)?;
            let given = assignments(t, &values)?;
            let mut store = open(&cli.db)?;
            let mut row = store
                .get_values(&t.name, id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{} has no live row {id}", t.name))?;
            for (i, v) in given {
                row[i] = v;
            }
            store
                .update_values(&t.name, id, row)
                .map_err(|e| e.to_string())?;
            println!("updated {} {id}", t.name);
        }
        Command::Delete { table, id } => {
            let t = table_of(&table)?;
            let mut store = open(&cli.db)?;
            store.delete_row(&t.name, id).map_err(|e| e.to_string())?;
            println!("deleted {} {id}", t.name);
        }
        Command::Demo => demo().await?,
        Command::Ui { listen, interval } => {
            let options = ServiceOptions {
                period: Duration::from_secs(interval.max(1)),
                ..ServiceOptions::default()
            };
            settings_page::serve(open(&cli.db)?, listen, options).await?
        }
    }
    Ok(())
}

/// Two devices and an embedded server: edits on both, a sync each way, and a check that both
/// hold the same records.
async fn demo() -> Result<(), String> {
    use entities::{List, ListItem, Profile, WatchHistory};
    use sync_runtime::server::{Server, ServerConfig, router};
    let dir = std::env::temp_dir().join(format!("sync-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let server = Server::open(
        &format!("sqlite://{}", dir.join("server.sqlite").display()),
        entities::app(),
        ServerConfig::default(),
    )
    .await
    .map_err(|x| e(&x))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|x| e(&x))?;
    let url = format!("http://{}", listener.local_addr().map_err(|x| e(&x))?);
    let app = router(server).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    println!("server:   {url} (embedded SQLite)");
    let mut a = Store::open(dir.join("desktop.sqlite"), entities::app()).map_err(|x| e(&x))?;
    let mut b = Store::open(dir.join("phone.sqlite"), entities::app()).map_err(|x| e(&x))?;
    let mut quiet = |_: Activity| {};
    client::connect(
        &mut a,
        &url,
        "demo@example.org",
        "demo password",
        true,
        LocalData::Upload,
        &mut quiet,
    )
    .await
    .map_err(|x| e(&x))?;
    client::connect(
        &mut b,
        &url,
        "demo@example.org",
        "demo password",
        false,
        LocalData::Upload,
        &mut quiet,
    )
    .await
    .map_err(|x| e(&x))?;
    println!("devices:  desktop and phone connected to one account");

    let now = Timestamp::now();
    let mut profile = Profile {
        id: None,
        user_id: String::new(),
        name: "Alice".into(),
        avatar: "A".into(),
        avatar_type: None,
        avatar_style: None,
        is_default: Some(true),
        settings_profile_id: None,
        created_at: Some(now),
        updated_at: now,
    };
    let p = a.insert(&mut profile).map_err(|x| e(&x))?;
    let l = a
        .insert(&mut List {
            id: None,
            profile_id: p,
            name: "Watch later".into(),
            is_default: Some(true),
            created_at: Some(now),
            updated_at: now,
        })
        .map_err(|x| e(&x))?;
    for meta in ["tt0111161", "tt0068646"] {
        a.insert(&mut ListItem {
            id: None,
            list_id: l,
            meta_id: meta.into(),
            r#type: "movie".into(),
            title: None,
            poster: None,
            imdb_rating: None,
            created_at: Some(now),
            updated_at: now,
        })
        .map_err(|x| e(&x))?;
    }
    println!("desktop:  adds profile Alice, list \"Watch later\" with 2 movies");
    client::sync_once(&mut a, &mut quiet)
        .await
        .map_err(|x| e(&x))?;
    client::sync_once(&mut b, &mut quiet)
        .await
        .map_err(|x| e(&x))?;
    let mut lists: Vec<List> = b.list().map_err(|x| e(&x))?;
    let mut on_phone = lists.pop().ok_or("the list did not reach the phone")?;
    on_phone.name = "Weekend".into();
    b.update(&on_phone).map_err(|x| e(&x))?;
    let bp = on_phone.profile_id;
    b.insert(&mut WatchHistory {
        id: None,
        profile_id: bp,
        meta_id: "tt0903747".into(),
        meta_type: "series".into(),
        season: 1,
        episode: 1,
        episode_id: None,
        title: Some("Breaking Bad".into()),
        poster: None,
        duration: Some(3_480_000),
        position: Some(1_200_000),
        is_watched: Some(false),
        watched_at: Some(Timestamp::now()),
        last_stream: None,
        updated_at: Timestamp::now(),
    })
    .map_err(|x| e(&x))?;
    println!("phone:    renames the list to \"Weekend\" and watches an episode");
    client::sync_once(&mut b, &mut quiet)
        .await
        .map_err(|x| e(&x))?;
    client::sync_once(&mut a, &mut quiet)
        .await
        .map_err(|x| e(&x))?;
    let snapshot = |s: &Store| -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        for t in entities::app().schema.synced() {
            let rows = s.list_values(&t.name).map_err(|x| e(&x))?;
            for (id, values) in rows {
                let rid = s
                    .remote_id(&t.name, id)
                    .map_err(|x| e(&x))?
                    .unwrap_or_default();
                let cols: Vec<String> = t
                    .columns
                    .iter()
                    .zip(&values)
                    .filter(|(c, _)| c.reference.is_none() && c.on_wire())
                    .map(|(c, v)| format!("{}={}", c.name, value_json(v)))
                    .collect();
                out.push((format!("{}/{rid}", t.name), cols.join(",")));
            }
        }
        out.sort();
        Ok(out)
    };
    let (sa, sb) = (snapshot(&a)?, snapshot(&b)?);
    let _ = std::fs::remove_dir_all(&dir);
    if sa == sb {
        println!(
            "converged: both devices hold the same {} records (list \"Weekend\", 2 movies, 1 episode)",
            sa.len()
        );
        Ok(())
    } else {
        Err(format!("the devices differ: desktop {sa:?}, phone {sb:?}"))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
