//! The dry-run's virtual clock: drives `enroll` and `advance` exactly as the daemon will, jumping
//! from one due time to the next, and injects the scenario's replies, bounces and the like.
//! A scripted answer that comes after the sequence ended still arrives, as it would at the
//! daemon: a reply to the last email promotes the lead all the same.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

use crate::lead::Lead;
use crate::workflow::Workflow;

use super::run::{Effect, Input, advance, enroll};
use super::state::{ExitReason, Status};

/// When a scenario event happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// One hour after the first email of this step is sent.
    AfterStep(String),
    /// This long after the start.
    After(Duration),
}

/// What the previewed lead does, to see each branch of a workflow.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    pub reply: Option<Trigger>,
    /// With the return date an out-of-office may give.
    pub auto_reply: Option<(Trigger, Option<NaiveDate>)>,
    pub bounce: Option<Trigger>,
    pub unsubscribe: Option<Trigger>,
    /// A person clicks a link of each of these steps' emails, one hour after it is sent.
    pub clicks: Vec<String>,
    /// A person opens each of these steps' emails, one hour after it is sent.
    pub opens: Vec<String>,
    /// The lead does each of these (an event the API would report) this long after the start.
    pub events: Vec<(String, Duration)>,
}

/// How long after a step's email a scripted answer arrives.
pub const ANSWER_DELAY: Duration = Duration::hours(1);

#[derive(Debug, Clone, Serialize)]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub effect: Effect,
    /// For sends: the lead as it is at that moment, to render the email.
    #[serde(skip)]
    pub lead: Option<Lead>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum Ending {
    Completed {
        at: DateTime<Utc>,
    },
    Exited {
        at: DateTime<Utc>,
        reason: ExitReason,
    },
    /// Still running when the preview stopped.
    Active {
        next_due: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub workflow: String,
    pub lead: String,
    pub enrolled_at: DateTime<Utc>,
    pub events: Vec<TimelineEvent>,
    pub ending: Ending,
    /// The lead at the end (stage, tags, score after the workflow's actions).
    #[serde(skip)]
    pub final_lead: Lead,
}

/// Runs `workflow` for `lead` from `start` until `until` on a virtual clock.
pub fn simulate(
    workflow: &Workflow,
    lead: &Lead,
    start: DateTime<Utc>,
    until: DateTime<Utc>,
    scenario: &Scenario,
) -> Timeline {
    let mut pending: Vec<Scripted> = Vec::new();
    let mut add = |trigger: &Option<Trigger>, input: Input| {
        if let Some(trigger) = trigger {
            pending.push(Scripted::new(trigger, input, start));
        }
    };
    add(&scenario.reply, Input::Reply);
    add(&scenario.bounce, Input::Bounce { permanent: true });
    add(&scenario.unsubscribe, Input::Unsubscribe);
    for step in &scenario.clicks {
        let trigger = Trigger::AfterStep(step.clone());
        let input = Input::Click {
            step: step.clone(),
            link: None,
        };
        pending.push(Scripted::new(&trigger, input, start));
    }
    for step in &scenario.opens {
        let trigger = Trigger::AfterStep(step.clone());
        let input = Input::Open { step: step.clone() };
        pending.push(Scripted::new(&trigger, input, start));
    }
    for (event, after) in &scenario.events {
        let input = Input::Did {
            event: event.clone(),
            at: start + *after,
        };
        pending.push(Scripted::new(&Trigger::After(*after), input, start));
    }
    if let Some((trigger, return_date)) = &scenario.auto_reply {
        pending.push(Scripted::new(
            trigger,
            Input::AutoReply {
                return_date: *return_date,
            },
            start,
        ));
    }

    let mut enrollment = enroll(workflow, lead, start);
    let mut lead = lead.clone();
    let mut events = Vec::new();
    let mut ended_at = start;
    loop {
        let active = enrollment.status == Status::Active;
        let due = enrollment.due.filter(|due| active && *due <= until);
        let scripted = pending
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.at.filter(|at| *at <= until).map(|at| (at, i)))
            .min();
        // A scripted answer at the same moment as a due step comes first, as mail that is
        // already in the inbox would.
        let (at, input) = match (due, scripted) {
            (Some(due), Some((at, _))) if at > due => (due, Input::Due),
            (_, Some((at, i))) => (at, pending.remove(i).input),
            (Some(due), None) => (due, Input::Due),
            (None, None) => break,
        };
        let outcome = advance(workflow, &enrollment, &lead, &input, at);
        for effect in outcome.effects {
            if let Effect::Send(email) = &effect {
                for scripted in pending.iter_mut() {
                    scripted.step_sent(&email.step, at);
                }
            }
            let snapshot = matches!(effect, Effect::Send(_)).then(|| outcome.lead.clone());
            events.push(TimelineEvent {
                at,
                effect,
                lead: snapshot,
            });
        }
        enrollment = outcome.enrollment;
        lead = outcome.lead;
        if active {
            ended_at = at;
        }
    }
    let ending = match &enrollment.status {
        Status::Active => Ending::Active {
            next_due: enrollment.due,
        },
        Status::Completed => Ending::Completed { at: ended_at },
        Status::Exited(reason) => Ending::Exited {
            at: ended_at,
            reason: reason.clone(),
        },
    };
    Timeline {
        workflow: workflow.name.clone(),
        lead: lead.email.clone(),
        enrolled_at: start,
        events,
        ending,
        final_lead: lead,
    }
}

/// A scenario event waiting for its moment.
struct Scripted {
    /// Known once the trigger's step has sent (or at once for a fixed delay).
    at: Option<DateTime<Utc>>,
    after_step: Option<String>,
    input: Input,
}

impl Scripted {
    fn new(trigger: &Trigger, input: Input, start: DateTime<Utc>) -> Scripted {
        match trigger {
            Trigger::After(delay) => Scripted {
                at: Some(start + *delay),
                after_step: None,
                input,
            },
            Trigger::AfterStep(step) => Scripted {
                at: None,
                after_step: Some(step.clone()),
                input,
            },
        }
    }

    fn step_sent(&mut self, step: &str, at: DateTime<Utc>) {
        if self.at.is_none() && self.after_step.as_deref() == Some(step) {
            self.at = Some(at + ANSWER_DELAY);
        }
    }
}
