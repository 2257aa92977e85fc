//! `sync-server`: the sync server for the app's entities, on its embedded SQLite file by default
//! or on PostgreSQL.

#[path = "sync-server/admin.rs"]
mod admin;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use sync_runtime::server::tls::{ServerTls, TlsFiles};
use sync_runtime::server::{
    ForwardedHeader, Server, ServerConfig, TrustedProxies, metrics, serve, serve_tls, spawn_purger,
};
use tokio::task::JoinHandle;

#[derive(Parser)]
#[command(
    name = "sync-server",
    version,
    about = "The sync server: auth, push and pull over HTTP"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on.
    #[arg(long, env = "SYNC_LISTEN", default_value = "127.0.0.1:8787")]
    listen: String,
    /// `sqlite://PATH` (created if missing) or `postgres://USER@HOST:PORT/DB`.
    #[arg(
        long,
        global = true,
        env = "SYNC_DATABASE_URL",
        default_value = "sqlite://sync-server.sqlite"
    )]
    database: String,
    /// Days a tombstone is kept before it is purged (0: forever).
    #[arg(long, env = "SYNC_TOMBSTONE_DAYS", default_value_t = 90)]
    tombstone_days: u64,
    /// Rows one push may carry.
    #[arg(long, env = "SYNC_MAX_PUSH_ROWS", default_value_t = ServerConfig::default().max_push_rows)]
    max_push_rows: usize,
    /// Bytes one request body may have.
    #[arg(long, env = "SYNC_MAX_BODY_BYTES", default_value_t = ServerConfig::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Bytes of one account's request bodies in flight at once; more is a 429 (a lone request
    /// always passes).
    #[arg(long, env = "SYNC_MAX_ACCOUNT_REQUEST_BYTES", default_value_t = ServerConfig::default().max_account_request_bytes)]
    max_account_request_bytes: usize,
    /// Bytes of all request bodies in flight at once; more is a 503.
    #[arg(long, env = "SYNC_MAX_REQUEST_BYTES", default_value_t = ServerConfig::default().max_request_bytes)]
    max_request_bytes: usize,
    /// Days a bearer token lives (at least 1: a token of 0 days would be expired when handed out).
    #[arg(long, env = "SYNC_TOKEN_DAYS", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..))]
    token_days: u64,
    /// The oldest client schema version served.
    #[arg(long, env = "SYNC_MIN_SCHEMA_VERSION", default_value_t = 1)]
    min_schema_version: u32,
    /// Connections to PostgreSQL from this process.
    #[arg(long, env = "SYNC_POSTGRES_CONNECTIONS", default_value_t = 16)]
    postgres_connections: usize,
    /// Bytes of one text or JSON value in a pushed row; more rejects the row.
    #[arg(long, env = "SYNC_MAX_VALUE_BYTES", default_value_t = ServerConfig::default().max_value_bytes)]
    max_value_bytes: usize,
    /// Bytes of the rows of one pull page (a page holds at least one record).
    #[arg(long, env = "SYNC_MAX_PAGE_BYTES", default_value_t = ServerConfig::default().max_page_bytes)]
    max_page_bytes: usize,
    /// Seconds a pushed stamp may be ahead of the server's clock; more rejects the row.
    #[arg(long, env = "SYNC_MAX_CLOCK_AHEAD_SECS", default_value_t = ServerConfig::default().max_clock_ahead.as_secs())]
    max_clock_ahead_secs: u64,
    /// Seconds to send a request's headers, or the next request on a kept-alive connection.
    #[arg(long, env = "SYNC_HEADER_TIMEOUT_SECS", default_value_t = ServerConfig::default().header_timeout.as_secs())]
    header_timeout_secs: u64,
    /// Seconds to send a request's body.
    #[arg(long, env = "SYNC_BODY_TIMEOUT_SECS", default_value_t = ServerConfig::default().body_timeout.as_secs())]
    body_timeout_secs: u64,
    /// Connections open at once; more wait to be accepted. Keep it below `ulimit -n`.
    #[arg(long, env = "SYNC_MAX_CONNECTIONS", default_value_t = ServerConfig::default().max_connections)]
    max_connections: usize,
    /// Registrations from one address per hour.
    #[arg(long, env = "SYNC_MAX_REGISTRATIONS", default_value_t = ServerConfig::default().max_registrations)]
    max_registrations: u32,
    /// Passwords hashed at once (about 19 MiB each); 0: one per core.
    #[arg(long, env = "SYNC_HASHING_SLOTS", default_value_t = 0)]
    hashing_slots: usize,
    /// The longest, in seconds, that a pull's `wait` may hold it.
    #[arg(long, env = "SYNC_MAX_WAIT_SECONDS", default_value_t = ServerConfig::default().max_wait.as_secs())]
    max_wait_seconds: u64,
    /// Pulls held at once per account; more are answered at once.
    #[arg(long, env = "SYNC_MAX_WAITERS_PER_ACCOUNT", default_value_t = ServerConfig::default().max_waiters_per_account)]
    max_waiters_per_account: usize,
    /// Pulls held at once by this process; more are answered at once.
    #[arg(long, env = "SYNC_MAX_WAITERS", default_value_t = ServerConfig::default().max_waiters)]
    max_waiters: usize,
    /// A reverse proxy (address or CIDR network) whose forwarded client address is believed;
    /// repeat for several. Rate limits key on the client's address.
    #[arg(
        long = "trusted-proxy",
        env = "SYNC_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<String>,
    /// The header trusted proxies write the client's address into: x-forwarded-for or
    /// forwarded (RFC 7239).
    #[arg(long, env = "SYNC_FORWARDED_HEADER", default_value = "x-forwarded-for")]
    forwarded_header: ForwardedHeader,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key. Both files
    /// are read again when they change, and on SIGHUP.
    #[arg(long, env = "SYNC_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "SYNC_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA (PEM) that signs PostgreSQL's certificate, for `sslmode=verify-full` (or
    /// `verify-ca`, `require`) in --database; over the URL's `sslrootcert`.
    #[arg(long, env = "SYNC_POSTGRES_CA_FILE")]
    postgres_ca_file: Option<PathBuf>,
    /// Serve Prometheus metrics at GET /metrics on this address (a port of its own, kept from
    /// the public one); none by default.
    #[arg(long, env = "SYNC_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// `text` (for people) or `json` (one object per line, for a log pipeline).
    #[arg(long, env = "SYNC_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs on standard output (standard error for `admin`, whose output is its answer), filtered
/// by `RUST_LOG` (else `default_filter`).
fn init_logs(format: LogFormat, to_stderr: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    match format {
        LogFormat::Json => builder.json().with_writer(writer).init(),
        // Colour codes only when a person reads them, not in a log file.
        LogFormat::Text => builder
            .with_ansi(!to_stderr && std::io::stdout().is_terminal())
            .with_writer(writer)
            .init(),
    }
}

/// Serves GET /metrics on `address`; prints where, as the main listener does.
async fn start_metrics(address: &str, server: Arc<Server>) -> Result<JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address} for metrics: {e}"))?;
    let addr = listener
        .local_addr()
        .map_or_else(|_| address.to_owned(), |a| a.to_string());
    println!("metrics on http://{addr}/metrics");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, metrics::router(server)).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    }))
}

#[derive(Subcommand)]
enum Command {
    /// An operator's commands on the accounts of the database given by --database.
    Admin(admin::AdminArgs),
}

/// `url` without a password, for the log.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Admin(admin)) = args.command {
        init_logs(args.log_format, true, "warn");
        return admin::main(&args.database, admin).await;
    }
    init_logs(args.log_format, false, "info,tower_http=info");
    let trusted_proxies = match TrustedProxies::parse(
        args.trusted_proxies.iter().map(String::as_str),
        args.forwarded_header,
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --trusted-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let config = ServerConfig {
        max_push_rows: args.max_push_rows,
        max_body_bytes: args.max_body_bytes,
        max_account_request_bytes: args.max_account_request_bytes,
        max_request_bytes: args.max_request_bytes,
        min_schema_version: args.min_schema_version,
        token_ttl: Duration::from_secs(args.token_days * 24 * 3600),
        tombstone_horizon: (args.tombstone_days > 0)
            .then(|| Duration::from_secs(args.tombstone_days * 24 * 3600)),
        postgres_connections: args.postgres_connections,
        max_value_bytes: args.max_value_bytes,
        max_page_bytes: args.max_page_bytes,
        max_clock_ahead: Duration::from_secs(args.max_clock_ahead_secs),
        header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
        body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
        max_connections: args.max_connections.max(1),
        max_registrations: args.max_registrations,
        hashing_slots: match args.hashing_slots {
            0 => ServerConfig::default().hashing_slots,
            n => n,
        },
        max_wait: Duration::from_secs(args.max_wait_seconds),
        max_waiters_per_account: args.max_waiters_per_account,
        max_waiters: args.max_waiters,
        trusted_proxies,
        postgres_ca_file: args.postgres_ca_file,
        ..ServerConfig::default()
    };
    let server = match Server::open(&args.database, entities::app(), config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open {}: {e}", args.database);
            return ExitCode::FAILURE;
        }
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => match ServerTls::start(TlsFiles::new(cert, key)) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("error: cannot serve HTTPS: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let metrics = match &args.metrics_listen {
        Some(address) => match start_metrics(address, server.clone()).await {
            Ok(task) => Some(task),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(args.listen);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, database = %redacted(&args.database), device_id = %server.device_id, "sync server listening");
    // Printed plainly too, so a script that started the server on port 0 can read the port.
    println!("listening on {scheme}://{addr}");
    let purger = spawn_purger(server.clone(), Duration::from_secs(3600));
    let stopping = server.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Held pulls answer now, instead of keeping the shutdown waiting for their timeout.
        stopping.release_waiters();
    };
    let result = match &tls {
        Some(tls) => serve_tls(listener, server, tls, shutdown).await,
        None => serve(listener, server, shutdown).await,
    };
    purger.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
