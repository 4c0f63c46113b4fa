//! The counters agree with a count of every record after each kind of write, a failed batch, a
//! reopen and an upgrade; a recount finds and repairs counters that went wrong.

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::engine::{Facts, Position};
use crate::lead::{Suppression, SuppressionReason};
use crate::store::{Batch, DEFAULT_CACHE_BYTES, EventKind, SCHEMA_KEY, SCHEMA_VERSION, keys};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nurture-counters-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, minute, 0).unwrap()
}

fn enrollment(workflow: &str, lead: &str, step: &str, status: Status) -> Enrollment {
    Enrollment {
        workflow: workflow.into(),
        version: "v1".into(),
        lead: lead.into(),
        due: status.eq(&Status::Active).then(|| at(30)),
        status,
        position: Position::new(step, 0),
        enrolled_at: at(0),
        updated_at: at(0),
        deferred_from: None,
        facts: Facts::default(),
    }
}

fn email(id: &str, lead: &str, step: &str, not_before: DateTime<Utc>) -> OutboxEmail {
    OutboxEmail {
        message_id: id.into(),
        workflow: "trial".into(),
        lead: lead.into(),
        step: step.into(),
        subject: "Hi".into(),
        envelope_from: "team@example.test".into(),
        envelope_to: lead.into(),
        queued_at: at(0),
        not_before,
        attempts: 0,
        expires: None,
        eml: b"Subject: Hi\r\n\r\nHello\r\n".to_vec(),
    }
}

fn record(email: &OutboxEmail, state: MessageState) -> MessageRecord {
    MessageRecord {
        message_id: email.message_id.clone(),
        workflow: email.workflow.clone(),
        lead: email.lead.clone(),
        sender: email.envelope_from.clone(),
        step: email.step.clone(),
        subject: email.subject.clone(),
        state,
        queued_at: email.queued_at,
        at: at(5),
    }
}

fn received(batch: &mut Batch, lead: &str, workflow: Option<&str>, what: &str) {
    batch.event(
        lead,
        at(6),
        workflow,
        EventKind::Received { what: what.into() },
    );
}

fn promoted(batch: &mut Batch, lead: &str, workflow: Option<&str>, stage: Stage) {
    batch.event(
        lead,
        at(7),
        workflow,
        EventKind::Promoted {
            stage,
            by: "reply".into(),
        },
    );
}

/// Applies `batch` and checks the counters against a count of every record.
fn apply(store: &SledStore, batch: &Batch) -> Counters {
    store.apply(batch).unwrap();
    agree(store)
}

/// The counters, once checked to be what a count of every record gives.
fn agree(store: &SledStore) -> Counters {
    let kept = store.counters().unwrap();
    let recounted = store.recount(false).unwrap();
    assert!(
        recounted.differences.is_empty(),
        "{:?}",
        recounted.differences
    );
    assert_eq!(recounted.index_differences, 0);
    assert!(!recounted.repaired);
    assert_eq!(kept, recounted.counted);
    kept
}

/// Ana replies and is promoted, Ben's email becomes uncertain and he bounces, Cleo is a
/// suppressed customer: every kind of write a batch makes, each checked against a recount.
fn populate(store: &SledStore) -> Counters {
    let mut batch = Batch::default();
    let mut cleo = Lead::new("Cleo@example.com".into(), at(0));
    cleo.stage = Stage::Customer;
    cleo.suppression = Some(Suppression {
        reason: SuppressionReason::Unsubscribed,
        detail: "by hand".into(),
        at: at(0),
    });
    batch.leads = vec![
        Lead::new("ana@example.com".into(), at(0)),
        Lead::new("ben@example.com".into(), at(0)),
        cleo,
    ];
    for lead in ["ana@example.com", "ben@example.com", "Cleo@example.com"] {
        batch
            .enrollments
            .push(enrollment("trial", lead, "welcome", Status::Active));
        batch.event(lead, at(0), Some("trial"), EventKind::Enrolled);
    }
    let counters = apply(store, &batch);
    assert_eq!(
        (counters.leads, counters.contacts, counters.suppressed),
        (3, 1, 1)
    );
    assert_eq!(counters.workflows["trial"].enrolled, 3);
    assert_eq!(counters.workflows["trial"].steps["welcome"].active, 3);

    // Two welcomes planned: into the outbox, the enrollments move on.
    let (to_ana, to_ben) = (
        email("<1@x>", "ana@example.com", "welcome", at(1)),
        email("<2@x>", "ben@example.com", "welcome", at(1)),
    );
    let batch = Batch {
        outbox_put: vec![to_ana.clone(), to_ben.clone()],
        enrollments: vec![
            enrollment("trial", "ana@example.com", "nudge", Status::Active),
            enrollment("trial", "ben@example.com", "nudge", Status::Active),
        ],
        ..Batch::default()
    };
    let counters = apply(store, &batch);
    let trial = &counters.workflows["trial"];
    assert_eq!(trial.steps["welcome"].queued, 2);
    assert_eq!(
        (trial.steps["welcome"].active, trial.steps["nudge"].active),
        (1, 2)
    );

    // Ana's leaves (in flight, then sent); Ben's is held back a minute by a limit.
    let later = email("<2@x>", "ben@example.com", "welcome", at(2));
    let mut batch = Batch {
        outbox_remove: vec![(at(1), "<1@x>".into()), (at(1), "<2@x>".into())],
        outbox_put: vec![later.clone()],
        in_flight_set: Some((7, vec![to_ana.clone()])),
        ..Batch::default()
    };
    let counters = apply(store, &batch);
    assert_eq!(counters.in_flight.len(), 1);
    batch = Batch {
        messages: vec![record(&to_ana, MessageState::Sent)],
        in_flight_clear: vec![7],
        ..Batch::default()
    };
    batch.event(
        "ana@example.com",
        at(5),
        Some("trial"),
        EventKind::Sent {
            message_id: "<1@x>".into(),
            step: "welcome".into(),
        },
    );
    let counters = apply(store, &batch);
    assert_eq!(counters.workflows["trial"].steps["welcome"].sent, 1);
    assert_eq!(counters.workflows["trial"].steps["welcome"].queued, 1);
    assert!(counters.in_flight.is_empty());

    // Ben's is caught by a crash: uncertain, a copy kept; then dropped by the operator.
    let batch = Batch {
        outbox_remove: vec![(at(2), "<2@x>".into())],
        messages: vec![record(&later, MessageState::Uncertain)],
        uncertain_put: vec![later.clone()],
        ..Batch::default()
    };
    let counters = apply(store, &batch);
    assert_eq!(counters.uncertain.len(), 1);
    assert_eq!(counters.workflows["trial"].steps["welcome"].uncertain, 1);
    let batch = Batch {
        messages: vec![record(&later, MessageState::Dropped)],
        uncertain_remove: vec!["<2@x>".into()],
        ..Batch::default()
    };
    let counters = apply(store, &batch);
    assert!(counters.uncertain.is_empty());
    assert_eq!(counters.workflows["trial"].steps["welcome"].dropped, 1);

    // Ana replies twice and is promoted by the workflow twice (contact, then customer), and by
    // hand; she complains twice about the workflow's email, Cleo about no email of ours.
    let mut replied = enrollment(
        "trial",
        "ana@example.com",
        "nudge",
        Status::Exited(ExitReason::Replied),
    );
    replied.facts.replied = true;
    replied.facts.replied_in = Some("nudge".into());
    let mut ana = Lead::new("ana@example.com".into(), at(0));
    ana.stage = Stage::Contact;
    let mut batch = Batch {
        enrollments: vec![replied],
        leads: vec![ana.clone()],
        ..Batch::default()
    };
    received(&mut batch, "ana@example.com", Some("trial"), "reply");
    promoted(&mut batch, "ana@example.com", Some("trial"), Stage::Contact);
    promoted(&mut batch, "ANA@example.com", Some("trial"), Stage::Contact);
    apply(store, &batch);
    let mut batch = Batch::default();
    ana.stage = Stage::Customer;
    batch.leads.push(ana);
    promoted(
        &mut batch,
        "ana@example.com",
        Some("trial"),
        Stage::Customer,
    );
    promoted(&mut batch, "ana@example.com", None, Stage::Customer);
    for _ in 0..2 {
        received(
            &mut batch,
            "ana@example.com",
            Some("trial"),
            "spam complaint (abuse)",
        );
    }
    received(
        &mut batch,
        "cleo@example.com",
        None,
        "spam complaint (abuse)",
    );
    received(
        &mut batch,
        "ana@example.com",
        Some("trial"),
        "sender-side rejection: blocked",
    );
    received(
        &mut batch,
        "ana@example.com",
        None,
        "sender-side rejection: blocked",
    );
    let counters = apply(store, &batch);
    let trial = &counters.workflows["trial"];
    assert_eq!(
        (
            trial.replies,
            trial.promoted,
            trial.complaints,
            trial.sender_side_rejections
        ),
        (1, 1, 1, 1)
    );
    // Per step too: she replied standing in the nudge.
    assert_eq!(
        (trial.steps["nudge"].replies, trial.steps["welcome"].replies),
        (1, 0)
    );
    assert_eq!(trial.exited(), BTreeMap::from([("replied".to_string(), 1)]));
    assert_eq!(
        (
            counters.untraced_complaints,
            counters.untraced_sender_side_rejections
        ),
        (1, 1)
    );

    // Ben bounces: suppressed, his enrollment ends; Cleo is no longer suppressed.
    let mut ben = Lead::new("ben@example.com".into(), at(0));
    ben.suppression = Some(Suppression {
        reason: SuppressionReason::Bounced,
        detail: "5.1.1".into(),
        at: at(8),
    });
    let mut cleo = store.lead("cleo@example.com").unwrap().unwrap();
    cleo.suppression = None;
    let batch = Batch {
        leads: vec![ben, cleo],
        enrollments: vec![enrollment(
            "trial",
            "ben@example.com",
            "nudge",
            Status::Exited(ExitReason::Bounced),
        )],
        ..Batch::default()
    };
    let counters = apply(store, &batch);
    assert_eq!(
        (counters.leads, counters.contacts, counters.suppressed),
        (3, 2, 1)
    );
    counters
}

#[test]
fn every_kind_of_write_moves_the_counters_as_a_recount_sees_them() {
    let store = SledStore::open(&scratch("writes"), DEFAULT_CACHE_BYTES).unwrap();
    populate(&store);
    // An uncertain email sent again: its record goes, it waits in the outbox again.
    let again = email("<3@x>", "cleo@example.com", "welcome", at(3));
    apply(
        &store,
        &Batch {
            messages: vec![record(&again, MessageState::Uncertain)],
            ..Batch::default()
        },
    );
    let counters = apply(
        &store,
        &Batch {
            messages_remove: vec!["<3@x>".into()],
            outbox_put: vec![again],
            ..Batch::default()
        },
    );
    let welcome = &counters.workflows["trial"].steps["welcome"];
    assert_eq!((welcome.uncertain, welcome.queued), (0, 1));
    assert!(counters.uncertain.is_empty());
}

#[test]
fn a_failed_batch_changes_no_counter() {
    let store = SledStore::open(&scratch("failed"), DEFAULT_CACHE_BYTES).unwrap();
    let before = populate(&store);
    // A damaged entry where the batch puts an outbox email makes the transaction abort there,
    // after its lead, enrollment and journal lines (with the marks of the promotion and the
    // complaint) were written into it.
    let junk = keys::outbox(at(4), "<4@x>");
    store
        .outbox
        .insert(junk.as_slice(), b"\x07junk".as_slice())
        .unwrap();
    let mut batch = Batch {
        leads: vec![Lead::new("dan@example.com".into(), at(0))],
        enrollments: vec![enrollment(
            "trial",
            "dan@example.com",
            "welcome",
            Status::Active,
        )],
        outbox_put: vec![email("<4@x>", "dan@example.com", "welcome", at(4))],
        ..Batch::default()
    };
    promoted(&mut batch, "dan@example.com", Some("trial"), Stage::Contact);
    received(
        &mut batch,
        "dan@example.com",
        Some("trial"),
        "spam complaint (abuse)",
    );
    let error = store.apply(&batch).unwrap_err();
    assert!(
        matches!(error, StoreError::UnknownFormat { format: 7, .. }),
        "{error}"
    );
    assert_eq!(store.counters().unwrap(), before);
    assert_eq!(store.lead("dan@example.com").unwrap(), None);
    store.outbox.remove(junk).unwrap();
    // The marks of the promotion and the complaint were not kept either: they count now.
    let counters = apply(&store, &batch);
    let trial = &counters.workflows["trial"];
    assert_eq!((trial.promoted, trial.complaints), (2, 2));
    assert_eq!(counters.leads, 4);
}

#[test]
fn the_counters_survive_a_reopen() {
    let dir = scratch("reopen");
    let before = {
        let store = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
        populate(&store)
    };
    let store = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(agree(&store), before);
}

#[test]
fn a_version_2_store_gets_its_counters_when_opened() {
    let dir = scratch("upgrade");
    let before = {
        let store = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
        let before = populate(&store);
        // As the nurture before counters left it: version 2, no counters.
        store.counters.clear().unwrap();
        store.counters_index.clear().unwrap();
        store.meta.insert(SCHEMA_KEY, &2u32.to_be_bytes()).unwrap();
        store.flush().unwrap();
        before
    };
    let store = SledStore::open(&dir, DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(
        store.meta_get("schema_version").unwrap(),
        Some(SCHEMA_VERSION.to_be_bytes().to_vec())
    );
    assert_eq!(agree(&store), before);
    // And the marks came back: Ana's promotion by the workflow is not counted twice.
    let mut batch = Batch::default();
    promoted(
        &mut batch,
        "ana@example.com",
        Some("trial"),
        Stage::Customer,
    );
    assert_eq!(apply(&store, &batch).workflows["trial"].promoted, 1);
}

#[test]
fn a_recount_finds_counters_gone_wrong_and_repairs_them() {
    let store = SledStore::open(&scratch("repair"), DEFAULT_CACHE_BYTES).unwrap();
    let right = populate(&store);
    store
        .counters
        .insert(workflow_key("trial", "welcome", SENT), &41u64.to_be_bytes())
        .unwrap();
    store
        .counters
        .insert(store_key(LEADS), b"bad".as_slice())
        .unwrap();
    store
        .counters_index
        .remove(promotion_mark("ana@example.com", "trial"))
        .unwrap();

    let checked = store.recount(false).unwrap();
    assert_eq!(
        checked.differences,
        [
            ("store: leads".to_string(), 0, 3),
            ("trial, step welcome: sent".to_string(), 41, 1),
        ]
    );
    assert_eq!(checked.index_differences, 1);
    assert!(!checked.repaired);
    assert_eq!(
        checked.counted, right,
        "the report of a recount is the count"
    );
    assert_eq!(
        store.counters().unwrap().workflows["trial"].steps["welcome"].sent,
        41
    );

    assert!(store.recount(true).unwrap().repaired);
    assert_eq!(agree(&store), right);
}

#[test]
fn a_counter_that_would_go_below_zero_stops_at_zero_and_the_batch_commits() {
    let store = SledStore::open(&scratch("below"), DEFAULT_CACHE_BYTES).unwrap();
    populate(&store);
    store.counters.remove(store_key(CONTACTS)).unwrap();
    let mut ana = store.lead("ana@example.com").unwrap().unwrap();
    ana.stage = Stage::Lead;
    store
        .apply(&Batch {
            leads: vec![ana],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(
        store.lead("ana@example.com").unwrap().unwrap().stage,
        Stage::Lead
    );
    assert_eq!(store.counters().unwrap().contacts, 0);
}

#[test]
fn counter_keys_read_back_as_the_figures_they_name() {
    let mut counters = Counters::default();
    counters
        .add(&workflow_key("trial", "welcome", "exited:step_removed"), 2)
        .unwrap();
    counters
        .add(&workflow_key("trial", "", PROMOTED), 3)
        .unwrap();
    counters.add(&store_key(SUPPRESSED), 4).unwrap();
    let trial = &counters.workflows["trial"];
    assert_eq!(trial.steps["welcome"].exited["step_removed"], 2);
    assert_eq!(trial.promoted, 3);
    assert_eq!(counters.suppressed, 4);
    assert_eq!(
        counters
            .entries()
            .keys()
            .map(|key| describe(key))
            .collect::<Vec<_>>(),
        [
            "store: suppressed",
            "trial: promoted",
            "trial, step welcome: exited:step_removed"
        ]
    );
    assert!(
        counters
            .add(&workflow_key("trial", "", "bogus"), 1)
            .is_err()
    );
    assert!(counters.add(b"Xleads", 1).is_err());
    assert_eq!(
        reason_key(&ExitReason::StepRemoved("nudge".into())),
        "step_removed"
    );
    assert_eq!(reason_key(&ExitReason::AutoReplied), "auto_replied");
}

#[test]
fn emailed_and_engaged_follow_sends_clicks_and_events_reported_through_the_api() {
    let store = SledStore::open(&scratch("funnel"), DEFAULT_CACHE_BYTES).unwrap();
    let started = |workflow: &str, minute: u32| {
        let mut enrollment = enrollment(workflow, "Eve@example.com", "welcome", Status::Active);
        enrollment.enrolled_at = at(minute);
        enrollment
    };
    let tracked = |batch: &mut Batch, minute: u32| {
        batch.event(
            "eve@example.com",
            at(minute),
            None,
            EventKind::Tracked {
                name: "visited-pricing".into(),
                properties: BTreeMap::new(),
                by: "api".into(),
            },
        );
    };
    let funnel = |counters: &Counters, workflow: &str| {
        let counts = &counters.workflows[workflow];
        (counts.emailed, counts.engaged)
    };
    apply(
        &store,
        &Batch {
            leads: vec![Lead::new("Eve@example.com".into(), at(0))],
            enrollments: vec![started("trial", 0), started("news", 10)],
            ..Batch::default()
        },
    );
    // An event at 9:05 engages the enrollment begun at 9:00, not the one begun at 9:10.
    let mut batch = Batch::default();
    tracked(&mut batch, 5);
    let counters = apply(&store, &batch);
    assert_eq!(funnel(&counters, "trial"), (0, 1));
    assert_eq!(funnel(&counters, "news"), (0, 0));
    // The news enrollment sends, and a later event comes in the same batch.
    let mut news = started("news", 10);
    news.facts.sent.push("welcome".into());
    let mut batch = Batch {
        enrollments: vec![news],
        ..Batch::default()
    };
    tracked(&mut batch, 20);
    assert_eq!(funnel(&apply(&store, &batch), "news"), (1, 1));
    // A click on an enrollment already engaged counts it once; one begun after every event
    // is not engaged.
    let mut trial = started("trial", 0);
    trial.facts.clicked = true;
    let counters = apply(
        &store,
        &Batch {
            enrollments: vec![trial, started("later", 30)],
            ..Batch::default()
        },
    );
    assert_eq!(funnel(&counters, "trial"), (0, 1));
    assert_eq!(funnel(&counters, "later"), (0, 0));
}

#[test]
fn opens_and_clicks_count_per_step_people_and_machines_apart() {
    let store = SledStore::open(&scratch("engaged"), DEFAULT_CACHE_BYTES).unwrap();
    let engaged = |batch: &mut Batch, lead: &str, step: &str, kind: &str, machine: bool| {
        batch.event(
            lead,
            at(8),
            Some("trial"),
            EventKind::Engaged {
                kind: kind.into(),
                message_id: format!("<{lead}.{step}@example.com>"),
                step: step.into(),
                link: (kind == "click").then_some(0),
                url: (kind == "click").then(|| "https://example.com/pricing".into()),
                name: None,
                machine: machine.then(|| "a link scanner".into()),
            },
        );
    };
    let mut batch = Batch::default();
    engaged(&mut batch, "ana@example.com", "welcome", "open", false);
    engaged(&mut batch, "ana@example.com", "welcome", "click", false);
    engaged(&mut batch, "ana@example.com", "welcome", "click", true);
    engaged(&mut batch, "ben@example.com", "welcome", "open", true);
    engaged(&mut batch, "ben@example.com", "offer", "click", false);
    let counters = apply(&store, &batch);
    let step = |name: &str| {
        let s = &counters.workflows["trial"].steps[name];
        (s.opens, s.clicks, s.machine_opens, s.machine_clicks)
    };
    assert_eq!(step("welcome"), (1, 1, 1, 1));
    assert_eq!(step("offer"), (0, 1, 0, 0));

    // The same lines again (another batch) add up; the recount inside `apply` agrees.
    let counters = apply(&store, &batch);
    let welcome = &counters.workflows["trial"].steps["welcome"];
    assert_eq!((welcome.opens, welcome.clicks), (2, 2));
}
