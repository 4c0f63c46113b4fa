//! `cargo bench --bench store`: due steps per second through the store alone, on PostgreSQL
//! (one daemon, then two sharing the database) and on sled, in the same run.
//!
//! 1. Builds the same store on both: N leads (default 1,000,000; `NURTURE_BENCH_LEADS` to
//!    change), each enrolled and due within the hour before now, at scattered instants (the due
//!    order is not the address order).
//! 2. One due step, as the daemon makes it, without the engine and the rendering: take the due
//!    work (sled: `due`; PostgreSQL: `claim_due`, a lease), read each enrollment with its lead,
//!    apply the step batch (the enrollment moved on, a journal line, the email into the outbox
//!    with its 2 KB of MIME, the in-flight mark) and then the sent batch (out of the outbox,
//!    the message record, a journal line, the mark cleared), `CHUNK` enrollments a batch. sled
//!    flushes after each batch, as the daemon does; PostgreSQL commits durably (fsync and
//!    synchronous commit on: its defaults).
//! 3. Prints steps/s for each (median of `ROUNDS` rounds), two PostgreSQL daemons in parallel
//!    (each its own pool and owner, summed), and the ratios to sled.
//!
//! The PostgreSQL server is a private cluster started by `tests/pgcluster.sh` on 127.0.0.1,
//! on the same machine (its CPU shared with the benchmark).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Span, Utc};
use nurture::engine::{Enrollment, Facts, Position, Status};
use nurture::lead::Lead;
use nurture::store::postgres::PgStore;
use nurture::store::{
    Batch, DEFAULT_CACHE_BYTES, EventKind, MessageRecord, MessageState, OutboxEmail, Store,
};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHUNK: usize = 256;
const ROUNDS: usize = 5;
/// Steps per round (per daemon), at most: fewer when the store is too small for every round to
/// find due work.
const STEPS: usize = 10_240;
const LEASE: Duration = Duration::from_secs(300);

fn main() {
    let leads: usize = std::env::var("NURTURE_BENCH_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // Each round takes three rounds' worth from PostgreSQL (one daemon, then two).
    let steps = STEPS.min(leads / (3 * ROUNDS) / CHUNK * CHUNK);
    assert!(steps > 0, "NURTURE_BENCH_LEADS is too small");
    let root = std::env::temp_dir().join(format!("nurture-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let now = Utc::now();
    let eml = vec![b'x'; 2048];

    // 1. The stores.
    let url = start_postgres();
    let pg = PgStore::open(&url, None).expect("the PostgreSQL store");
    let started = Instant::now();
    fill(
        |batch| pg.apply(batch).map_err(|e| e.to_string()),
        leads,
        now,
    );
    println!(
        "postgres: {leads} leads enrolled in {:.1} s, {:.0} MB on disk",
        started.elapsed().as_secs_f64(),
        pg.size_on_disk().unwrap_or(0) as f64 / 1e6
    );
    let sled = Store::open(&root.join("data"), DEFAULT_CACHE_BYTES).expect("the sled store");
    let started = Instant::now();
    fill(
        |batch| sled.apply(batch).map_err(|e| e.to_string()),
        leads,
        now,
    );
    sled.flush().expect("flush");
    println!(
        "sled: {leads} leads enrolled in {:.1} s, {:.0} MB on disk",
        started.elapsed().as_secs_f64(),
        sled.size_on_disk().unwrap_or(0) as f64 / 1e6
    );

    // 2. The rounds, interleaved so that both see the same machine.
    let (mut on_sled, mut one_pg, mut two_pg) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let started = Instant::now();
        sled_steps(&sled, now, &eml, steps);
        on_sled.push(steps as f64 / started.elapsed().as_secs_f64());

        let started = Instant::now();
        pg_steps(&pg, now, &eml, steps);
        one_pg.push(steps as f64 / started.elapsed().as_secs_f64());

        let started = Instant::now();
        std::thread::scope(|scope| {
            for daemon in 0..2 {
                let url = &url;
                let eml = &eml;
                scope.spawn(move || {
                    let store = PgStore::open(url, None)
                        .expect("store")
                        .with_owner(&format!("daemon {daemon}"));
                    pg_steps(&store, now, eml, steps);
                });
            }
        });
        two_pg.push(2.0 * steps as f64 / started.elapsed().as_secs_f64());
    }
    let (sled_rate, one, two) = (median(on_sled), median(one_pg), median(two_pg));
    println!(
        "due steps/s at {leads} leads, {CHUNK} a batch, median of {ROUNDS} rounds of {steps}:"
    );
    println!("  sled (due, reads, 2 batches + 2 flushes):          {sled_rate:>8.0}");
    println!(
        "  postgres, 1 daemon (claim, 1 read, 2 commits):     {one:>8.0}  ({:.2} × sled)",
        one / sled_rate
    );
    println!(
        "  postgres, 2 daemons sharing the queue (together):  {two:>8.0}  ({:.2} × sled, {:.2} × 1 daemon)",
        two / sled_rate,
        two / one
    );
    drop(sled);
    let _ = std::fs::remove_dir_all(&root);
}

/// A private PostgreSQL with its durable defaults, stopped when this process ends; its URL.
fn start_postgres() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = format!("/tmp/npg-bench-{}", std::process::id());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pgcluster.sh");
    let output = Command::new(script)
        .args([
            "start",
            &dir,
            &port.to_string(),
            &std::process::id().to_string(),
        ])
        .env("NURTURE_PG_DURABLE", "1")
        .output()
        .expect("tests/pgcluster.sh runs");
    assert!(
        output.status.success(),
        "PostgreSQL did not start (tests/run installs it):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut admin = postgres::Client::connect(
        &format!("postgres://nurture@127.0.0.1:{port}/postgres"),
        postgres::NoTls,
    )
    .expect("PostgreSQL answers");
    admin
        .batch_execute("CREATE DATABASE bench")
        .expect("the bench database");
    format!("postgres://nurture@127.0.0.1:{port}/bench")
}

/// Writes `leads` enrolled leads, due within the hour before `now`, 10,000 a batch.
fn fill(apply: impl Fn(&Batch) -> Result<(), String>, leads: usize, now: DateTime<Utc>) {
    for first in (0..leads).step_by(10_000) {
        let mut batch = Batch::default();
        for i in first..(first + 10_000).min(leads) {
            let email = format!("lead{i:07}@example.test");
            let mut lead = Lead::new(email.clone(), now);
            lead.first_name = Some(format!("Name{i}"));
            lead.company = (i % 3 == 0).then(|| format!("Company {i}"));
            lead.source = Some("bench".into());
            let scatter = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) % 3_600_000;
            batch.enrollments.push(Enrollment {
                workflow: "drip".into(),
                version: "v1".into(),
                lead: email,
                status: Status::Active,
                position: Position::new("welcome", 0),
                due: Some(now - Span::milliseconds(scatter as i64)),
                enrolled_at: now,
                updated_at: now,
                deferred_from: None,
                facts: Facts::default(),
            });
            batch.leads.push(lead);
        }
        apply(&batch).expect("apply");
    }
}

/// The two batches of one chunk of steps: the step (enrollment moved, email queued, in flight)
/// and the outcome (sent).
fn step_batches(
    stepped: Vec<(Enrollment, Option<Lead>)>,
    now: DateTime<Utc>,
    mark: u64,
    eml: &[u8],
) -> (Batch, Batch) {
    let (mut step, mut sent) = (Batch::default(), Batch::default());
    let mut emails = Vec::with_capacity(stepped.len());
    for (mut enrollment, lead) in stepped {
        let lead = lead.expect("every enrollment has its lead");
        let message_id = format!("<{mark}.{}@bench>", enrollment.lead);
        let email = OutboxEmail {
            message_id: message_id.clone(),
            workflow: enrollment.workflow.clone(),
            lead: lead.email.clone(),
            step: "welcome".into(),
            subject: "Welcome".into(),
            envelope_from: "team@example.test".into(),
            envelope_to: lead.email.clone(),
            queued_at: now,
            not_before: now,
            attempts: 0,
            expires: None,
            eml: eml.to_vec(),
        };
        step.event(
            &lead.email,
            now,
            Some(&enrollment.workflow),
            EventKind::Queued {
                message_id: message_id.clone(),
                step: "welcome".into(),
                subject: "Welcome".into(),
            },
        );
        sent.event(
            &lead.email,
            now,
            Some(&enrollment.workflow),
            EventKind::Sent {
                message_id: message_id.clone(),
                step: "welcome".into(),
            },
        );
        sent.outbox_remove.push((now, message_id.clone()));
        sent.messages.push(MessageRecord {
            message_id,
            workflow: enrollment.workflow.clone(),
            lead: lead.email.clone(),
            sender: "team@example.test".into(),
            step: "welcome".into(),
            subject: "Welcome".into(),
            state: MessageState::Sent,
            queued_at: now,
            at: now,
        });
        enrollment.position.pc += 1;
        enrollment.due = Some(now + Span::days(3));
        enrollment.facts.sent.push("welcome".into());
        step.enrollments.push(enrollment);
        emails.push(email);
    }
    step.outbox_put = emails.clone();
    step.in_flight_set = Some((mark, emails));
    sent.in_flight_clear.push(mark);
    (step, sent)
}

fn sled_steps(store: &Store, now: DateTime<Utc>, eml: &[u8], steps: usize) {
    let mut done = 0;
    while done < steps {
        let due = store.due(now, CHUNK.min(steps - done)).expect("due");
        assert!(!due.is_empty(), "due work left");
        let stepped = due
            .iter()
            .map(|(workflow, email)| {
                let enrollment = store
                    .enrollment(workflow, email)
                    .expect("read")
                    .expect("it");
                (enrollment, store.lead(email).expect("read"))
            })
            .collect::<Vec<_>>();
        done += stepped.len();
        let (step, sent) = step_batches(stepped, now, store.new_id().expect("id"), eml);
        store.apply(&step).expect("step");
        store.flush().expect("flush");
        store.apply(&sent).expect("sent");
        store.flush().expect("flush");
    }
}

fn pg_steps(store: &PgStore, now: DateTime<Utc>, eml: &[u8], steps: usize) {
    let mut done = 0;
    while done < steps {
        let claimed = store
            .claim_due(now, CHUNK.min(steps - done), LEASE)
            .expect("claim");
        assert!(!claimed.is_empty(), "due work left");
        let stepped = store.enrollments_with_leads(&claimed).expect("read");
        done += stepped.len();
        let (step, sent) = step_batches(stepped, now, store.new_id().expect("id"), eml);
        store.apply(&step).expect("step");
        store.apply(&sent).expect("sent");
    }
}

fn median(mut figures: Vec<f64>) -> f64 {
    figures.sort_by(f64::total_cmp);
    figures[figures.len() / 2]
}
