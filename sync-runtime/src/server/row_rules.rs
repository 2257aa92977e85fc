//! What the server refuses in a pushed row that is well-formed JSON of the right types: each
//! rule rejects that row alone (docs/PROTOCOL.md, `rejected`), the same way on both backends.

use crate::protocol::wire::WireRow;
use crate::schema::Table;
use crate::server::ServerConfig;
use crate::timestamp::Timestamp;
use crate::value::Value;

/// Why `row` of `table` is refused, if it is: a NUL character in a text value, a text or JSON
/// value over the size limit, or a stamp too far ahead of the server's clock `now`.
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
