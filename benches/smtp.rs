//! `cargo bench --bench smtp`: the daemon's send path into SMTP servers on loopback.
//!
//! 1. Into Postfix's `smtp-sink` (accepts and discards), side by side with Postfix's own load
//!    generator `smtp-source` against the same sink, 4 sessions each, connections reused: the
//!    practical ceiling on this machine. The daemon's path is the whole of it: due enrollments
//!    run through the engine, rendered, committed, and handed to SMTP over 4 connections.
//! 2. Into the full Postfix → Dovecot chain (`tests/mailstack.sh`): emails accepted per second.
//!
//! Needs root, Postfix and Dovecot (`tests/run` installs them). Target (issue 4): the daemon at
//! ≥ 50 % of `smtp-source`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use nurture::config::Limits;
use nurture::config::SmtpConfig;
use nurture::daemon::pipeline::Pipeline;
use nurture::daemon::smtp::Smtp;
use nurture::daemon::throttle::Throttle;
use nurture::daemon::transport::Transport;
use nurture::project::Project;
use nurture::store::{OutboxEmail, Store, cache};

mod support;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SINK_PORT: u16 = 2599;
const CHAIN_SMTP_PORT: u16 = 2598;
const CHAIN_IMAP_PORT: u16 = 2198;
const SESSIONS: usize = 4;

fn main() {
    let emails: usize = std::env::var("NURTURE_BENCH_EMAILS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let root = std::env::temp_dir().join(format!("nurture-bench-smtp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let (project, _, _) = support::drip_project();

    // 1. smtp-sink: smtp-source first, then the daemon's path.
    let mut sink = Command::new("smtp-sink")
        .args([
            "-u",
            "postfix",
            "-c",
            &format!("127.0.0.1:{SINK_PORT}"),
            "1000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("smtp-sink (Postfix) is installed: run tests/run once");
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let status = Command::new("smtp-source")
        .args([
            "-s",
            &SESSIONS.to_string(),
            "-m",
            &emails.to_string(),
            "-l",
            "2000",
            "-d",
        ])
        .args(["-f", "bench@example.test", "-t", "lead@example.test"])
        .arg(format!("127.0.0.1:{SINK_PORT}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("smtp-source runs");
    assert!(status.success());
    let source_rate = emails as f64 / started.elapsed().as_secs_f64();
    println!(
        "smtp-source → smtp-sink: {emails} messages of 2 KB, {SESSIONS} sessions: {source_rate:.0} msg/s"
    );

    let alone = transport_alone(emails, SINK_PORT);
    println!(
        "nurture's SMTP transport → smtp-sink: {emails} composed emails of 2 KB, {SESSIONS} connections: {alone:.0} msg/s, {:.0} % of smtp-source",
        alone / source_rate * 100.0
    );
    let (rate, cpu) = daemon_path(&root.join("sink"), &project, emails, SINK_PORT);
    println!(
        "nurture → smtp-sink: {emails} due steps through the engine, {SESSIONS} connections: {rate:.0} msg/s, {:.0} % of smtp-source; {:.0} µs of CPU per email (all of this process's threads)",
        rate / source_rate * 100.0,
        cpu * 1e6
    );
    let _ = sink.kill();
    let _ = sink.wait();

    // 2. The full chain, into Dovecot mailboxes.
    let chain = 2_000.min(emails);
    let stack = Path::new("/tmp").join(format!("nbs-{}", std::process::id()));
    let users: Vec<String> = (0..chain).map(|i| format!("lead{i:07}")).collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mailstack.sh");
    let up = Command::new(&script)
        .arg("up")
        .arg(&stack)
        .args([CHAIN_SMTP_PORT.to_string(), CHAIN_IMAP_PORT.to_string()])
        .args(&users)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("tests/mailstack.sh runs");
    assert!(up.success(), "the mail system did not start");
    let (rate, _) = daemon_path(&root.join("chain"), &project, chain, CHAIN_SMTP_PORT);
    println!("nurture → Postfix → Dovecot: {chain} emails accepted at {rate:.0} msg/s");
    let _ = Command::new(&script)
        .arg("kill")
        .arg(&stack)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(&stack);
    let _ = std::fs::remove_dir_all(&root);
}

/// Messages per second for `count` ready emails (2 KB each, as smtp-source sends) handed to
/// the SMTP transport by `SESSIONS` workers: the send path without the engine before it.
fn transport_alone(count: usize, port: u16) -> f64 {
    let smtp = Smtp::new(SmtpConfig {
        url: format!("smtp://127.0.0.1:{port}"),
        connections: SESSIONS,
        ..SmtpConfig::default()
    })
    .expect("plain SMTP needs no set-up");
    let transport = Arc::new(Transport::Smtp(Box::new(smtp)));
    let body = "x".repeat(76) + "\r\n";
    let eml = format!(
        "From: <bench@example.test>\r\nTo: <lead@example.test>\r\nSubject: bench\r\n\r\n{}",
        body.repeat(2000 / body.len())
    );
    let email = |i: usize| OutboxEmail {
        message_id: format!("<{i}@example.test>"),
        workflow: "bench".into(),
        lead: "lead@example.test".into(),
        step: "one".into(),
        subject: "bench".into(),
        envelope_from: "bench@example.test".into(),
        envelope_to: "lead@example.test".into(),
        queued_at: Utc::now(),
        not_before: Utc::now(),
        attempts: 0,
        expires: None,
        eml: eml.clone().into_bytes(),
    };
    let emails: Vec<OutboxEmail> = (0..count).map(email).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    runtime.block_on(async {
        let emails = Arc::new(emails);
        let workers: Vec<_> = (0..SESSIONS)
            .map(|worker| {
                let transport = transport.clone();
                let emails = emails.clone();
                tokio::spawn(async move {
                    for email in emails.iter().skip(worker).step_by(SESSIONS) {
                        transport.send(email).await.expect("accepted");
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("worker");
        }
    });
    count as f64 / started.elapsed().as_secs_f64()
}

/// Messages per second for `count` due enrollments run and sent by the daemon's pipeline, and
/// the CPU seconds per email this process used meanwhile: on a shared machine the wall clock
/// moves with the load, the CPU an email costs much less.
fn daemon_path(dir: &Path, project: &Project, count: usize, port: u16) -> (f64, f64) {
    let data = dir.join("data");
    let now = Utc::now();
    support::enrolled_store(&data, project, count, now);
    // The cache the daemon would give this store.
    let store = Store::open(&data, cache::cache_bytes(0, &data)).expect("store");
    let smtp = Smtp::new(SmtpConfig {
        url: format!("smtp://127.0.0.1:{port}"),
        connections: SESSIONS,
        ..SmtpConfig::default()
    })
    .expect("plain SMTP needs no set-up");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut pipeline = Pipeline::new(
        store.clone(),
        Arc::new(Transport::Smtp(Box::new(smtp))),
        Throttle::new(Limits::default()),
        Arc::new(nurture::unsubscribe::Unsubscribe::preview("")),
    );
    let started = Instant::now();
    let cpu = cpu_seconds();
    let mut done = 0;
    while done < count {
        done += runtime
            .block_on(pipeline.run_due(project, now, 256))
            .expect("run");
    }
    runtime.block_on(pipeline.finish()).expect("send");
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu;
    let sent = store.messages().count();
    assert_eq!(sent, count, "every email was accepted");
    (count as f64 / elapsed.as_secs_f64(), cpu / count as f64)
}

/// The CPU time (user and system, every thread) this process has used, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, in clock ticks of 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}
