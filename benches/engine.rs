//! `cargo bench --bench engine`: the daemon at a million leads.
//!
//! 1. Builds a store of N leads (default 1,000,000; `NURTURE_BENCH_LEADS` to change), each
//!    enrolled in a 3-step drip workflow and due now.
//! 2. Engine throughput: due steps executed per second through the daemon's own scheduler
//!    (read, `advance`, render subject + HTML + text, MIME, one store transaction with the
//!    in-flight mark, a flush) and sender (null transport, sent record and journal line), over
//!    `STEPS` steps. The same with the store's batches not keeping the `status` counters, in
//!    rounds taken in turn with the others, and the ratio: what keeping the counters costs.
//!    And the same steps with click and open tracking on (`track clicks and opens`: every link
//!    rewritten to a signed token, the open image, the links kept with the email), in the same
//!    rounds, and the ratio. Target (issue 13): tracking costs ≤ 10 % of the steps/s.
//!    Beside it, in the same run, the raw cost of one handlebars render plus one sled insert,
//!    and the ratio; and, in the same rounds, the store's part of a step alone: the same due
//!    entries read, their enrollments and leads read, `advance` run, and the two batches a step
//!    commits (the enrollment and its due entry; the sent record and the journal line) written
//!    and flushed, with no rendering, MIME or transport. What that costs bounds the steps/s any
//!    engine on this store can reach. And the least sled work a step can cost in any layout
//!    (one leaf a step: a scratch database of one record per lead, read cold, written back, its
//!    due entry moved, a sent record; one transaction per chunk, flushed).
//! 3. The real daemon (`nurture run`, release) on that store: time from start to the first
//!    email in the outbox folder, its resident memory while it works through the backlog, and
//!    its CPU use when idle.
//!
//! `NURTURE_BENCH_KEEP=1` keeps the store (its folder is printed) for a closer look.
//!
//! Targets (issue 3): ≥ 20,000 steps/s; first email ≤ 2 s after a restart; ≤ 300 MB RSS;
//! ~0 CPU idle. Issue 14: the counters cost ≤ 5 % of the steps/s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Duration as Span, Utc};
use nurture::config::Limits;
use nurture::daemon::pipeline::Pipeline;
use nurture::daemon::throttle::Throttle;
use nurture::daemon::transport::Transport;
use nurture::engine::{self, Input};
use nurture::lead::Lead;
use nurture::project::Project;
use nurture::store::{Batch, DEFAULT_CACHE_BYTES, EventKind, MessageRecord, MessageState, Store};

// The allocator the `nurture` binary uses (sled allocates a lot: glibc's malloc halves the
// throughput measured here).
mod support;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Due steps measured in all, in `ROUNDS` rounds.
const STEPS: usize = 100_000;
/// A multiple of the four kinds of rounds, so that each kind runs as often in each place.
const ROUNDS: usize = 8;
const CHUNK: usize = 256;

fn main() {
    let leads: usize = std::env::var("NURTURE_BENCH_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let root = std::env::temp_dir().join(format!("nurture-bench-engine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let (project, workflows, templates) = support::drip_project();

    // 1. The store.
    let data = root.join("data");
    let now = Utc::now();
    let started = Instant::now();
    support::enrolled_store(&data, &project, leads, now);
    {
        let store = Store::open(&data, DEFAULT_CACHE_BYTES).expect("store");
        println!(
            "store: {leads} leads enrolled in {:.1} s, {:.0} MB on disk",
            started.elapsed().as_secs_f64(),
            store.size_on_disk().unwrap_or(0) as f64 / 1e6
        );
    }

    // 2. Engine throughput, then the raw baseline, in the same process.
    let store = Store::open(&data, DEFAULT_CACHE_BYTES).expect("store");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Half at most, all kinds of rounds together: the daemon figures below need a backlog
    // still due. Untracked, uncounted, tracked and store-only rounds take an eighth of the
    // leads each at most.
    let steps = STEPS.min(leads / 8) / ROUNDS;
    let pipeline = |store: Store, base_url: &str| {
        Pipeline::new(
            store,
            std::sync::Arc::new(Transport::Null),
            Throttle::new(Limits::default()),
            std::sync::Arc::new(nurture::unsubscribe::Unsubscribe::preview(base_url)),
        )
    };
    let mut counting = pipeline(store.clone(), "");
    let mut not_counting = pipeline(store.clone().without_counters_for_benchmark(), "");
    // The same workflow, tracked, with a public address to report to.
    let tracked_project = tracked_drip_project();
    let mut tracked = pipeline(store.clone(), "https://nurture.example.test");
    let (mut rounds, mut rounds_without, mut tracked_rounds) = (Vec::new(), Vec::new(), Vec::new());
    let mut store_rounds = Vec::new();
    // In turn, so that whatever else the machine does weighs on all alike, and in a rotating
    // order: a round pays for some of the sled work (flushes, segment cleaning) that the round
    // before it left, so a kind always run second or third would look slower than it is.
    for round in 0..ROUNDS {
        let mut kinds = [
            Some((&mut counting, &project, &mut rounds)),
            Some((&mut not_counting, &project, &mut rounds_without)),
            Some((&mut tracked, &tracked_project, &mut tracked_rounds)),
            None,
        ];
        kinds.rotate_left(round % 4);
        for kind in kinds {
            let started = Instant::now();
            match kind {
                Some((pipeline, project, rounds)) => {
                    let mut done = 0;
                    while done < steps {
                        let limit = CHUNK.min(steps - done);
                        done += runtime
                            .block_on(pipeline.run_due(project, now, limit))
                            .expect("run");
                    }
                    runtime.block_on(pipeline.finish()).expect("send");
                    rounds.push(started.elapsed());
                }
                None => {
                    store_part_of_steps(&store, &project, now, steps);
                    store_rounds.push(started.elapsed());
                }
            }
        }
    }
    tracked_rounds.sort();
    rounds.sort();
    rounds_without.sort();
    let median = rounds[ROUNDS / 2];
    let per_step = median.as_secs_f64() / steps as f64;
    println!(
        "engine: {ROUNDS} rounds of {steps} due steps; median {:.3} s (min {:.3}, max {:.3}): {:.0} steps/s, {:.1} µs per step (read, advance, render, MIME, transactions, flush, sent record)",
        median.as_secs_f64(),
        rounds[0].as_secs_f64(),
        rounds[ROUNDS - 1].as_secs_f64(),
        1.0 / per_step,
        per_step * 1e6
    );
    let median_without = rounds_without[ROUNDS / 2];
    let steps_per_s = steps as f64 / median.as_secs_f64();
    let steps_per_s_without = steps as f64 / median_without.as_secs_f64();
    println!(
        "engine without the status counters: {ROUNDS} rounds in turn with those above; median {:.3} s (min {:.3}, max {:.3}): {steps_per_s_without:.0} steps/s; with the counters {:.1}% of that ({:.1}% slower)",
        median_without.as_secs_f64(),
        rounds_without[0].as_secs_f64(),
        rounds_without[ROUNDS - 1].as_secs_f64(),
        steps_per_s / steps_per_s_without * 100.0,
        (1.0 - steps_per_s / steps_per_s_without) * 100.0
    );

    let tracked_median = tracked_rounds[ROUNDS / 2];
    println!(
        "engine, tracked (links rewritten, open image, links kept): median {:.3} s: {:.0} steps/s, {:.1}% fewer than untracked in the same run",
        tracked_median.as_secs_f64(),
        steps as f64 / tracked_median.as_secs_f64(),
        (1.0 - median.as_secs_f64() / tracked_median.as_secs_f64()) * 100.0
    );
    drop(tracked);

    store_rounds.sort();
    let store_median = store_rounds[ROUNDS / 2];
    println!(
        "the store's part of a step alone (due entry, enrollment and lead read, advance, the two batches written, flushed; no rendering, MIME or transport), in the same rounds: median {:.3} s: {:.0} steps/s, {:.1} µs per step, {:.0}% of an engine step",
        store_median.as_secs_f64(),
        steps as f64 / store_median.as_secs_f64(),
        store_median.as_secs_f64() / steps as f64 * 1e6,
        store_median.as_secs_f64() / median.as_secs_f64() * 100.0
    );

    let raw = raw_render_and_insert(&project, &root.join("raw"));
    println!(
        "raw: one handlebars render (HTML + text) plus one sled insert: {:.1} µs; an engine step costs {:.1} of them",
        raw * 1e6,
        per_step / raw
    );
    drop(counting);
    drop(not_counting);
    drop(store);

    let (one, two) = one_leaf_floor(&root.join("floor"), leads, steps);
    println!(
        "sled alone, one leaf a step (the best layout: a lead, its enrollment and journal under one key, read cold and written back, its due entry moved, a sent record; {CHUNK} a transaction, flushed; no engine): one thread {:.0} steps/s ({:.1} µs per step), two threads together {:.0} steps/s",
        1.0 / one,
        one * 1e6,
        1.0 / two
    );

    // 3. The daemon on the same store (the remaining leads are still due now).
    daemon_figures(&root, &workflows, &templates);
    if std::env::var_os("NURTURE_BENCH_KEEP").is_some() {
        println!("kept: {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// The benchmark workflow with `track clicks and opens` (`benches/fixtures/workflows-tracked`),
/// named `drip` too, so the same enrollments run under it.
fn tracked_drip_project() -> Project {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures");
    let project = Project::load(
        &[fixtures.join("workflows-tracked")],
        &fixtures.join("templates"),
    );
    assert!(
        project.diagnostics.is_empty(),
        "{}",
        project.render_diagnostics()
    );
    project
}

/// Runs `steps` due steps of the drip workflow as the store sees them: what the scheduler reads
/// and the two batches a sent step commits (the planning one, then the sender's), each chunk
/// flushed, in one thread, with nothing rendered or sent.
fn store_part_of_steps(store: &Store, project: &Project, now: DateTime<Utc>, steps: usize) {
    let drip = project.workflow("drip").expect("drip");
    let mut done = 0;
    while done < steps {
        let due = store.take_due(now, CHUNK.min(steps - done)).expect("due");
        assert!(!due.is_empty(), "the store ran out of due steps");
        let (mut planned, mut sent) = (Batch::default(), Batch::default());
        for (workflow, email) in &due {
            let enrollment = store
                .enrollment(workflow, email)
                .expect("read")
                .expect("enrollment");
            let lead = store.lead(email).expect("read").expect("lead");
            let outcome = engine::advance(drip, &enrollment, &lead, &Input::Due, now);
            let message_id = format!("<{}.bench@example.test>", store.new_id().expect("id"));
            sent.messages.push(MessageRecord {
                message_id: message_id.clone(),
                workflow: workflow.clone(),
                lead: email.clone(),
                sender: "news@example.test".into(),
                step: enrollment.position.step.clone(),
                subject: "A note".into(),
                state: MessageState::Sent,
                queued_at: now,
                at: now,
            });
            sent.event(
                email,
                now,
                Some(workflow),
                EventKind::Sent {
                    message_id,
                    step: enrollment.position.step.clone(),
                },
            );
            planned.enrollments.push(outcome.enrollment);
        }
        store.apply(&planned).expect("planning batch");
        store.flush().expect("flush");
        store.apply(&sent).expect("sender batch");
        done += due.len();
    }
    store.flush().expect("flush");
}

/// Seconds per step for the least sled work a due step can cost, in a scratch database of
/// `leads` records shaped like the store's (a 700-byte record per lead: the lead, its
/// enrollment and its journal together, due at scattered instants): read the due front, read
/// each record (cold, at random, as in the store), and commit in one transaction per chunk the
/// record written back, the due entry moved and a sent record, then flush. Seconds per step,
/// median of three rounds of `steps`, with one thread and with two sharing the due front.
fn one_leaf_floor(path: &Path, leads: usize, steps: usize) -> (f64, f64) {
    use sled::Transactional;
    use sled::transaction::ConflictableTransactionError;

    let open = || {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(DEFAULT_CACHE_BYTES)
            .open()
            .expect("sled");
        let trees = ["records", "due", "sent"].map(|name| db.open_tree(name).expect("tree"));
        (db, trees)
    };
    let (db, [records, due, sent]) = open();
    let key = |i: usize| format!("lead{i:07}@example.test").into_bytes();
    let due_key = |at: u64, lead: &[u8]| [&at.to_be_bytes()[..], lead].concat();
    for first in (0..leads).step_by(10_000) {
        let (mut put, mut queue) = (sled::Batch::default(), sled::Batch::default());
        for i in first..(first + 10_000).min(leads) {
            put.insert(key(i), vec![b'r'; 700]);
            let scatter = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) % 3_600_000;
            queue.insert(due_key(1 << 40 | scatter, &key(i)), &[]);
        }
        records.apply_batch(put).expect("records");
        due.apply_batch(queue).expect("due");
    }
    db.flush().expect("flush");
    // Reopened, as a daemon starting on it: the records are on disk, not in the cache.
    drop((records, due, sent, db));
    let (db, [records, due, sent]) = open();
    // `steps` steps by one thread, of the leads whose address ends in a digit `share` modulo
    // `of`: with `of` threads, each takes its own due entries from the same front.
    let run = |share: u8, of: u8, steps: usize, first_message: u64| {
        let mut message = first_message;
        let mut done = 0;
        while done < steps {
            let read: Vec<(sled::IVec, sled::IVec, sled::IVec)> = due
                .range(..due_key(2 << 40, b""))
                .keys()
                .map(|entry| entry.expect("due"))
                .filter(|entry| entry[8 + 10] % of == share)
                .take(CHUNK.min(steps - done))
                .map(|entry| {
                    let lead = sled::IVec::from(&entry[8..]);
                    let record = records.get(&lead).expect("read").expect("record");
                    (entry, lead, record)
                })
                .collect();
            (&records, &due, &sent)
                .transaction(|(records, due, sent)| {
                    for (i, (entry, lead, record)) in read.iter().enumerate() {
                        records.insert(lead, record)?;
                        due.remove(entry)?;
                        due.insert(due_key(3 << 40, lead), &[])?;
                        sent.insert(&(message + i as u64).to_be_bytes(), &[b's'; 150][..])?;
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .expect("commit");
            message += read.len() as u64;
            db.flush().expect("flush");
            done += read.len();
        }
    };
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for round in 0..3u64 {
        let started = Instant::now();
        run(0, 1, steps, round << 40);
        one.push(started.elapsed().as_secs_f64() / steps as f64);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for share in 0..2u8 {
                let run = &run;
                scope.spawn(move || {
                    run(
                        share,
                        2,
                        steps / 2,
                        (round << 40) | (u64::from(share) + 1) << 32,
                    )
                });
            }
        });
        two.push(started.elapsed().as_secs_f64() / (steps / 2 * 2) as f64);
    }
    one.sort_by(f64::total_cmp);
    two.sort_by(f64::total_cmp);
    let median = (one[1], two[1]);
    drop((records, due, sent, db));
    let _ = std::fs::remove_dir_all(path);
    median
}

/// Seconds for one render of the benchmark template plus one insert of the result.
fn raw_render_and_insert(project: &Project, path: &Path) -> f64 {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(DEFAULT_CACHE_BYTES)
        .open()
        .expect("sled");
    let tree = db.open_tree("raw").expect("tree");
    let lead = Lead::new("raw@example.test".into(), Utc::now());
    let workflow = project.workflow("drip").expect("drip");
    let context = nurture::mail::context(&lead, workflow, "one", "mailto:x@example.test");
    let rounds = 50_000;
    let started = Instant::now();
    for i in 0..rounds {
        let body = project.templates.render("note", &context).expect("render");
        tree.insert(format!("key{i:08}"), body.html.as_bytes())
            .expect("insert");
    }
    started.elapsed().as_secs_f64() / rounds as f64
}

fn daemon_figures(root: &Path, workflows: &Path, templates: &Path) {
    let outbox = root.join("outbox");
    let start = |log: &str| -> Child {
        Command::new(env!("CARGO_BIN_EXE_nurture"))
            .arg("run")
            .current_dir(root)
            .env("NURTURE_WORKFLOWS", workflows)
            .env("NURTURE_TEMPLATES", templates)
            .env("NURTURE_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join(log)).expect("log"))
            .spawn()
            .expect("nurture run")
    };
    let emails = |dir: &PathBuf| std::fs::read_dir(dir).map_or(0, |d| d.count());

    let started = Instant::now();
    let mut daemon = start("daemon.log");
    while emails(&outbox) == 0 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    if emails(&outbox) == 0 {
        let log = std::fs::read_to_string(root.join("daemon.log")).unwrap_or_default();
        panic!("the daemon sent nothing in 60 s:\n{log}");
    }
    println!(
        "daemon: first email {:.2} s after start, with the store above",
        started.elapsed().as_secs_f64()
    );
    let mut peak = 0;
    let busy = Instant::now();
    while busy.elapsed() < Duration::from_secs(10) {
        peak = peak.max(rss_kb(daemon.id()));
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "daemon: {} emails sent in the first 10 s; peak RSS {:.0} MB",
        emails(&outbox),
        peak as f64 / 1024.0
    );
    stop(&mut daemon);

    // Idle: the same store with nothing due for a day (a fresh store with one lead).
    let idle_root = root.join("idle");
    std::fs::create_dir_all(&idle_root).expect("idle dir");
    {
        let store = Store::open(&idle_root.join("data"), DEFAULT_CACHE_BYTES).expect("store");
        let project = Project::load(&[workflows.to_path_buf()], templates);
        let drip = project.workflow("drip").expect("drip");
        let lead = Lead::new("idle@example.test".into(), Utc::now());
        let mut enrollment = engine::enroll(drip, &lead, Utc::now());
        enrollment.due = Some(Utc::now() + Span::days(1));
        let batch = Batch {
            leads: vec![lead],
            enrollments: vec![enrollment],
            ..Batch::default()
        };
        store.apply(&batch).expect("apply");
        store.flush().expect("flush");
    }
    let mut idle = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("run")
        .current_dir(&idle_root)
        .env("NURTURE_WORKFLOWS", workflows)
        .env("NURTURE_TEMPLATES", templates)
        .env("NURTURE_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nurture run");
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_ticks(idle.id());
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_ticks(idle.id()) - before;
    println!(
        "daemon idle: {used} clock ticks of CPU in 10 s ({:.2}% of one core)",
        used as f64 / 100.0 / 10.0 * 100.0
    );
    stop(&mut idle);
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}
