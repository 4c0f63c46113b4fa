//! Leads arriving through the HTTP doors (the `/v1` API, web forms, opt-in confirmation
//! links), as the work loop applies them.
//!
//! The loop takes every door request waiting in its queue at once and applies them as one
//! group: one transaction, one flush, then every answer (group commit). So an answer means
//! durable, and a burst of API calls costs one disk flush, not one each. Requests in a group
//! see each other's changes (two upserts of one address merge in order).
//!
//! - An upsert merges by the rules of `nurture leads import` ([`upsert`]) and marks the lead
//!   changed, so the enroller looks at it in the same turn of the loop.
//! - A double opt-in sign-up is kept apart from the leads (meta `optin:<email>`), so nothing
//!   enrolls or mails it: only a confirmation email, which enters the outbox in the same
//!   transaction (crash-safe, under the sending limits like any email). Following the signed
//!   link merges it as an upsert and journals the consent. Unconfirmed sign-ups expire: each
//!   group drops those past their time (an expired link confirms nobody, whenever followed).
//! - An `Idempotency-Key` keeps the first answer for 24 hours (meta `idem:<scope>:<key>`): a
//!   retry with the same body gets it again; another body with the same key gets a 422.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::http::error::body as error_body;
use super::inbound::Context;
use super::scheduler::Happening;
use crate::cli::leads::import::{Upserted, upsert};
use crate::config::FormConfig;
use crate::lead::{Lead, SuppressionReason, email_key};
use crate::leads_file::FileLead;
use crate::mail::RenderedBody;
use crate::mail::compose::{
    OutgoingEmail, domain_of, lead_mailbox, new_message_id, sequenced_message_id, to_eml,
};
use crate::scoring::Signal;
use crate::store::{Batch, EventKind, OutboxEmail, StoreError};
use crate::workflow::Mailbox;

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_HOURS: i64 = 24;
/// The kind of the confirmation links' tokens ([`crate::token`]).
pub const CONFIRM_KIND: &str = "confirm";
/// Expired entries dropped per group at most, so a backlog never stalls a group.
const SWEEP: usize = 64;

const PENDING: &str = "optin:";
const PENDING_EXPIRES: &str = "optin-expires:";
const IDEM: &str = "idem:";
const IDEM_EXPIRES: &str = "idem-expires:";

/// What a door asks of the loop.
#[derive(Debug)]
pub enum Door {
    /// Create or update a lead (`POST /v1/leads`, a form without double opt-in).
    Upsert { row: FileLead, by: String },
    /// Keep `row` unconfirmed and send it the confirmation email of `form`.
    SignUp {
        row: FileLead,
        form: Arc<FormConfig>,
    },
    /// Journal something the lead did elsewhere.
    Event {
        email: String,
        name: String,
        properties: BTreeMap<String, Json>,
        at: Option<DateTime<Utc>>,
        by: String,
    },
    /// The lead, for `GET /v1/leads/{email}`.
    Get { email: String },
    /// The confirmation link of `email`'s sign-up through `form` was followed (its MAC is
    /// checked; its time is checked here, on the daemon's clock).
    Confirm {
        email: String,
        form: String,
        expires: DateTime<Utc>,
    },
}

/// A door's request, with its `Idempotency-Key` if it had one.
#[derive(Debug)]
pub struct DoorRequest {
    pub door: Door,
    pub idempotency: Option<Idempotency>,
}

/// An `Idempotency-Key`, scoped to the API key that sent it, and a digest of the request it
/// came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: String,
}

/// The loop's answer: an HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub status: u16,
    pub body: Json,
}

impl Reply {
    fn new(status: u16, body: Json) -> Reply {
        Reply { status, body }
    }

    fn error(status: u16, code: &str, message: String, field: Option<&str>) -> Reply {
        Reply::new(status, error_body(code, &message, field))
    }
}

/// An unconfirmed sign-up, as kept until it is confirmed or expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub lead: Lead,
    pub score_set: bool,
    pub stage_set: bool,
    pub form: String,
    #[serde(default)]
    pub version: String,
    pub requested_at: DateTime<Utc>,
    pub expires: DateTime<Utc>,
}

/// An answer kept for an `Idempotency-Key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Remembered {
    fingerprint: String,
    reply: Reply,
}

/// The unconfirmed sign-up of `email`, if there is one.
pub fn pending(store: &crate::store::Store, email: &str) -> Result<Option<Pending>, StoreError> {
    Ok(store
        .meta_get(&pending_key(email))?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Applies a group of door requests as one transaction, flushes once, then answers each. A
/// store error is returned (the daemon stops).
/// Returns the `when lead becomes …` handlers the group's events call for, to run once it is
/// committed.
pub fn answer_group(
    requests: Vec<(DoorRequest, oneshot::Sender<Result<Reply, String>>)>,
    cx: &Context<'_>,
) -> Result<Vec<Happening>, StoreError> {
    let mut group = Group {
        cx,
        batch: Batch::default(),
        leads: HashMap::new(),
        meta: HashMap::new(),
        became: Vec::new(),
    };
    group.sweep()?;
    let mut answers = Vec::with_capacity(requests.len());
    for (request, answer) in requests {
        // On an error the senders are dropped: each waiting door hears that the daemon stops.
        answers.push((group.run(request)?, answer));
    }
    let mut batch = std::mem::take(&mut group.batch);
    for (key, value) in group.meta.drain() {
        match value {
            Some(value) => batch.meta_put.push((key, value)),
            None => batch.meta_remove.push(key),
        }
    }
    cx.store.apply(&batch)?;
    cx.store.flush()?;
    for (reply, answer) in answers {
        let _ = answer.send(Ok(reply));
    }
    Ok(group.became)
}

/// One group in the making: its batch, and the leads and meta entries it changed (so later
/// requests of the group see them).
struct Group<'a, 'b> {
    cx: &'a Context<'b>,
    batch: Batch,
    /// Email key → the lead as this group leaves it.
    leads: HashMap<String, Option<Lead>>,
    /// Meta key → its new value (`None`: removed).
    meta: HashMap<String, Option<Vec<u8>>>,
    /// Handlers to run after the commit: leads whose temperature an event changed.
    became: Vec<Happening>,
}

impl Group<'_, '_> {
    fn now(&self) -> DateTime<Utc> {
        self.cx.now
    }

    fn lead(&mut self, email: &str) -> Result<Option<Lead>, StoreError> {
        let key = email_key(email).into_owned();
        if let Some(lead) = self.leads.get(&key) {
            return Ok(lead.clone());
        }
        let lead = self.cx.store.lead(email)?;
        self.leads.insert(key, lead.clone());
        Ok(lead)
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.meta.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.cx.store.meta_get(key),
        }
    }

    fn run(&mut self, request: DoorRequest) -> Result<Reply, StoreError> {
        let Some(idempotency) = request.idempotency else {
            return self.door(request.door);
        };
        let key = format!("{IDEM}{}", idempotency.key);
        if let Some(bytes) = self.meta_get(&key)?
            && let Ok(remembered) = serde_json::from_slice::<Remembered>(&bytes)
        {
            return Ok(if remembered.fingerprint == idempotency.fingerprint {
                remembered.reply
            } else {
                Reply::error(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key came with another request in the last 24 hours; use a new key for a new request".into(),
                    None,
                )
            });
        }
        let reply = self.door(request.door)?;
        let expires = self.now() + Duration::hours(IDEMPOTENCY_HOURS);
        let remembered = Remembered {
            fingerprint: idempotency.fingerprint,
            reply: reply.clone(),
        };
        self.meta.insert(
            key,
            Some(serde_json::to_vec(&remembered).unwrap_or_default()),
        );
        self.meta.insert(
            format!("{IDEM_EXPIRES}{}:{}", stamp(expires), idempotency.key),
            Some(Vec::new()),
        );
        Ok(reply)
    }

    fn door(&mut self, door: Door) -> Result<Reply, StoreError> {
        match door {
            Door::Upsert { row, by } => {
                let (lead, upserted) = self.upsert(row, &by)?;
                let status = if upserted == Upserted::Created {
                    201
                } else {
                    200
                };
                Ok(Reply::new(status, lead_json(&lead)))
            }
            Door::Get { email } => match self.lead(&email)? {
                Some(lead) => Ok(Reply::new(200, lead_json(&lead))),
                None => {
                    let waiting = self.pending(&email)?.is_some();
                    let message = if waiting {
                        format!("{email} signed up and has not confirmed yet")
                    } else {
                        format!("no lead {email}")
                    };
                    Ok(Reply::error(404, "lead_not_found", message, Some("email")))
                }
            },
            Door::Event {
                email,
                name,
                properties,
                at,
                by,
            } => {
                let Some(lead) = self.lead(&email)? else {
                    return Ok(Reply::error(
                        404,
                        "lead_not_found",
                        format!("no lead {email}: create it first with POST /v1/leads"),
                        Some("email"),
                    ));
                };
                let at = at.unwrap_or(self.now());
                self.batch.event(
                    &lead.email,
                    at,
                    None,
                    EventKind::Tracked {
                        name: name.clone(),
                        properties: properties.clone(),
                        by,
                    },
                );
                self.score(lead.clone(), &Signal::Event(name.clone()), at);
                Ok(Reply::new(
                    201,
                    json!({"email": lead.email, "event": name, "properties": properties, "at": at}),
                ))
            }
            Door::SignUp { row, form } => self.sign_up(row, &form),
            Door::Confirm {
                email,
                form,
                expires,
            } => self.confirm(&email, &form, expires),
        }
    }

    /// Scores what the lead did (in this group's transaction, with its journal line), and
    /// notes the handlers to run when its temperature changed.
    fn score(&mut self, mut lead: Lead, signal: &Signal, at: DateTime<Utc>) {
        let scoring = self.cx.project.scoring();
        let scored = scoring.record(&mut lead, signal, at);
        if let Some(scored) = &scored {
            self.batch.event(
                &lead.email,
                at,
                None,
                EventKind::Scored {
                    signal: signal.to_string(),
                    points: scored.points,
                    before: scored.before,
                    after: scored.after,
                    temperature: scored.now,
                },
            );
            if scored.now != scored.was {
                self.became
                    .extend(self.cx.project.became(&lead.email, scored.now));
            }
        }
        self.batch.leads.push(lead.clone());
        self.batch.changed.push(lead.email.clone());
        self.leads
            .insert(email_key(&lead.email).into_owned(), Some(lead));
    }

    /// Merges `row` by the import's rules; the lead as it is now, and what happened.
    fn upsert(&mut self, row: FileLead, by: &str) -> Result<(Lead, Upserted), StoreError> {
        let stored = self.lead(&row.lead.email)?;
        let written = self.batch.leads.len();
        let now = self.now();
        let upserted = upsert(stored.clone(), row, now, by, &mut self.batch);
        let lead = if self.batch.leads.len() > written {
            self.batch.leads.last().cloned()
        } else {
            stored
        }
        .expect("an upsert leaves a lead");
        self.leads
            .insert(email_key(&lead.email).into_owned(), Some(lead.clone()));
        Ok((lead, upserted))
    }

    fn pending(&self, email: &str) -> Result<Option<Pending>, StoreError> {
        Ok(self
            .meta_get(&pending_key(email))?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Keeps the sign-up unconfirmed and queues its confirmation email, in this transaction.
    fn sign_up(&mut self, row: FileLead, form: &FormConfig) -> Result<Reply, StoreError> {
        let now = self.now();
        let email = row.lead.email.clone();
        let expires = now + Duration::hours(i64::from(form.confirm_within_hours));
        let outgoing = match self.confirmation(&row.lead, form, expires) {
            Ok(outgoing) => outgoing,
            Err(error) => {
                warn!(form = %form.name, lead = %email, %error, "cannot make the confirmation email");
                return Ok(Reply::error(
                    500,
                    "confirmation_failed",
                    format!(
                        "the confirmation email of form `{}` could not be made: {error}",
                        form.name
                    ),
                    None,
                ));
            }
        };
        let mut outgoing = outgoing;
        outgoing.message_id = sequenced_message_id(&outgoing.message_id, self.cx.store.new_id()?);
        let eml = match to_eml(&outgoing) {
            Ok(eml) => eml,
            Err(error) => {
                warn!(form = %form.name, lead = %email, %error, "cannot compose the confirmation email");
                return Ok(Reply::error(
                    500,
                    "confirmation_failed",
                    format!("the confirmation email could not be composed: {error}"),
                    None,
                ));
            }
        };
        // A sign-up again before confirming replaces the first (its links keep working until
        // they expire, and confirm this one).
        if let Some(before) = self.pending(&email)? {
            self.meta.insert(expiry_key(before.expires, &email), None);
        }
        let pending = Pending {
            lead: row.lead,
            score_set: row.score_set,
            stage_set: row.stage_set,
            form: form.name.clone(),
            version: form.consent_version.clone(),
            requested_at: now,
            expires,
        };
        self.meta.insert(
            pending_key(&email),
            Some(serde_json::to_vec(&pending).unwrap_or_default()),
        );
        self.meta
            .insert(expiry_key(expires, &email), Some(Vec::new()));
        self.batch.event(
            &email,
            now,
            None,
            EventKind::ConfirmationRequested {
                form: form.name.clone(),
                expires,
            },
        );
        self.batch.outbox_put.push(OutboxEmail {
            message_id: outgoing.message_id.clone(),
            workflow: format!("form:{}", form.name),
            lead: email.clone(),
            step: "confirm".into(),
            subject: outgoing.subject.clone(),
            envelope_from: outgoing.from.address.clone(),
            envelope_to: outgoing.to.address.clone(),
            queued_at: now,
            not_before: now,
            attempts: 0,
            expires: None,
            eml,
        });
        info!(form = %form.name, lead = %email, %expires, "sign-up waits for confirmation");
        Ok(Reply::new(
            202,
            json!({"email": email, "status": "unconfirmed", "form": form.name, "expires_at": expires}),
        ))
    }

    /// The confirmation email of `form` for `lead`, its link valid until `expires`.
    fn confirmation(
        &self,
        lead: &Lead,
        form: &FormConfig,
        expires: DateTime<Utc>,
    ) -> Result<OutgoingEmail, String> {
        let from = Mailbox::parse(&form.confirm_from)?;
        let base = self
            .cx
            .unsubscribe
            .base_url()
            .ok_or("http.base_url is not set: there is no address for the confirmation link")?;
        let expires_at = expires.timestamp().to_string();
        let token = self
            .cx
            .unsubscribe
            .signer()
            .seal(CONFIRM_KIND, &[&lead.email, &form.name, &expires_at]);
        let mut context = serde_json::Map::new();
        for name in [
            "email",
            "first_name",
            "last_name",
            "name",
            "company",
            "source",
        ] {
            if let Some(value) = lead.field(name) {
                context.insert(name.into(), Json::String(value.to_string()));
            }
        }
        for (key, value) in &lead.attributes {
            context
                .entry(key.clone())
                .or_insert_with(|| Json::String(value.to_string()));
        }
        context.insert(
            "confirm_url".into(),
            json!(format!("{base}/confirm/{token}")),
        );
        context.insert("form".into(), json!(form.name));
        context.insert(
            "sender_name".into(),
            json!(from.name.clone().unwrap_or_else(|| from.address.clone())),
        );
        context.insert("expires_at".into(), json!(expires.to_rfc2822()));
        let context = Json::Object(context);
        let templates = &self.cx.project.templates;
        let subject = templates
            .render_subject(&form.confirm_subject, &context)
            .map_err(|e| e.to_string())?;
        let RenderedBody { html, text } = templates
            .render(&form.confirm_template, &context)
            .map_err(|e| e.to_string())?;
        let unique = format!(
            "confirm|{}|{}|{}",
            form.name,
            lead.email,
            self.now().timestamp_millis()
        );
        Ok(OutgoingEmail {
            message_id: new_message_id(domain_of(&from.address), &unique),
            to: lead_mailbox(lead),
            from,
            reply_to: None,
            subject,
            body: RenderedBody { html, text },
            date: self.now(),
            list_unsubscribe: Vec::new(),
            one_click: false,
            // Sent because someone asked for it, by a machine (RFC 3834): auto-responders
            // leave it alone.
            extra_headers: vec![
                ("X-Nurture-Form".into(), form.name.clone()),
                ("Auto-Submitted".into(), "auto-generated".into()),
            ],
        })
    }

    /// The link was followed: the sign-up becomes a lead (merged as an upsert), with its
    /// consent journaled; the enroller looks at it in this turn of the loop.
    fn confirm(
        &mut self,
        email: &str,
        form: &str,
        expires: DateTime<Utc>,
    ) -> Result<Reply, StoreError> {
        let now = self.now();
        if now > expires {
            return Ok(Reply::error(
                410,
                "link_expired",
                format!("this confirmation link expired at {expires}; please sign up again"),
                None,
            ));
        }
        let Some(pending) = self.pending(email)? else {
            let confirmed = match self.lead(email)? {
                Some(lead) => self.cx.store.events_of(&lead.email)?.iter().any(|event| {
                    matches!(&event.kind, EventKind::Consented { form: f, .. } if f == form)
                }),
                None => false,
            };
            return Ok(if confirmed {
                // A second press of the button: done already.
                Reply::new(
                    200,
                    json!({"email": email, "status": "confirmed", "form": form}),
                )
            } else {
                Reply::error(
                    404,
                    "signup_not_found",
                    "no sign-up waits for this confirmation; please sign up again".into(),
                    None,
                )
            });
        };
        let row = FileLead {
            lead: pending.lead,
            score_set: pending.score_set,
            stage_set: pending.stage_set,
        };
        let (mut lead, _) = self.upsert(row, &format!("form `{}`", pending.form))?;
        self.batch.event(
            &lead.email,
            now,
            None,
            EventKind::Consented {
                form: pending.form.clone(),
                version: pending.version.clone(),
            },
        );
        // Confirming is asking again: an earlier unsubscribe gives way to it (a bounce or a
        // suppression by hand does not).
        if lead
            .suppression
            .as_ref()
            .is_some_and(|s| s.reason == SuppressionReason::Unsubscribed)
        {
            lead.suppression = None;
            lead.updated_at = now;
            self.batch
                .event(&lead.email, now, None, EventKind::Unsuppressed);
            self.batch.leads.push(lead.clone());
            self.leads
                .insert(email_key(&lead.email).into_owned(), Some(lead.clone()));
        }
        self.batch.changed.push(lead.email.clone());
        self.meta.insert(pending_key(email), None);
        self.meta.insert(expiry_key(pending.expires, email), None);
        info!(form = %pending.form, lead = %lead.email, "sign-up confirmed");
        Ok(Reply::new(
            200,
            json!({"email": lead.email, "status": "confirmed", "form": pending.form}),
        ))
    }

    /// Drops sign-ups and idempotency keys past their time (a few per group).
    fn sweep(&mut self) -> Result<(), StoreError> {
        let now = self.now();
        let cut = stamp(now);
        for (index, _) in self.cx.store.meta_prefix(PENDING_EXPIRES, SWEEP)? {
            let rest = &index[PENDING_EXPIRES.len()..];
            let Some((at, email)) = rest.split_once(':') else {
                continue;
            };
            if at > cut.as_str() {
                break;
            }
            if let Some(pending) = self.pending(email)?
                && pending.expires <= now
            {
                info!(form = %pending.form, lead = %pending.lead.email, "unconfirmed sign-up expired");
                self.batch.event(
                    &pending.lead.email,
                    now,
                    None,
                    EventKind::ConfirmationExpired { form: pending.form },
                );
                self.meta.insert(pending_key(email), None);
            }
            self.meta.insert(index, None);
        }
        for (index, _) in self.cx.store.meta_prefix(IDEM_EXPIRES, SWEEP)? {
            let rest = &index[IDEM_EXPIRES.len()..];
            let Some((at, key)) = rest.split_once(':') else {
                continue;
            };
            if at > cut.as_str() {
                break;
            }
            self.meta.insert(format!("{IDEM}{key}"), None);
            self.meta.insert(index, None);
        }
        Ok(())
    }
}

/// The lead as the API shows it: the store's shape.
pub fn lead_json(lead: &Lead) -> Json {
    serde_json::to_value(lead).unwrap_or(Json::Null)
}

fn pending_key(email: &str) -> String {
    format!("{PENDING}{}", email_key(email))
}

fn expiry_key(expires: DateTime<Utc>, email: &str) -> String {
    format!("{PENDING_EXPIRES}{}:{}", stamp(expires), email_key(email))
}

/// A time as fixed-width text that sorts as the time does.
fn stamp(at: DateTime<Utc>) -> String {
    format!("{:020}", at.timestamp_millis().max(0))
}
