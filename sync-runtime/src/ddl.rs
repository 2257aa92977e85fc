//! The DDL of the three schemas, built with sea-query from one [`Table`] description:
//! the device's SQLite tables, and the server's tables on SQLite and on PostgreSQL.

use crate::schema::{Column, ColumnType, DefaultValue, Schema, Table};
use sea_query::{
    ColumnDef, Expr, ForeignKey, ForeignKeyAction, Index, IndexCreateStatement,
    PostgresQueryBuilder, SqliteQueryBuilder, TableCreateStatement,
};

/// Which database a statement is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// SQL for "now" in wire form (`2026-11-28T07:49:06.123Z`).
pub const SQLITE_NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
const PG_NOW: &str = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

/// The column type names as the device declares them (the app's own SQLite types).
pub fn device_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text | ColumnType::Json => "TEXT",
        ColumnType::Integer => "INTEGER",
        ColumnType::Real => "REAL",
        ColumnType::Boolean => "BOOLEAN",
        ColumnType::DateTime => "DATETIME",
    }
}

/// The column type names on the server. Timestamps are wire-form text on both backends, so
/// they compare as strings exactly as the protocol orders them.
pub fn server_type(ty: ColumnType, dialect: Dialect) -> &'static str {
    match (dialect, ty) {
        (Dialect::Sqlite, ty) => device_type(ty),
        (Dialect::Postgres, ColumnType::Text | ColumnType::Json | ColumnType::DateTime) => "TEXT",
        (Dialect::Postgres, ColumnType::Integer) => "BIGINT",
        (Dialect::Postgres, ColumnType::Real) => "DOUBLE PRECISION",
        (Dialect::Postgres, ColumnType::Boolean) => "BOOLEAN",
    }
}

/// The SQL expression of a default (sea-query writes it as `DEFAULT (expr)`).
pub fn default_sql(d: &DefaultValue, dialect: Dialect, pre_sync: bool) -> String {
    match d {
        DefaultValue::Text(s) => quote_literal(s),
        DefaultValue::Integer(i) => i.to_string(),
        DefaultValue::Real(f) => format!("{f:?}"),
        DefaultValue::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        // Before sync, the app let SQLite stamp rows in its own `YYYY-MM-DD HH:MM:SS` form.
        DefaultValue::Now if pre_sync => "CURRENT_TIMESTAMP".to_owned(),
        DefaultValue::Now => match dialect {
            Dialect::Sqlite => SQLITE_NOW.to_owned(),
            Dialect::Postgres => PG_NOW.to_owned(),
        },
    }
}

pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes an identifier the way both backends read it.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn column_def(name: &str, ty: &str, nullable: bool, default: Option<String>) -> ColumnDef {
    let mut c = ColumnDef::new(name.to_owned());
    c.custom(ty.to_owned());
    if !nullable {
        c.not_null();
    }
    if let Some(d) = default {
        c.default(Expr::cust(d));
    }
    c
}

fn on_delete(c: &Column) -> ForeignKeyAction {
    match c.reference.as_ref().map(|r| r.on_delete) {
        Some(crate::schema::OnDelete::SetNull) => ForeignKeyAction::SetNull,
        _ => ForeignKeyAction::Cascade,
    }
}

fn build_table(stmt: &TableCreateStatement, dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => stmt.to_string(SqliteQueryBuilder),
        Dialect::Postgres => stmt.to_string(PostgresQueryBuilder),
    }
}

fn build_index(stmt: &IndexCreateStatement, dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => stmt.to_string(SqliteQueryBuilder),
        Dialect::Postgres => stmt.to_string(PostgresQueryBuilder),
    }
}

fn index(table: &str, name: String, cols: &[&str], unique: bool) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(table.to_owned());
    for c in cols {
        i.col(c.to_string());
    }
    if unique {
        i.unique();
    }
    i
}

/// The name of the device's UNIQUE index for natural key `n` (0-based) of `table`.
pub fn natural_key_index(table: &str, n: usize) -> String {
    format!("{table}_natural_key_{}", n + 1)
}

/// How a device table is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceForm {
    /// The app's table before sync existed: app columns only, SQLite-form default stamps.
    PreSync,
    /// The synced table: app columns plus `remote_id`, `deleted_at`, `dirty`.
    Synced,
}

/// `CREATE TABLE` for a device table under `name` (which differs from `t.name` while a table
/// is rebuilt), without its indexes. `schema` resolves the parents' id columns.
pub fn device_create_table(schema: &Schema, t: &Table, name: &str, form: DeviceForm) -> String {
    let pre_sync = form == DeviceForm::PreSync;
    let mut stmt = sea_query::Table::create();
    stmt.table(name.to_owned());
    // A table the app may already have: the pre-sync form of a synced table, or a table that
    // never syncs (it is kept as the app made it).
    if pre_sync || !t.synced {
        stmt.if_not_exists();
    }
    let mut id = ColumnDef::new(t.id_column.clone());
    id.custom("INTEGER".to_owned())
        .not_null()
        .primary_key()
        .auto_increment();
    stmt.col(id);
    for c in &t.columns {
        if pre_sync && c.since > 1 {
            continue;
        }
        let nullable = c.nullable || (pre_sync && c.name == crate::schema::UPDATED_AT);
        let default = c
            .default
            .as_ref()
            .map(|d| default_sql(d, Dialect::Sqlite, pre_sync));
        stmt.col(column_def(&c.name, device_type(c.ty), nullable, default));
    }
    if t.synced && !pre_sync {
        stmt.col(column_def("remote_id", "TEXT", true, None));
        stmt.col(column_def("deleted_at", "DATETIME", true, None));
        stmt.col(column_def("dirty", "BOOLEAN", false, Some("FALSE".into())));
    }
    for (c, r) in t.references() {
        if pre_sync && c.since > 1 {
            continue;
        }
        let parent_id = schema
            .table(&r.table)
            .map_or_else(|| "id".to_owned(), |p| p.id_column.clone());
        let mut fk = ForeignKey::create();
        fk.from_col(c.name.clone())
            .to(r.table.clone(), parent_id)
            .on_delete(on_delete(c));
        stmt.foreign_key(&mut fk);
    }
    if pre_sync {
        // The app's own UNIQUE constraints, as it declared them before sync.
        for key in &t.natural_keys {
            let mut i = Index::create();
            for k in key {
                i.col(k.clone());
            }
            i.unique();
            stmt.index(&mut i);
        }
    }
    build_table(&stmt, Dialect::Sqlite)
}

/// The indexes of a synced device table: `remote_id` (unique where set) and each natural key
/// (unique, tombstones included, so re-adding a deleted record revives it).
pub fn device_indexes(t: &Table) -> Vec<String> {
    let mut out = Vec::new();
    if t.synced {
        let i = index(
            &t.name,
            format!("{}_remote_id", t.name),
            &["remote_id"],
            true,
        );
        out.push(build_index(&i, Dialect::Sqlite));
        let i = index(&t.name, format!("{}_dirty", t.name), &["dirty"], false);
        out.push(build_index(&i, Dialect::Sqlite));
    }
    out.extend(device_natural_key_indexes(t));
    out
}

pub fn device_natural_key_indexes(t: &Table) -> Vec<String> {
    t.natural_keys
        .iter()
        .enumerate()
        .map(|(n, key)| {
            let cols: Vec<&str> = key.iter().map(String::as_str).collect();
            build_index(
                &index(&t.name, natural_key_index(&t.name, n), &cols, true),
                Dialect::Sqlite,
            )
        })
        .collect()
}

/// Server bookkeeping columns in front of the app's: who owns the row, which write it is.
pub const SERVER_COLUMNS: &[&str] = &["remote_id", "user_id", "seq", "device_id", "deleted_at"];

fn server_column(c: &Column, dialect: Dialect) -> ColumnDef {
    // On the server a reference holds the parent's remote id (or its natural key).
    let ty = if c.reference.is_some() {
        "TEXT"
    } else {
        server_type(c.ty, dialect)
    };
    let default = c.default.as_ref().map(|d| default_sql(d, dialect, false));
    column_def(&c.name, ty, c.nullable, default)
}

/// `CREATE TABLE` plus indexes for a synced table on the server: rows per user, references as
/// remote ids, the writer's device id and the change sequence. No foreign keys: a tombstone of a
/// record never seen is stored without checking its references, and the push code checks
/// ownership of every reference itself.
pub fn server_create_table(t: &Table, dialect: Dialect) -> Vec<String> {
    let mut stmt = sea_query::Table::create();
    stmt.table(t.name.clone());
    let mut rid = column_def("remote_id", "TEXT", false, None);
    rid.primary_key();
    stmt.col(rid);
    stmt.col(column_def("user_id", "TEXT", false, None));
    stmt.col(column_def(
        "seq",
        server_type(ColumnType::Integer, dialect),
        false,
        None,
    ));
    stmt.col(column_def("device_id", "TEXT", false, None));
    stmt.col(column_def(
        "deleted_at",
        server_type(ColumnType::DateTime, dialect),
        true,
        None,
    ));
    for c in t.columns.iter().filter(|c| c.on_wire()) {
        stmt.col(server_column(c, dialect));
    }
    let mut out = vec![build_table(&stmt, dialect)];
    out.extend(server_indexes(t, dialect));
    out
}

/// The server's indexes, as `CREATE INDEX` statements of the current layout: pull order per
/// user, natural keys per user, and reference lookups for cascades.
pub fn server_indexes(t: &Table, dialect: Dialect) -> Vec<String> {
    server_index_layout(t, dialect, crate::schema::SERVER_INDEX_LAYOUT)
        .into_iter()
        .map(|(_, sql)| sql)
        .collect()
}

/// The server's indexes of `t` under index layout `layout`, as (name, `CREATE INDEX`).
pub fn server_index_layout(t: &Table, dialect: Dialect, layout: u32) -> Vec<(String, String)> {
    let user_seq = format!("{}_user_seq", t.name);
    let mut out = vec![(
        user_seq.clone(),
        build_index(
            &index(&t.name, user_seq, &["user_id", "seq"], true),
            dialect,
        ),
    )];
    for (n, key) in t.natural_keys.iter().enumerate() {
        let mut cols = vec!["user_id"];
        cols.extend(key.iter().map(String::as_str));
        let name = natural_key_index(&t.name, n);
        out.push((
            name.clone(),
            build_index(&index(&t.name, name, &cols, true), dialect),
        ));
    }
    for (c, _) in t.references() {
        let served_by_a_natural_key = t.natural_keys.iter().any(|k| k.first() == Some(&c.name));
        if !c.on_wire() || (layout >= 2 && served_by_a_natural_key) {
            continue;
        }
        let name = format!("{}_ref_{}", t.name, c.name);
        let i = index(&t.name, name.clone(), &["user_id", &c.name], false);
        out.push((name, build_index(&i, dialect)));
    }
    out
}

/// `DROP INDEX` for the indexes of `old` under `old_layout` that `t` under the current layout
/// does not have as they are, then `CREATE INDEX` for those it has anew.
pub fn server_index_changes(
    old: &Table,
    old_layout: u32,
    t: &Table,
    dialect: Dialect,
) -> Vec<String> {
    let before = server_index_layout(old, dialect, old_layout);
    let after = server_index_layout(t, dialect, crate::schema::SERVER_INDEX_LAYOUT);
    let mut out: Vec<String> = before
        .iter()
        .filter(|i| !after.contains(i))
        .map(|(name, _)| format!("DROP INDEX IF EXISTS {}", quote_ident(name)))
        .collect();
    out.extend(
        after
            .into_iter()
            .filter(|i| !before.contains(i))
            .map(|(_, sql)| sql),
    );
    out
}

/// `ALTER TABLE ... ADD COLUMN` for an app column on the device.
pub fn device_add_column(schema: &Schema, t: &Table, c: &Column) -> String {
    let mut def = column_def(
        &c.name,
        device_type(c.ty),
        c.nullable,
        c.default
            .as_ref()
            .map(|d| default_sql(d, Dialect::Sqlite, false)),
    );
    if let Some(r) = &c.reference {
        let parent_id = schema
            .table(&r.table)
            .map_or_else(|| "id".to_owned(), |p| p.id_column.clone());
        def.extra(format!(
            "REFERENCES {}({}) ON DELETE {}",
            quote_ident(&r.table),
            quote_ident(&parent_id),
            r.on_delete.sql()
        ));
    }
    sea_query::Table::alter()
        .table(t.name.clone())
        .add_column(def)
        .to_string(SqliteQueryBuilder)
}

/// `ALTER TABLE ... ADD COLUMN` for a wire column on the server.
pub fn server_add_column(t: &Table, c: &Column, dialect: Dialect) -> String {
    let stmt = sea_query::Table::alter()
        .table(t.name.clone())
        .add_column(server_column(c, dialect))
        .to_owned();
    match dialect {
        Dialect::Sqlite => stmt.to_string(SqliteQueryBuilder),
        Dialect::Postgres => stmt.to_string(PostgresQueryBuilder),
    }
}

/// Whether SQLite can add `c` with `ALTER TABLE ADD COLUMN` (a constant default if NOT NULL, no
/// default computed at run time, and a NULL default under a foreign key); else the table is
/// rebuilt.
pub fn sqlite_can_add_column(c: &Column, has_foreign_key: bool) -> bool {
    let constant_default = !matches!(c.default, Some(DefaultValue::Now));
    let not_null_ok = c.nullable || c.default.is_some();
    let fk_ok = !has_foreign_key || c.default.is_none();
    constant_default && not_null_ok && fk_ok
}
