//! The I/O-free engine: enrollment state, time (windows, business days, zones), conditions,
//! and `advance`, which turns an input into effects and a new state.
//!
//! - [`calendar`]: the time rules every schedule is computed with;
//! - [`state`]: what the store persists per enrollment;
//! - [`condition`]: evaluation with the observed values a timeline shows;
//! - [`run`]: `enroll` and `advance`, the interpreter;
//! - [`resume`]: where an enrollment continues when its step was edited;
//! - [`simulate`]: the dry-run's virtual clock over the same interpreter.

pub mod calendar;
pub mod condition;
pub mod resume;
pub mod run;
pub mod simulate;
pub mod state;

pub use self::run::{
    Effect, INSTRUCTION_BUDGET, Input, Outcome, PlannedEmail, RETURN_DATE_CAP_DAYS, Shift, advance,
    clock, enroll, goal_reached,
};
pub use self::state::{Enrollment, ExitReason, Facts, Position, Status};
