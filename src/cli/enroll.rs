//! `nurture enroll WORKFLOW EMAIL…` and `nurture unenroll WORKFLOW EMAIL…`: enrollment by hand.
//!
//! `enroll` skips the workflow's `enroll when` but keeps every other rule (see
//! [`crate::enrollment`]): a suppressed lead, or one already in the workflow, is reported and
//! left alone. `unenroll` ends an active enrollment with the reason "unenrolled by hand".
//!
//! Through a running daemon, the workflow is the one the daemon runs, and the enrollment is
//! written by its work loop ([`super::session`]).

use clap::Args;
use serde::{Deserialize, Serialize};

use super::session::{Output, Session};
use super::{CliError, ExitCode, Project};
use crate::engine::{ExitReason, Status};
use crate::enrollment::{self, Decision, Trigger};
use crate::lead::normalize_email;
use crate::store::{Batch, EventKind, Store};
use crate::workflow::Workflow;

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct EnrollArgs {
    /// The workflow's name.
    pub workflow: String,
    /// The leads' email addresses.
    #[arg(required = true)]
    pub emails: Vec<String>,
}

pub fn enroll(
    args: &EnrollArgs,
    session: &Session<'_>,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let workflow = find(session.project(), &args.workflow)?;
    let (store, now) = (session.store, session.now);
    let mut batch = Batch::default();
    let mut refused = 0;
    for raw in &args.emails {
        let Some((email, lead)) = lookup(store, raw, out)? else {
            refused += 1;
            continue;
        };
        let existing = store.enrollment(&workflow.name, &email).map_err(input)?;
        match enrollment::decide(workflow, &lead, existing.as_ref(), Trigger::Manual, now) {
            Decision::Enroll => {
                enrollment::enroll_into(&mut batch, workflow, &lead, now);
                out.line(format!("enrolled {email} in {}", workflow.name))?;
            }
            Decision::Skip(why) => {
                refused += 1;
                out.note(format!("not enrolled: {email}: {why}"));
            }
        }
    }
    store.apply(&batch).map_err(input)?;
    store.flush().map_err(input)?;
    outcome(refused)
}

pub fn unenroll(
    args: &EnrollArgs,
    session: &Session<'_>,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let (store, now) = (session.store, session.now);
    let mut batch = Batch::default();
    let mut refused = 0;
    for raw in &args.emails {
        let Some((email, _)) = lookup(store, raw, out)? else {
            refused += 1;
            continue;
        };
        match store.enrollment(&args.workflow, &email).map_err(input)? {
            Some(mut enrollment) if enrollment.is_active() => {
                enrollment.status = Status::Exited(ExitReason::Manual);
                enrollment.due = None;
                enrollment.updated_at = now;
                batch.enrollments.push(enrollment);
                batch.event(
                    &email,
                    now,
                    Some(&args.workflow),
                    EventKind::Exited {
                        reason: ExitReason::Manual,
                    },
                );
                out.line(format!("unenrolled {email} from {}", args.workflow))?;
            }
            Some(_) => {
                refused += 1;
                out.note(format!(
                    "{email}: its enrollment in {} has already ended",
                    args.workflow
                ));
            }
            None => {
                refused += 1;
                out.note(format!("{email} is not enrolled in {}", args.workflow));
            }
        }
    }
    store.apply(&batch).map_err(input)?;
    store.flush().map_err(input)?;
    outcome(refused)
}

fn find<'a>(project: &'a Project, name: &str) -> Result<&'a Workflow, CliError> {
    project.workflow(name).ok_or_else(|| {
        let names: Vec<&str> = project.workflows.iter().map(|w| w.name.as_str()).collect();
        let hint = match crate::diagnostic::did_you_mean(name, names.iter().copied()) {
            Some(close) => format!("; did you mean `{close}`?"),
            None => format!("; the workflows are: {}", names.join(", ")),
        };
        CliError::Usage(format!("no valid workflow named `{name}`{hint}"))
    })
}

/// The lead behind `raw`, or `None` after saying why there is none.
fn lookup(
    store: &Store,
    raw: &str,
    out: &mut Output<'_>,
) -> Result<Option<(String, crate::lead::Lead)>, CliError> {
    let email = match normalize_email(raw) {
        Ok(email) => email,
        Err(error) => {
            out.note(format!("`{raw}`: {error}"));
            return Ok(None);
        }
    };
    match store.lead(&email).map_err(input)? {
        // The lead's own spelling: the one typed may differ in case.
        Some(lead) => Ok(Some((lead.email.clone(), lead))),
        None => {
            out.note(format!(
                "no lead {email}; import it first (`nurture leads import`)"
            ));
            Ok(None)
        }
    }
}

fn input(error: crate::store::StoreError) -> CliError {
    CliError::Input(error.to_string())
}

/// Exit 0 when every address was handled, 3 when some were not (each was reported).
fn outcome(refused: usize) -> Result<ExitCode, CliError> {
    if refused == 0 {
        Ok(ExitCode::Success)
    } else {
        Err(CliError::Input(format!(
            "{refused} address{} not changed (see above)",
            if refused == 1 { " was" } else { "es were" }
        )))
    }
}
