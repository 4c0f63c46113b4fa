//! The I/O-free engine: enrollment state, time (windows, business days, zones), conditions,
//! and `advance`, which turns an input into effects and a new state.
//!
//! Built so far: [`calendar`] (the time rules every schedule is computed with), [`state`] (what
//! the store will persist per enrollment) and [`condition`] (evaluation with observed values).

pub mod calendar;
pub mod condition;
pub mod state;

pub use self::state::{Enrollment, ExitReason, Facts, Position, Status};
