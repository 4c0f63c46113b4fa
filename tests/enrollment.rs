//! Who gets enrolled: automatically when a lead arrives or changes, by hand with `nurture
//! enroll`, never when suppressed; and `nurture unenroll`.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use chrono::Utc;
use nurture::engine::{ExitReason, Status};
use nurture::lead::{Lead, Suppression, SuppressionReason};
use nurture::store::{DEFAULT_CACHE_BYTES, Store};

use crate::support::{scratch, seed};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn lead(email: &str, source: &str, tags: &[&str]) -> Lead {
    let mut lead = Lead::new(email.into(), Utc::now());
    lead.source = Some(source.into());
    lead.tags = tags.iter().map(|t| t.to_string()).collect();
    lead
}

fn nurture(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NURTURE_WORKFLOWS", format!("{REPO}/workflows"))
        .env("NURTURE_TEMPLATES", format!("{REPO}/templates"))
        // A Monday inside the trial workflow's send window, so first emails leave at once.
        .env("NURTURE_DAEMON_REHEARSAL_START", "2026-11-23T10:00:00Z")
        .output()
        .unwrap()
}

fn suppressed(mut lead: Lead) -> Lead {
    lead.suppression = Some(Suppression {
        reason: SuppressionReason::Unsubscribed,
        detail: "test".into(),
        at: Utc::now(),
    });
    lead
}

#[test]
fn the_daemon_enrolls_matching_leads_and_never_the_suppressed() {
    let dir = scratch("enroll-auto");
    seed(
        &dir,
        vec![
            lead("trial@example.test", "website-form", &["trial"]),
            lead("other@example.test", "conference", &[]),
            suppressed(lead("gone@example.test", "website-form", &["trial"])),
        ],
    );
    let run = nurture(&dir, &["run", "--until-idle"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let trial = store.enrollments_of("trial@example.test").unwrap();
    assert_eq!(trial.len(), 1);
    assert_eq!(trial[0].workflow, "trial-welcome");
    assert_eq!(
        trial[0].position.step, "welcome",
        "now waiting two days after the welcome"
    );
    assert!(trial[0].facts.sent.contains(&"welcome".to_string()));
    assert!(
        store
            .enrollments_of("other@example.test")
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .enrollments_of("gone@example.test")
            .unwrap()
            .is_empty()
    );
    assert!(
        store.changed(10).unwrap().is_empty(),
        "every changed lead was looked at"
    );
    let sent: Vec<_> = store.messages().map(Result::unwrap).collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].lead, "trial@example.test");
    assert_eq!(fs::read_dir(dir.join("outbox")).unwrap().count(), 1);
}

#[test]
fn enroll_and_unenroll_by_hand() {
    let dir = scratch("enroll-manual");
    seed(
        &dir,
        vec![
            lead("ana@example.test", "conference", &[]),
            suppressed(lead("gone@example.test", "conference", &[])),
        ],
    );
    // Both named; one is suppressed: the other is enrolled, and the exit code says not all were.
    let out = nurture(
        &dir,
        &[
            "enroll",
            "webinar-follow-up",
            "ana@EXAMPLE.test",
            "gone@example.test",
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gone@example.test: the address is suppressed"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("enrolled ana@example.test"));

    let again = nurture(&dir, &["enroll", "webinar-follow-up", "ana@example.test"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already enrolled"));

    let typo = nurture(&dir, &["enroll", "webinar-folow-up", "ana@example.test"]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("did you mean `webinar-follow-up`"));

    let out = nurture(&dir, &["unenroll", "webinar-follow-up", "ana@example.test"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let enrollment = store
        .enrollment("webinar-follow-up", "ana@example.test")
        .unwrap()
        .unwrap();
    assert_eq!(enrollment.status, Status::Exited(ExitReason::Manual));
    assert_eq!(store.next_due().unwrap(), None, "nothing left to send");
}

#[test]
fn a_recurring_workflow_enrolls_its_segment_at_the_slot() {
    let dir = scratch("enroll-recurring");
    let mut cold = lead("cold@example.test", "conference", &["cold"]);
    cold.timezone = Some("America/New_York".into());
    seed(
        &dir,
        vec![cold, lead("warm@example.test", "conference", &["warm"])],
    );
    // Sunday noon UTC; the slot is Monday 09:00 in New York (14:00 UTC). The rehearsal clock
    // only moves while the daemon sleeps, so the daemon sleeps until the slot.
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("run")
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .env("NURTURE_WORKFLOWS", format!("{REPO}/workflows"))
        .env("NURTURE_TEMPLATES", format!("{REPO}/templates"))
        .env("NURTURE_DAEMON_REHEARSAL_START", "2026-11-22T12:00:00Z")
        .env("NURTURE_DAEMON_REHEARSAL_SPEED", "1000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let outbox = dir.join("outbox");
    let started = std::time::Instant::now();
    while fs::read_dir(&outbox).map_or(0, |d| d.count()) == 0
        && started.elapsed() < std::time::Duration::from_secs(30)
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    assert!(daemon.wait().unwrap().success());

    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let enrollment = store
        .enrollment("re-engagement", "cold@example.test")
        .unwrap()
        .expect("the cold lead is in the segment");
    assert_eq!(
        enrollment.enrolled_at.to_rfc3339(),
        "2026-11-23T14:00:00+00:00"
    );
    assert!(
        store
            .enrollments_of("warm@example.test")
            .unwrap()
            .is_empty()
    );
    // Its first step waits until Tuesday 10:00 New York time, then sends.
    let sent: Vec<_> = store.messages().map(Result::unwrap).collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].workflow, "re-engagement");
    assert_eq!(sent[0].at.to_rfc3339(), "2026-11-24T15:00:00+00:00");
}
