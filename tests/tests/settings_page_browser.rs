//! The "Connect to Cloud" page in real headless Chromium, driven over WebDriver: register
//! against an embedded server, watch the first upload's progress and the waiting counts fall to
//! zero, see a second device's change arrive after "Sync now" without a reload, see the message
//! for a wrong password, disconnect. It also takes the screenshots the README shows
//! (`SYNC_UPDATE_SCREENSHOTS=1`, as `cargo xtask screenshots` sets, writes them to
//! `docs/screenshots/`; otherwise they go to the target directory).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); built without them
//! (`tests/build.rs` looks), the test shows as ignored, unless `SYNC_REQUIRE_BROWSER` is set (CI
//! sets it), which makes a missing browser fail it.

use entities::{List, ListItem, Profile};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use sync_runtime::Timestamp;
use tests::device::{Device, LiveServer};
use tests::fixtures::profile;
use tests::local_app::LocalApp;
use tests::server::Backend;
use tests::slow_proxy::SlowProxy;

const PASSWORD: &str = "correct horse battery";

/// An executable by environment variable, else the first of `names` on the PATH.
fn find_tool(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Chromium and its driver, or `None` after saying plainly that the test is skipped.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_tool(
        "SYNC_TEST_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let driver = find_tool("SYNC_TEST_CHROMEDRIVER", &["chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            let need = "the settings page browser test needs Chromium and chromedriver \
                 (`apt-get install -y chromium chromium-driver`, as .ci/run does)";
            assert!(std::env::var_os("SYNC_REQUIRE_BROWSER").is_none(), "{need}");
            // Straight to stderr, past the test harness's capture: a plain `cargo test`
            // shows it.
            let _ = writeln!(std::io::stderr(), "skipped: {need}");
            None
        }
    }
}

/// A chromedriver process on a free loopback port, ended when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start(path: &Path) -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // From here on, dropping the driver ends the process.
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .is_ok()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop(driver);
        panic!("chromedriver did not answer on port {port}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open_browser(driver: &Driver, chromium: &Path, profile_dir: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--hide-scrollbars", "--force-device-scale-factor=1", "--lang=en-US",
                "--window-size=900,1100",
                format!("--user-data-dir={}", profile_dir.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// Waits until `script` (a JavaScript expression) is true in the page.
async fn until(page: &Client, what: &str, script: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = page
            .execute(&format!("return Boolean({script});"), vec![])
            .await
            .unwrap();
        if v == json!(true) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let body = page
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap();
            panic!("timed out waiting for {what} ({script}); the page shows:\n{body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text(page: &Client, css: &str) -> String {
    page.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn type_into(page: &Client, css: &str, value: &str) {
    let field = page.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Where screenshots go: `docs/screenshots/` when asked to update them, else the target dir.
fn screenshot_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = if std::env::var_os("SYNC_UPDATE_SCREENSHOTS").is_some() {
        root.join("docs/screenshots")
    } else {
        root.join("target/screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(page: &Client, name: &str) {
    // The card alone, at its own size, so the pictures do not depend on the window.
    let card = page.find(Locator::Css("main")).await.unwrap();
    let png = card.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// A device's data from before it was connected: a profile with a long list.
fn fill_device(app: &LocalApp, items: usize) {
    let mut store = app.store();
    let now = Timestamp::now();
    let profile = store
        .insert(&mut Profile {
            avatar_type: None,
            ..profile("Alice", None)
        })
        .unwrap();
    let list = store
        .insert(&mut List {
            id: None,
            profile_id: profile,
            name: "Watch later".into(),
            is_default: Some(true),
            created_at: Some(now),
            updated_at: now,
        })
        .unwrap();
    for i in 0..items {
        store
            .insert(&mut ListItem {
                id: None,
                list_id: list,
                meta_id: format!("tt{:07}", 100_000 + i),
                r#type: "movie".into(),
                title: Some(format!("Movie {i}")),
                poster: None,
                imdb_rating: Some(7.5),
                created_at: Some(now),
                updated_at: now,
            })
            .unwrap();
    }
}

#[cfg_attr(
    not(browser),
    ignore = "needs Chromium and chromedriver (.ci/run installs them)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_page_connects_syncs_live_and_disconnects_in_chromium() {
    let Some((chromium, driver_path)) = browser() else {
        return;
    };
    let server = LiveServer::start(Backend::Sqlite, "settings_page_browser")
        .await
        .unwrap();
    // The device reaches the server through a proxy that can slow the sync down, so the page
    // can be seen (and pictured) mid-upload.
    let proxy = SlowProxy::start(&server.url).await;
    // No held pull: the phone's change must come by "Sync now", so the test sees the click work.
    let app = LocalApp::start_with(
        "browser",
        sync_runtime::client::ServiceOptions {
            live_wait: None,
            ..Default::default()
        },
    )
    .await;
    fill_device(&app, 2400);

    let driver = Driver::start(&driver_path).await;
    let profile_dir = std::env::temp_dir().join(format!("chromium-profile-{}", std::process::id()));
    let page = open_browser(&driver, &chromium, &profile_dir).await;
    let result = drive(&page, &app, &server, &proxy).await;
    let _ = page.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile_dir);
    result.unwrap();
}

async fn drive(
    page: &Client,
    app: &LocalApp,
    server: &LiveServer,
    proxy: &SlowProxy,
) -> Result<(), String> {
    page.goto(&format!("{}/sync", app.url)).await.unwrap();
    until(
        page,
        "the form",
        "document.body.dataset.state === 'disconnected'",
    )
    .await;
    // The form asks what to do with this device's data, since it holds some.
    until(
        page,
        "the local-data choice",
        "!document.getElementById('local-data').hidden",
    )
    .await;
    assert_eq!(
        page.find(Locator::Css("#remote-url"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("https://zentrio.eu")
    );
    // Every field and button has a name a screen reader can say.
    let unnamed = page
        .execute(
            "return [...document.querySelectorAll('input, button')].filter(e => \
               !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()\
             ).map(e => e.id || e.name)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unnamed, json!([]), "controls without a label");
    type_into(page, "#email", "me@example.org").await;
    screenshot(page, "disconnected").await;

    // Register, by keyboard where a user would type.
    type_into(page, "#remote-url", &proxy.url).await;
    type_into(page, "#password", PASSWORD).await;
    page.find(Locator::Css("#register"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text(page, "#connect").await, "Create account and connect");
    proxy.set_delay(Duration::from_millis(700));
    page.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys("\u{E007}") // Enter submits the form
        .await
        .unwrap();
    until(
        page,
        "the upload under way",
        "document.getElementById('progress').dataset.phase === 'pushing' && \
         !document.getElementById('progress').hidden && \
         document.getElementById('progress-bar').value >= 1000",
    )
    .await;
    let progress = text(page, "#progress-text").await;
    assert!(progress.starts_with("Uploading: "), "{progress}");
    assert!(progress.ends_with("of 2,402 rows"), "{progress}");
    screenshot(page, "syncing").await;
    proxy.set_delay(Duration::ZERO);

    until(
        page,
        "connected with nothing waiting",
        "document.body.dataset.state === 'connected' && \
         document.getElementById('state').dataset.tone === 'ok' && \
         document.getElementById('waiting').dataset.total === '0'",
    )
    .await;
    assert_eq!(text(page, "#account-email").await, "me@example.org");
    assert_eq!(text(page, "#last-sync").await, "just now");
    assert_eq!(
        text(page, "tr[data-table=list_items] td:nth-of-type(1)").await,
        "2,400"
    );
    assert_eq!(
        text(page, "tr[data-table=list_items] td:nth-of-type(2)").await,
        "0"
    );

    // A second device of the account adds a profile; "Sync now" brings it, without a reload.
    let mut phone = Device::new("browser-phone");
    sync_runtime::client::connect(
        &mut phone.store,
        &server.url,
        "me@example.org",
        PASSWORD,
        false,
        sync_runtime::client::LocalData::Upload,
        &mut |_| {},
    )
    .await
    .map_err(|e| e.to_string())?;
    phone
        .store
        .insert(&mut Profile {
            avatar: "B".into(),
            avatar_type: None,
            is_default: Some(false),
            ..profile("Bob, from the phone", None)
        })
        .map_err(|e| e.to_string())?;
    phone.sync().await.map_err(|e| e.to_string())?;
    page.execute("window.sameDocument = true;", vec![])
        .await
        .unwrap();
    assert_eq!(
        text(page, "tr[data-table=profiles] td:nth-of-type(1)").await,
        "1"
    );
    page.find(Locator::Css("#sync-now"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        page,
        "the phone's profile",
        "document.querySelector('tr[data-table=profiles] td').textContent === '2' && \
         document.getElementById('state').dataset.tone === 'ok'",
    )
    .await;
    until(page, "the same document", "window.sameDocument === true").await;
    assert_eq!(text(page, "#last-sync-moved").await, "(0 sent, 1 received)");
    screenshot(page, "connected").await;

    // A narrow (phone) window: nothing wider than the screen.
    page.set_window_size(390, 1500).await.unwrap();
    until(
        page,
        "a layout within the narrow window",
        "document.documentElement.scrollWidth <= window.innerWidth",
    )
    .await;
    screenshot(page, "connected-narrow").await;
    page.set_window_size(900, 1100).await.unwrap();

    // Disconnect: the data stays.
    page.find(Locator::Css("#disconnect"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        page,
        "the form again",
        "document.body.dataset.state === 'disconnected'",
    )
    .await;
    assert_eq!(
        text(page, "#notice").await,
        "Disconnected. The data on this device is kept."
    );
    assert_eq!(
        app.store()
            .list::<Profile>()
            .map_err(|e| e.to_string())?
            .len(),
        2
    );

    // A wrong password has its own message, and leaves the device disconnected.
    type_into(page, "#remote-url", &proxy.url).await;
    type_into(page, "#email", "me@example.org").await;
    type_into(page, "#password", "not the password").await;
    page.find(Locator::Css("#connect"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        page,
        "the wrong-password message",
        "!document.getElementById('connect-error').hidden",
    )
    .await;
    assert_eq!(
        text(page, "#connect-error").await,
        "Wrong email or password."
    );
    assert_eq!(text(page, "#state").await, "Not connected");
    screenshot(page, "error").await;

    // The right password connects again.
    type_into(page, "#password", PASSWORD).await;
    page.find(Locator::Css("#connect"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        page,
        "connected again",
        "document.body.dataset.state === 'connected'",
    )
    .await;

    // The server revokes the token: the page asks to sign in again, and keeps the data.
    let token: String = app
        .store()
        .session()
        .map_err(|e| e.to_string())?
        .1
        .ok_or("no stored token")?;
    let revoked = reqwest::Client::new()
        .post(format!("{}/api/auth/logout", server.url))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(revoked.status().as_u16(), 204);
    page.find(Locator::Css("#sync-now"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        page,
        "sign in again",
        "document.body.dataset.state === 'sign_in_again'",
    )
    .await;
    assert!(
        page.find(Locator::Css("#reauth"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    assert_eq!(text(page, "#connect").await, "Sign in");
    screenshot(page, "sign-in-again").await;
    type_into(page, "#password", PASSWORD).await;
    page.find(Locator::Css("#connect"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        page,
        "signed in again",
        "document.body.dataset.state === 'connected'",
    )
    .await;
    assert_eq!(
        text(page, "tr[data-table=profiles] td:nth-of-type(1)").await,
        "2"
    );

    // And disconnects for good.
    page.find(Locator::Css("#disconnect"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(
        page,
        "disconnected",
        "document.body.dataset.state === 'disconnected'",
    )
    .await;
    Ok(())
}
