//! The device's local control API over a real loopback socket, against a real sync server:
//! connect, status, events, sync now, disconnect, sign in again, every failure the page
//! explains, and the refusals that keep other web pages out.

use entities::Profile;
use serde_json::{Value as Json, json};
use std::time::Duration;
use sync_runtime::client::ServiceOptions;
use sync_runtime::server::ServerConfig;
use tests::device::{Device, LiveServer};
use tests::local_app::LocalApp;
use tests::server::Backend;

fn profile(name: &str) -> Profile {
    Profile {
        avatar_type: None,
        is_default: Some(false),
        ..tests::fixtures::profile(name, None)
    }
}

fn connect_body(url: &str, email: &str, password: &str, register: bool) -> Json {
    json!({"remote_url": url, "email": email, "password": password, "register": register})
}

/// The device's stored token (kept beside the database, never in it).
fn stored_token(app: &LocalApp) -> Option<String> {
    app.store().session().unwrap().1
}

/// `status` events of `/api/sync/events`, read as they come.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(app: &LocalApp) -> Events {
        let resp = app
            .request(reqwest::Method::GET, "/api/sync/events")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Events {
            resp,
            buf: String::new(),
        }
    }

    /// The first status event for which `want` holds, within 20 s.
    async fn until(&mut self, want: impl Fn(&Json) -> bool) -> Json {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                if !event.lines().any(|l| l == "event: status") {
                    continue;
                }
                let data: String = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                let status: Json = serde_json::from_str(&data).unwrap();
                if want(&status) {
                    return status;
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("the awaited status event came in time")
                .unwrap()
                .expect("the event stream stays open");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn a_new_device_starts_disconnected_with_the_default_remote() {
    let app = LocalApp::start("fresh").await;
    let (s, config) = app.get("/api/sync/config").await;
    assert_eq!(s, 200, "{config}");
    assert_eq!(config["default_remote_url"], "https://zentrio.eu");
    assert_eq!(config["remote_url"], "https://zentrio.eu");
    assert_eq!(config["has_local_data"], false);
    assert_eq!(config["email"], Json::Null);
    let (s, status) = app.get("/api/sync/status").await;
    assert_eq!(s, 200);
    assert_eq!(status["state"], "disconnected");
    assert_eq!(status["syncing"], false);
    assert_eq!(status["device_id"], config["device_id"]);

    // A database with rows of its own: the form asks what to do with them.
    app.store().insert(&mut profile("Alice")).unwrap();
    let (_, config) = app.get("/api/sync/config").await;
    assert_eq!(config["has_local_data"], true);
}

#[tokio::test]
async fn register_uploads_the_local_rows_and_names_the_account_without_its_token() {
    let server = LiveServer::start(Backend::Sqlite, "control_register")
        .await
        .unwrap();
    let app = LocalApp::start("register").await;
    app.store().insert(&mut profile("Alice")).unwrap();
    app.store().insert(&mut profile("Bob")).unwrap();
    let mut events = Events::open(&app).await;
    let (s, status) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &server.url,
                "Me@Example.org",
                "correct horse",
                true,
            )),
        )
        .await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["state"], "connected");
    assert_eq!(status["email"], "Me@Example.org");
    assert_eq!(status["remote_url"], server.url.as_str());
    assert_eq!(status["pending_total"], 0);
    assert_eq!(status["records"]["profiles"], 2);
    assert_eq!(status["last_sync"]["pushed"], 2);
    assert!(status["last_sync_at"].is_string());

    // The events showed the connect under way, then connected with nothing waiting.
    events.until(|s| s["state"] == "connecting").await;
    events
        .until(|s| s["state"] == "connected" && s["pending_total"] == 0)
        .await;

    // The email is kept in sync_state; the token never leaves the database.
    let token = stored_token(&app).expect("a stored token");
    let (_, config) = app.get("/api/sync/config").await;
    assert_eq!(config["email"], "Me@Example.org");
    assert_eq!(config["remote_url"], server.url.as_str());
    let (_, status) = app.get("/api/sync/status").await;
    for body in [&status, &config] {
        let text = body.to_string();
        assert!(!text.contains(&token), "{text}");
        assert!(!text.contains("token"), "{text}");
        assert!(!text.contains("correct horse"), "{text}");
    }
    let stored: Vec<String> = {
        let store = app.store();
        let mut stmt = store
            .connection()
            .prepare("SELECT * FROM sync_state")
            .unwrap();
        let n = stmt.column_count();
        stmt.query_row([], |r| {
            Ok((0..n)
                .map(|i| {
                    r.get::<_, Option<String>>(i)
                        .ok()
                        .flatten()
                        .unwrap_or_default()
                })
                .collect())
        })
        .unwrap()
    };
    assert!(
        !stored.iter().any(|v| v.contains("correct horse")),
        "the password is never stored"
    );

    // Connecting again while connected is refused and changes nothing.
    let (s, e) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &server.url,
                "me@example.org",
                "correct horse",
                false,
            )),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (409, Some("already_connected")));
    assert_eq!(stored_token(&app).as_deref(), Some(token.as_str()));
}

#[tokio::test]
async fn each_sign_in_failure_has_its_own_code_and_changes_nothing() {
    let server = LiveServer::start_with(
        Backend::Sqlite,
        "control_failures",
        ServerConfig {
            max_login_failures: 3,
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let mut other = Device::new("control-failures-other");
    other.connect(&server.url, "taken@example.org", true).await;
    let app = LocalApp::start("failures").await;

    let (s, e) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &server.url,
                "taken@example.org",
                "wrong password",
                false,
            )),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (401, Some("unauthorized")), "{e}");
    assert_eq!(e["message"], "wrong email or password");

    let (s, e) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &server.url,
                "taken@example.org",
                "correct horse",
                true,
            )),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (409, Some("conflict")), "{e}");

    let (s, e) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(&server.url, "new@example.org", "short", true)),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("8"), "{e}");

    // Too many attempts: the server's limit, with its "try again in" sentence.
    let mut last = (0, Json::Null);
    for _ in 0..4 {
        last = app
            .post(
                "/api/sync/connect",
                Some(connect_body(
                    &server.url,
                    "taken@example.org",
                    "wrong again",
                    false,
                )),
            )
            .await;
    }
    assert_eq!(
        (last.0, last.1["error"].as_str()),
        (429, Some("rate_limited")),
        "{}",
        last.1
    );
    assert!(last.1["message"].as_str().unwrap().contains("try again in"));

    // Nobody answers on this port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (s, e) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &format!("http://{closed}"),
                "a@example.org",
                "correct horse",
                false,
            )),
        )
        .await;
    assert_eq!((s, e["error"].as_str()), (502, Some("unreachable")), "{e}");

    // A server that serves only older schema versions than the app's.
    let old = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_url = format!("http://{}", old.local_addr().unwrap());
    let health = axum::Router::new().route(
        "/api/health",
        axum::routing::get(|| async {
            axum::Json(
                json!({"status": "ok", "schema_version": 0, "min_schema_version": 0,
                "server_device_id": "0193a4c0-0000-7000-8000-000000000000",
                "max_push_rows": 5000, "max_body_bytes": 1000000}),
            )
        }),
    );
    let old_task = tokio::spawn(async move {
        let _ = axum::serve(old, health).await;
    });
    let (s, e) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &old_url,
                "a@example.org",
                "correct horse",
                false,
            )),
        )
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (502, Some("server_too_old")),
        "{e}"
    );
    old_task.abort();

    // Something that is not a sync server at all.
    let (s, e) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &format!("{}/api/health", app.url),
                "a@example.org",
                "correct horse",
                false,
            )),
        )
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (502, Some("not_a_sync_server")),
        "{e}"
    );

    let (_, status) = app.get("/api/sync/status").await;
    assert_eq!(status["state"], "disconnected");
    assert_eq!(stored_token(&app), None);
}

#[tokio::test]
async fn bad_input_is_a_bad_request_and_changes_nothing() {
    let app = LocalApp::start("bad-input").await;
    let cases: Vec<(Option<&str>, &[u8], &str)> = vec![
        (Some("application/json"), b"{not json", "not the expected JSON"),
        (Some("text/plain"), br#"{"email":"a@b.c","password":"x"}"#, "Content-Type"),
        (None, br#"{"email":"a@b.c","password":"x"}"#, "Content-Type"),
        (Some("application/json"), br#"{"email":"a@b.c"}"#, "password"),
        (Some("application/json"), br#"{"email":"a@b.c","password":"x","token":"t"}"#, "token"),
        (Some("application/json"), br#"{"email":"","password":"long enough"}"#, "email"),
        (
            Some("application/json"),
            br#"{"remote_url":"http://sync.example.org","email":"a@b.c","password":"long enough"}"#,
            "https://",
        ),
        (
            Some("application/json"),
            br#"{"remote_url":"https://me:pw@sync.example.org","email":"a@b.c","password":"long enough"}"#,
            "user name",
        ),
        (
            Some("application/json"),
            br#"{"remote_url":"https://sync.example.org","email":"a@b.c","password":"x","local_data":"merge"}"#,
            "`upload` or `discard`",
        ),
    ];
    for (content_type, body, says) in cases {
        let mut req = app
            .request(reqwest::Method::POST, "/api/sync/connect")
            .body(body.to_vec());
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        let (s, e) = LocalApp::send(req).await;
        assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")), "{e}");
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{} should say {says}",
            e["message"]
        );
    }
    let (s, e) = app.get("/api/sync/nothing").await;
    assert_eq!((s, e["error"].as_str()), (404, Some("not_found")));
    let (s, e) = app.post("/api/sync/status", None).await;
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")));
    let (s, e) = app.post("/api/sync/sync", None).await;
    assert_eq!((s, e["error"].as_str()), (409, Some("not_connected")));
    let (_, status) = app.get("/api/sync/status").await;
    assert_eq!(status["state"], "disconnected");
    assert_eq!(stored_token(&app), None);
}

#[tokio::test]
async fn other_origins_and_rebound_hosts_are_refused() {
    let app = LocalApp::start("origins").await;
    let own = app.url.clone();
    let localhost = format!("localhost:{}", app.addr.port());
    let refused: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("GET", vec![("origin", "https://evil.example".into())]),
        ("POST", vec![("origin", "https://evil.example".into())]),
        ("POST", vec![("origin", "null".into())]),
        // Another local app on another port is another origin.
        ("POST", vec![("origin", "http://127.0.0.1:1".into())]),
        // DNS rebinding: the browser sends the attacker's name as Host.
        (
            "GET",
            vec![("host", format!("evil.example:{}", app.addr.port()))],
        ),
        ("GET", vec![("sec-fetch-site", "cross-site".into())]),
        ("POST", vec![("sec-fetch-site", "same-site".into())]),
    ];
    for (method, headers) in refused {
        for path in [
            "/api/sync/status",
            "/api/sync/disconnect",
            "/api/sync/events",
            "/sync",
        ] {
            let m = if method == "GET" {
                reqwest::Method::GET
            } else {
                reqwest::Method::POST
            };
            let mut req = app.request(m, path);
            for (k, v) in &headers {
                req = req.header(*k, v);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Json = resp.json().await.unwrap();
            assert_eq!(
                (status, body["error"].as_str()),
                (403, Some("forbidden")),
                "{method} {path} {headers:?}: {body}"
            );
        }
    }
    // The page's own origin, by either loopback name, is served.
    for (host, origin) in [
        (None, own.clone()),
        (Some(localhost.clone()), format!("http://{localhost}")),
    ] {
        let mut req = app
            .request(reqwest::Method::GET, "/api/sync/status")
            .header("origin", &origin)
            .header("sec-fetch-site", "same-origin");
        if let Some(h) = &host {
            req = req.header("host", h);
        }
        let (s, body) = LocalApp::send(req).await;
        assert_eq!(s, 200, "{origin}: {body}");
    }
    let (s, _) = LocalApp::send(
        app.request(reqwest::Method::POST, "/api/sync/disconnect")
            .header("origin", &own),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn sync_now_brings_a_second_devices_change_and_the_events_show_it() {
    let server = LiveServer::start(Backend::Sqlite, "control_sync_now")
        .await
        .unwrap();
    // No held pull: the second device's change must come by "Sync now", not before it.
    let app = LocalApp::start_with(
        "sync-now",
        ServiceOptions {
            live_wait: None,
            ..ServiceOptions::default()
        },
    )
    .await;
    let (s, status) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &server.url,
                "two@example.org",
                "correct horse",
                true,
            )),
        )
        .await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["records"]["profiles"], 0);

    // The service's own sync after the connect is over once a sync asked for now returns.
    let (s, _) = app.post("/api/sync/sync", None).await;
    assert_eq!(s, 200);

    let mut phone = Device::new("control-sync-now-phone");
    phone.connect(&server.url, "two@example.org", false).await;
    phone.store.insert(&mut profile("From the phone")).unwrap();
    phone.sync().await.unwrap();

    let mut events = Events::open(&app).await;
    let (s, report) = app.post("/api/sync/sync", None).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["pulled"], 1, "{report}");
    let seen = events
        .until(|s| s["records"]["profiles"] == 1 && s["syncing"] == false)
        .await;
    assert_eq!(seen["state"], "connected");
    assert_eq!(seen["last_sync"], json!({"pushed": 0, "pulled": 1}));

    // A local write waits, then goes with the next sync.
    app.store()
        .insert(&mut profile("From the desktop"))
        .unwrap();
    let (s, _) = app.post("/api/sync/sync", None).await;
    assert_eq!(s, 200);
    let (_, status) = app.get("/api/sync/status").await;
    assert_eq!(status["records"]["profiles"], 2);
    assert_eq!(status["pending_total"], 0);
    phone.sync().await.unwrap();
    assert_eq!(phone.store.list::<Profile>().unwrap().len(), 2);

    // The server goes down: the sync fails, the device stays connected and shows the error.
    let mut server = server;
    server.stop().await;
    let (s, e) = app.post("/api/sync/sync", None).await;
    assert_eq!((s, e["error"].as_str()), (502, Some("unreachable")), "{e}");
    let (_, status) = app.get("/api/sync/status").await;
    assert_eq!(status["state"], "connected");
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|m| m.starts_with("cannot reach")),
        "{status}"
    );
    assert_eq!(status["last_sync"], Json::Null);
}

#[tokio::test]
async fn a_background_sync_brings_a_second_devices_change_without_asking() {
    let server = LiveServer::start(Backend::Sqlite, "control_background")
        .await
        .unwrap();
    let app = LocalApp::start_with(
        "background",
        ServiceOptions {
            period: Duration::from_millis(300),
            ..ServiceOptions::default()
        },
    )
    .await;
    let (s, _) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &server.url,
                "four@example.org",
                "correct horse",
                true,
            )),
        )
        .await;
    assert_eq!(s, 200);
    let mut events = Events::open(&app).await;
    let mut phone = Device::new("control-background-phone");
    phone.connect(&server.url, "four@example.org", false).await;
    phone.store.insert(&mut profile("From the phone")).unwrap();
    phone.sync().await.unwrap();
    // Nobody asks: the service's next sync brings it, and the events carry it.
    let seen = events
        .until(|s| s["records"]["profiles"] == 1 && s["syncing"] == false)
        .await;
    assert_eq!(seen["state"], "connected");
    assert_eq!(seen["pending_total"], 0);
}

#[tokio::test]
async fn disconnect_keeps_the_data_and_a_refused_token_asks_to_sign_in_again() {
    let server = LiveServer::start(Backend::Sqlite, "control_disconnect")
        .await
        .unwrap();
    let app = LocalApp::start("disconnect").await;
    app.store().insert(&mut profile("Kept")).unwrap();
    let (s, _) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &server.url,
                "three@example.org",
                "correct horse",
                true,
            )),
        )
        .await;
    assert_eq!(s, 200);

    // The service's own sync after the connect is over once a sync asked for now returns.
    let (s, _) = app.post("/api/sync/sync", None).await;
    assert_eq!(s, 200);

    // The server revokes the token (as on a password change elsewhere): sign in again.
    let token = stored_token(&app).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/api/auth/logout", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (s, e) = app.post("/api/sync/sync", None).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (401, Some("sign_in_again")),
        "{e}"
    );
    let (_, status) = app.get("/api/sync/status").await;
    assert_eq!(status["state"], "sign_in_again");
    assert_eq!(status["email"], "three@example.org");
    assert_eq!(status["records"]["profiles"], 1);
    let (s, e) = app.post("/api/sync/sync", None).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (401, Some("sign_in_again")),
        "{e}"
    );

    // Signing in again keeps the local data and syncs on.
    let (s, status) = app
        .post(
            "/api/sync/connect",
            Some(connect_body(
                &server.url,
                "three@example.org",
                "correct horse",
                false,
            )),
        )
        .await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["state"], "connected");
    assert_eq!(status["records"]["profiles"], 1);

    let (s, status) = app.post("/api/sync/disconnect", None).await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["state"], "disconnected");
    assert_eq!(status["records"]["profiles"], 1);
    assert_eq!(stored_token(&app), None);
    assert_eq!(app.store().list::<Profile>().unwrap().len(), 1);
    // Disconnecting twice is harmless.
    let (s, _) = app.post("/api/sync/disconnect", None).await;
    assert_eq!(s, 200);
    let (_, config) = app.get("/api/sync/config").await;
    assert_eq!(config["email"], "three@example.org");
}

#[tokio::test]
async fn the_page_and_the_openapi_document_are_served() {
    let app = LocalApp::start("page").await;
    let resp = app
        .request(reqwest::Method::GET, "/sync")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("Connect to Cloud"));
    // Nothing is loaded from another host.
    for needle in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!html.contains(needle), "{needle}");
    }

    let (s, doc) = app.get("/api/sync/openapi.json").await;
    assert_eq!(s, 200);
    for path in [
        "/sync",
        "/api/sync/status",
        "/api/sync/config",
        "/api/sync/connect",
        "/api/sync/disconnect",
        "/api/sync/sync",
        "/api/sync/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    assert!(doc["components"]["schemas"]["StatusView"].is_object());
    assert!(doc["components"]["schemas"]["ConnectRequest"]["properties"]["password"].is_object());
}
