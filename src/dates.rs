//! Dates in lead data: ISO 8601 text read into an instant on a clock, moved by calendar lengths,
//! written back in one canonical form, and printed for a reader in their zone and language.
//!
//! Leads keep dates as text (`trial_ends = "2026-12-24"`), so the store, the API and exports
//! stay as they are; the workflow language is what gives them a type. Three shapes are read:
//!
//! - a day, `2026-12-24`: it starts at midnight on the lead's clock;
//! - a local date and time, `2026-12-24T17:00` (or with a space): on the lead's clock;
//! - an instant, `2026-12-24T17:00:00Z` or `…+01:00`: the same moment everywhere.
//!
//! "The lead's clock" is the lead's own zone, else the workflow's (as for send windows).
//! Arithmetic in days and weeks keeps the local time of day across DST, like `wait 2 days`.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;

use crate::engine::calendar;
use crate::workflow::WaitLength;

/// A date as a lead field holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateValue {
    /// `2026-12-24`: the whole day, starting at local midnight.
    Day(NaiveDate),
    /// `2026-12-24T17:00`: a wall-clock time on the lead's clock.
    Local(NaiveDateTime),
    /// `2026-12-24T17:00:00Z`: one moment.
    Instant(DateTime<Utc>),
}

/// What a date field is written as, for hints.
pub const DATE_FORMS: &str = "`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, or `YYYY-MM-DDTHH:MM:SS` ending in `Z` or an offset such as `+01:00`";

impl DateValue {
    /// Reads ISO 8601 text in one of the three shapes; `None` for anything else.
    pub fn parse(text: &str) -> Option<DateValue> {
        let text = text.trim();
        if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            return Some(DateValue::Day(day));
        }
        let with_t = text.replacen(' ', "T", 1);
        if let Ok(instant) = DateTime::<FixedOffset>::parse_from_rfc3339(&with_t) {
            return Some(DateValue::Instant(instant.with_timezone(&Utc)));
        }
        // RFC 3339 wants seconds; `2026-12-24T17:00Z` is common too.
        for format in ["%Y-%m-%dT%H:%M%#z", "%Y-%m-%dT%H:%MZ"] {
            if let Ok(instant) = DateTime::<FixedOffset>::parse_from_str(&with_t, format) {
                return Some(DateValue::Instant(instant.with_timezone(&Utc)));
            }
            if format.ends_with('Z')
                && let Ok(local) = NaiveDateTime::parse_from_str(&with_t, format)
            {
                return Some(DateValue::Instant(local.and_utc()));
            }
        }
        for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
            if let Ok(local) = NaiveDateTime::parse_from_str(&with_t, format) {
                return Some(DateValue::Local(local));
            }
        }
        None
    }

    /// The moment it names on `zone`'s clock.
    pub fn at(self, zone: Tz) -> DateTime<Utc> {
        match self {
            DateValue::Day(day) => calendar::resolve_local(zone, day.and_time(Default::default())),
            DateValue::Local(local) => calendar::resolve_local(zone, local),
            DateValue::Instant(instant) => instant,
        }
    }

    /// The canonical text: `2026-12-24`, `2026-12-24T17:00:00`, `2026-12-24T16:00:00Z`.
    pub fn canonical(self) -> String {
        match self {
            DateValue::Day(day) => day.format("%Y-%m-%d").to_string(),
            DateValue::Local(local) => local.format("%Y-%m-%dT%H:%M:%S").to_string(),
            DateValue::Instant(instant) => canonical_instant(instant),
        }
    }
}

/// How an instant is stored in a lead field: RFC 3339 in UTC, to the second.
pub fn canonical_instant(instant: DateTime<Utc>) -> String {
    instant.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Whether text is shaped like a date (`NNNN-N-N…`), so that a malformed one is reported rather
/// than kept as text: `2026-02-30` is a mistake, `ACME-2026` is not a date at all.
pub fn looks_like_date(text: &str) -> bool {
    let mut parts = text.trim().splitn(3, '-');
    let year = parts.next().unwrap_or_default();
    let month = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    let day_len = rest.chars().take_while(char::is_ascii_digit).count();
    let after_day = rest[day_len..].chars().next();
    year.len() == 4
        && year.chars().all(|c| c.is_ascii_digit())
        && (1..=2).contains(&month.len())
        && month.chars().all(|c| c.is_ascii_digit())
        && (1..=2).contains(&day_len)
        && after_day.is_none_or(|c| matches!(c, 'T' | 't' | ' '))
}

/// Why date-shaped text is not a date, in words.
pub fn why_not_a_date(text: &str) -> String {
    format!("`{}` is not a valid date; write {DATE_FORMS}", text.trim())
}

/// `at` moved by `length`, forward or back, on `zone`'s clock; `None` past the range of dates.
/// Days and weeks keep the local time of day (a DST change in between does not shift it).
pub fn shift(
    at: DateTime<Utc>,
    zone: Tz,
    length: WaitLength,
    forward: bool,
) -> Option<DateTime<Utc>> {
    let sign: i64 = if forward { 1 } else { -1 };
    let exact = |duration: Option<Duration>| {
        if forward {
            at.checked_add_signed(duration?)
        } else {
            at.checked_sub_signed(duration?)
        }
    };
    let days = |n: i64| {
        let local = at.with_timezone(&zone).naive_local();
        let moved = local.checked_add_signed(Duration::try_days(n * sign)?)?;
        Some(calendar::resolve_local(zone, moved))
    };
    match length {
        WaitLength::Minutes(n) => exact(Duration::try_minutes(i64::from(n))),
        WaitLength::Hours(n) => exact(Duration::try_hours(i64::from(n))),
        WaitLength::Days(n) => days(i64::from(n)),
        WaitLength::Weeks(n) => days(7 * i64::from(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono_tz::Europe::Berlin;

    #[test]
    fn the_three_shapes_read_and_write_back() {
        for (text, canonical) in [
            ("2026-12-24", "2026-12-24"),
            ("2026-12-24T17:00", "2026-12-24T17:00:00"),
            ("2026-12-24 17:00:30", "2026-12-24T17:00:30"),
            ("2026-12-24T17:00:00Z", "2026-12-24T17:00:00Z"),
            ("2026-12-24T17:00Z", "2026-12-24T17:00:00Z"),
            ("2026-12-24T18:00:00+01:00", "2026-12-24T17:00:00Z"),
        ] {
            let value = DateValue::parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(value.canonical(), canonical, "{text}");
        }
        for text in [
            "2026-02-30",
            "2026-13-01",
            "24.12.2026",
            "2026-12-24T25:00",
            "",
        ] {
            assert_eq!(DateValue::parse(text), None, "{text}");
        }
    }

    #[test]
    fn a_day_starts_at_midnight_on_the_given_clock() {
        let day = DateValue::parse("2026-12-24").unwrap();
        assert_eq!(
            day.at(Berlin),
            Utc.with_ymd_and_hms(2026, 12, 23, 23, 0, 0).unwrap()
        );
        let instant = DateValue::parse("2026-12-24T17:00:00Z").unwrap();
        assert_eq!(instant.at(Berlin), instant.at(Tz::UTC));
    }

    #[test]
    fn date_shaped_text_is_told_apart() {
        for text in ["2026-02-30", "2026-1-5", "2026-12-24T25:00", "2026-12-24 x"] {
            assert!(looks_like_date(text), "{text}");
        }
        for text in [
            "ACME-2026",
            "2026",
            "20261224",
            "2026-12",
            "12026-12-24",
            "2026-555-1234",
        ] {
            assert!(!looks_like_date(text), "{text}");
        }
    }

    #[test]
    fn days_keep_the_local_time_across_dst() {
        // Berlin leaves summer time on 2026-10-25.
        let before = Utc.with_ymd_and_hms(2026, 10, 24, 7, 0, 0).unwrap(); // 09:00 CEST
        let after = shift(before, Berlin, WaitLength::Days(2), true).unwrap();
        assert_eq!(after, Utc.with_ymd_and_hms(2026, 10, 26, 8, 0, 0).unwrap()); // 09:00 CET
        assert_eq!(
            shift(after, Berlin, WaitLength::Days(2), false),
            Some(before)
        );
        let last = DateTime::<Utc>::MAX_UTC;
        assert_eq!(shift(last, Berlin, WaitLength::Minutes(1), true), None);
    }
}
