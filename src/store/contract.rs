//! The store contract (docs/store.md), tested once and run against both backends through
//! [`Store`]: every test below is a function generic over [`Contract`], and [`contract_tests!`]
//! runs each one on the sled store (in a scratch folder) and on the [`PgStore`] (in a
//! database of its own on the test PostgreSQL cluster).

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::postgres::{PgStore, testing};
use super::*;
use crate::engine::Status;

/// What the contract tests do with a store: its operations, with errors unwrapped (a test
/// fails on any) except `apply`'s, which some tests expect.
pub trait Contract: Sized {
    /// A new, empty store.
    fn open(name: &str) -> Self;
    /// The same store, closed and opened again.
    fn reopen(self) -> Self;
    fn with_webhooks(self, routes: Routes) -> Self;
    /// Makes any batch that writes this enrollment fail, the way this backend refuses one (sled:
    /// a damaged record in its place; PostgreSQL: another daemon's lease on it).
    fn break_enrollment(&self, workflow: &str, email: &str);

    fn apply(&self, batch: &Batch) -> std::result::Result<(), String>;
    fn lead(&self, email: &str) -> Option<Lead>;
    fn leads(&self) -> Vec<Lead>;
    fn leads_after(&self, after: Option<&str>, limit: usize) -> Vec<Lead>;
    fn lead_count(&self) -> usize;
    fn enrollment(&self, workflow: &str, email: &str) -> Option<Enrollment>;
    fn enrollments_of(&self, email: &str) -> Vec<Enrollment>;
    fn enrollments(&self) -> Vec<Enrollment>;
    fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<(String, String)>;
    fn next_due(&self) -> Option<DateTime<Utc>>;
    fn upcoming(&self, limit: usize) -> Vec<(DateTime<Utc>, String, String)>;
    fn changed(&self, limit: usize) -> Vec<String>;
    fn events_of(&self, email: &str) -> Vec<Event>;
    fn all_events(&self) -> Vec<(String, Event)>;
    fn message(&self, message_id: &str) -> Option<MessageRecord>;
    fn messages(&self) -> Vec<MessageRecord>;
    fn sent_since(&self, since: DateTime<Utc>) -> Vec<(DateTime<Utc>, String, String)>;
    fn outbox_ready(&self, now: DateTime<Utc>, limit: usize) -> Vec<OutboxEmail>;
    fn outbox(&self) -> Vec<OutboxEmail>;
    fn outbox_next(&self) -> Option<DateTime<Utc>>;
    fn outbox_len(&self) -> usize;
    fn outbox_email(&self, not_before: DateTime<Utc>, message_id: &str) -> Option<OutboxEmail>;
    fn new_id(&self) -> u64;
    fn in_flight(&self) -> Vec<(u64, Vec<OutboxEmail>)>;
    fn uncertain(&self) -> Vec<OutboxEmail>;
    fn webhooks_pending(&self) -> Vec<Delivery>;
    fn webhooks_failed(&self) -> Vec<Delivery>;
    fn meta_get(&self, key: &str) -> Option<Vec<u8>>;
    fn meta_set(&self, key: &str, value: &[u8]);
    fn meta_prefix(&self, prefix: &str, limit: usize) -> Vec<(String, Vec<u8>)>;
}

/// The operations both backends spell alike, each unwrapped.
macro_rules! alike {
    () => {
        fn apply(&self, batch: &Batch) -> std::result::Result<(), String> {
            self.store.apply(batch).map_err(|error| error.to_string())
        }
        fn lead(&self, email: &str) -> Option<Lead> {
            self.store.lead(email).unwrap()
        }
        fn leads(&self) -> Vec<Lead> {
            self.store
                .leads()
                .collect::<std::result::Result<_, _>>()
                .unwrap()
        }
        fn enrollment(&self, workflow: &str, email: &str) -> Option<Enrollment> {
            self.store.enrollment(workflow, email).unwrap()
        }
        fn enrollments_of(&self, email: &str) -> Vec<Enrollment> {
            self.store.enrollments_of(email).unwrap()
        }
        fn enrollments(&self) -> Vec<Enrollment> {
            self.store
                .enrollments()
                .collect::<std::result::Result<_, _>>()
                .unwrap()
        }
        fn due(&self, now: DateTime<Utc>, limit: usize) -> Vec<(String, String)> {
            self.store.due(now, limit).unwrap()
        }
        fn next_due(&self) -> Option<DateTime<Utc>> {
            self.store.next_due().unwrap()
        }
        fn upcoming(&self, limit: usize) -> Vec<(DateTime<Utc>, String, String)> {
            self.store.upcoming(limit).unwrap()
        }
        fn changed(&self, limit: usize) -> Vec<String> {
            self.store.changed(limit).unwrap()
        }
        fn events_of(&self, email: &str) -> Vec<Event> {
            self.store.events_of(email).unwrap()
        }
        fn all_events(&self) -> Vec<(String, Event)> {
            self.store
                .all_events()
                .collect::<std::result::Result<_, _>>()
                .unwrap()
        }
        fn message(&self, message_id: &str) -> Option<MessageRecord> {
            self.store.message(message_id).unwrap()
        }
        fn messages(&self) -> Vec<MessageRecord> {
            self.store
                .messages()
                .collect::<std::result::Result<_, _>>()
                .unwrap()
        }
        fn sent_since(&self, since: DateTime<Utc>) -> Vec<(DateTime<Utc>, String, String)> {
            self.store.sent_since(since).unwrap()
        }
        fn outbox_ready(&self, now: DateTime<Utc>, limit: usize) -> Vec<OutboxEmail> {
            self.store.outbox_ready(now, limit).unwrap()
        }
        fn outbox(&self) -> Vec<OutboxEmail> {
            self.store
                .outbox()
                .collect::<std::result::Result<_, _>>()
                .unwrap()
        }
        fn outbox_next(&self) -> Option<DateTime<Utc>> {
            self.store.outbox_next().unwrap()
        }
        fn outbox_email(&self, not_before: DateTime<Utc>, message_id: &str) -> Option<OutboxEmail> {
            self.store.outbox_email(not_before, message_id).unwrap()
        }
        fn new_id(&self) -> u64 {
            self.store.new_id().unwrap()
        }
        fn in_flight(&self) -> Vec<(u64, Vec<OutboxEmail>)> {
            self.store.in_flight().unwrap()
        }
        fn uncertain(&self) -> Vec<OutboxEmail> {
            self.store.uncertain().unwrap()
        }
        fn webhooks_pending(&self) -> Vec<Delivery> {
            self.store
                .webhooks_pending()
                .collect::<std::result::Result<_, _>>()
                .unwrap()
        }
        fn webhooks_failed(&self) -> Vec<Delivery> {
            self.store
                .webhooks_failed()
                .collect::<std::result::Result<_, _>>()
                .unwrap()
        }
        fn meta_get(&self, key: &str) -> Option<Vec<u8>> {
            self.store.meta_get(key).unwrap()
        }
        fn meta_set(&self, key: &str, value: &[u8]) {
            self.store.meta_set(key, value).unwrap()
        }
        fn meta_prefix(&self, prefix: &str, limit: usize) -> Vec<(String, Vec<u8>)> {
            self.store.meta_prefix(prefix, limit).unwrap()
        }
        fn leads_after(&self, after: Option<&str>, limit: usize) -> Vec<Lead> {
            self.store
                .leads_after(after, limit)
                .collect::<std::result::Result<_, _>>()
                .unwrap()
        }
        fn lead_count(&self) -> usize {
            self.store.lead_count()
        }
        fn outbox_len(&self) -> usize {
            self.store.outbox_len()
        }
    };
}

// Both run through [`Store`], the interface the engine, the daemon and the CLI use.
pub struct Sled {
    store: Store,
    dir: PathBuf,
}

impl Contract for Sled {
    fn open(name: &str) -> Sled {
        let dir =
            std::env::temp_dir().join(format!("nurture-contract-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Sled {
            store: Store::open(&dir, DEFAULT_CACHE_BYTES).unwrap(),
            dir,
        }
    }

    fn reopen(self) -> Sled {
        self.store.flush().unwrap();
        drop(self.store);
        Sled {
            store: Store::open(&self.dir, DEFAULT_CACHE_BYTES).unwrap(),
            dir: self.dir,
        }
    }

    fn with_webhooks(self, routes: Routes) -> Sled {
        Sled {
            store: self.store.with_webhooks(routes),
            dir: self.dir,
        }
    }

    fn break_enrollment(&self, workflow: &str, email: &str) {
        let Store::Sled(sled) = &self.store else {
            panic!("a sled store")
        };
        // A value in an unknown format: the transaction aborts when it reads it to move its
        // due entry.
        sled.enrollments
            .insert(keys::enrollment(workflow, email), b"\x07junk".as_slice())
            .unwrap();
    }

    alike!();
}

pub struct Postgres {
    store: Store,
    url: String,
}

impl Postgres {
    fn connect(url: &str) -> Store {
        Store::Postgres(Box::new(PgStore::open(url, None).unwrap()))
    }
}

impl Contract for Postgres {
    fn open(name: &str) -> Postgres {
        let url = testing::cluster().database(name);
        Postgres {
            store: Postgres::connect(&url),
            url,
        }
    }

    fn reopen(self) -> Postgres {
        drop(self.store);
        Postgres {
            store: Postgres::connect(&self.url),
            url: self.url,
        }
    }

    fn with_webhooks(self, routes: Routes) -> Postgres {
        Postgres {
            store: self.store.with_webhooks(routes),
            url: self.url,
        }
    }

    fn break_enrollment(&self, workflow: &str, email: &str) {
        testing::lease_elsewhere(self.store.shared().unwrap(), workflow, email);
    }

    alike!();
}

/// Runs each named contract test on both backends: `<name>::sled` and `<name>::postgres`.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sled() {
                    super::$name::<super::Sled>(stringify!($name));
                }
                #[test]
                fn postgres() {
                    super::$name::<super::Postgres>(stringify!($name));
                }
            }
        )*
    };
}

contract_tests!(
    the_due_index_follows_each_enrollment,
    everything_survives_a_reopen_and_events_keep_their_order,
    an_outbox_email_moves_to_the_messages_in_one_batch,
    a_failed_batch_changes_nothing,
    every_spelling_of_an_address_reaches_one_lead,
    a_subscribed_event_queues_its_webhook_in_the_same_transaction,
    a_batch_that_writes_a_key_twice_keeps_its_last_write,
    walks_return_everything_in_key_order,
    marks_copies_and_meta_are_kept_until_removed,
);

// The same fixed times and enrollments as the sled-only tests.
use super::tests::{at, enrollment};

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
        eml: b"Subject: Hi\r\n\r\nHello\r\n\xff\x00".to_vec(),
    }
}

fn sent(email: &OutboxEmail, at: DateTime<Utc>) -> MessageRecord {
    MessageRecord {
        message_id: email.message_id.clone(),
        workflow: email.workflow.clone(),
        lead: email.lead.clone(),
        sender: email.envelope_from.clone(),
        step: email.step.clone(),
        subject: email.subject.clone(),
        state: MessageState::Sent,
        queued_at: email.queued_at,
        at,
    }
}

// An enrollment and its due entry never disagree.
fn the_due_index_follows_each_enrollment<S: Contract>(name: &str) {
    let store = S::open(name);
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

    assert_eq!(store.next_due(), Some(at(9)));
    assert_eq!(store.due(at(8), 10), vec![]);
    assert_eq!(
        store.due(at(9), 10),
        vec![("trial".to_string(), "a@example.com".to_string())]
    );
    assert_eq!(store.due(at(12), 10).len(), 2);
    assert_eq!(store.due(at(12), 1).len(), 1, "the limit holds");

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
        store.upcoming(10),
        vec![(at(11), "trial".into(), "a@example.com".into())]
    );
    assert_eq!(store.enrollment("trial", "a@example.com"), Some(moved));
    assert_eq!(store.due(at(10), 10), vec![], "the old due time is gone");

    let of_a: Vec<String> = store
        .enrollments_of("a@example.com")
        .into_iter()
        .map(|e| e.workflow)
        .collect();
    assert_eq!(of_a, ["news", "trial"]);
    assert_eq!(store.enrollments().len(), 3);
}

// What a batch wrote is there after a reopen; a lead's journal keeps the order it was written
// in, and one lead's journal does not run into a longer address's.
fn everything_survives_a_reopen_and_events_keep_their_order<S: Contract>(name: &str) {
    let store = S::open(name);
    let mut batch = Batch::default();
    batch.leads.push(Lead::new("ana@example.com".into(), at(8)));
    batch.changed.push("ana@example.com".into());
    // Written out of time order: the journal keeps the order of writing.
    for hour in [9, 11, 10] {
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
    let mut later = Batch::default();
    later.event("ana@example.com", at(1), None, EventKind::Completed);
    store.apply(&later).unwrap();

    let store = store.reopen();
    assert_eq!(store.lead("ana@example.com").unwrap().created_at, at(8));
    assert_eq!(store.changed(10), ["ana@example.com"]);
    let times: Vec<_> = store
        .events_of("ana@example.com")
        .iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(times, [at(9), at(11), at(10), at(1)]);
    assert_eq!(store.events_of("ana@example.com.au").len(), 1);
    let outbox = store.outbox_ready(at(9), 10);
    assert_eq!(outbox, vec![outbox_email("<1@example.test>", at(9))]);
    assert!(store.outbox_ready(at(8), 10).is_empty());
    assert_eq!(store.outbox_next(), Some(at(9)));
}

// An email is in the outbox until the batch that records its outcome takes it out; while it
// is handed to a transport its in-flight mark keeps its bytes.
fn an_outbox_email_moves_to_the_messages_in_one_batch<S: Contract>(name: &str) {
    let store = S::open(name);
    let email = outbox_email("<2@example.test>", at(9));
    // The step that sends it moves its enrollment and queues it in one batch.
    let mut step = Batch::default();
    step.enrollments
        .push(enrollment("trial", "ana@example.com", Some(at(20))));
    step.outbox_put.push(email.clone());
    step.event(
        "ana@example.com",
        at(9),
        Some("trial"),
        EventKind::Queued {
            message_id: email.message_id.clone(),
            step: "welcome".into(),
            subject: "Hi".into(),
        },
    );
    store.apply(&step).unwrap();
    assert_eq!(store.outbox_len(), 1);
    assert_eq!(
        store.outbox_email(at(9), &email.message_id),
        Some(email.clone())
    );

    let mark = store.new_id();
    assert_ne!(store.new_id(), mark, "ids are unique");
    store
        .apply(&Batch {
            in_flight_set: Some((mark, vec![email.clone()])),
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(
        store.in_flight(),
        vec![(mark, vec![email.clone()])],
        "the in-flight list keeps the MIME bytes, to send again what never left"
    );
    let record = sent(&email, at(9));
    store
        .apply(&Batch {
            outbox_remove: vec![(at(9), email.message_id.clone())],
            messages: vec![record.clone()],
            in_flight_clear: vec![mark],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.outbox_len(), 0);
    assert_eq!(store.outbox_next(), None);
    assert!(store.in_flight().is_empty());
    assert_eq!(store.message("<2@example.test>"), Some(record.clone()));
    assert_eq!(store.messages(), vec![record]);
    assert_eq!(
        store.sent_since(at(9)),
        vec![(at(9), "team@example.test".into(), "ana@example.com".into())]
    );
    assert!(store.sent_since(at(10)).is_empty());
}

// A batch the store refuses changes nothing: not its leads, journal lines, outbox emails or
// meta entries written before the part that failed, nor any after it.
fn a_failed_batch_changes_nothing<S: Contract>(name: &str) {
    let store = S::open(name);
    store.break_enrollment("trial", "a@example.com");
    let mut batch = Batch::default();
    batch.leads.push(Lead::new("a@example.com".into(), at(1)));
    batch
        .enrollments
        .push(enrollment("trial", "a@example.com", Some(at(2))));
    batch.event("a@example.com", at(2), Some("trial"), EventKind::Enrolled);
    batch
        .outbox_put
        .push(outbox_email("<3@example.test>", at(2)));
    batch.changed.push("a@example.com".into());
    batch
        .meta_put
        .push(("watcher".into(), b"position".to_vec()));
    assert!(store.apply(&batch).is_err());
    assert_eq!(store.lead("a@example.com"), None);
    assert_eq!(store.next_due(), None);
    assert!(store.events_of("a@example.com").is_empty());
    assert_eq!(store.outbox_len(), 0);
    assert!(store.changed(10).is_empty());
    assert_eq!(store.meta_get("watcher"), None);
}

// One person, one lead (issue 10): every key names a lead by its address folded to lower
// case; the lead keeps its spelling.
fn every_spelling_of_an_address_reaches_one_lead<S: Contract>(name: &str) {
    let store = S::open(name);
    let mut batch = Batch::default();
    batch
        .leads
        .push(Lead::new("Dana.Scully@fbi.example".into(), at(1)));
    batch.changed.push("Dana.Scully@fbi.example".into());
    batch
        .enrollments
        .push(enrollment("trial", "Dana.Scully@fbi.example", Some(at(9))));
    batch.event("DANA.SCULLY@fbi.example", at(2), None, EventKind::Enrolled);
    store.apply(&batch).unwrap();

    let lead = store.lead("dana.scully@fbi.example").unwrap();
    assert_eq!(
        lead.email, "Dana.Scully@fbi.example",
        "the spelling is kept"
    );
    assert!(
        store
            .enrollment("trial", "DANA.SCULLY@FBI.EXAMPLE")
            .is_some()
    );
    assert_eq!(store.enrollments_of("dana.scully@fbi.example").len(), 1);
    assert_eq!(store.events_of("dana.SCULLY@fbi.example").len(), 1);
    assert_eq!(store.changed(10), ["dana.scully@fbi.example"]);
    assert_eq!(
        store.due(at(9), 10),
        vec![("trial".into(), "dana.scully@fbi.example".into())],
        "the due index names the key"
    );
    // Reports show the spelling, not the key.
    assert_eq!(store.upcoming(5)[0].2, "Dana.Scully@fbi.example");

    // Writing the other spelling updates the one lead; enrollment looking at it clears it
    // whatever the spelling.
    let mut other = lead.clone();
    other.email = "dana.scully@fbi.example".into();
    other.score = 5;
    store
        .apply(&Batch {
            leads: vec![other],
            changed_done: vec!["DANA.scully@fbi.example".into()],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.lead_count(), 1);
    assert_eq!(store.lead("Dana.Scully@FBI.example").unwrap().score, 5);
    assert!(store.changed(10).is_empty());
}

fn routes(events: &[&str]) -> Routes {
    Routes::from_config(&[crate::config::WebhookConfig {
        url: "https://crm.example/hook".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    }])
    .unwrap()
}

fn promotion(email: &str) -> Batch {
    let mut lead = Lead::new(email.into(), at(1));
    lead.stage = crate::lead::Stage::Contact;
    let mut batch = Batch::default();
    batch.event(
        email,
        at(2),
        Some("trial"),
        EventKind::Promoted {
            stage: crate::lead::Stage::Contact,
            by: "workflow `trial`".into(),
        },
    );
    batch.event(email, at(2), Some("trial"), EventKind::Completed);
    batch.leads.push(lead);
    batch
}

// A webhook exists if and only if its journal line does (issue 12).
fn a_subscribed_event_queues_its_webhook_in_the_same_transaction<S: Contract>(name: &str) {
    let store = S::open(name).with_webhooks(routes(&["lead.promoted", "lead.suppressed"]));
    store.apply(&promotion("Ana@example.com")).unwrap();
    let pending = store.webhooks_pending();
    assert_eq!(pending.len(), 1, "the completion is not subscribed");
    let delivery = &pending[0];
    assert_eq!(delivery.event, "lead.promoted");
    assert_eq!(delivery.lead, "Ana@example.com");
    assert_eq!(delivery.next_attempt, at(2));
    let body: serde_json::Value = serde_json::from_str(&delivery.body).unwrap();
    assert_eq!(
        body["data"]["lead"]["stage"], "contact",
        "the lead as this batch left it"
    );
    assert_eq!(body["data"]["workflow"], "trial");

    // A lead not in the batch is read as stored.
    let mut suppression = Batch::default();
    suppression.event(
        "ana@example.com",
        at(3),
        None,
        EventKind::Suppressed {
            reason: "manual".into(),
        },
    );
    store.apply(&suppression).unwrap();
    let pending = store.webhooks_pending();
    assert_eq!(pending.len(), 2);
    let body: serde_json::Value = serde_json::from_str(&pending[1].body).unwrap();
    assert_eq!(body["data"]["lead"]["email"], "Ana@example.com");
    assert_ne!(
        pending[0].id, pending[1].id,
        "every delivery has its own id"
    );

    // A batch that fails queues nothing, as it journals nothing.
    store.break_enrollment("trial", "b@example.com");
    let mut failing = promotion("b@example.com");
    failing
        .enrollments
        .push(enrollment("trial", "b@example.com", Some(at(3))));
    assert!(store.apply(&failing).is_err());
    assert_eq!(store.webhooks_pending().len(), 2);

    // Given up: the entry moves in one batch, and survives a reopen.
    let mut given_up = delivery.clone();
    given_up.failed_at = Some(at(4));
    let mut batch = Batch::default();
    batch
        .webhooks_remove
        .push((delivery.next_attempt, delivery.id.clone()));
    batch.webhooks_failed_put.push(given_up);
    store.apply(&batch).unwrap();
    let store = store.reopen();
    assert_eq!(store.webhooks_pending().len(), 1);
    let failed = store.webhooks_failed();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, delivery.id);

    // Retried by hand: out of the failed ones, back in the queue. And without subscriptions
    // a store queues nothing.
    let mut retried = failed[0].clone();
    retried.failed_at = None;
    retried.next_attempt = at(5);
    store
        .apply(&Batch {
            webhooks_failed_remove: vec![retried.id.clone()],
            webhooks_put: vec![retried],
            ..promotion("c@example.com")
        })
        .unwrap();
    assert!(store.webhooks_failed().is_empty());
    assert_eq!(store.webhooks_pending().len(), 2);
}

// Writing one key twice in a batch means its last write, the due index included.
fn a_batch_that_writes_a_key_twice_keeps_its_last_write<S: Contract>(name: &str) {
    let store = S::open(name);
    let mut first = Lead::new("ana@example.com".into(), at(1));
    first.score = 1;
    let mut second = first.clone();
    second.score = 2;
    let mut again = outbox_email("<4@example.test>", at(5));
    again.attempts = 1;
    let batch = Batch {
        leads: vec![first, second],
        enrollments: vec![
            enrollment("trial", "ana@example.com", Some(at(3))),
            enrollment("trial", "ana@example.com", Some(at(4))),
        ],
        meta_put: vec![("k".into(), b"1".to_vec()), ("k".into(), b"2".to_vec())],
        outbox_put: vec![outbox_email("<4@example.test>", at(5)), again],
        ..Batch::default()
    };
    store.apply(&batch).unwrap();
    assert_eq!(store.lead("ana@example.com").unwrap().score, 2);
    assert_eq!(
        store.upcoming(10),
        vec![(at(4), "trial".into(), "ana@example.com".into())]
    );
    assert_eq!(store.meta_get("k"), Some(b"2".to_vec()));
    assert_eq!(store.outbox().len(), 1);
    assert_eq!(store.outbox()[0].attempts, 1);
}

// The walks over whole tables return every record once, in key order, however many there are
// (more than one page of the PostgreSQL store's walks).
fn walks_return_everything_in_key_order<S: Contract>(name: &str) {
    const LEADS: usize = 2_500;
    let store = S::open(name);
    let mut batch = Batch::default();
    // Written in reverse order, so insertion order is not key order.
    for i in (0..LEADS).rev() {
        let email = format!("lead{i:05}@example.test");
        batch.leads.push(Lead::new(email.clone(), at(1)));
        batch
            .enrollments
            .push(enrollment("drip", &email, Some(at(2))));
        batch.event(&email, at(1), None, EventKind::Enrolled);
        batch.event(&email, at(2), None, EventKind::Completed);
        if i % 2 == 0 {
            batch
                .outbox_put
                .push(outbox_email(&format!("<{i:05}@x>"), at(3)));
        }
    }
    store.apply(&batch).unwrap();
    let emails: Vec<String> = store.leads().into_iter().map(|l| l.email).collect();
    let expected: Vec<String> = (0..LEADS)
        .map(|i| format!("lead{i:05}@example.test"))
        .collect();
    assert_eq!(emails, expected);
    assert_eq!(store.lead_count(), LEADS);
    let enrolled: Vec<String> = store.enrollments().into_iter().map(|e| e.lead).collect();
    assert_eq!(enrolled, expected);
    let events = store.all_events();
    assert_eq!(events.len(), 2 * LEADS);
    for (pair, email) in events.chunks(2).zip(&expected) {
        assert_eq!(&pair[0].0, email);
        assert_eq!(pair[0].1.kind, EventKind::Enrolled, "in the order written");
        assert_eq!(pair[1].1.kind, EventKind::Completed);
    }
    let ids: Vec<String> = store.outbox().into_iter().map(|e| e.message_id).collect();
    let expected_ids: Vec<String> = (0..LEADS)
        .step_by(2)
        .map(|i| format!("<{i:05}@x>"))
        .collect();
    assert_eq!(ids, expected_ids);
    assert_eq!(store.outbox_ready(at(3), 3).len(), 3);

    // A resumable walk, a page at a time.
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.leads_after(after.as_deref(), 700);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|l| l.email.clone());
        walked.extend(page.into_iter().map(|l| l.email));
    }
    assert_eq!(walked, expected);
    assert_eq!(store.due(at(2), 5).len(), 5);
}

// In-flight marks, copies of uncertain emails and meta entries stay until a batch removes them.
fn marks_copies_and_meta_are_kept_until_removed<S: Contract>(name: &str) {
    let store = S::open(name);
    let (one, two) = (
        outbox_email("<5@example.test>", at(1)),
        outbox_email("<6@example.test>", at(1)),
    );
    let mut batch = Batch {
        in_flight_set: Some((11, vec![one.clone(), two.clone()])),
        uncertain_put: vec![two.clone()],
        meta_put: vec![
            ("signup:b".into(), b"2".to_vec()),
            ("signup:a".into(), b"1".to_vec()),
            ("other".into(), b"x".to_vec()),
        ],
        ..Batch::default()
    };
    store.apply(&batch).unwrap();
    batch.in_flight_set = Some((12, vec![one.clone()]));
    batch.uncertain_put.clear();
    batch.meta_put.clear();
    store.apply(&batch).unwrap();
    // Setting a mark again replaces its list.
    store
        .apply(&Batch {
            in_flight_set: Some((11, vec![two.clone()])),
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(
        store.in_flight(),
        vec![(11, vec![two.clone()]), (12, vec![one.clone()])]
    );
    assert_eq!(store.uncertain(), vec![two.clone()]);
    assert_eq!(
        store.meta_prefix("signup:", 10),
        vec![
            ("signup:a".to_string(), b"1".to_vec()),
            ("signup:b".to_string(), b"2".to_vec())
        ]
    );
    assert_eq!(store.meta_prefix("signup:", 1).len(), 1);
    store.meta_set("other", b"y");
    assert_eq!(store.meta_get("other"), Some(b"y".to_vec()));

    // Removals come after the puts of the same batch.
    store
        .apply(&Batch {
            in_flight_clear: vec![11, 12],
            uncertain_remove: vec![two.message_id.clone()],
            meta_put: vec![("signup:c".into(), b"3".to_vec())],
            meta_remove: vec!["signup:a".into(), "signup:c".into()],
            ..Batch::default()
        })
        .unwrap();
    let store = store.reopen();
    assert!(store.in_flight().is_empty());
    assert!(store.uncertain().is_empty());
    assert_eq!(
        store.meta_prefix("signup:", 10),
        vec![("signup:b".to_string(), b"2".to_vec())]
    );
}
