//! Importing a leads file into the store: the merge rule for leads already there, the counts a
//! user sees, and the chunked writes that keep a million-row import fast and its memory flat.
//!
//! A lead new to the store is written as the file gives it. A lead already there takes the
//! file's non-empty fields, the union of the tags and the file's attributes key by key; its
//! score only when the row has a score. Stage, suppression and `created_at` are never touched:
//! stage only moves forward by promotion, and an import must not lift a suppression. A lead the
//! import leaves as it was is not written at all, so importing the same file twice leaves the
//! store as it was after the first time.
//!
//! Every created or changed lead is written with a journal event and a mark in the store's
//! `changed` tree, so the daemon's enrollment pass looks at it.
//!
//! Every row read is counted once: by the lead it made (`created`, `updated`, `unchanged`),
//! as `merged` when an earlier row of the file had the same address, or as `rejected`; so the
//! counts add up to the rows read, and no row goes missing without a word.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lead::{Lead, email_key};
use crate::leads_file::{CsvOptions, FileLead, LeadsFileError, LeadsReader, RejectedRow};
use crate::store::{Batch, EventKind, Store, StoreError};

/// Rows read, merged and written per store transaction. Measured on 100,000 leads into a fresh
/// store: 100 to 250 rows per transaction cost the least CPU; from 1,000 up each write grows
/// slower (sled buffers a transaction's writes and checks them all at commit) and memory grows.
pub const CHUNK_ROWS: usize = 250;

/// What the command line adds to every row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportOptions {
    /// The source of leads whose row names none.
    pub source: Option<String>,
    /// Tags added to every lead in the file.
    pub tags: Vec<String>,
    /// A CSV file's separator and encoding, when chosen (used by the side that reads the
    /// file, never sent to a daemon).
    #[serde(skip)]
    pub csv: CsvOptions,
}

/// What an import did. Each address in the file counts once, as `created`, `updated`
/// (something actually changed) or `unchanged`; its further rows count as `merged`; `rejected`
/// counts rows. The five add up to `rows`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Data rows read.
    pub rows: usize,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Rows whose address an earlier row of the file had: merged into that lead.
    pub merged: usize,
    pub rejected: usize,
    /// What reading the file had to work out (rows read as Windows-1252), as sentences.
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    File(#[from] LeadsFileError),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the writer thread: {0}")]
    Thread(String),
}

/// How an address already seen in this import was counted, so that its rows in a later chunk
/// neither count it twice nor journal a second creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Created,
    Updated,
    Unchanged,
}

/// Imports `path` into `store`, which this process opened. After each chunk, `on_chunk` gets
/// the counts so far and the rows that chunk rejected (for progress and line-numbered
/// warnings). Rejected rows do not fail the import; an unreadable file or a store error does,
/// after the chunks before it were written.
///
/// Two threads share the work: this one reads, merges and looks leads up while a writer thread
/// applies the previous chunk's batch. sled runs one transaction at a time, so the writes are
/// the bottleneck and everything else hides behind them. (Through a running daemon, the file
/// is read by the command and each chunk merged and written by the daemon: [`Merger`].)
pub fn import(
    store: &Store,
    path: &Path,
    options: &ImportOptions,
    now: DateTime<Utc>,
    mut on_chunk: impl FnMut(&ImportSummary, &[RejectedRow]),
) -> Result<ImportSummary, ImportError> {
    let mut reader = LeadsReader::open_with(path, now, options.csv)?;
    // An empty store has no lead this import did not create: no need to look one up.
    let was_empty = store.leads().next().is_none();
    let mut merger = Merger::new(options.clone(), &file_name(path), was_empty);
    let summary = std::thread::scope(|scope| {
        let (batches, to_write) = std::sync::mpsc::sync_channel::<Batch>(1);
        let (acks, written) = std::sync::mpsc::channel::<Result<(), StoreError>>();
        let writing = move || {
            for batch in to_write {
                let result = store.apply(&batch);
                let failed = result.is_err();
                if acks.send(result).is_err() || failed {
                    break;
                }
            }
        };
        // Named, so a profile tells the two sides apart.
        std::thread::Builder::new()
            .name("import-writer".into())
            .spawn_scoped(scope, writing)
            .map_err(|e| ImportError::Thread(e.to_string()))?;
        let mut writer = Writer {
            batches,
            written,
            in_flight: 0,
        };
        let mut read = || -> Result<ImportSummary, ImportError> {
            let mut summary = ImportSummary::default();
            let mut merged_in_chunks = 0;
            while let Some(chunk) = reader.next_chunk(CHUNK_ROWS)? {
                summary.rows += chunk.rows;
                summary.rejected += chunk.rejected.len();
                merged_in_chunks += chunk.rows - chunk.rejected.len() - chunk.leads.len();
                // An address from an earlier chunk: its write may still be in flight.
                let batch = merger.merge(store, chunk.leads, now, &mut || writer.drain())?;
                writer.send(batch)?;
                merger.counts().add_to(&mut summary, merged_in_chunks);
                on_chunk(&summary, &chunk.rejected);
            }
            summary.notes = reader.notes();
            Ok(summary)
        };
        let result = read();
        // Whatever happened, wait for the batches already handed over (and report their error
        // first: a failed write explains a read that stopped).
        let drained = writer.drain();
        drained.and(result)
    })?;
    store.flush()?;
    Ok(summary)
}

/// The name an import is journaled under ("import of leads.csv").
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The hand-over to the writer thread.
struct Writer {
    batches: std::sync::mpsc::SyncSender<Batch>,
    written: std::sync::mpsc::Receiver<Result<(), StoreError>>,
    in_flight: usize,
}

impl Writer {
    fn send(&mut self, batch: Batch) -> Result<(), ImportError> {
        if batch.is_empty() {
            return Ok(());
        }
        // Collect what has been written so far, so a failed write stops the import early.
        while let Ok(result) = self.written.try_recv() {
            self.in_flight -= 1;
            result?;
        }
        if self.batches.send(batch).is_err() {
            // The writer stopped on an error; `drain` reports it.
            return self.drain();
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Waits until every batch handed over is in the store.
    fn drain(&mut self) -> Result<(), ImportError> {
        while self.in_flight > 0 {
            self.in_flight -= 1;
            match self.written.recv() {
                Ok(result) => result?,
                Err(_) => break,
            }
        }
        Ok(())
    }
}

/// Leads by outcome so far, each address counted once (the part of [`ImportSummary`] the side
/// that merges knows; rows are counted by the side that reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Rows whose address an earlier chunk had (those within one chunk are merged by the
    /// reader, and counted by the side that reads).
    pub merged: usize,
}

impl Counts {
    /// Sets the summary's counts; `merged_in_chunks` is what the reading side counted.
    pub fn add_to(self, summary: &mut ImportSummary, merged_in_chunks: usize) {
        summary.created = self.created;
        summary.updated = self.updated;
        summary.unchanged = self.unchanged;
        summary.merged = merged_in_chunks + self.merged;
    }
}

/// The merging side of an import, chunk after chunk: the merge rule, and how each address was
/// counted so far. Used by the two-thread import above, and by a running daemon for an import
/// that streams in over its control socket (it merges and writes each chunk in its work loop,
/// between two batches of emails).
pub struct Merger {
    options: ImportOptions,
    by: String,
    /// How each address already imported was counted, keyed by a hash of the address: a
    /// million addresses cost a few megabytes. A collision (about one in 10^7 for a million
    /// addresses) only skews the counts.
    hasher: RandomState,
    seen: HashMap<u64, Counted>,
    /// The store held no lead when the import began, so an address not seen in this import
    /// needs no look-up (only true where nothing else writes leads meanwhile).
    was_empty: bool,
    counts: Counts,
}

impl Merger {
    pub fn new(options: ImportOptions, file_name: &str, was_empty: bool) -> Merger {
        Merger {
            options,
            by: format!("import of {file_name}"),
            hasher: RandomState::new(),
            seen: HashMap::new(),
            was_empty,
            counts: Counts::default(),
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Merges one chunk's leads with their stored versions into one batch. `settle` makes the
    /// batches handed over before visible in `store` (it is called before an address seen in
    /// an earlier chunk is looked up again).
    pub fn merge(
        &mut self,
        store: &Store,
        leads: Vec<FileLead>,
        now: DateTime<Utc>,
        settle: &mut dyn FnMut() -> Result<(), ImportError>,
    ) -> Result<Batch, ImportError> {
        let mut batch = Batch::default();
        for mut row in leads {
            if row.lead.source.is_none() {
                row.lead.source.clone_from(&self.options.source);
            }
            row.lead.tags.extend(self.options.tags.iter().cloned());
            let hash = self.hasher.hash_one(email_key(&row.lead.email));
            let before = self.seen.get(&hash).copied();
            if before.is_some() {
                self.counts.merged += 1;
            }
            let stored = match before {
                None if self.was_empty => None,
                None => store.lead(&row.lead.email)?,
                Some(_) => {
                    settle()?;
                    store.lead(&row.lead.email)?
                }
            };
            let counted = apply_row(stored, row, before, now, &self.by, &mut batch);
            if before != Some(counted) {
                let counts = &mut self.counts;
                match before {
                    Some(Counted::Unchanged) => counts.unchanged -= 1,
                    Some(Counted::Updated) => counts.updated -= 1,
                    Some(Counted::Created) => counts.created -= 1,
                    None => {}
                }
                match counted {
                    Counted::Created => counts.created += 1,
                    Counted::Updated => counts.updated += 1,
                    Counted::Unchanged => counts.unchanged += 1,
                }
                self.seen.insert(hash, counted);
            }
        }
        Ok(batch)
    }

    /// Merges and writes one chunk (the daemon's way: nothing is in flight between chunks).
    pub fn merge_and_apply(
        &mut self,
        store: &Store,
        leads: Vec<FileLead>,
        now: DateTime<Utc>,
    ) -> Result<Counts, ImportError> {
        let batch = self.merge(store, leads, now, &mut || Ok(()))?;
        store.apply(&batch)?;
        Ok(self.counts)
    }
}

/// What [`upsert`] did to the store's lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
    Unchanged,
}

/// Merges one lead that arrived on its own (the API, a web form) into the store's version, if
/// any, by the import's rules, adding what must be written to `batch` (journaled, marked for
/// enrollment).
pub fn upsert(
    stored: Option<Lead>,
    row: FileLead,
    now: DateTime<Utc>,
    by: &str,
    batch: &mut Batch,
) -> Upserted {
    match apply_row(stored, row, None, now, by, batch) {
        Counted::Created => Upserted::Created,
        Counted::Updated => Upserted::Updated,
        Counted::Unchanged => Upserted::Unchanged,
    }
}

/// Merges one file lead into the store's version (if any), adding what must be written to
/// `batch`; returns how the address counts now.
fn apply_row(
    stored: Option<Lead>,
    row: FileLead,
    before: Option<Counted>,
    now: DateTime<Utc>,
    by: &str,
    batch: &mut Batch,
) -> Counted {
    let email = row.lead.email.clone();
    let Some(mut lead) = stored else {
        let mut lead = row.lead;
        (lead.created_at, lead.updated_at) = (now, now);
        batch.event(&email, now, None, EventKind::Created { by: by.into() });
        batch.leads.push(lead);
        batch.changed.push(email);
        return Counted::Created;
    };
    // A lead this import created in an earlier chunk is still the file's to shape: its later
    // rows merge as rows of one file do, stage and suppression included.
    let created_here = before == Some(Counted::Created);
    let fields = merge(&mut lead, row, created_here);
    if fields.is_empty() {
        return before.unwrap_or(Counted::Unchanged);
    }
    lead.updated_at = now;
    if !created_here {
        let kind = EventKind::Updated {
            by: by.into(),
            fields,
        };
        batch.event(&email, now, None, kind);
    }
    batch.leads.push(lead);
    batch.changed.push(email);
    if created_here {
        Counted::Created
    } else {
        Counted::Updated
    }
}

/// Applies the file's version of a lead to the stored one; returns the names of the fields that
/// changed (attribute keys for attributes), empty when nothing did.
fn merge(stored: &mut Lead, row: FileLead, created_here: bool) -> Vec<String> {
    let mut changed = Vec::new();
    let file = row.lead;
    let texts = [
        ("first_name", &mut stored.first_name, file.first_name),
        ("last_name", &mut stored.last_name, file.last_name),
        ("company", &mut stored.company, file.company),
        ("source", &mut stored.source, file.source),
        ("timezone", &mut stored.timezone, file.timezone),
    ];
    for (name, field, value) in texts {
        if value.is_some() && *field != value {
            *field = value;
            changed.push(name.to_string());
        }
    }
    let before = stored.tags.len();
    stored.tags.extend(file.tags);
    if stored.tags.len() != before {
        changed.push("tags".to_string());
    }
    if row.score_set && stored.score != file.score {
        stored.score = file.score;
        changed.push("score".to_string());
    }
    if created_here {
        if row.stage_set && stored.stage != file.stage {
            stored.stage = file.stage;
            changed.push("stage".to_string());
        }
        if file.suppression.is_some() && stored.suppression.is_none() {
            stored.suppression = file.suppression;
            changed.push("suppression".to_string());
        }
    }
    for (key, value) in file.attributes {
        if stored.attributes.get(&key) != Some(&value) {
            changed.push(key.clone());
            stored.attributes.insert(key, value);
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::lead::{Stage, Suppression, SuppressionReason, Value};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 3, 9, 0, 0).unwrap()
    }

    fn stored() -> Lead {
        let mut lead = Lead::new("ana@acme.example".into(), now());
        lead.first_name = Some("Ana".into());
        lead.company = Some("Acme".into());
        lead.tags.insert("trial".into());
        lead.score = 30;
        lead.stage = Stage::Contact;
        lead.attributes
            .insert("plan".into(), Value::Text("free".into()));
        lead.suppression = Some(Suppression {
            reason: SuppressionReason::Bounced,
            detail: "550".into(),
            at: now(),
        });
        lead
    }

    fn row(lead: Lead, score_set: bool, stage_set: bool) -> FileLead {
        FileLead {
            lead,
            score_set,
            stage_set,
        }
    }

    #[test]
    fn file_fields_overwrite_tags_add_up_and_stage_score_suppression_stay() {
        let mut lead = stored();
        let mut file = Lead::new("ana@acme.example".into(), now());
        file.company = Some("Acme GmbH".into());
        file.tags.insert("vip".into());
        file.score = 0;
        file.stage = Stage::Lead;
        file.attributes
            .insert("plan".into(), Value::Text("pro".into()));
        let fields = merge(&mut lead, row(file, false, true), false);
        assert_eq!(fields, ["company", "tags", "plan"]);
        assert_eq!(lead.company.as_deref(), Some("Acme GmbH"));
        assert_eq!(
            lead.first_name.as_deref(),
            Some("Ana"),
            "absent fields stay"
        );
        assert_eq!(lead.tags.len(), 2);
        assert_eq!(lead.score, 30, "the row had no score");
        assert_eq!(lead.stage, Stage::Contact, "an import never demotes");
        assert!(lead.is_suppressed(), "an import never lifts a suppression");
    }

    #[test]
    fn an_explicit_score_wins_and_the_same_values_change_nothing() {
        let mut lead = stored();
        let mut file = stored();
        file.suppression = None;
        file.score = 31;
        assert_eq!(
            merge(&mut lead, row(file.clone(), true, true), false),
            ["score"]
        );
        assert_eq!(lead.score, 31);
        assert!(merge(&mut lead, row(file, true, true), false).is_empty());
    }
}
