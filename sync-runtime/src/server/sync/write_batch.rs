//! The writes of a push, a table's batch at a time: on SQLite multi-row `VALUES` upserts, on
//! PostgreSQL one upsert whose columns travel as arrays (see `pg_sets.rs`). Either leaves a
//! record of another account as it is, and notes it, which fails the push.

use super::push::PushSession;
use super::record::{KEPT_ON_CONFLICT, sea, text};
use crate::ddl::Dialect;
use crate::schema::{ColumnType, Table};
use crate::server::db::{DbError, SyncTx};
use crate::value::Value;
use sea_query::{Expr, ExprTrait, OnConflict, Query};

/// The writes of one table for one client version, waiting to be sent.
pub(super) struct Unsent {
    pub(super) table: String,
    pub(super) version: u32,
    /// Each record's parameters of [`upsert`], the account left out.
    pub(super) rows: Vec<Vec<Value>>,
    pub(super) ids: std::collections::HashSet<String>,
}

/// Parameters per multi-row upsert, under SQLite's (32,766) and PostgreSQL's (65,535) limits.
const UPSERT_PARAMS: usize = 30_000;
/// Rows per multi-row upsert at most (SQLite; PostgreSQL binds a batch's columns as arrays). A
/// batch is sent in chunks of powers of two, so that a table has a handful of statement texts,
/// each prepared once per connection.
const UPSERT_ROWS: usize = 512;

impl<T: SyncTx> PushSession<'_, T> {
    /// Sends every write not sent yet. A record another account owns is left as it is and
    /// noted in [`PushSession::refused`], which fails the push.
    pub(super) async fn send(&mut self) -> Result<(), DbError> {
        for unsent in std::mem::take(&mut self.unsent) {
            let table = self
                .schema
                .table(&unsent.table)
                .ok_or_else(|| DbError::Decode(format!("unknown table {}", unsent.table)))?;
            if self.tx.dialect() == Dialect::Postgres {
                self.send_as_columns(table, unsent).await?;
            } else {
                self.send_as_rows(table, unsent).await?;
            }
        }
        Ok(())
    }

    /// Sends `unsent` as multi-row upserts of at most [`UPSERT_ROWS`] rows.
    async fn send_as_rows(&mut self, table: &Table, unsent: Unsent) -> Result<(), DbError> {
        let width = unsent.rows.first().map_or(1, Vec::len);
        let most = (UPSERT_PARAMS / (width + 1)).min(UPSERT_ROWS);
        let mut left = unsent.rows.len();
        // The rows' values are moved into the statement's parameters, not copied.
        let mut rows = unsent.rows.into_iter();
        while left > 0 {
            // The largest power of two that fits.
            let n = 1usize << (left.min(most).ilog2());
            left -= n;
            let mut params: Vec<Value> = Vec::with_capacity(n * width + 1);
            params.extend(rows.by_ref().take(n).flatten());
            params.push(Value::Text(self.user.to_owned()));
            let variant = (u64::from(unsent.version) << 32) | n as u64;
            let sql = self.statement(("upsert", &table.name, variant), &params, || {
                upsert(table, &params, width, unsent.version)
            })?;
            let written = self.tx.query(&sql, &params, &[ColumnType::Text]).await?;
            if written.len() != n {
                self.note_refused(table, &params[..n * width], width, &written);
            }
        }
        Ok(())
    }

    /// Sends `unsent` as one upsert whose columns travel as arrays (PostgreSQL): one statement
    /// text per table and client version, a handful of parameters whatever the batch's size.
    async fn send_as_columns(&mut self, table: &Table, unsent: Unsent) -> Result<(), DbError> {
        let width = unsent.rows.first().map_or(1, Vec::len);
        let n = unsent.rows.len();
        let sql = self.statements.get_or_build(
            ("upsert_columns", &table.name, u64::from(unsent.version)),
            || Ok(super::pg_sets::upsert_columns(table, unsent.version)),
        )?;
        let rows: Vec<Value> = unsent.rows.into_iter().flatten().collect();
        let account = [Value::Text(self.user.to_owned())];
        let written = self
            .tx
            .query_columns(&sql, &rows, width, &account, &[ColumnType::Text])
            .await?;
        if written.len() != n {
            self.note_refused(table, &rows, width, &written);
        }
        Ok(())
    }

    /// Notes the first of the rows sent (`width` values each, the id first) that `written`
    /// (the ids an upsert returned) lacks: another account's record, which the push may not
    /// write.
    fn note_refused(
        &mut self,
        table: &Table,
        sent: &[Value],
        width: usize,
        written: &[Vec<Value>],
    ) {
        let written: Vec<&str> = written
            .iter()
            .filter_map(|r| r.first().and_then(text))
            .collect();
        let refused = sent
            .chunks(width)
            .filter_map(|r| r.first().and_then(text))
            .find(|id| !written.contains(id))
            .unwrap_or_default();
        self.refused
            .get_or_insert_with(|| format!("{} {refused} belongs to another account", table.name));
    }
}

/// The upsert of records of `table` for a client of `version`: `params` holds each record's
/// `width` parameters as [`PushSession::store`] lists them, then the account that must own
/// them. It returns the ids it wrote: a record of another account is left as it is.
fn upsert(
    table: &Table,
    params: &[Value],
    width: usize,
    version: u32,
) -> sea_query::InsertStatement {
    let (cols, _) = super::record::written_columns(table, version);
    let update: Vec<String> = cols
        .iter()
        .filter(|c| !KEPT_ON_CONFLICT.contains(&c.as_str()))
        .cloned()
        .collect();
    let (rows, user) = params.split_at(params.len() - 1);
    let mut ins = Query::insert();
    ins.into_table(table.name.clone()).columns(cols);
    for row in rows.chunks(width) {
        ins.values_panic(row.iter().map(|v| Expr::from(sea(v))));
    }
    ins.on_conflict(
        OnConflict::column("remote_id")
            .update_columns(update)
            // Never over another user's record.
            .action_and_where(
                Expr::col((table.name.clone(), "user_id".to_owned())).eq(sea(&user[0])),
            )
            .to_owned(),
    )
    .returning_col("remote_id");
    ins
}
