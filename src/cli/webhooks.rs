//! `nurture webhooks`: the webhook queue (waiting deliveries: next attempt, attempts, last
//! error) and the given-up ones; `nurture webhooks retry ID…|--all-failed` queues given-up
//! deliveries again, due at once, with their attempts counted afresh and the same
//! `webhook-id` (a receiver that did get one after all drops the repeat).

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::leads::view::{store_error, when};
use super::session::{Output, Session};
use super::{CliError, ExitCode};
use crate::store::{Batch, Delivery, Store};

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub action: Option<Action>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum Action {
    /// Queue given-up webhooks again, due now (the daemon sends them).
    Retry(RetryArgs),
}

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RetryArgs {
    /// The `webhook-id`s to retry (the ID column of `nurture webhooks`).
    #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
    pub ids: Vec<String>,
    /// Every given-up webhook.
    #[arg(long)]
    pub all_failed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Format {
    Table,
    Json,
}

impl WebhooksArgs {
    /// Whether it changes the store (`retry`): a running daemon runs it in its work loop.
    pub fn writes(&self) -> bool {
        self.action.is_some()
    }
}

/// Runs in a running daemon or on a store opened here ([`super::session`]).
pub fn run(
    args: &WebhooksArgs,
    session: &Session<'_>,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let store = session.store;
    match &args.action {
        Some(Action::Retry(retry_args)) => retry(store, retry_args, session.now, out),
        None => {
            let pending = collect(store.webhooks_pending())?;
            let failed = collect(store.webhooks_failed())?;
            match args.format {
                Format::Table => out.line(table(&pending, &failed).trim_end())?,
                Format::Json => {
                    let list = |all: &[Delivery]| all.iter().map(delivery_json).collect::<Vec<_>>();
                    let report = json!({ "pending": list(&pending), "failed": list(&failed) });
                    out.line(serde_json::to_string_pretty(&report).unwrap_or_default())?;
                }
            }
            Ok(ExitCode::Success)
        }
    }
}

fn collect(
    all: impl Iterator<Item = crate::store::Result<Delivery>>,
) -> Result<Vec<Delivery>, CliError> {
    all.collect::<Result<_, _>>().map_err(store_error)
}

/// Moves the chosen given-up deliveries back into the queue, in one batch.
fn retry(
    store: &Store,
    args: &RetryArgs,
    now: DateTime<Utc>,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let failed = collect(store.webhooks_failed())?;
    let chosen: Vec<&Delivery> = if args.all_failed {
        failed.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for id in &args.ids {
            let found = failed.iter().find(|d| &d.id == id).ok_or_else(|| {
                let pending = store
                    .webhooks_pending()
                    .any(|d| d.is_ok_and(|d| &d.id == id));
                CliError::Usage(if pending {
                    format!("webhook {id} is still waiting for its next attempt, not given up")
                } else {
                    format!("no given-up webhook has the id {id} (see `nurture webhooks`)")
                })
            })?;
            chosen.push(found);
        }
        chosen
    };
    let mut batch = Batch::default();
    for delivery in &chosen {
        let mut again = (*delivery).clone();
        again.attempts = 0;
        again.failed_at = None;
        again.queued_at = now;
        again.next_attempt = now;
        batch.webhooks_failed_remove.push(again.id.clone());
        batch.webhooks_put.push(again);
    }
    store.apply(&batch).map_err(store_error)?;
    store.flush().map_err(store_error)?;
    out.line(format_args!(
        "{} webhook{} queued again; the daemon sends {} now",
        chosen.len(),
        if chosen.len() == 1 { "" } else { "s" },
        if chosen.len() == 1 { "it" } else { "them" }
    ))?;
    Ok(ExitCode::Success)
}

fn delivery_json(delivery: &Delivery) -> Value {
    json!({
        "id": delivery.id,
        "event": delivery.event,
        "lead": delivery.lead,
        "url": delivery.url,
        "queued_at": delivery.queued_at,
        "next_attempt": delivery.failed_at.is_none().then_some(delivery.next_attempt),
        "attempts": delivery.attempts,
        "last_error": delivery.last_error,
        "failed_at": delivery.failed_at,
        "body": serde_json::from_str::<Value>(&delivery.body).unwrap_or(Value::Null),
    })
}

fn table(pending: &[Delivery], failed: &[Delivery]) -> String {
    let mut out = String::new();
    let row = |d: &Delivery, at: DateTime<Utc>| {
        [
            d.id.clone(),
            d.event.clone(),
            d.lead.clone(),
            d.url.clone(),
            when(at),
            d.attempts.to_string(),
            d.last_error.clone().unwrap_or_else(|| "-".into()),
        ]
    };
    if pending.is_empty() {
        out.push_str("no webhooks waiting\n");
    } else {
        out.push_str(&format!("waiting ({})\n", pending.len()));
        let rows: Vec<_> = pending.iter().map(|d| row(d, d.next_attempt)).collect();
        out.push_str(&columns("NEXT ATTEMPT", &rows));
    }
    if failed.is_empty() {
        out.push_str("no webhooks given up\n");
    } else {
        out.push_str(&format!(
            "\ngiven up ({}): `nurture webhooks retry ID` or `--all-failed` sends them again\n",
            failed.len()
        ));
        let rows: Vec<_> = failed
            .iter()
            .map(|d| row(d, d.failed_at.unwrap_or(d.next_attempt)))
            .collect();
        out.push_str(&columns("GIVEN UP", &rows));
    }
    out
}

/// Aligned columns under a header whose fifth column is `at`.
fn columns(at: &str, rows: &[[String; 7]]) -> String {
    let header = ["ID", "EVENT", "LEAD", "URL", at, "ATTEMPTS", "LAST ERROR"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
