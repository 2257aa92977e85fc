//! The merge rule of docs/PROTOCOL.md, which every replica applies the same way.
//!
//! A write is identified by its stamp `(updated_at, device_id)`. An incoming version replaces the
//! stored one only when its stamp is greater: `updated_at` first, then `device_id` as a string.
//! Equal stamps mean the same write.

use crate::timestamp::Timestamp;
use std::cmp::Ordering;

/// The identity of one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp<'a> {
    pub updated_at: Timestamp,
    pub device_id: &'a str,
}

impl<'a> Stamp<'a> {
    pub fn new(updated_at: Timestamp, device_id: &'a str) -> Self {
        Stamp {
            updated_at,
            device_id,
        }
    }
}

impl Ord for Stamp<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.updated_at
            .cmp(&other.updated_at)
            .then_with(|| self.device_id.cmp(other.device_id))
    }
}

impl PartialOrd for Stamp<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What the server does with a pushed write, given the version it stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerDecision {
    /// A record never seen: store it.
    Insert,
    /// The pushed write wins: store it over the stored version.
    Replace,
    /// The same write again (a retried push): nothing changes; answer `applied`.
    Repeat,
    /// The stored version wins: answer `stale` with it.
    Stale,
}

pub fn decide_on_server(stored: Option<Stamp<'_>>, incoming: Stamp<'_>) -> ServerDecision {
    match stored.map(|s| incoming.cmp(&s)) {
        None => ServerDecision::Insert,
        Some(Ordering::Greater) => ServerDecision::Replace,
        Some(Ordering::Equal) => ServerDecision::Repeat,
        Some(Ordering::Less) => ServerDecision::Stale,
    }
}

/// The device's own row that a pulled version meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalRow {
    pub id: i64,
    pub updated_at: Timestamp,
    pub dirty: bool,
}

/// What a device does with a pulled version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceDecision {
    /// No local row: insert the pulled version.
    Insert,
    /// Take the pulled version over local row `id` (it is clean now).
    Replace { id: i64 },
    /// The local row's unpushed edit wins; it stays dirty and reaches the server on the next push.
    KeepLocal { id: i64 },
    /// The pulled version is the local row's own write: nothing changes.
    Same { id: i64 },
    /// A local row the server has never acknowledged holds the same natural key: it is the same
    /// record, so it takes the pulled `remote_id`; its values follow the merge rule.
    MergeInto { id: i64, keep_local_values: bool },
    /// A local row the server keeps apart holds the natural key for a moment (a later page frees
    /// it): hold the pulled row back and apply it once the key is free.
    Park,
}

/// The device's decision for a pulled version stamped `incoming`. `by_remote_id` is the local row
/// with the same `remote_id`; `by_natural_key` a different local row with the same natural key and
/// whether the server ever acknowledged it. A clean local row always takes the pulled version; a
/// dirty one is compared by the merge rule, its stamp being `(updated_at, this_device)`.
pub fn decide_on_device(
    by_remote_id: Option<LocalRow>,
    by_natural_key: Option<(LocalRow, bool)>,
    incoming: Stamp<'_>,
    this_device: &str,
) -> DeviceDecision {
    let local_wins =
        |row: &LocalRow| row.dirty && Stamp::new(row.updated_at, this_device) > incoming;
    if let Some(row) = by_remote_id {
        // A clean row takes the pulled version even at an equal `updated_at`: another device may
        // have written in the same millisecond, and the server holds the winner.
        return if !row.dirty {
            DeviceDecision::Replace { id: row.id }
        } else if Stamp::new(row.updated_at, this_device) == incoming {
            DeviceDecision::Same { id: row.id }
        } else if local_wins(&row) {
            DeviceDecision::KeepLocal { id: row.id }
        } else {
            DeviceDecision::Replace { id: row.id }
        };
    }
    match by_natural_key {
        None => DeviceDecision::Insert,
        Some((row, false)) => DeviceDecision::MergeInto {
            id: row.id,
            keep_local_values: local_wins(&row),
        },
        Some((_, true)) => DeviceDecision::Park,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + ms)
    }

    #[test]
    fn server_orders_by_updated_at_then_device_id() {
        let stored = Stamp::new(ts(10), "b");
        assert_eq!(decide_on_server(None, stored), ServerDecision::Insert);
        assert_eq!(
            decide_on_server(Some(stored), Stamp::new(ts(11), "a")),
            ServerDecision::Replace
        );
        assert_eq!(
            decide_on_server(Some(stored), Stamp::new(ts(9), "z")),
            ServerDecision::Stale
        );
        // An exact tie on updated_at is broken by the device id as a string.
        assert_eq!(
            decide_on_server(Some(stored), Stamp::new(ts(10), "c")),
            ServerDecision::Replace
        );
        assert_eq!(
            decide_on_server(Some(stored), Stamp::new(ts(10), "a")),
            ServerDecision::Stale
        );
        assert_eq!(
            decide_on_server(Some(stored), Stamp::new(ts(10), "b")),
            ServerDecision::Repeat
        );
    }

    #[test]
    fn a_clean_local_row_always_takes_the_pulled_version() {
        let row = LocalRow {
            id: 1,
            updated_at: ts(50),
            dirty: false,
        };
        // Even an older stamp: the server holds the winner.
        let d = decide_on_device(Some(row), None, Stamp::new(ts(10), "srv"), "me");
        assert_eq!(d, DeviceDecision::Replace { id: 1 });
    }

    /// Found by the simulation (seed 1): two devices wrote one record in the same millisecond;
    /// the device whose write lost kept its own values, taking the winner for "the same write".
    #[test]
    fn a_clean_row_takes_another_devices_version_with_an_equal_stamp() {
        let row = LocalRow {
            id: 1,
            updated_at: ts(50),
            dirty: false,
        };
        let d = decide_on_device(Some(row), None, Stamp::new(ts(50), "other"), "me");
        assert_eq!(d, DeviceDecision::Replace { id: 1 });
    }

    #[test]
    fn a_dirty_local_row_is_compared_by_the_rule() {
        let row = LocalRow {
            id: 1,
            updated_at: ts(50),
            dirty: true,
        };
        assert_eq!(
            decide_on_device(Some(row), None, Stamp::new(ts(40), "x"), "me"),
            DeviceDecision::KeepLocal { id: 1 }
        );
        assert_eq!(
            decide_on_device(Some(row), None, Stamp::new(ts(60), "x"), "me"),
            DeviceDecision::Replace { id: 1 }
        );
        assert_eq!(
            decide_on_device(Some(row), None, Stamp::new(ts(50), "zz"), "me"),
            DeviceDecision::Replace { id: 1 }
        );
        assert_eq!(
            decide_on_device(Some(row), None, Stamp::new(ts(50), "aa"), "me"),
            DeviceDecision::KeepLocal { id: 1 }
        );
        assert_eq!(
            decide_on_device(Some(row), None, Stamp::new(ts(50), "me"), "me"),
            DeviceDecision::Same { id: 1 }
        );
    }

    #[test]
    fn natural_key_matches_merge_only_into_rows_the_server_never_saw() {
        let row = LocalRow {
            id: 7,
            updated_at: ts(50),
            dirty: true,
        };
        assert_eq!(
            decide_on_device(None, Some((row, false)), Stamp::new(ts(60), "x"), "me"),
            DeviceDecision::MergeInto {
                id: 7,
                keep_local_values: false
            }
        );
        assert_eq!(
            decide_on_device(None, Some((row, false)), Stamp::new(ts(40), "x"), "me"),
            DeviceDecision::MergeInto {
                id: 7,
                keep_local_values: true
            }
        );
        assert_eq!(
            decide_on_device(None, Some((row, true)), Stamp::new(ts(60), "x"), "me"),
            DeviceDecision::Park
        );
        assert_eq!(
            decide_on_device(None, None, Stamp::new(ts(60), "x"), "me"),
            DeviceDecision::Insert
        );
    }
}
