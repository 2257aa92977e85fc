//! Migrations: planning them from two schema snapshots, and applying them to SQLite.
//!
//! `cargo xtask migrations` diffs the committed snapshot of the entities against the current
//! ones and writes one numbered file per target; the runtime applies the files in order, each
//! in one transaction, recording what ran in `sync_migrations` ([`run`]).

mod error;
mod run;

pub use error::MigrateError;
#[cfg(feature = "server")]
pub(crate) use error::at_line;
#[cfg(feature = "server")]
pub(crate) use run::Ledger;
pub use run::apply_sqlite;

use crate::ddl::{self, DeviceForm, Dialect, quote_ident};
use crate::schema::{Column, ColumnType, Schema, Table, UPDATED_AT};
use std::borrow::Cow;

/// A line in a migration file asking the migrator to turn foreign keys off around its
/// transaction: a table rebuild's DROP TABLE would otherwise fire ON DELETE CASCADE.
pub const FOREIGN_KEYS_OFF: &str = "-- sync: foreign_keys=off";

/// The first line of every generated migration file.
pub const GENERATED_HEADER: &str =
    "-- Written by `cargo xtask migrations` from the entities. Do not edit by hand.";

/// Where a set of migrations applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Device,
    ServerSqlite,
    ServerPostgres,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Device, Target::ServerSqlite, Target::ServerPostgres];

    /// The folder name of this target's migration files.
    pub fn dir(self) -> &'static str {
        match self {
            Target::Device => "device",
            Target::ServerSqlite => "server_sqlite",
            Target::ServerPostgres => "server_postgres",
        }
    }
}

/// One migration: a numbered batch of SQL run in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: Cow<'static, str>,
    pub sql: Cow<'static, str>,
}

impl Migration {
    pub const fn new(version: u32, name: &'static str, sql: &'static str) -> Self {
        Migration {
            version,
            name: Cow::Borrowed(name),
            sql: Cow::Borrowed(sql),
        }
    }

    fn needs_foreign_keys_off(&self) -> bool {
        self.sql.lines().any(|l| l.trim() == FOREIGN_KEYS_OFF)
    }
}

/// A schema change the generator cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot generate a migration: {0}")]
pub struct PlanError(pub String);

/// The SQL of one new migration for each target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub device: String,
    pub server_sqlite: String,
    pub server_postgres: String,
}

impl Plan {
    pub fn for_target(&self, t: Target) -> &str {
        match t {
            Target::Device => &self.device,
            Target::ServerSqlite => &self.server_sqlite,
            Target::ServerPostgres => &self.server_postgres,
        }
    }
}

/// Plans the migration that takes databases built from `previous` (none: a first migration)
/// to `current`. `None` when nothing changed.
pub fn plan(previous: Option<&Schema>, current: &Schema) -> Result<Option<Plan>, PlanError> {
    if previous == Some(current) {
        return Ok(None);
    }
    let mut device = Sql::default();
    let mut sqlite = Sql::default();
    let mut pg = Sql::default();
    match previous {
        None => {
            device.fk_off = true;
            for t in &current.tables {
                first_device_table(current, t, &mut device);
                if t.synced {
                    sqlite.extend(ddl::server_create_table(t, Dialect::Sqlite));
                    pg.extend(ddl::server_create_table(t, Dialect::Postgres));
                }
            }
        }
        Some(prev) => {
            for old in &prev.tables {
                if current.table(&old.name).is_none() {
                    return Err(PlanError(format!(
                        "table `{}` was removed; drop it in a migration written by hand",
                        old.name
                    )));
                }
            }
            for t in &current.tables {
                match prev.table(&t.name) {
                    None => {
                        device.push(ddl::device_create_table(
                            current,
                            t,
                            &t.name,
                            DeviceForm::Synced,
                        ));
                        device.extend(ddl::device_indexes(t));
                        if t.synced {
                            sqlite.extend(ddl::server_create_table(t, Dialect::Sqlite));
                            pg.extend(ddl::server_create_table(t, Dialect::Postgres));
                        }
                    }
                    Some(old) if old == t => {
                        if t.synced && prev.server_index_layout != current.server_index_layout {
                            let layout = prev.server_index_layout;
                            sqlite.extend(ddl::server_index_changes(
                                old,
                                layout,
                                t,
                                Dialect::Sqlite,
                            ));
                            pg.extend(ddl::server_index_changes(old, layout, t, Dialect::Postgres));
                        }
                    }
                    Some(old) => alter_table(
                        current,
                        (old, prev.server_index_layout),
                        t,
                        &mut device,
                        &mut sqlite,
                        &mut pg,
                    )?,
                }
            }
        }
    }
    Ok(Some(Plan {
        device: device.finish(),
        server_sqlite: sqlite.finish(),
        server_postgres: pg.finish(),
    }))
}

#[derive(Default)]
struct Sql {
    statements: Vec<String>,
    fk_off: bool,
}

impl Sql {
    fn push(&mut self, s: String) {
        self.statements.push(s);
    }
    fn extend(&mut self, s: impl IntoIterator<Item = String>) {
        self.statements.extend(s);
    }
    fn finish(self) -> String {
        let mut out = format!("{GENERATED_HEADER}\n");
        if self.fk_off {
            out.push_str(FOREIGN_KEYS_OFF);
            out.push('\n');
        }
        if self.statements.is_empty() {
            out.push_str("-- Nothing changes for this target.\n");
        }
        for s in self.statements {
            out.push_str(&s);
            out.push_str(";\n");
        }
        out
    }
}

/// The SQL that turns a stored DATETIME of any form the app wrote (SQLite's
/// `YYYY-MM-DD HH:MM:SS`, RFC 3339 with any offset, Unix seconds or milliseconds) into the wire
/// form. A value SQLite cannot read is kept as it was rather than lost.
fn normalise_datetime(col: &str) -> String {
    let c = quote_ident(col);
    let fmt = "'%Y-%m-%dT%H:%M:%fZ'";
    format!(
        "CASE WHEN {c} IS NULL THEN NULL \
         WHEN typeof({c}) IN ('integer', 'real') THEN strftime({fmt}, CASE WHEN abs({c}) > 100000000000 THEN {c} / 1000.0 ELSE {c} END, 'unixepoch') \
         ELSE COALESCE(strftime({fmt}, {c}), {c}) END"
    )
}

/// The first device migration for one table: create the app's pre-sync table if this is a new
/// install, then rebuild it into its synced form in place, keeping every row, normalising its
/// timestamps, filling `updated_at` and queueing every row for upload.
fn first_device_table(schema: &Schema, t: &Table, out: &mut Sql) {
    if !t.synced {
        out.push(ddl::device_create_table(
            schema,
            t,
            &t.name,
            DeviceForm::Synced,
        ));
        out.extend(
            ddl::device_natural_key_indexes(t)
                .into_iter()
                .map(if_not_exists),
        );
        return;
    }
    out.push(ddl::device_create_table(
        schema,
        t,
        &t.name,
        DeviceForm::PreSync,
    ));
    let tmp = format!("{}__sync_new", t.name);
    out.push(ddl::device_create_table(
        schema,
        t,
        &tmp,
        DeviceForm::Synced,
    ));
    let mut cols = vec![quote_ident(&t.id_column)];
    let mut exprs = vec![quote_ident(&t.id_column)];
    for c in t.columns.iter().filter(|c| c.since <= 1) {
        cols.push(quote_ident(&c.name));
        exprs.push(match c.ty {
            ColumnType::DateTime if c.name == UPDATED_AT => {
                let mut fallbacks = vec![normalise_datetime(&c.name)];
                if t.column("created_at")
                    .is_some_and(|c| c.ty == ColumnType::DateTime)
                {
                    fallbacks.push(normalise_datetime("created_at"));
                }
                fallbacks.push(ddl::SQLITE_NOW.to_owned());
                format!("COALESCE({})", fallbacks.join(", "))
            }
            ColumnType::DateTime => normalise_datetime(&c.name),
            _ => quote_ident(&c.name),
        });
    }
    cols.push(quote_ident("dirty"));
    exprs.push("TRUE".into());
    out.push(format!(
        "INSERT INTO {} ({}) SELECT {} FROM {}",
        quote_ident(&tmp),
        cols.join(", "),
        exprs.join(", "),
        quote_ident(&t.name)
    ));
    out.push(format!("DROP TABLE {}", quote_ident(&t.name)));
    out.push(format!(
        "ALTER TABLE {} RENAME TO {}",
        quote_ident(&tmp),
        quote_ident(&t.name)
    ));
    out.extend(ddl::device_indexes(t));
}

fn if_not_exists(index_sql: String) -> String {
    index_sql.replacen(
        "CREATE UNIQUE INDEX",
        "CREATE UNIQUE INDEX IF NOT EXISTS",
        1,
    )
}

fn alter_table(
    current: &Schema,
    (old, old_index_layout): (&Table, u32),
    t: &Table,
    device: &mut Sql,
    sqlite: &mut Sql,
    pg: &mut Sql,
) -> Result<(), PlanError> {
    // Long on purpose: one case per kind of change to a table, each writing its statements for
    // the three targets side by side, so that they cannot drift apart.
    if old.synced != t.synced || old.id_column != t.id_column {
        return Err(PlanError(format!(
            "table `{}` changed whether it syncs or its id column; migrate it by hand",
            t.name
        )));
    }
    let added: Vec<&Column> = t
        .columns
        .iter()
        .filter(|c| old.column(&c.name).is_none())
        .collect();
    let changed = old
        .columns
        .iter()
        .any(|o| t.column(&o.name).is_some_and(|c| c != o));
    let removed = old.columns.iter().any(|o| t.column(&o.name).is_none());
    let keys_changed = old.natural_keys != t.natural_keys;

    // Device.
    let device_rebuild = changed
        || removed
        || added
            .iter()
            .any(|c| !ddl::sqlite_can_add_column(c, c.reference.is_some()));
    if device_rebuild {
        device.fk_off = true;
        rebuild_device_table(current, old, t, device);
    } else {
        for c in &added {
            device.push(ddl::device_add_column(current, t, c));
        }
        if keys_changed {
            drop_natural_keys(old, device);
            device.extend(ddl::device_natural_key_indexes(t));
        }
    }
    if !t.synced {
        return Ok(());
    }

    // Server: only wire columns exist there.
    let wire = |tb: &Table| -> Vec<Column> {
        tb.columns.iter().filter(|c| c.on_wire()).cloned().collect()
    };
    let (old_wire, new_wire) = (wire(old), wire(t));
    let s_added: Vec<&Column> = new_wire
        .iter()
        .filter(|c| !old_wire.iter().any(|o| o.name == c.name))
        .collect();
    let s_removed: Vec<&Column> = old_wire
        .iter()
        .filter(|o| !new_wire.iter().any(|c| c.name == o.name))
        .collect();
    let s_changed: Vec<(&Column, &Column)> = old_wire
        .iter()
        .filter_map(|o| {
            new_wire
                .iter()
                .find(|c| c.name == o.name && *c != o)
                .map(|c| (o, c))
        })
        .collect();
    let sqlite_rebuild = !s_removed.is_empty()
        || !s_changed.is_empty()
        || s_added
            .iter()
            .any(|c| !ddl::sqlite_can_add_column(c, false));
    if sqlite_rebuild {
        rebuild_server_sqlite_table(old, t, sqlite);
    } else {
        for c in &s_added {
            sqlite.push(ddl::server_add_column(t, c, Dialect::Sqlite));
        }
        sqlite.extend(ddl::server_index_changes(
            old,
            old_index_layout,
            t,
            Dialect::Sqlite,
        ));
    }
    for c in &s_added {
        pg.push(ddl::server_add_column(t, c, Dialect::Postgres));
    }
    for c in &s_removed {
        pg.push(format!(
            "ALTER TABLE {} DROP COLUMN {}",
            quote_ident(&t.name),
            quote_ident(&c.name)
        ));
    }
    for (o, c) in &s_changed {
        pg.extend(alter_pg_column(&t.name, o, c));
    }
    pg.extend(ddl::server_index_changes(
        old,
        old_index_layout,
        t,
        Dialect::Postgres,
    ));
    Ok(())
}

fn drop_natural_keys(old: &Table, out: &mut Sql) {
    for n in 0..old.natural_keys.len() {
        out.push(format!(
            "DROP INDEX IF EXISTS {}",
            quote_ident(&ddl::natural_key_index(&old.name, n))
        ));
    }
}

fn alter_pg_column(table: &str, old: &Column, new: &Column) -> Vec<String> {
    let (t, c) = (quote_ident(table), quote_ident(&new.name));
    let mut out = Vec::new();
    let ty = |col: &Column| {
        if col.reference.is_some() {
            "TEXT"
        } else {
            ddl::server_type(col.ty, Dialect::Postgres)
        }
    };
    if ty(old) != ty(new) {
        out.push(format!(
            "ALTER TABLE {t} ALTER COLUMN {c} TYPE {} USING {c}::{}",
            ty(new),
            ty(new)
        ));
    }
    if old.default != new.default {
        out.push(match &new.default {
            Some(d) => format!(
                "ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {}",
                ddl::default_sql(d, Dialect::Postgres, false)
            ),
            None => format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"),
        });
    }
    if old.nullable != new.nullable {
        let op = if new.nullable { "DROP" } else { "SET" };
        out.push(format!("ALTER TABLE {t} ALTER COLUMN {c} {op} NOT NULL"));
    }
    out
}

/// SQLite cannot alter a column in place: build the new table beside the old, copy the columns
/// both have, swap them, and recreate the indexes (foreign keys are off around the transaction).
fn rebuild_device_table(schema: &Schema, old: &Table, t: &Table, out: &mut Sql) {
    let tmp = format!("{}__sync_new", t.name);
    out.push(ddl::device_create_table(
        schema,
        t,
        &tmp,
        DeviceForm::Synced,
    ));
    let mut cols = vec![t.id_column.clone()];
    cols.extend(
        t.columns
            .iter()
            .filter(|c| old.column(&c.name).is_some())
            .map(|c| c.name.clone()),
    );
    if t.synced {
        cols.extend(["remote_id", "deleted_at", "dirty"].map(String::from));
    }
    copy_and_swap(&t.name, &tmp, &cols, out);
    out.extend(ddl::device_indexes(t));
}

fn rebuild_server_sqlite_table(old: &Table, t: &Table, out: &mut Sql) {
    out.fk_off = true;
    let tmp = format!("{}__sync_new", t.name);
    let mut stmts = ddl::server_create_table(t, Dialect::Sqlite);
    let create = stmts.remove(0);
    out.push(create.replacen(&quote_ident(&t.name), &quote_ident(&tmp), 1));
    let mut cols: Vec<String> = ddl::SERVER_COLUMNS.iter().map(|s| s.to_string()).collect();
    cols.extend(
        t.columns
            .iter()
            .filter(|c| c.on_wire() && old.column(&c.name).is_some_and(Column::on_wire))
            .map(|c| c.name.clone()),
    );
    copy_and_swap(&t.name, &tmp, &cols, out);
    out.extend(stmts);
}

fn copy_and_swap(table: &str, tmp: &str, cols: &[String], out: &mut Sql) {
    let list: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
    let list = list.join(", ");
    out.push(format!(
        "INSERT INTO {} ({list}) SELECT {list} FROM {}",
        quote_ident(tmp),
        quote_ident(table)
    ));
    out.push(format!("DROP TABLE {}", quote_ident(table)));
    out.push(format!(
        "ALTER TABLE {} RENAME TO {}",
        quote_ident(tmp),
        quote_ident(table)
    ));
}
