//! Evaluating conditions over a lead and its enrollment's facts, recording what was looked at.
//!
//! Every field or fact a condition reads is recorded as an [`Observation`], so a timeline can say
//! why a branch was taken ("lead.score = 12"). Rules: numbers compare as numbers when both sides
//! are numbers; otherwise as text, case-insensitively for `is`/`is not`/`contains`; ordering a
//! non-number is false. A missing field is "not set": every comparison with it is false except
//! `is not`, which is true. Dates (see `crate::dates`) are read on the [`Clock`] the condition
//! is asked on; a field that holds no date makes a date comparison false.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::dates::{self, DateValue};
use crate::lead::{Lead, Value};
use crate::scoring::Scoring;
use crate::workflow::{CompareOp, Condition, DateBase, DateExpr, Engagement};

use super::calendar;
use super::state::Facts;

/// One value a condition read: `lead.score` = `12`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    pub what: String,
    pub value: String,
}

/// When a condition is asked, and on whose clock: what `now` is, where a day starts, and how
/// scores fade (`lead.score` and `lead.temperature` are read at `now`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock<'a> {
    pub now: DateTime<Utc>,
    /// The lead's zone, else the workflow's (`calendar::zone_for`).
    pub zone: Tz,
    pub scoring: &'a Scoring,
}

/// Evaluates `condition`, appending what it read to `observed` (each thing once).
pub fn evaluate(
    condition: &Condition,
    lead: &Lead,
    facts: &Facts,
    clock: Clock<'_>,
    observed: &mut Vec<Observation>,
) -> bool {
    match condition {
        Condition::And(a, b) => {
            evaluate(a, lead, facts, clock, observed) && evaluate(b, lead, facts, clock, observed)
        }
        Condition::Or(a, b) => {
            evaluate(a, lead, facts, clock, observed) || evaluate(b, lead, facts, clock, observed)
        }
        Condition::Not(inner) => !evaluate(inner, lead, facts, clock, observed),
        Condition::Compare { field, op, value } if field == "score" => {
            let score = clock.scoring.score(lead, clock.now);
            observe(observed, "lead.score", score.to_string());
            compare(Some(&Value::Number(score as f64)), *op, value)
        }
        Condition::Compare { field, op, value } => {
            let actual = read_field(lead, field, observed);
            compare(actual.as_ref(), *op, value)
        }
        Condition::Temperature {
            temperature,
            negated,
        } => {
            let actual = clock.scoring.temperature(lead, clock.now);
            observe(observed, "lead.temperature", actual.to_string());
            (actual == *temperature) != *negated
        }
        Condition::CompareDate { field, op, value } => {
            let actual = read_field(lead, field, observed).and_then(|value| date_in(&value));
            let expected = date_of(value, lead, clock, observed);
            let Some((actual, expected)) = actual.map(|a| a.at(clock.zone)).zip(expected) else {
                return false;
            };
            let ordering = actual.cmp(&expected);
            match op {
                CompareOp::Lt => ordering == Ordering::Less,
                CompareOp::Le => ordering != Ordering::Greater,
                CompareOp::Gt => ordering == Ordering::Greater,
                CompareOp::Ge => ordering != Ordering::Less,
                // The compiler only lets the four orderings through.
                CompareOp::Eq | CompareOp::Ne | CompareOp::Contains => false,
            }
        }
        Condition::HasTag(tag) => {
            observe(observed, "lead.tags", tags_text(lead));
            lead.tags.iter().any(|t| t.eq_ignore_ascii_case(tag))
        }
        Condition::In { field, values } => {
            let actual = read_field(lead, field, observed);
            values
                .iter()
                .any(|value| compare(actual.as_ref(), CompareOp::Eq, value))
        }
        Condition::IsSet { field, negated } => {
            let set = read_field(lead, field, observed).is_some_and(|v| !is_blank(&v));
            set != *negated
        }
        Condition::Engaged(fact) => {
            let result = engaged(fact, facts, clock.now);
            observe(
                observed,
                &fact.to_string(),
                if result { "yes" } else { "no" }.to_string(),
            );
            result
        }
    }
}

/// Whether the enrollment has seen `fact` by `now` (clicks and opens are people's, never
/// machines': the daemon does not report those to the engine).
pub fn engaged(fact: &Engagement, facts: &Facts, now: DateTime<Utc>) -> bool {
    let has = |list: &[String], name: &str| list.iter().any(|item| item == name);
    match fact {
        Engagement::Replied => facts.replied,
        Engagement::AutoReplied => facts.auto_replied,
        Engagement::Clicked => facts.clicked,
        Engagement::ClickedStep(step) => has(&facts.clicked_steps, step),
        Engagement::ClickedLink(name) => has(&facts.clicked_links, name),
        Engagement::Opened(step) => has(&facts.opened, step),
        Engagement::Did { event, within } => facts.did.iter().any(|(name, at)| {
            name == event
                && within.is_none_or(|length| *at >= now - calendar::length(&length) && *at <= now)
        }),
        Engagement::Sent(template) => has(&facts.sent, template),
    }
}

/// The moment `date` names for `lead` on `clock`, recording what it read (a field, or the
/// expression's value when it is more than a field); `None` when the lead has no such date or
/// the result is past the range of dates.
pub fn date_of(
    date: &DateExpr,
    lead: &Lead,
    clock: Clock<'_>,
    observed: &mut Vec<Observation>,
) -> Option<DateTime<Utc>> {
    let base = match &date.base {
        DateBase::Now => clock.now,
        DateBase::Fixed(value) => value.at(clock.zone),
        DateBase::Field(field) => read_field(lead, field, observed)
            .and_then(|value| date_in(&value))?
            .at(clock.zone),
    };
    let moved = date.shifts.iter().try_fold(base, |at, shift| {
        dates::shift(at, clock.zone, shift.length, shift.forward)
    });
    let plain_field = matches!(date.base, DateBase::Field(_)) && date.shifts.is_empty();
    if let Some(at) = moved
        && !plain_field
        && !matches!(date.base, DateBase::Fixed(_))
    {
        let local = at.with_timezone(&clock.zone).format("%a %Y-%m-%d %H:%M %Z");
        observe(observed, &date.text, local.to_string());
    }
    moved
}

/// A date a field's value holds, if it holds one.
fn date_in(value: &Value) -> Option<DateValue> {
    match value {
        Value::Text(text) => DateValue::parse(text),
        Value::Number(_) | Value::Bool(_) => None,
    }
}

fn read_field(lead: &Lead, field: &str, observed: &mut Vec<Observation>) -> Option<Value> {
    let value = if field == "tags" {
        Some(Value::Text(tags_text(lead)))
    } else {
        lead.field(field)
    };
    let shown = match &value {
        Some(Value::Text(text)) => format!("\"{text}\""),
        Some(other) => other.to_string(),
        None => "(not set)".to_string(),
    };
    observe(observed, &format!("lead.{field}"), shown);
    value
}

fn observe(observed: &mut Vec<Observation>, what: &str, value: String) {
    if !observed.iter().any(|o| o.what == what) {
        observed.push(Observation {
            what: what.to_string(),
            value,
        });
    }
}

fn tags_text(lead: &Lead) -> String {
    let tags: Vec<&str> = lead.tags.iter().map(String::as_str).collect();
    format!("[{}]", tags.join(", "))
}

fn is_blank(value: &Value) -> bool {
    matches!(value, Value::Text(text) if text.trim().is_empty())
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => Some(*n),
        Value::Text(text) => text.trim().parse().ok(),
        Value::Bool(_) => None,
    }
}

fn compare(actual: Option<&Value>, op: CompareOp, expected: &Value) -> bool {
    let Some(actual) = actual.filter(|v| !is_blank(v)) else {
        return op == CompareOp::Ne;
    };
    let ordering = match (as_number(actual), as_number(expected)) {
        (Some(a), Some(b)) => a.partial_cmp(&b),
        _ => None,
    };
    let text_equal = || {
        actual
            .to_string()
            .eq_ignore_ascii_case(&expected.to_string())
    };
    match op {
        CompareOp::Eq => ordering.map_or_else(text_equal, |o| o == Ordering::Equal),
        CompareOp::Ne => !ordering.map_or_else(text_equal, |o| o == Ordering::Equal),
        CompareOp::Lt => ordering == Some(Ordering::Less),
        CompareOp::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
        CompareOp::Gt => ordering == Some(Ordering::Greater),
        CompareOp::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        CompareOp::Contains => actual
            .to_string()
            .to_lowercase()
            .contains(&expected.to_string().to_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn lead() -> Lead {
        let mut lead = Lead::new("ana@example.test".into(), Utc::now());
        lead.score = 12;
        lead.company = Some("Globex".into());
        lead.tags.insert("Trial".into());
        lead.attributes
            .insert("country".into(), Value::Text("DE".into()));
        lead
    }

    fn check(condition: &Condition) -> (bool, Vec<Observation>) {
        let mut observed = Vec::new();
        let scoring = Scoring::default();
        let clock = Clock {
            now: Utc::now(),
            zone: Tz::UTC,
            scoring: &scoring,
        };
        let result = evaluate(condition, &lead(), &Facts::default(), clock, &mut observed);
        (result, observed)
    }

    fn compare_field(field: &str, op: CompareOp, value: Value) -> Condition {
        Condition::Compare {
            field: field.into(),
            op,
            value,
        }
    }

    #[test]
    fn numbers_compare_as_numbers_and_record_what_was_seen() {
        let (result, observed) = check(&compare_field("score", CompareOp::Ge, Value::Number(20.0)));
        assert!(!result);
        assert_eq!(
            observed,
            vec![Observation {
                what: "lead.score".into(),
                value: "12".into()
            }]
        );
    }

    #[test]
    fn text_equality_ignores_case() {
        let is_globex = compare_field("company", CompareOp::Eq, Value::Text("globex".into()));
        assert!(check(&is_globex).0);
        let contains = compare_field("company", CompareOp::Contains, Value::Text("LOB".into()));
        assert!(check(&contains).0);
    }

    #[test]
    fn a_missing_field_is_only_ever_not_equal() {
        let missing = |op| compare_field("phone", op, Value::Text("x".into()));
        assert!(!check(&missing(CompareOp::Eq)).0);
        assert!(check(&missing(CompareOp::Ne)).0);
        assert!(!check(&missing(CompareOp::Lt)).0);
        let (set, observed) = check(&Condition::IsSet {
            field: "phone".into(),
            negated: false,
        });
        assert!(!set);
        assert_eq!(observed[0].value, "(not set)");
    }

    #[test]
    fn dates_order_on_the_leads_clock_and_a_missing_date_never_matches() {
        use crate::workflow::DateShift;
        let scoring = Scoring::default();
        let now = "2026-12-01T12:00:00Z".parse().unwrap();
        let clock = Clock {
            now,
            zone: chrono_tz::Europe::Berlin,
            scoring: &scoring,
        };
        let within = |field: &str| Condition::CompareDate {
            field: field.into(),
            op: CompareOp::Lt,
            value: DateExpr {
                base: DateBase::Now,
                shifts: vec![DateShift {
                    forward: true,
                    length: crate::workflow::WaitLength::Days(3),
                }],
                text: "now + 3 days".into(),
            },
        };
        let mut lead = lead();
        for (stored, expected) in [
            ("2026-12-04", true),            // midnight in Berlin: 23:00 UTC on the 3rd
            ("2026-12-04T12:00:00Z", false), // exactly three days: not before
            ("2026-12-05", false),
            ("soon", false),
        ] {
            lead.attributes
                .insert("trial_ends".into(), Value::Text(stored.into()));
            let mut observed = Vec::new();
            let result = evaluate(
                &within("trial_ends"),
                &lead,
                &Facts::default(),
                clock,
                &mut observed,
            );
            assert_eq!(result, expected, "{stored}");
            assert_eq!(observed[1].value, "Fri 2026-12-04 13:00 CET");
        }
        let mut observed = Vec::new();
        let missing = within("renewal_on");
        assert!(!evaluate(
            &missing,
            &lead,
            &Facts::default(),
            clock,
            &mut observed
        ));
        let negated = Condition::Not(Box::new(missing));
        assert!(evaluate(
            &negated,
            &lead,
            &Facts::default(),
            clock,
            &mut observed
        ));
    }

    #[test]
    fn tags_in_and_engagement() {
        assert!(check(&Condition::HasTag("trial".into())).0);
        let dach = Condition::In {
            field: "country".into(),
            values: vec![Value::Text("AT".into()), Value::Text("de".into())],
        };
        assert!(check(&dach).0);
        let not_replied = Condition::Not(Box::new(Condition::Engaged(Engagement::Replied)));
        let (result, observed) = check(&not_replied);
        assert!(result);
        assert_eq!(observed[0].what, "replied");
    }
}
