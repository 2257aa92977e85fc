//! Migrating a PostgreSQL database that several server processes may open at the same moment.
//!
//! A process sets the database up (the runtime's tables, the app's, their statistics, the
//! server's identity) while it holds the schema's advisory lock, on a connection of its own:
//! the others wait for the lock and then find every migration recorded. What is recorded and
//! when a migration runs is the one runner's ([`Ledger`]); this executes it here.

use super::StartError;
use super::db::{DbError, PgDb};
use super::pg_error::{Report, line_in};
use crate::ddl::Dialect;
use crate::migrate::{Ledger, MigrateError, Migration, at_line};

/// The lock's first key, "SYNC" in ASCII; the second is the schema's name hashed, so that
/// servers on other schemas of one database do not wait for each other.
const LOCK_CLASS: &str = "1398361667";
const SCHEMA_KEY: &str = "hashtext(coalesce(current_schema(), ''))";

/// A migration whose statements PostgreSQL refused: which one, where in it, and PostgreSQL's
/// own report. The database is left as it was before that migration.
#[derive(Debug, thiserror::Error)]
#[error("migration {scope}/{name} failed{}: {}", at_line(.line), Report(.source))]
pub struct MigrationFailed {
    pub scope: String,
    pub name: String,
    /// The line of the migration's SQL where PostgreSQL placed the error, if it did.
    pub line: Option<u32>,
    #[source]
    pub source: tokio_postgres::Error,
}

/// A connection holding the schema's migration lock. Dropping it closes the connection, which
/// releases the lock and rolls back a migration left half-way.
pub struct MigrationLock {
    client: deadpool_postgres::ClientWrapper,
}

impl MigrationLock {
    /// Takes the lock, waiting while another process holds it.
    pub async fn take(db: &PgDb) -> Result<MigrationLock, DbError> {
        // Out of the pool for good (the pool makes another): a connection handed back with
        // the lock held would keep it.
        let client = deadpool_postgres::Object::take(db.client().await?);
        let free: bool = client
            .query_one(
                &format!("SELECT pg_try_advisory_lock({LOCK_CLASS}, {SCHEMA_KEY})"),
                &[],
            )
            .await?
            .get(0);
        if !free {
            tracing::info!("another server process is migrating the database; waiting for it");
            client
                .batch_execute(&format!(
                    "SELECT pg_advisory_lock({LOCK_CLASS}, {SCHEMA_KEY})"
                ))
                .await?;
        }
        client
            .batch_execute(&Ledger::create(Dialect::Postgres))
            .await?;
        Ok(MigrationLock { client })
    }

    /// Applies the migrations of `scope` that the database has not recorded, in order, each in
    /// its own transaction; returns the versions applied.
    pub async fn apply(
        &mut self,
        scope: &str,
        migrations: &[Migration],
    ) -> Result<Vec<u32>, StartError> {
        let mut applied = Vec::new();
        for m in migrations {
            let tx = self.client.transaction().await.map_err(DbError::from)?;
            let version = i64::from(m.version);
            let recorded = tx
                .query_opt(Ledger::RECORDED, &[&scope, &version])
                .await
                .map_err(DbError::from)?
                .map(|row| row.get(0));
            if !Ledger::pending(scope, m, recorded).map_err(MigrateError::from)? {
                continue;
            }
            tx.batch_execute(&m.sql)
                .await
                .map_err(|source| MigrationFailed {
                    scope: scope.to_owned(),
                    name: m.name.to_string(),
                    line: line_in(&source, &m.sql),
                    source,
                })?;
            let name: &str = m.name.as_ref();
            tx.execute(
                Ledger::RECORD,
                &[&scope, &version, &name, &Ledger::applied_at()],
            )
            .await
            .map_err(DbError::from)?;
            tx.commit().await.map_err(DbError::from)?;
            applied.push(m.version);
        }
        Ok(applied)
    }

    /// Lets the next process in.
    pub async fn release(self) -> Result<(), DbError> {
        self.client
            .batch_execute(&format!(
                "SELECT pg_advisory_unlock({LOCK_CLASS}, {SCHEMA_KEY})"
            ))
            .await?;
        Ok(())
    }
}

/// Applies the migrations of `scope` under the schema's migration lock (see [`MigrationLock`]);
/// returns the versions applied. Running it again applies nothing.
pub async fn apply_postgres(
    db: &PgDb,
    scope: &str,
    migrations: &[Migration],
) -> Result<Vec<u32>, StartError> {
    let mut lock = MigrationLock::take(db).await?;
    let applied = lock.apply(scope, migrations).await?;
    lock.release().await?;
    Ok(applied)
}
