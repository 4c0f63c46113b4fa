//! Clicks and opens as the work loop applies them: the record kept with each tracked email,
//! and a group of engagements applied as one transaction and one flush.
//!
//! A tracked email's links are kept, with what the email was (message, workflow, lead, step),
//! under meta `track:<message number>`, written in the transaction that lists the email to
//! be sent (`scheduler`). A click token names only the message number and the link's place
//! ([`crate::mail::links`]); the target is read back here, so a click can only go where the
//! email pointed.
//!
//! Each engagement arrives judged by the HTTP door (user agent, address, method, bursts:
//! [`super::judge`]); here the time since the email left is added to the judgement (a fetch
//! within seconds of delivery is a machine's). Every one is journaled, person or machine
//! ([`EventKind::Engaged`]); only a person's runs the engine (facts, `on click`, waking a
//! `wait until lead clicked …`), so conditions and scores count people.
//!
//! Like the API's requests ([`super::intake`]), the engagements waiting in the loop's queue
//! are applied together: one transaction, one flush, then every answer (group commit).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::inbound::Context;
use super::judge;
use super::pipeline::Pipeline;
use super::scheduler::Happening;
use crate::engine::Input;
use crate::mail::links::TrackedLink;
use crate::store::{Batch, EventKind, Store, StoreError};

const PREFIX: &str = "track:";

/// What is kept with a tracked email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    pub message_id: String,
    pub workflow: String,
    pub lead: String,
    pub step: String,
    /// When it was planned (the judgement's clock when its sent record is missing).
    pub planned_at: DateTime<Utc>,
    /// In token order.
    pub links: Vec<TrackedLink>,
}

impl Tracked {
    /// Its meta entry, for message number `sequence`.
    pub fn entry(&self, sequence: u64) -> (String, Vec<u8>) {
        (key(sequence), serde_json::to_vec(self).unwrap_or_default())
    }

    /// The record of message number `sequence`, if it was tracked.
    pub fn load(store: &Store, sequence: u64) -> Result<Option<Tracked>, StoreError> {
        Ok(store
            .meta_get(&key(sequence))?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }
}

fn key(sequence: u64) -> String {
    format!("{PREFIX}{sequence:016x}")
}

/// What was followed: a link (by its place) or the open image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    Click(usize),
    Open,
}

/// One open or click, as the HTTP door saw it (its time is the loop's clock when applied).
#[derive(Debug, Clone)]
pub struct Engagement {
    pub message: u64,
    pub hit: Hit,
    /// The door's judgement: why it looks like a machine, if it does.
    pub machine: Option<String>,
}

/// The loop's answer: the link's target (for a click; the message's step for an open), or
/// `None` when the token names nothing kept (404).
pub type Answer = Result<Option<String>, String>;

/// Applies a group of engagements in one transaction (through the pipeline, which sends what
/// a woken sequence plans), flushes once, then answers each.
pub async fn answer_group(
    requests: Vec<(Engagement, oneshot::Sender<Answer>)>,
    pipeline: &mut Pipeline,
    cx: &Context<'_>,
) -> Result<(), StoreError> {
    let mut journal = Batch::default();
    let mut happenings = Vec::new();
    let mut answers = Vec::with_capacity(requests.len());
    let prepared = tokio::task::block_in_place(|| {
        let mut prepared = Vec::with_capacity(requests.len());
        for (engagement, answer) in requests {
            prepared.push((prepare(cx, &engagement)?, engagement, answer));
        }
        Ok::<_, StoreError>(prepared)
    })?;
    for (found, engagement, answer) in prepared {
        let Some((tracked, sent_at)) = found else {
            answers.push((None, answer));
            continue;
        };
        let link = match engagement.hit {
            Hit::Click(index) => match tracked.links.get(index) {
                Some(link) => Some((index, link.clone())),
                None => {
                    answers.push((None, answer));
                    continue;
                }
            },
            Hit::Open => None,
        };
        let machine = engagement
            .machine
            .clone()
            .or_else(|| judge::too_soon(sent_at, cx.now));
        let kind = EventKind::Engaged {
            kind: match engagement.hit {
                Hit::Click(_) => "click",
                Hit::Open => "open",
            }
            .to_string(),
            message_id: tracked.message_id.clone(),
            step: tracked.step.clone(),
            link: link.as_ref().map(|(index, _)| *index),
            url: link.as_ref().map(|(_, link)| link.url.clone()),
            name: link.as_ref().and_then(|(_, link)| link.name.clone()),
            machine: machine.clone(),
        };
        journal.event(&tracked.lead, cx.now, Some(&tracked.workflow), kind);
        if machine.is_none() {
            let input = match &link {
                Some((_, link)) => Input::Click {
                    step: tracked.step.clone(),
                    link: link.name.clone(),
                },
                None => Input::Open {
                    step: tracked.step.clone(),
                },
            };
            happenings.push(Happening {
                lead: tracked.lead.clone(),
                workflow: Some(tracked.workflow.clone()),
                input: Some(input),
                suppress: None,
                note: None,
                receipt: None,
            });
        }
        let answered = match link {
            Some((_, link)) => link.url,
            None => tracked.step,
        };
        answers.push((Some(answered), answer));
    }
    let result = pipeline
        .run_inputs(cx.project, cx.now, &happenings, journal)
        .await;
    match result {
        Ok(()) => {
            for (answered, answer) in answers {
                let _ = answer.send(Ok(answered));
            }
            Ok(())
        }
        Err(error) => {
            for (_, answer) in answers {
                let _ = answer.send(Err(error.to_string()));
            }
            Err(error)
        }
    }
}

/// The record of the engagement's message and when it left (`None`: not a tracked message).
fn prepare(
    cx: &Context<'_>,
    engagement: &Engagement,
) -> Result<Option<(Tracked, DateTime<Utc>)>, StoreError> {
    let Some(tracked) = Tracked::load(cx.store, engagement.message)? else {
        return Ok(None);
    };
    let sent_at = cx
        .store
        .message(&tracked.message_id)?
        .map_or(tracked.planned_at, |record| record.at);
    Ok(Some((tracked, sent_at)))
}
