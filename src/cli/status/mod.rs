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
//!   - `sent`, `failed`, `uncertain`: emails by outcome; `uncertain` ones were being handed to
//!     the transport when the daemon stopped, so nobody knows whether they left;
//!   - `queued`: emails waiting in the outbox;
//!   - `replies`, `auto_replies`: enrollments that saw a human reply, an auto-reply;
//!   - `promoted`: leads promoted (to contact or customer) by this workflow, each counted once;
//!   - `contact_rate`: `promoted` / `enrolled` in percent, one decimal; null with no enrollment.
//! - `next`: the earliest due enrollments, earliest first: `{ "at", "workflow", "lead" }`, with
//!   `at` in RFC 3339 UTC. Due is when the engine next runs the enrollment: usually a send.
//! - `leads`: every person in the store, whatever their stage; `contacts`: those at stage
//!   contact or customer; `suppressed`: addresses that must not be mailed.

mod scan;
mod table;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::session::{Output, Session};
use super::{CliError, ExitCode};
use crate::diagnostic::Severity;
use crate::store::MessageRecord;

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
    next: Vec<Due>,
    leads: u64,
    contacts: u64,
    suppressed: u64,
    /// The first few uncertain emails, for the table to name; JSON has only the counts.
    #[serde(skip)]
    uncertain: Vec<MessageRecord>,
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
    queued: u64,
    replies: u64,
    auto_replies: u64,
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
        self.queued += part.queued;
        self.replies += part.replies;
        self.auto_replies += part.auto_replies;
        self.promoted += part.promoted;
    }
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
}
