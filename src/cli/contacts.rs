//! `nurture contacts`: the leads whose stage is contact or customer, with when and why they got
//! there, read from the journal: the latest `Promoted` event (its time, by whom, in which
//! workflow) and the input received just before it ("reply received"). Newest promotion first;
//! leads that arrived already promoted (an import with a stage column) come last.

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::leads::view::{aligned, cell, sentence, store_error, when, write_error};
use super::session::{Output, Session};
use super::{CliError, ExitCode};
use crate::lead::{Lead, Stage};
use crate::store::{EventKind, Store};

#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ContactsArgs {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Table,
    Json,
}

/// One contact and the story of its promotion.
pub(crate) struct Contact {
    pub lead: Lead,
    pub promoted_at: Option<DateTime<Utc>>,
    pub by: Option<String>,
    pub workflow: Option<String>,
    /// What was received just before the promotion, as a sentence ("reply received").
    pub why: Option<String>,
}

pub fn run(
    args: &ContactsArgs,
    session: &Session<'_>,
    out: &mut Output<'_>,
) -> Result<ExitCode, CliError> {
    let contacts = contacts(session.store)?;
    match args.format {
        Format::Table => out
            .out
            .write_all(table(&contacts).as_bytes())
            .map_err(write_error)?,
        Format::Json => {
            let items: Vec<serde_json::Value> = contacts
                .iter()
                .map(|c| {
                    json!({
                        "email": c.lead.email,
                        "name": c.lead.full_name(),
                        "company": c.lead.company,
                        "stage": c.lead.stage,
                        "promoted_at": c.promoted_at,
                        "by": c.by,
                        "workflow": c.workflow,
                        "why": c.why,
                    })
                })
                .collect();
            out.line(serde_json::to_string_pretty(&items).unwrap_or_default())?;
        }
    }
    Ok(ExitCode::Success)
}

/// Every contact, newest promotion first (also the status page's latest promotions).
pub(crate) fn contacts(store: &Store) -> Result<Vec<Contact>, CliError> {
    let mut found = Vec::new();
    for lead in store.leads() {
        let lead = lead.map_err(store_error)?;
        if lead.stage < Stage::Contact {
            continue;
        }
        let events = store.events_of(&lead.email).map_err(store_error)?;
        let promoted = events
            .iter()
            .rposition(|e| matches!(e.kind, EventKind::Promoted { .. }));
        let mut contact = Contact {
            lead,
            promoted_at: None,
            by: None,
            workflow: None,
            why: None,
        };
        if let Some(index) = promoted {
            let event = &events[index];
            if let EventKind::Promoted { by, .. } = &event.kind {
                contact.by = Some(by.clone());
            }
            contact.promoted_at = Some(event.at);
            contact.workflow.clone_from(&event.workflow);
            contact.why = events[..index]
                .iter()
                .rev()
                .find(|e| matches!(e.kind, EventKind::Received { .. }))
                .map(|e| sentence(&e.kind));
        }
        found.push(contact);
    }
    // Newest promotion first; `None` (never promoted here) sorts last.
    found.sort_by_key(|c| std::cmp::Reverse(c.promoted_at));
    Ok(found)
}

fn table(contacts: &[Contact]) -> String {
    if contacts.is_empty() {
        return "no contacts yet\n".to_string();
    }
    let header = ["EMAIL", "NAME", "STAGE", "PROMOTED", "BY", "WHY"];
    let rows: Vec<[String; 6]> = contacts
        .iter()
        .map(|c| {
            // No `Promoted` event: the lead was imported at this stage.
            let by =
                c.by.clone()
                    .unwrap_or_else(|| format!("imported as {}", c.lead.stage));
            [
                cell(&c.lead.email),
                cell(&c.lead.full_name().unwrap_or_default()),
                c.lead.stage.to_string(),
                c.promoted_at.map_or_else(|| "-".to_string(), when),
                cell(&by),
                cell(c.why.as_deref().unwrap_or("-")),
            ]
        })
        .collect();
    aligned(header, &rows, &[])
}
