//! The one migration runner of the device and both server backends. What it records
//! (`sync_migrations`: its definition, the statements that read and write it, the time an
//! entry is stamped with) and what it does with each migration (skip one recorded under its
//! name, stop at one recorded under another, apply the rest) are written here once; each
//! backend only executes them in its own transactions: SQLite here ([`apply_sqlite`], the
//! device and the server's file), PostgreSQL in `server::pg_migrations` (async, under an
//! advisory lock).

use super::Migration;
use super::error::{MigrateError, line_in_batch};
use crate::ddl::{self, Dialect};
use crate::schema::ColumnType;
use rusqlite::{Connection, OptionalExtension};

/// `sync_migrations` and the rule for each migration, the same on every backend.
pub(crate) struct Ledger;

impl Ledger {
    /// The table of what ran, per scope and version (the version an integer of the dialect).
    pub(crate) fn create(dialect: Dialect) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS sync_migrations (\
             scope TEXT NOT NULL, version {} NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, \
             PRIMARY KEY (scope, version))",
            ddl::server_type(ColumnType::Integer, dialect)
        )
    }

    // `$n` parameters: PostgreSQL's, and SQLite binds them by position too, so both backends
    // run these same statements.

    /// The name recorded for (scope `$1`, version `$2`), if any.
    pub(crate) const RECORDED: &str =
        "SELECT name FROM sync_migrations WHERE scope = $1 AND version = $2";

    /// Every migration recorded, as (scope, version, name).
    pub(crate) const ALL: &str = "SELECT scope, version, name FROM sync_migrations";

    /// Records (scope, version, name, applied_at) once a migration has run, in its transaction.
    pub(crate) const RECORD: &str =
        "INSERT INTO sync_migrations (scope, version, name, applied_at) VALUES ($1, $2, $3, $4)";

    /// The stamp of an entry: now, in wire form.
    pub(crate) fn applied_at() -> String {
        crate::Timestamp::now().to_wire()
    }

    /// Whether migration `m` of `scope` is still to run, given the name its version is recorded
    /// under; a different name means this build and the database disagree on history.
    pub(crate) fn pending(
        scope: &str,
        m: &Migration,
        recorded: Option<String>,
    ) -> Result<bool, Diverged> {
        match recorded {
            None => Ok(true),
            Some(name) if name == m.name => Ok(false),
            Some(recorded) => Err(Diverged {
                scope: scope.to_owned(),
                version: m.version,
                recorded,
                expected: m.name.to_string(),
            }),
        }
    }
}

/// A migration recorded under another name than this build's (each backend says it its way).
#[derive(Debug)]
pub(crate) struct Diverged {
    pub scope: String,
    pub version: u32,
    pub recorded: String,
    pub expected: String,
}

impl From<Diverged> for MigrateError {
    fn from(d: Diverged) -> Self {
        MigrateError::Diverged {
            scope: d.scope,
            version: d.version,
            recorded: d.recorded,
            expected: d.expected,
        }
    }
}

/// Applies the migrations of `scope` that the database has not run yet, in order, each in its
/// own transaction; returns the versions applied. Running it again applies nothing, and so
/// does a second process opening the file at the same moment: it waits for the first one's
/// migration and then finds it recorded.
pub fn apply_sqlite(
    conn: &mut Connection,
    scope: &str,
    migrations: &[Migration],
) -> Result<Vec<u32>, MigrateError> {
    conn.execute_batch(&Ledger::create(Dialect::Sqlite))?;
    let mut applied = Vec::new();
    for m in migrations {
        // Read once outside a transaction, so that opening a migrated database writes nothing.
        if pending(conn, scope, m)? && apply_one(conn, scope, m)? {
            applied.push(m.version);
        }
    }
    Ok(applied)
}

fn pending(conn: &Connection, scope: &str, m: &Migration) -> Result<bool, MigrateError> {
    let recorded: Option<String> = conn
        .query_row(Ledger::RECORDED, (scope, m.version), |r| r.get(0))
        .optional()?;
    Ok(Ledger::pending(scope, m, recorded)?)
}

/// Runs `m` unless another connection recorded it meanwhile; whether it ran. The ledger is read
/// again inside the migration's IMMEDIATE transaction, which waits (busy timeout) for another
/// writer's migration to commit.
fn apply_one(conn: &mut Connection, scope: &str, m: &Migration) -> Result<bool, MigrateError> {
    let fk_off = m.needs_foreign_keys_off();
    let fk_was_on: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    if fk_off && fk_was_on {
        // Must happen outside the transaction: SQLite ignores it inside one.
        conn.execute_batch("PRAGMA foreign_keys = OFF")?;
    }
    let result = (|| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if !pending(&tx, scope, m)? {
            return Ok(false);
        }
        let failed = |source| MigrateError::Failed {
            scope: scope.into(),
            name: m.name.to_string(),
            line: line_in_batch(&source, &m.sql),
            source,
        };
        tx.execute_batch(&m.sql).map_err(failed)?;
        if fk_off {
            let broken: Option<String> = tx
                .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                .optional()?;
            if let Some(table) = broken {
                return Err(MigrateError::ForeignKeys {
                    scope: scope.into(),
                    name: m.name.to_string(),
                    table,
                });
            }
        }
        tx.execute(
            Ledger::RECORD,
            (scope, m.version, m.name.as_ref(), Ledger::applied_at()),
        )?;
        tx.commit()?;
        Ok(true)
    })();
    if fk_off && fk_was_on {
        conn.execute_batch("PRAGMA foreign_keys = ON")?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Migration = Migration::new(1, "0001_first", "CREATE TABLE a (x INTEGER)");

    #[test]
    fn a_migration_runs_once_and_a_renamed_one_stops_the_runner() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(apply_sqlite(&mut conn, "s", &[FIRST]).unwrap(), vec![1]);
        assert!(apply_sqlite(&mut conn, "s", &[FIRST]).unwrap().is_empty());
        let stamp: String = conn
            .query_row("SELECT applied_at FROM sync_migrations", [], |r| r.get(0))
            .unwrap();
        assert!(crate::Timestamp::parse_wire(&stamp).is_ok(), "{stamp}");
        let renamed = Migration::new(1, "0001_other", "SELECT 1");
        let err = apply_sqlite(&mut conn, "s", &[renamed]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the database has migration s/1 recorded as `0001_first`, but this build calls it `0001_other`"
        );
    }
}
