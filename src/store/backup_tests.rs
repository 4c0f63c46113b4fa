//! Backups: a round trip keeps every tree and the id generator, a snapshot taken while
//! batches commit is consistent, and a bad file or a non-empty store is refused.

use chrono::{TimeZone, Utc};

use std::io::Write;

use super::*;
use crate::engine::{Enrollment, Facts, Position, Status};
use crate::lead::Lead;
use crate::store::{Batch, DEFAULT_CACHE_BYTES, EventKind, OutboxEmail};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nurture-backup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn enrollment(email: &str, hour: u32) -> Enrollment {
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap();
    Enrollment {
        workflow: "trial".into(),
        version: "v1".into(),
        lead: email.into(),
        status: Status::Active,
        position: Position::new("welcome", 0),
        due: Some(at + chrono::Duration::hours(hour.into())),
        enrolled_at: at,
        updated_at: at,
        deferred_from: None,
        facts: Facts::default(),
    }
}

fn email(id: &str) -> OutboxEmail {
    let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
    OutboxEmail {
        message_id: id.into(),
        workflow: "trial".into(),
        lead: "ana@example.com".into(),
        step: "welcome".into(),
        subject: "Hi".into(),
        envelope_from: "team@example.test".into(),
        envelope_to: "ana@example.com".into(),
        queued_at: at,
        not_before: at,
        attempts: 0,
        expires: None,
        eml: b"Subject: Hi\r\n\r\nHello \xc3\xa9\r\n".to_vec(),
    }
}

/// A store with a lead, an enrollment, a journal line, an email in the outbox, one in flight
/// and an uncertain one.
fn filled(dir: &Path) -> SledStore {
    let store = SledStore::open(dir, DEFAULT_CACHE_BYTES).unwrap();
    let now = Utc::now();
    let mut batch = Batch {
        leads: vec![Lead::new("Ana@Example.com".into(), now)],
        enrollments: vec![enrollment("Ana@Example.com", 9)],
        outbox_put: vec![email("<1@example.test>")],
        in_flight_set: Some((store.new_id().unwrap(), vec![email("<2@example.test>")])),
        uncertain_put: vec![email("<3@example.test>")],
        ..Batch::default()
    };
    batch.event(
        "ana@example.com",
        now,
        Some("trial"),
        EventKind::Created {
            by: "import of a.csv".into(),
        },
    );
    store.apply(&batch).unwrap();
    store
}

/// A tree's entries, key and value.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every non-empty tree's entries, by tree name.
fn contents(store: &SledStore) -> Vec<(Vec<u8>, Entries)> {
    store
        .db
        .tree_names()
        .into_iter()
        .map(|name| {
            let tree = store.db.open_tree(&name).unwrap();
            let entries = tree
                .iter()
                .map(|e| e.unwrap())
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            (name.to_vec(), entries)
        })
        .filter(|(_, entries): &(Vec<u8>, Entries)| !entries.is_empty())
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

fn write_backup(store: &SledStore, file: &Path) -> Summary {
    let mut out = std::fs::File::create(file).unwrap();
    store.backup(&mut out).unwrap()
}

#[test]
fn a_restored_store_holds_every_tree_and_numbers_above_the_backup() {
    let dir = scratch("round-trip");
    let store = filled(&dir.join("store"));
    let file = dir.join("store.backup");
    let summary = write_backup(&store, &file);
    assert_eq!(summary.leads, 1);
    let next_id = summary.header.next_id;
    let before = contents(&store);
    drop(store);

    let restored_dir = dir.join("restored");
    let restored = SledStore::open(&restored_dir, DEFAULT_CACHE_BYTES).unwrap();
    let written = restored.restore(&file).unwrap();
    assert_eq!(written.records, summary.records);
    drop(restored);
    let restored = SledStore::open(&restored_dir, DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(contents(&restored), before, "every tree, byte for byte");
    assert!(
        restored.new_id().unwrap() >= next_id,
        "ids continue above the backup's"
    );
    assert_eq!(
        restored.in_flight().unwrap().len(),
        1,
        "the in-flight mark is kept"
    );
    assert_eq!(restored.uncertain().unwrap().len(), 1);
    assert_eq!(restored.outbox_len(), 1);
    assert_eq!(
        restored.lead("ana@example.com").unwrap().unwrap().email,
        "Ana@Example.com"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sink that says when the snapshot starts writing, then waits for a go.
struct Paused {
    started: Option<std::sync::mpsc::Sender<()>>,
    go: std::sync::mpsc::Receiver<()>,
    bytes: Vec<u8>,
}

impl Write for Paused {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(started) = self.started.take() {
            started.send(()).unwrap();
            self.go.recv().unwrap();
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_batch_committed_during_a_snapshot_waits_for_it_and_is_not_half_in_it() {
    let dir = scratch("consistent");
    let store = SledStore::open(&dir.join("store"), DEFAULT_CACHE_BYTES).unwrap();
    let lead = "ana@example.com";
    store
        .apply(&Batch {
            enrollments: vec![enrollment(lead, 9)],
            ..Batch::default()
        })
        .unwrap();
    let (started, on_start) = std::sync::mpsc::channel();
    let (go, on_go) = std::sync::mpsc::channel();
    let snapshot = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut sink = Paused {
                started: Some(started),
                go: on_go,
                bytes: Vec::new(),
            };
            store.backup(&mut sink).unwrap();
            sink.bytes
        })
    };
    on_start.recv().unwrap();
    // The step moves the enrollment (and so its due entry) and journals it: one transaction.
    let committed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let committed = committed.clone();
        std::thread::spawn(move || {
            let mut batch = Batch {
                enrollments: vec![enrollment(lead, 10)],
                ..Batch::default()
            };
            batch.event(lead, Utc::now(), Some("trial"), EventKind::Enrolled);
            store.apply(&batch).unwrap();
            committed.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !committed.load(std::sync::atomic::Ordering::SeqCst),
        "a batch committed while the snapshot was being read"
    );
    go.send(()).unwrap();
    let bytes = snapshot.join().unwrap();
    writer.join().unwrap();
    assert!(committed.load(std::sync::atomic::Ordering::SeqCst));

    let file = dir.join("store.backup");
    std::fs::write(&file, bytes).unwrap();
    let restored = SledStore::open(&dir.join("restored"), DEFAULT_CACHE_BYTES).unwrap();
    restored.restore(&file).unwrap();
    let before = enrollment(lead, 9).due;
    assert_eq!(
        restored.enrollment("trial", lead).unwrap().unwrap().due,
        before
    );
    assert_eq!(restored.next_due().unwrap(), before, "its due entry agrees");
    assert_eq!(restored.upcoming(10).unwrap().len(), 1);
    assert!(
        restored.events_of(lead).unwrap().is_empty(),
        "nor its journal line"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_truncated_damaged_or_foreign_file_is_refused_and_nothing_is_written() {
    let dir = scratch("bad-files");
    let store = filled(&dir.join("store"));
    let file = dir.join("good.backup");
    write_backup(&store, &file);
    drop(store);
    let bytes = std::fs::read(&file).unwrap();
    let target = SledStore::open(&dir.join("target"), DEFAULT_CACHE_BYTES).unwrap();
    let refused = |name: &str, content: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let error = target.restore(&path).unwrap_err().to_string();
        assert_eq!(target.lead_count(), 0, "{name}: nothing restored");
        assert!(
            target.meta_get("schema_version").unwrap().is_some(),
            "{name}"
        );
        error
    };

    let error = refused("cut.backup", &bytes[..bytes.len() * 2 / 3]);
    assert!(
        error.contains("is truncated") && error.contains("without its END line"),
        "{error}"
    );

    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] = if flipped[middle] == b'A' { b'B' } else { b'A' };
    let error = refused("flipped.backup", &flipped);
    assert!(
        error.contains("damaged") || error.contains("base64"),
        "{error}"
    );

    let error = refused("notes.txt", b"shopping list\nmilk\n");
    assert!(error.contains("is not a nurture backup"), "{error}");

    let mut newer = bytes.clone();
    let text = String::from_utf8(newer.clone()).unwrap();
    newer = text
        .replacen("\"version\":1", "\"version\":9", 1)
        .into_bytes();
    let error = refused("newer.backup", &newer);
    assert!(error.contains("format 9"), "{error}");

    let error = refused("empty.backup", b"");
    assert!(error.contains("is not a nurture backup"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_store_with_leads_is_never_restored_into() {
    let dir = scratch("non-empty");
    let store = filled(&dir.join("store"));
    let file = dir.join("store.backup");
    write_backup(&store, &file);
    let error = store.restore(&file).unwrap_err().to_string();
    assert!(error.contains("not empty (1 leads)"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_restore_cut_short_leaves_a_store_that_refuses_to_open() {
    let dir = scratch("cut-short");
    let store = SledStore::open(&dir.join("store"), DEFAULT_CACHE_BYTES).unwrap();
    // What a restore writes first, then dies.
    store.meta.insert(RESTORING_KEY, &[]).unwrap();
    store.meta.remove(SCHEMA_KEY).unwrap();
    store.flush().unwrap();
    drop(store);
    let error = SledStore::open(&dir.join("store"), DEFAULT_CACHE_BYTES)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("a restore into the store") && error.contains("did not finish"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
