//! The device's local store: opens and migrates the app's SQLite database and gives the app a
//! write path in which every insert, update and delete of a Syncable entity marks the row dirty
//! and stamps `updated_at` from the sync clock. Deletes are tombstones that cascade to CASCADE
//! children and null SET NULL references. The app never writes bookkeeping columns by hand.

use crate::App;
use crate::clock::Clock;
use crate::ddl::quote_ident;
use crate::migrate::{self, MigrateError, Migration};
use crate::schema::{ColumnRole, ColumnType, OnDelete, Table, UPDATED_AT};
use crate::syncable::Syncable;
use crate::timestamp::Timestamp;
use crate::value::{Value, ValueError};
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// What an account-id column holds before the database is first connected to an account;
/// connecting replaces it with the account's user id.
pub const LOCAL_ACCOUNT: &str = "local";

/// The migration scope of the runtime's own device tables.
pub const RUNTIME_SCOPE: &str = "sync-runtime";
/// The migration scope of the app's entity tables.
pub const APP_SCOPE: &str = "app";

/// The runtime's own device tables: `sync_state` (the seed's columns, created if the app did
/// not have it, plus what the runtime needs), rejected rows, pulled rows waiting for a parent or
/// for a natural key to free up, and non-synced rows removed while tombstones still point at them.
pub const RUNTIME_MIGRATIONS: &[Migration] = &[
    Migration::new(
        1,
        "0001_sync_state",
        "CREATE TABLE IF NOT EXISTS sync_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        remote_url TEXT,
        remote_user_id TEXT,
        auth_token TEXT,
        last_sync_at DATETIME,
        is_syncing BOOLEAN DEFAULT FALSE
    );
    ALTER TABLE sync_state ADD COLUMN device_id TEXT;
    ALTER TABLE sync_state ADD COLUMN synced_user_id TEXT;
    ALTER TABLE sync_state ADD COLUMN cursor TEXT;
    ALTER TABLE sync_state ADD COLUMN last_error TEXT;
    ALTER TABLE sync_state ADD COLUMN clock DATETIME;
    INSERT INTO sync_state (id) SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM sync_state WHERE id = 1);
    CREATE TABLE sync_rejected (
        table_name TEXT NOT NULL,
        row_id INTEGER NOT NULL,
        updated_at DATETIME NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (table_name, row_id)
    );
    CREATE TABLE sync_parked (
        table_name TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        row TEXT NOT NULL,
        PRIMARY KEY (table_name, remote_id)
    );
    CREATE TABLE sync_removed (
        table_name TEXT NOT NULL,
        row_id INTEGER NOT NULL,
        PRIMARY KEY (table_name, row_id)
    );",
    ),
    Migration::new(
        2,
        "0002_full_pull",
        "ALTER TABLE sync_state ADD COLUMN full_pull BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE TABLE sync_seen (
        table_name TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        PRIMARY KEY (table_name, remote_id)
    ) WITHOUT ROWID;",
    ),
    // The account's email, so the settings screen names the account a person signed in with.
    Migration::new(
        3,
        "0003_account_email",
        "ALTER TABLE sync_state ADD COLUMN remote_email TEXT;",
    ),
];

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

/// The local database of one device.
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) app: &'static App,
    pub(crate) clock: Arc<Clock>,
    pub(crate) device_id: String,
    pub(crate) path: Option<std::path::PathBuf>,
    pub(crate) write_hook: Option<Box<dyn Fn() + Send>>,
    /// `sync_state.remote_user_id` while a pulled page is applied ([`Store::with_account`]):
    /// every pulled row needs it.
    pub(crate) account: std::sync::Mutex<Option<String>>,
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
        // WAL lets the app read while a sync writes; in-memory databases stay in "memory" mode.
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")?;
        tune_statements(&conn)?;
        migrate::apply_sqlite(&mut conn, RUNTIME_SCOPE, RUNTIME_MIGRATIONS)?;
        migrate::apply_sqlite(&mut conn, APP_SCOPE, app.device_migrations)?;

        let device_id: Option<String> =
            conn.query_row("SELECT device_id FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })?;
        let device_id = match device_id {
            Some(id) => id,
            None => {
                // Made once per local database, in the database, so a copy keeps it.
                let id = uuid::Uuid::now_v7().to_string();
                conn.execute("UPDATE sync_state SET device_id = ?1 WHERE id = 1", [&id])?;
                id
            }
        };
        let clock = match shared_clock {
            Some(c) => c,
            None => Arc::new(Clock::with_wall_clock(largest_stamp(&conn, app)?, wall)),
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
        conn.execute("UPDATE sync_state SET is_syncing = FALSE WHERE id = 1", [])?;
        Ok(Store {
            conn,
            app,
            clock,
            device_id,
            path,
            write_hook: None,
            account: std::sync::Mutex::new(None),
            sql: std::sync::Mutex::new(HashMap::new()),
        })
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

    /// The id written into account-id columns: the connected account's, or a placeholder.
    pub fn account_id(&self) -> Result<String, StoreError> {
        if let Some(id) = &*self.account.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(id.clone());
        }
        let id: Option<String> = self.conn.query_row(
            "SELECT remote_user_id FROM sync_state WHERE id = 1",
            [],
            |r| r.get(0),
        )?;
        Ok(id.unwrap_or_else(|| LOCAL_ACCOUNT.to_owned()))
    }

    /// The email of the account this database was last connected to (kept after a
    /// disconnect, so signing in again can offer it).
    pub fn account_email(&self) -> Result<Option<String>, StoreError> {
        Ok(self.conn.query_row(
            "SELECT remote_email FROM sync_state WHERE id = 1",
            [],
            |r| r.get(0),
        )?)
    }

    /// Records the email the account was signed in with.
    pub fn save_account_email(&mut self, email: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE sync_state SET remote_email = ?1 WHERE id = 1",
            [email],
        )?;
        Ok(())
    }

    /// Runs `f` with the account id read once (a sync step writes many rows, and nothing in
    /// it changes the account).
    pub(crate) fn with_account<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let id = self.account_id()?;
        *self.account.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        let r = f(self);
        *self.account.lock().unwrap_or_else(|e| e.into_inner()) = None;
        r
    }

    /// Inserts `entity`, sets its local id and returns it. A synced row is stamped, dirty and
    /// given its `remote_id`; a new row whose natural key matches a tombstone revives it.
    pub fn insert<T: Syncable>(&mut self, entity: &mut T) -> Result<i64, StoreError> {
        let id = self.insert_values(T::TABLE_NAME, entity.local_id(), entity.to_values())?;
        entity.set_local_id(id);
        Ok(id)
    }

    /// Writes `entity` over its stored row (found by its local id), stamping it and marking it
    /// dirty.
    pub fn update<T: Syncable>(&mut self, entity: &T) -> Result<(), StoreError> {
        let table = T::table();
        let id = entity.local_id().ok_or_else(|| StoreError::NotFound {
            table: table.name.clone(),
            id: 0,
        })?;
        self.update_values(T::TABLE_NAME, id, entity.to_values())
    }

    /// Deletes the row `id` of `T`: a tombstone that cascades to its children.
    pub fn delete<T: Syncable>(&mut self, id: i64) -> Result<(), StoreError> {
        self.delete_row(T::TABLE_NAME, id)
    }

    /// The live row `id` of `T`.
    pub fn get<T: Syncable>(&self, id: i64) -> Result<Option<T>, StoreError> {
        let table = T::table();
        let Some(values) = self.get_values(&table.name, id)? else {
            return Ok(None);
        };
        T::from_values(id, values)
            .map(Some)
            .map_err(|e| value_err(table, e))
    }

    /// Every live row of `T`, by local id.
    pub fn list<T: Syncable>(&self) -> Result<Vec<T>, StoreError> {
        let table = T::table();
        self.list_values(&table.name)?
            .into_iter()
            .map(|(id, values)| T::from_values(id, values).map_err(|e| value_err(table, e)))
            .collect()
    }

    fn select_list(table: &Table) -> String {
        let mut cols = vec![quote_ident(&table.id_column)];
        cols.extend(table.columns.iter().map(|c| quote_ident(&c.name)));
        cols.join(", ")
    }

    fn live_filter(table: &Table) -> String {
        if table.synced {
            "deleted_at IS NULL".to_owned()
        } else {
            format!(
                "{} NOT IN (SELECT row_id FROM sync_removed WHERE table_name = {})",
                quote_ident(&table.id_column),
                crate::ddl::quote_literal(&table.name)
            )
        }
    }

    fn read_row(table: &Table, row: &rusqlite::Row<'_>) -> Result<(i64, Vec<Value>), StoreError> {
        let id: i64 = row.get(0)?;
        let mut values = Vec::with_capacity(table.columns.len());
        for (i, c) in table.columns.iter().enumerate() {
            let v = Value::from_sqlite(c.ty, row.get_ref(i + 1)?).map_err(|e| {
                value_err(
                    table,
                    ValueError(format!("row {id}, column `{}`: {}", c.name, e.0)),
                )
            })?;
            values.push(v);
        }
        Ok((id, values))
    }

    /// The app columns of the live row `id` of `table`.
    pub fn get_values(&self, table: &str, id: i64) -> Result<Option<Vec<Value>>, StoreError> {
        let table = self.table(table)?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = ?1 AND {}",
            Self::select_list(table),
            quote_ident(&table.name),
            quote_ident(&table.id_column),
            Self::live_filter(table)
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(row) => Ok(Some(Self::read_row(table, row)?.1)),
            None => Ok(None),
        }
    }

    /// Every live row of `table` as (local id, app columns), by local id.
    pub fn list_values(&self, table: &str) -> Result<Vec<(i64, Vec<Value>)>, StoreError> {
        let table = self.table(table)?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {}",
            Self::select_list(table),
            quote_ident(&table.name),
            Self::live_filter(table),
            quote_ident(&table.id_column)
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(Self::read_row(table, row)?);
        }
        Ok(out)
    }

    /// The `remote_id` of row `id` of a synced table (tombstones included).
    pub fn remote_id(&self, table: &str, id: i64) -> Result<Option<String>, StoreError> {
        let table = self.table(table)?;
        let sql = format!(
            "SELECT remote_id FROM {} WHERE {} = ?1",
            quote_ident(&table.name),
            quote_ident(&table.id_column)
        );
        Ok(self
            .conn
            .query_row(&sql, [id], |r| r.get(0))
            .optional()?
            .flatten())
    }

    /// Whether row `id` waits to be pushed.
    pub fn is_dirty(&self, table: &str, id: i64) -> Result<bool, StoreError> {
        let table = self.table(table)?;
        let sql = format!(
            "SELECT dirty FROM {} WHERE {} = ?1",
            quote_ident(&table.name),
            quote_ident(&table.id_column)
        );
        Ok(self
            .conn
            .query_row(&sql, [id], |r| r.get(0))
            .optional()?
            .unwrap_or(false))
    }

    /// How many rows of each synced table wait to be pushed, parents first.
    pub fn dirty_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.app
            .schema
            .synced()
            .map(|t| {
                let n: i64 = self.conn.query_row(
                    &format!(
                        "SELECT count(*) FROM {} WHERE dirty = TRUE",
                        quote_ident(&t.name)
                    ),
                    [],
                    |r| r.get(0),
                )?;
                Ok((t.name.clone(), n as u64))
            })
            .collect()
    }

    /// Checks a row of app values against its table before it is written.
    fn check_values(&self, table: &Table, values: &mut [Value]) -> Result<(), StoreError> {
        if values.len() != table.columns.len() {
            return Err(value_err(
                table,
                ValueError(format!(
                    "{} values for {} columns",
                    values.len(),
                    table.columns.len()
                )),
            ));
        }
        let account = if table
            .columns
            .iter()
            .any(|c| c.role == ColumnRole::AccountId)
        {
            Some(self.account_id()?)
        } else {
            None
        };
        for (c, v) in table.columns.iter().zip(values.iter_mut()) {
            if c.role == ColumnRole::AccountId {
                *v = Value::Text(account.clone().unwrap_or_default());
            }
            let fits = match (c.ty, &*v) {
                (_, Value::Null) => c.nullable || c.name == UPDATED_AT,
                (ColumnType::Integer, Value::Integer(_))
                | (ColumnType::Real, Value::Real(_))
                | (ColumnType::Text, Value::Text(_))
                | (ColumnType::Boolean, Value::Boolean(_))
                | (ColumnType::DateTime, Value::DateTime(_))
                | (ColumnType::Json, Value::Json(_)) => true,
                _ => false,
            };
            if !fits {
                let want = if v.is_null() {
                    "a value".to_owned()
                } else {
                    format!("{:?}", c.ty)
                };
                return Err(value_err(
                    table,
                    ValueError(format!(
                        "column `{}` needs {want}, got {}",
                        c.name,
                        v.kind()
                    )),
                ));
            }
        }
        Ok(())
    }

    /// The row whose natural key `key` equals the one in `values`, if any (keys with a NULL
    /// match nothing). Returns (id, is_tombstone).
    fn find_by_natural_key(
        &self,
        table: &Table,
        key: &[String],
        values: &[Value],
        except: Option<i64>,
    ) -> Result<Option<(i64, bool)>, StoreError> {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        for k in key {
            let i = table.column_index(k).unwrap_or_default();
            if values[i].is_null() {
                return Ok(None);
            }
            conds.push(format!("{} = ?", quote_ident(k)));
            params.push(values[i].clone());
        }
        let tombstone = if table.synced {
            "deleted_at IS NOT NULL".to_owned()
        } else {
            format!("NOT ({})", Self::live_filter(table))
        };
        let sql = format!(
            "SELECT {id}, {tombstone} FROM {t} WHERE {conds}{except}",
            id = quote_ident(&table.id_column),
            t = quote_ident(&table.name),
            conds = conds.join(" AND "),
            except = except.map_or(String::new(), |e| format!(
                " AND {} <> {e}",
                quote_ident(&table.id_column)
            )),
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params_from_iter(params.iter()), |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// Inserts a row of `table` from its app values in column order (what the command line and
    /// the typed [`Store::insert`] use). Returns the local id.
    pub fn insert_values(
        &mut self,
        table: &str,
        id: Option<i64>,
        mut values: Vec<Value>,
    ) -> Result<i64, StoreError> {
        let table = self.table(table)?;
        self.check_values(table, &mut values)?;
        let tx = self.conn.unchecked_transaction()?;
        for key in &table.natural_keys {
            if let Some((existing, tombstone)) =
                self.find_by_natural_key(table, key, &values, None)?
            {
                if !tombstone {
                    return Err(StoreError::Conflict {
                        table: table.name.clone(),
                        key: format!("({})", key.join(", ")),
                        existing,
                    });
                }
                // Re-adding a deleted record revives it: same record, same remote id.
                self.write_values(table, existing, &values, true)?;
                if !table.synced {
                    self.conn.execute(
                        "DELETE FROM sync_removed WHERE table_name = ?1 AND row_id = ?2",
                        (&table.name, existing),
                    )?;
                }
                tx.commit()?;
                self.wrote();
                return Ok(existing);
            }
        }
        let mut cols: Vec<String> = Vec::new();
        let mut exprs: Vec<String> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        if let Some(id) = id {
            cols.push(quote_ident(&table.id_column));
            exprs.push("?".into());
            params.push(Value::Integer(id));
        }
        for (c, v) in table.columns.iter().zip(values) {
            cols.push(quote_ident(&c.name));
            if table.synced && c.name == UPDATED_AT {
                exprs.push("sync_stamp(NULL)".into());
            } else {
                exprs.push("?".into());
                params.push(v);
            }
        }
        if table.synced {
            cols.extend(["remote_id".to_owned(), "dirty".to_owned()]);
            exprs.extend(["?".to_owned(), "TRUE".to_owned()]);
            params.push(Value::Text(uuid::Uuid::now_v7().to_string()));
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote_ident(&table.name),
            cols.join(", "),
            exprs.join(", ")
        );
        self.conn
            .prepare_cached(&sql)?
            .execute(params_from_iter(params.iter()))?;
        let id = self.conn.last_insert_rowid();
        tx.commit()?;
        self.wrote();
        Ok(id)
    }

    /// Writes the app values of row `id`, stamping it and marking it dirty (reviving it if
    /// `revive`). Returns whether a row was written.
    fn write_values(
        &self,
        table: &Table,
        id: i64,
        values: &[Value],
        revive: bool,
    ) -> Result<bool, StoreError> {
        let mut sets = Vec::new();
        let mut params = Vec::new();
        for (c, v) in table.columns.iter().zip(values) {
            if table.synced && c.name == UPDATED_AT {
                sets.push(format!(
                    "{} = sync_stamp({})",
                    quote_ident(&c.name),
                    quote_ident(&c.name)
                ));
            } else {
                sets.push(format!("{} = ?", quote_ident(&c.name)));
                params.push(v.clone());
            }
        }
        let mut filter = format!("{} = ?", quote_ident(&table.id_column));
        params.push(Value::Integer(id));
        let t = quote_ident(&table.name);
        if table.synced && !revive {
            // A row edited again before it was pushed is dirty already. Leaving `dirty` out of
            // its UPDATE leaves the dirty index alone: one page fewer to write per edit, a
            // third of what an edit costs.
            let sql = format!(
                "UPDATE {t} SET {} WHERE {filter} AND deleted_at IS NULL AND dirty",
                sets.join(", ")
            );
            if self
                .conn
                .prepare_cached(&sql)?
                .execute(params_from_iter(params.iter()))?
                > 0
            {
                return Ok(true);
            }
        }
        if table.synced {
            sets.push("dirty = TRUE".into());
            if revive {
                sets.push("deleted_at = NULL".into());
            } else {
                filter.push_str(" AND deleted_at IS NULL");
            }
        }
        let sql = format!("UPDATE {t} SET {} WHERE {filter}", sets.join(", "));
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .execute(params_from_iter(params.iter()))?
            > 0)
    }

    /// Updates row `id` of `table` from its app values in column order.
    pub fn update_values(
        &mut self,
        table: &str,
        id: i64,
        mut values: Vec<Value>,
    ) -> Result<(), StoreError> {
        let table = self.table(table)?;
        self.check_values(table, &mut values)?;
        if table.synced {
            // The common case is one autocommit UPDATE: the unique indexes tell whether another
            // row holds the new natural key, and only then is it looked up below.
            match self.write_values(table, id, &values, false) {
                Ok(true) => {
                    self.wrote();
                    return Ok(());
                }
                Ok(false) => {
                    return Err(StoreError::NotFound {
                        table: table.name.clone(),
                        id,
                    });
                }
                Err(StoreError::Sqlite(e)) if crate::engine::is_unique_violation(&e) => {}
                Err(e) => return Err(e),
            }
        }
        if !table.synced && self.get_values(&table.name, id)?.is_none() {
            return Err(StoreError::NotFound {
                table: table.name.clone(),
                id,
            });
        }
        let tx = self.conn.unchecked_transaction()?;
        for key in &table.natural_keys {
            if let Some((existing, tombstone)) =
                self.find_by_natural_key(table, key, &values, Some(id))?
            {
                let removable =
                    tombstone && table.synced && !self.is_dirty(&table.name, existing)?;
                if !removable {
                    // A key held by a live record, or by a tombstone that has not reached the
                    // server yet (removing it would lose the delete).
                    return Err(StoreError::Conflict {
                        table: table.name.clone(),
                        key: format!("({})", key.join(", ")),
                        existing,
                    });
                }
                // A synced tombstone gives its key up: the server merges this record into it.
                self.conn.execute(
                    &format!(
                        "DELETE FROM {} WHERE {} = ?1",
                        quote_ident(&table.name),
                        quote_ident(&table.id_column)
                    ),
                    [existing],
                )?;
            }
        }
        if !self.write_values(table, id, &values, false)? {
            return Err(StoreError::NotFound {
                table: table.name.clone(),
                id,
            });
        }
        tx.commit()?;
        self.wrote();
        Ok(())
    }

    /// Deletes row `id` of `table`. A synced row becomes a tombstone; its CASCADE children become
    /// tombstones and its SET NULL references are nulled, recursively, each stamped and dirty. A
    /// non-synced row (an add-on) first tombstones the synced rows that reference it, then stays
    /// hidden until those tombstones are pushed.
    pub fn delete_row(&mut self, table: &str, id: i64) -> Result<(), StoreError> {
        let table = self.table(table)?;
        let tx = self.conn.unchecked_transaction()?;
        if table.synced {
            let sql = format!(
                "UPDATE {t} SET {TOMBSTONE}, dirty = TRUE WHERE {id} = ?1 AND deleted_at IS NULL",
                t = quote_ident(&table.name),
                id = quote_ident(&table.id_column)
            );
            if self.conn.execute(&sql, [id])? == 0 {
                return Err(StoreError::NotFound {
                    table: table.name.clone(),
                    id,
                });
            }
        } else {
            if self.get_values(&table.name, id)?.is_none() {
                return Err(StoreError::NotFound {
                    table: table.name.clone(),
                    id,
                });
            }
            self.conn.execute(
                "INSERT INTO sync_removed (table_name, row_id) VALUES (?1, ?2)",
                (&table.name, id),
            )?;
        }
        self.cascade(table, id)?;
        tx.commit()?;
        self.wrote();
        Ok(())
    }

    pub(crate) fn cascade(&self, parent: &Table, id: i64) -> Result<(), StoreError> {
        for (child, col, r) in self.app.schema.children_of(&parent.name) {
            if !child.synced {
                continue;
            }
            let (t, c, cid) = (
                quote_ident(&child.name),
                quote_ident(&col.name),
                quote_ident(&child.id_column),
            );
            match r.on_delete {
                OnDelete::Cascade => {
                    let ids: Vec<i64> = self
                        .conn
                        .prepare_cached(&format!(
                            "SELECT {cid} FROM {t} WHERE {c} = ?1 AND deleted_at IS NULL"
                        ))?
                        .query_map([id], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    for child_id in ids {
                        self.conn.execute(
                            &format!("UPDATE {t} SET {TOMBSTONE}, dirty = TRUE WHERE {cid} = ?1"),
                            [child_id],
                        )?;
                        self.cascade(child, child_id)?;
                    }
                }
                OnDelete::SetNull => {
                    self.conn.execute(
                        &format!(
                            "UPDATE {t} SET {c} = NULL, updated_at = sync_stamp(updated_at), dirty = TRUE \
                             WHERE {c} = ?1 AND deleted_at IS NULL"
                        ),
                        [id],
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// The largest stamp stored anywhere (rows of every synced table and the saved clock), from
/// which the clock resumes.
fn largest_stamp(conn: &Connection, app: &App) -> Result<Timestamp, StoreError> {
    let mut parts: Vec<String> = app
        .schema
        .synced()
        .map(|t| format!("SELECT max(updated_at) AS m FROM {}", quote_ident(&t.name)))
        .collect();
    parts.push("SELECT clock AS m FROM sync_state".into());
    let sql = format!("SELECT max(m) FROM ({})", parts.join(" UNION ALL "));
    let max: Option<String> = conn.query_row(&sql, [], |r| r.get(0))?;
    Ok(max
        .and_then(|s| Timestamp::parse_lenient(&s).ok())
        .unwrap_or(Timestamp::MIN))
}
