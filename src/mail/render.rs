//! What a template sees and what rendering produces.
//!
//! The context holds only the fields a lead really has: a lead without a first name has no
//! `first_name` key at all, so strict rendering turns `{{first_name}}` into an error instead of
//! "Hi ,". The render error names the template, the field and the lead, in words a marketer can
//! act on.

use serde_json::{Map, Value as Json};

use crate::lead::{BUILT_IN_FIELDS, Lead, Value};
use crate::workflow::Workflow;

/// Names the context always has besides the lead's own fields.
pub const CONTEXT_EXTRAS: [&str; 5] = [
    "unsubscribe_url",
    "sender_name",
    "workflow",
    "step",
    super::date_helper::WORKFLOW_ZONE_KEY,
];

/// A rendered template: both parts of the multipart/alternative email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedBody {
    pub html: String,
    pub text: String,
}

/// Why a template or subject could not be rendered for a lead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("no template named `{0}`")]
    UnknownTemplate(String),
    /// `what` is "template `welcome`" or "the subject `Hi {{first_name}}`".
    #[error("{what} needs `{field}`, which lead {lead} does not have")]
    MissingField {
        what: String,
        field: String,
        lead: String,
    },
    /// Anything else handlebars refused (a helper given a missing value, a bad subject).
    #[error("{what} could not be rendered for lead {lead}: {message}")]
    Failed {
        what: String,
        lead: String,
        message: String,
    },
}

/// The data a template is rendered with, for one lead in one step of a workflow.
///
/// Lead fields come at the top level by name, only when the lead has them; `name` is the full
/// name when known; `tags` is an array; attributes come by name, except that a built-in field or
/// a context extra always wins over an attribute of the same name.
pub fn context(lead: &Lead, workflow: &Workflow, step: &str, unsubscribe_url: &str) -> Json {
    let mut map = Map::new();
    for (key, value) in &lead.attributes {
        if BUILT_IN_FIELDS.contains(&key.as_str()) || CONTEXT_EXTRAS.contains(&key.as_str()) {
            continue;
        }
        map.insert(key.clone(), attribute_json(value));
    }
    map.insert("email".into(), Json::String(lead.email.clone()));
    let optional = [
        ("first_name", &lead.first_name),
        ("last_name", &lead.last_name),
        ("company", &lead.company),
        ("source", &lead.source),
        ("timezone", &lead.timezone),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            map.insert(key.into(), Json::String(value.clone()));
        }
    }
    if let Some(name) = lead.full_name() {
        map.insert("name".into(), Json::String(name));
    }
    map.insert(
        "tags".into(),
        Json::Array(lead.tags.iter().cloned().map(Json::String).collect()),
    );
    map.insert("score".into(), Json::from(lead.score));
    map.insert("stage".into(), Json::String(lead.stage.as_str().into()));
    map.insert(
        "unsubscribe_url".into(),
        Json::String(unsubscribe_url.into()),
    );
    let sender = workflow
        .from
        .name
        .clone()
        .unwrap_or_else(|| workflow.from.address.clone());
    map.insert("sender_name".into(), Json::String(sender));
    map.insert("workflow".into(), Json::String(workflow.name.clone()));
    // The `date` helper's clock for a lead without a zone of its own.
    map.insert(
        super::date_helper::WORKFLOW_ZONE_KEY.into(),
        Json::String(workflow.timezone.name().into()),
    );
    map.insert("step".into(), Json::String(step.into()));
    Json::Object(map)
}

/// Whole numbers render as `14`, not `14.0`: handlebars prints a JSON float with its fraction.
fn attribute_json(value: &Value) -> Json {
    match value {
        Value::Bool(b) => Json::Bool(*b),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => Json::from(*n as i64),
        Value::Number(n) => serde_json::Number::from_f64(*n).map_or(Json::Null, Json::Number),
        Value::Text(text) => Json::String(text.clone()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;
    use std::path::PathBuf;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::workflow::{Handlers, Mailbox};

    pub(crate) fn workflow() -> Workflow {
        Workflow {
            name: "trial-welcome".into(),
            path: PathBuf::from("workflows/trial.flow"),
            version: "v1".into(),
            enroll: None,
            reentry: false,
            goal: None,
            bulk: false,
            every: None,
            from: Mailbox {
                name: Some("Ana Ortiz".into()),
                address: "ana@acme.example".into(),
            },
            reply_to: None,
            owner: None,
            timezone: chrono_tz::UTC,
            window: None,
            handlers: Handlers::default(),
            tracking: Default::default(),
            steps: Vec::new(),
            scoring: Default::default(),
            defines_scoring: false,
        }
    }

    pub(crate) fn lead() -> Lead {
        let now = Utc.with_ymd_and_hms(2025, 3, 3, 9, 0, 0).unwrap();
        let mut lead = Lead::new("bo@globex.example".into(), now);
        lead.first_name = Some("Bo".into());
        lead.tags = BTreeSet::from(["trial".to_string()]);
        lead.score = 20;
        lead
    }

    #[test]
    fn context_holds_only_present_fields() {
        let mut lead = lead();
        lead.attributes
            .insert("trial_days".into(), Value::Number(14.0));
        lead.attributes
            .insert("company".into(), Value::Text("shadowed".into()));
        lead.attributes
            .insert("step".into(), Value::Text("shadowed".into()));
        let ctx = context(&lead, &workflow(), "welcome", "https://u.example/x");
        assert_eq!(ctx["first_name"], "Bo");
        assert_eq!(ctx["name"], "Bo");
        assert!(ctx.get("last_name").is_none());
        assert!(
            ctx.get("company").is_none(),
            "built-in wins, even when unset"
        );
        assert_eq!(ctx["trial_days"], 14);
        assert_eq!(ctx["tags"], serde_json::json!(["trial"]));
        assert_eq!(ctx["score"], 20);
        assert_eq!(ctx["stage"], "lead");
        assert_eq!(ctx["sender_name"], "Ana Ortiz");
        assert_eq!(ctx["workflow"], "trial-welcome");
        assert_eq!(ctx["step"], "welcome");
        assert_eq!(ctx["unsubscribe_url"], "https://u.example/x");
    }
}
