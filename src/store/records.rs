//! What the store keeps besides leads and enrollments: the event journal, the record of every
//! email sent, and the outbox of emails waiting to leave.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::ExitReason;
use crate::lead::Stage;

/// One line of a lead's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// The workflow it happened in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    pub kind: EventKind,
}

/// Everything that can happen to a lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The lead was created ("import of leads.csv", "nurture leads set").
    Created {
        by: String,
    },
    /// Fields changed outside a workflow.
    Updated {
        by: String,
        fields: Vec<String>,
    },
    Enrolled,
    /// An email waits in the outbox, over a sending limit, until `not_before`.
    Queued {
        message_id: String,
        step: String,
        subject: String,
    },
    /// The transport accepted it.
    Sent {
        message_id: String,
        step: String,
    },
    /// It could not be sent, for good or for now: the template could not render for this
    /// lead, the address cannot be sent to, or the transport refused it. `message_id` is empty
    /// in journals written before failures had one.
    SendFailed {
        message_id: String,
        step: String,
        error: String,
        permanent: bool,
    },
    /// The daemon stopped while handing it to the transport: it may or may not have left.
    Uncertain {
        message_id: String,
        step: String,
    },
    /// An uncertain email the operator sent again (`nurture outbox resend`): it waits in the
    /// outbox.
    Resent {
        message_id: String,
        step: String,
    },
    /// An uncertain email the operator chose not to send again (`nurture outbox drop`).
    Dropped {
        message_id: String,
        step: String,
    },
    /// A `send … expires` came after its expiry: the email was not sent (`expires`: the
    /// expiry as written, `lead.offer_ends`).
    Expired {
        step: String,
        template: String,
        expired: DateTime<Utc>,
        expires: String,
    },
    /// An input arrived (reply, auto-reply, bounce, unsubscribe request, click).
    Received {
        what: String,
    },
    /// An out-of-office paused the sequence (the reason says when a return date was capped).
    Paused {
        until: DateTime<Utc>,
        reason: String,
    },
    /// A branch was taken.
    Decision {
        step: String,
        condition: String,
        result: bool,
    },
    /// The workflow changed the lead (`tag`, `score`, `set`).
    Changed {
        change: String,
    },
    Promoted {
        stage: Stage,
        by: String,
    },
    Notified {
        to: String,
        reason: String,
    },
    /// A webhook about this lead reached its receiver (`id`: its `webhook-id`).
    WebhookDelivered {
        id: String,
        /// The event type (`lead.promoted`).
        webhook: String,
        url: String,
        attempts: u32,
    },
    /// A webhook about this lead was given up (`nurture webhooks retry` sends it again).
    WebhookFailed {
        id: String,
        webhook: String,
        url: String,
        error: String,
        attempts: u32,
    },
    Completed,
    Exited {
        reason: ExitReason,
    },
    Suppressed {
        reason: String,
    },
    Unsuppressed,
    /// Something the lead did elsewhere, reported through the API (`visited-pricing`), with
    /// what the reporter said about it.
    Tracked {
        name: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        properties: BTreeMap<String, serde_json::Value>,
        by: String,
    },
    /// A tracked email was opened (`kind` "open") or one of its links clicked ("click"), judged
    /// as it arrived: by a person, or by a machine (`machine`: why it was taken for one; an
    /// image proxy, a link scanner). Neither the address nor the user agent it came from is
    /// kept.
    Engaged {
        kind: String,
        message_id: String,
        step: String,
        /// A click's link: its number in the email, its target and its name, if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        machine: Option<String>,
    },
    /// A scoring rule moved the lead's score (`signal`: `reply`, `event "visited-pricing"`):
    /// the score history `nurture leads show` prints.
    Scored {
        signal: String,
        points: i64,
        /// The score before (faded to this moment) and after.
        before: i64,
        after: i64,
        temperature: crate::scoring::Temperature,
    },
    /// A double opt-in sign-up: a confirmation email went out; unconfirmed until `expires`.
    ConfirmationRequested {
        form: String,
        expires: DateTime<Utc>,
    },
    /// The person confirmed through the link (the event's time is when): consent to be
    /// mailed, given through `form`, on the consent text of version `version`.
    Consented {
        form: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        version: String,
    },
    /// An unconfirmed sign-up expired unconfirmed and was dropped.
    ConfirmationExpired {
        form: String,
    },
}

/// An email that left (or may have), by Message-ID: replies are correlated through it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub message_id: String,
    pub workflow: String,
    pub lead: String,
    /// The envelope sender (for the sending limits).
    #[serde(default)]
    pub sender: String,
    pub step: String,
    pub subject: String,
    pub state: MessageState,
    pub queued_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    Sent,
    /// Never left: it could not be rendered or composed, or the transport refused it for good.
    Failed,
    /// Caught mid-send by a crash; reported, not blindly sent again. A copy is kept for
    /// `nurture outbox resend`.
    Uncertain,
    /// Was uncertain; the operator chose not to send it again (`nurture outbox drop`).
    Dropped,
}

/// An email waiting in the outbox: rendered, with its final Message-ID, ready for a transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEmail {
    pub message_id: String,
    pub workflow: String,
    pub lead: String,
    pub step: String,
    pub subject: String,
    /// Envelope sender and recipient.
    pub envelope_from: String,
    pub envelope_to: String,
    pub queued_at: DateTime<Utc>,
    /// It may not leave before this (a retry's backoff, a throttle).
    pub not_before: DateTime<Utc>,
    pub attempts: u32,
    /// A `send … expires`: when it waits in the outbox (a sending limit, a retry), it does not
    /// leave after its expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Expiry>,
    /// The complete MIME message (stored after the JSON header, not inside it).
    #[serde(skip)]
    pub eml: Vec<u8>,
}

/// The expiry of a `send … expires`, as the email keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expiry {
    /// The moment, for this lead.
    pub at: DateTime<Utc>,
    /// As written (`lead.offer_ends`).
    pub expires: String,
    pub template: String,
}
