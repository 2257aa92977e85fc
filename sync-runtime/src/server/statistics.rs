//! Keeping PostgreSQL's statistics of the synced tables current where it matters: after the
//! migrations and after large uploads. Many installs run with autovacuum off, so nothing else
//! gathers them. The natural-key lookups of a push do not depend on statistics (see
//! [`super::sync::natural_key_lookup`]), but the planner's other choices are better with them.

use super::db::{DbError, PgDb};
use crate::ddl::quote_ident;
use std::collections::HashMap;
use std::sync::Mutex;

/// Rows pushed per table since this process last analyzed it.
pub struct PushedSinceAnalyze {
    /// Rows pushed into a table before its first ANALYZE by this process.
    first_after: u64,
    tables: Mutex<HashMap<String, Pushed>>,
}

#[derive(Default, Clone, Copy)]
struct Pushed {
    since_analyze: u64,
    before_analyze: u64,
}

impl PushedSinceAnalyze {
    pub fn new(first_after: u64) -> Self {
        PushedSinceAnalyze {
            first_after,
            tables: Mutex::default(),
        }
    }

    /// Notes `rows` pushed into `table`; true when the table is due for ANALYZE: once the first
    /// `first_after` rows came, then each time the rows that came since the last ANALYZE
    /// reach those before it (at 10,000, 20,000, 40,000 rows...), so that a growing table is
    /// analyzed a few times over its first upload, and rarely once it is large.
    pub fn note(&self, table: &str, rows: u64) -> bool {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let pushed = tables.entry(table.to_owned()).or_default();
        pushed.since_analyze += rows;
        if pushed.since_analyze < self.first_after.max(pushed.before_analyze) {
            return false;
        }
        pushed.before_analyze += pushed.since_analyze;
        pushed.since_analyze = 0;
        true
    }
}

/// Gathers the statistics of `tables` (each one a transaction of its own).
pub async fn analyze(db: &PgDb, tables: &[&str]) -> Result<(), DbError> {
    let client = db.client().await?;
    for t in tables {
        client
            .batch_execute(&format!("ANALYZE {}", quote_ident(t)))
            .await?;
    }
    Ok(())
}

/// Gathers the statistics of those of `tables` that hold rows. An empty table is left
/// without: statistics saying "empty" would outlive the table's first rows, while PostgreSQL
/// assumes a table never analyzed holds some.
pub async fn analyze_filled(db: &PgDb, tables: &[&str]) -> Result<(), DbError> {
    let client = db.client().await?;
    let mut filled = Vec::new();
    for t in tables {
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", quote_ident(t));
        if client.query_one(&sql, &[]).await?.get::<_, bool>(0) {
            filled.push(*t);
        }
    }
    drop(client);
    analyze(db, &filled).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_growing_table_is_due_at_doubling_sizes() {
        let pushed = PushedSinceAnalyze::new(10_000);
        let due: Vec<u64> = (1..=80)
            .filter(|_| pushed.note("watch_history", 1_000))
            .map(|n| n * 1_000)
            .collect();
        assert_eq!(due, [10_000, 20_000, 40_000, 80_000]);
        assert!(!pushed.note("lists", 9_999));
        assert!(pushed.note("lists", 1));
    }
}
