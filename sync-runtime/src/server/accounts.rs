//! An account's life after sign-up, in storage: its password changed, its tokens listed and
//! revoked, its data exported, the account deleted with every row it owns, an operator's
//! disabling. Written once for both backends over [`SyncTx`]; the HTTP endpoints are in
//! `account_routes.rs`, the operator's commands in `admin.rs`.

use crate::ddl::Dialect;
use crate::migrate::Migration;
use crate::protocol::account::SessionInfo;
use crate::schema::{ColumnType, Schema};
use crate::server::Server;
use crate::server::db::{DbError, SyncTx};
use crate::server::error::ApiError;
use crate::server::sync::{self, PullInput, Record};
use crate::timestamp::Timestamp;
use crate::value::Value;
use sea_query::{
    Alias, ColumnDef, Expr, ExprTrait, Func, Order, PostgresQueryBuilder, Query,
    SqliteQueryBuilder, Table,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The runtime's second server migration: when an operator disabled an account, and when each
/// token was last used (the account's list of signed-in devices shows it).
pub(crate) fn migration(dialect: Dialect) -> Migration {
    let text = |name: &str| {
        let mut c = ColumnDef::new(name.to_owned());
        c.custom("TEXT".to_owned());
        c
    };
    let mut disabled = Table::alter();
    disabled.table("sync_users").add_column(text("disabled_at"));
    let mut last_used = Table::alter();
    last_used
        .table("sync_tokens")
        .add_column(text("last_used_at"));
    let sql: Vec<String> = match dialect {
        Dialect::Sqlite => vec![
            disabled.to_string(SqliteQueryBuilder),
            last_used.to_string(SqliteQueryBuilder),
        ],
        Dialect::Postgres => vec![
            disabled.to_string(PostgresQueryBuilder),
            last_used.to_string(PostgresQueryBuilder),
        ],
    };
    Migration {
        version: 2,
        name: "0002_account_management".into(),
        sql: (sql.join(";\n") + ";").into(),
    }
}

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub user_id: String,
    pub email: String,
    pub created_at: String,
    /// When an operator disabled it (it cannot sign in).
    pub disabled_at: Option<String>,
}

/// Hex digits of a token's hash that name it in the list.
pub(crate) const TOKEN_ID_CHARS: usize = 16;

fn text_at(row: &[Value], i: usize) -> Option<String> {
    match row.get(i) {
        Some(Value::Text(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_at(row: &[Value], i: usize) -> i64 {
    match row.get(i) {
        Some(Value::Integer(n)) => *n,
        _ => 0,
    }
}

/// The account `user_id`, if it exists.
pub async fn account_by_id<T: SyncTx>(
    tx: &mut T,
    user_id: &str,
) -> Result<Option<Account>, DbError> {
    find_account(tx, "user_id", user_id).await
}

/// The account with this (normalised) email, if it exists.
pub async fn account_by_email<T: SyncTx>(
    tx: &mut T,
    email: &str,
) -> Result<Option<Account>, DbError> {
    find_account(tx, "email", email).await
}

async fn find_account<T: SyncTx>(
    tx: &mut T,
    column: &str,
    value: &str,
) -> Result<Option<Account>, DbError> {
    let mut q = Query::select();
    q.columns(ACCOUNT_COLUMNS)
        .from("sync_users")
        .and_where(Expr::col(column.to_owned()).eq(value));
    Ok(tx
        .fetch(&q, &ACCOUNT_TYPES)
        .await?
        .first()
        .map(|r| account_of(r)))
}

/// The columns an [`Account`] is read from, in [`account_of`]'s order.
const ACCOUNT_COLUMNS: [&str; 4] = ["user_id", "email", "created_at", "disabled_at"];
const ACCOUNT_TYPES: [ColumnType; 4] = [ColumnType::Text; 4];

fn account_of(row: &[Value]) -> Account {
    Account {
        user_id: text_at(row, 0).unwrap_or_default(),
        email: text_at(row, 1).unwrap_or_default(),
        created_at: text_at(row, 2).unwrap_or_default(),
        disabled_at: text_at(row, 3),
    }
}

/// The stored password hash of `user_id`.
pub async fn password_hash<T: SyncTx>(
    tx: &mut T,
    user_id: &str,
) -> Result<Option<String>, DbError> {
    let mut q = Query::select();
    q.column("password_hash")
        .from("sync_users")
        .and_where(Expr::col("user_id").eq(user_id));
    Ok(tx
        .fetch(&q, &[ColumnType::Text])
        .await?
        .first()
        .and_then(|r| text_at(r, 0)))
}

pub async fn set_password_hash<T: SyncTx>(
    tx: &mut T,
    user_id: &str,
    hash: &str,
) -> Result<(), DbError> {
    let mut up = Query::update();
    up.table("sync_users")
        .value("password_hash", hash)
        .and_where(Expr::col("user_id").eq(user_id));
    tx.run(&up).await?;
    Ok(())
}

/// Revokes every live token of `user_id`; returns how many.
pub async fn revoke_all_tokens<T: SyncTx>(tx: &mut T, user_id: &str) -> Result<u64, DbError> {
    let mut up = Query::update();
    up.table("sync_tokens")
        .value("revoked_at", Timestamp::now().to_wire())
        .and_where(Expr::col("user_id").eq(user_id))
        .and_where(Expr::col("revoked_at").is_null());
    tx.run(&up).await
}

/// Sets (or clears) an account's disabled mark; a disabled account's tokens are revoked with
/// it. Returns whether the account exists.
pub async fn set_disabled<T: SyncTx>(
    tx: &mut T,
    user_id: &str,
    disabled: bool,
) -> Result<bool, DbError> {
    let mut up = Query::update();
    up.table("sync_users")
        .value("disabled_at", disabled.then(|| Timestamp::now().to_wire()))
        .and_where(Expr::col("user_id").eq(user_id));
    let found = tx.run(&up).await? == 1;
    if found && disabled {
        revoke_all_tokens(tx, user_id).await?;
    }
    Ok(found)
}

/// The sessions (live tokens) of `user_id`, oldest first; `current` is the asking token's hash.
pub async fn list_sessions<T: SyncTx>(
    tx: &mut T,
    user_id: &str,
    current: &str,
) -> Result<Vec<SessionInfo>, DbError> {
    let mut q = Query::select();
    q.columns(["token_hash", "created_at", "last_used_at", "expires_at"])
        .from("sync_tokens")
        .and_where(Expr::col("user_id").eq(user_id))
        .and_where(Expr::col("revoked_at").is_null())
        .and_where(Expr::col("expires_at").gt(Timestamp::now().to_wire()))
        .order_by("created_at", Order::Asc);
    Ok(tx
        .fetch(&q, &[ColumnType::Text; 4])
        .await?
        .into_iter()
        .map(|r| {
            let hash = text_at(&r, 0).unwrap_or_default();
            SessionInfo {
                id: hash.chars().take(TOKEN_ID_CHARS).collect(),
                created_at: text_at(&r, 1).unwrap_or_default(),
                last_used_at: text_at(&r, 2),
                expires_at: text_at(&r, 3).unwrap_or_default(),
                current: hash == current,
            }
        })
        .collect())
}

/// Revokes the session (live token) of `user_id` named `id`; returns whether there was one.
pub async fn revoke_session<T: SyncTx>(
    tx: &mut T,
    user_id: &str,
    id: &str,
) -> Result<bool, DbError> {
    let prefix = Func::cust(Alias::new("substr"))
        .arg(Expr::col("token_hash"))
        .arg(1)
        .arg(TOKEN_ID_CHARS as i64);
    let mut up = Query::update();
    up.table("sync_tokens")
        .value("revoked_at", Timestamp::now().to_wire())
        .and_where(Expr::col("user_id").eq(user_id))
        .and_where(Expr::expr(prefix).eq(id))
        .and_where(Expr::col("revoked_at").is_null());
    Ok(tx.run(&up).await? > 0)
}

/// Rows an account deletion removed, per table.
pub type Removed = BTreeMap<String, u64>;

/// Deletes the account `user_id` and every row it owns (its records in every synced table,
/// tombstones included, its aliases and its tokens), in the caller's transaction. The account's
/// row is locked first, as a push locks it, so a push in flight finishes before, and one that
/// waits finds no account. Returns `None` when there is no such account.
pub async fn delete_account<T: SyncTx>(
    tx: &mut T,
    schema: &Schema,
    user_id: &str,
) -> Result<Option<Removed>, DbError> {
    let mut lock = Query::update();
    lock.table("sync_users")
        .value("last_seq", Expr::col("last_seq"))
        .and_where(Expr::col("user_id").eq(user_id));
    if tx.run(&lock).await? != 1 {
        return Ok(None);
    }
    let mut removed = Removed::new();
    let tables: Vec<String> = schema
        .synced()
        .map(|t| t.name.clone())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .chain(["sync_aliases", "sync_tokens", "sync_users"].map(String::from))
        .collect();
    for table in tables {
        let mut del = Query::delete();
        del.from_table(table.clone())
            .and_where(Expr::col("user_id").eq(user_id));
        removed.insert(table, tx.run(&del).await?);
    }
    Ok(Some(removed))
}

/// Deletes the account `user_id` and every row it owns ([`delete_account`]) in a transaction of
/// its own; returns how many rows went, or `None` when there was no such account.
pub async fn delete_now(server: &Server, user_id: &str) -> Result<Option<u64>, ApiError> {
    let (app, user) = (server.app, user_id.to_owned());
    let removed = crate::with_tx!(&server.db, true, |tx| Ok::<_, ApiError>(
        delete_account(tx, &app.schema, &user).await?
    ))?;
    Ok(removed.map(|r| r.values().sum()))
}

/// Every live record of `user_id`, per synced table: what a full pull gives a device, read in
/// the caller's (read) transaction, page by page as a pull reads them.
pub async fn live_records<T: SyncTx>(
    tx: &mut T,
    schema: &Schema,
    user_id: &str,
    page_rows: usize,
    page_bytes: usize,
) -> Result<BTreeMap<String, Vec<Record>>, DbError> {
    let (last_seq, _) = sync::user_sequence(tx, user_id).await?;
    let mut input = PullInput {
        user_id: user_id.to_owned(),
        from: None,
        limit: page_rows.max(1),
        exclude_device: None,
        max_bytes: page_bytes,
    };
    let mut records: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    loop {
        let page = sync::pull(tx, schema, &input, last_seq).await?;
        for (table, rows) in page.changes {
            records
                .entry(table)
                .or_default()
                .extend(rows.into_iter().filter(|r| r.deleted_at.is_none()));
        }
        if !page.has_more {
            return Ok(records);
        }
        input.from = Some(page.next);
    }
}

/// One line of an operator's list of accounts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AccountLine {
    #[serde(flatten)]
    pub account: Account,
    /// Live tokens (signed-in devices).
    pub tokens: i64,
    /// When any of its tokens was last used.
    pub last_used_at: Option<String>,
    /// Live records over every synced table.
    pub records: i64,
}

/// Every account, by email.
pub async fn list_accounts<T: SyncTx>(
    tx: &mut T,
    schema: &Schema,
) -> Result<Vec<AccountLine>, DbError> {
    let now = Timestamp::now().to_wire();
    let mut tokens = Query::select();
    tokens
        .column("user_id")
        .expr(Expr::col("token_hash").count())
        .expr(Expr::col("last_used_at").max())
        .from("sync_tokens")
        .and_where(Expr::col("revoked_at").is_null())
        .and_where(Expr::col("expires_at").gt(now))
        .group_by_col("user_id");
    let mut per_user: HashMap<String, (i64, Option<String>, i64)> = HashMap::new();
    for r in tx
        .fetch(
            &tokens,
            &[ColumnType::Text, ColumnType::Integer, ColumnType::Text],
        )
        .await?
    {
        let entry = per_user
            .entry(text_at(&r, 0).unwrap_or_default())
            .or_default();
        entry.0 = int_at(&r, 1);
        entry.1 = text_at(&r, 2);
    }
    for table in schema.synced() {
        let mut q = Query::select();
        q.column("user_id")
            .expr(Expr::col("remote_id").count())
            .from(table.name.clone())
            .and_where(Expr::col("deleted_at").is_null())
            .group_by_col("user_id");
        for r in tx
            .fetch(&q, &[ColumnType::Text, ColumnType::Integer])
            .await?
        {
            per_user
                .entry(text_at(&r, 0).unwrap_or_default())
                .or_default()
                .2 += int_at(&r, 1);
        }
    }
    let mut q = Query::select();
    q.columns(ACCOUNT_COLUMNS)
        .from("sync_users")
        .order_by("email", Order::Asc);
    Ok(tx
        .fetch(&q, &ACCOUNT_TYPES)
        .await?
        .into_iter()
        .map(|r| {
            let account = account_of(&r);
            let (tokens, last_used_at, records) =
                per_user.remove(&account.user_id).unwrap_or_default();
            AccountLine {
                account,
                tokens,
                last_used_at,
                records,
            }
        })
        .collect())
}

/// Records when tokens were last used, writing each at most once per [`TOKEN_USE_EVERY`] from
/// this process: a request that carries a token costs no write of its own.
#[derive(Default)]
pub struct TokenUse {
    written: Mutex<HashMap<String, Instant>>,
}

/// How stale a token's `last_used_at` may be.
pub const TOKEN_USE_EVERY: Duration = Duration::from_secs(300);

impl TokenUse {
    /// Whether the use of `token_hash` now should be written (and, if so, notes it written).
    pub fn due(&self, token_hash: &str) -> bool {
        let now = Instant::now();
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if written
            .get(token_hash)
            .is_some_and(|at| now.duration_since(*at) < TOKEN_USE_EVERY)
        {
            return false;
        }
        // Forget the tokens not seen for a while, so that the map stays as small as the set
        // of tokens in use.
        if written.len() > 1024 {
            written.retain(|_, at| now.duration_since(*at) < TOKEN_USE_EVERY);
        }
        written.insert(token_hash.to_owned(), now);
        true
    }
}

/// Notes that a request carried `token_hash`: when due, written in the background (the
/// request does not wait for it).
pub fn note_use(s: &Server, token_hash: &str) {
    if !s.token_use.due(token_hash) {
        return;
    }
    let (db, hash) = (s.db.clone(), token_hash.to_owned());
    tokio::spawn(async move {
        let written = async {
            crate::with_tx!(&db, true, |tx| {
                let mut up = Query::update();
                up.table("sync_tokens")
                    .value("last_used_at", Timestamp::now().to_wire())
                    .and_where(Expr::col("token_hash").eq(hash.as_str()));
                tx.run(&up).await?;
                Ok::<_, ApiError>(())
            })
        }
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "recording a token's use failed");
        }
    });
}

/// Counts an operator's summary shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub accounts: i64,
    pub disabled_accounts: i64,
    pub live_tokens: i64,
    /// Live records and tombstones, per synced table.
    pub records: BTreeMap<String, i64>,
    pub tombstones: BTreeMap<String, i64>,
}

pub async fn summary<T: SyncTx>(tx: &mut T, schema: &Schema) -> Result<Summary, DbError> {
    let count = |table: &str| {
        let mut q = Query::select();
        q.expr(Expr::cust("COUNT(*)")).from(table.to_owned());
        q
    };
    let one = |rows: Vec<Vec<Value>>| rows.first().map_or(0, |r| int_at(r, 0));
    let mut s = Summary {
        accounts: one(tx
            .fetch(&count("sync_users"), &[ColumnType::Integer])
            .await?),
        ..Summary::default()
    };
    let mut disabled = count("sync_users");
    disabled.and_where(Expr::col("disabled_at").is_not_null());
    s.disabled_accounts = one(tx.fetch(&disabled, &[ColumnType::Integer]).await?);
    let mut live = count("sync_tokens");
    live.and_where(Expr::col("revoked_at").is_null())
        .and_where(Expr::col("expires_at").gt(Timestamp::now().to_wire()));
    s.live_tokens = one(tx.fetch(&live, &[ColumnType::Integer]).await?);
    for table in schema.synced() {
        let mut q = Query::select();
        q.expr(Expr::cust("COUNT(*)"))
            .expr(Expr::cust("COUNT(deleted_at)"))
            .from(table.name.clone());
        let r = tx
            .fetch(&q, &[ColumnType::Integer, ColumnType::Integer])
            .await?;
        let (all, dead) = r.first().map_or((0, 0), |r| (int_at(r, 0), int_at(r, 1)));
        s.records.insert(table.name.clone(), all - dead);
        s.tombstones.insert(table.name.clone(), dead);
    }
    Ok(s)
}
