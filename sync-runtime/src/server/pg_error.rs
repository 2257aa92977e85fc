//! PostgreSQL's errors as an operator reads them. `tokio_postgres::Error` displays as
//! `db error` and keeps PostgreSQL's own report (message, SQLSTATE code, detail, hint) in its
//! source; every database error that reaches a log is written through [`Report`] instead.

use std::fmt;
use tokio_postgres::error::ErrorPosition;

/// Displays a PostgreSQL error in full: PostgreSQL's message, code, detail and hint when the
/// server reported one, else the client's error and each of its causes.
pub struct Report<'a>(pub &'a tokio_postgres::Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(db) = self.0.as_db_error() else {
            write!(f, "{}", self.0)?;
            let mut cause = std::error::Error::source(self.0);
            while let Some(e) = cause {
                write!(f, ": {e}")?;
                cause = e.source();
            }
            return Ok(());
        };
        // `ERROR` is what every failed statement says; a `FATAL` is worth naming.
        if db.severity() != "ERROR" {
            write!(f, "{}: ", db.severity())?;
        }
        write!(f, "{} (SQLSTATE {})", db.message(), db.code().code())?;
        if let Some(detail) = db.detail() {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = db.hint() {
            write!(f, "; hint: {hint}")?;
        }
        if let Some(context) = db.where_() {
            write!(f, "; where: {context}")?;
        }
        Ok(())
    }
}

/// The line of `sql` (from 1) where PostgreSQL placed the error, when it placed it in `sql`.
pub fn line_in(e: &tokio_postgres::Error, sql: &str) -> Option<u32> {
    let Some(ErrorPosition::Original(at)) = e.as_db_error()?.position() else {
        return None;
    };
    // PostgreSQL counts characters from 1.
    let before = usize::try_from(*at).ok()?.checked_sub(1)?;
    let newlines = sql.chars().take(before).filter(|c| *c == '\n').count();
    u32::try_from(newlines + 1).ok()
}
