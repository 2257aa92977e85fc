//! The account managed from the settings page (`/api/sync/password`,
//! `/api/sync/delete-account`), with a second device of the account beside it: after a new
//! password or the account's deletion the other device shows "sign in again", cleanly, with
//! its data kept; the device that asked goes on (new password) or is disconnected (deleted).

use serde_json::{Value as Json, json};
use tests::by_backend;
use tests::device::LiveServer;
use tests::local_app::LocalApp;
use tests::server::Backend;

const PASSWORD: &str = "correct horse";

fn connect_body(url: &str, password: &str, register: bool) -> Json {
    json!({"remote_url": url, "email": "owner@example.org", "password": password, "register": register})
}

/// Two devices of one account at `server`, each synced once.
async fn two_devices(server: &LiveServer, name: &str) -> (LocalApp, LocalApp) {
    let a = LocalApp::start(&format!("{name}-a")).await;
    let b = LocalApp::start(&format!("{name}-b")).await;
    a.store()
        .insert(&mut tests::fixtures::settings_profile("Kept"))
        .unwrap();
    for (app, register) in [(&a, true), (&b, false)] {
        let (s, v) = app
            .post(
                "/api/sync/connect",
                Some(connect_body(&server.url, PASSWORD, register)),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = app.post("/api/sync/sync", None).await;
        assert_eq!(s, 200, "{v}");
    }
    (a, b)
}

/// The other device's next sync is refused, and its status asks to sign in again.
async fn signed_out(app: &LocalApp) {
    let (s, e) = app.post("/api/sync/sync", None).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (401, Some("sign_in_again")),
        "{e}"
    );
    let (_, status) = app.get("/api/sync/status").await;
    assert_eq!(status["state"], "sign_in_again", "{status}");
    assert_eq!(status["email"], "owner@example.org");
    assert_eq!(
        status["records"]["settings_profiles"], 1,
        "its data is kept"
    );
}

async fn a_new_password_signs_out_the_other_device(backend: Backend) {
    let Some(server) = LiveServer::start(backend, "page_password").await else {
        return;
    };
    let (a, b) = two_devices(&server, "password").await;

    let (s, e) = a
        .post(
            "/api/sync/password",
            Some(json!({"password": "not it", "new_password": "a new secret"})),
        )
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (403, Some("wrong_password")),
        "{e}"
    );
    let (s, e) = a
        .post("/api/sync/password", Some(json!({"password": PASSWORD})))
        .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    let (s, _) = b.post("/api/sync/sync", None).await;
    assert_eq!(s, 200, "refused changes change nothing");

    let (s, status) = a
        .post(
            "/api/sync/password",
            Some(json!({"password": PASSWORD, "new_password": "a new secret"})),
        )
        .await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["state"], "connected");
    let (s, v) = a.post("/api/sync/sync", None).await;
    assert_eq!(
        s, 200,
        "the asking device syncs on with its new session: {v}"
    );

    signed_out(&b).await;
    let (s, _) = b
        .post(
            "/api/sync/connect",
            Some(connect_body(&server.url, PASSWORD, false)),
        )
        .await;
    assert_eq!(s, 401, "the old password is refused");
    let (s, status) = b
        .post(
            "/api/sync/connect",
            Some(connect_body(&server.url, "a new secret", false)),
        )
        .await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["state"], "connected");
}

by_backend!(
    a_new_password_signs_out_the_other_device,
    a_new_password_signs_out_the_other_device
);

async fn deleting_the_account_disconnects_this_device_and_signs_out_the_other(backend: Backend) {
    let Some(server) = LiveServer::start(backend, "page_delete").await else {
        return;
    };
    let (a, b) = two_devices(&server, "delete").await;

    let (s, e) = a
        .post(
            "/api/sync/delete-account",
            Some(json!({"password": "not it"})),
        )
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (403, Some("wrong_password")),
        "{e}"
    );
    let (s, _) = b.post("/api/sync/sync", None).await;
    assert_eq!(s, 200, "nothing was deleted");

    let (s, status) = a
        .post(
            "/api/sync/delete-account",
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(s, 200, "{status}");
    assert_eq!(status["state"], "disconnected");
    assert_eq!(
        status["records"]["settings_profiles"], 1,
        "this device keeps its data"
    );
    let (s, e) = a
        .post(
            "/api/sync/password",
            Some(json!({"password": PASSWORD, "new_password": "another one"})),
        )
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (409, Some("not_connected")),
        "{e}"
    );

    signed_out(&b).await;
    let (s, e) = b
        .post(
            "/api/sync/connect",
            Some(connect_body(&server.url, PASSWORD, false)),
        )
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (401, Some("unauthorized")),
        "the account is gone: {e}"
    );
}

by_backend!(
    deleting_the_account_disconnects_this_device_and_signs_out_the_other,
    deleting_the_account_disconnects_this_device_and_signs_out_the_other
);

#[tokio::test]
async fn the_openapi_document_offers_the_account_paths() {
    let app = LocalApp::start("account-doc").await;
    let (s, doc) = app.get("/api/sync/openapi.json").await;
    assert_eq!(s, 200);
    for path in ["/api/sync/password", "/api/sync/delete-account"] {
        assert!(doc["paths"][path]["post"].is_object(), "{path}");
    }
    let page = app
        .request(reqwest::Method::GET, "/sync")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Change password") && page.contains("Delete account"));
}
