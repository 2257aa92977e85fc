//! Purge: tombstones past the horizon are removed, and each account's purge watermark raised.

use crate::schema::{ColumnType, Schema};
use crate::server::db::{DbError, SyncTx};
use crate::timestamp::Timestamp;
use crate::value::Value;
use sea_query::{Expr, ExprTrait, Query};

/// Purges tombstones deleted before `before`, raising each user's purge watermark to the
/// highest sequence it removed. Returns the number of rows removed.
pub async fn purge<T: SyncTx>(
    tx: &mut T,
    schema: &Schema,
    before: Timestamp,
) -> Result<u64, DbError> {
    let cutoff = before.to_wire();
    let mut removed = 0;
    for table in schema.synced() {
        let mut q = Query::select();
        q.column("user_id")
            .expr(Expr::col("seq").max())
            .from(table.name.clone())
            .and_where(Expr::col("deleted_at").is_not_null())
            .and_where(Expr::col("deleted_at").lt(cutoff.as_str()))
            .group_by_col("user_id");
        for r in tx
            .fetch(&q, &[ColumnType::Text, ColumnType::Integer])
            .await?
        {
            if let (Value::Text(user), Value::Integer(max)) = (&r[0], &r[1]) {
                let mut up = Query::update();
                up.table("sync_users")
                    .value("purged_seq", *max)
                    .and_where(Expr::col("user_id").eq(user.as_str()))
                    .and_where(Expr::col("purged_seq").lt(*max));
                tx.run(&up).await?;
            }
        }
        let mut del = Query::delete();
        del.from_table(table.name.clone())
            .and_where(Expr::col("deleted_at").is_not_null())
            .and_where(Expr::col("deleted_at").lt(cutoff.as_str()));
        removed += tx.run(&del).await?;
    }
    Ok(removed)
}
