//! The first device migration of one table: it meets either nothing (a new install) or the
//! app's own table, made and filled by the app's own code (docs/entities.md, "The app's real
//! database"). The app's table is altered in place, never rebuilt: every row, every value as the
//! app wrote it (its timestamps in its own text), and every constraint, index, trigger and
//! default the app declared stay; rows of the app's other tables that reference it are never
//! touched. What the table lacks is added; what it holds is honoured:
//!
//! - a row with `deleted_at` set stays deleted: it is a tombstone, pushed as one;
//! - a `remote_id` already there was not assigned by this runtime (it never ran here; another
//!   sync system's, say): it is forgotten, and the push gives the row one of its own;
//! - every row waits for the first connect (`dirty`);
//! - a missing `updated_at` (a stamp the merge needs) takes `created_at`, else now.

use super::run::ADD_COLUMN_IF_MISSING;
use crate::ddl::{self, DeviceForm, quote_ident};
use crate::schema::{Column, ColumnType, DateTimeText, DefaultValue, Schema, Table, UPDATED_AT};

/// Appends the statements of table `t`'s first device migration to `out`.
pub(super) fn table(schema: &Schema, t: &Table, out: &mut Vec<String>) {
    let name = quote_ident(&t.name);
    let create = ddl::device_create_table(schema, t, &t.name, DeviceForm::Synced);
    out.push(if create.starts_with("CREATE TABLE IF NOT EXISTS ") {
        create
    } else {
        create.replacen("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1)
    });
    let first: Vec<&Column> = t.columns.iter().filter(|c| c.since <= 1).collect();
    for c in &first {
        out.push(add_if_missing(schema, t, c));
    }
    if t.synced {
        for column in [
            "\"remote_id\" TEXT",
            "\"deleted_at\" DATETIME",
            "\"dirty\" BOOLEAN NOT NULL DEFAULT (FALSE)",
        ] {
            out.push(format!("ALTER TABLE {name}{ADD_COLUMN_IF_MISSING}{column}"));
        }
        if let Some(updated) = t.column(UPDATED_AT) {
            let mut fallbacks = Vec::new();
            if t.column("created_at")
                .is_some_and(|c| c.ty == ColumnType::DateTime && c.since <= 1)
            {
                fallbacks.push(quote_ident("created_at"));
            }
            fallbacks.push(now_in_form_of(updated).to_owned());
            let fill = match fallbacks.as_slice() {
                [one] => one.clone(),
                several => format!("COALESCE({})", several.join(", ")),
            };
            out.push(format!(
                "UPDATE {name} SET {u} = {fill} WHERE {u} IS NULL",
                u = quote_ident(UPDATED_AT),
            ));
        }
        out.push(format!(
            "UPDATE {name} SET \"remote_id\" = NULL, \"dirty\" = TRUE"
        ));
    }
    out.extend(ddl::device_indexes(t).into_iter().map(index_if_not_exists));
}

/// `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` for an entity column the app's table may lack, in
/// the loosest form SQLite lets `ADD COLUMN` take: a default computed at run time is left out
/// (the column is then nullable), and so is a default under a foreign key.
fn add_if_missing(schema: &Schema, t: &Table, c: &Column) -> String {
    let mut loose = c.clone();
    if matches!(loose.default, Some(DefaultValue::Now)) || loose.reference.is_some() {
        loose.default = None;
    }
    if loose.default.is_none() {
        loose.nullable = true;
    }
    ddl::device_add_column(schema, t, &loose).replacen(" ADD COLUMN ", ADD_COLUMN_IF_MISSING, 1)
}

/// SQL for now, in the text form the column keeps.
fn now_in_form_of(c: &Column) -> &'static str {
    match c.datetime_text {
        DateTimeText::Sqlite => "CURRENT_TIMESTAMP",
        DateTimeText::Wire => ddl::SQLITE_NOW,
    }
}

fn index_if_not_exists(index_sql: String) -> String {
    index_sql
        .replacen(
            "CREATE UNIQUE INDEX ",
            "CREATE UNIQUE INDEX IF NOT EXISTS ",
            1,
        )
        .replacen("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
}
