//! Emails through a transport, with a durable in-flight mark around each hand-over.
//!
//! Before a batch of emails is handed to the transport, their headers (with their final
//! Message-IDs) are listed as in flight and flushed: by the scheduler in the same transaction
//! that advances their enrollments, or by [`send_outbox`] for emails that waited in the outbox.
//! After the hand-over, the outcomes (sent → `messages`; transient failure → the outbox, with a
//! backoff; permanent failure → `messages` as failed) and the clearing of the list are one
//! transaction. After a crash, [`recover`] finds the emails still listed and settles what it
//! can: the folder transport knows whether each one's file was written (sent, or put back in
//! the outbox to be written); an email handed to an SMTP server may or may not have left, so it
//! is reported as uncertain, with a copy kept for `nurture outbox resend`, rather than sent a
//! second time.
//!
//! An email that fails for good (refused by the server, or a bad address) ends its lead's
//! sequence with the reason ([`end_failed`]): the emails after it were written to follow it.

use chrono::{DateTime, Duration, Utc};
use tracing::{info, warn};

use std::sync::Arc;

use tokio::task::JoinSet;

use super::throttle::Throttle;
use super::transport::{SendError, Transport};
use crate::engine::{ExitReason, Status};
use crate::lead::{Suppression, SuppressionReason};
use crate::mail::compose::with_date;
use crate::store::{Batch, EventKind, MessageRecord, MessageState, OutboxEmail, Store, StoreError};

/// The first retry waits this long; each further one doubles it, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::seconds(30);
pub const MAX_BACKOFF: Duration = Duration::hours(1);

/// Hands `emails`, already listed in flight under the mark `in_flight` and flushed, to the
/// transport and records every outcome, clearing the mark. `from_outbox`: they came from the
/// outbox, whose entries are removed. Returns how many were sent.
///
/// Up to [`Transport::parallelism`] emails are with the transport at once; outcomes are
/// recorded in the emails' order. Recipients the server refused for good are returned, to be
/// suppressed by [`Delivered::settle`] once no batch is being planned (planning writes leads).
pub async fn deliver(
    store: &Store,
    transport: &Arc<Transport>,
    emails: Vec<OutboxEmail>,
    from_outbox: bool,
    in_flight: u64,
    now: DateTime<Utc>,
) -> Result<Delivered, StoreError> {
    let emails = Arc::new(emails);
    let outcomes = hand_over(transport, &emails).await;
    let mut batch = Batch {
        in_flight_clear: vec![in_flight],
        ..Batch::default()
    };
    let mut sent = 0;
    let mut rejected = Vec::new();
    let mut failed = Vec::new();
    for (email, outcome) in emails.iter().zip(outcomes) {
        if from_outbox {
            batch
                .outbox_remove
                .push((email.not_before, email.message_id.clone()));
        }
        match outcome {
            Ok(()) => {
                sent += 1;
                info!(message_id = %email.message_id, lead = %email.lead, workflow = %email.workflow, step = %email.step, "sent");
                batch.messages.push(record(email, MessageState::Sent, now));
                batch.event(
                    &email.lead,
                    now,
                    Some(&email.workflow),
                    EventKind::Sent {
                        message_id: email.message_id.clone(),
                        step: email.step.clone(),
                    },
                );
            }
            Err(error) => {
                warn!(message_id = %email.message_id, lead = %email.lead, permanent = error.permanent, %error, "send failed");
                if error.rejects_recipient() {
                    rejected.push(Rejection {
                        lead: email.lead.clone(),
                        detail: error.message.clone(),
                    });
                }
                if error.permanent {
                    batch
                        .messages
                        .push(record(email, MessageState::Failed, now));
                    // A notification to our side failing ends nobody's sequence.
                    if !error.rejects_recipient()
                        && email.envelope_to.eq_ignore_ascii_case(&email.lead)
                    {
                        failed.push(Failure {
                            workflow: email.workflow.clone(),
                            lead: email.lead.clone(),
                            step: email.step.clone(),
                            error: error.message.clone(),
                        });
                    }
                } else {
                    let mut retry = email.clone();
                    retry.attempts += 1;
                    retry.not_before = now + backoff(retry.attempts, &email.message_id);
                    batch.outbox_put.push(retry);
                }
                batch.event(
                    &email.lead,
                    now,
                    Some(&email.workflow),
                    EventKind::SendFailed {
                        message_id: email.message_id.clone(),
                        step: email.step.clone(),
                        error: error.message,
                        permanent: error.permanent,
                    },
                );
            }
        }
    }
    store.apply(&batch)?;
    Ok(Delivered {
        sent,
        rejected,
        failed,
        at: now,
    })
}

/// What [`deliver`] did.
#[derive(Debug)]
pub struct Delivered {
    pub sent: usize,
    pub rejected: Vec<Rejection>,
    /// Emails to leads refused for good for another reason than the address.
    pub failed: Vec<Failure>,
    /// The daemon's clock when the batch was handed over.
    pub at: DateTime<Utc>,
}

/// A recipient address the server refused for good (5.1.x).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub lead: String,
    /// The server's answer.
    pub detail: String,
}

/// An email to a lead that failed for good once handed over.
#[derive(Debug, Clone)]
pub struct Failure {
    pub workflow: String,
    pub lead: String,
    pub step: String,
    pub error: String,
}

impl Delivered {
    /// What the outcomes mean for the leads, once no batch is being planned (planning writes
    /// leads and enrollments): refused addresses are suppressed, failed emails end their
    /// sequences.
    pub fn settle(&self, store: &Store) -> Result<(), StoreError> {
        suppress_rejected(store, &self.rejected, self.at)?;
        end_failed(store, &self.failed, self.at)
    }
}

/// Ends the sequence of each failed email's enrollment, if it has not ended otherwise, with
/// the reason "email of step `x` failed: …": a marketer's sequence is a story, and the emails
/// after a missing one refer to it. The failure stays visible in `status` (exited by reason
/// `email_failed`, failed emails) and in the lead's timeline.
pub fn end_failed(store: &Store, failed: &[Failure], now: DateTime<Utc>) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    for failure in failed {
        let Some(mut enrollment) = store.enrollment(&failure.workflow, &failure.lead)? else {
            continue;
        };
        if matches!(enrollment.status, Status::Exited(_)) {
            continue;
        }
        let reason = ExitReason::EmailFailed {
            step: failure.step.clone(),
            error: failure.error.clone(),
        };
        warn!(workflow = %failure.workflow, lead = %failure.lead, step = %failure.step, "the email failed for good: the sequence ends");
        enrollment.status = Status::Exited(reason.clone());
        enrollment.due = None;
        enrollment.updated_at = now;
        batch.event(
            &failure.lead,
            now,
            Some(&failure.workflow),
            EventKind::Exited { reason },
        );
        batch.enrollments.push(enrollment);
    }
    store.apply(&batch)
}

/// Suppresses the refused addresses and ends their active enrollments: nothing will be sent
/// to them again.
fn suppress_rejected(
    store: &Store,
    rejected: &[Rejection],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut batch = Batch::default();
    for rejection in rejected {
        let Some(mut lead) = store.lead(&rejection.lead)? else {
            continue;
        };
        if lead.is_suppressed() {
            continue;
        }
        warn!(lead = %lead.email, detail = %rejection.detail, "recipient refused: address suppressed");
        lead.suppression = Some(Suppression {
            reason: SuppressionReason::Bounced,
            detail: rejection.detail.clone(),
            at: now,
        });
        lead.updated_at = now;
        batch.event(
            &lead.email,
            now,
            None,
            EventKind::Suppressed {
                reason: format!("the mail server refused the address: {}", rejection.detail),
            },
        );
        for mut enrollment in store.enrollments_of(&lead.email)? {
            if !enrollment.is_active() {
                continue;
            }
            enrollment.status = Status::Exited(ExitReason::Bounced);
            enrollment.due = None;
            enrollment.updated_at = now;
            batch.event(
                &lead.email,
                now,
                Some(&enrollment.workflow),
                EventKind::Exited {
                    reason: ExitReason::Bounced,
                },
            );
            batch.enrollments.push(enrollment);
        }
        batch.leads.push(lead);
    }
    store.apply(&batch)
}

/// Sends every email, at most `transport.parallelism()` at a time; the outcomes in order.
async fn hand_over(
    transport: &Arc<Transport>,
    emails: &Arc<Vec<OutboxEmail>>,
) -> Vec<Result<(), SendError>> {
    let mut outcomes: Vec<Option<Result<(), SendError>>> = vec![None; emails.len()];
    let mut running = JoinSet::new();
    let mut next = 0;
    while next < emails.len() || !running.is_empty() {
        while next < emails.len() && running.len() < transport.parallelism() {
            let (transport, emails, index) = (transport.clone(), emails.clone(), next);
            running.spawn(async move { (index, transport.send(&emails[index]).await) });
            next += 1;
        }
        if let Some(done) = running.join_next().await {
            let (index, outcome) =
                done.unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
            outcomes[index] = Some(outcome);
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every email was handed over"))
        .collect()
}

/// Sends up to `limit` outbox emails that may leave at `now` (retries, for now). Returns how
/// many were handed over.
pub async fn send_outbox(
    store: &Store,
    transport: &Arc<Transport>,
    throttle: &mut Throttle,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<usize, StoreError> {
    let ready = store.outbox_ready(now, limit)?;
    if ready.is_empty() {
        return Ok(0);
    }
    let mut batch = Batch::default();
    // A `send … expires` that waited past its expiry (a sending limit, retries) does not
    // leave: the offer it announces has ended. Journaled as the engine journals one that
    // expired before its step.
    let (expired, mut ready): (Vec<OutboxEmail>, Vec<OutboxEmail>) =
        ready.into_iter().partition(|email| {
            email
                .expires
                .as_ref()
                .is_some_and(|expiry| expiry.at <= now)
        });
    let dropped = expired.len();
    for email in expired {
        batch
            .outbox_remove
            .push((email.not_before, email.message_id.clone()));
        if let Some(expiry) = email.expires {
            info!(message_id = %email.message_id, lead = %email.lead, expired = %expiry.at, "an email waiting in the outbox expired: it is not sent");
            batch.event(
                &email.lead,
                now,
                Some(&email.workflow),
                EventKind::Expired {
                    step: email.step,
                    template: expiry.template,
                    expired: expiry.at,
                    expires: expiry.expires,
                },
            );
        }
    }
    // Over a limit still: the email moves to its new time in the outbox.
    ready.retain(|email| match throttle.admit(email, now) {
        None => true,
        Some(later) => {
            batch
                .outbox_remove
                .push((email.not_before, email.message_id.clone()));
            batch.outbox_put.push(OutboxEmail {
                not_before: later,
                ..email.clone()
            });
            false
        }
    });
    if ready.is_empty() {
        store.apply(&batch)?;
        return Ok(dropped);
    }
    for email in &mut ready {
        email.eml = with_date(&email.eml, now);
    }
    let mark = store.new_id()?;
    batch.in_flight_set = Some((mark, ready));
    store.apply(&batch)?;
    store.flush()?;
    let ready = batch
        .in_flight_set
        .map(|(_, ready)| ready)
        .unwrap_or_default();
    let count = ready.len();
    let delivered = deliver(store, transport, ready, true, mark, now).await?;
    delivered.settle(store)?;
    Ok(count + dropped)
}

/// What [`recover`] found after a crash.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Found to have left (their file is in the outbox folder): recorded as sent.
    pub sent: usize,
    /// Found not to have left: back in the outbox, to be sent now.
    pub again: usize,
    /// Nobody can tell (an SMTP hand-over): reported, a copy kept, not sent again by itself.
    pub uncertain: usize,
}

/// After a crash: settles every email still listed under an in-flight mark. When the transport
/// can tell ([`Transport::has_left`]), an email that left is recorded as sent and one that did
/// not goes back to the outbox; otherwise it is reported as uncertain, with a copy kept for
/// `nurture outbox resend`, and taken out of the outbox if it came from there.
pub fn recover(
    store: &Store,
    transport: &Transport,
    now: DateTime<Utc>,
) -> Result<Recovered, StoreError> {
    let marks = store.in_flight_to_recover()?;
    let mut found = Recovered::default();
    if marks.is_empty() {
        return Ok(found);
    }
    let mut batch = Batch {
        in_flight_clear: marks.iter().map(|(id, _)| *id).collect(),
        ..Batch::default()
    };
    for email in marks.into_iter().flat_map(|(_, emails)| emails) {
        if store.message(&email.message_id)?.is_some() {
            continue;
        }
        // An email from the outbox is still there until its outcome is recorded.
        let in_outbox = store.outbox_email(email.not_before, &email.message_id)?;
        let has_left = transport.has_left(&email);
        if has_left == Some(false) && (in_outbox.is_some() || !email.eml.is_empty()) {
            info!(message_id = %email.message_id, lead = %email.lead, "the daemon stopped before this email was written: it is sent now");
            if in_outbox.is_none() {
                batch.outbox_put.push(OutboxEmail {
                    not_before: now,
                    ..email
                });
            }
            found.again += 1;
            continue;
        }
        if in_outbox.is_some() {
            batch
                .outbox_remove
                .push((email.not_before, email.message_id.clone()));
        }
        let (state, kind) = if has_left == Some(true) {
            found.sent += 1;
            let kind = EventKind::Sent {
                message_id: email.message_id.clone(),
                step: email.step.clone(),
            };
            (MessageState::Sent, kind)
        } else {
            warn!(message_id = %email.message_id, lead = %email.lead, workflow = %email.workflow, step = %email.step,
                "uncertain: the daemon stopped while handing this email over; it is not sent again by itself (`nurture outbox uncertain`)");
            found.uncertain += 1;
            let kind = EventKind::Uncertain {
                message_id: email.message_id.clone(),
                step: email.step.clone(),
            };
            (MessageState::Uncertain, kind)
        };
        batch.messages.push(record(&email, state, now));
        batch.event(&email.lead, now, Some(&email.workflow), kind);
        if state == MessageState::Uncertain {
            let mut copy = email;
            if copy.eml.is_empty()
                && let Some(queued) = in_outbox
            {
                copy.eml = queued.eml;
            }
            batch.uncertain_put.push(copy);
        }
    }
    store.apply(&batch)?;
    store.flush()?;
    Ok(found)
}

fn record(email: &OutboxEmail, state: MessageState, now: DateTime<Utc>) -> MessageRecord {
    MessageRecord {
        message_id: email.message_id.clone(),
        workflow: email.workflow.clone(),
        lead: email.lead.clone(),
        sender: email.envelope_from.clone(),
        step: email.step.clone(),
        subject: email.subject.clone(),
        state,
        queued_at: email.queued_at,
        at: now,
    }
}

/// Exponential backoff with jitter: 30 s, 1 min, 2 min… up to an hour, each stretched by up
/// to a quarter, so emails that failed together do not all come back at the same instant. The
/// jitter is derived from the Message-ID: no random source, and the same email gets the same
/// schedule.
pub fn backoff(attempt: u32, message_id: &str) -> Duration {
    crate::retry::backoff(attempt, message_id, FIRST_BACKOFF, MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour_with_bounded_jitter() {
        let mut previous = Duration::zero();
        for attempt in 1..=12 {
            let wait = backoff(attempt, "<x@example.test>");
            let base = (FIRST_BACKOFF * 2_i32.pow(attempt - 1)).min(MAX_BACKOFF);
            assert!(
                wait >= base && wait <= base + base / 4,
                "attempt {attempt}: {wait}"
            );
            assert!(wait >= previous || base == MAX_BACKOFF);
            previous = wait;
        }
        assert_ne!(backoff(1, "<a@x>"), backoff(1, "<b@x>"));
    }
}
