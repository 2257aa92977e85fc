//! The `sync-server` binary over a real socket: started as a process, spoken to in HTTP/1.1,
//! stopped with SIGTERM; and two processes sharing one PostgreSQL database.

use serde_json::{Value as Json, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

struct Process {
    child: Child,
    addr: String,
}

impl Process {
    fn start(database: &str) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sync-server"))
            .args(["--listen", "127.0.0.1:0", "--database", database])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start sync-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected: {line}"))
            .to_owned();
        Process { child, addr }
    }

    /// One request over a fresh connection; (status, JSON body or null).
    fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Json>,
    ) -> (u16, Json) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        let body = body.map(Json::to_string).unwrap_or_default();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let json = if body.is_empty() {
            Json::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"))
        };
        (status, json)
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let Ok(url) = std::env::var("SYNC_TEST_POSTGRES_URL") else {
        eprintln!("skipped: needs PostgreSQL; set SYNC_TEST_POSTGRES_URL (as .ci/run does)");
        return;
    };
    let schema = format!("two_processes_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = |sql: String| {
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.batch_execute(&sql).await.unwrap();
        })
    };
    admin(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ));
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
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
    admin(format!("DROP SCHEMA {schema} CASCADE"));
}
