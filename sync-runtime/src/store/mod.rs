//! The device's local store: opens and migrates the app's SQLite database and gives the app a
//! write path in which every insert, update and delete of a Syncable entity marks the row dirty
//! and stamps `updated_at` from the sync clock. Deletes are tombstones that cascade to CASCADE
//! children and null SET NULL references. The app never writes bookkeeping columns by hand.
//!
//! `impl Store` is spread over one file per concern, as rusqlite spreads `impl Connection`:
//! this file opens the database and holds what the others share; `write.rs` is the app's write
//! path and `read.rs` its reads; `push.rs`, `pull.rs` and `reconcile.rs` are the device's half
//! of a sync (reading dirty rows for a push and applying its results, applying pulled pages, and
//! joining local rows the server merged); `state.rs` holds every statement on the runtime's own
//! tables (`sync_state`, the session, rejected and parked rows, the seen-set).
//!
//! Each sync step is one local transaction, so a sync interrupted anywhere (a killed process, a
//! cut connection) leaves either all of a step or none of it. No network here: `client` carries
//! the JSON.

mod capture;
mod orphans;
mod owner;
mod pull;
mod push;
mod read;
mod reconcile;
mod runtime_tables;
mod server_ca;
mod state;
mod token;
mod write;

pub use pull::PageSummary;
pub use push::{PushBatch, PushSummary, PushedRow};
pub use runtime_tables::RUNTIME_MIGRATIONS;
pub use state::{HeldBackRow, RejectedRow, StateRow};

use crate::App;
use crate::clock::Clock;
use crate::migrate::{self, MigrateError};
use crate::schema::Table;
use crate::timestamp::Timestamp;
use crate::value::ValueError;
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The local owner the runtime makes for an app whose owner column references none of its
/// tables (the framework's own command line): see [`Store::choose_owner`].
pub const LOCAL_ACCOUNT: &str = "local";

/// The migration scope of the runtime's own device tables.
pub const RUNTIME_SCOPE: &str = "sync-runtime";
/// The migration scope of the app's entity tables.
pub const APP_SCOPE: &str = "app";

/// Makes a row a tombstone: one stamp, above the row's previous one, is both its `updated_at`
/// and its `deleted_at`.
pub(crate) const TOMBSTONE: &str =
    "(updated_at, deleted_at) = (SELECT s, s FROM (SELECT sync_stamp(updated_at) AS s))";

/// Why a store operation failed. A failed write changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("table `{table}`: {source}")]
    Value {
        table: String,
        #[source]
        source: ValueError,
    },
    #[error("no table `{0}` is synced by this app")]
    UnknownTable(String),
    #[error("table `{table}` has no live row with id {id}")]
    NotFound { table: String, id: i64 },
    /// A pulled page or pushed answer that is not the protocol.
    #[error("{0}")]
    BadPage(String),
    /// The token's file beside the database cannot be written or removed (store/token.rs).
    #[error("the sync token's file {0}")]
    Token(String),
    /// The local owner to sync cannot be chosen as asked (store/owner.rs).
    #[error("{0}")]
    Owner(String),
    #[error("table `{table}`: a record with the same {key} exists already (id {existing})")]
    Conflict {
        table: String,
        key: String,
        existing: i64,
    },
}

fn value_err(table: &Table, source: ValueError) -> StoreError {
    StoreError::Value {
        table: table.name.clone(),
        source,
    }
}

fn err(table: &Table, m: impl Into<String>) -> StoreError {
    StoreError::Value {
        table: table.name.clone(),
        source: ValueError(m.into()),
    }
}

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

enum Applied {
    Done,
    Parked,
}

/// The local database of one device.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) app: &'static App,
    pub(crate) clock: Arc<Clock>,
    pub(crate) device_id: String,
    pub(crate) path: Option<std::path::PathBuf>,
    pub(crate) write_hook: Option<Box<dyn Fn() + Send>>,
    /// Where the bearer token is kept, outside the database (store/token.rs).
    pub(crate) token: token::TokenKeeper,
    /// The connection's owner while a pulled page is applied ([`Store::with_owner`]): every
    /// pulled row needs it.
    pub(crate) owner: std::sync::Mutex<Option<String>>,
    /// Statements built from a table's description, built once: a pull runs them per row.
    sql: std::sync::Mutex<HashMap<(usize, Sql), Arc<str>>>,
}

/// The kinds of per-table statement [`Store::sql`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Sql {
    ByRemoteId,
    Insert,
    Replace,
    ClearDirty,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// Keeps the sync's prepared statements prepared. Every table has its own few statements, more
/// than rusqlite's default cache of 16 holds. And without the query planner stability guarantee,
/// SQLite re-prepares a statement each time a new value is bound to a parameter that its plan
/// looked at (a `LIMIT ?`, say), which cost more than the rest of an idle sync.
pub(crate) fn tune_statements(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(256);
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Puts the database in WAL mode (readers beside one writer). Switching a file to WAL takes an
/// exclusive lock for which SQLite calls no busy handler: when several processes open one new
/// file together (server replicas, the app beside the runtime), the losers retry for up to
/// 30 s instead of failing with "database is locked". In-memory databases stay in "memory".
pub(crate) fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.map(|_| ()),
        }
    }
}

impl Store {
    /// Opens (creating if missing) and migrates the database at `path`.
    pub fn open(path: impl AsRef<Path>, app: &'static App) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        Self::from_connection(
            Connection::open(&path)?,
            app,
            Timestamp::now,
            Some(path),
            None,
        )
    }

    /// An in-memory database, for tests and tools.
    pub fn open_in_memory(app: &'static App) -> Result<Store, StoreError> {
        Self::from_connection(
            Connection::open_in_memory()?,
            app,
            Timestamp::now,
            None,
            None,
        )
    }

    /// Opens with another wall clock, for simulations of devices whose clocks are skewed.
    pub fn open_with_wall_clock(
        path: impl AsRef<Path>,
        app: &'static App,
        wall: fn() -> Timestamp,
    ) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        Self::from_connection(Connection::open(&path)?, app, wall, Some(path), None)
    }

    /// A second connection to the same database file sharing this one's clock, for the sync
    /// engine to work beside the app (WAL lets them read and write side by side).
    pub fn reopen(&self) -> Result<Store, StoreError> {
        let path = self.path.clone().ok_or_else(|| {
            StoreError::Sqlite(rusqlite::Error::InvalidPath(
                "an in-memory store cannot be reopened".into(),
            ))
        })?;
        Self::from_connection(
            Connection::open(&path)?,
            self.app,
            Timestamp::now,
            Some(path),
            Some(self.clock.clone()),
        )
    }

    /// Called after every local write (e.g. to schedule a sync soon after).
    pub fn set_write_hook(&mut self, hook: impl Fn() + Send + 'static) {
        self.write_hook = Some(Box::new(hook));
    }

    pub(crate) fn wrote(&self) {
        if let Some(h) = &self.write_hook {
            h();
        }
    }

    fn from_connection(
        mut conn: Connection,
        app: &'static App,
        wall: fn() -> Timestamp,
        path: Option<std::path::PathBuf>,
        shared_clock: Option<Arc<Clock>>,
    ) -> Result<Store, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // WAL lets the app read while a sync writes.
        enable_wal(&conn)?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
        tune_statements(&conn)?;
        migrate::apply_sqlite(&mut conn, RUNTIME_SCOPE, RUNTIME_MIGRATIONS)?;
        migrate::apply_sqlite(&mut conn, APP_SCOPE, app.device_migrations)?;
        capture::install(&conn, app)?;

        let device_id = state::device_id(&conn)?;
        let token = token::TokenKeeper::for_database(path.as_deref());
        token.move_out(&conn)?;
        let clock = match shared_clock {
            Some(c) => c,
            None => Arc::new(Clock::with_wall_clock(
                state::largest_stamp(&conn, app)?,
                wall,
            )),
        };
        let c = Arc::clone(&clock);
        // `sync_stamp(previous)`: the clock's next stamp for a row whose stamp was `previous`.
        conn.create_scalar_function("sync_stamp", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
            let previous = match ctx.get_raw(0) {
                rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t)
                    .ok()
                    .and_then(|s| Timestamp::parse_lenient(s).ok()),
                _ => None,
            };
            Ok(c.stamp(previous).to_wire())
        })?;
        conn.create_scalar_function("sync_new_id", 0, FunctionFlags::SQLITE_UTF8, |_| {
            Ok(uuid::Uuid::now_v7().to_string())
        })?;
        // A sync interrupted by a crash leaves no stuck flag behind.
        state::clear_stuck_syncing(&conn)?;
        Ok(Store {
            conn,
            app,
            clock,
            device_id,
            path,
            write_hook: None,
            token,
            owner: std::sync::Mutex::new(None),
            sql: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// A write transaction that takes SQLite's write lock at its start, waiting (the busy
    /// timeout) while the app's own connection writes. A deferred one would read first and then
    /// fail at once with "database is locked" when it must write after the app committed.
    pub(crate) fn write_transaction(&self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        rusqlite::Transaction::new_unchecked(&self.conn, rusqlite::TransactionBehavior::Immediate)
    }

    /// The database connection, for the app's own reads. Writes to synced tables belong to the
    /// store's write path, which keeps them dirty-tracked and stamped.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn app(&self) -> &'static App {
        self.app
    }

    /// This database's device id, made once when it was first opened.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The `kind` statement of `table`, built by `build` the first time.
    pub(crate) fn sql(&self, table: &Table, kind: Sql, build: impl FnOnce() -> String) -> Arc<str> {
        let mut cache = self.sql.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((std::ptr::from_ref(table) as usize, kind))
            .or_insert_with(|| build().into())
            .clone()
    }

    pub(crate) fn table(&self, name: &str) -> Result<&'static Table, StoreError> {
        self.app
            .schema
            .table(name)
            .ok_or_else(|| StoreError::UnknownTable(name.to_owned()))
    }

    /// The synced tables, children before parents: deletes in this order never wait on a parent.
    fn synced_children_first(&self) -> Vec<&'static Table> {
        let mut tables: Vec<&'static Table> = self.app.schema.synced().collect();
        tables.reverse();
        tables
    }
}
