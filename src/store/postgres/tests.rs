//! What only the PostgreSQL store does, against the real test cluster: several claimers
//! sharing the due work, a claimer dying mid-batch, wake-ups, the inbox watcher's lease, the
//! migrations, and the connection settings. The contract it shares with sled is tested in
//! `store/contract.rs`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::testing::{cluster, store};
use super::*;
use crate::engine::{Enrollment, Facts, Position, Status};
use crate::lead::Lead;
use crate::store::{Batch, EventKind, OutboxEmail};

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, hour, 0, 0).unwrap()
}

fn enrollment(email: &str, due: Option<DateTime<Utc>>) -> Enrollment {
    Enrollment {
        workflow: "drip".into(),
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

/// `count` leads enrolled in `drip`, all due before 09:00.
fn due_leads(store: &PgStore, count: usize) {
    let mut batch = Batch::default();
    for i in 0..count {
        let email = format!("lead{i:05}@example.test");
        let minute = chrono::Duration::milliseconds((i as i64 * 7919) % 3_600_000);
        batch.leads.push(Lead::new(email.clone(), at(0)));
        batch
            .enrollments
            .push(enrollment(&email, Some(at(8) + minute)));
    }
    store.apply(&batch).unwrap();
}

/// The batch a step makes: the enrollment moved past its step, a journal line.
fn step(store: &PgStore, claimed: &[(String, String)]) -> Batch {
    let mut batch = Batch::default();
    let found = store.enrollments_with_leads(claimed).unwrap();
    assert_eq!(
        found.len(),
        claimed.len(),
        "each claimed enrollment, in order"
    );
    for ((workflow, email), (mut enrollment, lead)) in claimed.iter().zip(found) {
        assert_eq!(enrollment.workflow, *workflow);
        assert_eq!(lead.map(|lead| lead.email).as_ref(), Some(email));
        enrollment.position.pc += 1;
        enrollment.due = Some(at(23));
        batch.event(email, at(9), Some(workflow), EventKind::Enrolled);
        batch.enrollments.push(enrollment);
    }
    batch
}

// Several daemons share the due queue: each due enrollment is claimed once, by one of them,
// while the others claim the rest in parallel.
#[test]
fn claimers_sharing_the_queue_take_each_due_enrollment_exactly_once() {
    const LEADS: usize = 5_000;
    const CLAIMERS: usize = 4;
    let url = cluster().database("claimers");
    due_leads(&PgStore::open(&url, None).unwrap(), LEADS);
    let taken = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..CLAIMERS)
        .map(|claimer| {
            let url = url.clone();
            let taken = taken.clone();
            std::thread::spawn(move || {
                // A daemon of its own: its own pool, its own owner name.
                let store = PgStore::open(&url, None)
                    .unwrap()
                    .with_owner(&format!("daemon {claimer}"));
                loop {
                    let claimed = store.claim_due(at(9), 50, Duration::from_secs(60)).unwrap();
                    if claimed.is_empty() {
                        break;
                    }
                    store.apply(&step(&store, &claimed)).unwrap();
                    taken.lock().unwrap().extend(claimed);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let taken = taken.lock().unwrap();
    let distinct: HashSet<&(String, String)> = taken.iter().collect();
    assert_eq!(distinct.len(), LEADS, "every due enrollment was claimed");
    assert_eq!(taken.len(), LEADS, "none was claimed twice");
    let store = PgStore::open(&url, None).unwrap();
    assert!(store.due(at(9), 10).unwrap().is_empty());
    assert_eq!(
        store
            .all_events()
            .collect::<Result<Vec<_>>>()
            .unwrap()
            .len(),
        LEADS,
        "one step each"
    );
}

// A claim is ordered and hides what it took until the batch that moves it commits.
#[test]
fn a_claim_takes_the_earliest_and_hides_them_from_other_claimers() {
    let url = cluster().database("claim_order");
    let one = PgStore::open(&url, None).unwrap().with_owner("one");
    let two = PgStore::open(&url, None).unwrap().with_owner("two");
    due_leads(&one, 20);
    let expected: Vec<(String, String)> = one.due(at(9), 5).unwrap();
    let claimed = one.claim_due(at(9), 5, Duration::from_secs(60)).unwrap();
    assert_eq!(claimed, expected, "earliest first");
    let others = two.claim_due(at(9), 100, Duration::from_secs(60)).unwrap();
    assert_eq!(others.len(), 15);
    assert!(others.iter().all(|e| !claimed.contains(e)));
    assert!(
        two.claim_due(at(9), 100, Duration::from_secs(60))
            .unwrap()
            .is_empty()
    );
    let three = PgStore::open(&url, None).unwrap().with_owner("three");
    assert_eq!(
        three.next_due().unwrap(),
        None,
        "work others hold is not this daemon's to wake for"
    );

    // The batch that moves them hands them back, at their new due time.
    one.apply(&step(&one, &claimed)).unwrap();
    assert_eq!(
        two.claim_due(at(23), 100, Duration::from_secs(60)).unwrap(),
        claimed
    );
    // Released without a batch: back to everyone at once.
    two.release(&others).unwrap();
    assert_eq!(
        one.claim_due(at(9), 100, Duration::from_secs(60)).unwrap(),
        others
    );
}

// A daemon killed mid-batch: PostgreSQL rolls its transaction back when the connection drops,
// nothing of the batch remains, and its leases keep its work from the others until they run
// out; then another daemon takes it over and does it once.
#[test]
fn a_claimer_that_dies_mid_batch_leaves_its_work_to_another_once_its_leases_expire() {
    let url = cluster().database("dead_claimer");
    let dying = PgStore::open(&url, None).unwrap().with_owner("dying");
    let survivor = PgStore::open(&url, None).unwrap().with_owner("survivor");
    due_leads(&dying, 10);
    let lease = Duration::from_secs(2);
    let claimed = dying.claim_due(at(9), 10, lease).unwrap();
    assert_eq!(claimed.len(), 10);

    // The dying daemon's batch waits on a lock the test holds, mid-transaction...
    let mut blocker = Settings::new(&url, None, "").unwrap().connect().unwrap();
    let mut holding = blocker.transaction().unwrap();
    holding
        .batch_execute("LOCK TABLE meta IN EXCLUSIVE MODE")
        .unwrap();
    let mut batch = step(&dying, &claimed);
    batch
        .meta_put
        .push(("watcher position".into(), b"42".to_vec()));
    let applying = {
        let dying = dying.clone();
        std::thread::spawn(move || dying.apply(&batch))
    };
    // ...until its connection is cut, as when its process is killed.
    let mut admin = Settings::new(&url, None, "").unwrap().connect().unwrap();
    let mut terminated = false;
    for _ in 0..500 {
        let row = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap();
        if row.get::<_, i64>(0) > 0 {
            terminated = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        terminated,
        "the dying daemon's batch was waiting mid-transaction"
    );
    assert!(
        applying.join().unwrap().is_err(),
        "its batch failed with its connection"
    );
    holding.rollback().unwrap();

    // Nothing of its batch; its leases still hold its work.
    assert_eq!(survivor.meta_get("watcher position").unwrap(), None);
    assert!(
        survivor
            .all_events()
            .collect::<Result<Vec<_>>>()
            .unwrap()
            .is_empty()
    );
    assert!(
        survivor
            .claim_due(at(9), 100, Duration::from_secs(60))
            .unwrap()
            .is_empty(),
        "leased work is not taken while its lease runs"
    );

    // Once they expire, the survivor takes them over and does the step once.
    std::thread::sleep(lease + Duration::from_millis(200));
    let taken = survivor
        .claim_due(at(9), 100, Duration::from_secs(60))
        .unwrap();
    assert_eq!(taken, claimed);
    survivor.apply(&step(&survivor, &taken)).unwrap();
    for (workflow, email) in &claimed {
        let enrollment = survivor.enrollment(workflow, email).unwrap().unwrap();
        assert_eq!(enrollment.position.pc, 1, "stepped once");
        assert_eq!(survivor.events_of(email).unwrap().len(), 1);
    }
}

// A daemon that was too slow (its lease ran out, another daemon took the enrollment over)
// cannot write its stale step over the other's: its batch is refused whole.
#[test]
fn a_batch_whose_lease_was_taken_over_is_refused_whole() {
    let url = cluster().database("taken_over");
    let slow = PgStore::open(&url, None).unwrap().with_owner("slow");
    let quick = PgStore::open(&url, None).unwrap().with_owner("quick");
    due_leads(&slow, 1);
    let claimed = slow.claim_due(at(9), 1, Duration::from_millis(1)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let stale = step(&slow, &claimed);
    assert_eq!(
        quick.claim_due(at(9), 1, Duration::from_secs(60)).unwrap(),
        claimed
    );
    let error = slow.apply(&stale).unwrap_err();
    assert!(
        matches!(&error, PgError::Leased { owner, .. } if owner == "quick"),
        "{error}"
    );
    assert!(
        error.to_string().contains("lead00000@example.test"),
        "{error}"
    );
    assert!(slow.events_of("lead00000@example.test").unwrap().is_empty());
    quick.apply(&step(&quick, &claimed)).unwrap();
    assert_eq!(quick.events_of("lead00000@example.test").unwrap().len(), 1);
}

// A sleeping daemon wakes when another writes due work, and only then.
#[test]
fn a_sleeping_daemon_is_woken_when_work_appears() {
    let url = cluster().database("wake");
    let sleeper = PgStore::open(&url, None).unwrap();
    let writer = PgStore::open(&url, None).unwrap();
    let mut waker = sleeper.waker().unwrap();
    assert!(
        !waker.wait(Duration::from_millis(200)).unwrap(),
        "nothing happened: the wait times out"
    );
    // Writes that are not new work (meta, journal) wake no one.
    let mut quiet = Batch::default();
    quiet.meta_put.push(("k".into(), b"v".to_vec()));
    quiet.event("a@example.com", at(1), None, EventKind::Enrolled);
    writer.apply(&quiet).unwrap();
    assert!(!waker.wait(Duration::from_millis(200)).unwrap());

    let sleeping = std::thread::spawn(move || {
        let woken = waker.wait(Duration::from_secs(60)).unwrap();
        (woken, waker)
    });
    std::thread::sleep(Duration::from_millis(100));
    due_leads(&writer, 3);
    let (woken, mut waker) = sleeping.join().unwrap();
    assert!(woken, "woken by the enrollments, long before the timeout");
    // A lead changed (an import through the CLI) wakes it too.
    writer
        .apply(&Batch {
            changed: vec!["a@example.com".into()],
            ..Batch::default()
        })
        .unwrap();
    assert!(waker.wait(Duration::from_secs(60)).unwrap());
}

// One inbox watcher per mailbox: the lease passes on when its holder lets go or dies.
#[test]
fn one_daemon_watches_a_mailbox_and_another_takes_over_when_it_dies() {
    let url = cluster().database("watcher");
    let store = PgStore::open(&url, None).unwrap();
    let mut first = store.try_watch("INBOX of ana").unwrap().expect("free");
    assert!(first.held());
    assert!(store.try_watch("INBOX of ana").unwrap().is_none());
    assert!(
        store.try_watch("INBOX of ben").unwrap().is_some(),
        "another mailbox is another lease"
    );
    drop(first);
    let mut second = store.try_watch("INBOX of ana").unwrap().expect("let go");
    assert_eq!(second.mailbox(), "INBOX of ana");

    // Its daemon dies (its connection cut): the lease is gone, and says so.
    let mut admin = Settings::new(&url, None, "").unwrap().connect().unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
             AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .unwrap();
    assert!(!second.held());
    assert!(store.try_watch("INBOX of ana").unwrap().is_some());
}

// The store API blocks: the daemon calls it inside `block_in_place`, as it calls sled; and
// the last handle may be dropped in async code (its connections close without blocking it).
#[test]
fn the_store_works_inside_block_in_place() {
    let store = store("block_in_place");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let found = runtime.block_on(async move {
        tokio::spawn(async move {
            tokio::task::block_in_place(|| {
                due_leads(&store, 2);
                store.claim_due(at(9), 10, Duration::from_secs(1)).unwrap()
            })
        })
        .await
        .unwrap()
    });
    assert_eq!(found.len(), 2);
}

// Migrations: applied once however many daemons open a new database together; a database of
// a newer nurture, or of something else, is refused and left as it is.
#[test]
fn migrations_run_once_and_a_newer_or_foreign_database_is_refused() {
    let url = cluster().database("migrations");
    let opening: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::open(&url, None).map(|_| ()))
        })
        .collect();
    for thread in opening {
        thread.join().unwrap().unwrap();
    }
    let mut client = Settings::new(&url, None, "").unwrap().connect().unwrap();
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM nurture_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, (1..=schema::VERSION).collect::<Vec<_>>());

    client
        .execute(
            "INSERT INTO nurture_migrations (version, name) VALUES ($1, 'from the future')",
            &[&(schema::VERSION + 1)],
        )
        .unwrap();
    let error = PgStore::open(&url, None).err().unwrap();
    assert!(matches!(error, PgError::Newer { .. }), "{error}");
    assert!(error.to_string().contains("upgrade nurture"), "{error}");

    let foreign = cluster().database("foreign");
    Settings::new(&foreign, None, "")
        .unwrap()
        .connect()
        .unwrap()
        .batch_execute("CREATE TABLE customers (id int)")
        .unwrap();
    let error = PgStore::open(&foreign, None).err().unwrap();
    assert!(matches!(error, PgError::Foreign { .. }), "{error}");
    assert!(error.to_string().contains("not a nurture store"), "{error}");
}

// The password comes from outside the URL and is never echoed; `sslmode=require` means TLS or
// no connection, never a quiet fall back to plain text.
#[test]
fn connection_settings_keep_the_password_out_and_tls_when_required() {
    let error = Settings::new("postgres://nurture:hunter2@127.0.0.1/db", None, "")
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("file or an environment variable"),
        "{error}"
    );
    assert!(!error.to_string().contains("hunter2"), "{error}");
    let error = Settings::new("postgres://127.0.0.1/db?sslmode=sometimes", None, "")
        .err()
        .unwrap();
    assert!(error.to_string().contains("not valid"), "{error}");

    // The test cluster offers no TLS.
    let url = format!("{}?sslmode=require", cluster().url("postgres"));
    let error = PgStore::open(&url, None).err().unwrap();
    assert!(matches!(error, PgError::Connect(_)), "{error}");
}

// A reply or a click handled by one daemon while another runs the lead's step: the handler
// waits for the step's batch, then reads and moves the enrollment as that batch left it; and
// while the handler holds the lead, no claimer takes its enrollments.
#[test]
fn a_hold_waits_for_the_claim_on_a_lead_and_keeps_claimers_off_until_let_go() {
    let url = cluster().database("hold");
    let stepping = PgStore::open(&url, None).unwrap().with_owner("stepping");
    let handling = PgStore::open(&url, None)
        .unwrap()
        .with_owner("handling")
        .with_lease(Duration::from_secs(30));
    due_leads(&stepping, 1);
    let claimed = stepping
        .claim_due(at(9), 1, Duration::from_secs(30))
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let email = claimed[0].1.clone();

    let held = {
        let handling = handling.clone();
        let email = email.clone();
        std::thread::spawn(move || {
            handling.hold(&[&email]).unwrap();
            handling.enrollment("drip", &email).unwrap().unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!held.is_finished(), "the hold waits while the step runs");
    stepping.apply(&step(&stepping, &claimed)).unwrap();
    let seen = held.join().unwrap();
    assert_eq!(seen.position.pc, 1, "the handler reads what the step wrote");

    // Held: a claimer does not take the enrollment, even once due again.
    let mut due_again = seen.clone();
    due_again.due = Some(at(8));
    handling
        .apply(&Batch {
            enrollments: vec![due_again],
            ..Batch::default()
        })
        .unwrap();
    handling.hold(&[&email]).unwrap();
    assert!(
        stepping
            .claim_due(at(9), 10, Duration::from_secs(30))
            .unwrap()
            .is_empty()
    );
    handling.let_go(&[&email]).unwrap();
    assert_eq!(
        stepping
            .claim_due(at(9), 10, Duration::from_secs(30))
            .unwrap(),
        vec![("drip".to_string(), email)]
    );
}

// Emails a daemon listed in flight are settled by another only once that daemon is gone.
#[test]
fn in_flight_marks_are_orphaned_only_when_their_daemon_is_gone() {
    let url = cluster().database("orphans");
    let alive = PgStore::open(&url, None).unwrap().with_owner("alive");
    let dead = PgStore::open(&url, None).unwrap().with_owner("dead");
    let leader = PgStore::open(&url, None).unwrap().with_owner("leader");
    let life = alive.hold_life().unwrap();
    let dying_life = dead.hold_life().unwrap();
    let email = |id: &str| OutboxEmail {
        message_id: format!("<{id}@example.test>"),
        workflow: "drip".into(),
        lead: "ana@example.com".into(),
        step: "welcome".into(),
        subject: "Hi".into(),
        envelope_from: "team@example.test".into(),
        envelope_to: "ana@example.com".into(),
        queued_at: at(9),
        not_before: at(9),
        attempts: 0,
        expires: None,
        eml: b"Subject: Hi\r\n\r\nHello\r\n".to_vec(),
    };
    for (store, id) in [(&alive, "a"), (&dead, "d")] {
        let mark = store.new_id().unwrap();
        store
            .apply(&Batch {
                in_flight_set: Some((mark, vec![email(id)])),
                ..Batch::default()
            })
            .unwrap();
    }
    assert!(
        leader.in_flight_orphaned().unwrap().is_empty(),
        "both alive"
    );
    drop(dying_life);
    let orphaned = leader.in_flight_orphaned().unwrap();
    assert_eq!(orphaned.len(), 1);
    assert_eq!(orphaned[0].1[0].message_id, "<d@example.test>");
    assert_eq!(
        leader.in_flight().unwrap().len(),
        2,
        "status still sees both"
    );
    drop(life);
}

#[test]
fn the_depths_are_counted_by_the_database_as_every_daemon_left_the_tables() {
    let url = cluster().database("depths");
    let one = PgStore::open(&url, None).unwrap().with_owner("one");
    let two = PgStore::open(&url, None).unwrap().with_owner("two");
    assert_eq!(one.depths(), None, "unknown before the first count");
    due_leads(&one, 5);
    // Another daemon's writes: a completed enrollment, one in another workflow that waits for
    // nothing, and an email held in the outbox.
    let mut completed = enrollment("done@example.test", None);
    completed.status = Status::Completed;
    let mut other = enrollment("other@example.test", None);
    other.workflow = "news".into();
    two.apply(&Batch {
        enrollments: vec![completed, other],
        outbox_put: vec![OutboxEmail {
            message_id: "<held@example.test>".into(),
            workflow: "drip".into(),
            lead: "lead00000@example.test".into(),
            step: "welcome".into(),
            subject: "Hi".into(),
            envelope_from: "team@example.test".into(),
            envelope_to: "lead00000@example.test".into(),
            queued_at: at(9),
            not_before: at(10),
            attempts: 1,
            expires: None,
            eml: b"Subject: Hi\r\n\r\nHello\r\n".to_vec(),
        }],
        ..Batch::default()
    })
    .unwrap();
    one.count_depths().unwrap();
    let depths = one.depths().unwrap();
    assert_eq!(
        depths.active,
        vec![("drip".to_string(), 5), ("news".to_string(), 1)]
    );
    assert_eq!(depths.due, 5);
    assert_eq!(depths.outbox, 1);
    // What the other daemon does next shows at the next count, not before.
    let claimed = two.claim_due(at(9), 2, Duration::from_secs(60)).unwrap();
    let mut batch = step(&two, &claimed);
    for enrollment in &mut batch.enrollments {
        enrollment.status = Status::Completed;
        enrollment.due = None;
    }
    two.apply(&batch).unwrap();
    assert_eq!(one.depths().unwrap().due, 5);
    one.count_depths().unwrap();
    let depths = one.depths().unwrap();
    assert_eq!(depths.due, 3);
    assert_eq!(depths.active[0], ("drip".to_string(), 3));
}
