//! `cargo bench --bench control`: sending while a big import runs through the daemon.
//!
//! 1. A store with a backlog of leads enrolled in the drip workflow and due now (so the daemon
//!    sends a steady stream), and a CSV of N new leads (default 1,000,000;
//!    `NURTURE_BENCH_LEADS` to change) whose source no workflow enrolls, so that the import
//!    adds no emails of its own to the stream being measured.
//! 2. The real daemon (`nurture run`, release, file transport) on that store: emails per
//!    second over `BASELINE` seconds with nothing else going on.
//! 3. `nurture leads import` of the CSV while it runs, through its control socket: emails per
//!    second during the import, beside the figure without it, and the ratio; and the import's
//!    own leads per second.
//!
//! Emails are counted as `.eml` files in the outbox folder, at the start and end of each
//! phase only (listing a folder of many thousand files costs time of its own).
//!
//! Target (issue 12): sending during the import at ≥ 50 % of the rate without it.

mod leads_csv;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;

mod support;

/// Seconds of sending measured without an import.
const BASELINE: Duration = Duration::from_secs(10);

fn main() {
    let leads: usize = std::env::var("NURTURE_BENCH_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // Enough due emails that the stream lasts through the baseline and the whole import.
    let backlog = 80_000 + leads * 7 / 10;
    let root = std::env::temp_dir().join(format!("nurture-bench-control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let (project, workflows, templates) = support::drip_project();

    let started = Instant::now();
    support::enrolled_store(&root.join("data"), &project, backlog, Utc::now());
    let csv = root.join("leads.csv");
    leads_csv::write(&csv, leads, "new");
    println!(
        "setup: {backlog} leads due now in the drip workflow, a CSV of {leads} new leads ({:.0} MB), in {:.1} s",
        std::fs::metadata(&csv).map_or(0, |m| m.len()) as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let outbox = root.join("outbox");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("run")
        .current_dir(&root)
        .env("NURTURE_WORKFLOWS", &workflows)
        .env("NURTURE_TEMPLATES", &templates)
        .env("NURTURE_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("daemon.log")).expect("log"))
        .spawn()
        .expect("nurture run");
    let waiting = Instant::now();
    while emails(&outbox) == 0 {
        if waiting.elapsed() > Duration::from_secs(60) {
            stop(&mut daemon);
            let log = std::fs::read_to_string(root.join("daemon.log")).unwrap_or_default();
            panic!("the daemon sent nothing in 60 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Past the start (the first batches warm the caches).
    std::thread::sleep(Duration::from_secs(2));

    let (sent, took) = measure(&outbox, || std::thread::sleep(BASELINE));
    let without = sent as f64 / took.as_secs_f64();
    println!(
        "without an import: {sent} emails in {:.1} s: {without:.0} emails/s",
        took.as_secs_f64()
    );

    let mut summary = String::new();
    let (sent, took) = measure(&outbox, || {
        let output = Command::new(env!("CARGO_BIN_EXE_nurture"))
            .args(["leads", "import"])
            .arg(&csv)
            .current_dir(&root)
            .output()
            .expect("nurture leads import");
        assert!(
            output.status.success(),
            "the import failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        summary = String::from_utf8_lossy(&output.stdout).trim().to_string();
    });
    let during = sent as f64 / took.as_secs_f64();
    assert!(
        summary.contains(&format!("{leads} created")),
        "unexpected summary: {summary}"
    );
    println!(
        "during the import: {sent} emails in {:.1} s: {during:.0} emails/s",
        took.as_secs_f64()
    );
    println!(
        "import through the daemon: {leads} leads in {:.1} s: {:.0} leads/s ({summary})",
        took.as_secs_f64(),
        leads as f64 / took.as_secs_f64()
    );
    let total = emails(&outbox);
    stop(&mut daemon);
    println!(
        "ratio: sending during the import at {:.0} % of the rate without it (target ≥ 50 %)",
        during / without * 100.0
    );
    if total >= backlog {
        println!("warning: the backlog ran out during the measure: the figures are too low");
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// Emails that left while `phase` ran, and how long it took.
fn measure(outbox: &Path, phase: impl FnOnce()) -> (usize, Duration) {
    let before = emails(outbox);
    let started = Instant::now();
    phase();
    let took = started.elapsed();
    (emails(outbox) - before, took)
}

fn emails(outbox: &Path) -> usize {
    std::fs::read_dir(outbox).map_or(0, |d| d.count())
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
