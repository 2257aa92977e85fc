//! The pull cursor: where a pull continues. Opaque to clients, issued and validated here.
//!
//! `c1.<schema_version>.<seq>` continues an incremental pull after sequence `seq`.
//! `c1.<schema_version>.<seq>.f<began>` continues a full pull that began when the user's
//! sequence was `began`: it stays full until its last page, so no page of it leaves out the
//! caller's own writes (a device's sweep at the end of a full pull removes what it did not see).

use crate::protocol::error::CursorExpiry;

/// Where a pull continues (a pull without `since` starts a full pull).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFrom {
    /// A full pull under way: it began when the user's sequence was `began` and has delivered
    /// every change up to `seq`.
    Full { seq: i64, began: i64 },
    /// The changes after `seq`.
    After(i64),
}

impl PullFrom {
    /// Whether a pull from here can be served, given the user's sequence and purge watermark.
    pub fn check(self, last_seq: i64, purged: i64) -> Result<(), CursorExpiry> {
        match self {
            PullFrom::Full { seq, began } if seq > last_seq || began > last_seq => {
                Err(CursorExpiry::Ahead)
            }
            // A full pull leaves out tombstones written before it began, so only a purge of
            // later ones takes something it must deliver.
            PullFrom::Full { seq, began } if purged > seq.max(began) => Err(CursorExpiry::Purged),
            PullFrom::After(seq) if seq > last_seq => Err(CursorExpiry::Ahead),
            PullFrom::After(seq) if purged > seq => Err(CursorExpiry::Purged),
            _ => Ok(()),
        }
    }

    /// The last sequence delivered.
    pub fn seq(self) -> i64 {
        match self {
            PullFrom::Full { seq, .. } | PullFrom::After(seq) => seq,
        }
    }
}

/// A cursor as issued: the schema version it was issued for and where the pull continues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub schema_version: u32,
    pub from: PullFrom,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let v = self.schema_version;
        match self.from {
            PullFrom::Full { seq, began } => format!("c1.{v}.{seq}.f{began}"),
            PullFrom::After(seq) => format!("c1.{v}.{seq}"),
        }
    }

    /// A cursor this server issued, or `None` for anything else.
    pub fn decode(s: &str) -> Option<Cursor> {
        let mut parts = s.strip_prefix("c1.")?.split('.');
        let schema_version = number(parts.next()?)?;
        let seq = number(parts.next()?)?;
        let from = match parts.next() {
            None => PullFrom::After(seq),
            Some(f) => PullFrom::Full {
                seq,
                began: number(f.strip_prefix('f')?)?,
            },
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Cursor {
            schema_version: u32::try_from(schema_version).ok()?,
            from,
        })
    }
}

/// A non-negative decimal, digits only (no sign, no spaces).
fn number(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        for from in [
            PullFrom::After(0),
            PullFrom::After(42),
            PullFrom::Full { seq: 7, began: 99 },
        ] {
            let c = Cursor {
                schema_version: 3,
                from,
            };
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
    }

    #[test]
    fn anything_else_is_no_cursor() {
        for s in [
            "",
            "c1",
            "c1.1",
            "c1.1.",
            "c1.1.-4",
            "c1.1.1.1",
            "c1.1.1.f",
            "c1.1.1.f-1",
            "c1.1.1.f2.3",
            "c2.1.1",
            "c1.x.1",
            "c1.1.99999999999999999999",
            "c1.1. 1",
        ] {
            assert_eq!(Cursor::decode(s), None, "{s:?}");
        }
    }

    #[test]
    fn a_cursor_beyond_the_sequence_or_below_the_watermark_is_expired() {
        assert_eq!(PullFrom::After(11).check(10, 0), Err(CursorExpiry::Ahead));
        assert_eq!(PullFrom::After(10).check(10, 0), Ok(()));
        assert_eq!(PullFrom::After(4).check(10, 5), Err(CursorExpiry::Purged));
        assert_eq!(
            PullFrom::Full { seq: 3, began: 11 }.check(10, 0),
            Err(CursorExpiry::Ahead)
        );
        // Purged tombstones older than the full pull's start are left out by it anyway.
        assert_eq!(PullFrom::Full { seq: 3, began: 8 }.check(10, 5), Ok(()));
        assert_eq!(
            PullFrom::Full { seq: 3, began: 8 }.check(10, 9),
            Err(CursorExpiry::Purged)
        );
    }
}
