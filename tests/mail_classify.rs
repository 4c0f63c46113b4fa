//! `nurture mail classify`: the real binary on messages of the corpus, its text and JSON
//! compared with golden files (`tests/fixtures/mail_classify/NAME.txt|json`; a mismatch writes
//! `NAME.actual.txt|json` beside them). With a store: which lead and workflow, and what would
//! happen; a store held by another process is not waited for.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use chrono::{Duration, Utc};
use nurture::lead::Lead;
use nurture::store::{
    Batch, DEFAULT_CACHE_BYTES, Event, EventKind, MessageRecord, MessageState, Store,
};

use crate::support::scratch;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/classify");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mail_classify");

/// `nurture mail classify ARGS` run in the corpus folder (file names print as given), with the
/// store in `store` and `stdin` on standard input.
fn classify(store: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .args(["mail", "classify"])
        .args(args)
        .current_dir(CORPUS)
        .env("NURTURE_STORE_PATH", store)
        .env_remove("NURTURE_CONFIG")
        .env_remove("NURTURE_HTTP_SECRET_ENV");
    match stdin {
        Some(file) => command.stdin(fs::File::open(Path::new(CORPUS).join(file)).unwrap()),
        None => command.stdin(std::process::Stdio::null()),
    };
    command.output().unwrap()
}

fn golden(name: &str, output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let actual = String::from_utf8_lossy(&output.stdout);
    let path = Path::new(GOLDEN).join(name);
    let expected = fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        let extension = path.extension().unwrap().to_string_lossy().into_owned();
        fs::write(path.with_extension(format!("actual.{extension}")), &*actual).unwrap();
        panic!("{name} differs (see the .actual file beside it):\n{actual}");
    }
}

/// One of each kind, the last from standard input.
const MIXED: [&str; 8] = [
    "bounce-postfix-dsn-5.1.1.eml",
    "bounce-postfix-blocked-dnsbl.eml",
    "bounce-gmail-delay-rate-4.2.1.eml",
    "ooo-german.eml",
    "reply-german.eml",
    "unrelated-dsn-delivered-to-mailbox.eml",
    "unsubscribe-reply-stop.eml",
    "-",
];

#[test]
fn each_kind_says_why_in_text_and_json_without_a_store() {
    let dir = scratch("mail-classify-nostore");
    let store = dir.join("no-store-here");
    golden(
        "mixed.txt",
        &classify(&store, &MIXED, Some("complaint-arf-yahoo.eml")),
    );
    let mut args = MIXED.to_vec();
    args.extend(["--format", "json"]);
    golden(
        "mixed.json",
        &classify(&store, &args, Some("complaint-arf-yahoo.eml")),
    );
    assert!(!store.exists(), "no store is made when there is none");
    let _ = fs::remove_dir_all(&dir);
}

fn message(id: &str, lead: &str) -> MessageRecord {
    MessageRecord {
        message_id: format!("<{id}>"),
        workflow: "trial-welcome".into(),
        lead: lead.into(),
        sender: "ana@example.test".into(),
        step: "welcome".into(),
        subject: "Welcome to your Acme Analytics trial".into(),
        state: MessageState::Sent,
        queued_at: Utc::now() - Duration::days(2),
        at: Utc::now() - Duration::days(2),
    }
}

fn soft_bounce(days_ago: i64) -> Event {
    Event {
        at: Utc::now() - Duration::days(days_ago),
        workflow: Some("trial-welcome".into()),
        kind: EventKind::Received {
            what: "soft bounce (5.2.2): mailbox full".into(),
        },
    }
}

/// Leads the corpus messages name, with our emails to them, and two soft bounces of one.
fn store_with_leads(dir: &Path, earlier_soft_bounces: &[i64]) {
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let mut batch = Batch::default();
    for email in [
        "ghost@example.test",
        "lee@retail.example",
        "ben@yahoo.example",
        "sam@hosting.example",
    ] {
        batch.leads.push(Lead::new(email.into(), Utc::now()));
    }
    batch.messages.push(message(
        "00000000001e8481.a929de54fd6a3c3e755fd513d2c05d2a.nurture@example.test",
        "ghost@example.test",
    ));
    batch.messages.push(message(
        "00000000000001c0.5f0c2a7d9e8b41c3a6d2f0e1b7c9a8d4.nurture@example.test",
        "ben@yahoo.example",
    ));
    for days_ago in earlier_soft_bounces {
        batch
            .events
            .push(("sam@hosting.example".into(), soft_bounce(*days_ago)));
    }
    store.apply(&batch).unwrap();
    store.flush().unwrap();
}

const WITH_LEADS: [&str; 5] = [
    "bounce-postfix-dsn-5.1.1.eml",
    "bounce-postfix-blocked-dnsbl.eml",
    "bounce-postfix-mailbox-full.eml",
    "complaint-arf-yahoo.eml",
    "reply-gmail-top-posted.eml",
];

#[test]
fn with_a_store_it_says_which_lead_and_what_would_happen() {
    let dir = scratch("mail-classify-store");
    // Sam bounced softly 3 and 40 days ago: one in the window, this one is the second.
    store_with_leads(&dir, &[3, 40]);
    golden(
        "with-store.txt",
        &classify(&dir.join("data"), &WITH_LEADS, None),
    );
    let mut args = WITH_LEADS.to_vec();
    args.extend(["--format", "json"]);
    golden("with-store.json", &classify(&dir.join("data"), &args, None));
    // Classifying changes nothing.
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    assert!(
        !store
            .lead("ghost@example.test")
            .unwrap()
            .unwrap()
            .is_suppressed()
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn the_third_soft_bounce_in_the_window_makes_the_address_undeliverable() {
    let dir = scratch("mail-classify-soft");
    store_with_leads(&dir, &[3, 20]);
    let output = classify(
        &dir.join("data"),
        &["bounce-postfix-mailbox-full.eml", "--format", "json"],
        None,
    );
    assert_eq!(output.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let outcome = report[0]["outcome"].as_str().unwrap();
    assert!(
        outcome.contains("suppressed (undeliverable: 3 soft bounces in 30 days)"),
        "{outcome}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_store_held_by_a_running_daemon_is_not_waited_for() {
    let dir = scratch("mail-classify-locked");
    store_with_leads(&dir, &[]);
    // sled locks the folder for this process, as the daemon does.
    let held = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let output = classify(
        &dir.join("data"),
        &["bounce-postfix-dsn-5.1.1.eml", "--format", "json"],
        None,
    );
    drop(held);
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is in use by a running daemon: classified without it"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report[0]["kind"], "bounce");
    assert_eq!(report[0]["reason"], "user_unknown");
    assert!(report[0].get("outcome").is_none());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn an_unreadable_file_is_an_input_error_after_the_others_are_classified() {
    let dir = scratch("mail-classify-missing");
    let output = classify(
        &dir.join("data"),
        &["no-such-file.eml", "reply-german.eml"],
        None,
    );
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot read no-such-file.eml"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("reply-german.eml: reply"));
    let _ = fs::remove_dir_all(&dir);
}
