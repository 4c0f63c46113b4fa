//! How deep the store's queues are, kept in memory for the daemon's gauges (`/metrics`):
//! active enrollments per workflow, entries of the due index, emails in the outbox.
//!
//! Counting a tree is O(n) (sled's `Tree::len` walks it), far too slow for every scrape at a
//! million leads, so the daemon counts once ([`super::SledStore::count_depths`], in the background,
//! a chunk of keys at a time) and every [`super::SledStore::apply`] then adds what its transaction
//! changed. The count and the writers run side by side; a write is added only when its key is
//! one the count has already passed (a key still ahead will be counted as it then stands). A
//! read-write lock ([`Depths::gate`]) keeps a commit and the reading of a chunk from
//! interleaving, so that each key is counted exactly once. Until the count is over the depths
//! are unknown ([`Depths::snapshot`] is `None`), and a process that never counts (a command)
//! pays one uncontended read lock per transaction.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use std::ops::Bound;

use serde::Deserialize;

use super::{Result, SledStore, StoreError, codec, keys};
use crate::engine::Status;

/// Keys read per step of the count: the writers wait at most that long (a few milliseconds).
const CHUNK: usize = 2048;

/// Where the count of one tree stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cursor {
    /// Not counted (and not being counted): writes are not tracked.
    Idle,
    /// Counted up to this key, included.
    Upto(Vec<u8>),
    /// Counted whole: every write is tracked.
    Done,
}

impl Cursor {
    /// Whether a write of `key` is to be added (the count has passed it).
    pub(super) fn tracks(&self, key: &[u8]) -> bool {
        match self {
            Cursor::Idle => false,
            Cursor::Upto(last) => key <= last.as_slice(),
            Cursor::Done => true,
        }
    }

    fn start(&mut self) {
        if *self == Cursor::Idle {
            *self = Cursor::Upto(Vec::new());
        }
    }
}

/// The counts' progress, one cursor per counted tree.
#[derive(Debug)]
pub(super) struct Progress {
    pub enrollments: Cursor,
    pub due: Cursor,
    pub outbox: Cursor,
}

/// What one transaction changed, gathered inside it (a retried transaction starts a new one).
#[derive(Debug, Default)]
pub(super) struct Delta {
    active: HashMap<String, i64>,
    due: i64,
    outbox: i64,
}

impl Delta {
    pub(super) fn enrollment(&mut self, workflow: &str, was_active: bool, is_active: bool) {
        let change = i64::from(is_active) - i64::from(was_active);
        if change != 0 {
            *self.active.entry(workflow.to_owned()).or_default() += change;
        }
    }

    pub(super) fn due(&mut self, change: i64) {
        self.due += change;
    }

    pub(super) fn outbox(&mut self, change: i64) {
        self.outbox += change;
    }
}

/// The depths, and the count's progress.
#[derive(Debug)]
pub struct Depths {
    gate: RwLock<Progress>,
    active: Mutex<HashMap<String, i64>>,
    due: Mutex<i64>,
    outbox: Mutex<i64>,
}

impl Default for Depths {
    fn default() -> Depths {
        Depths {
            gate: RwLock::new(Progress {
                enrollments: Cursor::Idle,
                due: Cursor::Idle,
                outbox: Cursor::Idle,
            }),
            active: Mutex::default(),
            due: Mutex::default(),
            outbox: Mutex::default(),
        }
    }
}

/// The depths at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Active enrollments by workflow name (workflows with none are left out).
    pub active: Vec<(String, u64)>,
    /// Enrollments with a time in the due index (waiting for a step or a timeout).
    pub due: u64,
    /// Emails waiting in the outbox (retries, emails held by a sending limit).
    pub outbox: u64,
}

/// The part of a stored enrollment the count reads.
#[derive(Deserialize)]
pub(super) struct StatusOnly {
    pub status: Status,
}

/// A poisoned lock only means a panic elsewhere; the numbers under it are still whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Depths {
    /// Held by a transaction from before it starts until its delta is added.
    pub(super) fn writing(&self) -> RwLockReadGuard<'_, Progress> {
        self.gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a committed transaction's delta (with its [`Depths::writing`] guard still held).
    pub(super) fn add(&self, delta: Delta) {
        if !delta.active.is_empty() {
            let mut active = lock(&self.active);
            for (workflow, change) in delta.active {
                *active.entry(workflow).or_default() += change;
            }
        }
        *lock(&self.due) += delta.due;
        *lock(&self.outbox) += delta.outbox;
    }

    /// Runs one step of the count: `read` gets the progress (exclusively, no commit runs
    /// meanwhile) and the counts, and moves the cursors on. Returns whether the count is over.
    pub(super) fn step(&self, read: impl FnOnce(&mut Progress, &mut Counts<'_>)) -> bool {
        let mut progress = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        progress.enrollments.start();
        progress.due.start();
        progress.outbox.start();
        let mut active = lock(&self.active);
        let mut due = lock(&self.due);
        let mut outbox = lock(&self.outbox);
        read(
            &mut progress,
            &mut Counts {
                active: &mut active,
                due: &mut due,
                outbox: &mut outbox,
            },
        );
        progress.enrollments == Cursor::Done
            && progress.due == Cursor::Done
            && progress.outbox == Cursor::Done
    }

    /// The depths, once counted.
    pub fn snapshot(&self) -> Option<Snapshot> {
        {
            let progress = self.writing();
            if progress.enrollments != Cursor::Done
                || progress.due != Cursor::Done
                || progress.outbox != Cursor::Done
            {
                return None;
            }
        }
        let mut active: Vec<(String, u64)> = lock(&self.active)
            .iter()
            .filter(|(_, count)| **count > 0)
            .map(|(workflow, count)| (workflow.clone(), (*count).max(0) as u64))
            .collect();
        active.sort();
        Some(Snapshot {
            active,
            due: (*lock(&self.due)).max(0) as u64,
            outbox: (*lock(&self.outbox)).max(0) as u64,
        })
    }
}

impl SledStore {
    /// The queues' depths, once [`SledStore::count_depths`] has counted them.
    pub fn depths(&self) -> Option<Snapshot> {
        self.depths.snapshot()
    }

    /// Counts the queues once (O(n), a chunk at a time beside the writers); from then on
    /// every transaction of this store (and its clones) keeps [`SledStore::depths`] up to date.
    /// For the daemon, in the background.
    pub fn count_depths(&self) -> Result<()> {
        loop {
            let mut failed = None;
            let done = self.depths.step(|progress, counts| {
                if let Err(error) = self.count_chunk(progress, counts) {
                    failed = Some(error);
                }
            });
            if let Some(error) = failed {
                return Err(error);
            }
            if done {
                return Ok(());
            }
        }
    }

    fn count_chunk(&self, progress: &mut Progress, counts: &mut Counts<'_>) -> Result<()> {
        count_chunk(
            &self.enrollments,
            &mut progress.enrollments,
            |key, value| {
                let (workflow, _) = keys::split(key).ok_or(StoreError::Corrupt {
                    what: "enrollment key",
                    detail: format!("{key:?}"),
                })?;
                let enrollment: StatusOnly = codec::decode("enrollment", value)?;
                if enrollment.status == Status::Active {
                    *counts.active.entry(workflow.to_owned()).or_default() += 1;
                }
                Ok(())
            },
        )?;
        count_chunk(&self.due, &mut progress.due, |_, _| {
            *counts.due += 1;
            Ok(())
        })?;
        count_chunk(&self.outbox, &mut progress.outbox, |_, _| {
            *counts.outbox += 1;
            Ok(())
        })
    }
}

/// Reads up to [`CHUNK`] entries of `tree` after `cursor`, passing each to `each`, and moves
/// the cursor past them (to [`Cursor::Done`] at the end of the tree).
fn count_chunk(
    tree: &sled::Tree,
    cursor: &mut Cursor,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let Cursor::Upto(last) = cursor else {
        return Ok(());
    };
    let start = if last.is_empty() {
        Bound::Unbounded
    } else {
        Bound::Excluded(last.clone())
    };
    let mut read = 0;
    let mut newest = None;
    for entry in tree
        .range::<Vec<u8>, _>((start, Bound::Unbounded))
        .take(CHUNK)
    {
        let (key, value) = entry?;
        each(&key, &value)?;
        newest = Some(key);
        read += 1;
    }
    *cursor = match newest {
        Some(key) if read == CHUNK => Cursor::Upto(key.to_vec()),
        _ => Cursor::Done,
    };
    Ok(())
}

/// The counts, as a step of the count adds to them.
pub(super) struct Counts<'a> {
    pub active: &'a mut HashMap<String, i64>,
    pub due: &'a mut i64,
    pub outbox: &'a mut i64,
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::*;
    use crate::engine::{Enrollment, ExitReason, Facts, Position};
    use crate::store::{Batch, DEFAULT_CACHE_BYTES, OutboxEmail};

    fn enrollment(workflow: &str, i: usize, active: bool) -> Enrollment {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        Enrollment {
            workflow: workflow.into(),
            version: "v1".into(),
            lead: format!("lead{i:05}@example.test"),
            status: if active {
                Status::Active
            } else {
                Status::Exited(ExitReason::Replied)
            },
            position: Position::new("one", 0),
            due: active.then(|| at + Duration::minutes(i as i64 % 97)),
            enrolled_at: at,
            updated_at: at,
            deferred_from: None,
            facts: Facts::default(),
        }
    }

    fn outbox_email(i: usize) -> OutboxEmail {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        OutboxEmail {
            message_id: format!("<m{i}@example.test>"),
            workflow: "a".into(),
            lead: format!("lead{i:05}@example.test"),
            step: "one".into(),
            subject: "Hi".into(),
            envelope_from: "team@example.test".into(),
            envelope_to: format!("lead{i:05}@example.test"),
            queued_at: at,
            not_before: at + Duration::seconds(i as i64),
            attempts: 0,
            expires: None,
            eml: b"Subject: Hi\r\n\r\nHello\r\n".to_vec(),
        }
    }

    /// What a full count of the store says, the slow way.
    fn recount(store: &SledStore) -> Snapshot {
        let mut active: HashMap<String, u64> = HashMap::new();
        for enrollment in store.enrollments() {
            let enrollment = enrollment.unwrap();
            if enrollment.is_active() {
                *active.entry(enrollment.workflow).or_default() += 1;
            }
        }
        let mut active: Vec<(String, u64)> = active.into_iter().collect();
        active.sort();
        Snapshot {
            active,
            due: store.due.len() as u64,
            outbox: store.outbox_len() as u64,
        }
    }

    #[test]
    fn the_count_and_writers_beside_it_agree_with_a_full_recount() {
        let dir = std::env::temp_dir().join(format!("nurture-depths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
        let leads = 3 * CHUNK;
        let mut batch = Batch::default();
        for i in 0..leads {
            batch.enrollments.push(enrollment("a", i, true));
            batch.enrollments.push(enrollment("b", i, i % 3 == 0));
        }
        batch.outbox_put.extend((0..10).map(outbox_email));
        store.apply(&batch).unwrap();
        assert_eq!(store.depths(), None, "unknown before the count");

        // Writers end enrollments, start others and move outbox emails while the count runs.
        let counting = {
            let store = store.clone();
            std::thread::spawn(move || store.count_depths())
        };
        for round in 0..200 {
            let mut batch = Batch::default();
            for i in (round * 7..leads).step_by(97).take(5) {
                batch.enrollments.push(enrollment("a", i, round % 2 == 1));
                batch
                    .enrollments
                    .push(enrollment("b", leads - 1 - i, round % 2 == 0));
            }
            if round % 10 == 0 {
                let old = outbox_email(round / 10);
                batch.outbox_remove.push((old.not_before, old.message_id));
                batch.outbox_put.push(outbox_email(100 + round));
            }
            store.apply(&batch).unwrap();
        }
        counting.join().unwrap().unwrap();
        assert_eq!(store.depths(), Some(recount(&store)));

        // And after the count, every write is followed.
        let mut batch = Batch::default();
        batch.enrollments.push(enrollment("c", 1, true));
        batch.enrollments.push(enrollment("a", 2, false));
        batch.outbox_put.push(outbox_email(9999));
        store.apply(&batch).unwrap();
        let after = store.depths().unwrap();
        assert_eq!(after, recount(&store));
        assert!(after.active.contains(&("c".to_string(), 1)));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cursor_tracks_the_keys_it_has_passed_only() {
        assert!(!Cursor::Idle.tracks(b"a"));
        let upto = Cursor::Upto(b"m".to_vec());
        assert!(upto.tracks(b"a") && upto.tracks(b"m"));
        assert!(!upto.tracks(b"n"));
        assert!(Cursor::Done.tracks(b"z"));
    }

    #[test]
    fn depths_are_unknown_until_counted_then_follow_the_deltas() {
        let depths = Depths::default();
        assert_eq!(depths.snapshot(), None);
        let done = depths.step(|progress, counts| {
            counts.active.insert("w".into(), 2);
            *counts.due += 2;
            progress.enrollments = Cursor::Done;
            progress.due = Cursor::Done;
            progress.outbox = Cursor::Done;
        });
        assert!(done);
        let mut delta = Delta::default();
        delta.enrollment("w", true, false);
        delta.enrollment("v", false, true);
        delta.due(-1);
        delta.outbox(1);
        depths.add(delta);
        assert_eq!(
            depths.snapshot(),
            Some(Snapshot {
                active: vec![("v".into(), 1), ("w".into(), 1)],
                due: 1,
                outbox: 1,
            })
        );
    }
}
