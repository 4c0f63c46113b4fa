//! The integration tests: one binary, one module per area.

// Scratch folders and seeded stores, shared by the modules below.
mod support;
// Headless Chromium over WebDriver, for the pages people use.
mod browser;
// Postfix and Dovecot on loopback (tests/mailstack.sh), and nurture run against them.
mod mail_system;

// Golden tests of rendered diagnostics (tests/fixtures/diagnostics/).
mod diagnostics;
// The engine on compiled workflows: timing, windows, branches, handlers, edits.
mod engine;
// Golden dry-run timelines (tests/fixtures/dry_run/) and the emails --out writes.
mod dry_run;
// Every shipped workflow in workflows/ compiles and its templates render.
mod examples;
// Arbitrary input never panics the parser or the compiler.
mod fuzz;
// `nurture leads …` and `nurture contacts` against a real store in a scratch folder.
mod leads_cli;
// Progress bars on imports and exports: on a terminal only.
mod progress;
// Settings checked like workflows (ranges, unknown variables) and flags that cannot overflow.
mod settings_cli;
// `nurture status` on a store with enrollments, sends, replies and exits.
mod status_cli;
// `nurture run`: the daemon sends on time, survives SIGKILL, reloads, stops gracefully.
mod daemon;
// `nurture backup` through the running daemon, `nurture restore` into a new store.
mod backup;
// Commands while the daemon runs: through its control socket, sending never stops.
mod control;
// Automatic enrollment by the daemon, `nurture enroll` and `nurture unenroll`.
mod enrollment;
// Time-limited offers and scoring: an ended offer is not sent, API events make a lead hot.
mod offers;
// Replies, auto-replies and bounces through Postfix → Dovecot → the daemon's IMAP watcher.
mod inbox;
// Golden corpus of inbound mail (tests/corpus/classify/); classification never panics.
mod classify;
// `nurture mail classify`: golden text and JSON, with and without a store.
mod mail_classify;
// DKIM-signed emails through Postfix into Dovecot, verified against the published key.
mod dkim;
// Sending through a real Postfix into real Dovecot mailboxes (tests/mailstack.sh).
mod smtp;
// Under systemd (readiness, watchdog), the shipped unit file, completions and man pages.
mod ops;
// Webhooks out over real HTTP on 127.0.0.1: a receiver down at first, retries, signatures.
mod webhooks;
// The `/v1` API over real HTTP against `nurture run`, and the curl examples of docs/api.md.
mod api;
// Web forms, double opt-in (through Postfix + Dovecot) and the example page in headless Chromium.
mod forms;
// Click and open tracking over real HTTP, and end to end through Postfix and Dovecot.
mod track;
// The status page over real HTTP (login, cookie, logout, CSRF) and in headless Chromium.
mod page;
// `/metrics`, `/healthz` and `/readyz` of the daemon, with real sends and replies.
mod metrics;

// Several daemons on one PostgreSQL store: claims, the leader, a daemon killed mid-batch.
mod shared_store;
