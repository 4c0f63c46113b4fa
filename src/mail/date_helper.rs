//! `{{date offer_ends "long"}}`: a date from the lead's data, printed on the lead's clock in the
//! lead's language, with the month and weekday names and the order of that language (CLDR data
//! through ICU4X, so "24. Dezember 2026", "December 24, 2026", "24 décembre 2026").
//!
//! The clock is the lead's `timezone`, else the workflow's; the language is the lead's
//! `language` attribute (a BCP 47 tag: `de`, `fr-CA`, `pt_BR`), else English. The calendar is
//! always the Gregorian one, whatever the language's usual calendar, since that is what the
//! date in the data means. A value that is not a date is an error: the email fails rather
//! than print "Your offer ends 2026-13-45".

use chrono::Datelike;
use chrono_tz::Tz;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderErrorReason, ScopedJson,
};
use icu_calendar::{Date, Gregorian};
use icu_datetime::FixedCalendarDateTimeFormatter;
use icu_datetime::fieldsets::{YMD, YMDE};
use icu_locale_core::Locale;
use serde_json::Value as Json;

use crate::dates::{DATE_FORMS, DateValue};

/// The helper's name in templates.
pub const NAME: &str = "date";
/// The styles, shortest first: `12/24/26`, `Dec 24, 2026`, `December 24, 2026`, `Thursday,
/// December 24, 2026` (in English).
pub const STYLES: [&str; 4] = ["short", "medium", "long", "full"];
/// The context key that holds the workflow's zone, for leads without one.
pub const WORKFLOW_ZONE_KEY: &str = "workflow_timezone";

pub struct DateHelper;

impl HelperDef for DateHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        context: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let value = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(NAME, 0))?;
        if value.is_value_missing() {
            return Err(handlebars::RenderError::strict_error(value.relative_path()));
        }
        let style = match h.param(1) {
            None => "long",
            Some(style) => style
                .value()
                .as_str()
                .ok_or_else(|| failure(format!("the date style must be one of {STYLES:?}")))?,
        };
        let text = match value.value() {
            Json::String(text) => text.as_str(),
            other => return Err(failure(format!("`{other}` is not a date"))),
        };
        let date = DateValue::parse(text)
            .ok_or_else(|| failure(format!("`{text}` is not a date; dates are {DATE_FORMS}")))?;
        let root = context.data();
        let zone = [root.get("timezone"), root.get(WORKFLOW_ZONE_KEY)]
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .find_map(|name| name.parse::<Tz>().ok())
            .unwrap_or(Tz::UTC);
        let language = root.get("language").and_then(Json::as_str);
        let printed = print(date, zone, language, style).map_err(failure)?;
        Ok(ScopedJson::Derived(Json::String(printed)))
    }
}

fn failure(message: String) -> handlebars::RenderError {
    RenderErrorReason::Other(format!("{{{{{NAME}}}}}: {message}")).into()
}

/// `date` as the day it falls on, on `zone`'s clock, in `style` for a reader of `language`.
pub fn print(
    date: DateValue,
    zone: Tz,
    language: Option<&str>,
    style: &str,
) -> Result<String, String> {
    let day = match date {
        DateValue::Day(day) => day,
        DateValue::Local(local) => local.date(),
        DateValue::Instant(instant) => instant.with_timezone(&zone).date_naive(),
    };
    let locale = language
        .and_then(|tag| Locale::try_from_str(&tag.trim().replace('_', "-")).ok())
        .unwrap_or(icu_locale_core::locale!("en"));
    let month = u8::try_from(day.month()).unwrap_or(1);
    let day_of_month = u8::try_from(day.day()).unwrap_or(1);
    let gregorian = Date::try_new_gregorian(day.year(), month, day_of_month)
        .map_err(|error| format!("{day} cannot be printed: {error}"))?;
    let unavailable = |error| format!("no date format for `{locale}`: {error}");
    let printed = match style {
        "short" | "medium" | "long" => {
            let fields = match style {
                "short" => YMD::short(),
                "medium" => YMD::medium(),
                _ => YMD::long(),
            };
            FixedCalendarDateTimeFormatter::<Gregorian, _>::try_new(locale.clone().into(), fields)
                .map_err(unavailable)?
                .format(&gregorian)
                .to_string()
        }
        "full" => FixedCalendarDateTimeFormatter::<Gregorian, _>::try_new(
            locale.clone().into(),
            YMDE::long(),
        )
        .map_err(unavailable)?
        .format(&gregorian)
        .to_string(),
        other => {
            // A swapped pair of letters (`lnog`) counts as one slip.
            let hint = crate::diagnostic::did_you_mean(other, STYLES)
                .or_else(|| {
                    STYLES
                        .into_iter()
                        .find(|style| strsim::osa_distance(other, style) == 1)
                })
                .map(|close| format!("; did you mean `{close}`?"))
                .unwrap_or_default();
            return Err(format!(
                "unknown date style `{other}`: the styles are {}{hint}",
                STYLES.join(", ")
            ));
        }
    };
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::Los_Angeles, Europe::Berlin};

    fn at(text: &str) -> DateValue {
        DateValue::parse(text).unwrap()
    }

    #[test]
    fn long_dates_in_the_readers_language() {
        let day = at("2026-12-24");
        assert_eq!(
            print(day, Berlin, None, "long").unwrap(),
            "December 24, 2026"
        );
        assert_eq!(
            print(day, Berlin, Some("de"), "long").unwrap(),
            "24. Dezember 2026"
        );
        assert_eq!(
            print(day, Berlin, Some("fr_FR"), "long").unwrap(),
            "24 décembre 2026"
        );
        assert_eq!(
            print(day, Berlin, Some("de-DE"), "full").unwrap(),
            "Donnerstag, 24. Dezember 2026"
        );
        assert_eq!(
            print(day, Berlin, Some("en-GB"), "short").unwrap(),
            "24/12/2026"
        );
    }

    #[test]
    fn an_instant_falls_on_the_day_of_the_readers_clock() {
        // 02:00 UTC on the 25th is still the 24th in California.
        let instant = at("2026-12-25T02:00:00Z");
        assert_eq!(
            print(instant, Los_Angeles, None, "long").unwrap(),
            "December 24, 2026"
        );
        assert_eq!(
            print(instant, Berlin, None, "long").unwrap(),
            "December 25, 2026"
        );
    }

    #[test]
    fn a_wrong_style_is_named_with_a_suggestion() {
        let error = print(at("2026-12-24"), Berlin, None, "lnog").unwrap_err();
        assert!(error.contains("did you mean `long`?"), "{error}");
    }
}
