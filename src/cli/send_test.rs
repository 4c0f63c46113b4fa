//! `nurture send-test WORKFLOW --to ADDRESS [--lead EMAIL]`: every email of a workflow,
//! rendered for one lead, sent now to one address through the configured transport, so a
//! marketer can look at them in a real mail client.
//!
//! Every `send` of every step is sent, both sides of each branch included, in the order of
//! the file; each subject starts with `[test n/N]`. Nothing is recorded in the store: the lead
//! is not enrolled, and no journal line is written.

use chrono::Utc;
use clap::Args;

use super::{Cli, CliError, ExitCode, Project};
use crate::engine::PlannedEmail;
use crate::lead::{Lead, normalize_email};
use crate::mail::compose::{new_message_id, to_eml};
use crate::mail::personalize::personalize;
use crate::store::OutboxEmail;
use crate::unsubscribe::Unsubscribe;
use crate::workflow::{Instr, Mailbox, Workflow};

#[derive(Debug, Args)]
pub struct SendTestArgs {
    /// The workflow's name.
    pub workflow: String,
    /// Where the emails go.
    #[arg(long)]
    pub to: String,
    /// Render for this lead from the store (default: a lead with only the --to address, so
    /// templates show their fallbacks).
    #[arg(long)]
    pub lead: Option<String>,
}

pub fn run(cli: &Cli, args: &SendTestArgs) -> Result<ExitCode, CliError> {
    let project = Project::load(std::slice::from_ref(&cli.workflows), &cli.templates);
    let workflow = project.workflow(&args.workflow).ok_or_else(|| {
        CliError::Usage(format!(
            "no valid workflow named `{}` (see `nurture check`)",
            args.workflow
        ))
    })?;
    let to = normalize_email(&args.to)
        .map_err(|e| CliError::Usage(format!("--to `{}`: {e}", args.to)))?;
    let config = cli.load_config()?;
    let lead = match &args.lead {
        Some(email) => {
            let email = normalize_email(email)
                .map_err(|e| CliError::Usage(format!("--lead `{email}`: {e}")))?;
            // Through the running daemon when there is one.
            super::session::lead(cli, &email)?
        }
        None => Lead::new(to.clone(), Utc::now()),
    };
    // Links of the right shape that unsubscribe nobody: a click on a test email must not
    // suppress the lead it was rendered for.
    let unsubscribe = Unsubscribe::preview(&config.http.base_url);
    let emails = sends(workflow);
    let transport = super::run::transport(&config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Input(format!("cannot start the runtime: {e}")))?;
    let mut failed = 0;
    for (index, planned) in emails.iter().enumerate() {
        let label = format!("[test {}/{}]", index + 1, emails.len());
        match test_email(
            &project,
            workflow,
            &lead,
            planned,
            &to,
            &label,
            &unsubscribe,
        ) {
            Ok(email) => match runtime.block_on(transport.send(&email)) {
                Ok(()) => println!(
                    "sent {label} {} (step {}) to {to}",
                    planned.template, planned.step
                ),
                Err(error) => {
                    failed += 1;
                    eprintln!("not sent {label} {}: {error}", planned.template);
                }
            },
            Err(error) => {
                failed += 1;
                eprintln!(
                    "not sent {label} {} (step {}): {error}",
                    planned.template, planned.step
                );
            }
        }
    }
    if failed > 0 {
        return Err(CliError::Input(format!(
            "{failed} of {} test emails were not sent",
            emails.len()
        )));
    }
    Ok(ExitCode::Success)
}

/// Every `send` of the workflow, in file order.
fn sends(workflow: &Workflow) -> Vec<PlannedEmail> {
    workflow
        .steps
        .iter()
        .flat_map(|step| {
            step.code.iter().filter_map(|instr| match instr {
                Instr::Send(send) => Some(PlannedEmail {
                    step: step.name.clone(),
                    template: send.template.clone(),
                    subject_template: send.subject.clone(),
                    shifted: None,
                    expires: None,
                }),
                _ => None,
            })
        })
        .collect()
}

/// `planned` rendered for `lead`, addressed to `to`, its subject labelled.
fn test_email(
    project: &Project,
    workflow: &Workflow,
    lead: &Lead,
    planned: &PlannedEmail,
    to: &str,
    label: &str,
    unsubscribe: &Unsubscribe,
) -> Result<OutboxEmail, String> {
    let now = Utc::now();
    // Untracked: a test send is no message of a lead, so its links go straight to their
    // targets.
    let (mut email, _) = personalize(
        &project.templates,
        workflow,
        lead,
        planned,
        now,
        now,
        unsubscribe,
        to,
        None,
    )?;
    email.to = Mailbox {
        name: None,
        address: to.to_string(),
    };
    email.subject = format!("{label} {}", email.subject);
    // Its own Message-ID: a reply to a test must not look like a reply to the real email.
    email.message_id = new_message_id(
        crate::mail::compose::domain_of(&workflow.from.address),
        &format!(
            "test|{}|{label}|{}",
            email.message_id,
            now.timestamp_nanos_opt().unwrap_or(0)
        ),
    );
    let eml = to_eml(&email).map_err(|e| e.to_string())?;
    Ok(OutboxEmail {
        message_id: email.message_id,
        workflow: workflow.name.clone(),
        lead: lead.email.clone(),
        step: planned.step.clone(),
        subject: email.subject,
        envelope_from: workflow.from.address.clone(),
        envelope_to: to.to_string(),
        queued_at: now,
        not_before: now,
        attempts: 0,
        expires: None,
        eml,
    })
}
