//! The reference count: every figure of [`Counters`] read from the records themselves, one
//! sequential pass over each tree, with the index entries the counters would hold.
//!
//! It is what `nurture status` did before the counters existed, and now what builds them for an
//! older store and checks (and repairs) them on demand. In release, a store of 200,000
//! enrollments (400,000 emails, 1.1 million journal events) takes about 4 s on two cores, so a
//! million enrollments about 20 s; half of it is the journal, whose every event is decoded.
//! Each tree is counted on its own thread. Memory is one entry per workflow and step, plus the
//! index entries (one per lead promoted or complaining, one per uncertain email). The journal's
//! pass also counts the opens and clicks of tracked emails, per step (`EventKind::Engaged`).

use std::collections::{BTreeMap, BTreeSet};
use std::thread::ScopedJoinHandle;

use chrono::{DateTime, Utc};

use super::{
    Counters, Line, StepCounts, WorkflowCounts, complaint_mark, engaged, engaged_step, line,
    promotion_mark, reason_key, tracked_mark, uncertain_mark,
};
use crate::engine::Status;
use crate::lead::Stage;
use crate::store::EventKind;
use crate::store::keys::time_bytes;
use crate::store::{MessageRecord, MessageState, Store, StoreError};

type Workflows = BTreeMap<String, WorkflowCounts>;
/// Index entries: key → value (empty but for the latest reported event's time).
type Index = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every figure counted from the records (without the in-flight emails, which the counters do
/// not keep either), and the index entries that go with them.
pub fn recount(store: &Store) -> Result<(Counters, Index), StoreError> {
    let (enrollments, messages, journal, people) = std::thread::scope(|scope| {
        let enrollments = scope.spawn(|| count_enrollments(store));
        let messages = scope.spawn(|| count_messages(store));
        let journal = scope.spawn(|| count_journal(store));
        let people = count_people(store);
        (join(enrollments), join(messages), join(journal), people)
    });
    let mut counters = people?;
    let mut index = Index::new();
    let (messages, uncertain) = messages?;
    let (journal, untraced, marks, tracked) = journal?;
    counters.untraced_complaints = untraced.complaints;
    counters.untraced_sender_side_rejections = untraced.sender_side_rejections;
    index.extend(
        uncertain
            .iter()
            .map(|record| (uncertain_mark(&record.message_id), Vec::new())),
    );
    index.extend(marks.into_iter().map(|mark| (mark, Vec::new())));
    let reported = count_reported_engagement(store, &tracked)?;
    index.extend(
        tracked
            .iter()
            .map(|(lead, at)| (tracked_mark(lead), time_bytes(*at).to_vec())),
    );
    counters.uncertain = uncertain;
    for part in [enrollments?, messages, journal, reported] {
        for (name, counts) in part {
            add(counters.workflows.entry(name).or_default(), counts);
        }
    }
    Ok((counters, index))
}

/// A pass's result; a panic in a pass is a bug, so it goes on unwinding here.
fn join<T>(handle: ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Adds `part` (one pass's counts of a workflow) to `total`.
fn add(total: &mut WorkflowCounts, part: WorkflowCounts) {
    total.enrolled += part.enrolled;
    total.emailed += part.emailed;
    total.engaged += part.engaged;
    total.replies += part.replies;
    total.auto_replies += part.auto_replies;
    total.promoted += part.promoted;
    total.complaints += part.complaints;
    total.sender_side_rejections += part.sender_side_rejections;
    for (name, step) in part.steps {
        let into = total.steps.entry(name).or_default();
        into.active += step.active;
        into.completed += step.completed;
        for (reason, count) in step.exited {
            *into.exited.entry(reason).or_default() += count;
        }
        into.sent += step.sent;
        into.failed += step.failed;
        into.uncertain += step.uncertain;
        into.dropped += step.dropped;
        into.queued += step.queued;
        into.opens += step.opens;
        into.clicks += step.clicks;
        into.machine_opens += step.machine_opens;
        into.machine_clicks += step.machine_clicks;
        into.replies += step.replies;
    }
}

fn step<'a>(workflows: &'a mut Workflows, workflow: &str, step: &str) -> &'a mut StepCounts {
    workflow_counts(workflows, workflow)
        .steps
        .entry(step.to_string())
        .or_default()
}

fn workflow_counts<'a>(workflows: &'a mut Workflows, name: &str) -> &'a mut WorkflowCounts {
    if !workflows.contains_key(name) {
        workflows.insert(name.to_string(), WorkflowCounts::default());
    }
    workflows.get_mut(name).expect("inserted above")
}

/// Enrolled, where each stands (active, completed, exited by reason), replies, auto-replies.
fn count_enrollments(store: &Store) -> Result<Workflows, StoreError> {
    let mut workflows = Workflows::new();
    for enrollment in store.enrollments() {
        let enrollment = enrollment?;
        let counts = workflow_counts(&mut workflows, &enrollment.workflow);
        counts.enrolled += 1;
        counts.emailed += u64::from(!enrollment.facts.sent.is_empty());
        counts.engaged += u64::from(enrollment.facts.clicked);
        counts.replies += u64::from(enrollment.facts.replied);
        if let Some(step) = &enrollment.facts.replied_in {
            counts.steps.entry(step.clone()).or_default().replies += 1;
        }
        counts.auto_replies += u64::from(enrollment.facts.auto_replied);
        let place = step(
            &mut workflows,
            &enrollment.workflow,
            &enrollment.position.step,
        );
        match &enrollment.status {
            Status::Active => place.active += 1,
            Status::Completed => place.completed += 1,
            Status::Exited(reason) => *place.exited.entry(reason_key(reason)).or_default() += 1,
        }
    }
    Ok(workflows)
}

/// Enrollments engaged by an event their lead reported through the API (a journal `tracked`
/// line, which names no workflow) at or after enrolling, and not already by a click. `tracked`
/// holds each such lead's latest event, so only those leads are read again.
fn count_reported_engagement(
    store: &Store,
    tracked: &[(String, DateTime<Utc>)],
) -> Result<Workflows, StoreError> {
    let mut workflows = Workflows::new();
    for (lead, latest) in tracked {
        for enrollment in store.enrollments_of(lead)? {
            let facts = &enrollment.facts;
            if !facts.clicked && engaged(false, enrollment.enrolled_at, Some(*latest)) {
                workflow_counts(&mut workflows, &enrollment.workflow).engaged += 1;
            }
        }
    }
    Ok(workflows)
}

/// Emails by outcome (the uncertain ones kept whole), and the outbox.
fn count_messages(store: &Store) -> Result<(Workflows, Vec<MessageRecord>), StoreError> {
    let mut workflows = Workflows::new();
    let mut uncertain = Vec::new();
    for message in store.messages() {
        let message = message?;
        let counts = step(&mut workflows, &message.workflow, &message.step);
        match message.state {
            MessageState::Sent => counts.sent += 1,
            MessageState::Failed => counts.failed += 1,
            MessageState::Uncertain => {
                counts.uncertain += 1;
                uncertain.push(message);
            }
            MessageState::Dropped => counts.dropped += 1,
        }
    }
    for email in store.outbox() {
        let email = email?;
        step(&mut workflows, &email.workflow, &email.step).queued += 1;
    }
    Ok((workflows, uncertain))
}

/// From the journal, per workflow: leads promoted, once per lead (a lead promoted to contact,
/// then to customer by the same workflow counts once); spam complaints, once per lead (a
/// feedback loop may report the same email twice); sender-side rejections, each one. The
/// journal is keyed lead by lead, so that only needs what the current lead did. Complaints and
/// rejections whose line names no workflow (the report named the address, not one of our
/// emails) are counted apart, in the returned totals. Also the latest event each lead reported
/// through the API, for [`count_reported_engagement`].
fn count_journal(store: &Store) -> Result<Journal, StoreError> {
    let mut workflows = Workflows::new();
    let mut untraced = WorkflowCounts::default();
    let mut marks = BTreeSet::new();
    let mut tracked: Vec<(String, DateTime<Utc>)> = Vec::new();
    let mut lead = String::new();
    let mut promoted_by: BTreeSet<String> = BTreeSet::new();
    let mut complained_of: BTreeSet<Option<String>> = BTreeSet::new();
    for entry in store.all_events() {
        let (email, event) = entry?;
        if let EventKind::Tracked { .. } = event.kind {
            // The journal is in order lead by lead: one entry per lead, at its latest.
            match tracked.last_mut() {
                Some((seen, at)) if *seen == email => *at = (*at).max(event.at),
                _ => tracked.push((email, event.at)),
            }
            continue;
        }
        let Some(what) = line(&event) else {
            continue;
        };
        if email != lead {
            lead = email;
            promoted_by.clear();
            complained_of.clear();
        }
        if let Line::Engaged(figure) = what {
            if let (Some(workflow), Some(name)) = (&event.workflow, engaged_step(&event))
                && let Some(count) = step(&mut workflows, workflow, name).figure(figure)
            {
                *count += 1;
            }
            continue;
        }
        let workflow = event.workflow;
        match what {
            Line::Promoted => {
                // A promotion by hand (`nurture leads set`) is no workflow's doing.
                if let Some(workflow) = workflow
                    && !promoted_by.contains(&workflow)
                {
                    workflow_counts(&mut workflows, &workflow).promoted += 1;
                    marks.insert(promotion_mark(&lead, &workflow));
                    promoted_by.insert(workflow);
                }
            }
            Line::Complaint => {
                if !complained_of.contains(&workflow) {
                    match &workflow {
                        Some(name) => workflow_counts(&mut workflows, name).complaints += 1,
                        None => untraced.complaints += 1,
                    }
                    marks.insert(complaint_mark(&lead, workflow.as_deref()));
                    complained_of.insert(workflow);
                }
            }
            Line::SenderSide => match &workflow {
                Some(name) => workflow_counts(&mut workflows, name).sender_side_rejections += 1,
                None => untraced.sender_side_rejections += 1,
            },
            // Counted above.
            Line::Engaged(_) => {}
        }
    }
    Ok((workflows, untraced, marks, tracked))
}

/// What the journal's pass gives: counts by workflow, those traced to none, the marks of the
/// promotions and complaints counted, and each reporting lead's latest event.
type Journal = (
    Workflows,
    WorkflowCounts,
    BTreeSet<Vec<u8>>,
    Vec<(String, DateTime<Utc>)>,
);

/// Everyone in the store, those at stage contact or customer, and the suppressed.
fn count_people(store: &Store) -> Result<Counters, StoreError> {
    let mut counters = Counters::default();
    for person in store.leads() {
        let person = person?;
        counters.leads += 1;
        counters.contacts += u64::from(person.stage >= Stage::Contact);
        counters.suppressed += u64::from(person.is_suppressed());
    }
    Ok(counters)
}
