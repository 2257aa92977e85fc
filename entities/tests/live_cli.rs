//! Live sync as a user runs it: `sync-server` processes and two `sync-client sync --watch`
//! processes; a row inserted into one device's database shows on the other without anyone
//! asking for a sync. On PostgreSQL the two devices use two server processes, which wake each
//! other through the database.

mod common;

use common::{Running, connect, ok as client, server};
use std::path::Path;
use std::process::Command;

fn watch(db: &Path) -> Running {
    Running::spawn(
        Command::new(env!("CARGO_BIN_EXE_sync-client"))
            .arg("--db")
            .arg(db)
            .args(["sync", "--watch", "--interval", "3600"]),
    )
}

fn temp_dir() -> std::path::PathBuf {
    common::temp_dir("live-cli")
}

/// Two devices watching, A on `url_a` and B on `url_b` (one account); a profile inserted into
/// A's database by another process reaches B's database on its own.
fn an_insert_shows_on_the_other_watching_device(dir: &Path, url_a: &str, url_b: &str) {
    let (a, b) = (dir.join("a.sqlite"), dir.join("b.sqlite"));
    let (email, password) = ("live@example.org", "live password");
    connect(&a, url_a, email, password, true);
    connect(&b, url_b, email, password, false);
    let (watch_a, watch_b) = (watch(&a), watch(&b));
    for w in [&watch_a, &watch_b] {
        w.wait_for("live sync", |l| l.ends_with("; live"));
    }
    client(&a, &["insert", "profiles", "name=Arrived live", "avatar=L"]);
    watch_b.wait_for("received profile", |l| l.starts_with("received: profiles"));
    let profiles = client(&b, &["list", "profiles", "--json"]);
    assert!(profiles.contains("Arrived live"), "{profiles}");
}

#[test]
fn an_insert_reaches_a_watching_device_through_one_server_on_sqlite() {
    let dir = temp_dir();
    let database = format!("sqlite://{}", dir.join("server.sqlite").display());
    let (_server, url) = server(&database);
    an_insert_shows_on_the_other_watching_device(&dir, &url, &url);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test]
async fn an_insert_reaches_a_watching_device_through_two_server_processes_on_postgres() {
    let Some(admin_url) = std::env::var("SYNC_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipped: this test needs PostgreSQL; set SYNC_TEST_POSTGRES_URL");
        return;
    };
    let admin = common::postgres(&admin_url).await;
    let name = format!("live_cli_{}", uuid::Uuid::now_v7().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let database = format!("{base}/{name}");
    let dir = temp_dir();
    {
        let (_first, url_a) = server(&database);
        let (_second, url_b) = server(&database);
        an_insert_shows_on_the_other_watching_device(&dir, &url_a, &url_b);
    }
    let _ = std::fs::remove_dir_all(&dir);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}
