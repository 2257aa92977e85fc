//! The `sync-server` binary over a real socket: started as a process, spoken to in HTTP/1.1,
//! stopped with SIGTERM; and two processes sharing one PostgreSQL database.

mod common;

use common::{Running, address};
use serde_json::{Value as Json, json};
use std::process::Command;

struct Process {
    server: Running,
    addr: String,
}

impl Process {
    fn start(database: &str) -> Process {
        let (server, url) = common::server(database);
        Process {
            server,
            addr: address(&url),
        }
    }

    /// One request over a fresh connection; (status, JSON body or null).
    fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Json>,
    ) -> (u16, Json) {
        let body = body.map(Json::to_string).unwrap_or_default();
        common::http(&self.addr, method, path, token, &body)
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.server.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.server.child.wait().unwrap()
    }
}

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn list(remote_id: &str, profile: &str, name: &str, at: &str) -> Json {
    json!({"remote_id": remote_id, "updated_at": at, "deleted_at": null, "profile_id": profile, "name": name,
           "is_default": false, "created_at": at})
}

fn profile(remote_id: &str, at: &str) -> Json {
    json!({"remote_id": remote_id, "updated_at": at, "deleted_at": null, "name": "P", "avatar": "p", "avatar_type": null,
           "avatar_style": null, "is_default": null, "settings_profile_id": null, "created_at": at})
}

#[test]
fn the_binary_serves_the_protocol_over_a_socket_and_stops_on_sigterm() {
    let path = std::env::temp_dir().join(format!("server-process-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = Process::start(&format!("sqlite://{}", path.display()));
    let (st, health) = server.http("GET", "/api/health", None, None);
    assert_eq!(st, 200);
    assert_eq!(health["status"], "ok");
    let (st, session) = server.http(
        "POST",
        "/api/auth/register",
        None,
        Some(&json!({"email": "p@example.org", "password": "12345678"})),
    );
    assert_eq!(st, 201, "{session}");
    let token = session["token"].as_str().unwrap();
    let (p, l) = (id(), id());
    let at = "2026-11-28T07:49:06.123Z";
    let push = json!({"device_id": id(), "schema_version": 1, "changes": {"lists": [list(&l, &p, "L", at)], "profiles": [profile(&p, at)]}});
    let (st, res) = server.http("POST", "/api/sync/push", Some(token), Some(&push));
    assert_eq!(st, 200, "{res}");
    assert_eq!(res["results"]["lists"][0]["status"], "applied");
    let (st, page) = server.http("GET", "/api/sync/pull?limit=1", Some(token), None);
    assert_eq!(st, 200);
    assert_eq!(page["has_more"], true);
    let (st, err) = server.http("POST", "/api/sync/push", Some(token), None);
    assert_eq!((st, err["error"].as_str()), (400, Some("bad_request")));
    let status = server.terminate();
    assert!(status.success(), "a graceful shutdown exits 0: {status}");
    // The data outlives the process.
    let again = Process::start(&format!("sqlite://{}", path.display()));
    let (st, page) = again.http("GET", "/api/sync/pull", Some(token), None);
    assert_eq!(st, 200);
    assert_eq!(page["changes"]["lists"][0]["remote_id"], json!(l));
    assert_eq!(
        again.http("GET", "/api/health", None, None).1["server_device_id"],
        health["server_device_id"],
        "the server's id is kept"
    );
    drop(again);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[test]
fn two_processes_on_one_postgres_merge_a_natural_key_pushed_to_both_at_once() {
    let Some(schema) = common::PgSchema::create("two_processes") else {
        return;
    };
    let scoped = schema.url.clone();
    let (a, b) = (Process::start(&scoped), Process::start(&scoped));
    let (st, session) = a.http(
        "POST",
        "/api/auth/register",
        None,
        Some(&json!({"email": "two@example.org", "password": "12345678"})),
    );
    assert_eq!(st, 201, "{session}");
    let token = session["token"].as_str().unwrap().to_owned();
    let p = id();
    let at = "2026-11-28T07:49:06.123Z";
    let (st, _) = b.http("POST", "/api/sync/push", Some(&token), Some(&json!({"device_id": id(), "schema_version": 1, "changes": {"profiles": [profile(&p, at)]}})));
    assert_eq!(st, 200, "a token from one process works on the other");
    let rounds = 15;
    std::thread::scope(|scope| {
        for server in [&a, &b] {
            let (token, p) = (token.clone(), p.clone());
            scope.spawn(move || {
                let device = id();
                for n in 0..rounds {
                    let push = json!({"device_id": device, "schema_version": 1,
                        "changes": {"lists": [list(&id(), &p, &format!("List {n}"), at)]}});
                    let (st, res) =
                        server.http("POST", "/api/sync/push", Some(&token), Some(&push));
                    assert_eq!(st, 200, "{res}");
                    let s = res["results"]["lists"][0]["status"].as_str().unwrap();
                    assert!(s == "applied" || s == "merged", "{res}");
                }
            });
        }
    });
    let (st, page) = a.http("GET", "/api/sync/pull", Some(&token), None);
    assert_eq!(st, 200);
    let lists = page["changes"]["lists"].as_array().unwrap();
    assert_eq!(lists.len(), rounds, "one record per name: {lists:?}");
    drop((a, b));
}

/// Before (issue 25): `--token-days 0` started a server whose tokens were expired when handed
/// out, so every sign-in "succeeded" and every sync then failed with 401.
#[test]
fn token_days_of_zero_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_sync-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database",
            "sqlite:///nonexistent/x.sqlite",
        ])
        .args(["--token-days", "0"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("--token-days"), "{said}");
}
