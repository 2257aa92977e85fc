//! The wire protocol (docs/PROTOCOL.md) as types, shared by the device's client and the server, so
//! that no status, header, path or error code is spelled twice: the endpoints' [`paths`] and
//! [`headers`], the [`auth`], [`account`] and [`health`] bodies, the [`push`] envelopes and row results,
//! the [`pull`] query and page, the [`error`] body, the pull [`cursor`], the schema-driven
//! decoders of pulled pages ([`page`]) and push bodies ([`push_body`]) with their one error
//! ([`DecodeError`]), the row object as read ([`raw_row`]) and the row codec ([`wire`]).

pub mod account;
pub mod auth;
pub mod cursor;
mod entity_wire;
pub mod error;
mod field_stamps;
pub mod headers;
pub mod health;
pub mod page;
pub mod paths;
pub mod pull;
pub mod push;
pub mod push_body;
pub mod raw_row;
pub mod wire;

use std::sync::Arc;

/// Why a body read against the schema (a pulled page, a push request) is not the protocol.
/// Its text is what the server answers in a 400 and what the device shows, so each variant
/// keeps the sentence the decoders wrote before they had a type. Clone (the JSON error shared),
/// because the device's errors travel to every waiter of a sync.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    /// A push request that is not the expected JSON.
    #[error("{0}")]
    PushBody(Arc<serde_json::Error>),
    /// A pulled page that is not the expected JSON.
    #[error("a pull page that is not the protocol: {0}")]
    Page(Arc<serde_json::Error>),
    /// A pulled row that does not fit its table.
    #[error("the server sent a bad {table} row: {error}")]
    PageRow {
        table: String,
        error: wire::WireError,
    },
    #[error("a pull page without a cursor")]
    NoCursor,
}
