//! What reaches the daemon from outside its schedule (an unsubscribe click, mail from the
//! inbox watcher, a lead from the API or a web form, a command typed while it runs) waits
//! here for the work loop.
//!
//! The store has one writer, the work loop; so the HTTP endpoint, the watcher and the control
//! socket never write to it themselves: they send a [`Request`] and wait for the loop to run it
//! (between two batches) and answer once the result is written. What a lead's mail or click
//! was is counted for `/metrics` once it is durable.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::correlate;
use super::engage::{self, Engagement};
use super::intake::{self, DoorRequest, Reply};
use super::pipeline::Pipeline;
use super::scheduler::{Happening, Receipt};
use crate::config::BouncesConfig;
use crate::engine::Input;
use crate::mail::classify::{Incoming, Kind};
use crate::metrics;
use crate::project::Project;
use crate::store::{Batch, Store, StoreError};
use crate::unsubscribe::Unsubscribe;

/// What the work loop answers: `Ok(true)` done, `Ok(false)` nothing to do (no such lead,
/// nothing to act on), `Err` the store failed (the daemon is stopping).
pub type Answer = Result<bool, String>;

/// A folder's place: its UIDVALIDITY and the last UID processed under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub uid_validity: u32,
    pub uid: u32,
}

pub enum Request {
    /// Run the handlers for this (an unsubscribe click).
    Happening {
        happening: Happening,
        answer: oneshot::Sender<Answer>,
    },
    /// A classified mail from `folder`, at `position`.
    Mail {
        folder: String,
        position: Position,
        mail: Box<Incoming>,
        answer: oneshot::Sender<Answer>,
    },
    /// Where the watcher of `folder` stopped last time.
    Position {
        folder: String,
        answer: oneshot::Sender<Result<Option<Position>, String>>,
    },
    /// Remember `position` for `folder` (a first look: mail already there is left alone).
    SetPosition {
        folder: String,
        position: Position,
        answer: oneshot::Sender<Answer>,
    },
    /// A lead, an event, a sign-up or a confirmation through the HTTP doors: applied with
    /// every other one pending, in one transaction and one flush ([`intake`]).
    Door {
        request: DoorRequest,
        answer: oneshot::Sender<Result<Reply, String>>,
    },
    /// An open or a click through a tracked email: applied with every other one pending, in
    /// one transaction and one flush ([`engage`]).
    Engage {
        engagement: Engagement,
        answer: oneshot::Sender<engage::Answer>,
    },
    /// A store command from the control socket ([`crate::control`]), or one chunk of an
    /// import: run in the loop so that what it reads and what it writes see no other change
    /// in between. The job answers its command itself.
    Command(Job),
}

/// A store command's work, run by the loop with the store, the workflows and the time.
pub type Job = Box<dyn FnOnce(&Context<'_>) + Send>;

/// The sending end, cloned into each task that receives things from outside.
#[derive(Clone)]
pub struct Inbound {
    sender: mpsc::Sender<Request>,
}

/// Requests queued beyond this wait at the sender (back-pressure on the HTTP endpoint).
const QUEUE: usize = 1024;

/// A channel: the handle for the tasks and the receiver for the work loop.
pub fn channel() -> (Inbound, mpsc::Receiver<Request>) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    (Inbound { sender }, receiver)
}

const STOPPING: &str = "the daemon is stopping";

impl Inbound {
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Request,
    ) -> Result<T, String> {
        let (answer, done) = oneshot::channel();
        self.sender
            .send(request(answer))
            .await
            .map_err(|_| STOPPING.to_owned())?;
        done.await.map_err(|_| STOPPING.to_owned())?
    }

    /// Hands `happening` to the work loop and waits until it is durable.
    pub async fn submit(&self, happening: Happening) -> Answer {
        self.ask(|answer| Request::Happening { happening, answer })
            .await
    }

    /// Hands a mail to the work loop and waits until it (and the new position) is durable.
    pub async fn mail(&self, folder: &str, position: Position, mail: Incoming) -> Answer {
        let folder = folder.to_owned();
        self.ask(|answer| Request::Mail {
            folder,
            position,
            mail: Box::new(mail),
            answer,
        })
        .await
    }

    pub async fn position(&self, folder: &str) -> Result<Option<Position>, String> {
        let folder = folder.to_owned();
        self.ask(|answer| Request::Position { folder, answer })
            .await
    }

    /// Hands an open or a click to the work loop; the answer (the link's target) comes once
    /// it is durable.
    pub async fn engage(&self, engagement: Engagement) -> engage::Answer {
        self.ask(|answer| Request::Engage { engagement, answer })
            .await
    }

    /// Hands a door's request to the work loop; the reply comes once it is durable.
    pub async fn door(&self, request: DoorRequest) -> Result<Reply, String> {
        self.ask(|answer| Request::Door { request, answer }).await
    }

    /// Hands a command's job to the work loop; `Err` when the loop has stopped.
    pub async fn command(&self, job: Job) -> Result<(), String> {
        self.sender
            .send(Request::Command(job))
            .await
            .map_err(|_| STOPPING.to_owned())
    }

    pub async fn set_position(&self, folder: &str, position: Position) -> Answer {
        let folder = folder.to_owned();
        self.ask(|answer| Request::SetPosition {
            folder,
            position,
            answer,
        })
        .await
    }
}

/// What the work loop needs to answer requests.
pub struct Context<'a> {
    pub store: &'a Store,
    pub project: &'a Project,
    pub unsubscribe: &'a Unsubscribe,
    /// When soft bounces suppress.
    pub bounces: &'a BouncesConfig,
    pub now: DateTime<Utc>,
}

/// Answers every request taken from the queue: the doors' requests together (one transaction,
/// one flush: group commit), the others one by one. A store error is answered and returned:
/// the daemon stops.
pub async fn answer_all(
    requests: impl Iterator<Item = Request>,
    pipeline: &mut Pipeline,
    cx: &Context<'_>,
) -> Result<(), StoreError> {
    let mut doors = Vec::new();
    let mut engagements = Vec::new();
    for request in requests {
        match request {
            Request::Door { request, answer } => doors.push((request, answer)),
            Request::Engage { engagement, answer } => engagements.push((engagement, answer)),
            other => answer(other, pipeline, cx).await?,
        }
    }
    if !engagements.is_empty() {
        engage::answer_group(engagements, pipeline, cx).await?;
    }
    if doors.is_empty() {
        return Ok(());
    }
    // What leads did elsewhere (`POST /v1/leads/{email}/events`) reaches their sequences too:
    // `if lead did …` and `wait until lead did …` (journaled by the door group itself).
    let did: Vec<Happening> = doors
        .iter()
        .filter_map(|(request, _)| match &request.door {
            intake::Door::Event {
                email, name, at, ..
            } => Some(Happening {
                lead: email.clone(),
                workflow: None,
                input: Some(Input::Did {
                    event: name.clone(),
                    at: at.unwrap_or(cx.now),
                }),
                suppress: None,
                note: None,
                receipt: None,
            }),
            _ => None,
        })
        .collect();
    let became = tokio::task::block_in_place(|| intake::answer_group(doors, cx))?;
    run_became(became, pipeline, cx).await?;
    if did.is_empty() {
        return Ok(());
    }
    pipeline
        .run_inputs(cx.project, cx.now, &did, Batch::default())
        .await
}

/// Runs the `when lead becomes …` handlers a group of door requests called for, each in its
/// own transaction after the group's.
async fn run_became(
    became: Vec<Happening>,
    pipeline: &mut Pipeline,
    cx: &Context<'_>,
) -> Result<(), StoreError> {
    for happening in became {
        pipeline.run_input(cx.project, cx.now, &happening).await?;
    }
    Ok(())
}

/// Runs one request and answers it. A store error is answered and returned: the daemon stops.
pub async fn answer(
    request: Request,
    pipeline: &mut Pipeline,
    cx: &Context<'_>,
) -> Result<(), StoreError> {
    match request {
        Request::Happening { happening, answer } => {
            let result = pipeline.run_input(cx.project, cx.now, &happening).await;
            if let (Ok(Some(_)), Some(Input::Unsubscribe)) = (&result, &happening.input) {
                metrics::get().inbound("unsubscribe");
            }
            reply(answer, result.map(|ran| ran.is_some()))
        }
        Request::Mail {
            folder,
            position,
            mail,
            answer,
        } => {
            let result = run_mail(&folder, position, &mail, pipeline, cx).await;
            reply(answer, result)
        }
        Request::Position { folder, answer } => {
            let result = cx.store.meta_get(&position_key(&folder)).map(|value| {
                value.and_then(|bytes| {
                    let bytes: [u8; 8] = bytes.as_slice().try_into().ok()?;
                    Some(Position {
                        uid_validity: u32::from_be_bytes(bytes[..4].try_into().ok()?),
                        uid: u32::from_be_bytes(bytes[4..].try_into().ok()?),
                    })
                })
            });
            reply(answer, result)
        }
        Request::SetPosition {
            folder,
            position,
            answer,
        } => {
            let batch = Batch {
                meta_put: vec![(position_key(&folder), encode(position))],
                ..Batch::default()
            };
            let result = cx.store.apply(&batch).and_then(|()| cx.store.flush());
            reply(answer, result.map(|()| true))
        }
        Request::Door { request, answer } => {
            let became =
                tokio::task::block_in_place(|| intake::answer_group(vec![(request, answer)], cx))?;
            run_became(became, pipeline, cx).await
        }
        Request::Engage { engagement, answer } => {
            engage::answer_group(vec![(engagement, answer)], pipeline, cx).await
        }
        Request::Command(job) => {
            // A command's failure is its own (the job answers it), never the daemon's.
            tokio::task::block_in_place(|| job(cx));
            Ok(())
        }
    }
}

/// Correlates a mail and runs what it means; the mail is marked processed and the folder's
/// position moves past it in the same transaction, whatever it turned out to be.
async fn run_mail(
    folder: &str,
    position: Position,
    mail: &Incoming,
    pipeline: &mut Pipeline,
    cx: &Context<'_>,
) -> Result<bool, StoreError> {
    let seen = match &mail.message_id {
        Some(id) => format!("inbound:{}", id.trim_matches(['<', '>'])),
        None => format!(
            "inbound:{folder}/{}/{}",
            position.uid_validity, position.uid
        ),
    };
    let receipt = Receipt {
        seen,
        position: (position_key(folder), encode(position)),
    };
    if let Some(warning) = correlate::sender_problem(mail) {
        // The lead stays; the sender has a deliverability problem the operator must hear of.
        warn!(%warning, "mail refused for the sender's sake");
    }
    match correlate::happening(cx.store, cx.unsubscribe, mail)? {
        Ok(mut happening) => {
            correlate::count_soft_bounces(cx.store, &mut happening, cx.bounces, cx.now)?;
            happening.receipt = Some(receipt);
            let known = pipeline
                .run_input(cx.project, cx.now, &happening)
                .await?
                .is_some();
            if let Some(kind) = kind_label(&mail.kind) {
                metrics::get().inbound(kind);
            }
            // Logged once what the mail caused is durable (the latency bench listens for it).
            info!(
                lead = %happening.lead,
                what = happening.note.as_deref().unwrap_or_default(),
                uid = position.uid,
                "mail from a lead"
            );
            Ok(known)
        }
        Err(why) => {
            info!(
                from = mail.from.as_deref().unwrap_or("?"),
                subject = mail.subject.as_deref().unwrap_or(""),
                uid = position.uid,
                %why,
                "mail left alone"
            );
            // Not flushed: lost in a crash, this mail is fetched again and left alone again.
            let mut batch = Batch::default();
            batch.meta_put.push((receipt.seen, Vec::new()));
            batch.meta_put.push(receipt.position);
            cx.store.apply(&batch)?;
            Ok(false)
        }
    }
}

/// A mail's kind as `/metrics` labels it; `None` for mail that is no lead's.
fn kind_label(kind: &Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::HumanReply => "reply",
        Kind::AutoReply { .. } => "auto_reply",
        Kind::Bounce {
            permanent: true, ..
        } => "bounce",
        Kind::Bounce { .. } => "soft_bounce",
        Kind::Complaint { .. } => "complaint",
        Kind::Unsubscribe { .. } => "unsubscribe",
        Kind::Unrelated { .. } | Kind::Unknown { .. } => return None,
    })
}

fn reply<T>(
    answer: oneshot::Sender<Result<T, String>>,
    result: Result<T, StoreError>,
) -> Result<(), StoreError> {
    match result {
        Ok(value) => {
            let _ = answer.send(Ok(value));
            Ok(())
        }
        Err(error) => {
            let _ = answer.send(Err(error.to_string()));
            Err(error)
        }
    }
}

fn position_key(folder: &str) -> String {
    format!("imap:{folder}")
}

fn encode(position: Position) -> Vec<u8> {
    let mut bytes = position.uid_validity.to_be_bytes().to_vec();
    bytes.extend_from_slice(&position.uid.to_be_bytes());
    bytes
}
