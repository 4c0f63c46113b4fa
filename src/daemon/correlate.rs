//! From a classified inbound mail to what it means for a lead: which lead (and enrollment) it
//! is about, and which [`Happening`] to run.
//!
//! Who: `In-Reply-To`/`References` → one of our Message-IDs → its lead and workflow (so a reply
//! from another address of the same person still finds its lead); for a bounce, the returned
//! message's Message-ID or the failed recipient, and likewise for a spam complaint (which
//! suppresses at once, "complained"); for an unsubscribe mail, the token of our
//! `mailto:` link; as a last resort the sender's address, if it is a lead nurture has emailed
//! or is about to (an active enrollment). Anything else is left alone (and logged by the
//! caller).
//!
//! Which workflow: the one whose email the mail answers, whatever its enrollment's state (a
//! reply to the last email of a finished sequence counts). Matched by the sender alone, every
//! active enrollment of the lead; when none is active, the one that emailed the lead last.
//!
//! Bounces by fault: the address's own permanent failure suppresses; a refusal the sender is
//! to blame for is journaled and the caller warns the operator ([`sender_problem`]); soft
//! bounces are journaled and counted ([`count_soft_bounces`]).

use chrono::{DateTime, Utc};

use crate::config::BouncesConfig;
use crate::engine::Input;
use crate::lead::SuppressionReason;
use crate::mail::classify::{Incoming, Kind};
use crate::store::{EventKind, Store, StoreError};
use crate::unsubscribe::{Unsubscribe, token_in_subject};

use super::scheduler::Happening;

/// The happening `inbound` stands for, or why it stands for none.
pub fn happening(
    store: &Store,
    unsubscribe: &Unsubscribe,
    inbound: &Incoming,
) -> Result<Result<Happening, String>, StoreError> {
    let happening = |lead: String, workflow: Option<String>, input: Option<Input>| Happening {
        lead,
        workflow,
        input,
        suppress: None,
        note: None,
        receipt: None,
    };
    let found = match &inbound.kind {
        Kind::Unrelated { reason } => return Ok(Err(format!("unrelated mail ({reason})"))),
        Kind::Unknown { reason } => return Ok(Err(format!("unreadable mail ({reason})"))),
        Kind::Bounce {
            recipient,
            status,
            permanent,
            reason,
            delayed,
            ..
        } => {
            let by_original = match &inbound.original_message_id {
                Some(id) => store
                    .message(&bracketed(id))?
                    .map(|m| (m.lead, Some(m.workflow))),
                None => None,
            };
            let by_recipient = match recipient {
                // The store finds the lead whatever the case of the address.
                Some(address) if by_original.is_none() => {
                    store.lead(address)?.map(|lead| (lead.email, None))
                }
                _ => None,
            };
            let Some((lead, workflow)) = by_original.or(by_recipient) else {
                return Ok(Err("a bounce for no lead of ours".into()));
            };
            let status = status.as_deref().unwrap_or("no status");
            let mut bounce = happening(
                lead,
                workflow,
                // A transient bounce is recorded, nothing more: the next attempt may pass.
                permanent.then_some(Input::Bounce { permanent: true }),
            );
            let what = if *permanent {
                "permanent bounce"
            } else if reason.is_sender_side() {
                SENDER_SIDE
            } else if *delayed {
                "delivery delayed"
            } else {
                SOFT_BOUNCE
            };
            bounce.note = Some(format!("{what} ({status}): {}", reason.describe()));
            if *permanent {
                bounce.suppress = Some((
                    SuppressionReason::Bounced,
                    format!("the address bounced ({status})"),
                ));
            }
            bounce
        }
        Kind::Complaint {
            recipient,
            feedback_type,
            ..
        } => {
            let Some((lead, workflow)) = by_original(store, inbound, recipient.as_deref())? else {
                return Ok(Err("a complaint about no lead of ours".into()));
            };
            // Not handlers' business: a complaint is never a reply, and no workflow may go on
            // mailing someone who called it spam.
            let mut complaint = happening(lead, workflow, None);
            let kind = feedback_type.as_deref().unwrap_or("abuse");
            // A DMARC failure report or a "not spam" report is about us, not the person.
            if matches!(kind, "auth-failure" | "not-spam" | "dmarc") {
                complaint.note = Some(format!("feedback report ({kind}), not a complaint"));
            } else {
                complaint.note = Some(format!("{SPAM_COMPLAINT} ({kind})"));
                complaint.suppress = Some((SuppressionReason::Complained, "complained".into()));
            }
            complaint
        }
        Kind::Unsubscribe { token, .. } => {
            let token = token
                .as_deref()
                .or_else(|| inbound.subject.as_deref().and_then(token_in_subject));
            let lead = match token.and_then(|token| unsubscribe.verify(token)) {
                Some(address) => Some((address, None)),
                None => by_conversation(store, inbound)?,
            };
            let Some((lead, workflow)) = lead else {
                return Ok(Err("an unsubscribe request from no lead of ours".into()));
            };
            let mut request = happening(lead, workflow, Some(Input::Unsubscribe));
            request.suppress = Some((
                SuppressionReason::Unsubscribed,
                "asked by mail to unsubscribe".into(),
            ));
            request.note = Some(describe("unsubscribe request", inbound));
            request
        }
        Kind::AutoReply { return_date, .. } => {
            let Some((lead, workflow)) = by_conversation(store, inbound)? else {
                return Ok(Err("an auto-reply from no lead of ours".into()));
            };
            let mut auto = happening(
                lead,
                workflow,
                Some(Input::AutoReply {
                    return_date: *return_date,
                }),
            );
            auto.note = Some(describe("auto-reply", inbound));
            auto
        }
        Kind::HumanReply => {
            let Some((lead, workflow)) = by_conversation(store, inbound)? else {
                return Ok(Err("mail from no lead of ours".into()));
            };
            let mut reply = happening(lead, workflow, Some(Input::Reply));
            reply.note = Some(describe("reply", inbound));
            reply
        }
    };
    Ok(Ok(found))
}

/// How a bounce that is neither the address's fault nor the sender's begins its journal line;
/// [`count_soft_bounces`] counts those lines.
const SOFT_BOUNCE: &str = "soft bounce";
/// How the journal line of a bounce the sender is to blame for (blocked, spam, policy,
/// authentication) begins; `nurture status` counts those lines.
pub const SENDER_SIDE: &str = "sender-side rejection";
/// How the journal line of a spam complaint begins; `nurture status` counts those lines.
pub const SPAM_COMPLAINT: &str = "spam complaint";

/// After a soft bounce: when it is the `soft_limit`-th of the lead within the window, the
/// address is suppressed as undeliverable.
pub fn count_soft_bounces(
    store: &Store,
    happening: &mut Happening,
    limits: &BouncesConfig,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let soft = happening
        .note
        .as_deref()
        .is_some_and(|note| note.starts_with(SOFT_BOUNCE));
    if !soft || happening.suppress.is_some() || limits.soft_limit == 0 {
        return Ok(());
    }
    let since = now - chrono::Duration::days(i64::from(limits.soft_window_days));
    let earlier = store
        .events_of(&happening.lead)?
        .iter()
        .filter(|event| event.at >= since)
        .filter(|event| {
            matches!(&event.kind, EventKind::Received { what } if what.starts_with(SOFT_BOUNCE))
        })
        .count();
    let count = earlier + 1;
    if count >= limits.soft_limit as usize {
        happening.suppress = Some((
            SuppressionReason::Bounced,
            format!(
                "undeliverable: {count} soft bounces in {} days",
                limits.soft_window_days
            ),
        ));
    }
    Ok(())
}

/// What the operator must hear of a bounce the sender is to blame for: "mail to X was
/// refused by example.com: sender blocked (5.7.1)", or `None`.
pub fn sender_problem(inbound: &Incoming) -> Option<String> {
    let Kind::Bounce {
        recipient,
        status,
        reason,
        diagnostic,
        ..
    } = &inbound.kind
    else {
        return None;
    };
    if !reason.is_sender_side() {
        return None;
    }
    let recipient = recipient.as_deref().unwrap_or("a recipient");
    let domain = recipient.rsplit_once('@').map_or(recipient, |(_, d)| d);
    let mut warning = format!(
        "mail to {recipient} was refused by {domain}: {} ({})",
        reason.describe(),
        status.as_deref().unwrap_or("no status")
    );
    if let Some(said) = diagnostic {
        warning.push_str(&format!(": “{said}”"));
    }
    Some(warning)
}

/// The lead (and workflow) of a returned or reported message: by its Message-ID, else by
/// its recipient.
fn by_original(
    store: &Store,
    inbound: &Incoming,
    recipient: Option<&str>,
) -> Result<Option<(String, Option<String>)>, StoreError> {
    if let Some(id) = &inbound.original_message_id
        && let Some(record) = store.message(&bracketed(id))?
    {
        return Ok(Some((record.lead, Some(record.workflow))));
    }
    match recipient {
        Some(address) => Ok(store
            .lead(&address.to_ascii_lowercase())?
            .map(|lead| (lead.email, None))),
        None => Ok(None),
    }
}

/// The lead (and workflow) a mail answers: through our Message-IDs it refers to, else its
/// sender when that is a lead with an active enrollment (`None`: all of them), or one whose
/// enrollments are over but emailed it (the last of them).
fn by_conversation(
    store: &Store,
    inbound: &Incoming,
) -> Result<Option<(String, Option<String>)>, StoreError> {
    for id in &inbound.references {
        if let Some(record) = store.message(&bracketed(id))? {
            return Ok(Some((record.lead, Some(record.workflow))));
        }
    }
    let Some(from) = &inbound.from else {
        return Ok(None);
    };
    let enrollments = store.enrollments_of(from)?;
    if enrollments.iter().any(|enrollment| enrollment.is_active()) {
        return Ok(Some((from.clone(), None)));
    }
    let last_emailed = enrollments
        .into_iter()
        .filter(|enrollment| !enrollment.facts.sent.is_empty())
        .max_by_key(|enrollment| enrollment.updated_at);
    Ok(last_emailed.map(|enrollment| (from.clone(), Some(enrollment.workflow))))
}

/// `reply “Re: Welcome”: “Sounds good, Tuesday?”` for the lead's timeline and the owner.
fn describe(what: &str, inbound: &Incoming) -> String {
    let subject = inbound.subject.as_deref().unwrap_or("(no subject)");
    if inbound.excerpt.is_empty() {
        format!("{what} “{subject}”")
    } else {
        format!("{what} “{subject}”: “{}”", inbound.excerpt)
    }
}

/// Message-IDs are kept with their angle brackets.
fn bracketed(id: &str) -> String {
    let id = id.trim();
    if id.starts_with('<') {
        id.to_owned()
    } else {
        format!("<{id}>")
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::engine::{Enrollment, Facts, Position, Status};
    use crate::lead::Lead;
    use crate::store::{Batch, DEFAULT_CACHE_BYTES};

    fn enrollment(workflow: &str, lead: &str, day: u32, sent: &[&str]) -> Enrollment {
        let at = Utc.with_ymd_and_hms(2026, 11, day, 9, 0, 0).unwrap();
        Enrollment {
            workflow: workflow.into(),
            version: "v1".into(),
            lead: lead.into(),
            status: Status::Completed,
            position: Position::new("last", 1),
            due: None,
            enrolled_at: at,
            updated_at: at,
            deferred_from: None,
            facts: Facts {
                sent: sent.iter().map(|t| t.to_string()).collect(),
                ..Facts::default()
            },
        }
    }

    fn reply_from(from: &str) -> Incoming {
        Incoming {
            kind: Kind::HumanReply,
            message_id: Some("<r1@other.example>".into()),
            references: Vec::new(),
            original_message_id: None,
            from: Some(from.into()),
            subject: Some("Re: Should I close your file?".into()),
            excerpt: "No, let's talk.".into(),
        }
    }

    // Regression: a reply without threading headers counted only for leads with an active
    // enrollment, so one that came after the last email was "mail from no lead of ours".
    #[test]
    fn an_unthreaded_reply_after_the_sequences_ended_goes_to_the_last_one_that_emailed() {
        let dir = std::env::temp_dir().join(format!("nurture-correlate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 9, 0, 0).unwrap();
        let mut quiet = enrollment("trial-welcome", "quiet@example.test", 2, &[]);
        quiet.status = Status::Exited(crate::engine::ExitReason::Manual);
        let batch = Batch {
            leads: vec![
                Lead::new("done@example.test".into(), now),
                Lead::new("quiet@example.test".into(), now),
            ],
            enrollments: vec![
                enrollment("webinar-follow-up", "done@example.test", 3, &["thanks"]),
                enrollment(
                    "trial-welcome",
                    "done@example.test",
                    20,
                    &["welcome", "last"],
                ),
                enrollment("newsletter", "done@example.test", 25, &[]),
                quiet,
            ],
            ..Batch::default()
        };
        store.apply(&batch).unwrap();
        let unsubscribe = Unsubscribe::preview("");

        let found = happening(&store, &unsubscribe, &reply_from("done@example.test"))
            .unwrap()
            .expect("a lead of ours");
        assert_eq!(found.lead, "done@example.test");
        assert_eq!(found.workflow.as_deref(), Some("trial-welcome"));
        assert_eq!(found.input, Some(Input::Reply));

        // Enrolled, but never emailed and not active: not a lead nurture wrote to.
        let why = happening(&store, &unsubscribe, &reply_from("quiet@example.test"))
            .unwrap()
            .expect_err("left alone");
        assert_eq!(why, "mail from no lead of ours");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
