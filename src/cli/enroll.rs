//! `nurture enroll WORKFLOW EMAIL…` and `nurture unenroll WORKFLOW EMAIL…`: enrollment by hand.
//!
//! `enroll` skips the workflow's `enroll when` but keeps every other rule (see
//! [`crate::enrollment`]): a suppressed lead, or one already in the workflow, is reported and
//! left alone. `unenroll` ends an active enrollment with the reason "unenrolled by hand".

use chrono::Utc;
use clap::Args;

use super::{Cli, CliError, ExitCode, Project};
use crate::engine::{ExitReason, Status};
use crate::enrollment::{self, Decision, Trigger};
use crate::lead::normalize_email;
use crate::store::{Batch, EventKind, Store};
use crate::workflow::Workflow;

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// The workflow's name.
    pub workflow: String,
    /// The leads' email addresses.
    #[arg(required = true)]
    pub emails: Vec<String>,
}

pub fn enroll(cli: &Cli, args: &EnrollArgs) -> Result<ExitCode, CliError> {
    let project = Project::load(std::slice::from_ref(&cli.workflows), &cli.templates);
    let workflow = find(&project, &args.workflow)?;
    let (_, store) = cli.open_store()?;
    let now = Utc::now();
    let mut batch = Batch::default();
    let mut refused = 0;
    for raw in &args.emails {
        let Some((email, lead)) = lookup(&store, raw)? else {
            refused += 1;
            continue;
        };
        let existing = store.enrollment(&workflow.name, &email).map_err(input)?;
        match enrollment::decide(workflow, &lead, existing.as_ref(), Trigger::Manual) {
            Decision::Enroll => {
                enrollment::enroll_into(&mut batch, workflow, &lead, now);
                println!("enrolled {email} in {}", workflow.name);
            }
            Decision::Skip(why) => {
                refused += 1;
                eprintln!("not enrolled: {email}: {why}");
            }
        }
    }
    store.apply(&batch).map_err(input)?;
    store.flush().map_err(input)?;
    outcome(refused)
}

pub fn unenroll(cli: &Cli, args: &EnrollArgs) -> Result<ExitCode, CliError> {
    let (_, store) = cli.open_store()?;
    let now = Utc::now();
    let mut batch = Batch::default();
    let mut refused = 0;
    for raw in &args.emails {
        let Some((email, _)) = lookup(&store, raw)? else {
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
                println!("unenrolled {email} from {}", args.workflow);
            }
            Some(_) => {
                refused += 1;
                eprintln!(
                    "{email}: its enrollment in {} has already ended",
                    args.workflow
                );
            }
            None => {
                refused += 1;
                eprintln!("{email} is not enrolled in {}", args.workflow);
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
fn lookup(store: &Store, raw: &str) -> Result<Option<(String, crate::lead::Lead)>, CliError> {
    let email = match normalize_email(raw) {
        Ok(email) => email,
        Err(error) => {
            eprintln!("`{raw}`: {error}");
            return Ok(None);
        }
    };
    match store.lead(&email).map_err(input)? {
        // The lead's own spelling: the one typed may differ in case.
        Some(lead) => Ok(Some((lead.email.clone(), lead))),
        None => {
            eprintln!("no lead {email}; import it first (`nurture leads import`)");
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
