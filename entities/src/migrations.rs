// Written by `cargo xtask migrations` from the entities. Do not edit by hand.
//! The committed migrations of each target, oldest first.

use sync_runtime::migrate::Migration;

/// The device's SQLite database.
pub static DEVICE: &[Migration] = &[
    Migration::new(1, "0001_init", include_str!("../migrations/device/0001_init.sql")),
    Migration::new(2, "0002_server_indexes", include_str!("../migrations/device/0002_server_indexes.sql")),
];

/// The server on its embedded SQLite.
pub static SERVER_SQLITE: &[Migration] = &[
    Migration::new(1, "0001_init", include_str!("../migrations/server_sqlite/0001_init.sql")),
    Migration::new(2, "0002_server_indexes", include_str!("../migrations/server_sqlite/0002_server_indexes.sql")),
];

/// The server on PostgreSQL.
pub static SERVER_POSTGRES: &[Migration] = &[
    Migration::new(1, "0001_init", include_str!("../migrations/server_postgres/0001_init.sql")),
    Migration::new(2, "0002_server_indexes", include_str!("../migrations/server_postgres/0002_server_indexes.sql")),
];
