//! The I/O-free engine: enrollment state, time (windows, business days, zones), conditions,
//! and `advance`, which turns an input into effects and a new state.
//!
//! Built so far: [`calendar`], the pure time rules every schedule is computed with.

pub mod calendar;
