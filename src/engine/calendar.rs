//! Time as a marketer means it: local clocks, send windows, calendar and business days.
//!
//! Everything is a pure function of its inputs (no system clock). Instants are UTC; rules are
//! read on a local clock (the lead's zone, else the workflow's). Two DST rules apply everywhere:
//! a local time that does not exist (the spring-forward gap) moves forward by the gap's length
//! (02:30 on a 02:00→03:00 night is 03:30), and a local time that happens twice (the fall-back
//! hour) takes the earlier one.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Utc,
};
use chrono_tz::Tz;

use crate::lead::Lead;
use crate::workflow::{SendWindow, Wait, WaitLength, WindowZone, Workflow};

/// The clock a lead's rules are read on: the lead's own valid zone, else the workflow's.
/// A window that says `in workflow timezone` always uses the workflow's.
pub fn zone_for(workflow: &Workflow, lead: &Lead, rule: WindowZone) -> Tz {
    match rule {
        WindowZone::Workflow => workflow.timezone,
        WindowZone::Lead => lead.zone().unwrap_or(workflow.timezone),
    }
}

/// The instant a local date and time names in `zone`, by the DST rules of this module.
pub fn resolve_local(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(instant) | LocalResult::Ambiguous(instant, _) => {
            instant.with_timezone(&Utc)
        }
        LocalResult::None => {
            // In the gap: read the wall time with the offset in force before the gap, which
            // lands as far past the gap's end as the wall time was past its start.
            let before = zone
                .offset_from_utc_datetime(&(local - Duration::days(1)))
                .fix()
                .local_minus_utc();
            Utc.from_utc_datetime(&(local - Duration::seconds(i64::from(before))))
        }
    }
}

fn local(zone: Tz, at: DateTime<Utc>) -> NaiveDateTime {
    at.with_timezone(&zone).naive_local()
}

fn at_time(zone: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    resolve_local(zone, date.and_time(time))
}

/// Whether an email may leave at `at`: a window day, from `start` (inclusive) to `end`
/// (exclusive), on `zone`'s clock.
pub fn in_window(window: &SendWindow, zone: Tz, at: DateTime<Utc>) -> bool {
    next_window_opening(window, zone, at) == at
}

/// `at` itself when inside the window, else the next time the window opens.
pub fn next_window_opening(window: &SendWindow, zone: Tz, at: DateTime<Utc>) -> DateTime<Utc> {
    let today = local(zone, at).date();
    // A window has at least one day, so within eight days there is an opening.
    for offset in 0..=7 {
        let date = today + Duration::days(offset);
        if !window.days.contains(date.weekday()) {
            continue;
        }
        let open = at_time(zone, date, window.start);
        let close = at_time(zone, date, window.end);
        if at < close {
            return open.max(at);
        }
    }
    at
}

/// When a `wait` that starts at `now` ends, on `zone`'s clock.
pub fn wait_end(wait: &Wait, zone: Tz, now: DateTime<Utc>) -> DateTime<Utc> {
    match wait {
        Wait::For(WaitLength::Minutes(n)) => now + Duration::minutes(i64::from(*n)),
        Wait::For(WaitLength::Hours(n)) => now + Duration::hours(i64::from(*n)),
        Wait::For(WaitLength::Days(n)) => same_time_days_later(zone, now, i64::from(*n)),
        Wait::For(WaitLength::Weeks(n)) => same_time_days_later(zone, now, 7 * i64::from(*n)),
        Wait::BusinessDays(n) => business_days_later(zone, now, *n),
        Wait::UntilWeekday { days, time } => {
            let today = local(zone, now).date();
            (0..=7)
                .map(|offset| today + Duration::days(offset))
                .filter(|date| days.contains(date.weekday()))
                .map(|date| at_time(zone, date, *time))
                .find(|candidate| *candidate > now)
                // Every day set is non-empty (validated), so a week always has a candidate.
                .unwrap_or(now)
        }
        Wait::UntilCron(slot) => slot.next_after(&now.with_timezone(&zone)).unwrap_or(now),
        // The time limit; the action itself wakes the enrollment earlier (`engine::run`).
        Wait::UntilAction { timeout, .. } => wait_end(&Wait::For(*timeout), zone, now),
        // It depends on the lead's data: the interpreter works it out (`run.rs`).
        Wait::UntilDate(_) => now,
    }
}

/// A length as elapsed time, for "within 7 days" (a day is 24 hours here: a look back needs
/// no calendar).
pub fn length(length: &WaitLength) -> Duration {
    match *length {
        WaitLength::Minutes(n) => Duration::minutes(i64::from(n)),
        WaitLength::Hours(n) => Duration::hours(i64::from(n)),
        WaitLength::Days(n) => Duration::days(i64::from(n)),
        WaitLength::Weeks(n) => Duration::weeks(i64::from(n)),
    }
}

/// The same local time of day, `days` calendar days later: "wait 2 days" after a Friday
/// 09:00 is Sunday 09:00, whatever DST did in between.
fn same_time_days_later(zone: Tz, now: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    resolve_local(zone, local(zone, now) + Duration::days(days))
}

/// The same local time of day after `count` weekdays (Monday to Friday). Counting starts with
/// the day after `now`, so from a Friday or a Saturday one business day is the Monday.
fn business_days_later(zone: Tz, now: DateTime<Utc>, count: u32) -> DateTime<Utc> {
    let start = local(zone, now);
    let mut date = start.date();
    let mut counted = 0;
    while counted < count {
        date = date.succ_opt().unwrap_or(date);
        if date.weekday().num_days_from_monday() < 5 {
            counted += 1;
        }
    }
    resolve_local(zone, date.and_time(start.time()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::{CronSlot, Weekdays};
    use chrono::Weekday;
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Berlin;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn time(text: &str) -> NaiveTime {
        NaiveTime::parse_from_str(text, "%H:%M").unwrap()
    }

    fn office_hours() -> SendWindow {
        SendWindow {
            days: Weekdays::empty().with_range(Weekday::Mon, Weekday::Fri),
            start: time("09:00"),
            end: time("17:30"),
            zone: WindowZone::Lead,
        }
    }

    #[test]
    fn window_pushes_a_saturday_send_to_monday_morning() {
        // Sat 2026-11-28 10:00 in Berlin (CET, UTC+1).
        let saturday = utc("2026-11-28T09:00:00Z");
        assert_eq!(
            next_window_opening(&office_hours(), Berlin, saturday),
            utc("2026-11-30T08:00:00Z")
        );
        assert!(!in_window(&office_hours(), Berlin, saturday));
    }

    #[test]
    fn window_start_is_inclusive_and_end_exclusive() {
        let opens = utc("2026-11-30T08:00:00Z"); // Mon 09:00 CET
        assert!(in_window(&office_hours(), Berlin, opens));
        let closes = utc("2026-11-30T16:30:00Z"); // Mon 17:30 CET
        assert_eq!(
            next_window_opening(&office_hours(), Berlin, closes),
            utc("2026-12-01T08:00:00Z")
        );
    }

    #[test]
    fn window_is_read_on_the_local_clock_across_dst() {
        // Sun 2026-03-29 is spring-forward day in Berlin; Monday opens at 09:00 CEST = 07:00 UTC.
        let sunday = utc("2026-03-29T10:00:00Z");
        assert_eq!(
            next_window_opening(&office_hours(), Berlin, sunday),
            utc("2026-03-30T07:00:00Z")
        );
    }

    #[test]
    fn days_keep_the_local_time_across_spring_forward_and_fall_back() {
        // Sat 2026-03-28 09:00 CET → Sun 09:00 CEST: 23 hours later in UTC.
        let wait = Wait::For(WaitLength::Days(1));
        assert_eq!(
            wait_end(&wait, Berlin, utc("2026-03-28T08:00:00Z")),
            utc("2026-03-29T07:00:00Z")
        );
        // New York falls back on Sun 2026-11-01: Sat 09:00 EDT → Sun 09:00 EST, 25 hours.
        assert_eq!(
            wait_end(&wait, New_York, utc("2026-10-31T13:00:00Z")),
            utc("2026-11-01T14:00:00Z")
        );
    }

    #[test]
    fn hours_are_elapsed_time_even_across_dst() {
        let wait = Wait::For(WaitLength::Hours(24));
        assert_eq!(
            wait_end(&wait, Berlin, utc("2026-03-28T08:00:00Z")),
            utc("2026-03-29T08:00:00Z")
        );
    }

    #[test]
    fn a_local_time_in_the_spring_gap_moves_forward() {
        // 02:30 does not exist in Berlin on 2026-03-29 (02:00 → 03:00): it becomes 03:30 CEST.
        let gap = NaiveDate::from_ymd_opt(2026, 3, 29)
            .unwrap()
            .and_time(time("02:30"));
        assert_eq!(resolve_local(Berlin, gap), utc("2026-03-29T01:30:00Z"));
    }

    #[test]
    fn an_ambiguous_local_time_takes_the_earlier_instant() {
        // 02:30 happens twice in Berlin on 2026-10-25: first in CEST (00:30 UTC).
        let twice = NaiveDate::from_ymd_opt(2026, 10, 25)
            .unwrap()
            .and_time(time("02:30"));
        assert_eq!(resolve_local(Berlin, twice), utc("2026-10-25T00:30:00Z"));
    }

    #[test]
    fn business_days_skip_the_weekend() {
        let wait = Wait::BusinessDays(3);
        // Thu 2026-11-26 10:00 CET → Tue 2026-12-01 10:00 CET.
        assert_eq!(
            wait_end(&wait, Berlin, utc("2026-11-26T09:00:00Z")),
            utc("2026-12-01T09:00:00Z")
        );
        // From a Saturday, one business day is the Monday.
        assert_eq!(
            wait_end(&Wait::BusinessDays(1), Berlin, utc("2026-11-28T09:00:00Z")),
            utc("2026-11-30T09:00:00Z")
        );
    }

    #[test]
    fn wait_until_weekday_is_strictly_after_now() {
        let tuesday_ten = Wait::UntilWeekday {
            days: Weekdays::empty().with(Weekday::Tue),
            time: time("10:00"),
        };
        // Tue 2026-12-01 10:00 CET exactly → the next Tuesday.
        assert_eq!(
            wait_end(&tuesday_ten, Berlin, utc("2026-12-01T09:00:00Z")),
            utc("2026-12-08T09:00:00Z")
        );
        // Tue 08:00 → the same day at 10:00.
        assert_eq!(
            wait_end(&tuesday_ten, Berlin, utc("2026-12-01T07:00:00Z")),
            utc("2026-12-01T09:00:00Z")
        );
    }

    #[test]
    fn cron_waits_read_the_lead_clock() {
        let wait = Wait::UntilCron(CronSlot::parse("0 10 * * TUE").unwrap());
        // Sun 2026-11-22 noon in New York → Tue 2026-11-24 10:00 EST = 15:00 UTC.
        assert_eq!(
            wait_end(&wait, New_York, utc("2026-11-22T17:00:00Z")),
            utc("2026-11-24T15:00:00Z")
        );
    }
}
