//! Enrollment in the daemon: leads whose data changed, and scans of every lead for a
//! recurring workflow's cron slot or a workflow that was just added. A lead that changed is
//! also held against the goal (`exit when …`) of every workflow it is active in, so that a lead
//! promoted to customer by hand leaves at once, not at its next step.
//!
//! Scans go a chunk at a time between the other work, so a million-lead segment does not stop
//! sending; their progress (a cursor) lives in the store, so a restart resumes them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::engine::{self, Effect, Input};
use crate::enrollment::{self, Decision, Trigger};
use crate::lead::Lead;
use crate::project::Project;
use crate::store::{Batch, EventKind, Store, StoreError};
use crate::workflow::Workflow;

const SCANS_KEY: &str = "scans";
const KNOWN_WORKFLOWS_KEY: &str = "known_workflows";

fn slot_key(workflow: &str) -> String {
    format!("last_slot:{workflow}")
}

/// A walk over every lead for some workflows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scan {
    pub workflows: Vec<String>,
    pub recurring: bool,
    /// The last lead looked at.
    pub after: Option<String>,
}

/// Enrolls up to `limit` changed leads. Returns how many were looked at.
pub fn process_changed(
    store: &Store,
    project: &Project,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<usize, StoreError> {
    let emails = store.changed(limit)?;
    let mut batch = Batch::default();
    for email in &emails {
        if let Some(lead) = store.lead(email)? {
            for workflow in &project.workflows {
                consider(store, &mut batch, workflow, &lead, Trigger::Changed, now)?;
            }
        }
        batch.changed_done.push(email.clone());
    }
    store.apply(&batch)?;
    Ok(emails.len())
}

fn consider(
    store: &Store,
    batch: &mut Batch,
    workflow: &Workflow,
    lead: &Lead,
    trigger: Trigger,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut existing = store.enrollment(&workflow.name, &lead.email)?;
    let has_goal = workflow.goal.is_some();
    if let Some(enrollment) = existing.as_mut().filter(|e| has_goal && e.is_active()) {
        // The engine's own goal check, as before every step: leaving is the only effect it
        // can have.
        let outcome = engine::advance(workflow, enrollment, lead, &Input::LeadChanged, now);
        for effect in &outcome.effects {
            if let Effect::Exited { reason } = effect {
                let kind = EventKind::Exited {
                    reason: reason.clone(),
                };
                batch.event(&lead.email, now, Some(&workflow.name), kind);
            }
        }
        if outcome.enrollment.status != enrollment.status {
            *enrollment = outcome.enrollment;
            batch.enrollments.push(enrollment.clone());
        }
    }
    if enrollment::decide(workflow, lead, existing.as_ref(), trigger, now) == Decision::Enroll {
        enrollment::enroll_into(batch, workflow, lead, now);
    }
    Ok(())
}

/// Queues the scans this project needs: a backfill for each workflow not seen before, and a
/// segment scan for each recurring workflow whose cron slot has come. Returns when the next
/// slot is due, for the daemon's sleep.
pub fn plan_scans(
    store: &Store,
    project: &Project,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let mut scans = pending_scans(store)?;
    let known: Vec<String> = match store.meta_get(KNOWN_WORKFLOWS_KEY)? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Vec::new(),
    };
    let added: Vec<String> = project
        .workflows
        .iter()
        .filter(|w| w.enroll.is_some() && w.every.is_none() && !known.contains(&w.name))
        .map(|w| w.name.clone())
        .collect();
    if !added.is_empty() {
        info!(workflows = ?added, "new workflows: looking at every lead for them");
        scans.push(Scan {
            workflows: added,
            recurring: false,
            after: None,
        });
    }
    let mut next_slot: Option<DateTime<Utc>> = None;
    for workflow in &project.workflows {
        let Some(every) = &workflow.every else {
            continue;
        };
        let key = slot_key(&workflow.name);
        let last = match store.meta_get(&key)? {
            Some(bytes) => serde_json::from_slice::<DateTime<Utc>>(&bytes).unwrap_or(now),
            // A new recurring workflow starts at its next slot, not at every slot of the past.
            None => {
                store.meta_set(&key, &serde_json::to_vec(&now).expect("a time serializes"))?;
                now
            }
        };
        let zone_now = last.with_timezone(&workflow.timezone);
        let Some(slot) = every.next_after(&zone_now) else {
            continue;
        };
        if slot <= now {
            info!(workflow = %workflow.name, %slot, "recurring slot: enrolling the segment");
            scans.push(Scan {
                workflows: vec![workflow.name.clone()],
                recurring: true,
                after: None,
            });
            store.meta_set(&key, &serde_json::to_vec(&slot).expect("a time serializes"))?;
            next_slot = Some(now);
        } else {
            next_slot = Some(next_slot.map_or(slot, |n| n.min(slot)));
        }
    }
    let names: Vec<&str> = project.workflows.iter().map(|w| w.name.as_str()).collect();
    let mut all_known = known.clone();
    all_known.extend(
        names
            .iter()
            .map(|n| n.to_string())
            .filter(|n| !known.contains(n)),
    );
    store.meta_set(
        KNOWN_WORKFLOWS_KEY,
        &serde_json::to_vec(&all_known).expect("names serialize"),
    )?;
    save_scans(store, &scans)?;
    Ok(next_slot)
}

/// Advances the first pending scan by up to `limit` leads. Returns how many were looked at.
pub fn scan_some(
    store: &Store,
    project: &Project,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<usize, StoreError> {
    let mut scans = pending_scans(store)?;
    let Some(scan) = scans.first_mut() else {
        return Ok(0);
    };
    let workflows: Vec<&Workflow> = scan
        .workflows
        .iter()
        .filter_map(|name| project.workflow(name))
        .collect();
    let trigger = if scan.recurring {
        Trigger::Slot
    } else {
        Trigger::Changed
    };
    let mut batch = Batch::default();
    let mut looked = 0;
    for lead in store.leads_after(scan.after.as_deref(), limit) {
        let lead = lead?;
        for workflow in &workflows {
            consider(store, &mut batch, workflow, &lead, trigger, now)?;
        }
        scan.after = Some(lead.email.clone());
        looked += 1;
    }
    if looked < limit || workflows.is_empty() {
        info!(workflows = ?scan.workflows, "scan finished");
        scans.remove(0);
    }
    store.apply(&batch)?;
    save_scans(store, &scans)?;
    Ok(looked.max(1))
}

fn pending_scans(store: &Store) -> Result<Vec<Scan>, StoreError> {
    Ok(match store.meta_get(SCANS_KEY)? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Vec::new(),
    })
}

fn save_scans(store: &Store, scans: &[Scan]) -> Result<(), StoreError> {
    store.meta_set(
        SCANS_KEY,
        &serde_json::to_vec(scans).expect("scans serialize"),
    )
}
