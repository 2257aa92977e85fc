//! Every statement on the runtime's own device tables: `sync_state` (the session, the cursor,
//! the full-pull flag, the saved clock), rejected rows, parked (held-back) rows and the
//! full pull's seen-set, and the device's own row (`sync_device`). The sync steps in `push.rs`
//! and `pull.rs` call these methods, or embed the SQL fragments built here; `owner.rs`,
//! `token.rs` and `capture.rs` keep their own concerns. The tables are defined in
//! `runtime_tables.rs` (which also creates `sync_removed`, the write path's record of removed
//! device-only rows, which `write.rs`, `read.rs` and the sync steps use directly).

use super::{PushedRow, Store, StoreError};
use crate::App;
use crate::ddl::{quote_ident, quote_literal};
use crate::schema::Table;
use crate::timestamp::Timestamp;
use rusqlite::{Connection, OptionalExtension};

/// The columns of `sync_state` a status shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateRow {
    pub remote_url: Option<String>,
    /// The account signed in to (kept after a disconnect).
    pub account: Option<String>,
    pub token: Option<String>,
    pub last_sync_at: Option<String>,
    pub last_error: Option<String>,
    pub syncing: bool,
    /// The server refused the stored token: the user must sign in again.
    pub token_refused: bool,
}

/// A row the server refused, kept dirty and shown in the status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RejectedRow {
    pub table: String,
    pub id: i64,
    pub message: String,
}

/// A pulled version held back, shown in the status with why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HeldBackRow {
    pub table: String,
    pub remote_id: String,
    /// The local row of that record, if this device holds one.
    pub id: Option<i64>,
    pub reason: String,
}

impl Store {
    /// The email of the account this database was last connected to (kept after a
    /// disconnect, so signing in again can offer it).
    pub fn account_email(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT remote_email FROM sync_device WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Records the email the account was signed in with.
    pub fn save_account_email(&mut self, email: &str) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        self.conn.execute(
            "UPDATE sync_state SET remote_email = ?1 WHERE id = 1",
            [email],
        )?;
        self.conn.execute(
            "UPDATE sync_device SET remote_email = ?1 WHERE id = 1",
            [email],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The cursor of the last pulled page (`None`: the next pull is a full pull).
    pub fn cursor(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT cursor FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })?)
    }

    /// Forgets the cursor: the next pull is a full one, after which clean rows it did not return
    /// are removed (their tombstones were purged meanwhile). Dirty rows are kept.
    pub fn restart_full_pull(&mut self) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        self.conn.execute(
            "UPDATE sync_state SET cursor = NULL, full_pull = TRUE WHERE id = 1",
            [],
        )?;
        self.begin_full_pull()?;
        tx.commit()?;
        Ok(())
    }

    /// Starts a full pull at its first page, the one place a start forgets the seen-set: what
    /// an earlier attempt marked seen predates this pull's start, and a record deleted on the
    /// server since (its tombstone older than the pull, so not in it) would escape the sweep
    /// (simulation seed 3232). Everything the server holds live now comes in this pull's pages.
    pub(crate) fn begin_full_pull(&self) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM sync_seen", [])?;
        Ok(())
    }

    /// Whether a full pull is under way (its end sweeps the rows it did not see).
    pub fn in_full_pull(&self) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT full_pull FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })?)
    }

    /// Records that the server holds record `remote_id` of `table`, for the full pull's sweep.
    pub(super) fn mark_seen(&self, table: &Table, remote_id: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO sync_seen (table_name, remote_id) VALUES (?1, ?2)",
            )?
            .execute((&table.name, remote_id))?;
        Ok(())
    }

    /// Drops the held-back version of record `remote_id` of `table`, if any.
    pub(super) fn unpark(&self, table: &Table, remote_id: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM sync_parked WHERE table_name = ?1 AND remote_id = ?2")?
            .execute((&table.name, remote_id))?;
        Ok(())
    }

    /// Holds back pulled row `remote_id` of `table` (its JSON `text`) for `reason`, replacing
    /// an older held-back version.
    pub(super) fn save_parked(
        &self,
        table: &Table,
        remote_id: &str,
        text: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO sync_parked (table_name, remote_id, row, reason) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (table_name, remote_id) DO UPDATE SET row = excluded.row, reason = excluded.reason",
            (&table.name, remote_id, text, reason),
        )?;
        Ok(())
    }

    /// Every held-back row as (table name, remote id, row JSON).
    pub(super) fn parked_rows(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(self
            .conn
            .prepare("SELECT table_name, remote_id, row FROM sync_parked")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?)
    }

    /// Drops the held-back rows of records the full pull did not see.
    pub(super) fn unpark_unseen(&self) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM sync_parked WHERE NOT EXISTS (SELECT 1 FROM sync_seen s \
             WHERE s.table_name = sync_parked.table_name AND s.remote_id = sync_parked.remote_id)",
            [],
        )?;
        Ok(())
    }

    /// SQL: whether `remote_id` (a column expression) is not in the seen-set of the table bound
    /// to `?1`.
    pub(super) fn not_seen(remote_id: &str) -> String {
        format!("{remote_id} NOT IN (SELECT remote_id FROM sync_seen WHERE table_name = ?1)")
    }

    /// Ends a full pull after its sweep: the seen-set and the rejections are forgotten.
    pub(super) fn end_full_pull(&self) -> Result<(), StoreError> {
        self.conn.execute_batch(
            "DELETE FROM sync_seen; DELETE FROM sync_rejected; UPDATE sync_state SET full_pull = FALSE WHERE id = 1;",
        )?;
        Ok(())
    }

    /// Stores the cursor of the page just applied, in that page's transaction.
    pub(super) fn save_cursor(&self, cursor: &str) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE sync_state SET cursor = ?1 WHERE id = 1", [cursor])?;
        Ok(())
    }

    /// Records that the server refused `row` at its current stamp: it stays dirty, shows in the
    /// status, and is not pushed again until it changes.
    pub fn reject(&self, row: &PushedRow, message: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO sync_rejected (table_name, row_id, updated_at, message) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (table_name, row_id) DO UPDATE SET updated_at = excluded.updated_at, message = excluded.message",
            (&row.table, row.id, &row.updated_at, message),
        )?;
        Ok(())
    }

    /// Whether any row is recorded as rejected.
    pub(super) fn any_rejected(&self) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT EXISTS (SELECT 1 FROM sync_rejected)", [], |r| {
                r.get(0)
            })?)
    }

    /// Forgets an earlier rejection of row `id` of `table`.
    pub(super) fn forget_rejection(&self, table: &Table, id: i64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM sync_rejected WHERE table_name = ?1 AND row_id = ?2")?
            .execute((&table.name, id))?;
        Ok(())
    }

    /// SQL: whether row `alias` of `table` is not rejected at its current stamp (a rejected row
    /// is pushed again once it changes).
    pub(super) fn not_rejected_at_its_stamp(table: &Table, alias: &str) -> String {
        format!(
            "NOT EXISTS (SELECT 1 FROM sync_rejected x \
             WHERE x.table_name = {} AND x.row_id = {alias}.{} AND x.updated_at = {alias}.updated_at)",
            quote_literal(&table.name),
            quote_ident(&table.id_column),
        )
    }

    /// The columns of `sync_state` a status shows.
    pub fn status_row(&self) -> Result<StateRow, StoreError> {
        repair_state_row(&self.conn)?;
        let row = self.conn.query_row(
            "SELECT remote_url, remote_user_id, auth_token, last_sync_at, last_error, coalesce(is_syncing, FALSE), token_refused FROM sync_state WHERE id = 1",
            [],
            |r| {
                Ok(StateRow {
                    remote_url: r.get(0)?,
                    account: r.get(1)?,
                    token: r.get(2)?,
                    last_sync_at: r.get(3)?,
                    last_error: r.get(4)?,
                    syncing: r.get(5)?,
                    token_refused: r.get(6)?,
                })
            },
        )?;
        Ok(StateRow {
            token: self.token.token(row.token.as_deref()),
            ..row
        })
    }

    /// The rows the server rejected that are still as it saw them (dirty, at the stamp it
    /// refused), with why. A rejection outlived by an edit (pushed next) or by a pulled version
    /// (clean now) is not one any more.
    pub fn rejected_rows(&self) -> Result<Vec<RejectedRow>, StoreError> {
        if !self.any_rejected()? {
            return Ok(Vec::new());
        }
        let standing: Vec<String> = self
            .app
            .schema
            .synced()
            .map(|t| {
                format!(
                    "SELECT x.table_name, x.row_id, x.message FROM sync_rejected x JOIN {} r \
                     ON r.{} = x.row_id AND r.updated_at = x.updated_at AND r.dirty \
                     WHERE x.table_name = {}",
                    quote_ident(&t.name),
                    quote_ident(&t.id_column),
                    quote_literal(&t.name)
                )
            })
            .collect();
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{} ORDER BY 1, 2", standing.join(" UNION ALL ")))?;
        let rows = stmt.query_map([], |r| {
            Ok(RejectedRow {
                table: r.get(0)?,
                id: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows pulled but held back, with why (a parent not here yet, or a natural key not yet
    /// free); versions held back before reasons were kept say so.
    pub fn held_back_rows(&self) -> Result<Vec<HeldBackRow>, StoreError> {
        let mut out = Vec::new();
        for (table, remote_id, reason) in self
            .conn
            .prepare(
                "SELECT table_name, remote_id, coalesce(reason, 'held back before this version of the app kept why') \
                 FROM sync_parked ORDER BY table_name, remote_id",
            )?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?
        {
            let t = self.table(&table)?;
            let id = self
                .conn
                .query_row(
                    &format!(
                        "SELECT {} FROM {} WHERE remote_id = ?1",
                        quote_ident(&t.id_column),
                        quote_ident(&t.name)
                    ),
                    [&remote_id],
                    |r| r.get(0),
                )
                .optional()?;
            out.push(HeldBackRow {
                table,
                remote_id,
                id,
                reason,
            });
        }
        Ok(out)
    }

    /// Rows pulled but held back (a parent not here yet, or a natural key not yet free).
    pub fn parked_count(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM sync_parked", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    /// Forgets what this database knew of the server's state: rejections, held-back rows, the
    /// cursor (the next pull is a full one).
    fn forget_server_progress(&self) -> Result<(), StoreError> {
        self.conn.execute_batch(
            "DELETE FROM sync_rejected; DELETE FROM sync_parked; DELETE FROM sync_seen;
             UPDATE sync_state SET cursor = NULL, full_pull = FALSE WHERE id = 1;",
        )?;
        Ok(())
    }

    /// Prepares this database for an account other than the one it last synced with: remote ids
    /// and cursor are forgotten, tombstones dropped, every live row queued for upload. Only the
    /// connection's owner's rows: other owners' rows are never touched.
    pub fn reset_for_new_account(&mut self) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let owner = self.owner_for_writes()?;
        for t in self.synced_children_first() {
            let name = quote_ident(&t.name);
            let scope = self
                .owned_by(t, "t", &owner)
                .unwrap_or_else(|| "TRUE".into());
            self.conn.execute(
                &format!("DELETE FROM {name} AS t WHERE deleted_at IS NOT NULL AND {scope}"),
                [],
            )?;
            self.conn.execute(
                &format!("UPDATE {name} AS t SET remote_id = NULL, dirty = TRUE WHERE {scope}"),
                [],
            )?;
        }
        self.forget_server_progress()?;
        tx.commit()?;
        Ok(())
    }

    /// Drops every synced row of the connection's owner (the user chose the account's data over
    /// this device's).
    pub fn discard_local_data(&mut self) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let owner = self.owner_for_writes()?;
        for t in self.synced_children_first() {
            let scope = self
                .owned_by(t, "t", &owner)
                .unwrap_or_else(|| "TRUE".into());
            self.conn.execute(
                &format!("DELETE FROM {} AS t WHERE {scope}", quote_ident(&t.name)),
                [],
            )?;
        }
        self.forget_server_progress()?;
        tx.commit()?;
        Ok(())
    }

    /// Records a session with an account. A refused token's state ends here (the sign-in
    /// succeeded). The owner columns of the rows are the app's and stay as they are.
    pub fn save_session(
        &mut self,
        url: &str,
        user_id: &str,
        token: &str,
    ) -> Result<(), StoreError> {
        repair_state_row(&self.conn)?;
        let marker = self.token.keep(token)?;
        let tx = self.write_transaction()?;
        self.conn.execute(
            "UPDATE sync_state SET remote_url = ?1, remote_user_id = ?2, auth_token = ?3, synced_user_id = ?2, last_error = NULL, token_refused = FALSE WHERE id = 1",
            (url, user_id, &marker),
        )?;
        self.conn.execute(
            "UPDATE sync_device SET remote_url = ?1, synced_user_id = ?2 WHERE id = 1",
            (url, user_id),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The account this database last synced with.
    pub fn synced_account(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT synced_user_id FROM sync_device WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// (remote_url, bearer token) of the current session. The token is kept outside the
    /// database (store/token.rs); a `sync_state` row the app deleted reads as disconnected.
    pub fn session(&self) -> Result<(Option<String>, Option<String>), StoreError> {
        repair_state_row(&self.conn)?;
        let (url, marker): (Option<String>, Option<String>) = self.conn.query_row(
            "SELECT remote_url, auth_token FROM sync_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((url, self.token.token(marker.as_deref())))
    }

    /// Forgets the token (the local data stays).
    pub fn forget_token(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE sync_state SET auth_token = NULL WHERE id = 1", [])?;
        self.token.forget()
    }

    pub fn set_syncing(&self, syncing: bool) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE sync_state SET is_syncing = ?1 WHERE id = 1",
            [syncing],
        )?;
        Ok(())
    }

    /// Records the end of a sync: when, the error if any, and the clock's high-water mark. Any
    /// end other than a refused token's ([`Store::refuse_token`]) says nothing of a sign-in.
    pub fn finish_sync(&self, error: Option<&str>) -> Result<(), StoreError> {
        let now = Timestamp::now().to_wire();
        let clock = self.clock.high_water().to_wire();
        if error.is_none() {
            self.conn.execute(
                "UPDATE sync_state SET is_syncing = FALSE, last_sync_at = ?1, last_error = NULL, clock = ?2, token_refused = FALSE WHERE id = 1",
                (&now, &clock),
            )?;
        } else {
            self.conn.execute("UPDATE sync_state SET is_syncing = FALSE, last_error = ?1, clock = ?2, token_refused = FALSE WHERE id = 1", (error, &clock))?;
        }
        Ok(())
    }

    /// Records the end of a sync the server refused the token of: the token is forgotten (the
    /// local data stays), and the status asks the user to sign in again until a sign-in
    /// succeeds ([`Store::save_session`]). A disconnect leaves that as it is: the account
    /// still wants its password. A session stored since `refused` was read (a new password
    /// set meanwhile) is kept: only the end of the sync is recorded.
    pub fn refuse_token(&mut self, refused: &str, error: &str) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        self.finish_sync(Some(error))?;
        // The token is kept outside the database (store/token.rs): the one held now is compared.
        if self.session()?.1.as_deref() != Some(refused) {
            tx.commit()?;
            return Ok(());
        }
        self.conn.execute(
            "UPDATE sync_state SET auth_token = NULL, token_refused = TRUE WHERE id = 1",
            [],
        )?;
        tx.commit()?;
        self.token.forget()
    }
}

/// This database's device id, read when it is opened (made the first time, in the database,
/// so a copy keeps it). The `sync_state` row is repaired first: the app's own disconnect
/// deletes it.
pub(super) fn device_id(conn: &Connection) -> Result<String, StoreError> {
    let id: Option<String> = conn
        .query_row("SELECT device_id FROM sync_device WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    let id = match id {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::now_v7().to_string();
            conn.execute(
                "INSERT INTO sync_device (id, device_id) VALUES (1, ?1)",
                [&id],
            )?;
            id
        }
    };
    repair_state_row(conn)?;
    // Shown in `sync_state` too, where the app reads its sync columns.
    conn.execute(
        "UPDATE sync_state SET device_id = ?1 WHERE id = 1 AND device_id IS NOT ?1",
        [&id],
    )?;
    Ok(id)
}

/// Re-creates a `sync_state` row the app deleted (its own disconnect does), as a disconnected
/// device's: its id and its last account (kept in `sync_device`) stay, so reconnecting to that
/// account duplicates nothing; the cursor is gone, so the next pull is a full one. Cheap when
/// the row is there.
pub(super) fn repair_state_row(conn: &Connection) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO sync_state (id, device_id, remote_url, remote_user_id, synced_user_id, remote_email) \
         SELECT 1, device_id, remote_url, synced_user_id, synced_user_id, remote_email \
         FROM sync_device WHERE id = 1 AND NOT EXISTS (SELECT 1 FROM sync_state WHERE id = 1)",
        [],
    )?;
    Ok(())
}

/// Clears the `is_syncing` flag when the database is opened.
pub(super) fn clear_stuck_syncing(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("UPDATE sync_state SET is_syncing = FALSE WHERE id = 1", [])?;
    Ok(())
}

/// The largest stamp stored anywhere (rows of every synced table and the saved clock), from
/// which the clock resumes.
pub(super) fn largest_stamp(conn: &Connection, app: &App) -> Result<Timestamp, StoreError> {
    let mut parts: Vec<String> = app
        .schema
        .synced()
        .map(|t| format!("SELECT max(updated_at) AS m FROM {}", quote_ident(&t.name)))
        .collect();
    parts.push("SELECT clock AS m FROM sync_state".into());
    let sql = format!("SELECT max(m) FROM ({})", parts.join(" UNION ALL "));
    let max: Option<String> = conn.query_row(&sql, [], |r| r.get(0))?;
    Ok(max
        .and_then(|s| Timestamp::parse_lenient(&s).ok())
        .unwrap_or(Timestamp::MIN))
}
