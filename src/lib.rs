//! nurture: an email nurture automation engine.
//!
//! Marketers describe sequences as workflow files (`workflows/*.flow`) that send handlebars
//! templates (`templates/`). The same I/O-free engine drives the daemon (system clock, real
//! transports) and the dry-run (virtual clock, recording transport).
//!
//! Module map:
//! - [`lead`]: the lead model and email normalization.
//! - [`dates`]: ISO dates in lead data: reading, moving, printing for a reader.
//! - [`token`]: signed tokens (unsubscribe and opt-in links) under the store's key.
//! - [`private`]: folders and files only their owner may read (the store, the outbox).
//! - [`leads_file`]: leads from CSV / JSON / JSON Lines files.
//! - [`workflow`]: the compiled program the engine runs, and cron slots.
//! - [`dsl`]: the workflow language: grammar, AST, validation, compilation.
//! - [`diagnostic`]: problems in user files, rendered with file:line:col and a caret.
//! - [`engine`]: the I/O-free state machine the daemon and the dry-run share.
//! - [`enrollment`]: which leads enter which workflows, and when.
//! - [`mail`]: templates, rendering, MIME composition.
//! - [`project`]: a folder of workflows and templates, loaded and checked together.
//! - [`scoring`]: points for what leads do, fading scores, hot / warm / cold / inactive.
//! - [`retry`]: exponential backoff with jitter, for emails and webhooks that wait.
//! - [`store`]: the durable state in sled: leads, enrollments, due index, outbox, journal.
//! - [`config`]: `nurture.toml` with environment overrides.
//! - [`daemon`]: `nurture run`: the scheduler, sender, enroller and reload loop.
//! - [`metrics`]: the daemon's figures for Prometheus (`GET /metrics`).
//! - [`webhooks`]: webhooks out: subscriptions, bodies, the queue record, signatures.
//! - [`control`]: the daemon's control socket: commands typed while it runs go through it.
//! - [`cli`]: the `nurture` command line.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dates;
pub mod diagnostic;
pub mod dsl;
pub mod endpoint;
pub mod engine;
pub mod enrollment;
pub mod lead;
pub mod leads_file;
pub mod mail;
pub mod metrics;
pub mod private;
pub mod project;
pub mod retry;
pub mod scoring;
pub mod secret;
pub mod store;
pub mod tls;
pub mod token;
pub mod unsubscribe;
pub mod webhooks;
pub mod workflow;
