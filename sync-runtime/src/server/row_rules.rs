//! What the server refuses in a pushed row that is well-formed JSON of the right types: each
//! rule rejects that row alone (docs/PROTOCOL.md, `rejected`), the same way on both backends.

use crate::protocol::wire::WireRow;
use crate::schema::Table;
use crate::server::ServerConfig;
use crate::timestamp::Timestamp;
use crate::value::Value;

/// The most bytes the text values of one natural key (or one reference by key) may hold
/// together, references by id aside. The server indexes them: PostgreSQL refuses an index
/// entry over about 2,700 bytes (a third of a page), which failed the whole push; SQLite has no
/// such limit. Both refuse a row over this bound alike, with room left in the entry for the
/// account's id and the key's references by id.
pub const MAX_KEY_BYTES: usize = 2048;

/// Why `row` of `table` is refused, if it is: a NUL character in a text value, a text or JSON
/// value over the size limit, a natural key over [`MAX_KEY_BYTES`], or a stamp too far ahead
/// of the server's clock `now`.
pub fn refusal(
    table: &Table,
    row: &WireRow,
    config: &ServerConfig,
    now: Timestamp,
) -> Option<String> {
    let ahead = config.max_clock_ahead.as_millis().min(i64::MAX as u128) as i64;
    let latest = now.add_millis(ahead);
    for (name, stamp) in [
        ("updated_at", Some(row.updated_at)),
        ("deleted_at", row.deleted_at),
    ] {
        // A stamp from a clock far ahead would win every merge from then on: the record could
        // never be edited or deleted again.
        if stamp.is_some_and(|t| t > latest) {
            return Some(format!(
                "`{name}` is more than {} ahead of the server's clock ({}); check the device's clock",
                human(config.max_clock_ahead),
                now.to_wire()
            ));
        }
    }
    for (c, v) in table.columns.iter().zip(&row.values) {
        let bytes = match v {
            // PostgreSQL cannot store a NUL in text: refused on SQLite too, so both agree.
            Value::Text(s) if s.contains('\0') => {
                return Some(format!(
                    "column `{}`: text must not hold a NUL character (\\u0000)",
                    c.name
                ));
            }
            Value::Text(s) => s.len(),
            Value::Json(j) => j.as_str().len(),
            _ => 0,
        };
        if bytes > config.max_value_bytes {
            return Some(format!(
                "column `{}`: {bytes} bytes; a value may hold at most {}",
                c.name, config.max_value_bytes
            ));
        }
    }
    key_refusal(table, row)
}

/// Why `row`'s natural keys (and references by key, indexed on their own) are refused, if
/// one holds more than [`MAX_KEY_BYTES`] of text.
fn key_refusal(table: &Table, row: &WireRow) -> Option<String> {
    let by_key = table
        .references()
        .filter(|(_, r)| r.by_key.is_some())
        .map(|(c, _)| std::slice::from_ref(&c.name));
    for key in table.natural_keys.iter().map(Vec::as_slice).chain(by_key) {
        // A reference by id is a fixed 36 bytes, left out of the count (the bound leaves room).
        let bytes: usize = key
            .iter()
            .filter_map(|name| table.columns.iter().position(|c| &c.name == name))
            .filter(|&i| {
                table.columns[i]
                    .reference
                    .as_ref()
                    .is_none_or(|r| r.by_key.is_some())
            })
            .map(|i| match row.values.get(i) {
                Some(Value::Text(s)) => s.len(),
                _ => 0,
            })
            .sum();
        if bytes > MAX_KEY_BYTES {
            return Some(format!(
                "the key ({}) holds {bytes} bytes; a natural key may hold at most {MAX_KEY_BYTES}",
                key.join(", ")
            ));
        }
    }
    None
}

fn human(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s >= 86_400 => format!("{} day(s)", s / 86_400),
        s if s % 3600 == 0 && s >= 3600 => format!("{} hour(s)", s / 3600),
        s => format!("{s} s"),
    }
}
