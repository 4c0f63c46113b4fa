//! What only the sled store does: its lock, its schema checks and upgrades, its private folder.
//! The contract both backends keep is tested in `contract.rs`.

use chrono::{TimeZone, Utc};

use super::*;
use crate::engine::{Facts, Position, Status};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nurture-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(super) fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, hour, 0, 0).unwrap()
}

pub(super) fn enrollment(workflow: &str, email: &str, due: Option<DateTime<Utc>>) -> Enrollment {
    Enrollment {
        workflow: workflow.into(),
        version: "v1".into(),
        lead: email.into(),
        status: Status::Active,
        position: Position::new("welcome", 0),
        due,
        enrolled_at: at(0),
        updated_at: at(0),
        deferred_from: None,
        facts: Facts::default(),
    }
}

fn outbox_email(id: &str, not_before: DateTime<Utc>) -> OutboxEmail {
    OutboxEmail {
        message_id: id.into(),
        workflow: "trial".into(),
        lead: "ana@example.com".into(),
        step: "welcome".into(),
        subject: "Hi".into(),
        envelope_from: "team@example.test".into(),
        envelope_to: "ana@example.com".into(),
        queued_at: not_before,
        not_before,
        attempts: 0,
        expires: None,
        eml: b"Subject: Hi\r\n\r\nHello\r\n".to_vec(),
    }
}

#[test]
fn a_second_process_gets_a_clear_locked_error() {
    let dir = scratch("locked");
    let _held = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    // sled locks the directory per process; a second open in this process shares nothing, so
    // the lock is taken by a child process instead.
    let output = std::process::Command::new("flock")
        .args(["--nonblock", "--exclusive"])
        .arg(dir.join("db"))
        .arg("true")
        .output()
        .expect("flock runs");
    assert!(
        !output.status.success(),
        "the database file is locked while open"
    );
}

#[test]
fn a_newer_schema_or_a_foreign_directory_is_refused() {
    let dir = scratch("schema");
    {
        let store = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
        store
            .meta
            .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        store.flush().unwrap();
    }
    let error = SledStore::open(&dir, DEFAULT_CACHE_BYTES).err().unwrap();
    assert!(error.to_string().contains("newer nurture"), "{error}");

    let foreign = scratch("foreign");
    {
        let db = sled::open(&foreign).unwrap();
        db.open_tree("leads").unwrap().insert("x", "y").unwrap();
        db.flush().unwrap();
    }
    let error = SledStore::open(&foreign, DEFAULT_CACHE_BYTES)
        .err()
        .unwrap();
    assert!(matches!(error, StoreError::Foreign { .. }), "{error}");
}

/// Writes a store as nurture 1 left it: every key with the address as spelled.
fn write_version_1(dir: &Path) {
    let db = sled::open(dir).unwrap();
    let tree = |name: &str| db.open_tree(name).unwrap();
    let (leads, enrollments, lead_enrollments, due, events, changed, messages, outbox, meta) = (
        tree("leads"),
        tree("enrollments"),
        tree("lead_enrollments"),
        tree("due"),
        tree("events"),
        tree("changed"),
        tree("messages"),
        tree("outbox"),
        tree("meta"),
    );
    meta.insert(SCHEMA_KEY, &1u32.to_be_bytes()).unwrap();
    let join = |a: &str, b: &str| [a.as_bytes(), &[0], b.as_bytes()].concat();

    let mut first = Lead::new("Dana.Scully@fbi.example".into(), at(1));
    first.first_name = Some("Dana".into());
    first.tags.insert("x-files".into());
    first
        .attributes
        .insert("badge".into(), crate::lead::Value::Text("1".into()));
    let mut second = Lead::new("dana.scully@fbi.example".into(), at(2));
    second.first_name = Some("D.".into());
    second.company = Some("FBI".into());
    second.tags.insert("agent".into());
    second.stage = crate::lead::Stage::Contact;
    second.suppression = Some(crate::lead::Suppression {
        reason: crate::lead::SuppressionReason::Unsubscribed,
        detail: "one-click unsubscribe".into(),
        at: at(3),
    });
    let alone = Lead::new("Fox.Mulder@fbi.example".into(), at(1));
    let lower = Lead::new("walter@fbi.example".into(), at(1));
    for lead in [&first, &second, &alone, &lower] {
        leads
            .insert(lead.email.as_bytes(), codec::encode(lead))
            .unwrap();
    }

    // Dana twice in `trial` (as spelled first: active; as spelled second: further along and
    // done), once in `news`; Fox in `trial`.
    let mut trial_first = enrollment("trial", "Dana.Scully@fbi.example", Some(at(10)));
    trial_first.facts.sent = vec!["welcome".into()];
    let mut trial_second = enrollment("trial", "dana.scully@fbi.example", None);
    trial_second.status = Status::Completed;
    trial_second.facts.sent = vec!["welcome".into(), "nudge".into()];
    trial_second.enrolled_at = at(2);
    trial_first.facts.clicked = true;
    let news_second = enrollment("news", "dana.scully@fbi.example", Some(at(11)));
    let trial_fox = enrollment("trial", "Fox.Mulder@fbi.example", Some(at(12)));
    for e in [&trial_first, &trial_second, &news_second, &trial_fox] {
        let key = join(&e.workflow, &e.lead);
        enrollments.insert(&key, codec::encode(e)).unwrap();
        lead_enrollments
            .insert(join(&e.lead, &e.workflow), &[])
            .unwrap();
        if let Some(at) = e.due {
            due.insert([keys::time_bytes(at).as_slice(), &key].concat(), &[])
                .unwrap();
        }
    }

    // Journals, written alternately.
    for (sequence, lead, hour) in [
        (1u64, &first.email, 1),
        (2, &second.email, 2),
        (3, &first.email, 3),
        (4, &second.email, 4),
    ] {
        let event = Event {
            at: at(hour),
            workflow: None,
            kind: EventKind::Created {
                by: format!("line {sequence}"),
            },
        };
        let mut key = [lead.as_bytes(), &[0]].concat();
        key.extend_from_slice(&sequence.to_be_bytes());
        events.insert(key, codec::encode(&event)).unwrap();
    }
    changed.insert(first.email.as_bytes(), &[]).unwrap();

    // An email sent to the second spelling, and one waiting for it.
    let mut waiting = outbox_email("<9@example.test>", at(13));
    waiting.lead = second.email.clone();
    outbox
        .insert(
            keys::outbox(waiting.not_before, &waiting.message_id),
            codec::encode_with_raw(&waiting, &waiting.eml),
        )
        .unwrap();
    let record = MessageRecord {
        message_id: "<8@example.test>".into(),
        workflow: "trial".into(),
        lead: second.email.clone(),
        sender: "team@example.test".into(),
        step: "nudge".into(),
        subject: "Hi".into(),
        state: MessageState::Sent,
        queued_at: at(5),
        at: at(5),
    };
    messages
        .insert(record.message_id.as_bytes(), codec::encode(&record))
        .unwrap();
    db.flush().unwrap();
}

// Issue 10: a store written before addresses were compared without case holds two leads for
// one person; opening it merges them, keeping every history line and any suppression.
#[test]
fn upgrading_a_version_1_store_merges_case_duplicates() {
    let dir = scratch("upgrade");
    write_version_1(&dir);
    let store = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(
        store.merged(),
        [Merged {
            kept: "Dana.Scully@fbi.example".into(),
            merged: vec!["dana.scully@fbi.example".into()],
        }]
    );
    assert_eq!(
        store.merged()[0].to_string(),
        "merged `dana.scully@fbi.example` into `Dana.Scully@fbi.example`: the same address in another case is the same person (their histories are kept)"
    );

    // The counters of `nurture status` (schema 3) count the merged store.
    let recounted = store.recount(false).unwrap();
    assert!(recounted.differences.is_empty(), "{recounted:?}");
    assert_eq!(recounted.index_differences, 0);
    assert_eq!(store.counters().unwrap().leads, 3);

    // One lead, spelled as first created, with what both knew.
    assert_eq!(store.lead_count(), 3);
    let dana = store.lead("DANA.SCULLY@fbi.example").unwrap().unwrap();
    assert_eq!(dana.email, "Dana.Scully@fbi.example");
    assert_eq!(
        dana.first_name.as_deref(),
        Some("Dana"),
        "the first one wins"
    );
    assert_eq!(
        dana.company.as_deref(),
        Some("FBI"),
        "the other fills the gaps"
    );
    assert_eq!(dana.tags.len(), 2);
    assert_eq!(dana.attributes.len(), 1);
    assert_eq!(dana.stage, crate::lead::Stage::Contact);
    assert!(dana.is_suppressed(), "a suppression is never lost");
    assert_eq!(dana.created_at, at(1));

    // Both journals, in the order written, and a line saying what happened.
    let events = store.events_of("dana.scully@fbi.example").unwrap();
    let lines: Vec<String> = events
        .iter()
        .map(|e| match &e.kind {
            EventKind::Created { by } => by.clone(),
            EventKind::Changed { change } => change.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(lines[..4], ["line 1", "line 2", "line 3", "line 4"]);
    assert!(
        lines[4].starts_with("merged with `dana.scully@fbi.example`"),
        "{}",
        lines[4]
    );

    // The more advanced `trial` enrollment, with the engagement of both; `news` kept; both
    // name the kept spelling; the due index follows.
    let enrollments = store.enrollments_of("Dana.Scully@fbi.example").unwrap();
    let workflows: Vec<&str> = enrollments.iter().map(|e| e.workflow.as_str()).collect();
    assert_eq!(workflows, ["news", "trial"]);
    let trial = &enrollments[1];
    assert_eq!(trial.status, Status::Completed);
    assert_eq!(trial.facts.sent, ["welcome", "nudge"]);
    assert!(trial.facts.clicked);
    assert_eq!(trial.enrolled_at, at(0));
    assert!(
        enrollments
            .iter()
            .all(|e| e.lead == "Dana.Scully@fbi.example")
    );
    assert_eq!(store.enrollments().count(), 3);
    assert_eq!(
        store.due(at(23), 10).unwrap(),
        [
            ("news".to_string(), "dana.scully@fbi.example".to_string()),
            ("trial".to_string(), "fox.mulder@fbi.example".to_string()),
        ]
    );

    // A lead alone under its spelling only moved.
    let fox = store.lead("fox.mulder@fbi.example").unwrap().unwrap();
    assert_eq!(fox.email, "Fox.Mulder@fbi.example");
    assert!(store.enrollment("trial", &fox.email).unwrap().is_some());
    assert!(store.lead("walter@fbi.example").unwrap().is_some());

    // Records of emails name the kept spelling; the merged lead is looked at again.
    let record = store.message("<8@example.test>").unwrap().unwrap();
    assert_eq!(record.lead, "Dana.Scully@fbi.example");
    let waiting: Vec<OutboxEmail> = store.outbox().map(Result::unwrap).collect();
    assert_eq!(waiting[0].lead, "Dana.Scully@fbi.example");
    assert_eq!(
        waiting[0].eml,
        outbox_email("", at(0)).eml,
        "the MIME bytes stay"
    );
    assert_eq!(store.changed(10).unwrap(), ["dana.scully@fbi.example"]);

    // Done once: the next open finds version 2 and merges nothing.
    drop(store);
    let store = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    assert!(store.merged().is_empty());
    assert_eq!(
        store.meta_get("schema_version").unwrap(),
        Some(SCHEMA_VERSION.to_be_bytes().to_vec())
    );
    assert_eq!(store.events_of("dana.scully@fbi.example").unwrap().len(), 5);
}

// Issue 10: the store was 0755/0644 under the usual umask: any local user read every lead
// and the unsubscribe key.
#[test]
fn the_store_is_its_owners_alone() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // A store made by an older nurture, world-readable.
    let dir = scratch("private");
    write_version_1(&dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    store.flush().unwrap();
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
    // A new store, in a folder that does not exist yet.
    let fresh = scratch("private-new").join("nested");
    SledStore::open(&fresh, DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("db")), 0o600);
}

// ---- the status snapshot a close leaves ----

/// A store in `dir` with one lead enrolled in `trial`, due at `due`.
fn one_enrolled(dir: &Path, due: DateTime<Utc>) -> SledStore {
    let store = SledStore::open(dir, DEFAULT_CACHE_BYTES).unwrap();
    let mut batch = Batch::default();
    batch.leads.push(Lead::new("ana@example.com".into(), at(0)));
    batch
        .enrollments
        .push(enrollment("trial", "ana@example.com", Some(due)));
    store.apply(&batch).unwrap();
    store
}

#[test]
fn a_close_leaves_the_counters_and_the_next_due_for_status() {
    let dir = scratch("snapshot-close");
    let store = one_enrolled(&dir, at(9));
    assert_eq!(
        snapshot::Snapshot::read(&dir),
        None,
        "nothing before a close"
    );
    store.close().unwrap();
    drop(store);

    let snapshot = snapshot::Snapshot::read(&dir).expect("the close left a snapshot");
    let (counters, upcoming) = snapshot.clone().answer(5).unwrap();
    assert_eq!(counters.leads, 1);
    assert_eq!(counters.workflows["trial"].enrolled, 1);
    assert_eq!(
        upcoming,
        vec![(at(9), "trial".to_string(), "ana@example.com".to_string())]
    );
    // It knows every enrollment due (one), so any `--next` is answered.
    assert!(snapshot.answer(1000).is_some());
    // A store opened again (by any process) is no longer what the snapshot says.
    let reopened = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(snapshot::Snapshot::read(&dir), None);
    drop(reopened);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_write_after_the_close_removes_the_snapshot_before_it_changes_anything() {
    let dir = scratch("snapshot-write");
    let store = one_enrolled(&dir, at(9));
    let clone = store.clone();
    store.close().unwrap();
    assert!(snapshot::Snapshot::read(&dir).is_some());
    let mut batch = Batch::default();
    batch.leads.push(Lead::new("ben@example.com".into(), at(1)));
    clone.apply(&batch).unwrap();
    assert_eq!(snapshot::Snapshot::read(&dir), None);
    // Closed again: the snapshot counts the new lead.
    clone.close().unwrap();
    clone.meta_set("watcher", b"uid 7").unwrap();
    assert_eq!(snapshot::Snapshot::read(&dir), None, "meta writes too");
    clone.close().unwrap();
    let (counters, _) = snapshot::Snapshot::read(&dir).unwrap().answer(5).unwrap();
    assert_eq!(counters.leads, 2);
    drop((store, clone));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_snapshot_is_not_read_once_the_database_changed_behind_it() {
    let dir = scratch("snapshot-foreign");
    let store = one_enrolled(&dir, at(9));
    store.close().unwrap();
    drop(store);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(snapshot::Snapshot::read(&dir).is_some());
    // A tool (or an older nurture) that writes the sled database without knowing of it.
    {
        let db = open_sled(&dir, DEFAULT_CACHE_BYTES).unwrap();
        db.open_tree("leads")
            .unwrap()
            .insert("zoe@example.com", b"x")
            .unwrap();
        db.flush().unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(snapshot::Snapshot::read(&dir), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_snapshot_answers_only_as_many_next_due_as_it_keeps() {
    let dir = scratch("snapshot-upcoming");
    let store = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    let mut batch = Batch::default();
    for i in 0..snapshot::UPCOMING + 1 {
        let email = format!("lead{i:04}@example.com");
        batch.leads.push(Lead::new(email.clone(), at(0)));
        batch.enrollments.push(enrollment(
            "trial",
            &email,
            Some(at(1) + chrono::Duration::seconds(i as i64)),
        ));
    }
    store.apply(&batch).unwrap();
    store.close().unwrap();
    let snapshot = snapshot::Snapshot::read(&dir).unwrap();
    let (_, upcoming) = snapshot.clone().answer(snapshot::UPCOMING).unwrap();
    assert_eq!(upcoming.len(), snapshot::UPCOMING);
    assert_eq!(upcoming[0].2, "lead0000@example.com");
    assert!(snapshot.answer(snapshot::UPCOMING + 1).is_none());
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
