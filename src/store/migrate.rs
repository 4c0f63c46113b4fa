//! Upgrades of a store written by an older nurture, run by [`SledStore::open`] before anything else
//! reads it.
//!
//! Version 1 → 2: leads are keyed by their address folded to lower case ([`email_key`]), not
//! as spelled. Every key naming a lead moves to the folded form, and leads that were one person
//! spelled two ways (`DANA.SCULLY@fbi.example`, `dana.scully@fbi.example`) become one:
//! - the lead first created gives the spelling sent to and wins where both have a field; the
//!   other fills what it lacks; tags add up; stage, score and suppression take the furthest
//!   (a suppression is never lost: if either was suppressed, the merged lead is);
//! - both journals are kept, interleaved in the order they were written, with a line saying
//!   what was merged;
//! - of two enrollments in one workflow the most advanced is kept (ended before active, then
//!   the one that sent more, then the earliest), with the engagement facts of both;
//! - sent-email records, the outbox and in-flight lists name the kept spelling.
//!
//! Version 2 → 3: the figures of `nurture status` are kept as counters ([`super::counters`]);
//! one pass over the store counts them and writes them, in one transaction.
//!
//! Each step is its own transaction and can run again, so an upgrade cut short by a crash
//! resumes at the next open; the version is written last. Merges done so far are kept in
//! `meta` until then, so the report of a resumed upgrade is still whole.

use std::collections::BTreeMap;
use std::fmt;

use chrono::Utc;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use tracing::info;

use super::{
    Event, EventKind, IN_FLIGHT_PREFIX, MessageRecord, OutboxEmail, Result, SCHEMA_KEY,
    SCHEMA_VERSION, SledStore, StoreError, codec, keys,
};
use crate::engine::{Enrollment, Status};
use crate::lead::{Lead, email_key};

/// Merges made so far by an upgrade cut short: folded key → spellings merged into it.
const MERGES_KEY: &[u8] = b"upgrade_2_merged";

/// Leads that were one person spelled in several ways, merged into one by an upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The spelling kept (the lead created first): what nurture sends to.
    pub kept: String,
    /// The other spellings, whose data and history now belong to `kept`.
    pub merged: Vec<String>,
}

impl fmt::Display for Merged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let others: Vec<String> = self.merged.iter().map(|m| format!("`{m}`")).collect();
        write!(
            f,
            "merged {} into `{}`: the same address in another case is the same person (their histories are kept)",
            others.join(", "),
            self.kept
        )
    }
}

/// Brings the store from version `found` to [`SCHEMA_VERSION`]; `None` when no migration
/// reaches it from there.
pub(super) fn upgrade(store: &SledStore, found: u32) -> Option<Result<Vec<Merged>>> {
    let upgraded = match found {
        1 => fold_addresses(store).and_then(|merged| {
            super::counters::build(store)?;
            Ok(merged)
        }),
        2 => super::counters::build(store).map(|()| Vec::new()),
        _ => return None,
    };
    Some(upgraded.and_then(|merged| {
        finish(store, &merged)?;
        Ok(merged)
    }))
}

fn finish(store: &SledStore, merged: &[Merged]) -> Result<()> {
    for merge in merged {
        info!(kept = %merge.kept, merged = ?merge.merged, "store upgrade: {merge}");
    }
    store.meta.remove(MERGES_KEY)?;
    store
        .meta
        .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
    store.db.flush()?;
    Ok(())
}

/// Version 1 → 2 (see the module's documentation).
fn fold_addresses(store: &SledStore) -> Result<Vec<Merged>> {
    for raw in unfolded(&store.leads, whole)? {
        move_lead(store, &raw)?;
    }
    let merges = merges_so_far(store)?;
    for raw in unfolded(&store.enrollments, enrollment_email)? {
        move_enrollment(store, &raw)?;
    }
    if !merges.is_empty() {
        respell_enrollments(store, &merges)?;
    }
    for raw in unfolded(&store.lead_enrollments, lead_email)? {
        let (email, workflow) = keys::split(&raw).unwrap_or_default();
        rekey(
            &store.lead_enrollments,
            &raw,
            keys::lead_enrollment(email, workflow),
        )?;
    }
    for raw in unfolded(&store.due, due_email)? {
        let (workflow, email) = keys::split(&raw[8..]).unwrap_or_default();
        let mut key = raw[..8].to_vec();
        key.extend_from_slice(&keys::enrollment(workflow, email));
        rekey(&store.due, &raw, key)?;
    }
    for raw in unfolded(&store.events, lead_email)? {
        let (email, sequence) = raw.split_at(lead_email(&raw).len());
        let mut key = keys::lead(std::str::from_utf8(email).unwrap_or_default());
        key.extend_from_slice(sequence);
        rekey(&store.events, &raw, key)?;
    }
    for raw in unfolded(&store.changed, whole)? {
        let email = String::from_utf8_lossy(&raw).into_owned();
        rekey(&store.changed, &raw, keys::lead(&email))?;
    }
    if !merges.is_empty() {
        respell_records(store, &merges)?;
    }
    let mut report = Vec::with_capacity(merges.len());
    for (key, merged) in merges {
        let kept = match store.lead(&key)? {
            Some(lead) => lead.email,
            None => key,
        };
        report.push(Merged { kept, merged });
    }
    Ok(report)
}

/// The keys of `tree` whose email part (`email_of` the key) is not folded.
fn unfolded(tree: &sled::Tree, email_of: fn(&[u8]) -> &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut found = Vec::new();
    for entry in tree.iter().keys() {
        let key = entry?;
        let email = String::from_utf8_lossy(email_of(&key));
        if email_key(&email) != email {
            found.push(key.to_vec());
        }
    }
    Ok(found)
}

/// A key that is an email (`leads`, `changed`).
fn whole(key: &[u8]) -> &[u8] {
    key
}

/// The email part of `due time ‖ workflow ‖ 0 ‖ email`.
fn due_email(key: &[u8]) -> &[u8] {
    key.get(8..).map_or(b"", enrollment_email)
}

/// The email part of a key made by `keys::lead_prefix` (what comes before the separator).
fn lead_email(key: &[u8]) -> &[u8] {
    &key[..keys::lead_of(key).len()]
}

/// The email part of `workflow ‖ 0 ‖ email`.
fn enrollment_email(key: &[u8]) -> &[u8] {
    key.iter()
        .position(|b| *b == 0)
        .map_or(b"", |at| &key[at + 1..])
}

fn merges_so_far(store: &SledStore) -> Result<BTreeMap<String, Vec<String>>> {
    store
        .meta
        .get(MERGES_KEY)?
        .map_or(Ok(BTreeMap::new()), |bytes| {
            codec::decode("upgrade record", &bytes)
        })
}

fn corrupt(what: &'static str) -> impl Fn(std::str::Utf8Error) -> StoreError {
    move |error| StoreError::Corrupt {
        what,
        detail: error.to_string(),
    }
}

/// Moves the lead under `raw` to its folded key, merging it with a lead already there.
fn move_lead(store: &SledStore, raw: &[u8]) -> Result<()> {
    let Some(bytes) = store.leads.get(raw)? else {
        return Ok(());
    };
    let moving: Lead = codec::decode("lead", &bytes)?;
    let key = keys::lead(std::str::from_utf8(raw).map_err(corrupt("lead key"))?);
    let existing: Option<Lead> = store
        .leads
        .get(&key)?
        .map(|bytes| codec::decode("lead", &bytes))
        .transpose()?;
    let Some(existing) = existing else {
        let value = codec::encode(&moving);
        return transact(store, |t| {
            t.leads.remove(raw)?;
            t.leads.insert(key.as_slice(), value.as_slice())?;
            Ok(())
        });
    };
    // The lead created first is the person as first seen; a tie keeps the one in place.
    let (first, second) = if moving.created_at < existing.created_at {
        (moving, existing)
    } else {
        (existing, moving)
    };
    let now = Utc::now();
    let note = Event {
        at: now,
        workflow: None,
        kind: EventKind::Changed {
            change: format!(
                "merged with `{}` (the same address in another case) when the store was upgraded; both histories are kept here",
                second.email
            ),
        },
    };
    let mut merges = merges_so_far(store)?;
    let folded = String::from_utf8_lossy(&key).into_owned();
    merges.entry(folded).or_default().push(second.email.clone());
    let merged = codec::encode(&merge_leads(first, second));
    let note_key = keys::event(
        std::str::from_utf8(&key).unwrap_or_default(),
        store.db.generate_id()?,
    );
    let note = codec::encode(&note);
    let merges = codec::encode(&merges);
    transact(store, |t| {
        t.leads.remove(raw)?;
        t.leads.insert(key.as_slice(), merged.as_slice())?;
        t.events.insert(note_key.as_slice(), note.as_slice())?;
        // The merged lead may now match workflows neither spelling did.
        t.changed.insert(key.as_slice(), &[])?;
        t.meta.insert(MERGES_KEY, merges.as_slice())?;
        Ok(())
    })
}

/// One lead out of two spellings of it: `first` (created first) wins where both have a value.
fn merge_leads(first: Lead, second: Lead) -> Lead {
    let mut lead = first;
    let other = second;
    let fill = |mine: &mut Option<String>, theirs: Option<String>| {
        if mine.is_none() {
            *mine = theirs;
        }
    };
    fill(&mut lead.first_name, other.first_name);
    fill(&mut lead.last_name, other.last_name);
    fill(&mut lead.company, other.company);
    fill(&mut lead.source, other.source);
    fill(&mut lead.timezone, other.timezone);
    lead.tags.extend(other.tags);
    lead.score = lead.score.max(other.score);
    lead.stage = lead.stage.max(other.stage);
    for (name, value) in other.attributes {
        lead.attributes.entry(name).or_insert(value);
    }
    if lead.suppression.is_none() {
        lead.suppression = other.suppression;
    }
    lead.created_at = lead.created_at.min(other.created_at);
    lead.updated_at = lead.updated_at.max(other.updated_at);
    lead
}

/// Moves the enrollment under `raw` (`workflow ‖ 0 ‖ unfolded email`) to its folded key,
/// keeping the more advanced of it and one already there, and moves its index entries.
fn move_enrollment(store: &SledStore, raw: &[u8]) -> Result<()> {
    let Some(bytes) = store.enrollments.get(raw)? else {
        return Ok(());
    };
    let moving: Enrollment = codec::decode("enrollment", &bytes)?;
    let (workflow, email) = keys::split(raw).ok_or(StoreError::Corrupt {
        what: "enrollment key",
        detail: format!("{raw:?}"),
    })?;
    let key = keys::enrollment(workflow, email);
    let old_index = [email.as_bytes(), &[0], workflow.as_bytes()].concat();
    let new_index = keys::lead_enrollment(email, workflow);
    let existing: Option<Enrollment> = store
        .enrollments
        .get(&key)?
        .map(|bytes| codec::decode("enrollment", &bytes))
        .transpose()?;
    let mut old_due = vec![moving.due.map(|due| keys::due(due, raw))];
    let mut kept = match existing {
        Some(existing) => {
            old_due.push(existing.due.map(|due| keys::due(due, &key)));
            merge_enrollments(moving, existing)
        }
        None => moving,
    };
    if let Some(lead) = store.lead(email)? {
        kept.lead = lead.email;
    }
    let new_due = kept.due.map(|due| keys::due(due, &key));
    let value = codec::encode(&kept);
    transact(store, |t| {
        t.enrollments.remove(raw)?;
        t.lead_enrollments.remove(old_index.as_slice())?;
        for due in old_due.iter().flatten() {
            t.due.remove(due.as_slice())?;
        }
        t.enrollments.insert(key.as_slice(), value.as_slice())?;
        t.lead_enrollments.insert(new_index.as_slice(), &[])?;
        if let Some(due) = &new_due {
            t.due.insert(due.as_slice(), &[])?;
        }
        Ok(())
    })
}

/// The more advanced of two enrollments of one person in one workflow, with what both saw.
fn merge_enrollments(a: Enrollment, b: Enrollment) -> Enrollment {
    // Ended beats active (an exit may be a suppression; a completion must not restart), then
    // the one that sent more, then the one enrolled first.
    let rank = |e: &Enrollment| {
        (
            !matches!(e.status, Status::Active),
            e.facts.sent.len(),
            std::cmp::Reverse(e.enrolled_at),
        )
    };
    let (mut kept, other) = if rank(&a) >= rank(&b) { (a, b) } else { (b, a) };
    kept.enrolled_at = kept.enrolled_at.min(other.enrolled_at);
    kept.updated_at = kept.updated_at.max(other.updated_at);
    kept.facts.replied |= other.facts.replied;
    kept.facts.auto_replied |= other.facts.auto_replied;
    kept.facts.clicked |= other.facts.clicked;
    kept
}

/// Enrollments already under a folded key whose `lead` is a spelling merged away.
fn respell_enrollments(store: &SledStore, merges: &BTreeMap<String, Vec<String>>) -> Result<()> {
    for (key, merged) in merges {
        let Some(lead) = store.lead(key)? else {
            continue;
        };
        for enrollment in store.enrollments_of(key)? {
            if merged.contains(&enrollment.lead) {
                let respelled = Enrollment {
                    lead: lead.email.clone(),
                    ..enrollment
                };
                let index = keys::enrollment(&respelled.workflow, key);
                store.enrollments.insert(index, codec::encode(&respelled))?;
            }
        }
    }
    Ok(())
}

/// Sent-email records, the outbox and in-flight lists: the kept spelling for merged leads.
fn respell_records(store: &SledStore, merges: &BTreeMap<String, Vec<String>>) -> Result<()> {
    let mut spelling: BTreeMap<String, String> = BTreeMap::new();
    for (key, merged) in merges {
        if let Some(lead) = store.lead(key)? {
            for old in merged {
                spelling.insert(old.clone(), lead.email.clone());
            }
        }
    }
    let respell = |lead: &mut String| match spelling.get(lead.as_str()) {
        Some(kept) => {
            lead.clone_from(kept);
            true
        }
        None => false,
    };
    for entry in store.messages.iter() {
        let (key, value) = entry?;
        let mut record: MessageRecord = codec::decode("message", &value)?;
        if respell(&mut record.lead) {
            store.messages.insert(key, codec::encode(&record))?;
        }
    }
    for entry in store.outbox.iter() {
        let (key, value) = entry?;
        let (mut email, eml): (OutboxEmail, Vec<u8>) =
            codec::decode_with_raw("outbox email", &value)?;
        if respell(&mut email.lead) {
            store
                .outbox
                .insert(key, codec::encode_with_raw(&email, &eml))?;
        }
    }
    for entry in store.meta.scan_prefix(IN_FLIGHT_PREFIX) {
        let (key, value) = entry?;
        let mut list: Vec<OutboxEmail> = codec::decode("in-flight list", &value)?;
        let mut changed = false;
        for email in &mut list {
            changed |= respell(&mut email.lead);
        }
        if changed {
            store.meta.insert(key, codec::encode(&list))?;
        }
    }
    Ok(())
}

/// Moves one entry to a new key (an index entry, a journal line): its value is unchanged.
fn rekey(tree: &sled::Tree, raw: &[u8], key: Vec<u8>) -> Result<()> {
    let Some(value) = tree.get(raw)? else {
        return Ok(());
    };
    tree.transaction(|t| {
        t.remove(raw)?;
        t.insert(key.as_slice(), value.clone())?;
        Ok::<_, ConflictableTransactionError<StoreError>>(())
    })
    .map_err(super::flatten)
}

/// The trees a lead's move touches, inside one transaction.
struct Trees<'a> {
    leads: &'a sled::transaction::TransactionalTree,
    enrollments: &'a sled::transaction::TransactionalTree,
    lead_enrollments: &'a sled::transaction::TransactionalTree,
    due: &'a sled::transaction::TransactionalTree,
    events: &'a sled::transaction::TransactionalTree,
    changed: &'a sled::transaction::TransactionalTree,
    meta: &'a sled::transaction::TransactionalTree,
}

type Step = std::result::Result<(), ConflictableTransactionError<StoreError>>;

fn transact(store: &SledStore, work: impl Fn(&Trees<'_>) -> Step) -> Result<()> {
    (
        &store.leads,
        &store.enrollments,
        &store.lead_enrollments,
        &store.due,
        &store.events,
        &store.changed,
        &store.meta,
    )
        .transaction(
            |(leads, enrollments, lead_enrollments, due, events, changed, meta)| {
                work(&Trees {
                    leads,
                    enrollments,
                    lead_enrollments,
                    due,
                    events,
                    changed,
                    meta,
                })
            },
        )
        .map_err(super::flatten)
}
