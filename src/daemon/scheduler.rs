//! Due enrollments through the engine: read what is due from the `due` index, run `advance`,
//! render each email, and write the new state and the outbox entries as one batch.
//!
//! The emails a batch plans are listed, with their final Message-IDs, as in flight in the same
//! transaction that moves their enrollments past the `send`; the caller flushes that and hands
//! them to the transport ([`super::sender::deliver`]). A crash before the transaction is durable
//! plans the same emails again (same Message-IDs) on restart; a crash after it leaves them
//! listed in flight, reported as uncertain, never sent twice. The happy path writes each step
//! five times (enrollment, due index out and in, sent record, journal line): sled costs about
//! 7 µs a write here, so fewer writes is what makes the engine fast.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use tracing::{debug, warn};

use super::engage;
use super::pipeline::contain_panic;
use super::throttle::Throttle;
use crate::engine::{self, Effect, Enrollment, ExitReason, Input, Status};
use crate::lead::{Lead, Suppression, SuppressionReason, email_key};
use crate::mail::RenderedBody;
use crate::mail::compose::{
    OutgoingEmail, domain_of, new_message_id, sequenced_message_id, to_eml,
};
use crate::mail::links::{TrackedLink, Tracker};
use crate::mail::personalize::personalize;
use crate::project::Project;
use crate::scoring::{Signal, Temperature};
use crate::store::{
    Batch, EventKind, Expiry, MessageRecord, MessageState, OutboxEmail, Store, StoreError,
};
use crate::unsubscribe::Unsubscribe;
use crate::workflow::{Mailbox, Workflow};

/// How long an enrollment of a workflow that is no longer loaded waits before it is looked at
/// again. Its file may come back (a rename, a bad edit being fixed); it is not ended for that.
pub const MISSING_WORKFLOW_RECHECK: Duration = Duration::hours(1);

/// What one call of [`run_due`] did.
#[derive(Debug, Default)]
pub struct Planned {
    /// Enrollments run.
    pub ran: usize,
    /// Emails to hand to the transport now; already listed in flight in the store, under
    /// the mark `in_flight`.
    pub emails: Vec<OutboxEmail>,
    pub in_flight: u64,
}

/// Below this many due enrollments, planning stays on one thread.
const PARALLEL_FROM: usize = 64;

/// Runs up to `limit` due enrollments and commits their new state.
///
/// Planning (reads, `advance`, rendering, MIME) is spread over the machine's cores, each lead
/// on one thread so that two workflows due for the same lead see each other's changes; the
/// commit is one transaction.
///
/// Emails over a sending limit ([`Throttle`]) go to the outbox to wait, in the same
/// transaction.
pub fn run_due(
    store: &Store,
    project: &Project,
    now: DateTime<Utc>,
    limit: usize,
    throttle: &mut Throttle,
    unsubscribe: &Unsubscribe,
) -> Result<Planned, StoreError> {
    let due = store.take_due(now, limit)?;
    if due.is_empty() {
        return Ok(Planned::default());
    }
    let threads = if due.len() < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
    };
    let mut parts: Vec<Vec<&(String, String)>> = vec![Vec::new(); threads];
    for entry in &due {
        parts[shard(&entry.1, threads)].push(entry);
    }
    let planned: Vec<Result<(Batch, Vec<OutboxEmail>), StoreError>> = if threads == 1 {
        vec![plan(store, project, unsubscribe, now, &parts[0])]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .iter()
                .map(|part| scope.spawn(move || plan(store, project, unsubscribe, now, part)))
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("a planning thread panicked"))
                .collect()
        })
    };
    let mut batch = Batch::default();
    let mut emails = Vec::new();
    for part in planned {
        let (part_batch, part_emails) = part?;
        batch.leads.extend(part_batch.leads);
        batch.changed.extend(part_batch.changed);
        batch.enrollments.extend(part_batch.enrollments);
        batch.events.extend(part_batch.events);
        batch.messages.extend(part_batch.messages);
        batch.meta_put.extend(part_batch.meta_put);
        emails.extend(part_emails);
    }
    match commit(store, batch, emails, throttle, now, due.len()) {
        Err(error) if error.is_conflict() => {
            // Our lease ran out mid-batch and another daemon took part of it over: nothing
            // was written; what is still ours goes back to the queue.
            warn!(%error, "a batch lost its claim to another daemon: it is left to that daemon");
            store.release(&due)?;
            Ok(Planned::default())
        }
        result => result,
    }
}

/// Commits a planned batch: emails over a sending limit wait in the outbox, the others are
/// listed in flight, all in one transaction.
fn commit(
    store: &Store,
    mut batch: Batch,
    mut emails: Vec<OutboxEmail>,
    throttle: &mut Throttle,
    now: DateTime<Utc>,
    ran: usize,
) -> Result<Planned, StoreError> {
    emails.retain(|email| match throttle.admit(email, now) {
        None => true,
        Some(later) => {
            batch.event(
                &email.lead,
                now,
                Some(&email.workflow),
                EventKind::Queued {
                    message_id: email.message_id.clone(),
                    step: email.step.clone(),
                    subject: email.subject.clone(),
                },
            );
            batch.outbox_put.push(OutboxEmail {
                not_before: later,
                ..email.clone()
            });
            false
        }
    });
    let mut in_flight = 0;
    if !emails.is_empty() {
        in_flight = store.new_id()?;
        batch.in_flight_set = Some((in_flight, emails));
    }
    store.apply(&batch)?;
    let emails = batch
        .in_flight_set
        .map(|(_, emails)| emails)
        .unwrap_or_default();
    Ok(Planned {
        ran,
        emails,
        in_flight,
    })
}

/// Something that happened to a lead outside its schedule: a reply, an auto-reply, a bounce, an
/// unsubscribe. The workflows' handlers run for it ([`run_input`]).
#[derive(Debug, Clone)]
pub struct Happening {
    pub lead: String,
    /// Only the enrollment in this workflow (the email answered is known), whatever its state:
    /// a reply to the last email of a completed sequence still runs `on reply` (see
    /// [`engine::advance`] for what a finished enrollment's handler may do); `None`: every
    /// active enrollment of the lead.
    pub workflow: Option<String>,
    /// What the handlers are run for; `None`: only journaled (a transient bounce).
    pub input: Option<Input>,
    /// After the handlers: the address is suppressed for this reason (the journal says
    /// `detail`), and whatever the handlers left running ends.
    pub suppress: Option<(SuppressionReason, String)>,
    /// What arrived, for the lead's timeline and the owner's notification (`reply “Re: …”:
    /// “…”`).
    pub note: Option<String>,
    /// The mail this came from: recorded in the same transaction, so it is never run twice.
    pub receipt: Option<Receipt>,
}

/// Marks an inbound mail as processed and moves the watcher's position past it.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// Meta key whose presence says the mail was processed.
    pub seen: String,
    /// Meta entry: the folder's position after this mail.
    pub position: (String, Vec<u8>),
}

impl Receipt {
    fn write(&self, batch: &mut Batch, now: DateTime<Utc>) {
        batch
            .meta_put
            .push((self.seen.clone(), now.timestamp().to_be_bytes().to_vec()));
        batch.meta_put.push(self.position.clone());
    }
}

/// Runs a [`Happening`] through the engine (the workflows' `on …` handlers) and commits the
/// new state with the lead's suppression in one transaction. `None` when the lead is unknown.
pub fn run_input(
    store: &Store,
    project: &Project,
    now: DateTime<Utc>,
    throttle: &mut Throttle,
    unsubscribe: &Unsubscribe,
    happening: &Happening,
) -> Result<Option<Planned>, StoreError> {
    // The lead as spelled in the store: a reply from `dana.scully@…` or an unsubscribe token
    // may name `Dana.Scully@…` in another case, and the batch keys its leads by the spelling.
    let respelled;
    let happening = match store.lead(&happening.lead)? {
        Some(lead) if lead.email != happening.lead => {
            respelled = Happening {
                lead: lead.email,
                ..happening.clone()
            };
            &respelled
        }
        _ => happening,
    };
    // With several daemons: no other moves this lead's enrollments meanwhile.
    store.holding(&[&happening.lead], || {
        run_held_input(store, project, now, throttle, unsubscribe, happening)
    })
}

/// [`run_input`] for a happening whose lead is held and spelled as in the store.
fn run_held_input(
    store: &Store,
    project: &Project,
    now: DateTime<Utc>,
    throttle: &mut Throttle,
    unsubscribe: &Unsubscribe,
    happening: &Happening,
) -> Result<Option<Planned>, StoreError> {
    let mut work = Work::new(store, project, unsubscribe, now, happening.note.as_deref());
    if let Some(receipt) = &happening.receipt {
        let seen = store.meta_get(&receipt.seen)?.is_some();
        receipt.write(&mut work.batch, now);
        if seen {
            // Processed before a crash that came before the position was kept.
            store.apply(&work.batch)?;
            return Ok(Some(Planned::default()));
        }
    }
    if work.lead(&happening.lead)?.is_none() {
        store.apply(&work.batch)?;
        return Ok(None);
    }
    // A human reply is worth points; a temperature it changes runs `when lead becomes …`
    // in the same transaction.
    let became = match happening.input {
        Some(Input::Reply) => work.score(&happening.lead, &Signal::Reply)?,
        _ => None,
    };
    let mut ran = 0;
    let mut untouched = Vec::new();
    for enrollment in store.enrollments_of(&happening.lead)? {
        let concerned = match &happening.workflow {
            Some(name) => *name == enrollment.workflow,
            None => enrollment.is_active(),
        };
        match (project.workflow(&enrollment.workflow), &happening.input) {
            (Some(workflow), Some(input)) if concerned => {
                work.advance(workflow, enrollment, input)?;
                ran += 1;
            }
            _ => untouched.push(enrollment),
        }
    }
    // What no handler ran for is journaled all the same (a transient bounce; an unsubscribe
    // or a bounce for a lead whose sequences are over).
    if ran == 0
        && let Some(note) = &happening.note
    {
        work.batch.event(
            &happening.lead,
            now,
            happening.workflow.as_deref(),
            EventKind::Received { what: note.clone() },
        );
    }
    if let Some(temperature) = became {
        ran += work.became(&happening.lead, temperature)?;
    }
    if let Some((reason, detail)) = &happening.suppress {
        work.suppress(&happening.lead, *reason, detail, untouched);
    }
    let (batch, emails) = work.finish();
    commit(store, batch, emails, throttle, now, ran).map(Some)
}

/// Runs several happenings in one batch and one transaction, with `journal` (what arrived,
/// already journaled by the caller: the engine's own "received" lines are left out). Clicks
/// and opens arrive many at a time ([`super::engage`]). Two happenings for one enrollment see
/// each other: the second runs on what the first left. A happening without a workflow runs for
/// every active enrollment of its lead.
pub fn run_inputs(
    store: &Store,
    project: &Project,
    now: DateTime<Utc>,
    throttle: &mut Throttle,
    unsubscribe: &Unsubscribe,
    happenings: &[Happening],
    journal: Batch,
) -> Result<Planned, StoreError> {
    // With several daemons: no other moves these leads' enrollments meanwhile.
    let leads: Vec<&str> = happenings.iter().map(|h| h.lead.as_str()).collect();
    store.holding(&leads, || {
        run_held_inputs(
            store,
            project,
            now,
            throttle,
            unsubscribe,
            happenings,
            journal,
        )
    })
}

/// [`run_inputs`] once their leads are held.
fn run_held_inputs(
    store: &Store,
    project: &Project,
    now: DateTime<Utc>,
    throttle: &mut Throttle,
    unsubscribe: &Unsubscribe,
    happenings: &[Happening],
    journal: Batch,
) -> Result<Planned, StoreError> {
    let mut work = Work::new(store, project, unsubscribe, now, None);
    work.batch = journal;
    work.quiet = true;
    let mut ran = 0;
    for happening in happenings {
        let Some(input) = &happening.input else {
            continue;
        };
        // A person's open or click is worth points (`scoring { +5 on open }`); a temperature
        // it changes runs `when lead becomes …` in the same transaction, as a reply's does.
        // (Machines' never reach here: `engage` journals them and runs nothing.)
        let became = match input {
            Input::Click { .. } => work.score(&happening.lead, &Signal::Click)?,
            Input::Open { .. } => work.score(&happening.lead, &Signal::Open)?,
            _ => None,
        };
        let Some(lead) = work.lead(&happening.lead)? else {
            continue;
        };
        // The named workflow's enrollment, whatever its state; else every active one.
        let names: Vec<String> = match &happening.workflow {
            Some(name) => vec![name.clone()],
            None => store
                .enrollments_of(&lead.email)?
                .into_iter()
                .filter(Enrollment::is_active)
                .map(|enrollment| enrollment.workflow)
                .collect(),
        };
        for name in names {
            let Some(workflow) = project.workflow(&name) else {
                continue;
            };
            let planned =
                work.batch.enrollments.iter().rposition(|e| {
                    e.workflow == name && email_key(&e.lead) == email_key(&lead.email)
                });
            let (enrollment, stored) = match planned {
                Some(at) => (Some(work.batch.enrollments.remove(at)), false),
                None => (store.enrollment(&name, &lead.email)?, true),
            };
            if let Some(enrollment) = enrollment {
                let written = work.batch.enrollments.len();
                work.advance(workflow, enrollment.clone(), input)?;
                ran += 1;
                // What changes nothing of a stored enrollment but its touch time (a click on a
                // sequence that has moved on, an open seen before: the journal has it) rewrites
                // nothing: its record, its counters and its due index stay as they are.
                let unchanged = work.batch.enrollments.len() == written + 1
                    && work.batch.enrollments.last().is_some_and(|after| {
                        after.updated_at >= enrollment.updated_at
                            && Enrollment {
                                updated_at: enrollment.updated_at,
                                ..after.clone()
                            } == enrollment
                    });
                if stored && unchanged {
                    work.batch.enrollments.pop();
                }
            }
        }
        if let Some(temperature) = became {
            ran += work.became(&happening.lead, temperature)?;
        }
    }
    let (batch, emails) = work.finish();
    commit(store, batch, emails, throttle, now, ran)
}

/// Which thread plans a lead's enrollments.
fn shard(email: &str, threads: usize) -> usize {
    let hash = email.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (hash % threads as u64) as usize
}

/// Plans one share of a batch: the enrollments' new state, journal lines and emails.
fn plan(
    store: &Store,
    project: &Project,
    unsubscribe: &Unsubscribe,
    now: DateTime<Utc>,
    due: &[&(String, String)],
) -> Result<(Batch, Vec<OutboxEmail>), StoreError> {
    let mut work = Work::new(store, project, unsubscribe, now, None);
    for (workflow, email) in due {
        let Some(enrollment) = store.enrollment(workflow, email)? else {
            continue;
        };
        work.run_one(enrollment)?;
    }
    Ok(work.finish())
}

/// One batch in the making. Leads are cached so that two workflows due for the same lead in
/// one batch see each other's changes.
struct Work<'a> {
    store: &'a Store,
    project: &'a Project,
    unsubscribe: &'a Unsubscribe,
    now: DateTime<Utc>,
    batch: Batch,
    /// email → (lead, changed in this batch)
    leads: HashMap<String, (Lead, bool)>,
    /// Emails planned in this batch.
    emails: Vec<OutboxEmail>,
    /// What arrived, when the batch runs a handler for an inbound mail.
    note: Option<&'a str>,
    /// The caller journals what arrived itself: the engine's "received" lines are left out.
    quiet: bool,
    /// Running `when lead becomes …` handlers: a `score` in one of them does not start
    /// another round (a handler that moves the score back and forth would never end).
    becoming: bool,
}

impl<'a> Work<'a> {
    fn new(
        store: &'a Store,
        project: &'a Project,
        unsubscribe: &'a Unsubscribe,
        now: DateTime<Utc>,
        note: Option<&'a str>,
    ) -> Work<'a> {
        Work {
            store,
            project,
            unsubscribe,
            now,
            batch: Batch::default(),
            leads: HashMap::new(),
            emails: Vec::new(),
            note,
            quiet: false,
            becoming: false,
        }
    }

    /// The batch, with the leads that changed written, and the emails planned.
    fn finish(self) -> (Batch, Vec<OutboxEmail>) {
        let Work {
            mut batch,
            leads,
            emails,
            ..
        } = self;
        for (_, (lead, changed)) in leads {
            if changed {
                batch.changed.push(lead.email.clone());
                batch.leads.push(lead);
            }
        }
        (batch, emails)
    }

    fn lead(&mut self, email: &str) -> Result<Option<Lead>, StoreError> {
        if let Some((lead, _)) = self.leads.get(email) {
            return Ok(Some(lead.clone()));
        }
        let Some(lead) = self.store.lead(email)? else {
            return Ok(None);
        };
        self.leads.insert(email.to_string(), (lead.clone(), false));
        Ok(Some(lead))
    }

    fn run_one(&mut self, mut enrollment: Enrollment) -> Result<(), StoreError> {
        let now = self.now;
        let Some(lead) = self.lead(&enrollment.lead)? else {
            warn!(workflow = %enrollment.workflow, lead = %enrollment.lead, "the lead of an enrollment is missing; ending it");
            self.end(enrollment, ExitReason::LeadMissing);
            return Ok(());
        };
        if lead.is_suppressed() {
            self.end(enrollment, ExitReason::Suppressed);
            return Ok(());
        }
        let Some(workflow) = self.project.workflow(&enrollment.workflow) else {
            warn!(workflow = %enrollment.workflow, lead = %enrollment.lead, "workflow not loaded; enrollment waits an hour");
            enrollment.due = Some(now + MISSING_WORKFLOW_RECHECK);
            self.batch.enrollments.push(enrollment);
            return Ok(());
        };
        self.advance(workflow, enrollment, &Input::Due)
    }

    /// Scores `signal` for the lead now, journaled; the temperature it moved the lead to, if
    /// it changed.
    fn score(&mut self, email: &str, signal: &Signal) -> Result<Option<Temperature>, StoreError> {
        let Some(mut lead) = self.lead(email)? else {
            return Ok(None);
        };
        let scored = self.project.scoring().record(&mut lead, signal, self.now);
        self.leads.insert(email.to_string(), (lead, true));
        let Some(scored) = scored else {
            return Ok(None);
        };
        self.batch.event(
            email,
            self.now,
            None,
            EventKind::Scored {
                signal: signal.to_string(),
                points: scored.points,
                before: scored.before,
                after: scored.after,
                temperature: scored.now,
            },
        );
        Ok((scored.now != scored.was).then_some(scored.now))
    }

    /// Runs `when lead becomes TEMPERATURE` for each of the lead's enrollments whose workflow
    /// has it (as this batch left them); how many ran.
    fn became(&mut self, email: &str, temperature: Temperature) -> Result<usize, StoreError> {
        let outer = std::mem::replace(&mut self.becoming, true);
        let ran = self.run_became(email, temperature);
        self.becoming = outer;
        ran
    }

    fn run_became(&mut self, email: &str, temperature: Temperature) -> Result<usize, StoreError> {
        let mut ran = 0;
        for stored in self.store.enrollments_of(email)? {
            let Some(workflow) = self.project.workflow(&stored.workflow) else {
                continue;
            };
            if !workflow
                .handlers
                .became
                .iter()
                .any(|(t, _)| *t == temperature)
            {
                continue;
            }
            // The version this batch already advanced, if it did.
            let latest = self
                .batch
                .enrollments
                .iter()
                .rposition(|e| e.workflow == stored.workflow && e.lead == stored.lead)
                .map(|at| self.batch.enrollments.remove(at))
                .unwrap_or(stored);
            self.advance(workflow, latest, &Input::Became(temperature))?;
            ran += 1;
        }
        Ok(ran)
    }

    /// One `advance` of `enrollment` for `input`, recorded; the lead must be cached.
    fn advance(
        &mut self,
        workflow: &Workflow,
        enrollment: Enrollment,
        input: &Input,
    ) -> Result<(), StoreError> {
        let Some(lead) = self.lead(&enrollment.lead)? else {
            return Ok(());
        };
        // The slot this step was planned for (Message-IDs derive from it); for an answer,
        // the moment it arrived.
        let slot = match input {
            Input::Due => enrollment.due.unwrap_or(self.now),
            _ => self.now,
        };
        let outcome = engine::advance(workflow, &enrollment, &lead, input, self.now);
        let mut enrollment = outcome.enrollment;
        let failed = self.record(workflow, &lead, &outcome.lead, &outcome.effects, slot)?;
        if let Some(failed) = failed {
            self.end_on_failure(&mut enrollment, failed);
        }
        if outcome.lead != lead {
            self.leads
                .insert(lead.email.clone(), (outcome.lead.clone(), true));
        }
        self.batch.enrollments.push(enrollment);
        // A `score +N` of the workflow is a scored signal like a reply: the temperature it
        // changes runs `when lead becomes …`, in this batch.
        let rescored = outcome.lead.score != lead.score || outcome.lead.score_at != lead.score_at;
        if rescored && !self.becoming {
            let scoring = self.project.scoring();
            let now = scoring.temperature(&outcome.lead, self.now);
            if now != scoring.temperature(&lead, self.now) {
                self.became(&lead.email, now)?;
            }
        }
        Ok(())
    }

    /// An email of this enrollment failed for good: the sequence ends there, with the reason
    /// (see [`super::sender::end_failed`] for why), and the emails the engine counted as sent
    /// from it on are not.
    fn end_on_failure(&mut self, enrollment: &mut Enrollment, failed: Failed) {
        for template in &failed.unsent {
            if let Some(at) = enrollment.facts.sent.iter().rposition(|t| t == template) {
                enrollment.facts.sent.remove(at);
            }
        }
        if matches!(enrollment.status, Status::Exited(_)) {
            return;
        }
        let reason = ExitReason::EmailFailed {
            step: failed.step,
            error: failed.error,
        };
        self.exit(enrollment, reason);
    }

    /// Suppresses `email` (if it is not already) and ends every enrollment still active:
    /// those the handlers just ran and `others`.
    fn suppress(
        &mut self,
        email: &str,
        reason: SuppressionReason,
        detail: &str,
        others: Vec<Enrollment>,
    ) {
        let now = self.now;
        let exit = match reason {
            SuppressionReason::Unsubscribed => ExitReason::Unsubscribed,
            SuppressionReason::Bounced => ExitReason::Bounced,
            SuppressionReason::Manual | SuppressionReason::Complained => ExitReason::Suppressed,
        };
        if let Some((lead, changed)) = self.leads.get_mut(email)
            && !lead.is_suppressed()
        {
            lead.suppression = Some(Suppression {
                reason,
                detail: detail.to_owned(),
                at: now,
            });
            lead.updated_at = now;
            *changed = true;
            self.batch.event(
                email,
                now,
                None,
                EventKind::Suppressed {
                    reason: detail.to_owned(),
                },
            );
        }
        let mut still_active = Vec::new();
        self.batch.enrollments.retain(|enrollment| {
            let keep = !(enrollment.lead == email && enrollment.is_active());
            if !keep {
                still_active.push(enrollment.clone());
            }
            keep
        });
        still_active.extend(others.into_iter().filter(Enrollment::is_active));
        for enrollment in still_active {
            self.end(enrollment, exit.clone());
        }
        // A handler may have sent the lead something; it goes nowhere now. (Notifications to
        // our side stay.)
        self.emails.retain(|queued| queued.envelope_to != email);
    }

    /// Ends `enrollment` with `reason`, journaled (the caller stores it).
    fn exit(&mut self, enrollment: &mut Enrollment, reason: ExitReason) {
        enrollment.status = Status::Exited(reason.clone());
        enrollment.due = None;
        enrollment.updated_at = self.now;
        self.batch.event(
            &enrollment.lead,
            self.now,
            Some(&enrollment.workflow),
            EventKind::Exited { reason },
        );
    }

    fn end(&mut self, mut enrollment: Enrollment, reason: ExitReason) {
        self.exit(&mut enrollment, reason);
        self.batch.enrollments.push(enrollment);
    }

    /// Turns the engine's effects into journal lines and outbox entries. Returns the lead's
    /// first email that failed, if one did: the effects after it that send or complete are
    /// left out.
    fn record(
        &mut self,
        workflow: &Workflow,
        before: &Lead,
        after: &Lead,
        effects: &[Effect],
        slot: DateTime<Utc>,
    ) -> Result<Option<Failed>, StoreError> {
        let now = self.now;
        let email = before.email.clone();
        let name = Some(workflow.name.as_str());
        let mut failed: Option<Failed> = None;
        for effect in effects {
            let kind = match effect {
                Effect::Received { .. } if self.quiet => continue,
                Effect::Received { what } => EventKind::Received {
                    what: self.note.unwrap_or(what).to_owned(),
                },
                Effect::Send(planned) => {
                    if let Some(failed) = &mut failed {
                        failed.unsent.push(planned.template.clone());
                        continue;
                    }
                    // Numbered before rendering: a tracked email's links name it by number.
                    let sequence = self.store.new_id()?;
                    let tracker = self
                        .unsubscribe
                        .base_url()
                        .filter(|_| workflow.tracking.any())
                        .map(|base_url| Tracker {
                            signer: self.unsubscribe.signer(),
                            base_url,
                            message: sequence,
                            clicks: workflow.tracking.clicks,
                            opens: workflow.tracking.opens,
                        });
                    // The lead as it is at this send: a `tag` before it is visible to it. A
                    // panic while rendering fails this email only, not the daemon.
                    let rendered = contain_panic(|| {
                        personalize(
                            &self.project.templates,
                            workflow,
                            after,
                            planned,
                            slot,
                            now,
                            self.unsubscribe,
                            &after.email,
                            tracker.as_ref(),
                        )
                    })
                    .and_then(|rendered| {
                        rendered.map_err(|error| format!("cannot render: {error}"))
                    });
                    let failure = match rendered {
                        Ok((outgoing, links)) => {
                            let tracked = tracker.is_some().then_some(links);
                            let step = &planned.step;
                            let failure =
                                self.queue(workflow, &email, step, outgoing, sequence, tracked)?;
                            if failure.is_none()
                                && let Some((at, expires)) = &planned.expires
                                && let Some(queued) = self.emails.last_mut()
                            {
                                // Queued last, just now.
                                queued.expires = Some(Expiry {
                                    at: *at,
                                    expires: expires.clone(),
                                    template: planned.template.clone(),
                                });
                            }
                            failure
                        }
                        Err(error) => {
                            warn!(workflow = %workflow.name, lead = %email, step = %planned.step, %error, "cannot render");
                            let domain = domain_of(&workflow.from.address);
                            let unique = format!(
                                "failed|{}|{email}|{}|{}",
                                workflow.name,
                                planned.step,
                                slot.timestamp()
                            );
                            let id =
                                sequenced_message_id(&new_message_id(domain, &unique), sequence);
                            Some(self.failed(
                                workflow,
                                &email,
                                &planned.step,
                                &id,
                                &planned.subject_template,
                                error,
                            ))
                        }
                    };
                    let Some(kind) = failure else { continue };
                    if let EventKind::SendFailed { step, error, .. } = &kind {
                        failed = Some(Failed {
                            step: step.clone(),
                            error: error.clone(),
                            unsent: vec![planned.template.clone()],
                        });
                    }
                    kind
                }
                Effect::Decision {
                    step,
                    condition,
                    result,
                    ..
                } => EventKind::Decision {
                    step: step.clone(),
                    condition: condition.clone(),
                    result: *result,
                },
                Effect::LeadChanged { change } => EventKind::Changed {
                    change: change.clone(),
                },
                Effect::Promoted { stage } => EventKind::Promoted {
                    stage: *stage,
                    by: format!("workflow `{}`", workflow.name),
                },
                Effect::Notify { to, reason } => {
                    self.notify(workflow, after, to, reason)?;
                    EventKind::Notified {
                        to: to.clone(),
                        reason: reason.clone(),
                    }
                }
                Effect::Waiting { until, reason } => {
                    debug!(workflow = %workflow.name, lead = %email, %until, %reason, "waiting");
                    continue;
                }
                Effect::Expired {
                    step,
                    template,
                    expired,
                    expires,
                } => EventKind::Expired {
                    step: step.clone(),
                    template: template.clone(),
                    expired: *expired,
                    expires: expires.clone(),
                },
                Effect::Paused { until, reason } => EventKind::Paused {
                    until: *until,
                    reason: reason.clone(),
                },
                // The sequence ends at the failed email instead.
                Effect::Completed if failed.is_some() => continue,
                Effect::Completed => EventKind::Completed,
                Effect::Exited { reason } => EventKind::Exited {
                    reason: reason.clone(),
                },
            };
            self.batch.event(&email, now, name, kind);
        }
        Ok(failed)
    }

    /// Records an email that cannot leave as failed (counted in `status`) and returns its
    /// journal line.
    fn failed(
        &mut self,
        workflow: &Workflow,
        lead: &str,
        step: &str,
        message_id: &str,
        subject: &str,
        error: String,
    ) -> EventKind {
        self.batch.messages.push(MessageRecord {
            message_id: message_id.to_string(),
            workflow: workflow.name.clone(),
            lead: lead.to_string(),
            sender: workflow.from.address.clone(),
            step: step.to_string(),
            subject: subject.to_string(),
            state: MessageState::Failed,
            queued_at: self.now,
            at: self.now,
        });
        EventKind::SendFailed {
            message_id: message_id.to_string(),
            step: step.to_string(),
            error,
            permanent: true,
        }
    }

    /// Plans `outgoing` for sending, numbered `sequence` in the store's sequence (see
    /// [`sequenced_message_id`]); a tracked email's links (`tracked`) are kept with it in the
    /// same transaction ([`engage::Tracked`]). Returns the journal line of a failure, if it
    /// cannot be sent. A slot planned twice (a DST double fire, a restart) is no concern here:
    /// the engine does nothing for an enrollment that is not due.
    fn queue(
        &mut self,
        workflow: &Workflow,
        lead: &str,
        step: &str,
        mut outgoing: OutgoingEmail,
        sequence: u64,
        tracked: Option<Vec<TrackedLink>>,
    ) -> Result<Option<EventKind>, StoreError> {
        outgoing.message_id = sequenced_message_id(&outgoing.message_id, sequence);
        let composed = contain_panic(|| to_eml(&outgoing))
            .and_then(|eml| eml.map_err(|error| format!("cannot compose the email: {error}")));
        let eml = match composed {
            Ok(eml) => eml,
            Err(error) => {
                warn!(workflow = %workflow.name, %lead, %step, %error, "cannot compose the email");
                let (id, subject) = (outgoing.message_id.clone(), outgoing.subject.clone());
                return Ok(Some(
                    self.failed(workflow, lead, step, &id, &subject, error),
                ));
            }
        };
        if let Some(links) = tracked {
            let record = engage::Tracked {
                message_id: outgoing.message_id.clone(),
                workflow: workflow.name.clone(),
                lead: lead.to_string(),
                step: step.to_string(),
                planned_at: self.now,
                links,
            };
            self.batch.meta_put.push(record.entry(sequence));
        }
        self.emails.push(OutboxEmail {
            message_id: outgoing.message_id.clone(),
            workflow: workflow.name.clone(),
            lead: lead.to_string(),
            step: step.to_string(),
            subject: outgoing.subject.clone(),
            envelope_from: workflow.from.address.clone(),
            envelope_to: outgoing.to.address.clone(),
            queued_at: self.now,
            not_before: self.now,
            attempts: 0,
            expires: None,
            eml,
        });
        Ok(None)
    }

    /// `notify owner` / `notify "…"`: a short email to a person on our side.
    fn notify(
        &mut self,
        workflow: &Workflow,
        lead: &Lead,
        to: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let to = mailbox_from_display(to);
        let outgoing = notification(workflow, lead, &to, reason, self.note, self.now);
        let step = format!("notify {}", to.address);
        let sequence = self.store.new_id()?;
        if let Some(kind) = self.queue(workflow, &lead.email, &step, outgoing, sequence, None)? {
            self.batch
                .event(&lead.email, self.now, Some(&workflow.name), kind);
        }
        Ok(())
    }
}

/// The lead's email that failed in an `advance`, and the templates the engine counted as sent
/// from it on.
struct Failed {
    step: String,
    error: String,
    unsent: Vec<String>,
}

/// The email that tells a person on our side about a lead.
fn notification(
    workflow: &Workflow,
    lead: &Lead,
    to: &Mailbox,
    reason: &str,
    what_arrived: Option<&str>,
    now: DateTime<Utc>,
) -> OutgoingEmail {
    let who = lead.full_name().map_or_else(
        || lead.email.clone(),
        |name| format!("{name} <{}>", lead.email),
    );
    let quoted = what_arrived.map_or_else(String::new, |what| format!("\n> {what}\n"));
    let text = format!(
        "{who} ({reason}).\n{quoted}\nStage: {}. Run `nurture leads show {}` for the whole story.\n",
        lead.stage.as_str(),
        lead.email
    );
    let quoted_html = what_arrived.map_or_else(String::new, |what| {
        format!("<blockquote>{}</blockquote>", handlebars::html_escape(what))
    });
    let html = format!(
        "<p>{} ({}).</p>{quoted_html}<p>Stage: {}. Run <code>nurture leads show {}</code> for the whole story.</p>",
        handlebars::html_escape(&who),
        handlebars::html_escape(reason),
        lead.stage.as_str(),
        handlebars::html_escape(&lead.email)
    );
    let unique = format!(
        "notify|{}|{}|{}|{}",
        workflow.name,
        lead.email,
        to.address,
        now.timestamp_millis()
    );
    OutgoingEmail {
        message_id: new_message_id(domain_of(&workflow.from.address), &unique),
        from: workflow.from.clone(),
        reply_to: None,
        to: to.clone(),
        subject: format!("[nurture] {who}: {reason}"),
        body: RenderedBody { html, text },
        date: now,
        list_unsubscribe: Vec::new(),
        one_click: false,
        // Machine-made (RFC 3834): out-of-office responders leave it alone, and the inbox
        // watcher never takes it for a person's mail if it lands in the watched folder.
        extra_headers: vec![
            ("X-Nurture-Workflow".into(), workflow.name.clone()),
            ("Auto-Submitted".into(), "auto-generated".into()),
        ],
    }
}

/// The mailbox back from its display form (`Name <address>` or `address`); the engine names
/// notification targets that way, and the checker has already validated the address.
fn mailbox_from_display(text: &str) -> Mailbox {
    match text.rsplit_once('<') {
        Some((name, address)) => Mailbox {
            name: Some(name.trim().to_string()).filter(|n| !n.is_empty()),
            address: address.trim_end_matches('>').trim().to_string(),
        },
        None => Mailbox {
            name: None,
            address: text.trim().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;

    use super::*;
    use crate::config::Limits;
    use crate::engine::Position;
    use crate::store::{DEFAULT_CACHE_BYTES, Event};

    /// A store in a scratch folder holding `leads`, each with a completed enrollment in the inbox
    /// tests' workflow `welcome` that sent both its emails.
    fn completed(name: &str, leads: &[&str]) -> (Store, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("nurture-scheduler-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 9, 0, 0).unwrap();
        let mut batch = Batch::default();
        for email in leads {
            batch.leads.push(Lead::new(email.to_string(), at));
            batch.enrollments.push(Enrollment {
                workflow: "welcome".into(),
                version: "v1".into(),
                lead: email.to_string(),
                status: Status::Completed,
                position: Position::new("follow-up", 1),
                due: None,
                enrolled_at: at,
                updated_at: at,
                deferred_from: None,
                facts: engine::Facts {
                    sent: vec!["note".into(), "note".into()],
                    ..engine::Facts::default()
                },
            });
        }
        store.apply(&batch).unwrap();
        (store, dir)
    }

    fn received(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Received { what } => Some(what.as_str()),
                _ => None,
            })
            .collect()
    }

    // Regression: what came back after a sequence ended was not journaled unless a handler ran.
    #[test]
    fn bounces_and_unsubscribes_after_the_end_are_journaled_and_still_suppress() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let project = Project::load(
            &[repo.join("tests/fixtures/inbox/workflows")],
            &repo.join("tests/fixtures/inbox/templates"),
        );
        assert!(project.workflow("welcome").is_some());
        let (store, dir) = completed("after-end", &["tom@example.test", "lea@example.test"]);
        let mut throttle = Throttle::new(Limits::default());
        let unsubscribe = Unsubscribe::preview("");
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let mut run = |happening: Happening| {
            run_input(
                &store,
                &project,
                now,
                &mut throttle,
                &unsubscribe,
                &happening,
            )
            .unwrap()
            .expect("a known lead")
        };

        // A bounce of the last email (its Message-ID is known: the workflow too).
        let planned = run(Happening {
            lead: "tom@example.test".into(),
            workflow: Some("welcome".into()),
            input: Some(Input::Bounce { permanent: true }),
            suppress: Some((
                SuppressionReason::Bounced,
                "the address bounced (5.1.1)".into(),
            )),
            note: Some("permanent bounce (5.1.1)".into()),
            receipt: None,
        });
        assert!(planned.emails.is_empty());
        // An unsubscribe by token: no workflow, and none active.
        run(Happening {
            lead: "lea@example.test".into(),
            workflow: None,
            input: Some(Input::Unsubscribe),
            suppress: Some((SuppressionReason::Unsubscribed, "asked by mail".into())),
            note: Some("unsubscribe request “stop”".into()),
            receipt: None,
        });

        for (email, what) in [
            ("tom@example.test", "permanent bounce (5.1.1)"),
            ("lea@example.test", "unsubscribe request “stop”"),
        ] {
            let lead = store.lead(email).unwrap().unwrap();
            assert!(lead.is_suppressed(), "{email}");
            let journal = store.events_of(email).unwrap();
            assert_eq!(received(&journal), vec![what], "{journal:?}");
            let enrollment = store.enrollment("welcome", email).unwrap().unwrap();
            assert_eq!(enrollment.status, Status::Completed, "{email}");
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
