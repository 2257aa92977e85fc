//! Behind a reverse proxy, rate limits key on the client's address that a trusted proxy
//! forwards; from any other peer, on the socket's address, whatever header the peer sends.
//! Clients connect from addresses of their own on loopback (127.0.0.2, 127.0.0.3, ...), the
//! proxy from 127.0.0.1.

use serde_json::json;
use std::net::IpAddr;
use std::time::Duration;
use sync_runtime::server::{ForwardedHeader, ServerConfig, TrustedProxies};
use tests::by_backend;
use tests::device::LiveServer;
use tests::forwarding_proxy::ForwardingProxy;
use tests::server::Backend;

/// A client whose connections come from `address`.
fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

/// Registers `email` at `base`, sending `forged` as `X-Forwarded-For` when given; the status.
async fn register(client: &reqwest::Client, base: &str, email: &str, forged: Option<&str>) -> u16 {
    let mut req = client
        .post(format!("{base}/api/auth/register"))
        .json(&json!({"email": email, "password": "correct horse"}));
    if let Some(f) = forged {
        req = req.header("x-forwarded-for", f);
    }
    req.send().await.unwrap().status().as_u16()
}

/// A failed login to `email` at `base`; the status.
async fn wrong_login(client: &reqwest::Client, base: &str, email: &str) -> u16 {
    client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": email, "password": "not the password"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn limited(trusted: &[&str]) -> ServerConfig {
    ServerConfig {
        max_registrations: 2,
        registration_window: Duration::from_secs(3600),
        max_login_failures: 3,
        trusted_proxies: TrustedProxies::parse(
            trusted.iter().copied(),
            ForwardedHeader::XForwardedFor,
        )
        .unwrap(),
        ..ServerConfig::default()
    }
}

async fn limits_key_on_the_address_a_trusted_proxy_forwards(backend: Backend) {
    let Some(server) =
        LiveServer::start_with(backend, "trusted_proxy", limited(&["127.0.0.1"])).await
    else {
        return;
    };
    let proxy = ForwardingProxy::start(&server.url).await;
    let (alice, bob) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    let tag = backend_tag(backend);
    for n in 0..2 {
        let email = format!("alice{n}-{tag}@example.org");
        assert_eq!(register(&alice, &proxy.url, &email, None).await, 201);
    }
    let email = format!("alice2-{tag}@example.org");
    assert_eq!(
        register(&alice, &proxy.url, &email, None).await,
        429,
        "alice's third registration through the proxy"
    );
    assert_eq!(
        register(&alice, &proxy.url, &email, Some("203.0.113.9")).await,
        429,
        "an address alice writes herself, left of the one the proxy appends, is not believed"
    );
    assert_eq!(
        register(&bob, &proxy.url, &format!("bob-{tag}@example.org"), None).await,
        201,
        "bob, behind the same proxy, has a limit of his own"
    );
    // Failed logins alike: alice's guesses do not slow bob down.
    for _ in 0..3 {
        assert_eq!(
            wrong_login(&alice, &proxy.url, "nobody@example.org").await,
            401
        );
    }
    assert_eq!(
        wrong_login(&alice, &proxy.url, "anyone@example.org").await,
        429
    );
    assert_eq!(
        wrong_login(&bob, &proxy.url, "anyone@example.org").await,
        401
    );

    // A peer that is not a trusted proxy is limited by its socket address, whatever it forwards.
    let mallory = client_from("127.0.0.4");
    for n in 0..2 {
        let email = format!("mallory{n}-{tag}@example.org");
        let forged = format!("198.51.100.{n}");
        assert_eq!(
            register(&mallory, &server.url, &email, Some(&forged)).await,
            201
        );
    }
    let email = format!("mallory2-{tag}@example.org");
    assert_eq!(
        register(&mallory, &server.url, &email, Some("198.51.100.77")).await,
        429,
        "a forged X-Forwarded-For from an untrusted peer is ignored"
    );
}
by_backend!(
    trusted_proxy,
    limits_key_on_the_address_a_trusted_proxy_forwards
);

async fn an_untrusted_proxy_is_one_client(backend: Backend) {
    let Some(server) = LiveServer::start_with(backend, "untrusted_proxy", limited(&[])).await
    else {
        return;
    };
    let proxy = ForwardingProxy::start(&server.url).await;
    let (alice, bob) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    let tag = backend_tag(backend);
    for n in 0..2 {
        let email = format!("a{n}-{tag}@example.org");
        assert_eq!(register(&alice, &proxy.url, &email, None).await, 201);
    }
    assert_eq!(
        register(&bob, &proxy.url, &format!("b-{tag}@example.org"), None).await,
        429,
        "with no proxy trusted, every client behind it shares the proxy's address"
    );
}
by_backend!(untrusted_proxy, an_untrusted_proxy_is_one_client);

fn backend_tag(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}
