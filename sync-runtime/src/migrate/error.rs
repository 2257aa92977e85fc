//! Why migrating a database failed, told so that an operator can act on it: the migration, the
//! line of its SQL where the database placed the error, and the database's own message and code.

use std::fmt;

/// Why migrating a database failed. The database is left as it was before that migration.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {scope}/{name} failed{}: {}", at_line(.line), SqliteReport(.source))]
    Failed {
        scope: String,
        name: String,
        /// The line of the migration's SQL where SQLite placed the error, if it did.
        line: Option<u32>,
        #[source]
        source: rusqlite::Error,
    },
    #[error("migration {scope}/{name} left foreign keys that point nowhere (table `{table}`)")]
    ForeignKeys {
        scope: String,
        name: String,
        table: String,
    },
    #[error(
        "the database has migration {scope}/{version} recorded as `{recorded}`, but this build calls it `{expected}`"
    )]
    Diverged {
        scope: String,
        version: u32,
        recorded: String,
        expected: String,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// ` at line N` when the line is known.
pub(crate) fn at_line(line: &Option<u32>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

/// SQLite's message and result code, without the rest of the batch that rusqlite quotes.
struct SqliteReport<'a>(&'a rusqlite::Error);

impl fmt::Display for SqliteReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            rusqlite::Error::SqlInputError { error, msg, .. }
            | rusqlite::Error::SqliteFailure(error, Some(msg)) => {
                write!(f, "{msg} (SQLite result code {})", error.extended_code)
            }
            other => write!(f, "{other}"),
        }
    }
}

/// The line (from 1) of `batch` where SQLite placed the error of one of its statements: it
/// reports the batch's rest from the failing statement on, and a byte offset into it.
pub(super) fn line_in_batch(e: &rusqlite::Error, batch: &str) -> Option<u32> {
    let rusqlite::Error::SqlInputError { sql, offset, .. } = e else {
        return None;
    };
    let start = batch.len().checked_sub(sql.len())?;
    let before = batch.get(..start)?;
    let within = sql.get(..usize::try_from(*offset).ok()?)?;
    let line = before.matches('\n').count() + within.matches('\n').count() + 1;
    (batch.get(start..)? == sql.as_str()).then(|| u32::try_from(line).ok())?
}
