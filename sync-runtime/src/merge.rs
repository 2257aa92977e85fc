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

/// Where a version the device applies comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A pulled page.
    Pull,
    /// A push answered `stale`: the server's version, stored as if pulled.
    Stale,
    /// A pulled version held back earlier (its parent was not here yet): it may be older than
    /// what this device has since learned (found by the simulation, seed 229).
    Parked,
}

/// What a device does with a version the server sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceDecision {
    /// No local row: insert the pulled version.
    Insert,
    /// Take the pulled version over local row `id` (it is clean now).
    Replace { id: i64 },
    /// The local row wins: its unpushed edit stays dirty and reaches the server on the next
    /// push, or it is newer than a held-back version.
    KeepLocal { id: i64 },
    /// The pulled version is the local row's own write: nothing changes.
    Same { id: i64 },
}

/// The device's decision for a version stamped `incoming` from `origin`, meeting `local`, the
/// local row with the same `remote_id`. A clean local row always takes the pulled version; a
/// dirty one is compared by the merge rule, its stamp being `(updated_at, this_device)`. A
/// stale answer and a held-back version have their own cases first.
pub fn decide_on_device(
    origin: Origin,
    local: Option<LocalRow>,
    incoming: Stamp<'_>,
    this_device: &str,
) -> DeviceDecision {
    let Some(row) = local else {
        return DeviceDecision::Insert;
    };
    let at = incoming.updated_at;
    match origin {
        // A stale answer is the server's winner over this very write.
        Origin::Stale if row.updated_at <= at || !row.dirty => {
            DeviceDecision::Replace { id: row.id }
        }
        // A held-back version never replaces a newer one, nor an unpushed write of its stamp.
        Origin::Parked if row.updated_at > at || (row.dirty && row.updated_at == at) => {
            DeviceDecision::KeepLocal { id: row.id }
        }
        // The server's version of the very write held here: what a `stale` or `merged` answer
        // carried, held back for a parent this device did not have yet (found by the
        // simulation, seed 1082: the answer's list was the survivor of a merge).
        Origin::Parked if row.updated_at == at => DeviceDecision::Replace { id: row.id },
        // A clean row takes the pulled version even at an equal `updated_at`: another device may
        // have written in the same millisecond, and the server holds the winner.
        _ if !row.dirty => DeviceDecision::Replace { id: row.id },
        _ if Stamp::new(row.updated_at, this_device) == incoming => {
            DeviceDecision::Same { id: row.id }
        }
        _ if Stamp::new(row.updated_at, this_device) > incoming => {
            DeviceDecision::KeepLocal { id: row.id }
        }
        _ => DeviceDecision::Replace { id: row.id },
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
        let d = decide_on_device(Origin::Pull, Some(row), Stamp::new(ts(10), "srv"), "me");
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
        let d = decide_on_device(Origin::Pull, Some(row), Stamp::new(ts(50), "other"), "me");
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
            decide_on_device(Origin::Pull, Some(row), Stamp::new(ts(40), "x"), "me"),
            DeviceDecision::KeepLocal { id: 1 }
        );
        assert_eq!(
            decide_on_device(Origin::Pull, Some(row), Stamp::new(ts(60), "x"), "me"),
            DeviceDecision::Replace { id: 1 }
        );
        assert_eq!(
            decide_on_device(Origin::Pull, Some(row), Stamp::new(ts(50), "zz"), "me"),
            DeviceDecision::Replace { id: 1 }
        );
        assert_eq!(
            decide_on_device(Origin::Pull, Some(row), Stamp::new(ts(50), "aa"), "me"),
            DeviceDecision::KeepLocal { id: 1 }
        );
        assert_eq!(
            decide_on_device(Origin::Pull, Some(row), Stamp::new(ts(50), "me"), "me"),
            DeviceDecision::Same { id: 1 }
        );
    }

    #[test]
    fn a_version_meeting_no_local_row_is_inserted_whatever_its_origin() {
        for origin in [Origin::Pull, Origin::Stale, Origin::Parked] {
            assert_eq!(
                decide_on_device(origin, None, Stamp::new(ts(60), "x"), "me"),
                DeviceDecision::Insert
            );
        }
    }

    /// A `stale` answer is the server's winner over the write this device pushed: it replaces
    /// that write even where the pull rule would keep it (an equal stamp from a device id that
    /// sorts lower), but not a newer unpushed edit made since the push.
    #[test]
    fn a_stale_answer_replaces_the_write_it_answers_but_not_a_later_edit() {
        let pushed = LocalRow {
            id: 3,
            updated_at: ts(50),
            dirty: true,
        };
        assert_eq!(
            decide_on_device(Origin::Stale, Some(pushed), Stamp::new(ts(50), "aa"), "me"),
            DeviceDecision::Replace { id: 3 }
        );
        assert_eq!(
            decide_on_device(Origin::Pull, Some(pushed), Stamp::new(ts(50), "aa"), "me"),
            DeviceDecision::KeepLocal { id: 3 }
        );
        let edited_since = LocalRow {
            updated_at: ts(70),
            ..pushed
        };
        assert_eq!(
            decide_on_device(
                Origin::Stale,
                Some(edited_since),
                Stamp::new(ts(60), "x"),
                "me"
            ),
            DeviceDecision::KeepLocal { id: 3 }
        );
        let clean = LocalRow {
            dirty: false,
            ..edited_since
        };
        assert_eq!(
            decide_on_device(Origin::Stale, Some(clean), Stamp::new(ts(60), "x"), "me"),
            DeviceDecision::Replace { id: 3 }
        );
    }

    /// Found by the simulation (seeds 229 and 1082): a held-back version never replaces what
    /// the device learned since, nor an unpushed write of its own stamp; at the stamp of a
    /// pushed write it is the server's version of that write, and replaces it.
    #[test]
    fn a_held_back_version_never_replaces_a_newer_row() {
        let row = |at, dirty| LocalRow {
            id: 9,
            updated_at: ts(at),
            dirty,
        };
        let held = Stamp::new(ts(50), "zz");
        for local in [row(60, false), row(60, true), row(50, true)] {
            assert_eq!(
                decide_on_device(Origin::Parked, Some(local), held, "me"),
                DeviceDecision::KeepLocal { id: 9 },
                "{local:?}"
            );
        }
        assert_eq!(
            decide_on_device(Origin::Parked, Some(row(50, false)), held, "me"),
            DeviceDecision::Replace { id: 9 }
        );
        // Older local rows follow the pull rule.
        assert_eq!(
            decide_on_device(Origin::Parked, Some(row(40, true)), held, "me"),
            DeviceDecision::Replace { id: 9 }
        );
    }
}
