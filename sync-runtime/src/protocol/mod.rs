//! The wire protocol (docs/PROTOCOL.md) as types, shared by the device's client and the server, so
//! that no status, header, path or error code is spelled twice: the endpoints' [`paths`] and
//! [`headers`], the [`auth`] and [`health`] bodies, the [`push`] envelopes and row results,
//! the [`pull`] query and page, the [`error`] body, the pull [`cursor`], the schema-driven
//! decoders of pulled pages ([`page`]) and push bodies ([`push_body`]), and the row codec
//! ([`wire`]).

pub mod auth;
pub mod cursor;
pub mod error;
pub mod headers;
pub mod health;
pub mod page;
pub mod paths;
pub mod pull;
pub mod push;
pub mod push_body;
pub mod wire;
