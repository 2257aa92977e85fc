//! Timestamps at wire precision: milliseconds since the Unix epoch, always UTC.
//!
//! The wire form is RFC 3339 with exactly three fractional digits and `Z`
//! (`2026-11-28T07:49:06.123Z`), so emitted stamps compare correctly as strings.

use std::fmt;
use std::str::FromStr;

/// Days from 0000-03-01 style Julian day numbering to the Unix epoch.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;
const MS_PER_DAY: i64 = 86_400_000;

/// A point in time, UTC, millisecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a string is not a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a timestamp: expected RFC 3339 in UTC such as `2026-11-28T07:49:06.123Z`"
)]
pub struct TimestampError {
    input: String,
}

impl Timestamp {
    /// The smallest timestamp the wire form can express (`0000-01-01T00:00:00.000Z`).
    pub const MIN: Timestamp = Timestamp(-62_167_219_200_000);
    /// The largest timestamp the wire form can express (`9999-12-31T23:59:59.999Z`).
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// The wall clock, truncated to milliseconds.
    pub fn now() -> Self {
        let ms = match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Self::from_millis(ms)
    }

    /// From milliseconds since the Unix epoch, clamped to the range the wire form expresses.
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms.clamp(Self::MIN.0, Self::MAX.0))
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This stamp plus `ms` milliseconds (saturating at [`Timestamp::MAX`]).
    pub fn add_millis(self, ms: i64) -> Self {
        Self::from_millis(self.0.saturating_add(ms))
    }

    /// Parses the wire form: `YYYY-MM-DDTHH:MM:SS`, 0 to 3 fractional digits, then `Z` or
    /// `+00:00`. Anything else (other offsets, more digits, out-of-range fields) is refused.
    pub fn parse_wire(s: &str) -> Result<Self, TimestampError> {
        parse(s, false).ok_or_else(|| TimestampError { input: truncate(s) })
    }

    /// Like [`Timestamp::parse_wire`], but also accepts SQLite's own `YYYY-MM-DD HH:MM:SS[.fff]`
    /// with no zone (read as UTC), the form `CURRENT_TIMESTAMP` writes.
    pub fn parse_lenient(s: &str) -> Result<Self, TimestampError> {
        parse(s, true).ok_or_else(|| TimestampError { input: truncate(s) })
    }

    /// SQLite's `CURRENT_TIMESTAMP` form, `2026-11-28 07:49:06`: UTC, the milliseconds dropped.
    pub fn to_sqlite_text(self) -> String {
        let wire = self.to_wire();
        format!("{} {}", &wire[..10], &wire[11..19])
    }

    /// The wire form, e.g. `2026-11-28T07:49:06.123Z`.
    pub fn to_wire(self) -> String {
        let bytes = self.wire_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
}

fn parse(s: &str, lenient: bool) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !(b[10] == b'T' || (lenient && b[10] == b' ')) {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 3 {
            return None;
        }
        millis = digits(&frac[..n])? * 10i64.pow(3 - n as u32);
        rest = &frac[n..];
    }
    match rest {
        b"Z" | b"+00:00" => {}
        b"" if lenient && b[10] == b' ' => {}
        _ => return None,
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?)
            .ok()?;
    let days = i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY;
    Some(Timestamp(
        days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + millis,
    ))
}

impl Timestamp {
    /// The wire form's 24 ASCII bytes, `YYYY-MM-DDTHH:MM:SS.mmmZ`. Written by hand: every
    /// pulled, pushed and stored row formats a few, and the formatting machinery cost more than
    /// the rest of binding a row.
    fn wire_bytes(self) -> [u8; 24] {
        let days = self.0.div_euclid(MS_PER_DAY);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        // The proleptic Gregorian date of a day count (H. Hinnant's civil_from_days). In range
        // by construction: MIN..=MAX maps to years 0..=9999.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        let (secs, millis) = (ms_of_day / 1000, ms_of_day % 1000);
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, secs / 3600);
        put(14, 2, secs / 60 % 60);
        put(17, 2, secs % 60);
        put(20, 3, millis);
        out
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.wire_bytes();
        // ASCII digits and separators only.
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_wire(s)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_wire(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written formatter against the `time` crate's calendar, from year 0 to 9999
    /// (leap days, century rules and the era boundaries included).
    #[test]
    fn the_wire_form_matches_the_calendar_everywhere_in_range() {
        let mut ms = Timestamp::MIN.0;
        let step = 86_400_000 * 7 + 3_601_001; // a week, an hour, a second and a millisecond
        let mut checked = 0;
        while ms <= Timestamp::MAX.0 {
            for t in [ms, ms + 86_399_999] {
                if t > Timestamp::MAX.0 {
                    continue;
                }
                let days = t.div_euclid(MS_PER_DAY);
                let date =
                    time::Date::from_julian_day((days + UNIX_EPOCH_JULIAN_DAY) as i32).unwrap();
                let (secs, millis) = (t.rem_euclid(MS_PER_DAY) / 1000, t.rem_euclid(1000));
                let want = format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
                    date.year(),
                    u8::from(date.month()),
                    date.day(),
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60,
                );
                assert_eq!(Timestamp(t).to_wire(), want, "at {t} ms");
                assert_eq!(Timestamp::parse_wire(&want).unwrap(), Timestamp(t));
                checked += 1;
            }
            ms += step;
        }
        assert!(checked > 900_000);
        assert_eq!(Timestamp::MIN.to_wire(), "0000-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::MAX.to_wire(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn wire_form_round_trips() {
        let t = Timestamp::parse_wire("2026-11-28T07:49:06.123Z").unwrap();
        assert_eq!(t.to_wire(), "2026-11-28T07:49:06.123Z");
        assert_eq!(t.as_millis(), 1_795_852_146_123);
    }

    #[test]
    fn accepts_zero_to_three_fraction_digits_and_both_utc_suffixes() {
        let want = Timestamp::parse_wire("2026-11-28T07:49:06.100Z").unwrap();
        for s in [
            "2026-11-28T07:49:06.1Z",
            "2026-11-28T07:49:06.10Z",
            "2026-11-28T07:49:06.1+00:00",
        ] {
            assert_eq!(Timestamp::parse_wire(s).unwrap(), want, "{s}");
        }
        assert_eq!(
            Timestamp::parse_wire("2026-11-28T07:49:06Z")
                .unwrap()
                .to_wire(),
            "2026-11-28T07:49:06.000Z"
        );
    }

    #[test]
    fn refuses_what_is_not_a_utc_wire_stamp() {
        for s in [
            "",
            "2026-11-28",
            "2026-11-28 07:49:06",
            "2026-11-28T07:49:06.1234Z",
            "2026-11-28T07:49:06+01:00",
            "2026-02-30T07:49:06Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T07:49:06.Z",
            "+026-11-28T07:49:06Z",
            "2026-11-28T07:49:06Zjunk",
        ] {
            assert!(Timestamp::parse_wire(s).is_err(), "{s} should be refused");
        }
    }

    #[test]
    fn sqlite_text_is_current_timestamps_form_and_reads_back() {
        let t = Timestamp::parse_wire("2026-11-28T07:49:06.123Z").unwrap();
        assert_eq!(t.to_sqlite_text(), "2026-11-28 07:49:06");
        assert_eq!(
            Timestamp::parse_lenient(&t.to_sqlite_text()).unwrap(),
            t.add_millis(-123)
        );
    }

    #[test]
    fn lenient_reads_sqlite_current_timestamp_form() {
        assert_eq!(
            Timestamp::parse_lenient("2026-11-28 07:49:06")
                .unwrap()
                .to_wire(),
            "2026-11-28T07:49:06.000Z"
        );
    }

    #[test]
    fn extremes_and_pre_epoch_format() {
        assert_eq!(Timestamp::MIN.to_wire(), "0000-01-01T00:00:00.000Z");
        assert_eq!(Timestamp::MAX.to_wire(), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            Timestamp::from_millis(-1).to_wire(),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(Timestamp::from_millis(i64::MAX), Timestamp::MAX);
    }
}
