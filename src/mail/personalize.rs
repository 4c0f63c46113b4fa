//! One planned email rendered for one lead: the path the daemon and the dry-run share, so the
//! preview is byte for byte what leaves.

use chrono::{DateTime, Utc};

use super::compose::{OutgoingEmail, domain_of, lead_mailbox, new_message_id};
use super::links::{TrackedLink, Tracker};
use super::{Templates, context};
use crate::engine::PlannedEmail;
use crate::lead::Lead;
use crate::unsubscribe::Unsubscribe;
use crate::workflow::Workflow;

/// Renders `planned` for `lead`. `slot` is the time the engine planned it for: with the
/// workflow, lead, step and template it makes the Message-ID, so planning the same send again
/// (after a crash, a DST double fire) yields the same Message-ID. `date` is the `Date` header.
/// The unsubscribe links name `unsubscribe_for`: the lead, or the address of a test send.
/// With a `tracker`, links are rewritten to report clicks and an image reports opens; the
/// tracked links come back beside the email (see [`links`]).
#[allow(clippy::too_many_arguments)]
pub fn personalize(
    templates: &Templates,
    workflow: &Workflow,
    lead: &Lead,
    planned: &PlannedEmail,
    slot: DateTime<Utc>,
    date: DateTime<Utc>,
    unsubscribe: &Unsubscribe,
    unsubscribe_for: &str,
    tracker: Option<&Tracker>,
) -> Result<(OutgoingEmail, Vec<TrackedLink>), String> {
    let links = unsubscribe.links(workflow, unsubscribe_for);
    let context = context(lead, workflow, &planned.step, links.for_templates());
    let subject = templates
        .render_subject(&planned.subject_template, &context)
        .map_err(|e| e.to_string())?;
    let (body, tracked) =
        templates.render_linked(&planned.template, &context, tracker, links.for_templates())?;
    let unique = format!(
        "{}|{}|{}|{}|{}|{}",
        workflow.name,
        workflow.version,
        lead.email,
        planned.step,
        planned.template,
        slot.timestamp()
    );
    let email = OutgoingEmail {
        message_id: new_message_id(domain_of(&workflow.from.address), &unique),
        from: workflow.from.clone(),
        reply_to: workflow.reply_to.clone(),
        to: lead_mailbox(lead),
        subject,
        body,
        date,
        list_unsubscribe: links.header_entries(),
        one_click: links.one_click.is_some(),
        extra_headers: workflow_headers(workflow),
    };
    Ok((email, tracked))
}

/// For `mark as bulk` workflows, the automated-mail markers. Nothing names the workflow or the
/// step: recipients see every header (a step called "breakup"…), and replies and bounces are
/// matched through our Message-IDs.
fn workflow_headers(workflow: &Workflow) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if workflow.bulk {
        headers.push(("Auto-Submitted".into(), "auto-generated".into()));
        headers.push(("Precedence".into(), "bulk".into()));
    }
    headers
}
