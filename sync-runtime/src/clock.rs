//! The sync clock (docs/architecture.md, "The clock").
//!
//! A plain wall clock lets a device whose clock runs behind lose edits it made after seeing a
//! newer version. Every local stamp is therefore at or above the wall clock, strictly above every
//! stamp the device has seen, and strictly above the row's own previous stamp. Rows written in one
//! burst may share a stamp, so a bulk import does not run the clock ahead.

use crate::timestamp::Timestamp;
use std::sync::Mutex;

/// How far ahead of both the wall clock and the server's clock a stamp may be and still be
/// taken into the clock: the server refuses writes stamped further ahead (one day by default,
/// `/api/health`'s `max_clock_ahead_ms`), so a record that a broken clock stamped years ahead
/// must not drag every later local stamp out of bounds with it.
pub const MAX_AHEAD_MS: i64 = 24 * 3600 * 1000;

/// The device's logical clock. Derived on open from the largest stamp stored; kept in memory.
#[derive(Debug)]
pub struct Clock {
    /// The largest stamp taken in, and the latest server time seen.
    seen: Mutex<(Timestamp, Timestamp)>,
    wall: fn() -> Timestamp,
}

impl Clock {
    /// A clock that has seen `seen` (the largest stamp in the database).
    pub fn new(seen: Timestamp) -> Self {
        Self::with_wall_clock(seen, Timestamp::now)
    }

    /// The same with another wall clock, for simulations of skewed devices.
    pub fn with_wall_clock(seen: Timestamp, wall: fn() -> Timestamp) -> Self {
        let seen = seen.min(wall().add_millis(MAX_AHEAD_MS));
        Clock {
            seen: Mutex::new((seen, Timestamp::MIN)),
            wall,
        }
    }

    fn seen(&self) -> Timestamp {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Records a stamp that came from elsewhere (a pulled row, a stale answer's row). One more
    /// than [`MAX_AHEAD_MS`] ahead of both clocks is left out.
    pub fn observe(&self, t: Timestamp) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let limit = (self.wall)().max(seen.1).add_millis(MAX_AHEAD_MS);
        if t > seen.0 && t <= limit {
            seen.0 = t;
        }
    }

    /// Records the server's clock (`server_time` of an answer).
    pub fn observe_server_time(&self, t: Timestamp) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.1 = seen.1.max(t);
        }
        self.observe(t);
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
    fn a_stamp_from_a_broken_clock_does_not_run_the_clock_out_of_bounds() {
        let c = Clock::new(Timestamp::now());
        c.observe(Timestamp::parse_wire("9999-12-31T23:59:59.999Z").unwrap());
        let later = Timestamp::now().add_millis(MAX_AHEAD_MS);
        assert!(c.stamp(None) < later, "left out");
        // Within the bound of the server's clock, though ahead of the wall clock: taken in.
        let server = Timestamp::now().add_millis(2 * MAX_AHEAD_MS);
        c.observe_server_time(server);
        assert!(c.stamp(None) > server);
        let reopened = Clock::new(Timestamp::parse_wire("9999-01-01T00:00:00.000Z").unwrap());
        assert!(
            reopened.stamp(None) <= later.add_millis(1),
            "a stored one is capped on open"
        );
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
