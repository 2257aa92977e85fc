//! A row's `field_stamps` as read from the wire (docs/PROTOCOL.md, "Field stamps"): the stamp
//! of each field written at another stamp than the row, in a push's form or the server's.

use super::wire::{FieldStamp, RowSource, WireError, malformed, normalise_id};
use crate::schema::Table;
use crate::timestamp::Timestamp;
use serde_json::Value as Json;

/// A row's `field_stamps`: per column it carries, a timestamp (a push) or a
/// `[timestamp, device_id]` pair (the server's), never after the row's own stamp.
pub(super) fn decode_field_stamps(
    table: &Table,
    j: &Json,
    sent: &[bool],
    row_stamp: Timestamp,
    source: RowSource,
) -> Result<Vec<FieldStamp>, WireError> {
    const KEY: &str = crate::schema::FIELD_STAMPS;
    let m = j
        .as_object()
        .ok_or_else(|| malformed(KEY, "expected an object of column stamps"))?;
    let mut out = Vec::with_capacity(m.len());
    for (name, v) in m {
        let column = table
            .column_index(name)
            .filter(|&i| sent[i] && table.columns[i].name != crate::schema::UPDATED_AT)
            .ok_or_else(|| {
                malformed(
                    KEY,
                    format!(
                        "`{}` is not a column the row carries",
                        name.chars().take(64).collect::<String>()
                    ),
                )
            })?;
        let (at, device) = match (source, v) {
            (RowSource::Push, Json::String(s)) => (s.as_str(), None),
            (RowSource::Server, Json::Array(a)) if a.len() == 2 => match (&a[0], &a[1]) {
                (Json::String(at), Json::String(d)) => (at.as_str(), Some(normalise_id(KEY, d)?)),
                _ => return Err(malformed(KEY, "expected [timestamp, device_id]")),
            },
            (RowSource::Push, _) => {
                return Err(malformed(KEY, format!("`{name}`: expected a timestamp")));
            }
            (RowSource::Server, _) => {
                return Err(malformed(
                    KEY,
                    format!("`{name}`: expected [timestamp, device_id]"),
                ));
            }
        };
        let updated_at = Timestamp::parse_wire(at).map_err(|e| malformed(KEY, e.to_string()))?;
        if updated_at > row_stamp {
            return Err(malformed(
                KEY,
                format!("`{name}` is stamped after the row's updated_at"),
            ));
        }
        out.push(FieldStamp {
            column,
            updated_at,
            device_id: device,
        });
    }
    out.sort_by_key(|f| f.column);
    Ok(out)
}
