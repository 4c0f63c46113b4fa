//! `nurture status [--format table|json] [--next N]`: what the store says about each workflow,
//! the next enrollments due, and how many leads, contacts and suppressed addresses it holds.
//!
//! This module owns the counting (one pass over each store tree) and both renderings. It only
//! reads the store; the workflows folder is loaded only for the names of the workflows, so a
//! workflow with errors never stops `status`.
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::{Cli, CliError, ExitCode, Project};
use crate::diagnostic::Severity;
use crate::engine::Status;
use crate::lead::Stage;
use crate::store::{EventKind, MessageRecord, MessageState, Store, StoreError};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// `table` for people; `json` for scripts, with stable field names.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// How many of the next enrollments due to list.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub next: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// The table lists this many uncertain emails by name; the count covers them all.
const UNCERTAIN_LISTED: usize = 10;

pub fn run(cli: &Cli, args: &StatusArgs) -> Result<ExitCode, CliError> {
    let (_config, store) = cli.open_store()?;
    let project = Project::load(std::slice::from_ref(&cli.workflows), &cli.templates);
    let errors = project.count(Severity::Error);
    if errors > 0 {
        // Stderr, so the JSON on stdout stays parseable.
        eprintln!(
            "warning: the workflows or templates have {errors} error{}: a workflow that did not \
             compile shows as not loaded, or not at all if the store has no enrollment in it; \
             run `nurture check`",
            super::check::plural(errors)
        );
    }
    let names: Vec<String> = project.workflows.iter().map(|w| w.name.clone()).collect();
    let report = scan(&store, &names, args.next).map_err(|e| CliError::Input(e.to_string()))?;
    let text = match args.format {
        Format::Table => table(&report, Utc::now(), &cli.workflows.display().to_string()),
        Format::Json => {
            let mut json = serde_json::to_string_pretty(&report)
                .map_err(|e| CliError::Input(format!("cannot write the report as JSON: {e}")))?;
            json.push('\n');
            json
        }
    };
    let mut stdout = std::io::stdout().lock();
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
}

#[derive(Debug, Serialize)]
struct Due {
    at: DateTime<Utc>,
    workflow: String,
    lead: String,
}

/// Counts everything with one sequential pass over each tree (enrollments, messages, outbox,
/// events, leads) and no per-lead lookups: at a million enrollments this is a few seconds,
/// fine for a command a person runs, and it needs no counters the daemon would have to keep
/// in step. Memory is one entry per workflow.
fn scan(store: &Store, loaded: &[String], next: usize) -> Result<Report, StoreError> {
    let mut workflows: BTreeMap<String, WorkflowStatus> = loaded
        .iter()
        .map(|name| {
            let status = WorkflowStatus {
                name: name.clone(),
                loaded: true,
                ..WorkflowStatus::default()
            };
            (name.clone(), status)
        })
        .collect();

    for enrollment in store.enrollments() {
        let enrollment = enrollment?;
        let counts = slot(&mut workflows, &enrollment.workflow);
        counts.enrolled += 1;
        match &enrollment.status {
            Status::Active => counts.active += 1,
            Status::Completed => counts.completed += 1,
            Status::Exited(reason) => *counts.exited.entry(reason_key(reason)).or_default() += 1,
        }
        counts.replies += u64::from(enrollment.facts.replied);
        counts.auto_replies += u64::from(enrollment.facts.auto_replied);
    }

    let mut uncertain = Vec::new();
    for message in store.messages() {
        let message = message?;
        let counts = slot(&mut workflows, &message.workflow);
        match message.state {
            MessageState::Sent => counts.sent += 1,
            MessageState::Failed => counts.failed += 1,
            MessageState::Uncertain => {
                counts.uncertain += 1;
                if uncertain.len() < UNCERTAIN_LISTED {
                    uncertain.push(message);
                }
            }
        }
    }

    for email in store.outbox() {
        slot(&mut workflows, &email?.workflow).queued += 1;
    }

    // The journal is keyed lead by lead, so "once per lead" only needs the workflows that
    // promoted the current lead: a lead promoted to contact, then to customer, counts once.
    let mut lead = String::new();
    let mut promoted_by: BTreeSet<String> = BTreeSet::new();
    for entry in store.all_events() {
        let (email, event) = entry?;
        let (EventKind::Promoted { .. }, Some(workflow)) = (&event.kind, event.workflow) else {
            continue;
        };
        if email != lead {
            lead = email;
            promoted_by.clear();
        }
        if !promoted_by.contains(&workflow) {
            slot(&mut workflows, &workflow).promoted += 1;
            promoted_by.insert(workflow);
        }
    }

    let (mut leads, mut contacts, mut suppressed) = (0, 0, 0);
    for person in store.leads() {
        let person = person?;
        leads += 1;
        contacts += u64::from(person.stage >= Stage::Contact);
        suppressed += u64::from(person.is_suppressed());
    }

    let mut workflows: Vec<WorkflowStatus> = workflows.into_values().collect();
    for counts in &mut workflows {
        counts.contact_rate = rate(counts.promoted, counts.enrolled);
    }
    let next = store
        .upcoming(next)?
        .into_iter()
        .map(|(at, workflow, lead)| Due { at, workflow, lead })
        .collect();
    Ok(Report {
        workflows,
        next,
        leads,
        contacts,
        suppressed,
        uncertain,
    })
}

/// The counts for `name`, created (as not loaded) the first time the store mentions a workflow
/// the project does not have.
fn slot<'a>(
    workflows: &'a mut BTreeMap<String, WorkflowStatus>,
    name: &str,
) -> &'a mut WorkflowStatus {
    workflows
        .entry(name.to_string())
        .or_insert_with(|| WorkflowStatus {
            name: name.to_string(),
            ..WorkflowStatus::default()
        })
}

/// The reason's snake_case name, as the store writes it. Taken from serde rather than a match
/// so a new reason needs no change here; `step_removed` carries the step, dropped to group.
fn reason_key(reason: &crate::engine::ExitReason) -> String {
    match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(serde_json::Value::Object(map)) if map.len() == 1 => map
            .into_iter()
            .next()
            .map(|(name, _)| name)
            .unwrap_or_default(),
        _ => reason.to_string(),
    }
}

/// `promoted` / `enrolled` in percent, rounded to one decimal; none without enrollments.
fn rate(promoted: u64, enrolled: u64) -> Option<f64> {
    (enrolled > 0).then(|| (promoted as f64 * 1000.0 / enrolled as f64).round() / 10.0)
}

fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The human report: the aligned table, uncertain emails, exits by reason, the next due, totals.
fn table(report: &Report, now: DateTime<Utc>, workflows_dir: &str) -> String {
    const HEADERS: [&str; 13] = [
        "workflow",
        "enrolled",
        "active",
        "completed",
        "exited",
        "sent",
        "failed",
        "uncertain",
        "queued",
        "replies",
        "auto-replies",
        "promoted",
        "contact rate",
    ];
    let rows: Vec<[String; 13]> = report
        .workflows
        .iter()
        .map(|w| {
            let name = if w.loaded {
                w.name.clone()
            } else {
                format!("{}*", w.name)
            };
            let rate = w
                .contact_rate
                .map_or_else(|| "–".to_string(), |rate| format!("{rate:.1}%"));
            [
                name,
                w.enrolled.to_string(),
                w.active.to_string(),
                w.completed.to_string(),
                w.exited_total().to_string(),
                w.sent.to_string(),
                w.failed.to_string(),
                w.uncertain.to_string(),
                w.queued.to_string(),
                w.replies.to_string(),
                w.auto_replies.to_string(),
                w.promoted.to_string(),
                rate,
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|header| header.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (column, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let pad = " ".repeat(width - cell.chars().count());
            // Names read left to right; numbers line up on their last digit.
            if column == 0 {
                let _ = write!(text, "{cell}{pad}");
            } else {
                let _ = write!(text, "  {pad}{cell}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&HEADERS);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    if report.workflows.iter().any(|w| !w.loaded) {
        let _ = writeln!(
            out,
            "* not loaded: the store has enrollments in this workflow, but no workflow of that \
             name compiled from {workflows_dir} (deleted, renamed, or its file has errors: run \
             `nurture check`)"
        );
    }

    let uncertain: u64 = report.workflows.iter().map(|w| w.uncertain).sum();
    if uncertain > 0 {
        let (emails, them, they) = if uncertain == 1 {
            ("email is", "it", "it")
        } else {
            ("emails are", "them", "they")
        };
        let _ = writeln!(
            out,
            "\nwarning: {uncertain} {emails} uncertain: the daemon stopped while handing {them} \
             to the transport, so {they} may or may not have left; nurture does not send {them} \
             again by itself, the mail server's log tells whether {they} left:"
        );
        for message in &report.uncertain {
            let _ = writeln!(
                out,
                "  {}  {}  {}  step {}  {}",
                utc(message.at),
                message.workflow,
                message.lead,
                message.step,
                message.message_id
            );
        }
        let more = uncertain - report.uncertain.len() as u64;
        if more > 0 {
            let _ = writeln!(out, "  and {more} more");
        }
    }

    let exits: Vec<&WorkflowStatus> = report
        .workflows
        .iter()
        .filter(|w| !w.exited.is_empty())
        .collect();
    if !exits.is_empty() {
        out.push_str("\nexited, by reason:\n");
        for w in exits {
            let reasons: Vec<String> = w
                .exited
                .iter()
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            let _ = writeln!(out, "  {}: {}", w.name, reasons.join(", "));
        }
    }

    out.push_str("\nnext due:\n");
    if report.next.is_empty() {
        out.push_str("  nothing is scheduled\n");
    }
    let workflow_width = report
        .next
        .iter()
        .map(|due| due.workflow.chars().count())
        .max()
        .unwrap_or(0);
    for due in &report.next {
        // The daemon holds the store while it runs, so a past time here means it is stopped.
        let late = if due.at <= now { "  overdue" } else { "" };
        let pad = " ".repeat(workflow_width - due.workflow.chars().count());
        let _ = writeln!(
            out,
            "  {}  {}{pad}  {}{late}",
            utc(due.at),
            due.workflow,
            due.lead
        );
    }

    let _ = writeln!(
        out,
        "\n{} lead{} in the store, {} contact{} (stage contact or customer), {} suppressed",
        report.leads,
        super::check::plural(report.leads as usize),
        report.contacts,
        super::check::plural(report.contacts as usize),
        report.suppressed
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ExitReason;

    #[test]
    fn rate_has_one_decimal_and_none_without_enrollments() {
        assert_eq!(rate(1, 3), Some(33.3));
        assert_eq!(rate(2, 3), Some(66.7));
        assert_eq!(rate(0, 4), Some(0.0));
        assert_eq!(rate(0, 0), None);
    }

    #[test]
    fn reason_keys_are_snake_case_and_group_removed_steps() {
        assert_eq!(reason_key(&ExitReason::AutoReplied), "auto_replied");
        assert_eq!(
            reason_key(&ExitReason::StepRemoved("nudge".into())),
            "step_removed"
        );
    }
}
