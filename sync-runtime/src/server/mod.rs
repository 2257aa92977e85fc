//! The sync server: auth, push and pull over HTTP (docs/PROTOCOL.md), on the embedded SQLite file
//! or on PostgreSQL. `router(state)` builds it, so tests drive it in-process as well as over a
//! socket.

pub mod account_routes;
pub mod account_turn;
pub mod accounts;
pub mod admin;
pub mod auth;
pub mod budget;
mod client_addr;
pub mod db;
pub mod error;
pub mod extract;
pub mod hashing;
pub mod listen;
pub mod live;
pub mod long_poll;
pub mod metrics;
mod newer_schema;
pub mod notify;
pub mod openapi;
pub mod page_rows;
mod pg_error;
mod pg_migrations;
pub mod postgres_tls;
pub mod rate_limit;
pub mod readiness;
pub mod routes;
pub mod row_rules;
pub mod statistics;
pub mod sync;
pub mod tls;

use crate::App;
use crate::ddl::Dialect;
use crate::migrate::{self, Migration};
use db::{Db, DbError, PgDb, SqliteDb};
use error::ApiError;
use sea_query::{
    ColumnDef, Expr, ExprTrait, Index, PostgresQueryBuilder, Query, SqliteQueryBuilder, Table,
};
use std::sync::Arc;
use std::time::Duration;

pub use client_addr::{ForwardedHeader, TrustedProxies};
pub use listen::{serve, serve_tls};
pub use pg_migrations::{MigrationFailed, apply_postgres};
pub use routes::router;

/// What an operator can tune. Every field has a default fit for one machine.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Rows per push; more is a 413.
    pub max_push_rows: usize,
    /// Bytes per request body; more is a 413.
    pub max_body_bytes: usize,
    /// Bytes of one account's request bodies in flight at once (each counted from before it is
    /// read until it is answered); more is a 429. A lone request always passes.
    pub max_account_request_bytes: usize,
    /// Bytes of all request bodies in flight at once; more is a 503.
    pub max_request_bytes: usize,
    /// The most rows a pull page holds, whatever `limit` asks for.
    pub max_pull_limit: usize,
    /// The oldest client schema version served.
    pub min_schema_version: u32,
    pub token_ttl: Duration,
    /// Tombstones older than this are purged (none: kept forever).
    pub tombstone_horizon: Option<Duration>,
    /// Failed logins per account and per address before 429, and the window they count in.
    pub max_login_failures: u32,
    pub login_window: Duration,
    /// Registrations per address before 429, and the window they count in.
    pub max_registrations: u32,
    pub registration_window: Duration,
    /// Passwords hashed at once (each holds about 19 MiB), and requests that may wait for a
    /// slot; beyond them, 503.
    pub hashing_slots: usize,
    pub hashing_queue: usize,
    /// Connections to PostgreSQL per server process.
    pub postgres_connections: usize,
    /// How far ahead of the server's clock a pushed stamp may be; further is a rejected row.
    pub max_clock_ahead: Duration,
    /// Bytes of one text or JSON value in a pushed row; more is a rejected row.
    pub max_value_bytes: usize,
    /// Bytes of the rows of one pull page (at least one record is sent, whatever its size).
    pub max_page_bytes: usize,
    /// Time to send a request's headers, and to send the next one on a kept-alive connection.
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
    /// Open connections; more wait to be accepted.
    pub max_connections: usize,
    /// The longest a pull's `wait` may hold it.
    pub max_wait: Duration,
    /// Held pulls per account, and per server process; beyond either, a pull is answered at once.
    pub max_waiters_per_account: usize,
    pub max_waiters: usize,
    /// Rows pushed into a table on PostgreSQL before this process first gathers its
    /// statistics (then again at each doubling; see [`statistics::PushedSinceAnalyze`]).
    pub analyze_after_rows: u64,
    /// The reverse proxies whose forwarded client address is believed (none by default).
    pub trusted_proxies: TrustedProxies,
    /// The CA that signs PostgreSQL's certificate, over the URL's `sslrootcert`
    /// ([`postgres_tls`]).
    pub postgres_ca_file: Option<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_push_rows: 5000,
            max_body_bytes: 16 * 1024 * 1024,
            max_account_request_bytes: 32 * 1024 * 1024,
            max_request_bytes: 128 * 1024 * 1024,
            max_pull_limit: 5000,
            min_schema_version: 1,
            token_ttl: Duration::from_secs(30 * 24 * 3600),
            tombstone_horizon: Some(Duration::from_secs(90 * 24 * 3600)),
            max_login_failures: 10,
            login_window: Duration::from_secs(15 * 60),
            max_registrations: 100,
            registration_window: Duration::from_secs(3600),
            hashing_slots: std::thread::available_parallelism().map_or(2, |n| n.get()),
            hashing_queue: 32,
            postgres_connections: 16,
            max_clock_ahead: Duration::from_secs(24 * 3600),
            max_value_bytes: 1024 * 1024,
            max_page_bytes: 8 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections: 8192,
            max_wait: Duration::from_secs(30),
            max_waiters_per_account: 32,
            max_waiters: 20_000,
            analyze_after_rows: 10_000,
            trusted_proxies: TrustedProxies::default(),
            postgres_ca_file: None,
        }
    }
}

/// Everything a request handler needs.
pub struct Server {
    pub db: Db,
    pub app: &'static App,
    pub config: ServerConfig,
    /// The server's own device id, stamped on the writes it derives.
    pub device_id: String,
    pub limiter: rate_limit::LoginLimiter,
    pub registrations: rate_limit::RegisterLimiter,
    pub hashing: auth::HashGate,
    /// Request bytes in flight, per account and in all.
    pub budget: budget::RequestBudget,
    /// One push per account at a time in this process, before it takes a connection.
    pub turns: account_turn::AccountTurns,
    /// Pulls held until their account changes.
    pub live: Arc<live::LiveHub>,
    /// On PostgreSQL, the connection that hears other processes' changes.
    _listener: Option<notify::Task>,
    /// When to gather PostgreSQL's statistics of a table a large upload grew.
    pub pushed_since_analyze: statistics::PushedSinceAnalyze,
    /// The statements pushes build, built once (for this server's backend).
    pub statements: Arc<sync::Statements>,
    /// When each token's use was last written.
    pub token_use: accounts::TokenUse,
    /// Account exports running.
    pub exports: account_routes::ExportGate,
    /// What `/metrics` serves.
    pub metrics: metrics::Metrics,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://...")]
    Url(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
    #[error(transparent)]
    PostgresMigration(#[from] MigrationFailed),
    /// A newer build migrated the database, and this one cannot serve it.
    #[error("{0}")]
    NewerSchema(String),
    #[error("cannot read or record the server's device id: {0}")]
    DeviceId(ApiError),
}

/// The runtime's own server tables, built with sea-query for either backend: accounts (with
/// each user's change sequence and purge watermark), tokens, aliases and the server's identity.
pub fn runtime_migrations(dialect: Dialect) -> Vec<Migration> {
    // Long on purpose: it is data, the runtime's tables one after another.
    let text = |name: &str| {
        let mut c = ColumnDef::new(name.to_owned());
        c.custom("TEXT".to_owned()).not_null();
        c
    };
    let int = |name: &str| {
        let mut c = ColumnDef::new(name.to_owned());
        c.custom(
            if dialect == Dialect::Postgres {
                "BIGINT"
            } else {
                "INTEGER"
            }
            .to_owned(),
        )
        .not_null()
        .default(Expr::cust("0"));
        c
    };
    let mut users = Table::create();
    users
        .table("sync_users")
        .col(text("user_id").primary_key())
        .col(text("email").unique_key())
        .col(text("password_hash"))
        .col(text("created_at"))
        .col(int("last_seq"))
        .col(int("purged_seq"));
    let mut tokens = Table::create();
    let mut revoked = ColumnDef::new("revoked_at");
    revoked.custom("TEXT".to_owned());
    tokens
        .table("sync_tokens")
        .col(text("token_hash").primary_key())
        .col(text("user_id"))
        .col(text("created_at"))
        .col(text("expires_at"))
        .col(revoked);
    let mut aliases = Table::create();
    aliases
        .table("sync_aliases")
        .col(text("table_name"))
        .col(text("alias_id"))
        .col(text("user_id"))
        .col(text("canonical_id"))
        .primary_key(Index::create().col("table_name").col("alias_id"));
    let mut state = Table::create();
    state
        .table("sync_server")
        .col(text("key").primary_key())
        .col(text("value"));
    let mut alias_index = Index::create();
    alias_index
        .name("sync_aliases_canonical")
        .table("sync_aliases")
        .col("table_name")
        .col("canonical_id");
    let mut token_index = Index::create();
    token_index
        .name("sync_tokens_user")
        .table("sync_tokens")
        .col("user_id");
    let sql: Vec<String> = match dialect {
        Dialect::Sqlite => vec![
            users.to_string(SqliteQueryBuilder),
            tokens.to_string(SqliteQueryBuilder),
            aliases.to_string(SqliteQueryBuilder),
            state.to_string(SqliteQueryBuilder),
            alias_index.to_string(SqliteQueryBuilder),
            token_index.to_string(SqliteQueryBuilder),
        ],
        Dialect::Postgres => vec![
            users.to_string(PostgresQueryBuilder),
            tokens.to_string(PostgresQueryBuilder),
            aliases.to_string(PostgresQueryBuilder),
            state.to_string(PostgresQueryBuilder),
            alias_index.to_string(PostgresQueryBuilder),
            token_index.to_string(PostgresQueryBuilder),
        ],
    };
    vec![
        Migration {
            version: 1,
            name: "0001_accounts".into(),
            sql: (sql.join(";\n") + ";").into(),
        },
        accounts::migration(dialect),
    ]
}

/// The migration scope of the runtime's own server tables.
pub const RUNTIME_SCOPE: &str = "sync-server";
/// The migration scope of the app's entity tables.
pub const APP_SCOPE: &str = "app";

impl Server {
    /// Connects to `database_url` (`sqlite://PATH` or `postgres://...`), creates or migrates the
    /// schema, and loads (or makes, once) the server's device id.
    pub async fn open(
        database_url: &str,
        app: &'static App,
        config: ServerConfig,
    ) -> Result<Arc<Server>, StartError> {
        let mut listener = None;
        let live = Arc::new(live::LiveHub::new(
            config.max_waiters_per_account,
            config.max_waiters,
        ));
        let (db, device_id) = if let Some(path) = database_url.strip_prefix("sqlite://") {
            let path = std::path::PathBuf::from(path);
            let db = tokio::task::spawn_blocking(move || -> Result<SqliteDb, StartError> {
                let db = SqliteDb::open(&path)?;
                db.with_writer(|conn| -> Result<(), StartError> {
                    migrate::apply_sqlite(
                        conn,
                        RUNTIME_SCOPE,
                        &runtime_migrations(Dialect::Sqlite),
                    )?;
                    migrate::apply_sqlite(conn, APP_SCOPE, app.server_sqlite_migrations)?;
                    let (recorded, columns) = newer_schema::read_sqlite(conn)?;
                    warn_newer(newer_schema::judge(
                        app,
                        Dialect::Sqlite,
                        &recorded,
                        &columns,
                    )?);
                    Ok(())
                })?;
                Ok(db)
            })
            .await
            .map_err(|e| DbError::Join(e.to_string()))??;
            // The writer's IMMEDIATE transaction keeps two processes from both making an id.
            let db = Db::Sqlite(db);
            let device_id = server_device_id(&db).await.map_err(StartError::DeviceId)?;
            (db, device_id)
        } else if database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
        {
            let to =
                postgres_tls::PgConnect::parse(database_url, config.postgres_ca_file.as_deref())?;
            let db = PgDb::connect_with(&to, config.postgres_connections)?;
            let device_id = set_up_postgres(&db, app).await?;
            listener = Some(notify::spawn_listener(&to, live.clone())?);
            (Db::Postgres(db), device_id)
        } else {
            return Err(StartError::Url(database_url.to_owned()));
        };
        let limiter = rate_limit::LoginLimiter::new(config.max_login_failures, config.login_window);
        let registrations =
            rate_limit::RegisterLimiter::new(config.max_registrations, config.registration_window);
        let hashing = auth::HashGate::new(config.hashing_slots, config.hashing_queue);
        let pushed_since_analyze = statistics::PushedSinceAnalyze::new(config.analyze_after_rows);
        let budget =
            budget::RequestBudget::new(config.max_account_request_bytes, config.max_request_bytes);
        Ok(Arc::new(Server {
            app,
            config,
            device_id,
            limiter,
            registrations,
            hashing,
            budget,
            turns: account_turn::AccountTurns::default(),
            live,
            _listener: listener,
            pushed_since_analyze,
            statements: Arc::default(),
            token_use: accounts::TokenUse::default(),
            exports: account_routes::ExportGate::default(),
            metrics: metrics::Metrics::new(db.connection_waits()),
            db,
        }))
    }

    /// Answers every held pull now and holds no more: call when shutting down, so that the
    /// requests in flight finish at once.
    pub fn release_waiters(&self) {
        self.live.close();
    }

    /// Purges tombstones older than the horizon; returns how many rows went.
    pub async fn purge_tombstones(&self, before: crate::Timestamp) -> Result<u64, ApiError> {
        let app = self.app;
        crate::with_tx!(&self.db, true, |tx| Ok::<_, ApiError>(
            sync::purge(tx, &app.schema, before).await?
        ))
    }
}

/// Brings a PostgreSQL database to this build's schema and reads (or makes, once) the server's
/// device id, all under the schema's migration lock: of several processes starting together,
/// one migrates and the others wait, then find it done.
async fn set_up_postgres(db: &PgDb, app: &'static App) -> Result<String, StartError> {
    let mut lock = pg_migrations::MigrationLock::take(db).await?;
    lock.apply(RUNTIME_SCOPE, &runtime_migrations(Dialect::Postgres))
        .await?;
    if !lock
        .apply(APP_SCOPE, app.server_postgres_migrations)
        .await?
        .is_empty()
    {
        // A migration may rewrite tables and indexes that hold rows: their statistics from
        // the start.
        let tables: Vec<&str> = app.schema.synced().map(|t| t.name.as_str()).collect();
        statistics::analyze_filled(db, &tables).await?;
    }
    let (recorded, columns) = newer_schema::read_postgres(db).await?;
    warn_newer(newer_schema::judge(
        app,
        Dialect::Postgres,
        &recorded,
        &columns,
    )?);
    let device_id = server_device_id(&Db::Postgres(db.clone()))
        .await
        .map_err(StartError::DeviceId)?;
    lock.release().await?;
    Ok(device_id)
}

/// Says so when a newer build migrated the database and this one serves it anyway.
fn warn_newer(warning: Option<String>) {
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }
}

async fn server_device_id(db: &Db) -> Result<String, ApiError> {
    crate::with_tx!(db, true, |tx| {
        use crate::server::db::SyncTx;
        let mut q = Query::select();
        q.column("value")
            .from("sync_server")
            .and_where(Expr::col("key").eq("device_id"));
        let found = tx.fetch(&q, &[crate::ColumnType::Text]).await?;
        match found.first().and_then(|r| r.first()) {
            Some(crate::Value::Text(id)) => Ok::<_, ApiError>(id.clone()),
            _ => {
                let id = uuid::Uuid::now_v7().to_string();
                let mut ins = Query::insert();
                ins.into_table("sync_server")
                    .columns(["key", "value"])
                    .values_panic(["device_id".into(), id.as_str().into()]);
                tx.run(&ins).await?;
                Ok(id)
            }
        }
    })
}

/// Purges old tombstones every `every` until the server stops.
pub fn spawn_purger(server: Arc<Server>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(horizon) = server.config.tombstone_horizon else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let before = crate::Timestamp::now()
                .add_millis(-(horizon.as_millis().min(i64::MAX as u128) as i64));
            match server.purge_tombstones(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged tombstones"),
                Err(e) => tracing::warn!(error = %e, "purging tombstones failed"),
            }
        }
    })
}
