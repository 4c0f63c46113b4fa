//! `nurture status [--format table|json] [--next N]`: what the store says about each workflow,
//! the next enrollments due, and how many leads, contacts and suppressed addresses it holds.
//!
//! This module owns the command and the report's shape; `scan` counts (one pass over each store
//! tree), `table` renders it for people. It only reads the store; the workflows folder is loaded
//! only for the names of the workflows, so a workflow with errors never stops `status`.
//!
//! JSON (`--format json`), one object; the field names are stable, scripts may rely on them:
//! - `workflows`: one object per workflow, sorted by name: every workflow that compiled from the
//!   workflows folder, and every workflow the store has enrollments for:
//!   - `name`;
//!   - `loaded`: false when the store has enrollments for a workflow that did not compile from
//!     the workflows folder (deleted, renamed, or its file has errors);
//!   - `enrolled`: enrollments (one per lead); `active`, `completed`;
//!   - `exited`: enrollments that ended early, by reason (`replied`, `bounced`, `step_removed`…:
//!     the snake_case name of the engine's `ExitReason`); reasons with no exit are absent;
//!   - `sent`, `failed`, `uncertain`, `dropped`: emails by outcome; `failed` ones never left
//!     (the template could not render for the lead, the address cannot be sent to, the server
//!     refused them for good); `uncertain` ones were being handed to an SMTP server when the
//!     daemon stopped, so nobody knows whether they left (`nurture outbox` resends or drops
//!     them); `dropped` ones were uncertain and the operator chose not to send them again;
//!   - `queued`: emails waiting in the outbox;
//!   - `in_flight`: emails listed as being handed to the transport: while the daemon is
//!     stopped, those a crash caught (settled when it starts again);
//!   - `replies`, `auto_replies`: enrollments that saw a human reply, an auto-reply;
//!   - `complaints`: leads who reported an email of this workflow as spam (an ARF feedback
//!     report), each counted once however many reports came;
//!   - `complaint_rate`: `complaints` / `sent` in percent, two decimals; null with nothing sent.
//!     Above 0.1 % the table warns (Gmail and Yahoo refuse or filter a sender past 0.3 %);
//!   - `sender_side_rejections`: emails the receiving server refused for a reason on the
//!     sender's side (blocked, spam, policy, authentication, reputation): the sender has a
//!     deliverability problem; the lead is left alone;
//!   - `promoted`: leads promoted (to contact or customer) by this workflow, each counted once;
//!   - `contact_rate`: `promoted` / `enrolled` in percent, one decimal; null with no enrollment.
//! - `steps`: one object per workflow step that sent email, sorted by workflow then step:
//!   `{ "workflow", "step", "sent", "opens", "clicks", "machine_opens", "machine_clicks" }`:
//!   `opens` and `clicks` are people's (tracked workflows: `track opens`, `track clicks`);
//!   what image proxies and link scanners fetched is counted apart, as `machine_…`.
//! - `next`: the earliest due enrollments, earliest first: `{ "at", "workflow", "lead" }`, with
//!   `at` in RFC 3339 UTC. Due is when the engine next runs the enrollment: usually a send.
//! - `leads`: every person in the store, whatever their stage; `contacts`: those at stage
//!   contact or customer; `suppressed`: addresses that must not be mailed.
//! - `complaints`, `complaint_rate`, `sender_side_rejections`: the same over every workflow,
//!   plus those the journal does not trace to a workflow (a complaint or refusal that named
//!   the lead's address but none of our emails).
//! - `uncertain_emails`, `in_flight_emails`: those emails one by one, as `{ "message_id",
//!   "workflow", "lead", "step", "subject" }` plus `at` (when it was found uncertain, RFC 3339
//!   UTC) or `queued_at` (when it was planned).

mod scan;
mod table;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::session::{Output, Session};
use super::{CliError, ExitCode};
use crate::diagnostic::Severity;
use crate::store::{MessageRecord, OutboxEmail};

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct StatusArgs {
    /// `table` for people; `json` for scripts, with stable field names.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// How many of the next enrollments due to list.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub next: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Table,
    Json,
}

pub fn run(
    args: &StatusArgs,
    session: &Session<'_>,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let store = session.store;
    let project = session.project();
    let errors = project.count(Severity::Error);
    if errors > 0 {
        // Stderr, so the JSON on stdout stays parseable.
        out.note(format!(
            "warning: the workflows or templates have {errors} error{}: a workflow that did not \
             compile shows as not loaded, or not at all if the store has no enrollment in it; \
             run `nurture check`",
            super::check::plural(errors)
        ));
    }
    let names: Vec<String> = project.workflows.iter().map(|w| w.name.clone()).collect();
    let report =
        scan::scan(store, &names, args.next).map_err(|e| CliError::Input(e.to_string()))?;
    let text = match args.format {
        Format::Table => table::table(&report, session.now, &session.workflows_dir),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(&report)
                .map_err(|e| CliError::Input(format!("cannot write the report as JSON: {e}")))?;
            json.push('\n');
            json
        }
    };
    let stdout = &mut *out.out;
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `nurture status | head` closing the pipe early is not a failure.
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Input(
            format!("cannot write to standard output: {error}"),
        )),
        _ => Ok(ExitCode::Success),
    }
}

#[derive(Debug, Serialize)]
struct Report {
    workflows: Vec<WorkflowStatus>,
    steps: Vec<StepStatus>,
    next: Vec<Due>,
    leads: u64,
    contacts: u64,
    suppressed: u64,
    complaints: u64,
    complaint_rate: Option<f64>,
    sender_side_rejections: u64,
    uncertain_emails: Vec<Email>,
    in_flight_emails: Vec<Email>,
}

/// One email that needs a look, as the report names it.
#[derive(Debug, Serialize)]
struct Email {
    message_id: String,
    workflow: String,
    lead: String,
    step: String,
    subject: String,
    /// When it was found uncertain.
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<DateTime<Utc>>,
    /// When it was planned (an email in flight).
    #[serde(skip_serializing_if = "Option::is_none")]
    queued_at: Option<DateTime<Utc>>,
}

impl From<MessageRecord> for Email {
    fn from(record: MessageRecord) -> Email {
        Email {
            message_id: record.message_id,
            workflow: record.workflow,
            lead: record.lead,
            step: record.step,
            subject: record.subject,
            at: Some(record.at),
            queued_at: None,
        }
    }
}

impl From<OutboxEmail> for Email {
    fn from(email: OutboxEmail) -> Email {
        Email {
            message_id: email.message_id,
            workflow: email.workflow,
            lead: email.lead,
            step: email.step,
            subject: email.subject,
            at: None,
            queued_at: Some(email.queued_at),
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct WorkflowStatus {
    name: String,
    loaded: bool,
    enrolled: u64,
    active: u64,
    completed: u64,
    exited: BTreeMap<String, u64>,
    sent: u64,
    failed: u64,
    uncertain: u64,
    dropped: u64,
    queued: u64,
    in_flight: u64,
    replies: u64,
    auto_replies: u64,
    complaints: u64,
    complaint_rate: Option<f64>,
    sender_side_rejections: u64,
    promoted: u64,
    contact_rate: Option<f64>,
}

impl WorkflowStatus {
    fn exited_total(&self) -> u64 {
        self.exited.values().sum()
    }

    /// Adds the counts of `part`, which one tree's pass made for the same workflow.
    fn add(&mut self, part: WorkflowStatus) {
        self.enrolled += part.enrolled;
        self.active += part.active;
        self.completed += part.completed;
        for (reason, count) in part.exited {
            *self.exited.entry(reason).or_default() += count;
        }
        self.sent += part.sent;
        self.failed += part.failed;
        self.uncertain += part.uncertain;
        self.dropped += part.dropped;
        self.queued += part.queued;
        self.in_flight += part.in_flight;
        self.replies += part.replies;
        self.auto_replies += part.auto_replies;
        self.complaints += part.complaints;
        self.sender_side_rejections += part.sender_side_rejections;
        self.promoted += part.promoted;
    }
}

/// Sends and engagement of one step's email.
#[derive(Debug, Default, Serialize)]
struct StepStatus {
    workflow: String,
    step: String,
    sent: u64,
    /// A person's opens and clicks.
    opens: u64,
    clicks: u64,
    /// What machines fetched (image proxies, link scanners): not counted above.
    machine_opens: u64,
    machine_clicks: u64,
}

#[derive(Debug, Serialize)]
struct Due {
    at: DateTime<Utc>,
    workflow: String,
    lead: String,
}

/// `promoted` / `enrolled` in percent, rounded to one decimal; none without enrollments.
fn rate(promoted: u64, enrolled: u64) -> Option<f64> {
    (enrolled > 0).then(|| (promoted as f64 * 1000.0 / enrolled as f64).round() / 10.0)
}

/// `complaints` / `sent` in percent, rounded to two decimals (the limits that matter are
/// tenths of a percent); none with nothing sent.
fn complaint_rate(complaints: u64, sent: u64) -> Option<f64> {
    (sent > 0).then(|| (complaints as f64 * 10_000.0 / sent as f64).round() / 100.0)
}

/// Whether `complaints` for `sent` emails is above [`COMPLAINT_LIMIT_PER_MILLE`], compared exactly
/// (not on the rounded rate). Complaints with nothing sent are above any rate.
fn complaints_too_many(complaints: u64, sent: u64) -> bool {
    complaints > 0 && u128::from(complaints) * 1000 > u128::from(sent) * COMPLAINT_LIMIT_PER_MILLE
}

/// The complaint rate above which `status` warns, per mille: 0.1 %, a third of the 0.3 % past
/// which Gmail and Yahoo filter or refuse a bulk sender, so there is time to act.
const COMPLAINT_LIMIT_PER_MILLE: u128 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_has_one_decimal_and_none_without_enrollments() {
        assert_eq!(rate(1, 3), Some(33.3));
        assert_eq!(rate(2, 3), Some(66.7));
        assert_eq!(rate(0, 4), Some(0.0));
        assert_eq!(rate(0, 0), None);
    }

    #[test]
    fn complaint_rate_has_two_decimals_and_the_limit_is_exact() {
        assert_eq!(complaint_rate(1, 400), Some(0.25));
        assert_eq!(complaint_rate(1, 3000), Some(0.03));
        assert_eq!(complaint_rate(0, 0), None);
        assert!(!complaints_too_many(1, 1000), "0.1 % is not above 0.1 %");
        assert!(complaints_too_many(1, 999));
        assert!(!complaints_too_many(0, 0));
        assert!(complaints_too_many(1, 0));
    }
}
