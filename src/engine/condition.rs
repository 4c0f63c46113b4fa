//! Evaluating conditions over a lead and its enrollment's facts, recording what was looked at.
//!
//! Every field or fact a condition reads is recorded as an [`Observation`], so a timeline can say
//! why a branch was taken ("lead.score = 12"). Rules: numbers compare as numbers when both sides
//! are numbers; otherwise as text, case-insensitively for `is`/`is not`/`contains`; ordering a
//! non-number is false. A missing field is "not set": every comparison with it is false except
//! `is not`, which is true.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

use serde::Serialize;

use crate::lead::{Lead, Value};
use crate::workflow::{CompareOp, Condition, Engagement};

use super::calendar;
use super::state::Facts;

/// One value a condition read: `lead.score` = `12`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation {
    pub what: String,
    pub value: String,
}

/// Evaluates `condition` at `now`, appending what it read to `observed` (each thing once).
pub fn evaluate(
    condition: &Condition,
    lead: &Lead,
    facts: &Facts,
    now: DateTime<Utc>,
    observed: &mut Vec<Observation>,
) -> bool {
    match condition {
        Condition::And(a, b) => {
            evaluate(a, lead, facts, now, observed) && evaluate(b, lead, facts, now, observed)
        }
        Condition::Or(a, b) => {
            evaluate(a, lead, facts, now, observed) || evaluate(b, lead, facts, now, observed)
        }
        Condition::Not(inner) => !evaluate(inner, lead, facts, now, observed),
        Condition::Compare { field, op, value } => {
            let actual = read_field(lead, field, observed);
            compare(actual.as_ref(), *op, value)
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
            let result = engaged(fact, facts, now);
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
        let result = evaluate(
            condition,
            &lead(),
            &Facts::default(),
            Utc::now(),
            &mut observed,
        );
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
