//! `nurture outbox uncertain|resend|drop`: the operator's answer to emails a crash left
//! uncertain.
//!
//! An email is uncertain when the daemon stopped while an SMTP server had it: it may or may not
//! have left, and nurture does not guess (the folder transport never leaves any: it looks at
//! its folder). The mail server's log tells; then `resend` puts the email back in the outbox,
//! byte for byte with its Message-ID (a receiving server that has it may drop the duplicate),
//! and the daemon sends it; `drop` closes the case without sending. Both are journaled on the
//! lead's timeline. Like every command, this one borrows the store from a running daemon.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use super::session::{Output, Session};
use super::{CliError, ExitCode};
use crate::store::{Batch, EventKind, MessageState, OutboxEmail, Store};

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct OutboxArgs {
    #[command(subcommand)]
    pub command: OutboxCommand,
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum OutboxCommand {
    /// List the uncertain emails: the daemon stopped while the mail server had them.
    Uncertain(ListArgs),
    /// Send uncertain emails again (they did not leave): back in the outbox, sent by the daemon.
    Resend(ChooseArgs),
    /// Do not send uncertain emails again (they left, or should not): the case is closed.
    Drop(ChooseArgs),
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ListArgs {
    /// `table` for people; `json` for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "all"]))]
pub struct ChooseArgs {
    /// Message-IDs, as `nurture outbox uncertain` lists them (the angle brackets may be left
    /// out).
    #[arg(value_name = "MESSAGE-ID")]
    pub ids: Vec<String>,
    /// Every uncertain email.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
}

impl OutboxArgs {
    /// Whether it changes the store (`resend`, `drop`): a running daemon runs it in its work
    /// loop.
    pub fn writes(&self) -> bool {
        !matches!(self.command, OutboxCommand::Uncertain(_))
    }
}

/// Runs in a running daemon or on a store opened here ([`super::session`]).
pub fn run(
    args: &OutboxArgs,
    session: &Session<'_>,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let store = session.store;
    let uncertain = uncertain(store)?;
    let now = session.now;
    match &args.command {
        OutboxCommand::Uncertain(list) => {
            out.line(show(&uncertain, list.format)?.trim_end())?;
            Ok(ExitCode::Success)
        }
        OutboxCommand::Resend(choose) => {
            settle(store, &uncertain, choose, Verdict::Resend, now, out)
        }
        OutboxCommand::Drop(choose) => settle(store, &uncertain, choose, Verdict::Drop, now, out),
    }
}

/// An uncertain email: its record, and the copy kept to send it again (none in stores written
/// before copies were kept).
#[derive(Debug, Serialize)]
struct Uncertain {
    message_id: String,
    workflow: String,
    lead: String,
    step: String,
    subject: String,
    /// When the daemon found it uncertain (its restart after the stop).
    at: DateTime<Utc>,
    /// Whether `resend` can send it: a copy of it was kept.
    resendable: bool,
    #[serde(skip)]
    copy: Option<OutboxEmail>,
}

/// Every uncertain email, by Message-ID (in sending order).
fn uncertain(store: &Store) -> Result<Vec<Uncertain>, CliError> {
    let input = |e: crate::store::StoreError| CliError::Input(e.to_string());
    let mut copies: BTreeMap<String, OutboxEmail> = store
        .uncertain()
        .map_err(input)?
        .into_iter()
        .map(|email| (email.message_id.clone(), email))
        .collect();
    let mut found = Vec::new();
    for record in store.messages() {
        let record = record.map_err(input)?;
        if record.state != MessageState::Uncertain {
            continue;
        }
        let copy = copies
            .remove(&record.message_id)
            .filter(|copy| !copy.eml.is_empty());
        found.push(Uncertain {
            resendable: copy.is_some(),
            message_id: record.message_id,
            workflow: record.workflow,
            lead: record.lead,
            step: record.step,
            subject: record.subject,
            at: record.at,
            copy,
        });
    }
    Ok(found)
}

fn show(uncertain: &[Uncertain], format: Format) -> Result<String, CliError> {
    if format == Format::Json {
        let mut json = serde_json::to_string_pretty(uncertain)
            .map_err(|e| CliError::Input(format!("cannot write the list as JSON: {e}")))?;
        json.push('\n');
        return Ok(json);
    }
    if uncertain.is_empty() {
        return Ok("no uncertain emails\n".to_string());
    }
    let mut out = format!(
        "{} uncertain email{}: the daemon stopped while the mail server had {}; its log tells \
         whether {} left, then `nurture outbox resend` or `nurture outbox drop`:\n",
        uncertain.len(),
        super::check::plural(uncertain.len()),
        if uncertain.len() == 1 { "it" } else { "them" },
        if uncertain.len() == 1 { "it" } else { "they" },
    );
    for email in uncertain {
        let copy = if email.resendable {
            ""
        } else {
            "  (no copy kept: cannot be resent)"
        };
        out.push_str(&format!(
            "  {}  {}  {}  step {}  \"{}\"  since {}{copy}\n",
            email.message_id,
            email.workflow,
            email.lead,
            email.step,
            email.subject,
            email.at.format("%Y-%m-%d %H:%M UTC"),
        ));
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Resend,
    Drop,
}

/// Resends or drops the chosen uncertain emails, in one batch, journaled.
fn settle(
    store: &Store,
    uncertain: &[Uncertain],
    choose: &ChooseArgs,
    verdict: Verdict,
    now: DateTime<Utc>,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let chosen: Vec<&Uncertain> = if choose.all {
        uncertain.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for id in &choose.ids {
            let bare = id.trim().trim_matches(['<', '>']);
            let email = uncertain
                .iter()
                .find(|email| email.message_id.trim_matches(['<', '>']) == bare)
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "no uncertain email has the Message-ID `{id}`; `nurture outbox uncertain` lists them"
                    ))
                })?;
            chosen.push(email);
        }
        chosen
    };
    if verdict == Verdict::Resend
        && let Some(email) = chosen.iter().find(|email| !email.resendable)
    {
        return Err(CliError::Input(format!(
            "`{}` cannot be resent: no copy of it was kept (it was found uncertain by an older \
             nurture); `nurture outbox drop` closes it",
            email.message_id
        )));
    }
    let mut batch = Batch::default();
    for email in &chosen {
        batch.uncertain_remove.push(email.message_id.clone());
        let (message_id, step) = (email.message_id.clone(), email.step.clone());
        let kind = match verdict {
            Verdict::Resend => {
                if let Some(copy) = &email.copy {
                    batch.outbox_put.push(OutboxEmail {
                        not_before: now,
                        attempts: 0,
                        ..copy.clone()
                    });
                }
                // Its outcome is recorded again when it leaves.
                batch.messages_remove.push(email.message_id.clone());
                EventKind::Resent { message_id, step }
            }
            Verdict::Drop => {
                if let Some(mut record) = store
                    .message(&email.message_id)
                    .map_err(|e| CliError::Input(e.to_string()))?
                {
                    record.state = MessageState::Dropped;
                    record.at = now;
                    batch.messages.push(record);
                }
                EventKind::Dropped { message_id, step }
            }
        };
        batch.event(&email.lead, now, Some(&email.workflow), kind);
    }
    store
        .apply(&batch)
        .and_then(|()| store.flush())
        .map_err(|e| CliError::Input(e.to_string()))?;
    let (done, next) = match verdict {
        Verdict::Resend => ("back in the outbox", ": the daemon sends them"),
        Verdict::Drop => ("dropped", ""),
    };
    out.line(format_args!(
        "{} uncertain email{} {done}{next}",
        chosen.len(),
        super::check::plural(chosen.len())
    ))?;
    Ok(ExitCode::Success)
}
