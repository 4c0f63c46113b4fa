//! An enrollment's state: one lead in one workflow, where it stands, and what it has seen.
//!
//! This is what the store persists, so it is plain serde data. The position names the step
//! rather than its index, so an edited workflow whose step still exists lets the enrollment
//! continue; a removed step ends it with a reason.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::workflow::Step;

/// One lead in one workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enrollment {
    pub workflow: String,
    /// The workflow version (`Workflow::version`) it last ran under.
    pub version: String,
    /// The lead's email key.
    pub lead: String,
    pub status: Status,
    pub position: Position,
    /// When the enrollment next needs the engine; `None` once it has ended.
    pub due: Option<DateTime<Utc>>,
    pub enrolled_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When a send window pushed a send back, the time it was first due (for "Sat 10:00 →
    /// Mon 09:00, send window").
    pub deferred_from: Option<DateTime<Utc>>,
    pub facts: Facts,
}

/// Where in the program the enrollment continues.
///
/// `pc` indexes the step's code as it was when it was recorded (`shape`). What the enrollment
/// did in the step (`sent`, `waited`) is kept beside it, so that when the step's instructions
/// change under it, its place can be found again without repeating or skipping an email (see
/// `engine::resume`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The step's name.
    pub step: String,
    /// The next instruction in that step's code.
    pub pc: usize,
    /// The step's `Step::shape` that `pc` indexes; `None` in positions stored before nurture
    /// recorded it (their `pc` is taken as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    /// The templates sent since the enrollment entered this step, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<String>,
    /// The `wait`s passed since the last of those sends (or since entering the step).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waited: u32,
}

impl Position {
    /// `pc` in step `step`, with nothing known about the step's code (as positions stored
    /// before nurture recorded it).
    pub fn new(step: impl Into<String>, pc: usize) -> Position {
        Position {
            step: step.into(),
            pc,
            shape: None,
            sent: Vec::new(),
            waited: 0,
        }
    }

    /// The start of `step`, entered now.
    pub fn start(step: &Step) -> Position {
        Position {
            shape: Some(step.shape.clone()),
            ..Position::new(step.name.clone(), 0)
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum Status {
    Active,
    Completed,
    Exited(ExitReason),
}

/// Why an enrollment ended before its last step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The workflow said `exit` in a step.
    WorkflowExit,
    /// A handler said `exit` after a human reply.
    Replied,
    AutoReplied,
    Bounced,
    Unsubscribed,
    /// The address is suppressed (bounced or unsubscribed elsewhere).
    Suppressed,
    /// The workflow was edited and the step this enrollment stood in is gone.
    StepRemoved(String),
    /// Removed by hand (`nurture unenroll`).
    Manual,
    /// The program ran too many instructions without waiting (a bug in the workflow).
    LoopLimit,
    /// The lead's record is gone from the store.
    LeadMissing,
    /// The lead met the workflow's goal (`exit when …`, the condition as written).
    GoalReached(String),
    /// An email failed for good (it could not render for this lead, its address cannot be sent
    /// to, the server refused it): the emails after it were written to follow it.
    EmailFailed {
        step: String,
        error: String,
    },
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::WorkflowExit => f.write_str("the workflow said exit"),
            ExitReason::Replied => f.write_str("the lead replied"),
            ExitReason::AutoReplied => f.write_str("an auto-reply"),
            ExitReason::Bounced => f.write_str("the address bounced"),
            ExitReason::Unsubscribed => f.write_str("the lead unsubscribed"),
            ExitReason::Suppressed => f.write_str("the address is suppressed"),
            ExitReason::StepRemoved(step) => {
                write!(f, "step `{step}` was removed from the workflow")
            }
            ExitReason::Manual => f.write_str("unenrolled by hand"),
            ExitReason::LoopLimit => f.write_str("too many steps without a wait"),
            ExitReason::LeadMissing => f.write_str("the lead is no longer in the store"),
            ExitReason::GoalReached(goal) => write!(f, "goal reached: {goal}"),
            ExitReason::EmailFailed { step, error } => {
                write!(f, "the email of step `{step}` failed: {error}")
            }
        }
    }
}

/// What the enrollment has seen happen: the engagement facts conditions can ask about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub replied: bool,
    /// The step the enrollment stood in when its lead first replied: `status` counts replies
    /// per step by it. (None for an enrollment that replied before nurture kept it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replied_in: Option<String>,
    pub auto_replied: bool,
    /// A person (not a machine) clicked a tracked link of this workflow.
    pub clicked: bool,
    /// The steps whose email a person clicked a link of, once each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clicked_steps: Vec<String>,
    /// The named links (`{{link "NAME" …}}`) a person clicked, once each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clicked_links: Vec<String>,
    /// The steps whose email a person opened, once each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opened: Vec<String>,
    /// Events the lead did (reported through the API) since it enrolled: each name with the
    /// last time it happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub did: Vec<(String, DateTime<Utc>)>,
    /// Templates sent in this enrollment, in order (a template sent twice appears twice).
    pub sent: Vec<String>,
}

impl Enrollment {
    pub fn is_active(&self) -> bool {
        self.status == Status::Active
    }
}
