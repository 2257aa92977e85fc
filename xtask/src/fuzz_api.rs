//! `cargo xtask fuzz-api`: schemathesis (from PyPI) generates requests from the server's own
//! OpenAPI document and checks every answer against it: no 5xx, documented statuses and bodies.
//! The server runs in this process on a fresh database, listening on 127.0.0.1 only.

use std::process::Command;
use std::sync::Arc;
use sync_runtime::client::Transport;
use sync_runtime::protocol::paths;
use sync_runtime::server::{Server, ServerConfig, serve};
use tests::server::{Backend, fresh_database};

/// The schemathesis command: `$SCHEMATHESIS`, or `schemathesis` or `st` on the PATH.
fn schemathesis() -> Option<String> {
    let candidates = std::env::var("SCHEMATHESIS")
        .ok()
        .into_iter()
        .chain(["schemathesis".to_owned(), "st".to_owned()]);
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Runs schemathesis against a server on `backend`. `Ok(false)`: skipped (schemathesis is not
/// installed, or PostgreSQL is not configured).
pub fn run(backend: Backend, max_examples: u32) -> Result<bool, String> {
    let Some(st) = schemathesis() else {
        eprintln!(
            "skipped: schemathesis is not installed (`pip install schemathesis`, or set SCHEMATHESIS to its path)"
        );
        return Ok(false);
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let Some((db_url, _cleanup)) = fresh_database(backend, "fuzz_api").await else {
            return Ok(false);
        };
        let server = Server::open(&db_url, entities::app(), ServerConfig::default())
            .await
            .map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let url = format!(
            "http://{}",
            listener.local_addr().map_err(|e| e.to_string())?
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(serve(listener, Arc::clone(&server), async {
            let _ = stopped.await;
        }));
        let remote = sync_runtime::client::Remote::new(&url).map_err(|e| e.to_string())?;
        let session = remote
            .sign_in("fuzz@example.org", "a long secret", true)
            .await
            .map_err(|e| e.to_string())?;
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/schemathesis.toml");
        let args = vec![
            "--config-file".to_owned(),
            config.to_owned(),
            "run".to_owned(),
            format!("{url}/api/openapi.json"),
            "--url".to_owned(),
            url.clone(),
            "--header".to_owned(),
            format!("Authorization: Bearer {}", session.token),
            "--max-examples".to_owned(),
            max_examples.to_string(),
            "--checks".to_owned(),
            "all".to_owned(),
        ];
        // Logout and logout-all revoke the token they are sent with: they run last, on a token
        // of their own.
        let logout_token = remote
            .sign_in("fuzz@example.org", "a long secret", false)
            .await
            .map_err(|e| e.to_string())?
            .token;
        let mut everything = args.clone();
        let mut logout = args;
        for path in [paths::LOGOUT, paths::LOGOUT_ALL] {
            everything.extend(["--exclude-path".to_owned(), path.to_owned()]);
            logout.extend(["--include-path".to_owned(), path.to_owned()]);
        }
        if let Some(h) = logout.iter().position(|a| a.starts_with("Authorization:")) {
            logout[h] = format!("Authorization: Bearer {logout_token}");
        }
        let mut failed = Vec::new();
        for run in [everything, logout] {
            eprintln!(
                "{st} {}",
                run.join(" ")
                    .replace(&session.token, "TOKEN")
                    .replace(&logout_token, "TOKEN")
            );
            let st = st.clone();
            let status = tokio::task::spawn_blocking(move || Command::new(st).args(&run).status())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if !status.success() {
                failed.push(status.to_string());
            }
        }
        let _ = stop.send(());
        let _ = serving.await;
        if failed.is_empty() {
            Ok(true)
        } else {
            Err(format!(
                "schemathesis found problems ({})",
                failed.join(", ")
            ))
        }
    })
}
