//! The store's contract: atomic batches, a due index that follows enrollments, schema checks.

use chrono::{TimeZone, Utc};

use super::*;
use crate::engine::{Facts, Position, Status};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nurture-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, hour, 0, 0).unwrap()
}

fn enrollment(workflow: &str, email: &str, due: Option<DateTime<Utc>>) -> Enrollment {
    Enrollment {
        workflow: workflow.into(),
        version: "v1".into(),
        lead: email.into(),
        status: Status::Active,
        position: Position {
            step: "welcome".into(),
            pc: 0,
        },
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
        eml: b"Subject: Hi\r\n\r\nHello\r\n".to_vec(),
    }
}

#[test]
fn the_due_index_follows_each_enrollment() {
    let dir = scratch("due");
    let store = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    let mut batch = Batch::default();
    batch
        .enrollments
        .push(enrollment("trial", "b@example.com", Some(at(10))));
    batch
        .enrollments
        .push(enrollment("trial", "a@example.com", Some(at(9))));
    batch
        .enrollments
        .push(enrollment("news", "a@example.com", None));
    store.apply(&batch).unwrap();

    assert_eq!(store.next_due().unwrap(), Some(at(9)));
    assert_eq!(store.due(at(8), 10).unwrap(), vec![]);
    assert_eq!(
        store.due(at(9), 10).unwrap(),
        vec![("trial".to_string(), "a@example.com".to_string())]
    );
    assert_eq!(store.due(at(12), 10).unwrap().len(), 2);

    // Moving an enrollment's due time moves its index entry; ending it removes the entry.
    let mut moved = enrollment("trial", "a@example.com", Some(at(11)));
    moved.position.pc = 2;
    let mut ended = enrollment("trial", "b@example.com", None);
    ended.status = Status::Completed;
    store
        .apply(&Batch {
            enrollments: vec![moved.clone(), ended],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(
        store.upcoming(10).unwrap(),
        vec![(at(11), "trial".into(), "a@example.com".into())]
    );
    assert_eq!(
        store.enrollment("trial", "a@example.com").unwrap(),
        Some(moved)
    );

    let of_a: Vec<String> = store
        .enrollments_of("a@example.com")
        .unwrap()
        .into_iter()
        .map(|e| e.workflow)
        .collect();
    assert_eq!(of_a, ["news", "trial"]);
    assert_eq!(store.enrollments().count(), 3);
}

#[test]
fn everything_survives_a_reopen_and_events_keep_their_order() {
    let dir = scratch("reopen");
    {
        let store = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
        let mut batch = Batch::default();
        batch.leads.push(Lead::new("ana@example.com".into(), at(8)));
        batch.changed.push("ana@example.com".into());
        for hour in [9, 10, 11] {
            batch.event(
                "ana@example.com",
                at(hour),
                Some("trial"),
                EventKind::Enrolled,
            );
        }
        batch.event("ana@example.com.au", at(12), None, EventKind::Unsuppressed);
        batch
            .outbox_put
            .push(outbox_email("<1@example.test>", at(9)));
        store.apply(&batch).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(
        store.lead("ana@example.com").unwrap().unwrap().created_at,
        at(8)
    );
    assert_eq!(store.changed(10).unwrap(), ["ana@example.com"]);
    let times: Vec<_> = store
        .events_of("ana@example.com")
        .unwrap()
        .iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(times, [at(9), at(10), at(11)]);
    let outbox = store.outbox_ready(at(9), 10).unwrap();
    assert_eq!(outbox, vec![outbox_email("<1@example.test>", at(9))]);
    assert!(store.outbox_ready(at(8), 10).unwrap().is_empty());
}

#[test]
fn an_outbox_email_moves_to_the_messages_in_one_batch() {
    let dir = scratch("outbox");
    let store = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    let email = outbox_email("<2@example.test>", at(9));
    store
        .apply(&Batch {
            outbox_put: vec![email.clone()],
            ..Batch::default()
        })
        .unwrap();
    store
        .apply(&Batch {
            in_flight_set: Some((7, vec![email.clone()])),
            ..Batch::default()
        })
        .unwrap();
    let marks = store.in_flight().unwrap();
    assert_eq!(marks.len(), 1);
    let (id, listed) = &marks[0];
    assert_eq!(*id, 7);
    assert_eq!(listed[0].message_id, email.message_id);
    assert_eq!(
        listed[0], email,
        "the in-flight list keeps the MIME bytes, to send again what never left"
    );
    let record = MessageRecord {
        message_id: email.message_id.clone(),
        workflow: email.workflow.clone(),
        lead: email.lead.clone(),
        sender: email.envelope_from.clone(),
        step: email.step.clone(),
        subject: email.subject.clone(),
        state: MessageState::Sent,
        queued_at: at(9),
        at: at(9),
    };
    store
        .apply(&Batch {
            outbox_remove: vec![(at(9), email.message_id.clone())],
            messages: vec![record.clone()],
            in_flight_clear: vec![7],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.outbox_len(), 0);
    assert!(store.in_flight().unwrap().is_empty());
    assert_eq!(store.message("<2@example.test>").unwrap(), Some(record));
}

#[test]
fn a_second_process_gets_a_clear_locked_error() {
    let dir = scratch("locked");
    let _held = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
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
        let store = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
        store
            .meta
            .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        store.flush().unwrap();
    }
    let error = Store::open(&dir, DEFAULT_CACHE_BYTES).err().unwrap();
    assert!(error.to_string().contains("newer nurture"), "{error}");

    let foreign = scratch("foreign");
    {
        let db = sled::open(&foreign).unwrap();
        db.open_tree("leads").unwrap().insert("x", "y").unwrap();
        db.flush().unwrap();
    }
    let error = Store::open(&foreign, DEFAULT_CACHE_BYTES).err().unwrap();
    assert!(matches!(error, StoreError::Foreign { .. }), "{error}");
}

#[test]
fn a_failed_batch_changes_nothing() {
    let dir = scratch("abort");
    let store = Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    // A damaged enrollment makes the transaction abort when it tries to move its due entry.
    store
        .enrollments
        .insert(
            keys::enrollment("trial", "a@example.com"),
            b"\x07junk".as_slice(),
        )
        .unwrap();
    let mut batch = Batch::default();
    batch.leads.push(Lead::new("a@example.com".into(), at(1)));
    batch
        .enrollments
        .push(enrollment("trial", "a@example.com", Some(at(2))));
    let error = store.apply(&batch).unwrap_err();
    assert!(
        matches!(error, StoreError::UnknownFormat { format: 7, .. }),
        "{error}"
    );
    assert_eq!(store.lead("a@example.com").unwrap(), None);
    assert_eq!(store.next_due().unwrap(), None);
}
