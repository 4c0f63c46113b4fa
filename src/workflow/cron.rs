//! Cron slots as marketers write them (5-field crontab), translated for the `cron` crate.
//!
//! The `cron` crate wants seconds first (6–7 fields) and numbers weekdays 1 = Sunday, while a
//! crontab line has 5 fields with 0 or 7 = Sunday and 1 = Monday. We accept only the crontab
//! form (and `@daily`-style shortcuts), translate every numeric weekday to its name so the two
//! numberings can never be confused, and keep the text as written for messages.
//!
//! In the DST fall-back hour a local slot such as 01:30 happens twice; callers must make the
//! work a slot triggers idempotent (the scheduler keys sends by enrollment and step).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};

/// A validated cron slot.
#[derive(Clone)]
pub struct CronSlot {
    /// As the marketer wrote it: `0 9 * * MON`.
    source: String,
    schedule: ::cron::Schedule,
}

impl fmt::Debug for CronSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSlot({:?})", self.source)
    }
}

impl PartialEq for CronSlot {
    fn eq(&self, other: &CronSlot) -> bool {
        self.source == other.source
    }
}

impl fmt::Display for CronSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const SHORTCUTS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

impl CronSlot {
    /// Parses a 5-field crontab expression (`minute hour day-of-month month weekday`) or a
    /// shortcut such as `@daily`. The error is a sentence for the marketer.
    pub fn parse(expression: &str) -> Result<CronSlot, String> {
        let source = expression.trim().to_string();
        let translated = translate(&source)?;
        let schedule = ::cron::Schedule::from_str(&translated)
            .map_err(|error| format!("`{source}` is not a valid cron expression: {error}"))?;
        // A valid expression that never fires (`0 0 31 2 *`) is as useless as an invalid one.
        if schedule.after(&Utc::now()).next().is_none() {
            return Err(format!("`{source}` never happens (no such date)"));
        }
        Ok(CronSlot { source, schedule })
    }

    /// The first slot strictly after `after`, read on the clock of `zone`.
    pub fn next_after<Z: TimeZone>(&self, after: &DateTime<Z>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(after)
            .next()
            .map(|slot| slot.with_timezone(&Utc))
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Crontab text → the `cron` crate's 6-field form.
fn translate(source: &str) -> Result<String, String> {
    if source.starts_with('@') {
        return if SHORTCUTS.contains(&source.to_ascii_lowercase().as_str()) {
            Ok(source.to_ascii_lowercase())
        } else {
            Err(format!(
                "`{source}` is not a cron shortcut; use one of {}",
                SHORTCUTS.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = source.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "a cron expression has 5 fields (minute hour day-of-month month weekday), \
             but `{source}` has {}",
            fields.len()
        ));
    }
    let weekday = translate_weekdays(fields[4])?;
    Ok(format!(
        "0 {} {} {} {} {}",
        fields[0], fields[1], fields[2], fields[3], weekday
    ))
}

/// Rewrites the weekday field with names: `1-5` → `MON,TUE,WED,THU,FRI`, `0,6` → `SUN,SAT`,
/// `7` → `SUN`. Named days and `*` pass through; `*/2` and `1-5/2` are expanded.
fn translate_weekdays(field: &str) -> Result<String, String> {
    let mut names: Vec<String> = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("`{item}`: the step after `/` must be a number above 0")
                })?;
                (range, Some(step))
            }
            None => (item, None),
        };
        let numeric = |text: &str| text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty();
        let bounds = match range.split_once('-') {
            _ if range == "*" => Some((0, 6)),
            Some((a, b)) if numeric(a) && numeric(b) => Some((day_number(a)?, day_number(b)?)),
            None if numeric(range) => {
                let day = day_number(range)?;
                Some((day, if step.is_some() { 6 } else { day }))
            }
            _ => None,
        };
        match (bounds, step) {
            (None, _) => names.push(item.to_string()), // names (MON-FRI): the crate reads them
            (Some((0, 6)), None) if range == "*" => names.push("*".to_string()),
            (Some((first, last)), step) => {
                // `5-7` means Fri, Sat, Sun: a crontab range may end on 7 = Sunday.
                let last = if last < first { last + 7 } else { last };
                let step = step.unwrap_or(1) as usize;
                for day in (first..=last).step_by(step) {
                    let name = WEEKDAY_NAMES[(day % 7) as usize].to_string();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
    }
    Ok(names.join(","))
}

fn day_number(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(day @ 0..=7) => Ok(if day == 7 { 0 } else { day }),
        _ => Err(format!(
            "`{text}` is not a weekday: use 0-7 (0 and 7 are Sunday) or a name such as MON"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};
    use chrono_tz::Europe::Berlin;

    fn next(expr: &str, after: &str) -> DateTime<chrono_tz::Tz> {
        let slot = CronSlot::parse(expr).unwrap();
        let after = Berlin.from_local_datetime(&after.parse().unwrap()).unwrap();
        slot.next_after(&after).unwrap().with_timezone(&Berlin)
    }

    #[test]
    fn five_field_weekday_numbers_follow_crontab() {
        // 2026-11-22 is a Sunday; crontab 1 = Monday.
        let slot = next("0 9 * * 1", "2026-11-22T12:00:00");
        assert_eq!(slot.weekday(), Weekday::Mon);
        assert_eq!(slot.hour(), 9);
        assert_eq!(
            next("30 8 * * 0", "2026-11-23T00:00:00").weekday(),
            Weekday::Sun
        );
        assert_eq!(
            next("30 8 * * 7", "2026-11-23T00:00:00").weekday(),
            Weekday::Sun
        );
    }

    #[test]
    fn ranges_wrap_through_sunday() {
        assert_eq!(translate_weekdays("5-7").unwrap(), "FRI,SAT,SUN");
        assert_eq!(translate_weekdays("1-5").unwrap(), "MON,TUE,WED,THU,FRI");
        assert_eq!(translate_weekdays("*/2").unwrap(), "SUN,TUE,THU,SAT");
        assert_eq!(translate_weekdays("MON-FRI").unwrap(), "MON-FRI");
        assert_eq!(translate_weekdays("*").unwrap(), "*");
    }

    #[test]
    fn names_and_shortcuts_parse() {
        assert_eq!(
            next("0 9 * * MON", "2026-11-22T12:00:00").weekday(),
            Weekday::Mon
        );
        assert!(CronSlot::parse("@daily").is_ok());
    }

    #[test]
    fn errors_explain_the_crontab_form() {
        let six = CronSlot::parse("0 0 9 * * MON").unwrap_err();
        assert!(six.contains("has 5 fields"), "{six}");
        assert!(
            CronSlot::parse("0 9 * * 8")
                .unwrap_err()
                .contains("not a weekday")
        );
        assert!(CronSlot::parse("61 9 * * *").is_err());
        assert!(
            CronSlot::parse("0 0 31 2 *")
                .unwrap_err()
                .contains("never happens")
        );
        assert!(CronSlot::parse("@sometimes").is_err());
    }
}
