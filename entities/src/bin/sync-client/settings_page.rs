//! `sync-client ui`: the settings page and its API for one database, on a loopback port, with
//! the background sync service running beside it.

use std::net::SocketAddr;
use sync_runtime::Store;
use sync_runtime::client::ServiceOptions;
use sync_runtime::control::{SyncControl, router};

pub async fn serve(
    store: Store,
    listen: SocketAddr,
    options: ServiceOptions,
) -> Result<(), String> {
    if !listen.ip().is_loopback() {
        return Err(format!(
            "--listen {listen}: the settings page listens on a loopback address only (e.g. 127.0.0.1:8790)"
        ));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let control = SyncControl::start(store, options)
        .map_err(|e| format!("cannot start the sync service: {e}"))?;
    let app = router(control).into_make_service_with_connect_info::<SocketAddr>();
    println!("settings page: http://{addr}/sync");
    eprintln!("the sync service runs beside it; ctrl-c to stop");
    tokio::select! {
        served = axum::serve(listener, app) => served.map_err(|e| e.to_string()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
