//! The figures `nurture status` shows, kept as counters in the store so that reading them costs
//! O(workflows × steps), not O(leads).
//!
//! Two trees:
//! - `counters`: (scope, figure) → u64 big-endian. A workflow's figures are keyed
//!   `W ‖ workflow ‖ 0 ‖ step ‖ 0 ‖ figure`: those of an enrollment's place (`active`,
//!   `completed`, `exited:<reason>`) under the step it stands in, those of an email (`sent`,
//!   `failed`, `uncertain`, `dropped`, `queued`) and the opens and clicks of its email
//!   (`opens`, `clicks`, `machine_opens`, `machine_clicks`: journal `Engaged` lines) under the
//!   step that wrote it, the rest
//!   (`enrolled`, `emailed`, `engaged`, `replies`, `auto_replies`, `promoted`, `complaints`,
//!   `sender_side_rejections`) under the empty step. SledStore-wide figures are `S ‖ figure`:
//!   `leads`, `contacts`, `suppressed`, and the `complaints` and `sender_side_rejections` the
//!   journal traces to no workflow. A figure at zero has no key.
//! - `counters_index`: what counting needs to remember item by item: the promotions counted
//!   (`p ‖ lead ‖ 0 ‖ workflow`: a lead counts once per workflow however often it is promoted),
//!   the complaints counted (`c ‖ lead`, then `0 ‖ workflow` when the report named one of our
//!   emails: once per lead and workflow), the emails now uncertain (`u ‖ Message-ID`, so
//!   `status` can name them without reading every email record), and when each lead last
//!   reported an event through the API (`t ‖ lead` → time: an enrollment is engaged by an
//!   event at or after its start).
//!
//! [`SledStore::apply`] works out a batch's [`Deltas`] from what it writes (each lead, enrollment,
//! email record and outbox entry against the value it replaces, each journal line) and adds
//! them in the same transaction: the counters move if and only if the batch commits. sled 0.34
//! runs transactions one at a time (a global lock), so the read-modify-write of a counter inside
//! one never loses an update; a batch touches each counter once, however many leads it moves.
//!
//! [`SledStore::counters`] reads them; [`recount`] counts the same figures by reading every record
//! (the reference, seconds per million leads), which the upgrade to schema 3 and
//! `nurture status --recount` write back ([`SledStore::recount`]).

mod recount;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, TransactionalTree, UnabortableTransactionError,
};
use sled::{Transactional, Tree};
use tracing::warn;

use super::{
    Event, MessageRecord, MessageState, OutboxEmail, Result, SledStore, StoreError, codec,
};
use crate::engine::{Enrollment, ExitReason, Status};
use crate::lead::{Lead, Stage, email_key};

pub use self::recount::recount;

/// The figures of the whole store, as the counters (or a recount) give them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Per workflow, by name.
    pub workflows: BTreeMap<String, WorkflowCounts>,
    /// Everyone in the store, whatever their stage.
    pub leads: u64,
    /// Leads at stage contact or customer.
    pub contacts: u64,
    /// Addresses that must not be mailed.
    pub suppressed: u64,
    /// Spam complaints that named a lead's address but none of our emails.
    pub untraced_complaints: u64,
    /// Sender-side rejections that named a lead's address but none of our emails.
    pub untraced_sender_side_rejections: u64,
    /// The emails now uncertain, by Message-ID (their records).
    pub uncertain: Vec<MessageRecord>,
    /// The emails listed as being handed to a transport (read from their marks, which hold at
    /// most a batch or two).
    pub in_flight: Vec<OutboxEmail>,
}

/// One workflow's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowCounts {
    /// Enrollments, one per lead.
    pub enrolled: u64,
    /// Enrollments that were sent at least one email.
    pub emailed: u64,
    /// Enrollments whose lead showed interest: clicked a link of the workflow, or reported an
    /// event through the API at or after enrolling.
    pub engaged: u64,
    /// Enrollments that saw a human reply, an auto-reply.
    pub replies: u64,
    pub auto_replies: u64,
    /// Leads promoted by this workflow, each once.
    pub promoted: u64,
    /// Leads who reported an email of this workflow as spam, each once.
    pub complaints: u64,
    /// Emails refused for a reason on the sender's side.
    pub sender_side_rejections: u64,
    /// By step name: where enrollments stand, and the emails each step wrote.
    pub steps: BTreeMap<String, StepCounts>,
}

/// One step's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCounts {
    /// Enrollments standing in this step, still running.
    pub active: u64,
    /// Enrollments that ended in this step: at its end, or early (by reason, snake_case).
    pub completed: u64,
    pub exited: BTreeMap<String, u64>,
    /// This step's emails by outcome, and those waiting in the outbox.
    pub sent: u64,
    pub failed: u64,
    pub uncertain: u64,
    pub dropped: u64,
    pub queued: u64,
    /// People's opens and clicks of this step's email (tracked workflows), from the journal's
    /// `Engaged` lines; what machines fetched (image proxies, link scanners) apart.
    pub opens: u64,
    pub clicks: u64,
    pub machine_opens: u64,
    pub machine_clicks: u64,
    /// Enrollments whose lead first replied while standing in this step.
    #[serde(default)]
    pub replies: u64,
}

impl WorkflowCounts {
    /// A step figure summed over the steps.
    pub fn total(&self, figure: impl Fn(&StepCounts) -> u64) -> u64 {
        self.steps.values().map(figure).sum()
    }

    /// Exits by reason over the steps.
    pub fn exited(&self) -> BTreeMap<String, u64> {
        let mut exited = BTreeMap::new();
        for step in self.steps.values() {
            for (reason, count) in &step.exited {
                *exited.entry(reason.clone()).or_default() += count;
            }
        }
        exited
    }

    fn figure(&mut self, name: &str) -> Option<&mut u64> {
        Some(match name {
            ENROLLED => &mut self.enrolled,
            EMAILED => &mut self.emailed,
            ENGAGED => &mut self.engaged,
            REPLIES => &mut self.replies,
            AUTO_REPLIES => &mut self.auto_replies,
            PROMOTED => &mut self.promoted,
            COMPLAINTS => &mut self.complaints,
            SENDER_SIDE_REJECTIONS => &mut self.sender_side_rejections,
            _ => return None,
        })
    }

    fn figures(&self) -> [(&'static str, u64); 8] {
        [
            (ENROLLED, self.enrolled),
            (EMAILED, self.emailed),
            (ENGAGED, self.engaged),
            (REPLIES, self.replies),
            (AUTO_REPLIES, self.auto_replies),
            (PROMOTED, self.promoted),
            (COMPLAINTS, self.complaints),
            (SENDER_SIDE_REJECTIONS, self.sender_side_rejections),
        ]
    }
}

impl StepCounts {
    fn figure(&mut self, name: &str) -> Option<&mut u64> {
        Some(match name {
            ACTIVE => &mut self.active,
            COMPLETED => &mut self.completed,
            SENT => &mut self.sent,
            FAILED => &mut self.failed,
            UNCERTAIN => &mut self.uncertain,
            DROPPED => &mut self.dropped,
            QUEUED => &mut self.queued,
            OPENS => &mut self.opens,
            CLICKS => &mut self.clicks,
            MACHINE_OPENS => &mut self.machine_opens,
            MACHINE_CLICKS => &mut self.machine_clicks,
            REPLIES => &mut self.replies,
            _ => self
                .exited
                .entry(name.strip_prefix(EXITED)?.to_string())
                .or_default(),
        })
    }

    fn figures(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        [
            (ACTIVE, self.active),
            (COMPLETED, self.completed),
            (SENT, self.sent),
            (FAILED, self.failed),
            (UNCERTAIN, self.uncertain),
            (DROPPED, self.dropped),
            (QUEUED, self.queued),
            (OPENS, self.opens),
            (CLICKS, self.clicks),
            (MACHINE_OPENS, self.machine_opens),
            (MACHINE_CLICKS, self.machine_clicks),
            (REPLIES, self.replies),
        ]
        .into_iter()
        .map(|(name, count)| (name.to_string(), count))
        .chain(
            self.exited
                .iter()
                .map(|(reason, count)| (format!("{EXITED}{reason}"), *count)),
        )
    }
}

impl Counters {
    fn store_figure(&mut self, name: &str) -> Option<&mut u64> {
        Some(match name {
            LEADS => &mut self.leads,
            CONTACTS => &mut self.contacts,
            SUPPRESSED => &mut self.suppressed,
            COMPLAINTS => &mut self.untraced_complaints,
            SENDER_SIDE_REJECTIONS => &mut self.untraced_sender_side_rejections,
            _ => return None,
        })
    }

    /// The counts as the counters tree keys them, zeros left out.
    fn entries(&self) -> BTreeMap<Vec<u8>, u64> {
        let mut entries = BTreeMap::new();
        for (name, count) in [
            (LEADS, self.leads),
            (CONTACTS, self.contacts),
            (SUPPRESSED, self.suppressed),
            (COMPLAINTS, self.untraced_complaints),
            (SENDER_SIDE_REJECTIONS, self.untraced_sender_side_rejections),
        ] {
            entries.insert(store_key(name), count);
        }
        for (workflow, counts) in &self.workflows {
            for (name, count) in counts.figures() {
                entries.insert(workflow_key(workflow, "", name), count);
            }
            for (step, figures) in &counts.steps {
                for (name, count) in figures.figures() {
                    entries.insert(workflow_key(workflow, step, &name), count);
                }
            }
        }
        entries.retain(|_, count| *count > 0);
        entries
    }

    /// Adds `count` to the figure under `key`.
    fn add(&mut self, key: &[u8], count: u64) -> Result<()> {
        let unknown = || StoreError::Corrupt {
            what: "counter key",
            detail: String::from_utf8_lossy(key).into_owned(),
        };
        let slot = match key.split_first() {
            Some((&STORE_SCOPE, name)) => {
                let name = std::str::from_utf8(name).map_err(|_| unknown())?;
                self.store_figure(name)
            }
            Some((&WORKFLOW_SCOPE, rest)) => {
                let mut parts = rest.splitn(3, |b| *b == SEPARATOR);
                let (Some(workflow), Some(step), Some(name)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(unknown());
                };
                let text = |bytes| std::str::from_utf8(bytes).map_err(|_| unknown());
                let (workflow, step, name) = (text(workflow)?, text(step)?, text(name)?);
                let counts = self.workflows.entry(workflow.to_string()).or_default();
                if step.is_empty() {
                    counts.figure(name)
                } else {
                    counts
                        .steps
                        .entry(step.to_string())
                        .or_default()
                        .figure(name)
                }
            }
            _ => None,
        };
        *slot.ok_or_else(unknown)? += count;
        Ok(())
    }
}

// Figure names, as the keys spell them.
const LEADS: &str = "leads";
const CONTACTS: &str = "contacts";
const SUPPRESSED: &str = "suppressed";
const ENROLLED: &str = "enrolled";
const EMAILED: &str = "emailed";
const ENGAGED: &str = "engaged";
const REPLIES: &str = "replies";
const AUTO_REPLIES: &str = "auto_replies";
const PROMOTED: &str = "promoted";
const COMPLAINTS: &str = "complaints";
const SENDER_SIDE_REJECTIONS: &str = "sender_side_rejections";
const ACTIVE: &str = "active";
const COMPLETED: &str = "completed";
const EXITED: &str = "exited:";
const SENT: &str = "sent";
const FAILED: &str = "failed";
const UNCERTAIN: &str = "uncertain";
const DROPPED: &str = "dropped";
const QUEUED: &str = "queued";
const OPENS: &str = "opens";
const CLICKS: &str = "clicks";
const MACHINE_OPENS: &str = "machine_opens";
const MACHINE_CLICKS: &str = "machine_clicks";

const STORE_SCOPE: u8 = b'S';
const WORKFLOW_SCOPE: u8 = b'W';
const SEPARATOR: u8 = 0;
const PROMOTION_MARK: u8 = b'p';
const COMPLAINT_MARK: u8 = b'c';
const UNCERTAIN_MARK: u8 = b'u';
const TRACKED_MARK: u8 = b't';

fn store_key(figure: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + figure.len());
    key.push(STORE_SCOPE);
    key.extend_from_slice(figure.as_bytes());
    key
}

fn workflow_key(workflow: &str, step: &str, figure: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(3 + workflow.len() + step.len() + figure.len());
    key.push(WORKFLOW_SCOPE);
    key.extend_from_slice(workflow.as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(step.as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(figure.as_bytes());
    key
}

/// The mark of `lead`'s promotion by `workflow`.
fn promotion_mark(lead: &str, workflow: &str) -> Vec<u8> {
    let mut key = vec![PROMOTION_MARK];
    key.extend_from_slice(email_key(lead).as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(workflow.as_bytes());
    key
}

/// The mark of `lead`'s complaint about `workflow`'s emails (or about none in particular).
fn complaint_mark(lead: &str, workflow: Option<&str>) -> Vec<u8> {
    let mut key = vec![COMPLAINT_MARK];
    key.extend_from_slice(email_key(lead).as_bytes());
    if let Some(workflow) = workflow {
        key.push(SEPARATOR);
        key.extend_from_slice(workflow.as_bytes());
    }
    key
}

/// The mark of the latest event `lead` reported through the API (its value: the time).
fn tracked_mark(lead: &str) -> Vec<u8> {
    let mut key = vec![TRACKED_MARK];
    key.extend_from_slice(email_key(lead).as_bytes());
    key
}

fn uncertain_mark(message_id: &str) -> Vec<u8> {
    let mut key = vec![UNCERTAIN_MARK];
    key.extend_from_slice(message_id.as_bytes());
    key
}

/// An exit reason's snake_case name, as the store writes it. Taken from serde rather than a
/// match so a new reason needs no change here; the reasons that carry a value (the removed
/// step, the goal, the error) are grouped by their name alone.
pub fn reason_key(reason: &ExitReason) -> String {
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

/// The figure an enrollment's status counts under.
fn status_figure(status: &Status) -> String {
    match status {
        Status::Active => ACTIVE.to_string(),
        Status::Completed => COMPLETED.to_string(),
        Status::Exited(reason) => format!("{EXITED}{}", reason_key(reason)),
    }
}

fn state_figure(state: MessageState) -> &'static str {
    match state {
        MessageState::Sent => SENT,
        MessageState::Failed => FAILED,
        MessageState::Uncertain => UNCERTAIN,
        MessageState::Dropped => DROPPED,
    }
}

/// The journal lines the counters count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Promoted,
    Complaint,
    SenderSide,
    /// An open or a click of a tracked email: the step figure it adds to.
    Engaged(&'static str),
}

fn line(event: &Event) -> Option<Line> {
    use super::EventKind;
    use crate::daemon::correlate::{SENDER_SIDE, SPAM_COMPLAINT};
    match &event.kind {
        EventKind::Promoted { .. } => Some(Line::Promoted),
        EventKind::Received { what } if what.starts_with(SPAM_COMPLAINT) => Some(Line::Complaint),
        EventKind::Received { what } if what.starts_with(SENDER_SIDE) => Some(Line::SenderSide),
        EventKind::Engaged { kind, machine, .. } => Some(Line::Engaged(
            match (kind.as_str() == "open", machine.is_some()) {
                (true, false) => OPENS,
                (true, true) => MACHINE_OPENS,
                (false, false) => CLICKS,
                (false, true) => MACHINE_CLICKS,
            },
        )),
        _ => None,
    }
}

/// The step whose email an `Engaged` journal line is about.
fn engaged_step(event: &Event) -> Option<&str> {
    match &event.kind {
        super::EventKind::Engaged { step, .. } => Some(step),
        _ => None,
    }
}

/// The fields of a stored enrollment its due entry and its counters need: decoding only them
/// skips building the rest.
#[derive(Deserialize)]
pub(super) struct StoredEnrollment {
    pub due: Option<DateTime<Utc>>,
    pub status: Status,
    position: StepOnly,
    enrolled_at: DateTime<Utc>,
    facts: Engaged,
}

#[derive(Deserialize)]
struct StepOnly {
    step: String,
}

#[derive(Deserialize)]
struct Engaged {
    replied: bool,
    #[serde(default)]
    replied_in: Option<String>,
    auto_replied: bool,
    clicked: bool,
    /// Only how many (the templates' names are skipped, not built).
    sent: Vec<serde::de::IgnoredAny>,
}

impl From<&crate::engine::Facts> for Engaged {
    fn from(facts: &crate::engine::Facts) -> Engaged {
        Engaged {
            replied: facts.replied,
            replied_in: facts.replied_in.clone(),
            auto_replied: facts.auto_replied,
            clicked: facts.clicked,
            sent: Vec::new(),
        }
    }
}

/// Whether an enrollment counts as engaged: a click, or an event its lead reported through
/// the API (`tracked`: the latest one's time) at or after it began.
fn engaged(clicked: bool, enrolled_at: DateTime<Utc>, tracked: Option<DateTime<Utc>>) -> bool {
    clicked || tracked.is_some_and(|at| enrolled_at <= at)
}

/// The fields of a stored lead its counters need.
#[derive(Deserialize)]
struct StoredLead {
    stage: Stage,
    suppression: Option<serde::de::IgnoredAny>,
}

/// The fields of a stored email record (or an outbox entry's header) its counters need.
#[derive(Deserialize)]
struct StoredEmail {
    workflow: String,
    step: String,
    #[serde(default)]
    state: Option<MessageState>,
}

/// What one batch changes in the counters and their index, gathered while its writes are made
/// (each against the value it replaces), then written once per counter ([`Deltas::write`]).
#[derive(Default)]
pub(super) struct Deltas {
    by_key: HashMap<Vec<u8>, i64>,
    /// Uncertain emails' marks to set (true) or clear, in the order of the batch's writes.
    uncertain: Vec<(Vec<u8>, bool)>,
}

type Step = std::result::Result<(), ConflictableTransactionError<StoreError>>;

fn abort(error: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(error)
}

impl Deltas {
    fn add(&mut self, key: Vec<u8>, by: i64) {
        *self.by_key.entry(key).or_default() += by;
    }

    /// A lead written over `old` (its stored bytes, if it existed).
    pub(super) fn lead(&mut self, old: Option<&[u8]>, new: &Lead) -> Step {
        if let Some(old) = old {
            let old: StoredLead = codec::decode("lead", old).map_err(abort)?;
            self.person(old.stage, old.suppression.is_some(), -1);
        }
        self.person(new.stage, new.is_suppressed(), 1);
        Ok(())
    }

    fn person(&mut self, stage: Stage, suppressed: bool, by: i64) {
        self.add(store_key(LEADS), by);
        if stage >= Stage::Contact {
            self.add(store_key(CONTACTS), by);
        }
        if suppressed {
            self.add(store_key(SUPPRESSED), by);
        }
    }

    /// An enrollment written over `old`; `reported` is the latest event its lead reports
    /// through the API in this batch, if it does.
    pub(super) fn enrollment(
        &mut self,
        index: &TransactionalTree,
        old: Option<&StoredEnrollment>,
        new: &Enrollment,
        reported: Option<DateTime<Utc>>,
    ) -> Step {
        // Whether it is engaged by a reported event depends on when its lead last reported
        // one, read only when that can change what it counts (the usual step changes neither
        // the click nor the start, and nothing is reported).
        let depends = old.is_none_or(|old| {
            old.facts.clicked != new.facts.clicked || old.enrolled_at != new.enrolled_at
        }) || reported.is_some();
        let before = if depends {
            Self::tracked_before(index, &new.lead)?
        } else {
            None
        };
        let after = before.max(reported);
        let tracked = (before, after);
        let workflow = &new.workflow;
        if let Some(old) = old {
            let facts = &old.facts;
            self.place(workflow, &old.position.step, &old.status, -1);
            self.engaged(workflow, facts, -1);
            let engaged = engaged(facts.clicked, old.enrolled_at, tracked.0);
            self.funnel(workflow, !facts.sent.is_empty(), engaged, -1);
        } else {
            self.add(workflow_key(workflow, "", ENROLLED), 1);
        }
        let facts = &new.facts;
        self.place(workflow, &new.position.step, &new.status, 1);
        self.engaged(workflow, &Engaged::from(facts), 1);
        let engaged = engaged(facts.clicked, new.enrolled_at, tracked.1);
        self.funnel(workflow, !facts.sent.is_empty(), engaged, 1);
        Ok(())
    }

    fn funnel(&mut self, workflow: &str, emailed: bool, engaged: bool, by: i64) {
        if emailed {
            self.add(workflow_key(workflow, "", EMAILED), by);
        }
        if engaged {
            self.add(workflow_key(workflow, "", ENGAGED), by);
        }
    }

    /// When `lead` last reported an event through the API, as the index holds it.
    pub(super) fn tracked_before(
        index: &TransactionalTree,
        lead: &str,
    ) -> std::result::Result<Option<DateTime<Utc>>, UnabortableTransactionError> {
        Ok(index
            .get(tracked_mark(lead))?
            .and_then(|value| super::keys::time_from_bytes(&value)))
    }

    /// `lead` reported events through the API, the latest at `latest`: its mark moves, and its
    /// enrollments this batch does not write (`others`: workflow, clicked, began) may become
    /// engaged.
    pub(super) fn tracked(
        &mut self,
        index: &TransactionalTree,
        lead: &str,
        latest: DateTime<Utc>,
        others: &[(String, bool, DateTime<Utc>)],
    ) -> Step {
        let before = Self::tracked_before(index, lead)?;
        let after = before.map_or(latest, |at| at.max(latest));
        index.insert(tracked_mark(lead), &super::keys::time_bytes(after))?;
        for (workflow, clicked, enrolled_at) in others {
            let was = engaged(*clicked, *enrolled_at, before);
            let is = engaged(*clicked, *enrolled_at, Some(after));
            self.funnel(workflow, false, is, 1);
            self.funnel(workflow, false, was, -1);
        }
        Ok(())
    }

    fn place(&mut self, workflow: &str, step: &str, status: &Status, by: i64) {
        self.add(workflow_key(workflow, step, &status_figure(status)), by);
    }

    fn engaged(&mut self, workflow: &str, facts: &Engaged, by: i64) {
        if facts.replied {
            self.add(workflow_key(workflow, "", REPLIES), by);
        }
        if let Some(step) = &facts.replied_in {
            self.add(workflow_key(workflow, step, REPLIES), by);
        }
        if facts.auto_replied {
            self.add(workflow_key(workflow, "", AUTO_REPLIES), by);
        }
    }

    /// The email record `message_id` written over `old` (its stored bytes), or removed (`new`
    /// none); its uncertain mark follows when it becomes or stops being uncertain.
    pub(super) fn message(
        &mut self,
        message_id: &str,
        old: Option<&[u8]>,
        new: Option<&MessageRecord>,
    ) -> Step {
        let mut was_uncertain = false;
        if let Some(old) = old {
            let old: StoredEmail = codec::decode("message", old).map_err(abort)?;
            let state = old.state.ok_or_else(|| {
                abort(StoreError::Corrupt {
                    what: "message",
                    detail: "no state".into(),
                })
            })?;
            was_uncertain = state == MessageState::Uncertain;
            self.add(
                workflow_key(&old.workflow, &old.step, state_figure(state)),
                -1,
            );
        }
        let is_uncertain = new.is_some_and(|new| new.state == MessageState::Uncertain);
        if let Some(new) = new {
            self.add(
                workflow_key(&new.workflow, &new.step, state_figure(new.state)),
                1,
            );
        }
        if was_uncertain || is_uncertain {
            self.uncertain
                .push((uncertain_mark(message_id), is_uncertain));
        }
        Ok(())
    }

    /// An outbox entry written over `old` (its stored bytes), or removed (`new` none).
    pub(super) fn outbox(&mut self, old: Option<&[u8]>, new: Option<&OutboxEmail>) -> Step {
        if let Some(old) = old {
            let old: StoredEmail = codec::decode_header("outbox email", old).map_err(abort)?;
            self.add(workflow_key(&old.workflow, &old.step, QUEUED), -1);
        }
        if let Some(new) = new {
            self.add(workflow_key(&new.workflow, &new.step, QUEUED), 1);
        }
        Ok(())
    }

    /// A journal line of `lead`: a promotion or a complaint counts unless `index` says it
    /// already has for this lead and workflow.
    pub(super) fn event(&mut self, index: &TransactionalTree, lead: &str, event: &Event) -> Step {
        let Some(line) = line(event) else {
            return Ok(());
        };
        let workflow = event.workflow.as_deref();
        let key = |figure| match workflow {
            Some(workflow) => workflow_key(workflow, "", figure),
            None => store_key(figure),
        };
        match line {
            Line::Promoted => {
                // A promotion by hand (`nurture leads set`) is no workflow's doing.
                let Some(workflow) = workflow else {
                    return Ok(());
                };
                let mark = promotion_mark(lead, workflow);
                if index.insert(mark, &[])?.is_none() {
                    self.add(key(PROMOTED), 1);
                }
            }
            Line::Complaint => {
                if index.insert(complaint_mark(lead, workflow), &[])?.is_none() {
                    self.add(key(COMPLAINTS), 1);
                }
            }
            Line::SenderSide => self.add(key(SENDER_SIDE_REJECTIONS), 1),
            Line::Engaged(figure) => {
                if let (Some(workflow), Some(step)) = (workflow, engaged_step(event)) {
                    self.add(workflow_key(workflow, step, figure), 1);
                }
            }
        }
        Ok(())
    }

    /// Adds the deltas to the counters, and sets the uncertain marks, in the transaction.
    pub(super) fn write(self, counters: &TransactionalTree, index: &TransactionalTree) -> Step {
        for (key, delta) in self.by_key {
            if delta == 0 {
                continue;
            }
            let current = match counters.get(&key)? {
                Some(bytes) => count_of(&key, &bytes),
                None => 0,
            };
            let next = i128::from(current) + i128::from(delta);
            let next = u64::try_from(next).unwrap_or_else(|_| {
                // A counter the records disagree with: the batch still commits (the counters
                // are derived; the records are what matters), and the operator hears of it.
                warn!(
                    counter = %describe(&key),
                    current,
                    delta,
                    "a counter would go below zero; `nurture status --recount` counts the store again and repairs it"
                );
                0
            });
            if next == 0 {
                counters.remove(key)?;
            } else {
                counters.insert(key, &next.to_be_bytes())?;
            }
        }
        for (mark, set) in self.uncertain {
            if set {
                index.insert(mark, &[])?;
            } else {
                index.remove(mark)?;
            }
        }
        Ok(())
    }
}

/// The latest event each lead reports through the API in `batch`, by the lead's key.
pub(super) fn reported(batch: &super::Batch) -> HashMap<String, DateTime<Utc>> {
    let mut reported: HashMap<String, DateTime<Utc>> = HashMap::new();
    for (lead, event) in &batch.events {
        if let super::EventKind::Tracked { .. } = event.kind {
            let latest = reported
                .entry(email_key(lead).into_owned())
                .or_insert(event.at);
            *latest = (*latest).max(event.at);
        }
    }
    reported
}

/// The enrollments of `lead` that `batch` does not write, as (workflow, clicked, began).
pub(super) fn others(
    store: &SledStore,
    batch: &super::Batch,
    lead: &str,
) -> Result<Vec<(String, bool, DateTime<Utc>)>> {
    let written: BTreeSet<&str> = batch
        .enrollments
        .iter()
        .filter(|e| email_key(&e.lead) == lead)
        .map(|e| e.workflow.as_str())
        .collect();
    Ok(store
        .enrollments_of(lead)?
        .into_iter()
        .filter(|e| !written.contains(e.workflow.as_str()))
        .map(|e| (e.workflow, e.facts.clicked, e.enrolled_at))
        .collect())
}

/// A counter's value; a damaged one counts as zero, with a warning.
fn count_of(key: &[u8], bytes: &[u8]) -> u64 {
    match bytes.try_into() {
        Ok(array) => u64::from_be_bytes(array),
        Err(_) => {
            warn!(counter = %describe(key), "a counter is damaged; `nurture status --recount` counts the store again and repairs it");
            0
        }
    }
}

/// A counter's key for people: `workflow/step/figure`, or the store-wide figure's name.
pub fn describe(key: &[u8]) -> String {
    match key.split_first() {
        Some((&WORKFLOW_SCOPE, rest)) => {
            let parts: Vec<String> = rest
                .split(|b| *b == SEPARATOR)
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect();
            match parts.as_slice() {
                [workflow, step, figure] if step.is_empty() => format!("{workflow}: {figure}"),
                [workflow, step, figure] => format!("{workflow}, step {step}: {figure}"),
                _ => String::from_utf8_lossy(key).into_owned(),
            }
        }
        Some((&STORE_SCOPE, name)) => format!("store: {}", String::from_utf8_lossy(name)),
        _ => String::from_utf8_lossy(key).into_owned(),
    }
}

/// How the counters kept compare with a count of every record.
#[derive(Debug)]
pub struct Recounted {
    /// The figures counted from the records.
    pub counted: Counters,
    /// Each figure that differed: (what, kept, counted).
    pub differences: Vec<(String, u64, u64)>,
    /// Index entries (marks of promotions and complaints counted, uncertain emails) missing
    /// or extra.
    pub index_differences: usize,
    /// Whether the counters were rewritten from the count.
    pub repaired: bool,
}

impl SledStore {
    /// Every promotion counted, as (lead's address key, workflow): each lead once per workflow
    /// that promoted it, from the index the counters keep (not from every lead).
    pub fn promotions(&self) -> Result<Vec<(String, String)>> {
        let mut found = Vec::new();
        for entry in self.counters_index.scan_prefix([PROMOTION_MARK]) {
            let (key, _) = entry?;
            found.extend(promotion_of(&key));
        }
        Ok(found)
    }

    /// The figures kept in the counters, with the uncertain and in-flight emails, as of one
    /// instant: no batch commits while they are read (a few milliseconds).
    pub fn counters(&self) -> Result<Counters> {
        let _quiet = self.writers.write().unwrap_or_else(|e| e.into_inner());
        let mut counters = Counters::default();
        for entry in self.counters.iter() {
            let (key, value) = entry?;
            counters.add(&key, count_of(&key, &value))?;
        }
        for entry in self.counters_index.scan_prefix([UNCERTAIN_MARK]) {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key[1..]);
            if let Some(record) = self.message(&id)?
                && record.state == MessageState::Uncertain
            {
                counters.uncertain.push(record);
            }
        }
        counters.in_flight = self.in_flight_emails()?;
        Ok(counters)
    }

    /// Counts every figure from the records, compares it with the counters kept, and, when they
    /// differ and `repair` is set, rewrites them from the count. No batch commits meanwhile
    /// (seconds per million leads), so the count is of one instant.
    pub fn recount(&self, repair: bool) -> Result<Recounted> {
        let _quiet = self.writers.write().unwrap_or_else(|e| e.into_inner());
        let (mut counted, index) = recount(&super::Store::Sled(Box::new(self.clone())))?;
        counted.in_flight = self.in_flight_emails()?;
        let kept = read_entries(&self.counters)?;
        let entries = counted.entries();
        let mut differences = Vec::new();
        let keys: BTreeSet<&Vec<u8>> = kept.keys().chain(entries.keys()).collect();
        for key in keys {
            let (was, is) = (
                kept.get(key).copied().unwrap_or(0),
                entries.get(key).copied().unwrap_or(0),
            );
            if was != is {
                differences.push((describe(key), was, is));
            }
        }
        let kept_index: BTreeMap<Vec<u8>, Vec<u8>> = self
            .counters_index
            .iter()
            .map(|entry| entry.map(|(key, value)| (key.to_vec(), value.to_vec())))
            .collect::<std::result::Result<_, _>>()?;
        let index_differences = kept_index
            .keys()
            .chain(index.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|key| kept_index.get(*key) != index.get(*key))
            .count();
        let repaired = repair && (!differences.is_empty() || index_differences > 0);
        if repaired {
            write_all(self, &entries, &index)?;
        }
        Ok(Recounted {
            counted,
            differences,
            index_differences,
            repaired,
        })
    }

    /// Every email listed in flight.
    fn in_flight_emails(&self) -> Result<Vec<OutboxEmail>> {
        Ok(self
            .in_flight()?
            .into_iter()
            .flat_map(|(_, emails)| emails)
            .collect())
    }
}

fn read_entries(tree: &Tree) -> Result<BTreeMap<Vec<u8>, u64>> {
    let mut entries = BTreeMap::new();
    for entry in tree.iter() {
        let (key, value) = entry?;
        let count = count_of(&key, &value);
        entries.insert(key.to_vec(), count);
    }
    Ok(entries)
}

/// Replaces the counters and their index with `entries` and `index`, in one transaction.
fn write_all(
    store: &SledStore,
    entries: &BTreeMap<Vec<u8>, u64>,
    index: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<()> {
    // Nothing else writes meanwhile (the caller holds the writers' lock, or the store is being
    // opened), so the keys to drop can be listed before the transaction.
    let old: Vec<sled::IVec> = store
        .counters
        .iter()
        .keys()
        .collect::<std::result::Result<_, _>>()?;
    let old_index: Vec<sled::IVec> = store
        .counters_index
        .iter()
        .keys()
        .collect::<std::result::Result<_, _>>()?;
    (&store.counters, &store.counters_index)
        .transaction(|(counters, counters_index)| {
            for key in &old {
                counters.remove(key)?;
            }
            for key in &old_index {
                counters_index.remove(key)?;
            }
            for (key, count) in entries {
                counters.insert(key.as_slice(), &count.to_be_bytes())?;
            }
            for (key, value) in index {
                counters_index.insert(key.as_slice(), value.as_slice())?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })
        .map_err(super::flatten)
}

/// Builds the counters of a store written before they existed (the upgrade to schema 3).
pub(super) fn build(store: &SledStore) -> Result<()> {
    let (counted, index) = recount(&super::Store::Sled(Box::new(store.clone())))?;
    write_all(store, &counted.entries(), &index)
}

/// The (lead, workflow) pairs a recount's index counted as promotions.
pub fn promotions_in(index: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<(String, String)> {
    index
        .range(vec![PROMOTION_MARK]..vec![PROMOTION_MARK + 1])
        .filter_map(|(key, _)| promotion_of(key))
        .collect()
}

/// The (lead, workflow) of a promotion's index key (`p ‖ lead ‖ 0 ‖ workflow`).
fn promotion_of(key: &[u8]) -> Option<(String, String)> {
    let rest = &key[1..];
    let split = rest.iter().position(|&b| b == SEPARATOR)?;
    Some((
        String::from_utf8_lossy(&rest[..split]).into_owned(),
        String::from_utf8_lossy(&rest[split + 1..]).into_owned(),
    ))
}

#[cfg(test)]
mod tests;
