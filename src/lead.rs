//! The lead: a person who showed interest, keyed by a normalized email address.
//!
//! This module owns the lead's data model and its invariants (normalized email, known field names,
//! lifecycle stage), and the rules for addresses: which are accepted (the sender's own, see
//! [`send_address`]) and when two are one person ([`email_key`]). It does no I/O: loading leads from files lives in `leads_file`, storing them
//! in `store`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a person stands with us. Only ever moves forward (`lead` → `contact` → `customer`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Showed interest, no two-way interaction yet.
    #[default]
    Lead,
    /// Interacted with us: replied, took a call.
    Contact,
    /// Bought.
    Customer,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Lead, Stage::Contact, Stage::Customer];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Lead => "lead",
            Stage::Contact => "contact",
            Stage::Customer => "customer",
        }
    }

    pub fn parse(text: &str) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A free-form attribute value: what a CSV column or a JSON field can hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl Value {
    /// Reads a CSV cell: numbers and booleans are recognised, everything else is text.
    pub fn from_cell(cell: &str) -> Value {
        let cell = cell.trim();
        if let Ok(number) = cell.parse::<f64>()
            && number.is_finite()
        {
            return Value::Number(number);
        }
        match cell.to_ascii_lowercase().as_str() {
            "true" | "yes" => Value::Bool(true),
            "false" | "no" => Value::Bool(false),
            _ => Value::Text(cell.to_string()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{}", *n as i64),
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(s) => f.write_str(s),
        }
    }
}

/// Why an address must never be mailed again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    pub reason: SuppressionReason,
    /// Free text: the bounce status line, "one-click unsubscribe", "by hand".
    pub detail: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuppressionReason {
    Unsubscribed,
    Bounced,
    /// The person reported our mail as spam (a feedback-loop complaint).
    Complained,
    Manual,
}

/// A lead (or, after promotion, a contact or customer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lead {
    /// Normalized address (see [`normalize_email`]), in the spelling first seen: what nurture
    /// sends to. The lead's key in the store is [`email_key`] of it.
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    /// Where the lead came from: "website-form", "webinar", …
    pub source: Option<String>,
    pub tags: BTreeSet<String>,
    /// An IANA zone name ("Europe/Berlin"); validated when the lead is loaded.
    pub timezone: Option<String>,
    pub score: i64,
    /// When `score` was last set by a scoring rule: a score fades from then on (see
    /// `crate::scoring`); `None`: it does not fade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_at: Option<DateTime<Utc>>,
    /// The last thing the person did (a reply, a click, an event): how recent it is decides
    /// whether the lead is inactive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acted_at: Option<DateTime<Utc>>,
    pub stage: Stage,
    /// Every other column or field, by its lower-cased name.
    pub attributes: BTreeMap<String, Value>,
    pub suppression: Option<Suppression>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The lead fields the language and templates know by name. Anything else is an attribute.
pub const BUILT_IN_FIELDS: [&str; 10] = [
    "email",
    "first_name",
    "last_name",
    "name",
    "company",
    "source",
    "tags",
    "timezone",
    "score",
    "stage",
];

/// Fields every lead has, so a template may use them without a fallback.
pub const ALWAYS_PRESENT_FIELDS: [&str; 4] = ["email", "score", "stage", "tags"];

impl Lead {
    /// A new lead with only its address; `email` must already be normalized.
    pub fn new(email: String, now: DateTime<Utc>) -> Lead {
        Lead {
            email,
            first_name: None,
            last_name: None,
            company: None,
            source: None,
            tags: BTreeSet::new(),
            timezone: None,
            score: 0,
            score_at: None,
            acted_at: None,
            stage: Stage::Lead,
            attributes: BTreeMap::new(),
            suppression: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// "Ana Ortiz", or whichever part is known.
    pub fn full_name(&self) -> Option<String> {
        match (&self.first_name, &self.last_name) {
            (Some(first), Some(last)) => Some(format!("{first} {last}")),
            (Some(one), None) | (None, Some(one)) => Some(one.clone()),
            (None, None) => None,
        }
    }

    /// The value of a field by the name the language uses (`first_name`, `score`, or an
    /// attribute). `None` when the lead lacks it. `tags` is not a single value: see [`Lead::tags`].
    pub fn field(&self, name: &str) -> Option<Value> {
        let text = |v: &Option<String>| v.clone().map(Value::Text);
        match name {
            "email" => Some(Value::Text(self.email.clone())),
            "first_name" => text(&self.first_name),
            "last_name" => text(&self.last_name),
            "name" => self.full_name().map(Value::Text),
            "company" => text(&self.company),
            "source" => text(&self.source),
            "timezone" => text(&self.timezone),
            "score" => Some(Value::Number(self.score as f64)),
            "stage" => Some(Value::Text(self.stage.as_str().to_string())),
            "tags" => Some(Value::Text(
                self.tags.iter().cloned().collect::<Vec<_>>().join(","),
            )),
            other => self.attributes.get(other).cloned(),
        }
    }

    /// Sets a field by the name the language uses. Built-in fields take text; `score` takes a
    /// whole number; anything else becomes an attribute.
    pub fn set_field(&mut self, name: &str, value: Value) -> Result<(), String> {
        let as_text = |value: &Value| value.to_string();
        match name {
            "email" => return Err("the email address is the lead's key and cannot be set".into()),
            "tags" => return Err("use `tag` and `untag` to change tags".into()),
            "temperature" => {
                return Err(
                    "the temperature comes from the score and the lead's last action; it \
                     cannot be set"
                        .into(),
                );
            }
            "name" => return Err("set `first_name` and `last_name` instead of `name`".into()),
            "first_name" => self.first_name = Some(as_text(&value)),
            "last_name" => self.last_name = Some(as_text(&value)),
            "company" => self.company = Some(as_text(&value)),
            "source" => self.source = Some(as_text(&value)),
            "timezone" => {
                let zone = as_text(&value);
                zone.parse::<chrono_tz::Tz>()
                    .map_err(|_| format!("`{zone}` is not a time zone name"))?;
                self.timezone = Some(zone);
            }
            // A score set by hand or by an import does not fade until a scoring rule moves it.
            "score" => match value {
                Value::Number(n) if n.fract() == 0.0 => {
                    self.score = n as i64;
                    self.score_at = None;
                }
                other => return Err(format!("score must be a whole number, not `{other}`")),
            },
            "stage" => {
                let stage = Stage::parse(&as_text(&value))
                    .ok_or_else(|| format!("`{value}` is not a stage (lead, contact, customer)"))?;
                self.stage = stage;
            }
            other => {
                self.attributes.insert(other.to_string(), value);
            }
        }
        Ok(())
    }

    /// Moves the lead forward to `stage`; never backward. Returns whether it changed.
    pub fn promote(&mut self, stage: Stage) -> bool {
        if stage > self.stage {
            self.stage = stage;
            true
        } else {
            false
        }
    }

    pub fn is_suppressed(&self) -> bool {
        self.suppression.is_some()
    }

    /// The lead's own time zone if it has a valid one.
    pub fn zone(&self) -> Option<chrono_tz::Tz> {
        self.timezone.as_deref().and_then(|z| z.parse().ok())
    }
}

/// Why an address was refused. Each names the address as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the email address is empty")]
    Empty,
    #[error("`{0}` has no `@`")]
    NoAt(String),
    #[error("`{0}` has nothing before the `@`")]
    NoLocalPart(String),
    #[error("`{0}` has no domain after the `@`, or the domain has no dot")]
    BadDomain(String),
    #[error("`{0}` contains a space, a control character or a character not allowed in an address")]
    BadCharacter(String),
    #[error("`{address}` cannot be sent to: the part before the `@` {reason}")]
    BadLocalPart {
        address: String,
        reason: &'static str,
    },
}

/// Normalizes an email address: trims it, lower-cases the domain, keeps the local part as given
/// (it is the spelling nurture sends to; leads are told apart by [`email_key`], which ignores
/// case). Refuses what cannot be an address, including anything with whitespace or control
/// characters, so an address can never smuggle a header, and anything [`send_address`] (the
/// sender's own check) would refuse, so nothing is accepted that cannot be sent.
pub fn normalize_email(raw: &str) -> Result<String, EmailError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(EmailError::Empty);
    }
    let bad = |c: char| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c);
    if trimmed.chars().any(bad) {
        return Err(EmailError::BadCharacter(trimmed.to_string()));
    }
    let (local, domain) = trimmed
        .rsplit_once('@')
        .ok_or_else(|| EmailError::NoAt(trimmed.to_string()))?;
    if local.is_empty() {
        return Err(EmailError::NoLocalPart(trimmed.to_string()));
    }
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@');
    if !domain_ok {
        return Err(EmailError::BadDomain(trimmed.to_string()));
    }
    let normalized = format!("{local}@{}", domain.to_ascii_lowercase());
    send_address(&normalized)?;
    Ok(normalized)
}

/// The address as the sender hands it to lettre: lettre's own parsing (RFC 5321/5322 local part
/// and domain), so that import, the API and the sender apply one set of rules.
pub fn send_address(address: &str) -> Result<lettre::Address, EmailError> {
    use lettre::address::AddressError;
    address.parse().map_err(|error| match error {
        AddressError::InvalidUser => {
            let local = address.rsplit_once('@').map_or(address, |(local, _)| local);
            EmailError::BadLocalPart {
                address: address.to_string(),
                reason: local_part_fault(local),
            }
        }
        AddressError::MissingParts => EmailError::NoAt(address.to_string()),
        _ => EmailError::BadDomain(address.to_string()),
    })
}

/// What is wrong with a local part lettre refused, in words (lettre only says "invalid").
fn local_part_fault(local: &str) -> &'static str {
    if local.is_empty() {
        "is empty"
    } else if local.starts_with('.') || local.ends_with('.') {
        "starts or ends with a dot"
    } else if local.contains("..") {
        "has two dots in a row"
    } else if local.contains('@') {
        "contains another `@`"
    } else if local.len() > 64 {
        "is longer than 64 bytes"
    } else {
        "has a character that is not allowed there"
    }
}

/// The key a lead is known by: its address folded to lower case in full. Mail systems treat
/// `Dana.Scully@…` and `dana.scully@…` as one mailbox in practice (RFC 5321 allows a
/// case-sensitive local part; no mainstream provider uses one), so nurture does too: the store
/// keys leads, enrollments and the journal by this, and replies, bounces, suppression and
/// unsubscribe tokens are matched through it. The lead keeps the spelling first seen in
/// [`Lead::email`], and that is what nurture sends to.
pub fn email_key(email: &str) -> std::borrow::Cow<'_, str> {
    // Most addresses are already lower-case ASCII: no copy for them.
    if email.is_ascii() && !email.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(email)
    } else {
        std::borrow::Cow::Owned(email.to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_lowercases_domain_only() {
        assert_eq!(
            normalize_email("  Ana.Ortiz@ACME.Example ").unwrap(),
            "Ana.Ortiz@acme.example"
        );
    }

    #[test]
    fn normalize_refuses_header_injection() {
        assert!(matches!(
            normalize_email("a@b.example\r\nBcc: x@y.example"),
            Err(EmailError::BadCharacter(_))
        ));
    }

    #[test]
    fn normalize_refuses_non_addresses() {
        assert_eq!(normalize_email(""), Err(EmailError::Empty));
        assert!(matches!(normalize_email("ana"), Err(EmailError::NoAt(_))));
        assert!(matches!(
            normalize_email("@acme.example"),
            Err(EmailError::NoLocalPart(_))
        ));
        assert!(matches!(
            normalize_email("ana@localhost"),
            Err(EmailError::BadDomain(_))
        ));
    }

    // Issue 10: these were accepted at import, then refused by the sender at send time.
    #[test]
    fn normalize_refuses_what_the_sender_refuses() {
        for (raw, reason) in [
            (".dot@x.example", "starts or ends with a dot"),
            ("dot.@x.example", "starts or ends with a dot"),
            ("x..y@x.example", "has two dots in a row"),
            ("a@b@x.example", "contains another `@`"),
        ] {
            let error = normalize_email(raw).unwrap_err();
            assert_eq!(
                error,
                EmailError::BadLocalPart {
                    address: raw.into(),
                    reason
                },
                "{raw}"
            );
            assert!(send_address(raw).is_err(), "the sender refuses {raw} too");
        }
        let long = format!("{}@x.example", "a".repeat(65));
        assert!(matches!(
            normalize_email(&long),
            Err(EmailError::BadLocalPart { .. })
        ));
        assert_eq!(
            normalize_email("x..y@x.example").unwrap_err().to_string(),
            "`x..y@x.example` cannot be sent to: the part before the `@` has two dots in a row"
        );
    }

    #[test]
    fn what_normalize_accepts_the_sender_accepts() {
        for raw in [
            "ana@acme.example",
            "Dana.Scully@FBI.example",
            "o'brien+news@x.example",
            "jürgen@müller.example",
        ] {
            let normalized = normalize_email(raw).unwrap();
            let address = send_address(&normalized).unwrap();
            assert_eq!(address.to_string(), normalized);
        }
    }

    // Issue 10: `DANA.SCULLY@fbi.example` and `dana.scully@fbi.example` were two leads.
    #[test]
    fn the_key_ignores_case_in_the_whole_address() {
        let shouted = normalize_email("DANA.SCULLY@FBI.example").unwrap();
        assert_eq!(shouted, "DANA.SCULLY@fbi.example", "the spelling is kept");
        assert_eq!(email_key(&shouted), "dana.scully@fbi.example");
        assert_eq!(email_key("Dana.Scully@fbi.example"), email_key(&shouted));
        assert_eq!(email_key("JÜRGEN@x.example"), "jürgen@x.example");
        assert!(matches!(
            email_key("ana@x.example"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn promote_never_goes_backward() {
        let mut lead = Lead::new("a@b.example".into(), Utc::now());
        assert!(lead.promote(Stage::Customer));
        assert!(!lead.promote(Stage::Contact));
        assert_eq!(lead.stage, Stage::Customer);
    }

    #[test]
    fn set_field_routes_unknown_names_to_attributes() {
        let mut lead = Lead::new("a@b.example".into(), Utc::now());
        lead.set_field("plan", Value::Text("pro".into())).unwrap();
        lead.set_field("score", Value::Number(12.0)).unwrap();
        assert_eq!(lead.field("plan"), Some(Value::Text("pro".into())));
        assert_eq!(lead.score, 12);
        assert!(lead.set_field("score", Value::Text("x".into())).is_err());
    }
}
