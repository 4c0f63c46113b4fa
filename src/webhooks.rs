//! Webhooks out: which journal events are reported to which URLs (`[[webhooks]]`), the JSON
//! body of each report, the queue record it waits in, and its signature under the Standard
//! Webhooks spec (<https://www.standardwebhooks.com>).
//!
//! - [`Routes`]: the subscriptions (URL → event types), without secrets. The store holds them
//!   ([`crate::store::Store::with_webhooks`]) and turns every subscribed journal line of a
//!   batch into a [`Delivery`] in the same transaction, so a report can never be lost or made
//!   for something that did not happen.
//! - [`Endpoint`]: one URL with its signing key and retry policy, for the daemon's delivery
//!   task (`crate::daemon::webhooks`), which is the only part that needs the secret.
//!
//! Event types are the journal's facts ([`crate::store::EventKind`]) under stable names
//! ([`EVENTS`]). A body is `{"type", "timestamp", "data"}` with `data` holding the lead's
//! address, the workflow (if any), what the event says, and the lead as it stood; it is made
//! once, when the event is journaled, and sent byte for byte the same on every attempt.
//!
//! Signing (Standard Webhooks): the secret is `whsec_` followed by base64 of 24–64 random
//! bytes; `webhook-signature` is `v1,` and the base64 HMAC-SHA256, under the decoded bytes, of
//! `{webhook-id}.{webhook-timestamp}.{body}`. The id stays the same across retries (receivers
//! drop repeats by it); the timestamp is the attempt's, in unix seconds of the real clock
//! (receivers reject old ones), even when the daemon rehearses on a clock of its own.

use std::collections::BTreeSet;
use std::time::Duration as StdDuration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::WebhookConfig;
use crate::lead::{Lead, SuppressionReason};
use crate::store::{Event, EventKind};

/// Every event type a `[[webhooks]]` entry may list (`"*"` lists all); what each reports is in
/// the README's Webhooks section, and [`candidates`] says which journal line it comes from.
pub const EVENTS: [&str; 15] = [
    "lead.created",
    "lead.updated",
    "lead.enrolled",
    "lead.replied",
    "lead.promoted",
    "lead.unsubscribed",
    "lead.bounced",
    "lead.complained",
    "lead.suppressed",
    "lead.unsuppressed",
    "email.sent",
    "email.failed",
    "email.uncertain",
    "enrollment.completed",
    "enrollment.exited",
];

/// The event types a journal line may be reported as (a suppression is one of three,
/// depending on why); empty for lines that are never reported.
fn candidates(kind: &EventKind) -> &'static [&'static str] {
    match kind {
        EventKind::Created { .. } => &["lead.created"],
        EventKind::Updated { .. } => &["lead.updated"],
        EventKind::Enrolled => &["lead.enrolled"],
        EventKind::Received { what } if is_reply(what) => &["lead.replied"],
        EventKind::Promoted { .. } => &["lead.promoted"],
        EventKind::Suppressed { .. } => &[
            "lead.unsubscribed",
            "lead.bounced",
            "lead.complained",
            "lead.suppressed",
        ],
        EventKind::Unsuppressed => &["lead.unsuppressed"],
        EventKind::Sent { .. } => &["email.sent"],
        EventKind::SendFailed {
            permanent: true, ..
        } => &["email.failed"],
        EventKind::Uncertain { .. } => &["email.uncertain"],
        EventKind::Completed => &["enrollment.completed"],
        EventKind::Exited { .. } => &["enrollment.exited"],
        _ => &[],
    }
}

/// A `Received` line is a human reply when it says so first: the engine journals "reply", the
/// correlation "reply “subject”: “excerpt”" (`crate::daemon::correlate`).
fn is_reply(what: &str) -> bool {
    what == "reply" || what.starts_with("reply ")
}

/// The event type of a journal line of a lead whose suppression (if any) is `suppression`.
pub fn event_type(
    kind: &EventKind,
    suppression: Option<SuppressionReason>,
) -> Option<&'static str> {
    match kind {
        EventKind::Suppressed { .. } => Some(match suppression {
            Some(SuppressionReason::Unsubscribed) => "lead.unsubscribed",
            Some(SuppressionReason::Bounced) => "lead.bounced",
            Some(SuppressionReason::Complained) => "lead.complained",
            Some(SuppressionReason::Manual) | None => "lead.suppressed",
        }),
        other => candidates(other).first().copied(),
    }
}

/// One report waiting in the store's queue (or kept there after it was given up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `webhook-id`: the same on every attempt, so the receiver can drop repeats.
    pub id: String,
    pub url: String,
    /// The event type (`lead.promoted`).
    pub event: String,
    /// The lead it is about, as spelled.
    pub lead: String,
    /// The JSON body, exactly as signed and sent on every attempt.
    pub body: String,
    /// When it entered the queue (when the event happened, or `nurture webhooks retry`): the
    /// give-up age counts from here.
    pub queued_at: DateTime<Utc>,
    /// When the next attempt is due: the entry's place in the queue.
    pub next_attempt: DateTime<Utc>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When it was given up (kept, for `nurture webhooks` and `webhooks retry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<DateTime<Utc>>,
}

/// The subscriptions: which URLs want which event types. No secrets.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    url: String,
    /// `None`: every event type (`"*"`).
    events: Option<BTreeSet<&'static str>>,
}

impl Route {
    fn wants(&self, event: &str) -> bool {
        self.events.as_ref().is_none_or(|set| set.contains(event))
    }
}

impl Routes {
    /// The subscriptions of `[[webhooks]]`; an unknown event type, a URL that is not
    /// `http(s)://`, or one URL listed twice is an error naming the entry.
    pub fn from_config(entries: &[WebhookConfig]) -> Result<Routes, String> {
        let mut routes: Vec<Route> = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let place = format!("webhooks[{index}]");
            check_url(&place, &entry.url)?;
            if let Some(first) = routes.iter().position(|r| r.url == entry.url) {
                return Err(format!(
                    "{place}.url: {} is also webhooks[{first}]; list all its events in one entry",
                    entry.url
                ));
            }
            if entry.events.is_empty() {
                return Err(format!(
                    "{place}.events is empty: list the events to send (or \"*\"); the events are {}",
                    names()
                ));
            }
            let mut events = Some(BTreeSet::new());
            for name in &entry.events {
                if name == "*" {
                    events = None;
                    break;
                }
                let known = EVENTS.iter().find(|known| *known == name).copied();
                match (known, events.as_mut()) {
                    (Some(known), Some(set)) => {
                        set.insert(known);
                    }
                    (Some(_), None) => {}
                    (None, _) => return Err(unknown_event(&place, name)),
                }
            }
            routes.push(Route {
                url: entry.url.clone(),
                events,
            });
        }
        Ok(Routes { routes })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether any URL may want a journal line of this kind (before looking the lead up).
    pub fn may_want(&self, kind: &EventKind) -> bool {
        let types = candidates(kind);
        self.routes
            .iter()
            .any(|route| types.iter().any(|t| route.wants(t)))
    }

    /// The deliveries the journal line `event` of the lead `email` (as it stands: `lead`)
    /// calls for, one per subscribed URL, each with an id from `new_id`.
    pub fn deliveries(
        &self,
        email: &str,
        lead: Option<&Lead>,
        event: &Event,
        mut new_id: impl FnMut() -> String,
    ) -> Vec<Delivery> {
        let suppression = lead.and_then(|l| l.suppression.as_ref()).map(|s| s.reason);
        let Some(event_type) = event_type(&event.kind, suppression) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let mut body = None;
        for route in self.routes.iter().filter(|r| r.wants(event_type)) {
            let body = body
                .get_or_insert_with(|| payload(event_type, email, lead, event))
                .clone();
            found.push(Delivery {
                id: new_id(),
                url: route.url.clone(),
                event: event_type.to_owned(),
                lead: lead.map_or(email, |l| l.email.as_str()).to_owned(),
                body,
                queued_at: event.at,
                next_attempt: event.at,
                attempts: 0,
                last_error: None,
                failed_at: None,
            });
        }
        found
    }
}

fn check_url(place: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{place}.url {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "{place}.url {url:?}: expected an http:// or https:// address"
        ));
    }
    Ok(())
}

fn names() -> String {
    EVENTS.join(", ")
}

fn unknown_event(place: &str, name: &str) -> String {
    let closest = EVENTS
        .iter()
        .map(|known| (strsim::levenshtein(known, name), *known))
        .min()
        .filter(|(distance, _)| *distance <= 3);
    match closest {
        Some((_, known)) => {
            format!("{place}.events: unknown event `{name}`; did you mean `{known}`?")
        }
        None => format!(
            "{place}.events: unknown event `{name}`; the events are {}",
            names()
        ),
    }
}

/// The body: `{"type", "timestamp", "data": {"email", "workflow", …, "lead"}}`.
pub fn payload(event_type: &str, email: &str, lead: Option<&Lead>, event: &Event) -> String {
    let mut data = Map::new();
    data.insert(
        "email".into(),
        json!(lead.map_or(email, |l| l.email.as_str())),
    );
    if let Some(workflow) = &event.workflow {
        data.insert("workflow".into(), json!(workflow));
    }
    let mut put = |key: &str, value: Value| {
        data.insert(key.into(), value);
    };
    match &event.kind {
        EventKind::Created { by } => put("by", json!(by)),
        EventKind::Updated { by, fields } => {
            put("by", json!(by));
            put("fields", json!(fields));
        }
        EventKind::Received { what } => put("what", json!(what)),
        EventKind::Promoted { stage, by } => {
            put("stage", json!(stage));
            put("by", json!(by));
        }
        EventKind::Suppressed { reason } => put("reason", json!(reason)),
        EventKind::Sent { message_id, step } | EventKind::Uncertain { message_id, step } => {
            put("message_id", json!(message_id));
            put("step", json!(step));
        }
        EventKind::SendFailed {
            message_id,
            step,
            error,
            ..
        } => {
            put("message_id", json!(message_id));
            put("step", json!(step));
            put("error", json!(error));
        }
        EventKind::Exited { reason } => {
            put("reason", json!(reason.to_string()));
            // The stable code beside the sentence: `unsubscribed`, `goal_reached`…
            let code = match serde_json::to_value(reason) {
                Ok(Value::String(code)) => Some(code),
                Ok(Value::Object(map)) => map.keys().next().cloned(),
                _ => None,
            };
            put("exit", json!(code));
        }
        _ => {}
    }
    if let Some(lead) = lead {
        put("lead", lead_json(lead));
    }
    json!({
        "type": event_type,
        "timestamp": event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": data,
    })
    .to_string()
}

/// The lead as a CRM wants it: its fields, not the store's bookkeeping.
fn lead_json(lead: &Lead) -> Value {
    json!({
        "email": lead.email,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "company": lead.company,
        "source": lead.source,
        "tags": lead.tags,
        "timezone": lead.timezone,
        "score": lead.score,
        "stage": lead.stage,
        "attributes": lead.attributes,
        "suppressed": lead.suppression.as_ref().map(|s| s.reason),
    })
}

/// The `webhook-signature` value: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
pub fn signature(key: &hmac::Key, id: &str, timestamp: i64, body: &str) -> String {
    let tag = hmac::sign(key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(tag.as_ref()))
}

/// The signing key of a Standard Webhooks secret: `whsec_` + base64 of 24 to 64 bytes (the
/// prefix may be left out, as the spec's libraries allow).
pub fn signing_key(secret: &str) -> Result<hmac::Key, String> {
    const HOW: &str = "a Standard Webhooks secret is `whsec_` followed by base64 of 24 to 64 random bytes (make one with `echo whsec_$(head -c 32 /dev/urandom | base64)`)";
    let encoded = secret.trim();
    let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| format!("not base64 ({e}): {HOW}"))?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(format!("{} bytes: {HOW}", bytes.len()));
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

/// One configured URL as the delivery task needs it: key, timeout and retry policy.
pub struct Endpoint {
    pub url: String,
    key: hmac::Key,
    pub timeout: StdDuration,
    max_attempts: u32,
    give_up_after: Duration,
    retry_min: Duration,
    retry_max: Duration,
}

impl Endpoint {
    /// The entry `index` of `[[webhooks]]`, with its secret read from `secret_file` (first
    /// line) or the variable named by `secret_env`. Errors name the setting, never the secret.
    pub fn load(index: usize, entry: &WebhookConfig) -> Result<Endpoint, String> {
        let place = format!("webhooks[{index}]");
        let secret = match (entry.secret_file.as_str(), entry.secret_env.as_str()) {
            ("", "") => {
                return Err(format!(
                    "{place} ({}): set secret_file or secret_env: every webhook is signed",
                    entry.url
                ));
            }
            (file, "") => std::fs::read_to_string(file)
                .map_err(|e| format!("{place}.secret_file {file}: {e}"))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            ("", variable) => std::env::var(variable).map_err(|_| {
                format!("{place}.secret_env: the environment variable {variable} is not set")
            })?,
            _ => {
                return Err(format!(
                    "{place}.secret_file and {place}.secret_env are both set: keep one"
                ));
            }
        };
        let source = if entry.secret_file.is_empty() {
            "secret_env"
        } else {
            "secret_file"
        };
        let key = signing_key(&secret).map_err(|e| format!("{place}.{source}: {e}"))?;
        let seconds = |s: u64| Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        Ok(Endpoint {
            url: entry.url.clone(),
            key,
            timeout: StdDuration::from_secs(entry.timeout_seconds.max(1)),
            max_attempts: entry.max_attempts.max(1),
            give_up_after: seconds(entry.give_up_hours.saturating_mul(3600)),
            retry_min: seconds(entry.retry_min_seconds.max(1)),
            retry_max: seconds(entry.retry_max_seconds.max(entry.retry_min_seconds).max(1)),
        })
    }

    pub fn signature(&self, id: &str, timestamp: i64, body: &str) -> String {
        signature(&self.key, id, timestamp, body)
    }

    /// When to try `delivery` again after it failed its `attempts`-th attempt at `now`;
    /// `None`: give up (too many attempts, or older than the give-up age).
    pub fn retry_at(&self, delivery: &Delivery, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if delivery.attempts >= self.max_attempts || now - delivery.queued_at >= self.give_up_after
        {
            return None;
        }
        Some(
            now + crate::retry::backoff(
                delivery.attempts,
                &delivery.id,
                self.retry_min,
                self.retry_max,
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ExitReason;
    use crate::lead::{Stage, Suppression};
    use chrono::TimeZone;

    fn entry(url: &str, events: &[&str]) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            ..WebhookConfig::default()
        }
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
    }

    // The test vector of the Standard Webhooks reference libraries
    // (standard-webhooks/standard-webhooks, libraries/rust/src/lib.rs, `test_sign`).
    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        let key = signing_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                r#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        // The prefix is optional, as in the reference libraries.
        let bare = signing_key("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            signature(&bare, "msg_1", 1, "{}"),
            signature(&key, "msg_1", 1, "{}")
        );
    }

    #[test]
    fn a_bad_secret_says_what_a_good_one_looks_like() {
        let short = signing_key("whsec_c2hvcnQ=").err().unwrap();
        assert!(
            short.contains("5 bytes") && short.contains("whsec_"),
            "{short}"
        );
        let garbage = signing_key("whsec_not base64!").err().unwrap();
        assert!(garbage.contains("not base64"), "{garbage}");

        let mut config = entry("https://crm.example/hook", &["lead.promoted"]);
        let none = Endpoint::load(0, &config).err().unwrap();
        assert!(none.contains("webhooks[0]") && none.contains("secret_file"));
        config.secret_env = "NURTURE_TEST_SURELY_UNSET_WEBHOOK_SECRET".into();
        let unset = Endpoint::load(2, &config).err().unwrap();
        assert!(unset.contains("webhooks[2].secret_env"), "{unset}");
    }

    #[test]
    fn every_event_is_documented() {
        let readme = include_str!("../README.md");
        let example = include_str!("../nurture.example.toml");
        for name in EVENTS {
            assert!(readme.contains(&format!("`{name}`")), "{name} in README.md");
            assert!(example.contains(name), "{name} in nurture.example.toml");
        }
    }

    #[test]
    fn routes_name_the_entry_at_fault() {
        let error =
            Routes::from_config(&[entry("https://a.example/x", &["lead.promotd"])]).unwrap_err();
        assert!(
            error.contains("webhooks[0].events") && error.contains("`lead.promoted`"),
            "{error}"
        );
        let error =
            Routes::from_config(&[entry("ftp://a.example/x", &["lead.promoted"])]).unwrap_err();
        assert!(error.contains("webhooks[0].url"), "{error}");
        let error = Routes::from_config(&[
            entry("https://a.example/x", &["lead.promoted"]),
            entry("https://a.example/x", &["lead.bounced"]),
        ])
        .unwrap_err();
        assert!(error.contains("webhooks[1].url") && error.contains("webhooks[0]"));
        let error = Routes::from_config(&[entry("https://a.example/x", &[])]).unwrap_err();
        assert!(error.contains("lead.promoted"), "{error}");
    }

    #[test]
    fn a_suppression_is_reported_as_what_caused_it() {
        let routes = Routes::from_config(&[
            entry("https://crm.example/hook", &["lead.unsubscribed"]),
            entry("https://all.example/hook", &["*"]),
        ])
        .unwrap();
        let mut lead = Lead::new("Dana@Example.test".into(), at());
        lead.suppression = Some(Suppression {
            reason: SuppressionReason::Unsubscribed,
            detail: "one-click".into(),
            at: at(),
        });
        let event = Event {
            at: at(),
            workflow: None,
            kind: EventKind::Suppressed {
                reason: "unsubscribed with the one-click link".into(),
            },
        };
        assert!(routes.may_want(&event.kind));
        let mut n = 0;
        let found = routes.deliveries("dana@example.test", Some(&lead), &event, || {
            n += 1;
            format!("msg_{n}")
        });
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].event, "lead.unsubscribed");
        assert_eq!(
            (found[0].id.as_str(), found[1].id.as_str()),
            ("msg_1", "msg_2")
        );
        assert_eq!(found[0].body, found[1].body);
        assert_eq!(
            found[0].lead, "Dana@Example.test",
            "the lead's own spelling"
        );
        let body: Value = serde_json::from_str(&found[0].body).unwrap();
        assert_eq!(body["type"], "lead.unsubscribed");
        assert_eq!(body["timestamp"], "2026-11-23T10:00:00.000Z");
        assert_eq!(
            body["data"]["reason"],
            "unsubscribed with the one-click link"
        );
        assert_eq!(body["data"]["lead"]["suppressed"], "unsubscribed");

        lead.suppression.as_mut().unwrap().reason = SuppressionReason::Bounced;
        let found = routes.deliveries("dana@example.test", Some(&lead), &event, || "m".into());
        assert_eq!(found.len(), 1, "the first URL wants unsubscriptions only");
        assert_eq!(found[0].event, "lead.bounced");
    }

    #[test]
    fn only_facts_worth_telling_are_reported() {
        let routes = Routes::from_config(&[entry("https://all.example/hook", &["*"])]).unwrap();
        let line = |kind| Event {
            at: at(),
            workflow: Some("trial".into()),
            kind,
        };
        let reported = |kind| {
            routes
                .deliveries("a@example.test", None, &line(kind), || "m".into())
                .first()
                .map(|d| d.event.clone())
        };
        assert_eq!(
            reported(EventKind::Promoted {
                stage: Stage::Contact,
                by: "workflow `trial`".into()
            })
            .as_deref(),
            Some("lead.promoted")
        );
        assert_eq!(
            reported(EventKind::Received {
                what: "reply “Re: Welcome”: “Tuesday?”".into()
            })
            .as_deref(),
            Some("lead.replied")
        );
        assert_eq!(
            reported(EventKind::Received {
                what: "auto-reply “Out of office”".into()
            }),
            None
        );
        let failed = |permanent| EventKind::SendFailed {
            message_id: "<1@x>".into(),
            step: "welcome".into(),
            error: "550 no such user".into(),
            permanent,
        };
        assert_eq!(reported(failed(true)).as_deref(), Some("email.failed"));
        assert_eq!(reported(failed(false)), None, "a retry is not news");
        assert_eq!(
            reported(EventKind::Decision {
                step: "s".into(),
                condition: "c".into(),
                result: true
            }),
            None
        );
        let exited = routes.deliveries(
            "a@example.test",
            None,
            &line(EventKind::Exited {
                reason: ExitReason::GoalReached("lead.stage is \"customer\"".into()),
            }),
            || "m".into(),
        );
        let body: Value = serde_json::from_str(&exited[0].body).unwrap();
        assert_eq!(body["data"]["exit"], "goal_reached");
        assert_eq!(body["data"]["workflow"], "trial");
        assert_eq!(body["data"]["email"], "a@example.test");
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let endpoint = Endpoint {
            url: "https://crm.example/hook".into(),
            key: signing_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap(),
            timeout: StdDuration::from_secs(10),
            max_attempts: 5,
            give_up_after: Duration::hours(1),
            retry_min: Duration::seconds(5),
            retry_max: Duration::seconds(60),
        };
        let mut delivery = Delivery {
            id: "msg_1".into(),
            url: endpoint.url.clone(),
            event: "lead.promoted".into(),
            lead: "a@example.test".into(),
            body: "{}".into(),
            queued_at: at(),
            next_attempt: at(),
            attempts: 1,
            last_error: None,
            failed_at: None,
        };
        let first = endpoint.retry_at(&delivery, at()).unwrap() - at();
        assert!(first >= Duration::seconds(5) && first <= Duration::milliseconds(6250));
        delivery.attempts = 4;
        let fourth = endpoint.retry_at(&delivery, at()).unwrap() - at();
        assert!(fourth >= Duration::seconds(40) && fourth <= Duration::seconds(50));
        delivery.attempts = 5;
        assert_eq!(endpoint.retry_at(&delivery, at()), None, "max attempts");
        delivery.attempts = 2;
        assert_eq!(
            endpoint.retry_at(&delivery, at() + Duration::hours(1)),
            None,
            "too old"
        );
        for attempt in 1..30 {
            let wait =
                crate::retry::backoff(attempt, "msg_x", Duration::seconds(5), Duration::hours(1));
            assert!(wait <= Duration::hours(1) + Duration::minutes(15));
        }
    }
}
