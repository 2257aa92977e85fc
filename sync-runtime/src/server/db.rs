//! The server's two storage backends behind one transaction interface.
//!
//! Every storage operation (auth, push, pull, purge) is written once, generic over [`SyncTx`],
//! with its statements built by sea-query for the backend's dialect. SQLite runs it on a blocking
//! thread (rusqlite is synchronous, so each await completes at once); PostgreSQL runs it on the
//! async pool. [`with_tx!`] expands one body for each backend.

use crate::ddl::Dialect;
use crate::schema::ColumnType;
use crate::value::Value;
use rusqlite::{Connection, TransactionBehavior};
use sea_query::{PostgresQueryBuilder, QueryStatementBuilder, SqliteQueryBuilder};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL's own report (message, code, detail, hint), not tokio-postgres's `db error`.
    #[error("postgres: {}", super::pg_error::Report(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error("stored value: {0}")]
    Decode(String),
    #[error("a blocking task failed: {0}")]
    Join(String),
}

impl DbError {
    /// Whether the error is a unique-constraint violation (two writers raced for one key).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            DbError::Postgres(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
            }
            _ => false,
        }
    }
}

/// One transaction on either backend.
#[allow(async_fn_in_trait)]
pub trait SyncTx {
    fn dialect(&self) -> Dialect;

    /// Runs a query and decodes each row's columns as `types`.
    async fn query(
        &mut self,
        sql: &str,
        params: &[Value],
        types: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>, DbError>;

    /// Runs a statement; returns the rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;

    /// Runs a query whose first `width` parameters are arrays, one per column of `rows` (the
    /// rows' values, one row after another), and whose others are `params`: a batch unpacked
    /// by PostgreSQL's `UNNEST`. SQLite has no arrays, and answers with an error.
    async fn query_columns(
        &mut self,
        sql: &str,
        rows: &[Value],
        width: usize,
        params: &[Value],
        types: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>, DbError> {
        let _ = (sql, rows, width, params, types);
        Err(DbError::Decode(format!(
            "{:?} binds no arrays",
            self.dialect()
        )))
    }

    /// Builds a sea-query statement for this backend.
    fn build(&self, stmt: &impl QueryStatementBuilder) -> (String, Vec<Value>) {
        let (sql, values) = match self.dialect() {
            Dialect::Sqlite => stmt.build_any(&SqliteQueryBuilder),
            Dialect::Postgres => stmt.build_any(&PostgresQueryBuilder),
        };
        (sql, values.0.into_iter().map(from_sea).collect())
    }

    async fn fetch(
        &mut self,
        stmt: &impl QueryStatementBuilder,
        types: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>, DbError> {
        let (sql, params) = self.build(stmt);
        self.query(&sql, &params, types).await
    }

    async fn run(&mut self, stmt: &impl QueryStatementBuilder) -> Result<u64, DbError> {
        let (sql, params) = self.build(stmt);
        self.execute(&sql, &params).await
    }
}

/// A sea-query value as the runtime's typed value.
fn from_sea(v: sea_query::Value) -> Value {
    use sea_query::Value as S;
    match v {
        S::Bool(Some(b)) => Value::Boolean(b),
        S::TinyInt(Some(i)) => Value::Integer(i.into()),
        S::SmallInt(Some(i)) => Value::Integer(i.into()),
        S::Int(Some(i)) => Value::Integer(i.into()),
        S::BigInt(Some(i)) => Value::Integer(i),
        S::TinyUnsigned(Some(i)) => Value::Integer(i.into()),
        S::SmallUnsigned(Some(i)) => Value::Integer(i.into()),
        S::Unsigned(Some(i)) => Value::Integer(i.into()),
        S::BigUnsigned(Some(i)) => Value::Integer(i64::try_from(i).unwrap_or(i64::MAX)),
        S::Float(Some(f)) => Value::Real(f.into()),
        S::Double(Some(f)) => Value::Real(f),
        S::String(Some(s)) => Value::Text(s),
        S::Char(Some(c)) => Value::Text(c.to_string()),
        _ => Value::Null,
    }
}

// ---------------------------------------------------------------- SQLite

/// The embedded backend: one writer connection, and readers that WAL lets run beside it.
#[derive(Clone)]
pub struct SqliteDb {
    inner: Arc<SqliteInner>,
}

struct SqliteInner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

const SQLITE_READERS: usize = 4;

fn sqlite_connection(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    crate::store::tune_statements(&conn)?;
    Ok(conn)
}

impl SqliteDb {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let writer = sqlite_connection(path)?;
        let readers = (0..SQLITE_READERS)
            .map(|_| sqlite_connection(path).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(SqliteDb {
            inner: Arc::new(SqliteInner {
                writer: Mutex::new(writer),
                readers,
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// Runs `f` in a transaction on the writer (`write`) or on a reader; commits if it returns Ok.
    pub fn transaction<R, E: From<DbError>>(
        &self,
        write: bool,
        f: impl FnOnce(&mut SqliteTx<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let lock = if write {
            &self.inner.writer
        } else {
            let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.readers.len();
            &self.inner.readers[i]
        };
        // A panic while holding the lock leaves the connection usable: its transaction rolled
        // back when the guard's Transaction was dropped.
        let mut conn = lock.lock().unwrap_or_else(|e| e.into_inner());
        let behavior = if write {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = conn
            .transaction_with_behavior(behavior)
            .map_err(DbError::from)?;
        let mut stx = SqliteTx { tx };
        let r = f(&mut stx)?;
        stx.tx.commit().map_err(DbError::from)?;
        Ok(r)
    }

    /// Runs `f` with the writer connection outside any transaction (migrations manage their own).
    pub fn with_writer<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> R {
        let mut conn = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn)
    }
}

pub struct SqliteTx<'c> {
    tx: rusqlite::Transaction<'c>,
}

impl SyncTx for SqliteTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[Value],
        types: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>, DbError> {
        let mut stmt = self.tx.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut vals = Vec::with_capacity(types.len());
            for (i, ty) in types.iter().enumerate() {
                vals.push(
                    Value::from_sqlite(*ty, row.get_ref(i)?).map_err(|e| DbError::Decode(e.0))?,
                );
            }
            out.push(vals);
        }
        Ok(out)
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut stmt = self.tx.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params.iter()))? as u64)
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// The backend for scale: a pool of connections to one PostgreSQL database, shared by any
/// number of server processes.
#[derive(Clone)]
pub struct PgDb {
    pub pool: deadpool_postgres::Pool,
}

impl PgDb {
    pub fn connect(url: &str, max_connections: usize) -> Result<Self, DbError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(DbError::Postgres)?;
        // Every statement of the server is meant for an index (each is scoped to one account,
        // and the sequence, natural keys and references are indexed). A table scan wins only
        // when the planner believes a table nearly empty: with statistics of when it was
        // empty, or in a generic plan prepared then; that scan then reads a whole account per
        // lookup. Scans stay possible where no index serves (purging).
        let options = match config.get_options() {
            Some(given) => format!("{given} -c enable_seqscan=off"),
            None => "-c enable_seqscan=off".to_owned(),
        };
        config.options(options);
        let manager = deadpool_postgres::Manager::from_config(
            config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(max_connections)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        Ok(PgDb { pool })
    }

    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(|e| match e {
            // PostgreSQL refused the connection: its own report, not the pool's summary.
            deadpool_postgres::PoolError::Backend(e) => DbError::Postgres(e),
            other => DbError::Pool(other.to_string()),
        })
    }
}

pub struct PgTx<'c> {
    pub tx: deadpool_postgres::Transaction<'c>,
}

/// A value bound as a PostgreSQL parameter of the column's type.
#[derive(Debug)]
struct PgValue<'a>(&'a Value);

impl tokio_postgres::types::ToSql for PgValue<'_> {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use tokio_postgres::types::Type;
        match self.0 {
            Value::Null => Ok(tokio_postgres::types::IsNull::Yes),
            Value::Integer(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Integer(i) if *ty == Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
            Value::Integer(i) => i.to_sql(ty, out),
            Value::Real(f) => f.to_sql(ty, out),
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Boolean(b) => b.to_sql(ty, out),
            Value::DateTime(t) => t.to_wire().to_sql(ty, out),
            Value::Json(j) => j.as_str().to_sql(ty, out),
        }
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

fn decode_pg(row: &tokio_postgres::Row, i: usize, ty: ColumnType) -> Result<Value, DbError> {
    let text = |row: &tokio_postgres::Row| row.try_get::<_, Option<String>>(i);
    Ok(match ty {
        ColumnType::Integer => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Integer),
        ColumnType::Real => row
            .try_get::<_, Option<f64>>(i)?
            .map_or(Value::Null, Value::Real),
        ColumnType::Boolean => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, Value::Boolean),
        ColumnType::Text => text(row)?.map_or(Value::Null, Value::Text),
        ColumnType::DateTime => match text(row)? {
            None => Value::Null,
            Some(s) => Value::DateTime(
                crate::Timestamp::parse_lenient(&s).map_err(|e| DbError::Decode(e.to_string()))?,
            ),
        },
        ColumnType::Json => match text(row)? {
            None => Value::Null,
            Some(s) => crate::value::JsonText::parse_value(s)
                .map_err(|e| DbError::Decode(e.to_string()))?,
        },
    })
}

/// A parameter as tokio-postgres takes it.
type PgParam<'a> = dyn tokio_postgres::types::ToSql + Sync + 'a;

/// `bound` as the parameter list tokio-postgres takes.
fn as_params<'a, T: tokio_postgres::types::ToSql + Sync + 'a>(
    bound: &'a [T],
) -> impl Iterator<Item = &'a PgParam<'a>> {
    bound.iter().map(|v| v as &PgParam<'a>)
}

fn decode_rows(
    rows: &[tokio_postgres::Row],
    types: &[ColumnType],
) -> Result<Vec<Vec<Value>>, DbError> {
    rows.iter()
        .map(|row| {
            types
                .iter()
                .enumerate()
                .map(|(i, ty)| decode_pg(row, i, *ty))
                .collect()
        })
        .collect()
}

impl SyncTx for PgTx<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn query(
        &mut self,
        sql: &str,
        params: &[Value],
        types: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>, DbError> {
        let stmt = self.tx.prepare_cached(sql).await?;
        let bound: Vec<PgValue<'_>> = params.iter().map(PgValue).collect();
        let refs: Vec<&PgParam<'_>> = as_params(&bound).collect();
        let rows = self.tx.query(&stmt, &refs).await?;
        decode_rows(&rows, types)
    }

    async fn query_columns(
        &mut self,
        sql: &str,
        rows: &[Value],
        width: usize,
        params: &[Value],
        types: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>, DbError> {
        let stmt = self.tx.prepare_cached(sql).await?;
        let columns: Vec<Vec<PgValue<'_>>> = (0..width)
            .map(|c| rows.iter().skip(c).step_by(width).map(PgValue).collect())
            .collect();
        let scalars: Vec<PgValue<'_>> = params.iter().map(PgValue).collect();
        let refs: Vec<&PgParam<'_>> = as_params(&columns).chain(as_params(&scalars)).collect();
        let found = self.tx.query(&stmt, &refs).await?;
        decode_rows(&found, types)
    }

    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let stmt = self.tx.prepare_cached(sql).await?;
        let bound: Vec<PgValue<'_>> = params.iter().map(PgValue).collect();
        let refs: Vec<&PgParam<'_>> = as_params(&bound).collect();
        Ok(self.tx.execute(&stmt, &refs).await?)
    }
}

// ---------------------------------------------------------------- Either

#[derive(Clone)]
pub enum Db {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

/// Runs `$body` (an expression using `$tx: &mut impl SyncTx` that returns
/// `Result<_, ApiError>`) in one transaction on whichever backend `$db` is, committing on Ok.
/// `$write` picks the SQLite writer (and, on PostgreSQL, read-write) or a read-only snapshot.
#[macro_export]
#[doc(hidden)]
macro_rules! with_tx {
    ($db:expr, $write:expr, |$tx:ident| $body:expr) => {{
        use $crate::server::db::{Db, DbError, PgTx};
        use $crate::server::error::ApiError;
        match $db {
            Db::Sqlite(s) => {
                let s = s.clone();
                let handle = ::tokio::runtime::Handle::current();
                ::tokio::task::spawn_blocking(move || {
                    s.transaction($write, |$tx| handle.block_on(async { $body }))
                })
                .await
                .map_err(|e| ApiError::from(DbError::Join(e.to_string())))?
            }
            Db::Postgres(p) => {
                let mut client = p.client().await?;
                let builder = client.build_transaction();
                let builder = if $write {
                    builder
                } else {
                    // One snapshot for every query of a pull.
                    builder
                        .isolation_level(::tokio_postgres::IsolationLevel::RepeatableRead)
                        .read_only(true)
                };
                let tx = builder.start().await.map_err(DbError::from)?;
                let mut pg = PgTx { tx };
                let r = {
                    let $tx = &mut pg;
                    async { $body }.await
                };
                match r {
                    Ok(v) => {
                        pg.tx.commit().await.map_err(DbError::from)?;
                        Ok(v)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }};
}

/// A new record or device id: a canonical lowercase UUIDv7.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
