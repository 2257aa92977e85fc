//! A database that a newer build has migrated past this one: an older replica during a rolling
//! upgrade, or a rollback to the previous release.
//!
//! Such a process keeps serving, and says so, as long as every column it reads and writes is
//! there with the type it expects: its statements name their columns, so the newer columns
//! and tables are left as stored, exactly as the newer build leaves them for an older client.
//! A database where one of its columns is gone or retyped would fail its every pull (a pull
//! reads every table), so it refuses to start, naming both versions and the columns.

use super::StartError;
use super::db::{DbError, PgDb};
use super::{APP_SCOPE, RUNTIME_SCOPE, sync};
use crate::App;
use crate::ddl::{self, Dialect};
use crate::migrate::{Ledger, Migration};
use std::collections::BTreeMap;

/// What a newer build recorded in one scope beyond this build's newest migration.
#[derive(Debug)]
pub struct Ahead {
    pub scope: &'static str,
    /// This build's newest migration of the scope (version, name).
    pub ours: (u32, String),
    /// The database's migrations beyond it, in order.
    pub theirs: Vec<(u32, String)>,
}

impl std::fmt::Display for Ahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (newest, name) = self.theirs.last().expect("an ahead scope has migrations");
        write!(
            f,
            "{} is at migration {newest} (`{name}`) where this build knows up to {} (`{}`)",
            self.scope, self.ours.0, self.ours.1
        )
    }
}

/// Every migration the database recorded: (scope, version, name).
pub type Recorded = Vec<(String, u32, String)>;

/// The stored columns of every table, by (table, column): their declared type.
pub type Columns = BTreeMap<(String, String), String>;

/// The database's migrations beyond this build's, by scope.
fn ahead_of(app: &App, dialect: Dialect, recorded: &Recorded) -> Vec<Ahead> {
    let runtime = super::runtime_migrations(dialect);
    let app_migrations = match dialect {
        Dialect::Sqlite => app.server_sqlite_migrations,
        Dialect::Postgres => app.server_postgres_migrations,
    };
    let mut ahead = Vec::new();
    for (scope, ours) in [(RUNTIME_SCOPE, &runtime[..]), (APP_SCOPE, app_migrations)] {
        let newest = ours.last().map_or((0, String::new()), |m: &Migration| {
            (m.version, m.name.to_string())
        });
        let theirs: Vec<(u32, String)> = recorded
            .iter()
            .filter(|(s, version, _)| s == scope && *version > newest.0)
            .map(|(_, version, name)| (*version, name.clone()))
            .collect();
        if !theirs.is_empty() {
            ahead.push(Ahead {
                scope,
                ours: newest,
                theirs,
            });
        }
    }
    ahead
}

/// Whether this build can serve a database that is `ahead`, given its `stored` columns: a
/// warning to log when it can, the reason it refuses when it cannot.
pub fn judge(
    app: &App,
    dialect: Dialect,
    recorded: &Recorded,
    stored: &Columns,
) -> Result<Option<String>, StartError> {
    let ahead = ahead_of(app, dialect, recorded);
    if ahead.is_empty() {
        return Ok(None);
    }
    let mut unusable = Vec::new();
    for table in app.schema.synced() {
        let (names, types) = sync::select_columns(table);
        for (name, ty) in names.iter().zip(types) {
            let wanted = ddl::server_type(ty, dialect);
            match stored.get(&(table.name.clone(), name.clone())) {
                None => unusable.push(format!("{}.{name} is gone", table.name)),
                Some(found) if !found.eq_ignore_ascii_case(wanted) => {
                    unusable.push(format!("{}.{name} is {found}, not {wanted}", table.name))
                }
                Some(_) => {}
            }
        }
    }
    let versions: Vec<String> = ahead.iter().map(Ahead::to_string).collect();
    let versions = versions.join("; ");
    if unusable.is_empty() {
        Ok(Some(format!(
            "the database was migrated by a newer build: {versions}. This process serves what \
             it knows (client schema versions up to {}) and leaves the newer columns and tables \
             as stored; upgrade it",
            app.schema.version()
        )))
    } else {
        Err(StartError::NewerSchema(format!(
            "the database was migrated by a newer build: {versions}, and columns this build \
             uses changed there ({}); start a build that knows the database's migrations",
            unusable.join(", ")
        )))
    }
}

/// The migrations and columns of the server's SQLite file.
pub fn read_sqlite(conn: &rusqlite::Connection) -> Result<(Recorded, Columns), DbError> {
    let mut stmt = conn.prepare(Ledger::ALL)?;
    let recorded = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT m.name, p.name, p.type FROM sqlite_master AS m, pragma_table_info(m.name) AS p \
         WHERE m.type = 'table'",
    )?;
    let columns = stmt
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    Ok((recorded, columns))
}

/// The migrations and columns of the server's PostgreSQL schema.
pub async fn read_postgres(db: &PgDb) -> Result<(Recorded, Columns), DbError> {
    let client = db.client().await?;
    let recorded = client
        .query(Ledger::ALL, &[])
        .await?
        .iter()
        .map(|r| {
            let version = u32::try_from(r.get::<_, i64>(1)).unwrap_or(u32::MAX);
            (r.get(0), version, r.get(2))
        })
        .collect();
    let columns = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text \
             FROM information_schema.columns WHERE table_schema = current_schema()",
            &[],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    Ok((recorded, columns))
}
