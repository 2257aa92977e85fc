//! The sync clock (DESIGN.md, hard part 2).
//!
//! A plain wall clock lets a device whose clock runs behind lose edits it made after seeing a
//! newer version. Every local stamp is therefore at or above the wall clock, strictly above every
//! stamp the device has seen, and strictly above the row's own previous stamp. Rows written in one
//! burst may share a stamp, so a bulk import does not run the clock ahead.

use crate::timestamp::Timestamp;
use std::sync::Mutex;

/// The device's logical clock. Derived on open from the largest stamp stored; kept in memory.
#[derive(Debug)]
pub struct Clock {
    seen: Mutex<Timestamp>,
    wall: fn() -> Timestamp,
}

impl Clock {
    /// A clock that has seen `seen` (the largest stamp in the database).
    pub fn new(seen: Timestamp) -> Self {
        Self::with_wall_clock(seen, Timestamp::now)
    }

    /// The same with another wall clock, for simulations of skewed devices.
    pub fn with_wall_clock(seen: Timestamp, wall: fn() -> Timestamp) -> Self {
        Clock {
            seen: Mutex::new(seen),
            wall,
        }
    }

    fn seen(&self) -> Timestamp {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a stamp that came from elsewhere (a pulled row, the server's time).
    pub fn observe(&self, t: Timestamp) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if t > *seen {
            *seen = t;
        }
    }

    /// The stamp for a write to a row whose previous stamp is `previous` (`None` for a new row).
    pub fn stamp(&self, previous: Option<Timestamp>) -> Timestamp {
        let mut t = (self.wall)().max(self.seen().add_millis(1));
        if let Some(p) = previous {
            t = t.max(p.add_millis(1));
        }
        t
    }

    /// The largest stamp seen so far.
    pub fn high_water(&self) -> Timestamp {
        self.seen()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour_behind() -> Timestamp {
        Timestamp::now().add_millis(-3_600_000)
    }

    #[test]
    fn stamps_are_above_everything_seen_even_with_a_slow_wall_clock() {
        let seen = Timestamp::now();
        let c = Clock::with_wall_clock(seen, hour_behind);
        assert!(c.stamp(None) > seen);
        let pulled = seen.add_millis(5_000);
        c.observe(pulled);
        assert!(c.stamp(None) > pulled);
    }

    #[test]
    fn a_row_stamp_is_above_its_previous_stamp() {
        let c = Clock::with_wall_clock(Timestamp::MIN, hour_behind);
        let prev = Timestamp::now();
        assert_eq!(c.stamp(Some(prev)), prev.add_millis(1));
    }

    #[test]
    fn new_rows_may_share_a_stamp() {
        fn fixed() -> Timestamp {
            Timestamp::from_millis(1_000_000)
        }
        let c = Clock::with_wall_clock(Timestamp::MIN, fixed);
        let stamps: Vec<_> = (0..1000).map(|_| c.stamp(None)).collect();
        assert!(
            stamps.iter().all(|s| *s == fixed()),
            "a bulk import must not run the clock ahead"
        );
    }
}
