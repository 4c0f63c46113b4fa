//! `nurture contacts`: the leads whose stage is contact or customer, with when and why they got
//! there, read from the journal: the latest `Promoted` event (its time, by whom, in which
//! workflow) and the input received just before it ("reply received"). Newest promotion first;
//! leads that arrived already promoted (an import with a stage column) come last.

use std::collections::BTreeMap;

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

/// Every contact, newest promotion first.
pub(crate) fn contacts(store: &Store) -> Result<Vec<Contact>, CliError> {
    let mut found = Vec::new();
    for lead in store.leads() {
        let lead = lead.map_err(store_error)?;
        if lead.stage >= Stage::Contact {
            found.push(contact(store, lead, None)?);
        }
    }
    Ok(newest_first(found))
}

/// The contacts each workflow promoted, newest promotion first, by workflow: the status page's
/// latest promotions. Read from the store's index of promotions, not from every lead, so its
/// cost grows with the promotions, not with the leads.
pub(crate) fn promotions_by_workflow(
    store: &Store,
) -> Result<BTreeMap<String, Vec<Contact>>, CliError> {
    let mut by_workflow: BTreeMap<String, Vec<Contact>> = BTreeMap::new();
    for (email, workflow) in store.promotions().map_err(store_error)? {
        // A contact taken back to lead (by hand) is no longer a contact.
        if let Some(lead) = store.lead(&email).map_err(store_error)?
            && lead.stage >= Stage::Contact
        {
            let contact = contact(store, lead, Some(&workflow))?;
            by_workflow.entry(workflow).or_default().push(contact);
        }
    }
    Ok(by_workflow
        .into_iter()
        .map(|(workflow, contacts)| (workflow, newest_first(contacts)))
        .collect())
}

/// `lead`'s latest promotion (by `workflow` when one is named) and what it received just
/// before it.
fn contact(store: &Store, lead: Lead, workflow: Option<&str>) -> Result<Contact, CliError> {
    let events = store.events_of(&lead.email).map_err(store_error)?;
    let promoted = events.iter().rposition(|e| {
        matches!(e.kind, EventKind::Promoted { .. })
            && workflow.is_none_or(|w| e.workflow.as_deref() == Some(w))
    });
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
    Ok(contact)
}

/// Newest promotion first; `None` (never promoted here) sorts last.
fn newest_first(mut contacts: Vec<Contact>) -> Vec<Contact> {
    contacts.sort_by_key(|c| std::cmp::Reverse(c.promoted_at));
    contacts
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::{Batch, DEFAULT_CACHE_BYTES, Event};

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 9, minute, 0).unwrap()
    }

    fn promoted(workflow: &str, minute: u32) -> Event {
        Event {
            at: at(minute),
            workflow: Some(workflow.into()),
            kind: EventKind::Promoted {
                stage: Stage::Contact,
                by: format!("workflow {workflow}"),
            },
        }
    }

    #[test]
    fn each_workflow_lists_the_contacts_it_promoted_newest_first() {
        let dir = std::env::temp_dir().join(format!("nurture-promotions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
        let mut batch = Batch::default();
        for (name, stage) in [
            ("Ana@Example.com", Stage::Contact),
            ("ben@example.com", Stage::Contact),
            ("cleo@example.com", Stage::Lead),
            ("dan@example.com", Stage::Lead),
        ] {
            let mut lead = Lead::new(name.into(), at(0));
            lead.stage = stage;
            batch.leads.push(lead);
        }
        let received = Event {
            at: at(1),
            workflow: Some("trial".into()),
            kind: EventKind::Received {
                what: "reply".into(),
            },
        };
        batch.events.push(("Ana@Example.com".into(), received));
        batch
            .events
            .push(("Ana@Example.com".into(), promoted("trial", 2)));
        batch
            .events
            .push(("ben@example.com".into(), promoted("trial", 5)));
        batch
            .events
            .push(("ben@example.com".into(), promoted("webinar", 3)));
        // Promoted, then taken back to lead by hand: no longer listed.
        batch
            .events
            .push(("cleo@example.com".into(), promoted("trial", 9)));
        store.apply(&batch).unwrap();

        let by_workflow = promotions_by_workflow(&store).unwrap();
        let listed = |workflow: &str| -> Vec<(String, Option<DateTime<Utc>>)> {
            by_workflow[workflow]
                .iter()
                .map(|c| (c.lead.email.clone(), c.promoted_at))
                .collect()
        };
        assert_eq!(
            listed("trial"),
            vec![
                ("ben@example.com".to_string(), Some(at(5))),
                ("Ana@Example.com".to_string(), Some(at(2))),
            ]
        );
        assert_eq!(
            listed("webinar"),
            vec![("ben@example.com".to_string(), Some(at(3)))]
        );
        let ana = &by_workflow["trial"][1];
        assert_eq!(
            ana.why.as_deref(),
            Some(
                sentence(&EventKind::Received {
                    what: "reply".into()
                })
                .as_str()
            )
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
