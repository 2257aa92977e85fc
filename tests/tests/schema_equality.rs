//! For each of the three schemas, applying all committed migrations to an empty database gives,
//! column by column, what the entities describe: types, nullability, defaults, foreign keys and
//! unique indexes. The expectations are spelled out here, apart from the DDL generator.

use rusqlite::Connection;
use std::collections::BTreeSet;
use sync_runtime::schema::{Column, ColumnType, DefaultValue, OnDelete, Table};
use sync_runtime::{Timestamp, migrate};

#[derive(Debug, Clone, PartialEq)]
struct Expected {
    name: String,
    ty: &'static str,
    not_null: bool,
    default: Option<DefaultValue>,
}

fn device_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text | ColumnType::Json => "TEXT",
        ColumnType::Integer => "INTEGER",
        ColumnType::Real => "REAL",
        ColumnType::Boolean => "BOOLEAN",
        ColumnType::DateTime => "DATETIME",
    }
}

fn expected_device_columns(t: &Table) -> Vec<Expected> {
    let mut out = vec![Expected {
        name: t.id_column.clone(),
        ty: "INTEGER",
        not_null: true,
        default: None,
    }];
    out.extend(t.columns.iter().map(|c| Expected {
        name: c.name.clone(),
        ty: device_type(c.ty),
        not_null: !c.nullable,
        default: c.default.clone(),
    }));
    if t.synced {
        out.push(Expected {
            name: "remote_id".into(),
            ty: "TEXT",
            not_null: false,
            default: None,
        });
        out.push(Expected {
            name: "deleted_at".into(),
            ty: "DATETIME",
            not_null: false,
            default: None,
        });
        out.push(Expected {
            name: "dirty".into(),
            ty: "BOOLEAN",
            not_null: true,
            default: Some(DefaultValue::Boolean(false)),
        });
    }
    out
}

/// The server's columns: bookkeeping first, then the columns that travel, references as text.
fn expected_server_columns(t: &Table, pg: bool) -> Vec<Expected> {
    let (text, int, real, boolean, datetime) = if pg {
        ("text", "bigint", "double precision", "boolean", "text")
    } else {
        ("TEXT", "INTEGER", "REAL", "BOOLEAN", "DATETIME")
    };
    let mut out = vec![
        Expected {
            name: "remote_id".into(),
            ty: text,
            not_null: true,
            default: None,
        },
        Expected {
            name: "user_id".into(),
            ty: text,
            not_null: true,
            default: None,
        },
        Expected {
            name: "seq".into(),
            ty: int,
            not_null: true,
            default: None,
        },
        Expected {
            name: "device_id".into(),
            ty: text,
            not_null: true,
            default: None,
        },
        Expected {
            name: "deleted_at".into(),
            ty: datetime,
            not_null: false,
            default: None,
        },
    ];
    out.extend(
        t.columns
            .iter()
            .filter(|c| c.on_wire())
            .map(|c: &Column| Expected {
                name: c.name.clone(),
                ty: if c.reference.is_some() {
                    text
                } else {
                    match c.ty {
                        ColumnType::Text | ColumnType::Json => text,
                        ColumnType::Integer => int,
                        ColumnType::Real => real,
                        ColumnType::Boolean => boolean,
                        ColumnType::DateTime => datetime,
                    }
                },
                not_null: !c.nullable,
                default: c.default.clone(),
            }),
    );
    out
}

fn sqlite_columns(conn: &Connection, table: &str) -> Vec<(Expected, bool)> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info(\"{table}\")"))
        .unwrap();
    stmt.query_map([], |r| {
        let dflt: Option<String> = r.get(4)?;
        Ok((
            Expected {
                name: r.get(1)?,
                ty: Box::leak(r.get::<_, String>(2)?.into_boxed_str()),
                not_null: r.get(3)?,
                default: None,
            },
            dflt.is_some(),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn sqlite_unique_indexes(conn: &Connection, table: &str) -> BTreeSet<Vec<String>> {
    tests::sqlite_indexes(conn, table)
        .into_iter()
        .filter(|i| i.unique)
        .map(|i| i.columns)
        .collect()
}

fn sqlite_foreign_keys(
    conn: &Connection,
    table: &str,
) -> BTreeSet<(String, String, String, String)> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA foreign_key_list(\"{table}\")"))
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(3)?, r.get(2)?, r.get(4)?, r.get(6)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn sample(ty: ColumnType) -> String {
    match ty {
        ColumnType::Text => "'x'".into(),
        ColumnType::Json => "'{}'".into(),
        ColumnType::Integer => "7".into(),
        ColumnType::Real => "1.5".into(),
        ColumnType::Boolean => "TRUE".into(),
        ColumnType::DateTime => "'2026-11-28T07:49:06.123Z'".into(),
    }
}

/// Checks a default by its effect: a row inserted without the column holds the default.
fn check_default(table: &str, column: &str, want: &DefaultValue, got: &str, started: Timestamp) {
    let ok = match want {
        DefaultValue::Text(s) => got == s,
        DefaultValue::Integer(i) => got.parse::<i64>().ok() == Some(*i),
        DefaultValue::Real(f) => got.parse::<f64>().ok() == Some(*f),
        DefaultValue::Boolean(b) => matches!(
            (b, got),
            (true, "1" | "true" | "t") | (false, "0" | "false" | "f")
        ),
        DefaultValue::Now => Timestamp::parse_wire(got).is_ok_and(|t| {
            t.to_wire() == got
                && t >= started.add_millis(-2000)
                && t <= Timestamp::now().add_millis(2000)
        }),
    };
    assert!(ok, "{table}.{column}: default {want:?} stored as `{got}`");
}

/// Inserts a row giving only the NOT NULL columns without a default, and checks every default.
fn check_sqlite_defaults(conn: &Connection, table: &str, cols: &[(Expected, ColumnType)]) {
    let started = Timestamp::now();
    let given: Vec<&(Expected, ColumnType)> = cols
        .iter()
        .filter(|(e, _)| e.not_null && e.default.is_none() && e.name != "id")
        .collect();
    let names: Vec<String> = given
        .iter()
        .map(|(e, _)| format!("\"{}\"", e.name))
        .collect();
    let values: Vec<String> = given.iter().map(|(_, ty)| sample(*ty)).collect();
    conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    let sql = if names.is_empty() {
        format!("INSERT INTO \"{table}\" DEFAULT VALUES")
    } else {
        format!(
            "INSERT INTO \"{table}\" ({}) VALUES ({})",
            names.join(", "),
            values.join(", ")
        )
    };
    // The capture marks a row the app inserts dirty (store/capture.rs): the declared default
    // shows with the capture paused, as a sync step writes.
    let paused = conn
        .execute("UPDATE sync_capture SET paused = TRUE", [])
        .is_ok();
    conn.execute(&sql, [])
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rowid = conn.last_insert_rowid();
    if paused {
        conn.execute("UPDATE sync_capture SET paused = FALSE", [])
            .unwrap();
    }
    for (e, _) in cols {
        let Some(d) = &e.default else { continue };
        let got: String = conn
            .query_row(
                &format!(
                    "SELECT CAST(\"{}\" AS TEXT) FROM \"{table}\" WHERE rowid = ?1",
                    e.name
                ),
                [rowid],
                |r| r.get(0),
            )
            .unwrap();
        check_default(table, &e.name, d, &got, started);
    }
    conn.execute(&format!("DELETE FROM \"{table}\""), [])
        .unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
}

fn column_types(t: &Table, server: bool) -> impl Fn(&str) -> ColumnType + '_ {
    move |name: &str| match (name, t.column(name)) {
        (_, Some(c)) if server && c.reference.is_some() => ColumnType::Text,
        (_, Some(c)) => c.ty,
        ("seq" | "id", None) => ColumnType::Integer,
        ("deleted_at", None) => ColumnType::DateTime,
        ("dirty", None) => ColumnType::Boolean,
        _ => ColumnType::Text,
    }
}

fn user_tables(conn: &Connection) -> BTreeSet<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'sync_%'")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn device_schema_from_migrations_equals_the_entities() {
    let store = sync_runtime::Store::open_in_memory(entities::app()).unwrap();
    let conn = store.connection();
    let schema = &entities::app().schema;
    let want_tables: BTreeSet<String> = schema.tables.iter().map(|t| t.name.clone()).collect();
    assert_eq!(user_tables(conn), want_tables);
    for t in &schema.tables {
        let want = expected_device_columns(t);
        let got = sqlite_columns(conn, &t.name);
        let got_cols: Vec<Expected> = got.iter().map(|(e, _)| e.clone()).collect();
        let want_cols: Vec<Expected> = want
            .iter()
            .map(|e| Expected {
                default: None,
                ..e.clone()
            })
            .collect();
        let as_set = |v: &[Expected]| v.iter().map(|e| format!("{e:?}")).collect::<BTreeSet<_>>();
        assert_eq!(
            as_set(&got_cols),
            as_set(&want_cols),
            "columns of {}",
            t.name
        );
        for ((g, has_default), w) in got.iter().zip(&want) {
            assert_eq!(
                *has_default,
                w.default.is_some(),
                "{}.{}: default present",
                t.name,
                g.name
            );
        }
        let ty = column_types(t, false);
        let typed: Vec<(Expected, ColumnType)> =
            want.iter().map(|e| (e.clone(), ty(&e.name))).collect();
        check_sqlite_defaults(conn, &t.name, &typed);

        let want_fks: BTreeSet<_> = t
            .references()
            .map(|(c, r)| {
                let action = match r.on_delete {
                    OnDelete::Cascade => "CASCADE",
                    OnDelete::SetNull => "SET NULL",
                };
                (
                    c.name.clone(),
                    r.table.clone(),
                    "id".to_owned(),
                    action.to_owned(),
                )
            })
            .collect();
        assert_eq!(
            sqlite_foreign_keys(conn, &t.name),
            want_fks,
            "foreign keys of {}",
            t.name
        );

        let mut want_unique: BTreeSet<Vec<String>> = t.natural_keys.iter().cloned().collect();
        if t.synced {
            want_unique.insert(vec!["remote_id".into()]);
        }
        assert_eq!(
            sqlite_unique_indexes(conn, &t.name),
            want_unique,
            "unique indexes of {}",
            t.name
        );
    }
    // The seed's singleton and what the runtime adds to it.
    let state: BTreeSet<String> = sqlite_columns(conn, "sync_state")
        .into_iter()
        .map(|(e, _)| e.name)
        .collect();
    for c in [
        "id",
        "remote_url",
        "remote_user_id",
        "auth_token",
        "last_sync_at",
        "is_syncing",
        "device_id",
        "cursor",
        "last_error",
        "remote_email",
    ] {
        assert!(state.contains(c), "sync_state lacks {c}");
    }
}

fn expected_server_unique(t: &Table) -> BTreeSet<Vec<String>> {
    let mut want: BTreeSet<Vec<String>> = t
        .natural_keys
        .iter()
        .map(|k| {
            std::iter::once("user_id".to_owned())
                .chain(k.iter().cloned())
                .collect()
        })
        .collect();
    want.insert(vec!["user_id".into(), "seq".into()]);
    want.insert(vec!["remote_id".into()]);
    want
}

#[test]
fn server_sqlite_schema_from_migrations_equals_the_entities() {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate::apply_sqlite(&mut conn, "app", entities::app().server_sqlite_migrations).unwrap();
    let schema = &entities::app().schema;
    let want_tables: BTreeSet<String> = schema.synced().map(|t| t.name.clone()).collect();
    assert_eq!(
        user_tables(&conn),
        want_tables,
        "the server keeps only synced tables"
    );
    for t in schema.synced() {
        let want = expected_server_columns(t, false);
        let got = sqlite_columns(&conn, &t.name);
        let as_set = |v: Vec<Expected>| {
            v.into_iter()
                .map(|e| format!("{:?}", Expected { default: None, ..e }))
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(
            as_set(got.iter().map(|(e, _)| e.clone()).collect()),
            as_set(want.clone()),
            "columns of {}",
            t.name
        );
        for (g, has_default) in &got {
            let w = want.iter().find(|w| w.name == g.name).unwrap();
            assert_eq!(
                *has_default,
                w.default.is_some(),
                "{}.{}: default present",
                t.name,
                g.name
            );
        }
        let ty = column_types(t, true);
        let typed: Vec<(Expected, ColumnType)> =
            want.iter().map(|e| (e.clone(), ty(&e.name))).collect();
        check_sqlite_defaults(&conn, &t.name, &typed);
        assert!(
            sqlite_foreign_keys(&conn, &t.name).is_empty(),
            "the server checks references itself"
        );
        assert_eq!(
            sqlite_unique_indexes(&conn, &t.name),
            expected_server_unique(t),
            "unique indexes of {}",
            t.name
        );
    }
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "current_thread")]
async fn server_postgres_schema_from_migrations_equals_the_entities() {
    let Some(url) =
        tests::postgres_url("server_postgres_schema_from_migrations_equals_the_entities")
    else {
        return;
    };
    let client = tests::server::postgres(&url).await;
    let ns = format!("schema_test_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {ns} CASCADE; CREATE SCHEMA {ns}; SET search_path TO {ns}"
        ))
        .await
        .unwrap();
    for m in entities::app().server_postgres_migrations {
        client
            .batch_execute(&format!("BEGIN; {} COMMIT;", m.sql))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
    }
    let schema = &entities::app().schema;
    let tables: BTreeSet<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
            &[&ns],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables, schema.synced().map(|t| t.name.clone()).collect());
    for t in schema.synced() {
        let want = expected_server_columns(t, true);
        let rows = client
            .query(
                "SELECT column_name::text, data_type::text, is_nullable::text, column_default::text \
                 FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                &[&ns, &t.name],
            )
            .await
            .unwrap();
        let got: BTreeSet<String> = rows
            .iter()
            .map(|r| {
                let e = Expected {
                    name: r.get(0),
                    ty: Box::leak(r.get::<_, String>(1).into_boxed_str()),
                    not_null: r.get::<_, String>(2) == "NO",
                    default: None,
                };
                let has_default = r.get::<_, Option<String>>(3).is_some();
                format!("{e:?} default={has_default}")
            })
            .collect();
        let want_set: BTreeSet<String> = want
            .iter()
            .map(|e| {
                format!(
                    "{:?} default={}",
                    Expected {
                        default: None,
                        ..e.clone()
                    },
                    e.default.is_some()
                )
            })
            .collect();
        assert_eq!(got, want_set, "columns of {}", t.name);

        // Defaults by their effect.
        let started = Timestamp::now();
        let ty = column_types(t, true);
        let given: Vec<&Expected> = want
            .iter()
            .filter(|e| e.not_null && e.default.is_none())
            .collect();
        let names: Vec<String> = given.iter().map(|e| format!("\"{}\"", e.name)).collect();
        let values: Vec<String> = given.iter().map(|e| sample(ty(&e.name))).collect();
        client
            .execute(
                &format!(
                    "INSERT INTO \"{}\" ({}) VALUES ({})",
                    t.name,
                    names.join(", "),
                    values.join(", ")
                ),
                &[],
            )
            .await
            .unwrap();
        for e in want.iter().filter(|e| e.default.is_some()) {
            let row = client
                .query_one(
                    &format!("SELECT \"{}\"::text FROM \"{}\"", e.name, t.name),
                    &[],
                )
                .await
                .unwrap();
            check_default(
                &t.name,
                &e.name,
                e.default.as_ref().unwrap(),
                &row.get::<_, String>(0),
                started,
            );
        }

        let unique: BTreeSet<Vec<String>> = client
            .query(
                "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index ix \
                 JOIN pg_class c ON c.oid = ix.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
                 WHERE n.nspname = $1 AND c.relname = $2 AND ix.indisunique GROUP BY ix.indexrelid",
                &[&ns, &t.name],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            unique,
            expected_server_unique(t),
            "unique indexes of {}",
            t.name
        );
        let fks: i64 = client
            .query_one(
                "SELECT count(*) FROM information_schema.table_constraints WHERE table_schema = $1 AND table_name = $2 AND constraint_type = 'FOREIGN KEY'",
                &[&ns, &t.name],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(fks, 0);
    }
    client
        .batch_execute(&format!("DROP SCHEMA {ns} CASCADE"))
        .await
        .unwrap();
}
