//! Runtime of the Syncable framework.
//!
//! `#[derive(Syncable)]` describes each entity's table as data ([`schema`]); this crate turns
//! those descriptions into the three database schemas ([`ddl`], [`migrate`]), keeps the device's
//! local store ([`store`]) with its dirty tracking and [`clock`], and speaks the sync
//! [`protocol`].

#[cfg(feature = "client")]
pub mod client;
pub mod clock;
#[cfg(feature = "control")]
pub mod control;
pub mod ddl;
pub mod generate;
pub mod merge;
pub mod migrate;
pub mod protocol;
pub mod schema;
#[cfg(feature = "server")]
pub mod server;
pub mod store;
pub mod syncable;
pub mod timestamp;
pub mod value;

pub use schema::{
    Column, ColumnRole, ColumnType, DateTimeText, DefaultValue, MergeMode, OnDelete, Reference,
    Schema, Table,
};
pub use store::{Store, StoreError};
pub use sync_derive::Syncable;
pub use syncable::Syncable;
pub use timestamp::Timestamp;
pub use value::{FieldType, Value, ValueError};

use migrate::Migration;

/// Everything the framework needs to know about one app: its schema and its committed
/// migrations for each target. The app builds it once (see the `entities` crate).
#[derive(Debug)]
pub struct App {
    pub schema: Schema,
    pub device_migrations: &'static [Migration],
    pub server_sqlite_migrations: &'static [Migration],
    pub server_postgres_migrations: &'static [Migration],
}

/// What generated code uses. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::schema::{
        Column, ColumnRole, ColumnType, DateTimeText, DefaultValue, MergeMode, OnDelete, Reference,
        Table,
    };
    pub use crate::syncable::{LocalId, Syncable, in_column, next_value};
    pub use crate::value::{FieldType, Value, ValueError, json_from_value, json_to_value};
    pub use std::borrow::ToOwned;
    pub use std::string::String;
    pub use std::sync::OnceLock;
    pub use std::vec::Vec;

    /// A column's DATETIME text form: `form` for a DATETIME field, the wire form (which no
    /// other type uses) for any other, so that a struct's `datetime = ...` reaches only its
    /// timestamps.
    pub fn datetime_text<T: FieldType>(form: DateTimeText) -> DateTimeText {
        if T::TYPE == ColumnType::DateTime {
            form
        } else {
            DateTimeText::Wire
        }
    }

    /// Fails to compile unless `T` is a timestamp, for a field's own `datetime = ...`.
    pub const fn assert_datetime_field<T: DateTimeField>() {}

    #[diagnostic::on_unimplemented(
        message = "`datetime = ...` is the text form of a timestamp, and `{Self}` is not one",
        label = "not a `sync_runtime::Timestamp`",
        note = "help: remove `datetime`, or make the field a `Timestamp` or `Option<Timestamp>`"
    )]
    pub trait DateTimeField {}
    impl DateTimeField for crate::Timestamp {}
    impl DateTimeField for Option<crate::Timestamp> {}

    /// Fails to compile unless `T` can hold a local primary key.
    pub const fn assert_local_id<T: LocalId>() {}

    /// Fails to compile unless `T` is the merge clock's type.
    pub const fn assert_merge_clock<T: MergeClock>() {}

    /// Fails to compile unless `T` can hold a reference (a parent's local id).
    pub const fn assert_reference_field<T: ReferenceField>() {}

    #[diagnostic::on_unimplemented(
        message = "`updated_at` must be a `sync_runtime::Timestamp`, not `{Self}`",
        label = "the merge clock of a synced entity",
        note = "help: declare it `pub updated_at: sync_runtime::Timestamp`"
    )]
    pub trait MergeClock {}
    impl MergeClock for crate::Timestamp {}

    #[diagnostic::on_unimplemented(
        message = "a reference field holds the parent's local id, not `{Self}`",
        label = "expected `i64` or `Option<i64>`"
    )]
    pub trait ReferenceField {}
    impl ReferenceField for i64 {}
    impl ReferenceField for Option<i64> {}
}
