//! `nurture status [--format table|json] [--next N] [--recount]`: what the store says about each
//! workflow, the next enrollments due, and how many leads, contacts and suppressed addresses it
//! holds.
//!
//! This module owns the command and the report's shape; `report` makes it from the figures the
//! store keeps as counters (milliseconds, whatever the number of leads: [`report::report`] is
//! what other views of the same figures call), `table` renders it for people. The workflows
//! folder is loaded only for the names of the workflows, so a workflow with errors never stops
//! `status`.
//!
//! With no daemon running, `status` does not even open the store when it can help it: every
//! nurture process that closes the store leaves its counters and first enrollments due in a
//! small file beside it ([`crate::store::snapshot`]), which is exact as long as it is there (an
//! open removes it; a crash leaves none, and then `status` opens the store as before).
//!
//! `--recount` counts every figure again from the records (seconds per million leads), reports
//! from that count, says on standard error whether the counters agreed, and rewrites them when
//! they did not. It writes, so with a daemon running it runs in the daemon's work loop, and the
//! daemon's batches wait while it counts.
//!
//! JSON (`--format json`), one object; the field names are stable, scripts may rely on them:
//! - `workflows`: one object per workflow, sorted by name: every workflow that compiled from the
//!   workflows folder, and every workflow the store has enrollments for:
//!   - `name`;
//!   - `loaded`: false when the store has enrollments for a workflow that did not compile from
//!     the workflows folder (deleted, renamed, or its file has errors);
//!   - `enrolled`: enrollments (one per lead); `active`, `completed`;
//!   - `emailed`: enrollments that were sent at least one email (counted when the engine hands
//!     it on; an email that failed for good is taken back);
//!   - `engaged`: enrollments whose lead showed interest: clicked a link of the workflow, or
//!     reported an event through the API (`POST /v1/leads/{email}/events`) at or after
//!     enrolling;
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
//!   - `contact_rate`: `promoted` / `enrolled` in percent, one decimal; null with no enrollment;
//!   - `steps`: an object by step name (steps with nothing to count are absent): `active`,
//!     `completed` and `exited` (by reason) count the enrollments standing in the step now;
//!     `sent`, `failed`, `uncertain`, `dropped`, `queued` and `in_flight` the step's emails.
//!     Summed over the steps they give the workflow's figures of the same names. `opens` and
//!     `clicks` are people's opens and clicks of the step's email (tracked workflows:
//!     `track opens`, `track clicks`); what image proxies and link scanners fetched is counted
//!     apart, as `machine_opens` and `machine_clicks`. `replies` counts the enrollments whose
//!     lead first replied while standing in the step (enrollments that replied before nurture
//!     kept the step count only in the workflow's `replies`).
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

pub mod report;
mod table;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::session::{Output, Session};
use super::{CliError, ExitCode};
use crate::diagnostic::Severity;
use crate::project::Project;
use crate::store::{Counters, MessageRecord, OutboxEmail, Recounted, StepCounts};

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct StatusArgs {
    /// `table` for people; `json` for scripts, with stable field names.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// How many of the next enrollments due to list.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub next: usize,
    /// Count every figure again from the records (seconds per million leads) and repair the
    /// counters `status` reads if they differ.
    #[arg(long)]
    #[serde(default)]
    pub recount: bool,
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
    warn_of_errors(project, out);
    let failed = |e: crate::store::StoreError| CliError::Input(e.to_string());
    let report = if args.recount {
        let recounted = store.recount(true).map_err(failed)?;
        out.note(recount_note(&recounted));
        let upcoming = store.upcoming(args.next).map_err(failed)?;
        report::report_of(recounted.counted, upcoming, &names(project))
    } else {
        report(store, project, args.next).map_err(failed)?
    };
    write(args, &report, session.now, &session.workflows_dir, out)
}

/// What `status` reports while no process holds the store: the counters and first
/// enrollments due that its last close left ([`crate::store::snapshot`]).
pub struct Closed {
    pub args: StatusArgs,
    pub counters: Counters,
    pub upcoming: Vec<(DateTime<Utc>, String, String)>,
}

/// `nurture status` from `closed`: the same report, without opening the store.
pub fn from_snapshot(
    closed: Closed,
    workflows: &std::path::Path,
    templates: &std::path::Path,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let project = Project::load(&[workflows.to_path_buf()], templates);
    warn_of_errors(&project, out);
    let report = report::report_of(closed.counters, closed.upcoming, &names(&project));
    let workflows_dir = workflows.display().to_string();
    write(&closed.args, &report, Utc::now(), &workflows_dir, out)
}

/// Says on standard error (so that JSON on stdout stays parseable) that some workflows did not
/// compile, and what that does to the report.
fn warn_of_errors(project: &Project, out: &mut Output<'_>) {
    let errors = project.count(Severity::Error);
    if errors > 0 {
        out.note(format!(
            "warning: the workflows or templates have {errors} error{}: a workflow that did not \
             compile shows as not loaded, or not at all if the store has no enrollment in it; \
             run `nurture check`",
            super::check::plural(errors)
        ));
    }
}

/// Writes `report` in the format asked for.
fn write(
    args: &StatusArgs,
    report: &Report,
    now: DateTime<Utc>,
    workflows_dir: &str,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let text = match args.format {
        Format::Table => table::table(report, now, workflows_dir),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(report)
                .map_err(|e| CliError::Input(format!("cannot write the report as JSON: {e}")))?;
            json.push('\n');
            json
        }
    };
    super::write_output(&mut *out.out, &text)?;
    Ok(ExitCode::Success)
}

/// The report on `store`, with a row for every workflow of `project` and every other one the
/// store counts, and the next `next` enrollments due: what `--format json` writes, and what
/// other views of the same figures (the status page) show. From the counters: milliseconds at
/// a million leads.
pub fn report(
    store: &crate::store::Store,
    project: &crate::project::Project,
    next: usize,
) -> Result<Report, crate::store::StoreError> {
    report::report(store, &names(project), next)
}

/// The names of the workflows that compiled.
fn names(project: &crate::project::Project) -> Vec<String> {
    project.workflows.iter().map(|w| w.name.clone()).collect()
}

/// What `--recount` tells on standard error: whether the counters agreed with the count, and
/// what was repaired.
fn recount_note(recounted: &Recounted) -> String {
    if recounted.differences.is_empty() && recounted.index_differences == 0 {
        return "recount: the counters agree with a count of every record".to_string();
    }
    let mut note = format!(
        "recount: the counters differed from a count of every record in {} figure{} and {}          index entr{}",
        recounted.differences.len(),
        super::check::plural(recounted.differences.len()),
        recounted.index_differences,
        if recounted.index_differences == 1 {
            "y"
        } else {
            "ies"
        },
    );
    for (figure, kept, counted) in recounted.differences.iter().take(RECOUNT_LISTED) {
        note.push_str(&format!("\n  {figure}: kept {kept}, counted {counted}"));
    }
    if recounted.differences.len() > RECOUNT_LISTED {
        note.push_str(&format!(
            "\n  and {} more",
            recounted.differences.len() - RECOUNT_LISTED
        ));
    }
    if recounted.repaired {
        note.push_str(
            "\nthe counters were rewritten from the count; the report below is the count",
        );
    }
    note
}

/// Differences `--recount` lists one by one; the count covers all.
const RECOUNT_LISTED: usize = 20;

/// What `nurture status` shows (its JSON is the serialization of this; see the module header).
#[derive(Debug, Serialize)]
pub struct Report {
    pub workflows: Vec<WorkflowStatus>,
    pub next: Vec<Due>,
    pub leads: u64,
    pub contacts: u64,
    pub suppressed: u64,
    pub complaints: u64,
    pub complaint_rate: Option<f64>,
    pub sender_side_rejections: u64,
    pub uncertain_emails: Vec<Email>,
    pub in_flight_emails: Vec<Email>,
}

/// One email that needs a look, as the report names it.
#[derive(Debug, Serialize)]
pub struct Email {
    pub message_id: String,
    pub workflow: String,
    pub lead: String,
    pub step: String,
    pub subject: String,
    /// When it was found uncertain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// When it was planned (an email in flight).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<DateTime<Utc>>,
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

/// One workflow's row.
#[derive(Debug, Default, Serialize)]
pub struct WorkflowStatus {
    pub name: String,
    pub loaded: bool,
    pub enrolled: u64,
    pub active: u64,
    pub completed: u64,
    pub exited: BTreeMap<String, u64>,
    pub emailed: u64,
    pub engaged: u64,
    pub sent: u64,
    pub failed: u64,
    pub uncertain: u64,
    pub dropped: u64,
    pub queued: u64,
    pub in_flight: u64,
    pub replies: u64,
    pub auto_replies: u64,
    pub complaints: u64,
    pub complaint_rate: Option<f64>,
    pub sender_side_rejections: u64,
    pub promoted: u64,
    pub contact_rate: Option<f64>,
    pub steps: BTreeMap<String, StepStatus>,
}

impl WorkflowStatus {
    fn named(name: &str, loaded: bool) -> WorkflowStatus {
        WorkflowStatus {
            name: name.to_string(),
            loaded,
            ..WorkflowStatus::default()
        }
    }

    fn exited_total(&self) -> u64 {
        self.exited.values().sum()
    }
}

/// One step's figures: where enrollments stand, and the step's emails.
#[derive(Debug, Default, Serialize)]
pub struct StepStatus {
    pub active: u64,
    pub completed: u64,
    pub exited: BTreeMap<String, u64>,
    pub sent: u64,
    pub failed: u64,
    pub uncertain: u64,
    pub dropped: u64,
    pub queued: u64,
    pub in_flight: u64,
    /// A person's opens and clicks of the step's email.
    pub opens: u64,
    pub clicks: u64,
    /// What machines fetched (image proxies, link scanners): not counted above.
    pub machine_opens: u64,
    pub machine_clicks: u64,
    /// Enrollments whose lead first replied while standing in this step (the step's email is
    /// the one answered, or an earlier one still unanswered).
    pub replies: u64,
}

impl From<&StepCounts> for StepStatus {
    fn from(counts: &StepCounts) -> StepStatus {
        StepStatus {
            active: counts.active,
            completed: counts.completed,
            exited: counts.exited.clone(),
            sent: counts.sent,
            failed: counts.failed,
            uncertain: counts.uncertain,
            dropped: counts.dropped,
            queued: counts.queued,
            in_flight: 0,
            opens: counts.opens,
            clicks: counts.clicks,
            machine_opens: counts.machine_opens,
            machine_clicks: counts.machine_clicks,
            replies: counts.replies,
        }
    }
}

/// An enrollment due soon.
#[derive(Debug, Serialize)]
pub struct Due {
    pub at: DateTime<Utc>,
    pub workflow: String,
    pub lead: String,
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
