//! The CA a device trusts for its server beside the public web's roots (a self-hosted server's
//! own), kept with the session in `sync_state` so that every sync, in any process, uses it.

use super::{Store, StoreError};

impl Store {
    /// The CA certificates (PEM) trusted for the server, if the device was told of any.
    pub fn server_ca(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT remote_ca FROM sync_state WHERE id = 1", [], |r| {
                r.get(0)
            })?)
    }

    /// Trusts `pem`'s CA for the server from now on (`None`: the public web's roots only).
    /// Check it first with `client::check_server_ca`.
    pub fn set_server_ca(&mut self, pem: Option<&str>) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE sync_state SET remote_ca = ?1 WHERE id = 1", [pem])?;
        Ok(())
    }
}
