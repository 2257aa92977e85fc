//! The runtime's own device tables, as migrations of the `sync-runtime` scope: what each holds
//! and why it exists. `state.rs` (and the files its header names) read and write them.

use crate::migrate::Migration;

/// The runtime's own device tables: `sync_state` (the seed's columns, created if the app did
/// not have it, plus what the runtime needs), rejected rows, pulled rows waiting for a parent or
/// for a natural key to free up, and non-synced rows removed while tombstones still point at them.
pub const RUNTIME_MIGRATIONS: &[Migration] = &[
    Migration::new(
        1,
        "0001_sync_state",
        "CREATE TABLE IF NOT EXISTS sync_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        remote_url TEXT,
        remote_user_id TEXT,
        auth_token TEXT,
        last_sync_at DATETIME,
        is_syncing BOOLEAN DEFAULT FALSE
    );
    ALTER TABLE sync_state ADD COLUMN device_id TEXT;
    ALTER TABLE sync_state ADD COLUMN synced_user_id TEXT;
    ALTER TABLE sync_state ADD COLUMN cursor TEXT;
    ALTER TABLE sync_state ADD COLUMN last_error TEXT;
    ALTER TABLE sync_state ADD COLUMN clock DATETIME;
    INSERT INTO sync_state (id) SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM sync_state WHERE id = 1);
    CREATE TABLE sync_rejected (
        table_name TEXT NOT NULL,
        row_id INTEGER NOT NULL,
        updated_at DATETIME NOT NULL,
        message TEXT NOT NULL,
        PRIMARY KEY (table_name, row_id)
    );
    CREATE TABLE sync_parked (
        table_name TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        row TEXT NOT NULL,
        PRIMARY KEY (table_name, remote_id)
    );
    CREATE TABLE sync_removed (
        table_name TEXT NOT NULL,
        row_id INTEGER NOT NULL,
        PRIMARY KEY (table_name, row_id)
    );",
    ),
    Migration::new(
        2,
        "0002_full_pull",
        "ALTER TABLE sync_state ADD COLUMN full_pull BOOLEAN NOT NULL DEFAULT FALSE;
    CREATE TABLE sync_seen (
        table_name TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        PRIMARY KEY (table_name, remote_id)
    ) WITHOUT ROWID;",
    ),
    // The account's email, so the settings screen names the account a person signed in with.
    Migration::new(
        3,
        "0003_account_email",
        "ALTER TABLE sync_state ADD COLUMN remote_email TEXT;",
    ),
    // Whether the server refused the stored token (the user must sign in again), as state
    // rather than read from the text of the last error. A database that is in that state
    // already (its last error the refusal's, the token forgotten) keeps it.
    Migration::new(
        4,
        "0004_token_refused",
        "ALTER TABLE sync_state ADD COLUMN token_refused BOOLEAN NOT NULL DEFAULT FALSE;
    UPDATE sync_state SET token_refused = (auth_token IS NULL AND remote_user_id IS NOT NULL
        AND substr(last_error, 1, 13) = 'sign in again') WHERE id = 1;",
    ),
    // What the device must keep whatever the app does to `sync_state` (its own disconnect
    // deletes the row): the device's id, the local owner a connection syncs (store/owner.rs)
    // and the account it last synced with (a reconnect to it duplicates nothing). The bearer
    // token is in none of these tables (store/token.rs).
    Migration::new(
        5,
        "0005_sync_device",
        "CREATE TABLE sync_device (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        device_id TEXT NOT NULL,
        owner TEXT,
        synced_user_id TEXT,
        remote_email TEXT,
        remote_url TEXT
    );
    INSERT INTO sync_device (id, device_id, synced_user_id, remote_email, remote_url)
        SELECT 1, device_id, synced_user_id, remote_email, remote_url FROM sync_state
        WHERE id = 1 AND device_id IS NOT NULL;",
    ),
    // Whether a sync step of the runtime is applying the server's versions (store/capture.rs):
    // set and reset inside that step's transaction only.
    Migration::new(
        6,
        "0006_sync_capture",
        "CREATE TABLE sync_capture (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        paused BOOLEAN NOT NULL DEFAULT FALSE
    );
    INSERT INTO sync_capture (id) VALUES (1);",
    ),
    // The CA of a self-hosted server, trusted beside the public web's roots (`server_ca.rs`).
    Migration::new(
        7,
        "0007_server_ca",
        "ALTER TABLE sync_state ADD COLUMN remote_ca TEXT;",
    ),
    // Why each pulled row is held back, for the status: nothing waits without a word.
    Migration::new(
        8,
        "0008_held_back_reason",
        "ALTER TABLE sync_parked ADD COLUMN reason TEXT;",
    ),
];
