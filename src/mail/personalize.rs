//! One planned email rendered for one lead: the path the daemon and the dry-run share, so the
//! preview is byte for byte what leaves.

use chrono::{DateTime, Utc};

use super::compose::{OutgoingEmail, domain_of, lead_mailbox, new_message_id};
use super::{Templates, context};
use crate::engine::PlannedEmail;
use crate::lead::Lead;
use crate::workflow::Workflow;

/// The unsubscribe link until the HTTP endpoint exists: a mail to the reply address, which the
/// inbox watcher reads as an unsubscribe request.
pub fn unsubscribe_url(workflow: &Workflow) -> String {
    let inbox = workflow.reply_to.as_ref().unwrap_or(&workflow.from);
    format!("mailto:{}?subject=unsubscribe", inbox.address)
}

/// Renders `planned` for `lead`. `slot` is the time the engine planned it for: with the
/// workflow, lead, step and template it makes the Message-ID, so planning the same send again
/// (after a crash, a DST double fire) yields the same Message-ID. `date` is the `Date` header.
pub fn personalize(
    templates: &Templates,
    workflow: &Workflow,
    lead: &Lead,
    planned: &PlannedEmail,
    slot: DateTime<Utc>,
    date: DateTime<Utc>,
) -> Result<OutgoingEmail, String> {
    let unsubscribe = unsubscribe_url(workflow);
    let context = context(lead, workflow, &planned.step, &unsubscribe);
    let subject = templates
        .render_subject(&planned.subject_template, &context)
        .map_err(|e| e.to_string())?;
    let body = templates
        .render(&planned.template, &context)
        .map_err(|e| e.to_string())?;
    let unique = format!(
        "{}|{}|{}|{}|{}|{}",
        workflow.name,
        workflow.version,
        lead.email,
        planned.step,
        planned.template,
        slot.timestamp()
    );
    Ok(OutgoingEmail {
        message_id: new_message_id(domain_of(&workflow.from.address), &unique),
        from: workflow.from.clone(),
        reply_to: workflow.reply_to.clone(),
        to: lead_mailbox(lead),
        subject,
        body,
        date,
        list_unsubscribe: vec![format!("<{unsubscribe}>")],
        one_click: false,
        extra_headers: vec![
            ("X-Nurture-Workflow".into(), workflow.name.clone()),
            ("X-Nurture-Step".into(), planned.step.clone()),
        ],
    })
}
