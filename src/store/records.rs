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
    /// The transport refused it, for good or for now.
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
    Failed,
    /// Caught mid-send by a crash; reported, not blindly sent again.
    Uncertain,
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
    /// The complete MIME message (stored after the JSON header, not inside it).
    #[serde(skip)]
    pub eml: Vec<u8>,
}

impl OutboxEmail {
    /// The email without its MIME bytes: what an in-flight list keeps (the bytes are in the
    /// outbox or about to be sent, and can be kilobytes each).
    pub fn header(&self) -> OutboxEmail {
        OutboxEmail {
            message_id: self.message_id.clone(),
            workflow: self.workflow.clone(),
            lead: self.lead.clone(),
            step: self.step.clone(),
            subject: self.subject.clone(),
            envelope_from: self.envelope_from.clone(),
            envelope_to: self.envelope_to.clone(),
            queued_at: self.queued_at,
            not_before: self.not_before,
            attempts: self.attempts,
            eml: Vec::new(),
        }
    }
}
