//! The interpreter: `enroll` and `advance`, pure functions from (workflow, enrollment, lead,
//! input, now) to effects and new state.
//!
//! The host performs the effects (render and send an email, notify someone, write the journal)
//! and persists the returned enrollment and lead. The engine itself never reads a clock, a file
//! or the network, which is how the daemon and the dry-run run the very same code.
//!
//! Rules the interpreter keeps:
//! - **Goals.** A workflow's `exit when …` is checked at every wake-up, at the start of every
//!   step, when the sequence stops to wait, after every handler, and when the lead changed
//!   elsewhere ([`Input::LeadChanged`]); a lead that meets it leaves with
//!   [`ExitReason::GoalReached`]. The statements of one step run together: a step's own `tag`
//!   does not stop the `send` after it in the same step.
//! - **Finished enrollments still hear about their emails.** A reply (or an auto-reply, a
//!   bounce, an unsubscribe request) to an email of a completed or exited enrollment runs the
//!   handler's actions that neither send nor move: `promote`, `notify`, `tag`, `untag`, `set`,
//!   `score`, and the `if`s around them. `exit` only ends the handler, `goto` and `pause until
//!   return` do nothing: the sequence never resumes and nothing more is sent.
//! - **Out-of-office pauses are capped** at [`RETURN_DATE_CAP_DAYS`] after the auto-reply, so a
//!   return date of 31.12.9999 cannot pause a lead for good; the pause says it was capped.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde::Serialize;

use crate::lead::{Lead, Stage, Value};
use crate::scoring::Temperature;
use crate::workflow::{
    Action, DateExpr, Instr, NotifyTarget, Wait, WaitLength, Weekdays, WindowZone, Workflow,
};

use super::calendar;
use super::condition::{self, Clock, Observation};
use super::resume::{self, Resume};
use super::state::{Enrollment, ExitReason, Facts, Position, Status};

/// How many instructions one `advance` may run before it is stopped. A workflow that loops
/// without a `wait` is refused by the checker; this guards the daemon against anything else.
pub const INSTRUCTION_BUDGET: usize = 10_000;

/// `pause until return` waits at most this many days after the auto-reply, whatever return
/// date it gave.
pub const RETURN_DATE_CAP_DAYS: i64 = 90;

/// What happened to, or about, an enrollment.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The enrollment's due time was reached.
    Due,
    /// A human reply from the lead.
    Reply,
    /// An automatic answer; an out-of-office may say when the person is back.
    AutoReply {
        return_date: Option<NaiveDate>,
    },
    /// A bounce: permanent (5.x.x) or transient (4.x.x).
    Bounce {
        permanent: bool,
    },
    Unsubscribe,
    /// A person (not a machine) clicked a tracked link of this workflow's email of `step`;
    /// `link`: the link's name, when it has one.
    Click {
        step: String,
        link: Option<String>,
    },
    /// A person (not a machine) opened this workflow's email of `step`.
    Open {
        step: String,
    },
    /// The lead did `event` (reported through the API) at `at`.
    Did {
        event: String,
        at: DateTime<Utc>,
    },
    /// The lead's temperature changed to this one (`when lead becomes …`).
    Became(Temperature),
    /// The lead's data changed outside this enrollment (an import, an edit by hand, another
    /// workflow's action): only the goal is checked.
    LeadChanged,
}

/// Something the host must do or record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// An input arrived ("reply received").
    Received {
        what: String,
    },
    /// Render and send this email now.
    Send(PlannedEmail),
    /// A branch was taken, and why.
    Decision {
        step: String,
        condition: String,
        observed: Vec<Observation>,
        result: bool,
    },
    /// The lead's data changed: `tag "engaged"`, `score +10 (12 → 22)`.
    LeadChanged {
        change: String,
    },
    Promoted {
        stage: Stage,
    },
    /// Tell someone about this lead.
    Notify {
        to: String,
        reason: String,
    },
    /// Nothing more until `until`.
    Waiting {
        until: DateTime<Utc>,
        reason: String,
    },
    /// A `send … expires` reached after its expiry: the email is not sent, the sequence goes on.
    Expired {
        step: String,
        template: String,
        /// The moment it expired.
        expired: DateTime<Utc>,
        /// Its expiry as written (`lead.offer_ends`).
        expires: String,
    },
    /// An out-of-office paused the sequence until `until` (journaled, unlike a step's `wait`).
    Paused {
        until: DateTime<Utc>,
        reason: String,
    },
    Completed,
    Exited {
        reason: ExitReason,
    },
}

/// An email the engine decided to send; the host renders it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedEmail {
    pub step: String,
    pub template: String,
    /// The subject as a template, rendered by the host for the lead.
    pub subject_template: String,
    /// Set when a send window moved this email.
    pub shifted: Option<Shift>,
    /// `send … expires`: the expiry for this lead, and as written (kept with the email in
    /// the outbox; the dry-run shows an expiry when it is reached, as `expired`).
    #[serde(skip)]
    pub expires: Option<(DateTime<Utc>, String)>,
}

/// A send moved from `from` to `to`, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shift {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reason: String,
}

/// The result of one `advance`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub effects: Vec<Effect>,
    pub enrollment: Enrollment,
    /// The lead with `set`, `tag`, `score` and `promote` applied.
    pub lead: Lead,
}

/// A new enrollment at the start of the first step, due now.
pub fn enroll(workflow: &Workflow, lead: &Lead, now: DateTime<Utc>) -> Enrollment {
    Enrollment {
        workflow: workflow.name.clone(),
        version: workflow.version.clone(),
        lead: lead.email.clone(),
        status: Status::Active,
        position: workflow
            .steps
            .first()
            .map_or_else(|| Position::new(String::new(), 0), Position::start),
        due: Some(now),
        enrolled_at: now,
        updated_at: now,
        deferred_from: None,
        facts: Facts::default(),
    }
}

/// Whether `lead` meets `workflow`'s goal (`exit when …`) at `now`; `false` without a goal.
pub fn goal_reached(workflow: &Workflow, lead: &Lead, facts: &Facts, now: DateTime<Utc>) -> bool {
    workflow.goal.as_ref().is_some_and(|goal| {
        let clock = clock(workflow, lead, now);
        condition::evaluate(&goal.condition, lead, facts, clock, &mut Vec::new())
    })
}

/// The clock `lead`'s conditions and dates are read on at `now`: the lead's zone, else the
/// workflow's.
pub fn clock<'a>(workflow: &'a Workflow, lead: &Lead, now: DateTime<Utc>) -> Clock<'a> {
    Clock {
        now,
        zone: calendar::zone_for(workflow, lead, WindowZone::Lead),
        scoring: &workflow.scoring,
    }
}

/// Applies `input` at `now`: runs the program or a handler and returns what to do.
///
/// An enrollment that has ended (completed or exited) only hears about its emails: see the
/// module's rules.
pub fn advance(
    workflow: &Workflow,
    enrollment: &Enrollment,
    lead: &Lead,
    input: &Input,
    now: DateTime<Utc>,
) -> Outcome {
    let mut run = Run {
        workflow,
        enrollment: enrollment.clone(),
        lead: lead.clone(),
        effects: Vec::new(),
        now,
        finished: !enrollment.is_active(),
        replay: None,
    };
    run.apply(input);
    if !run.finished {
        // Whatever just ran may have brought the lead to the goal: it leaves now rather than at
        // its next step (and the dry-run shows it where the daemon does it).
        run.reached_goal();
    }
    if !run.finished || !run.effects.is_empty() {
        run.enrollment.version = workflow.version.clone();
        run.enrollment.updated_at = now;
    }
    Outcome {
        effects: run.effects,
        enrollment: run.enrollment,
        lead: run.lead,
    }
}

/// The working state of one `advance`.
struct Run<'a> {
    workflow: &'a Workflow,
    enrollment: Enrollment,
    lead: Lead,
    effects: Vec<Effect>,
    now: DateTime<Utc>,
    /// The enrollment had ended before this `advance`: handlers run without sending or moving.
    finished: bool,
    /// Set while an enrollment whose step changed replays up to where it stood.
    replay: Option<Replay>,
}

/// What is left of a replay (see [`resume`]).
struct Replay {
    /// Waits still to count as already waited.
    waits: u32,
    /// The enrollment was held at a send by the window: the replay lasts until a send.
    to_send: bool,
}

impl Run<'_> {
    fn apply(&mut self, input: &Input) {
        match input {
            Input::Due => {
                // Idempotent: a second wake-up for the same slot (a DST double fire, a restart)
                // finds the enrollment not yet due and does nothing.
                if self.enrollment.due.is_some_and(|due| due <= self.now) {
                    self.run_program();
                }
            }
            Input::Reply => {
                self.received("reply");
                if !self.enrollment.facts.replied {
                    self.enrollment.facts.replied_in = Some(self.enrollment.position.step.clone());
                }
                self.enrollment.facts.replied = true;
                let code = &self.workflow.handlers.reply;
                self.run_handler("on reply", code, ExitReason::Replied, None);
            }
            Input::AutoReply { return_date } => {
                self.received("auto-reply");
                self.enrollment.facts.auto_replied = true;
                let code = &self.workflow.handlers.auto_reply;
                self.run_handler("on auto-reply", code, ExitReason::AutoReplied, *return_date);
            }
            Input::Bounce { permanent } => {
                self.received(if *permanent {
                    "permanent bounce"
                } else {
                    "transient bounce"
                });
                let code = &self.workflow.handlers.bounce;
                self.run_handler("on bounce", code, ExitReason::Bounced, None);
                // A permanent bounce suppresses the address: nothing can be sent any more.
                if *permanent {
                    self.exit(ExitReason::Bounced);
                }
            }
            Input::Unsubscribe => {
                self.received("unsubscribe request");
                let code = &self.workflow.handlers.unsubscribe;
                self.run_handler("on unsubscribe", code, ExitReason::Unsubscribed, None);
                self.exit(ExitReason::Unsubscribed);
            }
            Input::Click { step, link } => {
                self.received(&match link {
                    Some(name) => format!("click on link `{name}` of `{step}`"),
                    None => format!("click on a link of `{step}`"),
                });
                let facts = &mut self.enrollment.facts;
                facts.clicked = true;
                add_once(&mut facts.clicked_steps, step);
                if let Some(name) = link {
                    add_once(&mut facts.clicked_links, name);
                }
                let code = &self.workflow.handlers.click;
                self.run_handler("on click", code, ExitReason::WorkflowExit, None);
                self.wake_on_action();
            }
            Input::Open { step } => {
                self.received(&format!("open of `{step}`"));
                add_once(&mut self.enrollment.facts.opened, step);
                self.wake_on_action();
            }
            Input::Did { event, at } => {
                self.received(&format!("event `{event}`"));
                let did = &mut self.enrollment.facts.did;
                match did.iter_mut().find(|(name, _)| name == event) {
                    Some((_, last)) => *last = (*last).max(*at),
                    None => did.push((event.clone(), *at)),
                }
                self.wake_on_action();
            }
            Input::Became(temperature) => {
                let Some((_, code)) = self
                    .workflow
                    .handlers
                    .became
                    .iter()
                    .find(|(when, _)| when == temperature)
                else {
                    return;
                };
                self.received(&format!("lead became {temperature}"));
                let handler = format!("when lead becomes {temperature}");
                self.run_handler(&handler, code, ExitReason::WorkflowExit, None);
            }
            // The goal check after every input is all there is to do.
            Input::LeadChanged => {}
        }
    }

    /// An enrollment waiting at `wait until lead … or …` goes on now if what it waits for has
    /// happened.
    fn wake_on_action(&mut self) {
        if self.finished || !self.enrollment.is_active() {
            return;
        }
        let position = &self.enrollment.position;
        let waiting_for = self
            .workflow
            .step_index(&position.step)
            .and_then(|index| position.pc.checked_sub(1).map(|pc| (index, pc)))
            .and_then(|(index, pc)| self.workflow.steps[index].code.get(pc));
        let Some(Instr::Wait(Wait::UntilAction { action, .. })) = waiting_for else {
            return;
        };
        let pending = self.enrollment.due.is_some_and(|due| due > self.now);
        if pending && condition::engaged(action, &self.enrollment.facts, self.now) {
            self.enrollment.due = Some(self.now);
            self.run_program();
        }
    }

    /// Ends an active enrollment whose lead meets the workflow's goal; whether it did.
    fn reached_goal(&mut self) -> bool {
        let Some(goal) = &self.workflow.goal else {
            return false;
        };
        if !self.enrollment.is_active()
            || !goal_reached(self.workflow, &self.lead, &self.enrollment.facts, self.now)
        {
            return false;
        }
        self.exit(ExitReason::GoalReached(goal.text.clone()));
        true
    }

    fn received(&mut self, what: &str) {
        self.effects.push(Effect::Received {
            what: what.to_string(),
        });
    }

    /// Runs a handler's code. `exit` ends the enrollment with `reason`; `goto` continues the
    /// sequence at that step now; falling off the end continues the sequence as it was. On a
    /// finished enrollment, `exit` and `goto` only end the handler.
    fn run_handler(
        &mut self,
        handler: &str,
        code: &[Instr],
        reason: ExitReason,
        return_date: Option<NaiveDate>,
    ) {
        let mut pc = 0;
        for _ in 0..INSTRUCTION_BUDGET {
            // The handler ended the enrollment (a permanent bounce, `exit`): nothing after it runs.
            if !self.finished && !self.enrollment.is_active() {
                return;
            }
            let Some(instr) = code.get(pc) else { return };
            pc += 1;
            match instr {
                Instr::Act(action) => self.act(action, handler),
                Instr::Exit => return self.exit(reason),
                Instr::Jump(target) => pc = *target,
                Instr::Branch {
                    condition,
                    text,
                    else_to,
                } => {
                    if !self.decide(handler, condition, text) {
                        pc = *else_to;
                    }
                }
                // A finished sequence never resumes.
                Instr::Goto(_) if self.finished => return,
                Instr::Goto(step) => {
                    self.enrollment.position = Position::start(&self.workflow.steps[*step]);
                    self.enrollment.due = Some(self.now);
                    return self.run_program();
                }
                Instr::PauseUntilReturn => self.pause_until(return_date),
                // The checker refuses `send` and `wait` in handlers.
                Instr::Send(_) | Instr::Wait(_) => {}
            }
        }
    }

    /// Moves the next wake-up to the return date (midnight on the lead's clock), at most
    /// [`RETURN_DATE_CAP_DAYS`] after now; never earlier than it already was.
    fn pause_until(&mut self, return_date: Option<NaiveDate>) {
        let Some(date) = return_date else { return };
        // A finished enrollment has no next step to put off.
        if self.finished {
            return;
        }
        let zone = calendar::zone_for(self.workflow, &self.lead, WindowZone::Lead);
        let cap = self.now + Duration::days(RETURN_DATE_CAP_DAYS);
        let back = calendar::resolve_local(zone, date.and_time(NaiveTime::MIN));
        let (back, reason) = if back > cap {
            (
                cap,
                format!(
                    "out of office until {date}: paused for {RETURN_DATE_CAP_DAYS} days at most"
                ),
            )
        } else {
            (back, format!("out of office until {date}: paused"))
        };
        let due = self.enrollment.due.map_or(back, |due| due.max(back));
        if Some(due) != self.enrollment.due {
            self.enrollment.due = Some(due);
            self.effects.push(Effect::Paused { until: due, reason });
        }
    }

    /// Runs the sequence from the enrollment's position until a wait, the end, or an exit.
    /// The goal is checked first, and again at the start of every step.
    fn run_program(&mut self) {
        let mut new_step = true;
        for _ in 0..INSTRUCTION_BUDGET {
            if !self.enrollment.is_active() {
                return;
            }
            if std::mem::take(&mut new_step) && self.reached_goal() {
                return;
            }
            let Some(step_index) = self.workflow.step_index(&self.enrollment.position.step) else {
                let removed = self.enrollment.position.step.clone();
                return self.exit(ExitReason::StepRemoved(removed));
            };
            let workflow = self.workflow;
            let step = &workflow.steps[step_index];
            if resume::changed(step, &self.enrollment.position) {
                self.relocate(step);
            }
            let pc = self.enrollment.position.pc;
            let Some(instr) = step.code.get(pc) else {
                self.replay = None;
                match self.workflow.steps.get(step_index + 1) {
                    Some(next) => {
                        self.enrollment.position = Position::start(next);
                        new_step = true;
                        continue;
                    }
                    None => return self.complete(),
                }
            };
            self.enrollment.position.pc = pc + 1;
            match instr {
                Instr::Send(send) => {
                    self.replay = None;
                    if let Some(expired) = self.expired(send) {
                        // Checked when the send is reached and again when a closed send window
                        // opens, so an offer that ended in between is not announced.
                        self.enrollment.deferred_from = None;
                        self.effects.push(Effect::Expired {
                            step: step.name.clone(),
                            template: send.template.clone(),
                            expired,
                            expires: send
                                .expires
                                .as_ref()
                                .map_or_else(String::new, |date| date.text.clone()),
                        });
                        continue;
                    }
                    if let Some(window) = &self.workflow.window {
                        let zone = calendar::zone_for(self.workflow, &self.lead, window.zone);
                        let opens = calendar::next_window_opening(window, zone, self.now);
                        if opens > self.now {
                            // Stay on this send; remember when it was first due.
                            self.enrollment.position.pc = pc;
                            self.enrollment.deferred_from.get_or_insert(self.now);
                            self.enrollment.due = Some(opens);
                            self.effects.push(Effect::Waiting {
                                until: opens,
                                reason: "send window".to_string(),
                            });
                            return;
                        }
                    }
                    let shifted = self.enrollment.deferred_from.take().map(|from| Shift {
                        from,
                        to: self.now,
                        reason: "send window".to_string(),
                    });
                    self.enrollment.facts.sent.push(send.template.clone());
                    self.enrollment.position.sent.push(send.template.clone());
                    self.enrollment.position.waited = 0;
                    let expires = send
                        .expires
                        .as_ref()
                        .and_then(|date| Some((self.date(date)?, date.text.clone())));
                    self.effects.push(Effect::Send(PlannedEmail {
                        step: step.name.clone(),
                        template: send.template.clone(),
                        subject_template: send.subject.clone(),
                        shifted,
                        expires,
                    }));
                }
                Instr::Wait(wait) => {
                    let position = &mut self.enrollment.position;
                    position.waited = position.waited.saturating_add(1);
                    if let Some(replay) = &mut self.replay
                        && replay.waits > 0
                    {
                        // Already waited out before the step changed.
                        replay.waits -= 1;
                        if replay.waits == 0 && !replay.to_send {
                            self.replay = None;
                        }
                        continue;
                    }
                    self.replay = None;
                    // What it waits for has already happened: no reason to wait.
                    if let Wait::UntilAction { action, .. } = wait
                        && condition::engaged(action, &self.enrollment.facts, self.now)
                    {
                        continue;
                    }
                    let until = match wait {
                        // A date that has passed, or that the lead does not have: no wait.
                        Wait::UntilDate(date) => match self.date(date) {
                            Some(until) if until > self.now => until,
                            _ => continue,
                        },
                        _ => {
                            let zone =
                                calendar::zone_for(self.workflow, &self.lead, WindowZone::Lead);
                            calendar::wait_end(wait, zone, self.now)
                        }
                    };
                    self.enrollment.due = Some(until);
                    self.effects.push(Effect::Waiting {
                        until,
                        reason: describe_wait(wait),
                    });
                    return;
                }
                Instr::Branch {
                    condition,
                    text,
                    else_to,
                } => {
                    let step_name = step.name.clone();
                    if !self.decide(&step_name, condition, text) {
                        self.enrollment.position.pc = *else_to;
                    }
                }
                Instr::Jump(target) => self.enrollment.position.pc = *target,
                // Done before the step changed.
                Instr::Act(_) if self.replay.is_some() => {}
                Instr::Act(action) => {
                    let step_name = step.name.clone();
                    self.act(action, &format!("step `{step_name}`"));
                }
                Instr::Goto(target) => {
                    self.replay = None;
                    self.enrollment.position = Position::start(&self.workflow.steps[*target]);
                    new_step = true;
                }
                Instr::Exit => return self.exit(ExitReason::WorkflowExit),
                // Only meaningful in `on auto-reply`; the checker refuses it in steps.
                Instr::PauseUntilReturn => {}
            }
        }
        self.exit(ExitReason::LoopLimit);
    }

    /// The step's instructions changed since the position was recorded: finds the place again
    /// (see [`resume`]) and starts the replay up to it.
    fn relocate(&mut self, step: &crate::workflow::Step) {
        let to_send = self.enrollment.deferred_from.is_some();
        let position = &mut self.enrollment.position;
        match resume::resume(step, position) {
            Resume::Start => *position = Position::start(step),
            Resume::Replay { pc, waits, .. } => {
                position.pc = pc;
                position.waited = 0;
                self.replay = Some(Replay { waits, to_send });
            }
            Resume::NextStep { .. } => position.pc = step.code.len(),
        }
        position.shape = Some(step.shape.clone());
    }

    /// The moment `date` names for this lead now; `None` without it.
    fn date(&self, date: &DateExpr) -> Option<DateTime<Utc>> {
        let clock = clock(self.workflow, &self.lead, self.now);
        condition::date_of(date, &self.lead, clock, &mut Vec::new())
    }

    /// When `send` has an expiry that is not after now, that expiry. An expiry the lead has no
    /// date for does not hold the email back.
    fn expired(&self, send: &crate::workflow::Send) -> Option<DateTime<Utc>> {
        let expired = self.date(send.expires.as_ref()?)?;
        (expired <= self.now).then_some(expired)
    }

    fn decide(&mut self, step: &str, condition: &crate::workflow::Condition, text: &str) -> bool {
        let mut observed = Vec::new();
        let clock = clock(self.workflow, &self.lead, self.now);
        let result = condition::evaluate(
            condition,
            &self.lead,
            &self.enrollment.facts,
            clock,
            &mut observed,
        );
        self.effects.push(Effect::Decision {
            step: step.to_string(),
            condition: text.to_string(),
            observed,
            result,
        });
        result
    }

    fn act(&mut self, action: &Action, context: &str) {
        let change = match action {
            Action::Set { field, value } => match self.lead.set_field(field, value.clone()) {
                Ok(()) => format!("set lead.{field} to {value}"),
                Err(error) => format!("could not set lead.{field}: {error}"),
            },
            Action::SetDate { field, value } => match self.date(value) {
                Some(at) => {
                    let text = crate::dates::canonical_instant(at);
                    // Only built-in fields refuse a value, and the compiler refuses those.
                    let _ = self.lead.set_field(field, Value::Text(text.clone()));
                    format!("set lead.{field} to {text} ({})", value.text)
                }
                None => format!("could not set lead.{field}: {} has no date", value.text),
            },
            Action::Tag(tag) => {
                self.lead.tags.insert(tag.clone());
                format!("tag \"{tag}\"")
            }
            Action::Untag(tag) => {
                self.lead.tags.remove(tag);
                format!("untag \"{tag}\"")
            }
            Action::Score(delta) => {
                // A fading score fades up to now before the change, and fades from now on.
                let scoring = &self.workflow.scoring;
                let before = scoring.score(&self.lead, self.now);
                if scoring.half_life_days.is_some() {
                    self.lead.score_at = Some(self.now);
                }
                self.lead.score = before.saturating_add(*delta);
                format!("score {delta:+} ({before} → {})", self.lead.score)
            }
            Action::Promote(stage) => {
                if self.lead.promote(*stage) {
                    self.effects.push(Effect::Promoted { stage: *stage });
                }
                return;
            }
            Action::Notify(target) => {
                let to = match target {
                    NotifyTarget::Owner => self.workflow.owner.as_ref(),
                    NotifyTarget::Address(mailbox) => Some(mailbox),
                };
                // The checker refuses `notify owner` without an owner.
                if let Some(to) = to {
                    self.effects.push(Effect::Notify {
                        to: to.to_string(),
                        reason: format!("{}, {context}", self.workflow.name),
                    });
                }
                return;
            }
        };
        self.lead.updated_at = self.now;
        self.effects.push(Effect::LeadChanged { change });
    }

    fn complete(&mut self) {
        self.enrollment.status = Status::Completed;
        self.enrollment.due = None;
        self.effects.push(Effect::Completed);
    }

    fn exit(&mut self, reason: ExitReason) {
        if !self.enrollment.is_active() {
            return;
        }
        self.enrollment.status = Status::Exited(reason.clone());
        self.enrollment.due = None;
        self.effects.push(Effect::Exited { reason });
    }
}

/// A wait as the marketer wrote it: "wait 2 days", "wait until cron \"0 9 * * MON\"".
pub fn describe_wait(wait: &Wait) -> String {
    let plural = |n: u32, unit: &str| {
        if n == 1 {
            format!("wait 1 {unit}")
        } else {
            format!("wait {n} {unit}s")
        }
    };
    match wait {
        Wait::For(WaitLength::Minutes(n)) => plural(*n, "minute"),
        Wait::For(WaitLength::Hours(n)) => plural(*n, "hour"),
        Wait::For(WaitLength::Days(n)) => plural(*n, "day"),
        Wait::For(WaitLength::Weeks(n)) => plural(*n, "week"),
        Wait::BusinessDays(n) => plural(*n, "business day"),
        Wait::UntilWeekday { days, time } if *days == Weekdays::ALL => {
            format!("wait until {}", time.format("%H:%M"))
        }
        Wait::UntilWeekday { days, time } => {
            format!("wait until {days} {}", time.format("%H:%M"))
        }
        Wait::UntilCron(slot) => format!("wait until cron \"{slot}\""),
        Wait::UntilDate(date) => format!("wait until {}", date.text),
        Wait::UntilAction { action, timeout } => format!("wait until lead {action} or {timeout}"),
    }
}

/// Adds `item` to `list` unless it is there already.
fn add_once(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|present| present == item) {
        list.push(item.to_string());
    }
}
