//! Push, pull and purge (docs/PROTOCOL.md), written once for both backends over [`SyncTx`].
//!
//! A push runs in one transaction that first locks the user's row, so two pushes of one user
//! never interleave (on PostgreSQL, even across server processes) and the per-user change
//! sequence is assigned in commit order: a pull can never skip a lower sequence that commits
//! later.
//!
//! By concern, one file each:
//! - `record.rs`: the record as stored ([`Record`]) and its codec;
//! - `read_ahead.rs`: what a push reads, a batch at a time;
//! - `pg_sets.rs`: on PostgreSQL, a batch's natural-key holders and its writes in one statement
//!   each, the batch passed as one JSON document or as column arrays;
//! - `push.rs`: the push and the flow of one pushed row (identity, references, decision, write);
//! - `write_batch.rs`: a push's writes, a table's batch at a time;
//! - `merge.rs`: the decision against what is stored, natural-key merges and cascades;
//! - `statements.rs`: the statements a push builds, kept for the server's life;
//! - `pull.rs`: a page of changes;
//! - `purge.rs`: tombstones past the horizon.
//!
//! [`SyncTx`]: crate::server::db::SyncTx

mod merge;
mod pg_sets;
mod pull;
mod purge;
mod push;
mod read_ahead;
mod record;
mod statements;
mod write_batch;

pub use pg_sets::{key_set_lookup, keys_document};
pub use pull::{PullInput, PullPage, pull, user_sequence};
pub use purge::purge;
pub use push::{PushContext, PushInput, PushedRows, RowStatus, push};
pub use read_ahead::natural_key_lookup;
pub(crate) use record::select_columns;
pub use record::{Record, load, row_json};
pub use statements::Statements;
