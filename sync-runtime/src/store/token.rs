//! Where the bearer token lives: never in the app's database, which the app reads freely (its
//! own status route returns `sync_state.auth_token`) and which a user may copy or back up. The
//! token is kept in a file beside the database that only its user can read (mode 0600), named
//! `<database>-sync-token`; an in-memory database keeps it in memory.
//!
//! `sync_state.auth_token` holds only a marker, `kept-outside:<id>`, that the file repeats: a
//! database copied without the file, or a file left beside another database, gives no token,
//! and the marker is nothing a server accepts. A plain token found in the column (a database
//! from before) is moved out when the database is opened.
//!
//! The OS credential store (the `keyring` crate) was weighed: on Linux it needs a running
//! Secret Service over D-Bus, which servers, containers and CI machines lack, so the file is
//! the one place that works everywhere.

use super::StoreError;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The marker's prefix in `sync_state.auth_token`.
const MARKER: &str = "kept-outside:";

/// Keeps the token of one database: in a file beside it, or in memory.
#[derive(Debug)]
pub(crate) enum TokenKeeper {
    File(PathBuf),
    Memory(Mutex<Option<(String, String)>>),
}

impl TokenKeeper {
    /// The keeper for the database at `path` (`None`: in memory).
    pub(crate) fn for_database(path: Option<&Path>) -> TokenKeeper {
        match path {
            Some(p) => {
                let mut name = p.as_os_str().to_owned();
                name.push("-sync-token");
                TokenKeeper::File(PathBuf::from(name))
            }
            None => TokenKeeper::Memory(Mutex::new(None)),
        }
    }

    /// Keeps `token` under a new marker id, and gives the marker to store in the database.
    pub(crate) fn keep(&self, token: &str) -> Result<String, StoreError> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        match self {
            TokenKeeper::File(path) => write_private(path, &format!("{id} {token}\n"))?,
            TokenKeeper::Memory(m) => {
                *m.lock().unwrap_or_else(|e| e.into_inner()) = Some((id.clone(), token.into()))
            }
        }
        Ok(format!("{MARKER}{id}"))
    }

    /// The token the database's `marker` stands for, if it is here.
    pub(crate) fn token(&self, marker: Option<&str>) -> Option<String> {
        let id = marker?.strip_prefix(MARKER)?;
        let (kept_id, token) = match self {
            TokenKeeper::File(path) => {
                let text = std::fs::read_to_string(path).ok()?;
                let (i, t) = text.trim_end().split_once(' ')?;
                (i.to_owned(), t.to_owned())
            }
            TokenKeeper::Memory(m) => m.lock().unwrap_or_else(|e| e.into_inner()).clone()?,
        };
        (kept_id == id && !token.is_empty()).then_some(token)
    }

    /// Forgets the token.
    pub(crate) fn forget(&self) -> Result<(), StoreError> {
        match self {
            TokenKeeper::File(path) => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path, e)),
                _ => Ok(()),
            },
            TokenKeeper::Memory(m) => {
                *m.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(())
            }
        }
    }

    /// Moves a plain token found in `sync_state.auth_token` (a database from before the token
    /// left it) out of the database.
    pub(crate) fn move_out(&self, conn: &Connection) -> Result<(), StoreError> {
        let stored: Option<String> =
            conn.query_row("SELECT auth_token FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })?;
        let Some(token) = stored.filter(|t| !t.starts_with(MARKER)) else {
            return Ok(());
        };
        let marker = self.keep(&token)?;
        conn.execute(
            "UPDATE sync_state SET auth_token = ?1 WHERE id = 1",
            [marker],
        )?;
        Ok(())
    }
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Token(format!("{}: {e}", path.display()))
}

/// Writes `text` to `path` readable by its user only, replacing it whole (a temporary file
/// renamed over it, so a crash leaves the old token or the new one).
fn write_private(path: &Path, text: &str) -> Result<(), StoreError> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut f = options.open(&tmp)?;
        // A file left from before with wider rights keeps them through `open`: narrow them.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| io_err(path, e))
}
