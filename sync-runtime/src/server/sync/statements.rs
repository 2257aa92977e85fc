//! The statements a push builds from the schema (its multi-row upserts and natural-key
//! lookups), kept for the server's life: building a 512-row upsert with sea-query costs about
//! as much as running it, and its text depends only on the table, the shape and the backend,
//! which are fixed for a server.

use crate::server::db::DbError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a statement is, the table it is of, and its variant (a shape: rows per statement,
/// client version, key number).
pub type StatementKey = (&'static str, String, u64);

/// The built statements of one server (one backend's dialect), by [`StatementKey`].
#[derive(Default)]
pub struct Statements {
    built: Mutex<HashMap<StatementKey, Arc<str>>>,
}

impl Statements {
    /// The statement `key`, built by `build` the first time it is asked for.
    pub fn get_or_build(
        &self,
        key: (&'static str, &str, u64),
        build: impl FnOnce() -> Result<String, DbError>,
    ) -> Result<Arc<str>, DbError> {
        let (what, table, variant) = key;
        let owned = (what, table.to_owned(), variant);
        // A poisoned lock only means another push panicked while inserting: the map is whole.
        if let Some(sql) = self
            .built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&owned)
        {
            return Ok(sql.clone());
        }
        // Built outside the lock: two pushes may both build it once, never wait on each other.
        let sql: Arc<str> = build()?.into();
        self.built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(owned, sql.clone());
        Ok(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_is_built_once_per_key() {
        let statements = Statements::default();
        let mut builds = 0;
        for _ in 0..3 {
            let sql = statements
                .get_or_build(("upsert", "lists", 8), || {
                    builds += 1;
                    Ok("INSERT 8".to_owned())
                })
                .unwrap();
            assert_eq!(&*sql, "INSERT 8");
        }
        let other = statements
            .get_or_build(("upsert", "lists", 16), || Ok("INSERT 16".to_owned()))
            .unwrap();
        assert_eq!(&*other, "INSERT 16");
        assert_eq!(builds, 1);
    }

    #[test]
    fn a_failed_build_is_not_kept() {
        let statements = Statements::default();
        let failed =
            statements.get_or_build(("upsert", "lists", 1), || Err(DbError::Decode("no".into())));
        assert!(failed.is_err());
        let sql = statements
            .get_or_build(("upsert", "lists", 1), || Ok("INSERT 1".to_owned()))
            .unwrap();
        assert_eq!(&*sql, "INSERT 1");
    }
}
