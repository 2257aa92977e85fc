//! The PostgreSQL change listener's reconnect delay starts afresh after a connection that held
//! (issue 25, finding 9): before, successive drops made it wait 100, 200, 400, 800, 1,600,
//! 3,200 ms and on up to 10 s, however long each connection had listened.

use std::time::{Duration, Instant};
use sync_runtime::server::{Server, ServerConfig};
use tests::server::{Backend, fresh_database, postgres};

/// The backend pid of the server's listener, once it listens.
async fn listener_pid(admin: &tokio_postgres::Client, name: &str) -> Option<i32> {
    let rows = admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 \
             AND query = 'LISTEN sync_changes'",
            &[&name],
        )
        .await
        .unwrap();
    rows.first().map(|r| r.get(0))
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test]
async fn each_drop_of_a_listener_that_held_is_reconnected_at_once() {
    let Some((url, _cleanup)) = fresh_database(Backend::Postgres, "listener_reconnect").await
    else {
        return;
    };
    let name = format!("listener_reconnect_{}", std::process::id());
    let url = format!("{url}&application_name={name}");
    let _server = Server::open(&url, entities::app(), ServerConfig::default())
        .await
        .unwrap();
    let admin = postgres(&url).await;
    let mut delays = Vec::new();
    for _ in 0..6 {
        // Listening for longer than a connection needs to count as held.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let pid = listener_pid(&admin, &name)
            .await
            .expect("the listener listens");
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap();
        let dropped = Instant::now();
        loop {
            match listener_pid(&admin, &name).await {
                Some(again) if again != pid => break,
                _ => {}
            }
            assert!(dropped.elapsed() < Duration::from_secs(20), "no reconnect");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        delays.push(dropped.elapsed());
    }
    eprintln!("reconnected after {delays:?}");
    assert!(
        delays.iter().all(|d| *d < Duration::from_millis(1500)),
        "{delays:?}"
    );
}
