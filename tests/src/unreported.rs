//! The simulation's check that no dirty row is left silent: after the final fault-free syncs,
//! every row a device still holds dirty is on the server at its stamp (pushed; only the answer
//! went astray), or the status reports it, rejected with the server's reason or waiting behind
//! a held-back row with its reason. A deletion the server rejected is a row no one can change
//! any more, so it is never sent again: that fails too, however it is reported. So does a
//! rejection the server would no longer give: a live row under a parent this device holds
//! deleted (the server has the deletion) is an orphan the server stores as a tombstone, so its
//! rejection, kept because a rejected row is not sent again until it changes, is out of date.

use rusqlite::OptionalExtension;
use std::collections::BTreeMap;
use sync_runtime::client::{self, Activity};
use sync_runtime::schema::{OnDelete, Table};
use sync_runtime::{Store, Timestamp};

/// One dirty row: (local id, remote id, stamp, whether it is a tombstone).
type DirtyRow = (i64, Option<String>, String, bool);

fn dirty_rows(store: &Store, table: &str) -> Vec<DirtyRow> {
    store
        .connection()
        .prepare(&format!(
            "SELECT id, remote_id, updated_at, deleted_at IS NOT NULL FROM {table} WHERE dirty ORDER BY id"
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The CASCADE parent of live row `id` of `table` that this device holds as a pushed
/// tombstone (deleted, not dirty), as "table remote_id".
fn deleted_parent(store: &Store, table: &Table, id: i64) -> Option<String> {
    table
        .references()
        .filter(|(_, r)| r.on_delete == OnDelete::Cascade && r.by_key.is_none())
        .find_map(|(c, r)| {
            store
                .connection()
                .query_row(
                    &format!(
                        "SELECT p.remote_id FROM {t} c JOIN {p} p ON p.{pid} = c.{col} \
                         WHERE c.{cid} = ?1 AND c.deleted_at IS NULL \
                         AND p.deleted_at IS NOT NULL AND NOT p.dirty",
                        t = table.name,
                        p = r.table,
                        col = c.name,
                        cid = table.id_column,
                        pid = store
                            .app()
                            .schema
                            .table(&r.table)
                            .map_or("id", |p| &p.id_column),
                    ),
                    [id],
                    |row| row.get::<_, Option<String>>(0),
                )
                .optional()
                .unwrap()
                .map(|rid| format!("{} {}", r.table, rid.unwrap_or_default()))
        })
}

/// Whether two stamps, in whatever text form each side keeps, are one instant.
fn same_stamp(a: &str, b: &str) -> bool {
    match (Timestamp::parse_lenient(a), Timestamp::parse_lenient(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Checks device `index`'s `store` against `server`: every record the server holds, (table,
/// remote id) to its wire stamp.
pub fn check_no_silent_dirty_row(
    index: usize,
    store: &Store,
    server: &BTreeMap<(String, String), String>,
) -> Result<(), String> {
    let status = client::status(store, Activity::Idle).map_err(|e| e.to_string())?;
    if let Some(h) = status.held_back.iter().find(|h| h.reason.is_empty()) {
        return Err(format!(
            "device {index} holds {} {} back without a reason",
            h.table, h.remote_id
        ));
    }
    for t in store.app().schema.synced() {
        for (id, remote_id, stamp, tombstone) in dirty_rows(store, &t.name) {
            let rejected = status
                .rejected
                .iter()
                .find(|r| r.table == t.name && r.id == id);
            let held_back = remote_id.as_ref().is_some_and(|rid| {
                status
                    .held_back
                    .iter()
                    .any(|h| h.table == t.name && &h.remote_id == rid)
            });
            let on_server = remote_id.as_ref().is_some_and(|rid| {
                server
                    .get(&(t.name.clone(), rid.clone()))
                    .is_some_and(|at| same_stamp(at, &stamp))
            });
            let what = format!(
                "{} row {id} ({}, stamp {stamp}, {})",
                t.name,
                remote_id.as_deref().unwrap_or("no remote id"),
                if tombstone { "a tombstone" } else { "live" }
            );
            match rejected {
                Some(r) if tombstone => {
                    return Err(format!(
                        "device {index} holds {what} dirty for good: the server rejected the \
                         deletion ({}), and a deleted row is never changed, so never sent again",
                        r.message
                    ));
                }
                Some(r) => {
                    if let Some(parent) = deleted_parent(store, t, id) {
                        return Err(format!(
                            "device {index} holds {what} rejected ({}) under {parent}, deleted: \
                             the server stores such a row as a tombstone now, so the rejection \
                             shown is out of date and the row is never sent again",
                            r.message
                        ));
                    }
                }
                None if held_back || on_server => {}
                None => {
                    return Err(format!(
                        "device {index} left {what} dirty after the final syncs: not on the \
                         server, and neither rejected nor held back in its status (pending: {:?})",
                        status.pending
                    ));
                }
            }
        }
    }
    Ok(())
}
