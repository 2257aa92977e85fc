//! Typed entities to and from wire rows, references translated through the device's ids.

use super::wire::{WireError, WireRow, bad};
use crate::schema::Reference;
use crate::syncable::Syncable;
use crate::timestamp::Timestamp;
use crate::value::Value;

pub trait RefResolver {
    /// The wire form of local id `local` in the parent of `reference`: its `remote_id`, or for a
    /// non-synced parent its natural key `by_key`. `None` if there is no such row.
    fn to_wire(&mut self, reference: &Reference, local: i64) -> Option<String>;
    /// The local id of the parent whose wire form is `wire`, `None` if this device has none.
    fn to_local(&mut self, reference: &Reference, wire: &str) -> Option<i64>;
}

/// A typed entity as a wire row: references translated through `refs`.
pub fn entity_to_wire<T: Syncable>(
    entity: &T,
    remote_id: &str,
    deleted_at: Option<Timestamp>,
    refs: &mut dyn RefResolver,
) -> Result<WireRow, WireError> {
    let table = T::table();
    let mut values = entity.to_values();
    let mut updated_at = None;
    for (c, v) in table.columns.iter().zip(values.iter_mut()) {
        if !c.on_wire() {
            *v = Value::Null;
            continue;
        }
        if let (true, Value::DateTime(t)) = (c.name == crate::schema::UPDATED_AT, &*v) {
            updated_at = Some(*t);
        }
        if let (Some(r), Value::Integer(local)) = (&c.reference, &*v) {
            let wire = refs
                .to_wire(r, *local)
                .ok_or_else(|| WireError::UnknownReference {
                    column: c.name.clone(),
                })?;
            *v = Value::Text(wire);
        }
    }
    let updated_at = updated_at.ok_or_else(|| WireError::MissingColumn("updated_at".into()))?;
    Ok(WireRow {
        remote_id: remote_id.to_owned(),
        updated_at,
        device_id: None,
        deleted_at,
        values,
        sent: None,
        field_stamps: Vec::new(),
    })
}

/// A wire row as a typed entity with local id `id`: references resolved through `refs`; columns
/// that do not travel take `local_values` (the device's current ones, or the entity's defaults).
pub fn entity_from_wire<T: Syncable>(
    row: &WireRow,
    id: i64,
    local_values: Option<Vec<Value>>,
    refs: &mut dyn RefResolver,
) -> Result<T, WireError> {
    let table = T::table();
    let mut values = row.values.clone();
    let mut local = local_values.map(Vec::into_iter);
    for (c, v) in table.columns.iter().zip(values.iter_mut()) {
        let kept = local.as_mut().and_then(Iterator::next);
        if !c.on_wire() {
            *v = kept.unwrap_or(Value::Null);
            continue;
        }
        if let (Some(r), Value::Text(wire)) = (&c.reference, &*v) {
            let local_id = refs
                .to_local(r, wire)
                .ok_or_else(|| WireError::UnknownReference {
                    column: c.name.clone(),
                })?;
            *v = Value::Integer(local_id);
        }
    }
    T::from_values(id, values).map_err(|e| bad(table.name.as_str(), e.0))
}
