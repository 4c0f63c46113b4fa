//! nurture: an email nurture automation engine.
//!
//! Marketers describe sequences as workflow files (`workflows/*.flow`) that send handlebars
//! templates (`templates/`). The same I/O-free engine drives the daemon (system clock, real
//! transports) and the dry-run (virtual clock, recording transport).
//!
//! Module map:
//! - [`lead`]: the lead model and email normalization.
//! - [`workflow`]: the compiled program the engine runs, and cron slots.
//! - [`diagnostic`]: problems in user files, rendered with file:line:col and a caret.
#![forbid(unsafe_code)]

pub mod diagnostic;
pub mod lead;
pub mod workflow;
