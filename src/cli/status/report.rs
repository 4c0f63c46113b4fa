//! The [`Report`] of `nurture status`, made from the figures the store keeps as counters
//! ([`crate::store::counters`]): its cost grows with the workflows and their steps, not with the
//! leads (a few milliseconds at a million leads).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{Due, Email, Report, StepStatus, WorkflowStatus, complaint_rate, rate};
use crate::store::{Counters, Store, StoreError};

/// The report on `store`, with a row for every workflow in `loaded` (the names that compiled
/// from the workflows folder) and for every other workflow the store counts, and the next
/// `next` enrollments due.
pub fn report(store: &Store, loaded: &[String], next: usize) -> Result<Report, StoreError> {
    Ok(report_of(store.counters()?, store.upcoming(next)?, loaded))
}

/// The report on `counters` (kept, counted again by `--recount`, or left by the store's last
/// close) with `upcoming` as the next enrollments due.
pub(super) fn report_of(
    counters: Counters,
    upcoming: Vec<(DateTime<Utc>, String, String)>,
    loaded: &[String],
) -> Report {
    let mut workflows: BTreeMap<String, WorkflowStatus> = loaded
        .iter()
        .map(|name| (name.clone(), WorkflowStatus::named(name, true)))
        .collect();
    for (name, counts) in &counters.workflows {
        let status = workflows
            .entry(name.clone())
            .or_insert_with(|| WorkflowStatus::named(name, false));
        status.enrolled = counts.enrolled;
        status.active = counts.total(|step| step.active);
        status.completed = counts.total(|step| step.completed);
        status.exited = counts.exited();
        status.emailed = counts.emailed;
        status.engaged = counts.engaged;
        status.sent = counts.total(|step| step.sent);
        status.failed = counts.total(|step| step.failed);
        status.uncertain = counts.total(|step| step.uncertain);
        status.dropped = counts.total(|step| step.dropped);
        status.queued = counts.total(|step| step.queued);
        status.replies = counts.replies;
        status.auto_replies = counts.auto_replies;
        status.complaints = counts.complaints;
        status.sender_side_rejections = counts.sender_side_rejections;
        status.promoted = counts.promoted;
        status.steps = counts
            .steps
            .iter()
            .map(|(step, figures)| (step.clone(), StepStatus::from(figures)))
            .collect();
    }
    // Emails in flight are not kept as counters: a crash leaves a batch or two at most.
    for email in &counters.in_flight {
        let status = workflows
            .entry(email.workflow.clone())
            .or_insert_with(|| WorkflowStatus::named(&email.workflow, false));
        status.in_flight += 1;
        status
            .steps
            .entry(email.step.clone())
            .or_default()
            .in_flight += 1;
    }
    let mut workflows: Vec<WorkflowStatus> = workflows.into_values().collect();
    let (mut sent, mut complaints, mut sender_side) = (
        0,
        counters.untraced_complaints,
        counters.untraced_sender_side_rejections,
    );
    for status in &mut workflows {
        status.contact_rate = rate(status.promoted, status.enrolled);
        status.complaint_rate = complaint_rate(status.complaints, status.sent);
        sent += status.sent;
        complaints += status.complaints;
        sender_side += status.sender_side_rejections;
    }
    let next = upcoming
        .into_iter()
        .map(|(at, workflow, lead)| Due { at, workflow, lead })
        .collect();
    Report {
        workflows,
        next,
        leads: counters.leads,
        contacts: counters.contacts,
        suppressed: counters.suppressed,
        complaints,
        complaint_rate: complaint_rate(complaints, sent),
        sender_side_rejections: sender_side,
        uncertain_emails: counters.uncertain.into_iter().map(Email::from).collect(),
        in_flight_emails: counters.in_flight.into_iter().map(Email::from).collect(),
    }
}
