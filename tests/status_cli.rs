//! `nurture status` against a real store: a store is written through the library in a scratch
//! folder, closed (sled locks its folder per process), then the real binary reads it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{DateTime, Utc};
use nurture::engine::{Enrollment, ExitReason, Facts, Position, Status};
use nurture::lead::{Lead, Stage, Suppression, SuppressionReason};
use nurture::store::{
    Batch, DEFAULT_CACHE_BYTES, EventKind, MessageRecord, MessageState, OutboxEmail, Store,
};
use serde_json::{Value, json};

const SHIPPED: [&str; 5] = [
    "newsletter-welcome",
    "re-engagement",
    "trial-offer",
    "trial-welcome",
    "webinar-follow-up",
];

/// A scratch folder, removed when the test passes and kept for a look when it fails.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("nurture-status-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// `nurture status ARGS` in `dir`, on the store in `dir/data` and the shipped workflows.
fn status(dir: &Path, args: &[&str]) -> Output {
    status_with(dir, args, concat!(env!("CARGO_MANIFEST_DIR"), "/workflows"))
}

fn status_with(dir: &Path, args: &[&str], workflows: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("status")
        .args(args)
        .current_dir(dir)
        .env("NURTURE_STORE_PATH", dir.join("data"))
        .env("NURTURE_WORKFLOWS", workflows)
        .env(
            "NURTURE_TEMPLATES",
            concat!(env!("CARGO_MANIFEST_DIR"), "/templates"),
        )
        .env_remove("NURTURE_CONFIG")
        .output()
        .unwrap()
}

fn json_of(output: &Output) -> Value {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn workflow<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no workflow {name} in {report:#}"))
}

fn enrollment(workflow: &str, lead: &str, status: Status, due: Option<&str>) -> Enrollment {
    let start = at("2026-11-02T09:00:00Z");
    Enrollment {
        workflow: workflow.into(),
        version: "v1".into(),
        lead: lead.into(),
        status,
        position: Position::new("welcome", 0),
        due: due.map(at),
        enrolled_at: start,
        updated_at: start,
        deferred_from: None,
        facts: Facts::default(),
    }
}

fn message(id: &str, workflow: &str, lead: &str, state: MessageState) -> MessageRecord {
    MessageRecord {
        message_id: format!("<{id}@nurture.test>"),
        workflow: workflow.into(),
        lead: lead.into(),
        sender: "ana@example.test".into(),
        step: "welcome".into(),
        subject: "Welcome".into(),
        state,
        queued_at: at("2026-11-02T09:00:00Z"),
        at: at("2026-11-02T09:00:05Z"),
    }
}

/// Seven people in three workflows, one of them no longer in the workflows folder:
/// - trial-welcome: anna and ben active, carla completed, dora and fritz exited after replying
///   (both promoted; fritz to contact then customer), emil exited after a bounce (suppressed);
///   4 sent, 1 failed, 1 uncertain, 1 in the outbox;
/// - webinar-follow-up: anna, active and overdue, with an auto-reply; 1 sent;
/// - spring-promo-2024 (deleted): gina completed; gina was later made a contact by hand.
fn seed(dir: &Path) {
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let created = at("2026-11-01T08:00:00Z");
    let mut batch = Batch::default();
    for name in ["anna", "ben", "carla", "dora", "emil", "fritz", "gina"] {
        let mut lead = Lead::new(format!("{name}@example.test"), created);
        lead.stage = match name {
            "dora" | "gina" => Stage::Contact,
            "fritz" => Stage::Customer,
            _ => Stage::Lead,
        };
        if name == "emil" {
            lead.suppression = Some(Suppression {
                reason: SuppressionReason::Bounced,
                detail: "550 5.1.1 no such user".into(),
                at: created,
            });
        }
        batch.leads.push(lead);
    }

    let trial = "trial-welcome";
    let replied = Facts {
        replied: true,
        replied_in: Some("welcome".into()),
        ..Facts::default()
    };
    batch.enrollments = vec![
        enrollment(
            trial,
            "anna@example.test",
            Status::Active,
            Some("2031-03-04T09:00:00Z"),
        ),
        enrollment(
            trial,
            "ben@example.test",
            Status::Active,
            Some("2031-03-03T14:00:00Z"),
        ),
        enrollment(trial, "carla@example.test", Status::Completed, None),
        Enrollment {
            facts: replied.clone(),
            ..enrollment(
                trial,
                "dora@example.test",
                Status::Exited(ExitReason::Replied),
                None,
            )
        },
        enrollment(
            trial,
            "emil@example.test",
            Status::Exited(ExitReason::Bounced),
            None,
        ),
        Enrollment {
            facts: replied,
            ..enrollment(
                trial,
                "fritz@example.test",
                Status::Exited(ExitReason::Replied),
                None,
            )
        },
        Enrollment {
            facts: Facts {
                auto_replied: true,
                ..Facts::default()
            },
            ..enrollment(
                "webinar-follow-up",
                "anna@example.test",
                Status::Active,
                Some("2026-01-05T08:30:00Z"),
            )
        },
        enrollment(
            "spring-promo-2024",
            "gina@example.test",
            Status::Completed,
            None,
        ),
    ];

    batch.messages = vec![
        message("1", trial, "anna@example.test", MessageState::Sent),
        message("2", trial, "carla@example.test", MessageState::Sent),
        message("3", trial, "dora@example.test", MessageState::Sent),
        message("4", trial, "fritz@example.test", MessageState::Sent),
        message("5", trial, "emil@example.test", MessageState::Failed),
        message("6", trial, "ben@example.test", MessageState::Uncertain),
        message(
            "7",
            "webinar-follow-up",
            "anna@example.test",
            MessageState::Sent,
        ),
    ];
    batch.outbox_put.push(OutboxEmail {
        message_id: "<8@nurture.test>".into(),
        workflow: trial.into(),
        lead: "carla@example.test".into(),
        step: "tips".into(),
        subject: "Tips".into(),
        envelope_from: "ana@example.test".into(),
        envelope_to: "carla@example.test".into(),
        queued_at: created,
        not_before: created,
        attempts: 0,
        expires: None,
        eml: b"Subject: Tips\r\n\r\nHello\r\n".to_vec(),
    });

    let promoted = |stage| EventKind::Promoted {
        stage,
        by: "reply".into(),
    };
    let when = at("2026-11-05T10:00:00Z");
    batch.event("dora@example.test", when, Some(trial), EventKind::Enrolled);
    batch.event(
        "dora@example.test",
        when,
        Some(trial),
        promoted(Stage::Contact),
    );
    batch.event(
        "fritz@example.test",
        when,
        Some(trial),
        promoted(Stage::Contact),
    );
    batch.event(
        "fritz@example.test",
        when,
        Some(trial),
        promoted(Stage::Customer),
    );
    batch.event(
        "gina@example.test",
        when,
        None,
        EventKind::Promoted {
            stage: Stage::Contact,
            by: "nurture leads set".into(),
        },
    );
    store.apply(&batch).unwrap();
    store.flush().unwrap();
}

#[test]
fn json_counts_every_workflow_from_the_store() {
    let dir = scratch("json");
    seed(&dir);
    let report = json_of(&status(&dir, &["--format", "json"]));

    assert_eq!(
        *workflow(&report, "trial-welcome"),
        json!({
            "name": "trial-welcome",
            "loaded": true,
            "enrolled": 6,
            "active": 2,
            "completed": 1,
            "exited": { "replied": 2, "bounced": 1 },
            // The seed records neither which emails each enrollment got nor a click.
            "emailed": 0,
            "engaged": 0,
            "sent": 4,
            "failed": 1,
            "uncertain": 1,
            "dropped": 0,
            "queued": 1,
            "in_flight": 0,
            "replies": 2,
            "auto_replies": 0,
            "complaints": 0,
            "complaint_rate": 0.0,
            "sender_side_rejections": 0,
            "promoted": 2,
            "contact_rate": 33.3,
            // Enrollments by the step they stand in, emails by the step that wrote them.
            "steps": {
                "welcome": {
                    "active": 2,
                    "completed": 1,
                    "exited": { "replied": 2, "bounced": 1 },
                    "sent": 4,
                    "failed": 1,
                    "uncertain": 1,
                    "dropped": 0,
                    "queued": 0,
                    "in_flight": 0,
                    "opens": 0,
                    "clicks": 0,
                    "machine_opens": 0,
                    "machine_clicks": 0,
                    // dora and fritz replied standing in the welcome step.
                    "replies": 2,
                },
                "tips": {
                    "active": 0,
                    "completed": 0,
                    "exited": {},
                    "sent": 0,
                    "failed": 0,
                    "uncertain": 0,
                    "dropped": 0,
                    "queued": 1,
                    "in_flight": 0,
                    "opens": 0,
                    "clicks": 0,
                    "machine_opens": 0,
                    "machine_clicks": 0,
                    "replies": 0,
                },
            },
        })
    );
    let webinar = workflow(&report, "webinar-follow-up");
    assert_eq!(
        (
            &webinar["enrolled"],
            &webinar["active"],
            &webinar["auto_replies"],
            &webinar["sent"],
            &webinar["promoted"],
            &webinar["contact_rate"],
        ),
        (
            &json!(1),
            &json!(1),
            &json!(1),
            &json!(1),
            &json!(0),
            &json!(0.0)
        )
    );
    // A workflow deleted from the folder still shows, from its enrollments.
    let deleted = workflow(&report, "spring-promo-2024");
    assert_eq!(
        (
            &deleted["loaded"],
            &deleted["enrolled"],
            &deleted["completed"]
        ),
        (&json!(false), &json!(1), &json!(1))
    );
    assert_eq!(
        workflow(&report, "newsletter-welcome")["contact_rate"],
        Value::Null
    );
    let names: Vec<&str> = report["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "newsletter-welcome",
            "re-engagement",
            "spring-promo-2024",
            "trial-offer",
            "trial-welcome",
            "webinar-follow-up"
        ]
    );

    // Earliest first; the overdue one leads.
    assert_eq!(
        report["next"],
        json!([
            { "at": "2026-01-05T08:30:00Z", "workflow": "webinar-follow-up", "lead": "anna@example.test" },
            { "at": "2031-03-03T14:00:00Z", "workflow": "trial-welcome", "lead": "ben@example.test" },
            { "at": "2031-03-04T09:00:00Z", "workflow": "trial-welcome", "lead": "anna@example.test" },
        ])
    );
    assert_eq!(
        (&report["leads"], &report["contacts"], &report["suppressed"]),
        (&json!(7), &json!(3), &json!(1))
    );

    let report = json_of(&status(&dir, &["--format", "json", "--next", "1"]));
    assert_eq!(report["next"].as_array().unwrap().len(), 1);
    assert_eq!(report["next"][0]["workflow"], "webinar-follow-up");
}

#[test]
fn table_names_every_workflow_and_the_uncertain_email() {
    let dir = scratch("table");
    seed(&dir);
    let output = status(&dir, &[]);
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8(output.stdout).unwrap();

    for name in SHIPPED {
        assert!(
            table.lines().any(|line| line.starts_with(name)),
            "{name}:\n{table}"
        );
    }
    assert!(table.contains("spring-promo-2024* "), "{table}");
    let header = table.lines().next().unwrap();
    let trial = table
        .lines()
        .find(|line| line.starts_with("trial-welcome"))
        .unwrap();
    // The row's uncertain cell ends where its header does: the columns line up.
    let column_end = header.find("uncertain").unwrap() + "uncertain".len();
    assert_eq!(&trial[column_end - 1..column_end], "1", "{table}");
    assert!(trial.ends_with("33.3%"), "{table}");
    assert!(
        table.contains("warning: 1 email is uncertain")
            && table.contains("ben@example.test  step welcome  <6@nurture.test>"),
        "{table}"
    );
    assert!(
        table.contains("trial-welcome: bounced 1, replied 2"),
        "{table}"
    );
    assert!(
        table.contains("trial-welcome / welcome: 4 sent, 0 opens, 0 clicks, 2 replies"),
        "{table}"
    );
    assert!(
        table.contains("2026-01-05 08:30 UTC  webinar-follow-up  anna@example.test  overdue"),
        "{table}"
    );
    assert!(
        table
            .contains("7 leads in the store, 3 contacts (stage contact or customer), 1 suppressed"),
        "{table}"
    );
}

#[test]
fn empty_store_shows_zeros_for_every_shipped_workflow() {
    let dir = scratch("empty");
    let report = json_of(&status(&dir, &["--format", "json"]));
    let workflows = report["workflows"].as_array().unwrap();
    assert_eq!(workflows.len(), SHIPPED.len());
    for (w, name) in workflows.iter().zip(SHIPPED) {
        assert_eq!(w["name"], name);
        for field in [
            "enrolled",
            "active",
            "completed",
            "sent",
            "uncertain",
            "promoted",
        ] {
            assert_eq!(w[field], 0, "{name}.{field}");
        }
        assert_eq!(w["exited"], json!({}));
        assert_eq!(w["contact_rate"], Value::Null);
    }
    assert_eq!(report["next"], json!([]));
    assert_eq!(report["leads"], 0);

    let output = status(&dir, &[]);
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(table.contains("nothing is scheduled"), "{table}");
}

#[test]
fn a_workflow_with_errors_does_not_stop_status() {
    let dir = scratch("broken");
    seed(&dir);
    let workflows = dir.join("workflows");
    fs::create_dir_all(&workflows).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    fs::copy(
        shipped.join("webinar-follow-up.flow"),
        workflows.join("webinar-follow-up.flow"),
    )
    .unwrap();
    // trial-welcome, with a typo in a template name.
    let trial = fs::read_to_string(shipped.join("trial-welcome.flow")).unwrap();
    fs::write(
        workflows.join("trial-welcome.flow"),
        trial.replace("send \"welcome\"", "send \"welcom\""),
    )
    .unwrap();

    let output = status_with(&dir, &["--format", "json"], workflows.to_str().unwrap());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = json_of(&output);
    assert!(stderr.contains("run `nurture check`"), "{stderr}");
    let trial = workflow(&report, "trial-welcome");
    assert_eq!(
        (&trial["loaded"], &trial["enrolled"]),
        (&json!(false), &json!(6))
    );
    assert_eq!(workflow(&report, "webinar-follow-up")["loaded"], true);
}

#[test]
fn a_store_in_use_exits_3_and_says_so() {
    let dir = scratch("locked");
    let _held = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let output = status(&dir, &[]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is in use by another nurture process"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn a_store_path_that_is_a_file_exits_3() {
    let dir = scratch("file");
    fs::write(dir.join("data"), "not a store").unwrap();
    let output = status(&dir, &[]);
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("error: "));
}

#[test]
fn every_promotion_counts_in_a_store_with_many_events() {
    let dir = scratch("many");
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let when = at("2026-11-05T10:00:00Z");
    // Enough journal lines that their sequence numbers run past one byte.
    let leads = 300;
    let mut batch = Batch::default();
    for i in 0..leads {
        let email = format!("lead{i:03}@example.test");
        batch.leads.push(Lead::new(email.clone(), when));
        batch.enrollments.push(enrollment(
            "trial-welcome",
            &email,
            Status::Exited(ExitReason::Replied),
            None,
        ));
        batch.event(&email, when, Some("trial-welcome"), EventKind::Enrolled);
        batch.event(
            &email,
            when,
            Some("trial-welcome"),
            EventKind::Promoted {
                stage: Stage::Contact,
                by: "reply".into(),
            },
        );
    }
    store.apply(&batch).unwrap();
    drop(store);

    let report = json_of(&status(&dir, &["--format", "json"]));
    let trial = workflow(&report, "trial-welcome");
    assert_eq!(
        (
            &trial["enrolled"],
            &trial["promoted"],
            &trial["contact_rate"]
        ),
        (&json!(leads), &json!(leads), &json!(100.0))
    );
}

/// `sent` emails of `workflow`, one per lead `{prefix}NNNN@example.test`, each lead enrolled.
fn sent_to(batch: &mut Batch, workflow: &str, prefix: &str, sent: usize) {
    for i in 0..sent {
        let lead = format!("{prefix}{i:04}@example.test");
        batch
            .leads
            .push(Lead::new(lead.clone(), at("2026-11-01T08:00:00Z")));
        batch
            .enrollments
            .push(enrollment(workflow, &lead, Status::Active, None));
        batch.messages.push(message(
            &format!("{prefix}{i}"),
            workflow,
            &lead,
            MessageState::Sent,
        ));
    }
}

/// The journal lines and suppression the daemon writes for a spam complaint about `workflow`'s
/// email (`None`: the report named the address, not one of our emails).
fn complaint(batch: &mut Batch, lead: &str, workflow: Option<&str>) {
    let when = at("2026-11-06T10:00:00Z");
    batch.event(
        lead,
        when,
        workflow,
        EventKind::Received {
            what: "spam complaint (abuse)".into(),
        },
    );
    batch.event(
        lead,
        when,
        None,
        EventKind::Suppressed {
            reason: "complained".into(),
        },
    );
    if let Some(person) = batch.leads.iter_mut().find(|person| person.email == lead) {
        person.suppression = Some(Suppression {
            reason: SuppressionReason::Complained,
            detail: "complained".into(),
            at: when,
        });
    }
}

#[test]
fn complaints_show_with_their_rate_and_a_warning_above_a_tenth_of_a_percent() {
    let dir = scratch("complaints");
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let mut batch = Batch::default();
    // trial-welcome: 2 complaints for 400 sent, 0.5 %; webinar-follow-up: 1 for 1,500, 0.07 %.
    sent_to(&mut batch, "trial-welcome", "t", 400);
    sent_to(&mut batch, "webinar-follow-up", "w", 1500);
    complaint(&mut batch, "t0001@example.test", Some("trial-welcome"));
    // The feedback loop reported the same email twice: one complaint.
    complaint(&mut batch, "t0001@example.test", Some("trial-welcome"));
    complaint(&mut batch, "t0002@example.test", Some("trial-welcome"));
    complaint(&mut batch, "w0003@example.test", Some("webinar-follow-up"));
    // A report that named only the address: in the totals, in no workflow.
    complaint(&mut batch, "w0004@example.test", None);
    store.apply(&batch).unwrap();
    drop(store);

    let report = json_of(&status(&dir, &["--format", "json"]));
    let counts = |name: &str| {
        let w = workflow(&report, name);
        (
            w["sent"].clone(),
            w["complaints"].clone(),
            w["complaint_rate"].clone(),
        )
    };
    assert_eq!(counts("trial-welcome"), (json!(400), json!(2), json!(0.5)));
    assert_eq!(
        counts("webinar-follow-up"),
        (json!(1500), json!(1), json!(0.07))
    );
    assert_eq!(counts("re-engagement"), (json!(0), json!(0), Value::Null));
    // 4 complaints for 1,900 sent in all: 0.21 %.
    assert_eq!(
        (&report["complaints"], &report["complaint_rate"]),
        (&json!(4), &json!(0.21))
    );
    assert_eq!(report["suppressed"], 4);

    let output = status(&dir, &[]);
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8(output.stdout).unwrap();
    let header = table.lines().next().unwrap();
    let trial = table
        .lines()
        .find(|line| line.starts_with("trial-welcome"))
        .unwrap();
    // The complaint rate sits under its header.
    let column_end = header.find("complaint rate").unwrap() + "complaint rate".len();
    assert_eq!(&trial[column_end - 5..column_end], "0.50%", "{table}");
    assert!(
        table.contains(
            "warning: trial-welcome: 2 spam complaints for 400 emails sent, a complaint rate of \
             0.50%, above 0.1%"
        ),
        "{table}"
    );
    assert!(
        table.contains("warning: all workflows: 4 spam complaints for 1900 emails sent"),
        "{table}"
    );
    assert!(table.contains("Gmail and Yahoo"), "{table}");
    // Below the limit, no warning.
    assert!(
        !table.contains("warning: webinar-follow-up"),
        "0.07% is under 0.1%:\n{table}"
    );
    assert!(
        table.contains("4 spam complaints (0.21% of the emails sent), 0 sender-side rejections"),
        "{table}"
    );
}

#[test]
fn no_complaint_warning_at_or_under_a_tenth_of_a_percent() {
    let dir = scratch("few-complaints");
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let mut batch = Batch::default();
    // 1 complaint for 1,000 sent: exactly 0.1 %, not above it.
    sent_to(&mut batch, "trial-welcome", "t", 1000);
    complaint(&mut batch, "t0007@example.test", Some("trial-welcome"));
    store.apply(&batch).unwrap();
    drop(store);

    let output = status(&dir, &[]);
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(!table.contains("warning"), "{table}");
    assert!(
        table.contains("1 spam complaint (0.10% of the emails sent)"),
        "{table}"
    );
    let report = json_of(&status(&dir, &["--format", "json"]));
    assert_eq!(workflow(&report, "trial-welcome")["complaint_rate"], 0.1);
}

#[test]
fn a_sender_side_rejection_shows_with_a_warning_and_the_lead_stays_active() {
    let dir = scratch("sender-side");
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let mut batch = Batch::default();
    sent_to(&mut batch, "trial-welcome", "t", 3);
    let refused = |batch: &mut Batch, lead: &str, workflow: Option<&str>| {
        batch.event(
            lead,
            at("2026-11-06T10:00:00Z"),
            workflow,
            EventKind::Received {
                what: "sender-side rejection (5.7.1): sender blocked".into(),
            },
        );
    };
    refused(&mut batch, "t0000@example.test", Some("trial-welcome"));
    refused(&mut batch, "t0001@example.test", Some("trial-welcome"));
    // The report named only the address.
    refused(&mut batch, "t0002@example.test", None);
    store.apply(&batch).unwrap();
    drop(store);

    let report = json_of(&status(&dir, &["--format", "json"]));
    let trial = workflow(&report, "trial-welcome");
    assert_eq!(
        (
            &trial["sender_side_rejections"],
            &trial["active"],
            &trial["complaints"]
        ),
        (&json!(2), &json!(3), &json!(0))
    );
    assert_eq!(
        workflow(&report, "webinar-follow-up")["sender_side_rejections"],
        0
    );
    assert_eq!(
        (&report["sender_side_rejections"], &report["suppressed"]),
        (&json!(3), &json!(0))
    );

    let output = status(&dir, &[]);
    assert_eq!(output.status.code(), Some(0));
    let table = String::from_utf8(output.stdout).unwrap();
    assert!(
        table.contains(
            "warning: 3 emails were refused by the receiving server for a reason on the \
             sender's side (trial-welcome 2, no workflow known 1): the sender has a \
             deliverability problem"
        ),
        "{table}"
    );
    assert!(table.contains("the leads stay active"), "{table}");
    assert!(
        table.contains("0 spam complaints (0.00% of the emails sent), 3 sender-side rejections"),
        "{table}"
    );
}

// ---- status from counters (issue 14) ----

/// `nurture ARGS` in `dir` on the daemon test workflow (`blast`: two emails to each lead whose
/// source is `load-test`), its store in `dir/data`.
fn blast(dir: &Path, args: &[&str]) -> Command {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/daemon");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .args(args)
        .current_dir(dir)
        .env("NURTURE_STORE_PATH", dir.join("data"))
        .env("NURTURE_WORKFLOWS", format!("{fixtures}/workflows"))
        .env("NURTURE_TEMPLATES", format!("{fixtures}/templates"))
        .env_remove("NURTURE_CONFIG")
        .env_remove("RUST_LOG");
    command
}

/// `nurture status --format json [--recount]`: the report, and what it said on standard error.
fn blast_status(dir: &Path, recount: bool) -> (Value, String) {
    let mut args = vec!["status", "--format", "json"];
    if recount {
        args.push("--recount");
    }
    let output = blast(dir, &args).output().unwrap();
    (
        json_of(&output),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `nurture run` on the blast workflow in `dir`, its log in `dir/daemon.log`.
fn blast_daemon(dir: &Path) -> std::process::Child {
    let log = fs::File::create(dir.join("daemon.log")).unwrap();
    blast(dir, &["run"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn emails_written(dir: &Path) -> usize {
    fs::read_dir(dir.join("outbox")).map_or(0, |entries| entries.count())
}

#[test]
fn status_from_the_counters_equals_a_recount_of_the_daemons_work() {
    let dir = scratch("counters");
    let leads = 1500;
    let now = Utc::now();
    crate::support::seed(
        &dir,
        (0..leads)
            .map(|i| {
                let mut lead = Lead::new(format!("lead{i:05}@example.test"), now);
                lead.source = Some("load-test".into());
                lead
            })
            .collect(),
    );
    let mut daemon = blast_daemon(&dir);
    let socket = nurture::control::socket_path(&dir.join("data"));
    let started = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() || emails_written(&dir) == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the daemon did not start sending:\n{}",
            fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    // While it sends, through its control socket: a recount holds its batches back while it
    // counts, so the counters it compares are of the same instant.
    let (_, said) = blast_status(&dir, true);
    assert!(
        said.contains("the counters agree with a count of every record"),
        "{said}"
    );
    // Commands the daemon runs in its loop write through the same batches.
    for args in [
        ["unenroll", "blast", "lead01499@example.test"].as_slice(),
        &["leads", "promote", "lead00007@example.test"],
        &["leads", "suppress", "lead01498@example.test"],
    ] {
        let output = blast(&dir, args).output().unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
    }
    // Until every enrollment ended and every email is out, as status itself tells.
    loop {
        let (report, _) = blast_status(&dir, false);
        let blast = &report["workflows"][0];
        if blast["active"] == json!(0)
            && blast["queued"] == json!(0)
            && blast["in_flight"] == json!(0)
        {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "{report}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (through_daemon, said) = blast_status(&dir, false);
    assert!(said.is_empty(), "{said}");
    let (recounted, said) = blast_status(&dir, true);
    assert!(
        said.contains("the counters agree with a count of every record"),
        "{said}"
    );
    assert_eq!(through_daemon, recounted);
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();

    let workflow = &through_daemon["workflows"][0];
    assert_eq!(workflow["name"], "blast");
    assert_eq!(workflow["enrolled"], json!(leads));
    assert_eq!(workflow["sent"], json!(emails_written(&dir)));
    assert_eq!(
        (&through_daemon["contacts"], &through_daemon["suppressed"]),
        (&json!(1), &json!(1))
    );

    // Without the daemon: the same report, from the counters and from a recount.
    let (local, said) = blast_status(&dir, false);
    assert!(said.is_empty(), "{said}");
    assert_eq!(local["workflows"], through_daemon["workflows"]);
    let (recounted, said) = blast_status(&dir, true);
    assert!(said.contains("agree"), "{said}");
    assert_eq!(recounted, local);

    // The store as the nurture before counters left it (schema 2, no counters trees): opening
    // it counts them, and status says the same.
    {
        let db = sled::open(dir.join("data")).unwrap();
        db.drop_tree("counters").unwrap();
        db.drop_tree("counters_index").unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", &2u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let (upgraded, said) = blast_status(&dir, false);
    assert!(said.is_empty(), "{said}");
    assert_eq!(upgraded, local);
    let (_, said) = blast_status(&dir, true);
    assert!(said.contains("agree"), "{said}");
}

// ---- status while no process holds the store: the snapshot a close leaves ----

fn snapshot_left(dir: &Path) -> bool {
    dir.join("data").join("status-snapshot.json").exists()
}

#[test]
fn status_without_a_daemon_is_never_stale_after_a_crash_or_a_clean_stop() {
    let dir = scratch("snapshot");
    let now = Utc::now();
    crate::support::seed(
        &dir,
        (0..3000)
            .map(|i| {
                let mut lead = Lead::new(format!("lead{i:05}@example.test"), now);
                lead.source = Some("load-test".into());
                lead
            })
            .collect(),
    );
    // A store closed by a command leaves a snapshot, which the next status reads: the same
    // report as the store itself gives (a recount opens it).
    let (first, _) = blast_status(&dir, false);
    assert!(snapshot_left(&dir), "a command's close leaves the snapshot");
    let (from_snapshot, said) = blast_status(&dir, false);
    assert!(said.is_empty(), "{said}");
    assert_eq!(from_snapshot, first);

    // A daemon removes it the moment it opens the store, and a kill -9 mid-send leaves none.
    let mut daemon = blast_daemon(&dir);
    let started = std::time::Instant::now();
    while emails_written(&dir) < 200 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the daemon did not send:\n{}",
            fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        !snapshot_left(&dir),
        "a running daemon's store has no snapshot"
    );
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(!snapshot_left(&dir), "a crash leaves no snapshot");

    // So status opens the store: what the daemon did before the kill shows.
    let (after_crash, said) = blast_status(&dir, false);
    assert!(said.is_empty(), "{said}");
    let sent = |report: &Value| report["workflows"][0]["sent"].as_u64().unwrap();
    let in_flight = |report: &Value| report["workflows"][0]["in_flight"].as_u64().unwrap();
    assert!(
        sent(&after_crash) + in_flight(&after_crash) >= 200,
        "{after_crash}"
    );
    assert_ne!(after_crash["workflows"], first["workflows"]);
    let (recounted, said) = blast_status(&dir, true);
    assert!(said.contains("agree"), "{said}");
    assert_eq!(recounted, after_crash);

    // A daemon that stops cleanly leaves the snapshot of everything it did.
    let output = blast(&dir, &["run", "--until-idle"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(snapshot_left(&dir), "a clean stop leaves the snapshot");
    let (after_stop, said) = blast_status(&dir, false);
    assert!(said.is_empty(), "{said}");
    assert_eq!(after_stop["workflows"][0]["active"], json!(0));
    assert_eq!(sent(&after_stop), emails_written(&dir) as u64);
    let (recounted, said) = blast_status(&dir, true);
    assert!(said.contains("agree"), "{said}");
    assert_eq!(recounted, after_stop);
}
