//! Pull: a page of the changes after a cursor, or of a full pull, cut by count and by bytes.

use super::record::{Record, decode, select_columns};
use crate::protocol::cursor::PullFrom;
use crate::schema::{ColumnType, Schema, Table};
use crate::server::db::{DbError, SyncTx};
use crate::value::Value;
use sea_query::{Cond, Expr, ExprTrait, Order, Query, SelectStatement};
use std::collections::BTreeMap;

/// A pull request after validation.
pub struct PullInput {
    pub user_id: String,
    /// Where the pull continues; `None` starts a full pull.
    pub from: Option<PullFrom>,
    pub limit: usize,
    pub exclude_device: Option<String>,
    /// Bytes a page's rows may hold (the first record is sent whatever its size).
    pub max_bytes: usize,
}

pub struct PullPage {
    pub changes: BTreeMap<String, Vec<Record>>,
    /// Where the next pull continues: a full pull stays full until its last page.
    pub next: PullFrom,
    pub has_more: bool,
}

/// The user's sequence reached and purge watermark.
pub async fn user_sequence<T: SyncTx>(tx: &mut T, user: &str) -> Result<(i64, i64), DbError> {
    let mut q = Query::select();
    q.columns(["last_seq", "purged_seq"])
        .from("sync_users")
        .and_where(Expr::col("user_id").eq(user));
    match tx
        .fetch(&q, &[ColumnType::Integer, ColumnType::Integer])
        .await?
        .first()
        .map(|r| (&r[0], &r[1]))
    {
        Some((Value::Integer(a), Value::Integer(b))) => Ok((*a, *b)),
        _ => Ok((0, 0)),
    }
}

/// One page of changes, ordered by sequence, each record at most once in its latest state.
///
/// A full pull (no `from`, or a full cursor) returns every live record and the tombstones
/// written since it began, and never leaves out the caller's own writes: the caller removes,
/// at its end, the clean rows it did not return. An incremental pull returns every change
/// after its cursor, less the records whose latest version `exclude_device` wrote.
pub async fn pull<T: SyncTx>(
    tx: &mut T,
    schema: &Schema,
    input: &PullInput,
    last_seq: i64,
) -> Result<PullPage, DbError> {
    let (since, full_began) = match input.from {
        None => (0, Some(last_seq)),
        Some(PullFrom::Full { seq, began }) => (seq, Some(began)),
        Some(PullFrom::After(seq)) => (seq, None),
    };
    let byte_cut = page_byte_cutoff(tx, schema, input, since, full_began).await?;
    // The first `limit + 1` changes after `since` of each table, read once: the page ends at
    // the `limit`-th sequence across all tables, and every change up to it is among these.
    let mut read: Vec<(&Table, Vec<Record>)> = Vec::new();
    let mut seqs: Vec<i64> = Vec::new();
    for table in schema.synced() {
        let (names, types) = select_columns(table);
        let mut q = page_window(table, input, since, full_began);
        q.columns(names);
        if let Some(cut) = byte_cut {
            q.and_where(Expr::col("seq").lte(cut));
        }
        let rows = tx
            .fetch(&q, &types)
            .await?
            .into_iter()
            .map(|r| decode(table, r))
            .collect::<Result<Vec<_>, _>>()?;
        seqs.extend(rows.iter().map(|r| r.seq));
        read.push((table, rows));
    }
    seqs.sort_unstable();
    let has_more = seqs.len() > input.limit || byte_cut.is_some();
    let cutoff = if seqs.len() > input.limit {
        seqs[input.limit - 1]
    } else if let Some(cut) = byte_cut {
        cut
    } else {
        std::cmp::max(last_seq, since)
    };
    let exclude = match full_began {
        Some(_) => None,
        None => input.exclude_device.as_deref(),
    };
    let mut changes = BTreeMap::new();
    for (table, mut rows) in read {
        rows.retain(|r| r.seq <= cutoff && exclude.is_none_or(|d| r.device_id != d));
        changes.insert(table.name.clone(), rows);
    }
    let next = match full_began {
        Some(began) if has_more => PullFrom::Full { seq: cutoff, began },
        _ => PullFrom::After(cutoff),
    };
    Ok(PullPage {
        changes,
        next,
        has_more,
    })
}

/// The rows of `table` a page may hold, without its columns: the first `limit + 1` changes of
/// the account after `since`, in sequence order. Both the page and its byte cut-off read these,
/// so the cut-off measures the very rows the page sends. A full pull that began at sequence
/// `full_began` leaves out tombstones written before it began (they concern nothing the caller
/// keeps); later ones delete records an earlier page may have delivered live.
fn page_window(
    table: &Table,
    input: &PullInput,
    since: i64,
    full_began: Option<i64>,
) -> SelectStatement {
    let mut q = Query::select();
    q.from(table.name.clone())
        .and_where(Expr::col("user_id").eq(input.user_id.as_str()))
        .and_where(Expr::col("seq").gt(since))
        .order_by("seq", Order::Asc)
        .limit(input.limit as u64 + 1);
    if let Some(began) = full_began {
        q.cond_where(
            Cond::any()
                .add(Expr::col("deleted_at").is_null())
                .add(Expr::col("seq").gt(began)),
        );
    }
    q
}

/// Bytes counted for a row beside its text and JSON values: its ids, stamps and other columns.
const ROW_OVERHEAD_BYTES: i64 = 256;

/// The last sequence of a page that stops before `input.max_bytes` (at least one record), or
/// `None` when the page's rows fit. Sizes are read without the values, so a page of huge
/// records is never read whole into memory.
async fn page_byte_cutoff<T: SyncTx>(
    tx: &mut T,
    schema: &Schema,
    input: &PullInput,
    since: i64,
    full_began: Option<i64>,
) -> Result<Option<i64>, DbError> {
    let mut sizes: Vec<(i64, i64)> = Vec::new();
    for table in schema.synced() {
        let size = table
            .columns
            .iter()
            .filter(|c| {
                c.on_wire()
                    && (c.reference.is_some()
                        || matches!(c.ty, ColumnType::Text | ColumnType::Json))
            })
            .map(|c| format!("COALESCE(octet_length(\"{}\"), 0)", c.name))
            .chain(std::iter::once(ROW_OVERHEAD_BYTES.to_string()))
            .collect::<Vec<_>>()
            .join(" + ");
        // BIGINT on both backends (PostgreSQL's octet_length is a 4-byte integer).
        let size = format!("CAST({size} AS BIGINT)");
        let mut q = page_window(table, input, since, full_began);
        q.column("seq").expr(Expr::cust(size));
        for r in tx
            .fetch(&q, &[ColumnType::Integer, ColumnType::Integer])
            .await?
        {
            if let [Value::Integer(seq), Value::Integer(bytes)] = &r[..] {
                sizes.push((*seq, *bytes));
            }
        }
    }
    sizes.sort_unstable();
    let mut total = 0i64;
    for (i, (_, bytes)) in sizes.iter().enumerate() {
        total = total.saturating_add(*bytes);
        if total > input.max_bytes as i64 && i > 0 {
            return Ok(Some(sizes[i - 1].0));
        }
    }
    Ok(None)
}
