//! `nurture leads …` and `nurture contacts` run as the real binary against a store in a scratch
//! folder: import (CSV, JSON, JSON Lines, bad rows, re-import), list, show, export round trips,
//! the changes by hand and the journal they leave, and the contacts report.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A fresh folder per test, with the store at `data/` and the repository's workflows and
/// templates configured.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("nurture-leads-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir }
    }

    fn store(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Runs `nurture ARGS` with the store at `store`.
    fn run_on(&self, store: &Path, args: &[&str]) -> Run {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let output = Command::new(env!("CARGO_BIN_EXE_nurture"))
            .args(args)
            .current_dir(&self.dir)
            .env("NURTURE_STORE_PATH", store)
            .env("NURTURE_WORKFLOWS", repo.join("workflows"))
            .env("NURTURE_TEMPLATES", repo.join("templates"))
            .env_remove("NURTURE_CONFIG")
            .output()
            .unwrap();
        Run(output)
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_on(&self.store(), args)
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code(), 0, "nurture {args:?} failed: {}", run.stderr());
        run.stdout()
    }

    /// Imports the repository's 12 sample leads.
    fn import_samples(&self) {
        let samples = sample_csv();
        self.ok(&["leads", "import", samples.to_str().unwrap()]);
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Run(Output);

impl Run {
    fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
}

fn sample_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/sample-leads.csv")
}

#[test]
fn import_of_the_sample_leads_creates_twelve_and_again_changes_nothing() {
    let scratch = Scratch::new("import-samples");
    let samples = sample_csv();
    let first = scratch.ok(&["leads", "import", samples.to_str().unwrap()]);
    assert_eq!(
        first.trim(),
        "12 rows read: 12 created, 0 updated, 0 unchanged, 0 rejected"
    );
    let listed = scratch.ok(&["leads", "list", "--format", "json"]);
    let second = scratch.ok(&["leads", "import", samples.to_str().unwrap()]);
    assert_eq!(
        second.trim(),
        "12 rows read: 0 created, 0 updated, 12 unchanged, 0 rejected"
    );
    assert_eq!(
        scratch.ok(&["leads", "list", "--format", "json"]),
        listed,
        "a re-import leaves every lead as it was"
    );
}

#[test]
fn bad_rows_are_reported_by_line_and_the_good_rows_import() {
    let scratch = Scratch::new("import-bad-rows");
    let file = scratch.write(
        "leads.csv",
        "email,first_name,timezone,score\n\
         ana@acme.example,Ana,Europe/Berlin,10\n\
         not-an-address,Bo,,\n\
         cy@acme.example,Cy,Mars/Olympus,\n\
         dy@acme.example,Dy,,3\n",
    );
    let run = scratch.run(&["leads", "import", file.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "rejected rows do not fail the import");
    assert_eq!(
        run.stdout().trim(),
        "4 rows read: 2 created, 0 updated, 0 unchanged, 2 rejected"
    );
    let stderr = run.stderr();
    assert!(
        stderr.contains("leads.csv:3: bad email address: `not-an-address` has no `@`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("leads.csv:4: `Mars/Olympus` is not a time zone name"),
        "{stderr}"
    );
    let listed = scratch.ok(&["leads", "list", "--format", "csv"]);
    assert!(listed.contains("ana@acme.example") && listed.contains("dy@acme.example"));
    assert!(!listed.contains("cy@acme.example"));
}

#[test]
fn an_unreadable_file_is_an_input_error() {
    let scratch = Scratch::new("import-missing");
    let run = scratch.run(&["leads", "import", "missing.csv"]);
    assert_eq!(run.code(), 3);
    assert!(run.stderr().contains("missing.csv"), "{}", run.stderr());
    let no_email = scratch.write("names.csv", "name\nAna\n");
    let run = scratch.run(&["leads", "import", no_email.to_str().unwrap()]);
    assert_eq!(run.code(), 3);
    assert!(
        run.stderr().contains("no `email` column"),
        "{}",
        run.stderr()
    );
}

#[test]
fn reimport_updates_fields_unions_tags_and_keeps_stage_and_score() {
    let scratch = Scratch::new("import-update");
    let first = scratch.write(
        "first.csv",
        "email,company,tags,score,plan\nana@acme.example,Acme,trial,10,free\n",
    );
    scratch.ok(&["leads", "import", first.to_str().unwrap()]);
    scratch.ok(&["leads", "promote", "ana@acme.example"]);
    let second = scratch.write(
        "second.jsonl",
        "{\"email\": \"ana@ACME.example\", \"company\": \"Acme GmbH\", \"tags\": [\"vip\"], \"stage\": \"lead\", \"plan\": \"pro\"}\n",
    );
    let out = scratch.ok(&[
        "leads",
        "import",
        second.to_str().unwrap(),
        "--tag",
        "imported",
    ]);
    assert_eq!(
        out.trim(),
        "1 row read: 0 created, 1 updated, 0 unchanged, 0 rejected"
    );
    let lead: serde_json::Value = serde_json::from_str(&scratch.ok(&[
        "leads",
        "show",
        "ana@acme.example",
        "--format",
        "json",
    ]))
    .unwrap();
    let lead = &lead["lead"];
    assert_eq!(lead["company"], "Acme GmbH");
    assert_eq!(
        lead["tags"],
        serde_json::json!(["imported", "trial", "vip"])
    );
    assert_eq!(lead["score"], 10, "the file had no score");
    assert_eq!(lead["stage"], "contact", "an import never demotes");
    assert_eq!(lead["attributes"]["plan"], "pro");
}

#[test]
fn json_and_json_lines_import_with_source_and_tags_from_the_command_line() {
    let scratch = Scratch::new("import-json");
    let json = scratch.write(
        "leads.json",
        r#"{"leads": [
  {"email": "ana@acme.example", "first_name": "Ana", "tags": ["trial"], "score": 5},
  {"email": "bad"},
  {"email": "bo@acme.example", "source": "webinar"}
]}"#,
    );
    let run = scratch.run(&[
        "leads",
        "import",
        json.to_str().unwrap(),
        "--source",
        "fair-2025",
        "--tag",
        "booth",
    ]);
    assert_eq!(run.code(), 0);
    assert_eq!(
        run.stdout().trim(),
        "3 rows read: 2 created, 0 updated, 0 unchanged, 1 rejected"
    );
    assert!(run.stderr().contains("leads.json:3:"), "{}", run.stderr());
    let jsonl = scratch.write(
        "more.jsonl",
        "{\"email\": \"cy@acme.example\", \"company\": \"Acme\"}\n\n{\"email\": \"dy@acme.example\"}\n",
    );
    let out = scratch.ok(&["leads", "import", jsonl.to_str().unwrap()]);
    assert_eq!(
        out.trim(),
        "2 rows read: 2 created, 0 updated, 0 unchanged, 0 rejected"
    );
    let booth = scratch.ok(&["leads", "list", "--tag", "booth", "--format", "csv"]);
    assert_eq!(booth.lines().count(), 3, "header and two leads: {booth}");
    let fair = scratch.ok(&["leads", "list", "--source", "fair-2025", "--format", "csv"]);
    assert!(fair.contains("ana@acme.example") && !fair.contains("bo@acme.example"));
}

#[test]
fn list_filters_and_formats() {
    let scratch = Scratch::new("list");
    scratch.import_samples();
    let table = scratch.ok(&["leads", "list"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("EMAIL") && header.contains("STAGE") && header.ends_with("SUPPRESSED"),
        "{header}"
    );
    assert_eq!(table.lines().count(), 13, "a header and 12 leads:\n{table}");
    // Columns line up: every row has its stage where the header has STAGE.
    let stage_at = header.find("STAGE").unwrap();
    let anna = table
        .lines()
        .find(|l| l.starts_with("anna.keller@example.test"))
        .unwrap();
    assert!(anna[stage_at..].starts_with("lead "), "{anna}");

    let limited = scratch.ok(&["leads", "list", "--limit", "3", "--format", "json"]);
    let limited: serde_json::Value = serde_json::from_str(&limited).unwrap();
    assert_eq!(limited.as_array().unwrap().len(), 3);
    assert!(limited[0]["email"].is_string() && limited[0]["tags"].is_array());

    let newsletter = scratch.ok(&["leads", "list", "--tag", "newsletter", "--format", "csv"]);
    assert!(newsletter.starts_with("email,first_name,last_name,company,source,tags"));
    assert!(newsletter.contains("james.ortega@example.test"));
    assert!(!newsletter.contains("anna.keller@example.test"));

    scratch.ok(&[
        "leads",
        "promote",
        "anna.keller@example.test",
        "--to",
        "customer",
    ]);
    scratch.ok(&["leads", "suppress", "james.ortega@example.test"]);
    let customers = scratch.ok(&["leads", "list", "--stage", "customer", "--format", "csv"]);
    // Anna, and Hana whom the sample file makes a customer.
    assert_eq!(customers.lines().count(), 3, "{customers}");
    assert!(customers.contains("anna.keller@example.test"));
    let suppressed = scratch.ok(&["leads", "list", "--suppressed", "--format", "csv"]);
    assert_eq!(suppressed.lines().count(), 2, "{suppressed}");
    assert!(suppressed.contains("james.ortega@example.test"));
    let run = scratch.run(&["leads", "list", "--stage", "prospect"]);
    assert_eq!(run.code(), 2, "an unknown stage is a usage error");
}

#[test]
fn export_then_import_into_another_store_round_trips_the_leads() {
    let scratch = Scratch::new("round-trip");
    scratch.import_samples();
    scratch.ok(&[
        "leads",
        "set",
        "anna.keller@example.test",
        "plan=pro",
        "seats=3",
    ]);
    scratch.ok(&["leads", "promote", "tom.becker@example.test"]);
    scratch.ok(&[
        "leads",
        "suppress",
        "james.ortega@example.test",
        "--reason",
        "asked by phone",
    ]);
    let original = comparable(&scratch.ok(&["leads", "list", "--format", "json"]));
    assert_eq!(original.len(), 12);
    for format in ["csv", "json", "jsonl"] {
        let file = scratch.dir.join(format!("export.{format}"));
        scratch.ok(&[
            "leads",
            "export",
            "--format",
            format,
            "--out",
            file.to_str().unwrap(),
        ]);
        let other = scratch.dir.join(format!("other-{format}"));
        let run = scratch.run_on(&other, &["leads", "import", file.to_str().unwrap()]);
        assert_eq!(run.code(), 0, "{}", run.stderr());
        assert!(run.stdout().contains("12 created"), "{}", run.stdout());
        let copy = scratch.run_on(&other, &["leads", "list", "--format", "json"]);
        assert_eq!(
            comparable(&copy.stdout()),
            original,
            "round trip through {format}"
        );
    }
    // Without --out the export goes to stdout.
    let csv = scratch.ok(&["leads", "export"]);
    assert_eq!(csv.lines().count(), 13);
    assert!(
        csv.lines().next().unwrap().ends_with("country,plan,seats"),
        "{csv}"
    );
}

/// Leads as JSON without what an import sets itself (the times, the suppression's detail and
/// time when it went through CSV).
fn comparable(json: &str) -> Vec<serde_json::Value> {
    let mut leads: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
    for lead in &mut leads {
        let object = lead.as_object_mut().unwrap();
        object.remove("created_at");
        object.remove("updated_at");
        if let Some(suppression) = object
            .get_mut("suppression")
            .and_then(|s| s.as_object_mut())
        {
            suppression.remove("detail");
            suppression.remove("at");
        }
    }
    leads
}

#[test]
fn show_prints_fields_and_timeline_and_points_at_near_misses() {
    let scratch = Scratch::new("show");
    scratch.import_samples();
    let shown = scratch.ok(&["leads", "show", " anna.keller@EXAMPLE.test "]);
    assert!(shown.starts_with("anna.keller@example.test\n"), "{shown}");
    assert!(shown.contains("  name       Anna Keller\n"), "{shown}");
    assert!(
        shown.contains("  company    Nordwind Logistik GmbH\n"),
        "{shown}"
    );
    assert!(shown.contains("  score      35\n"), "{shown}");
    assert!(shown.contains("  suppressed no\n"), "{shown}");
    assert!(shown.contains("attributes\n  country  DE\n"), "{shown}");
    assert!(shown.contains("enrollments\n  none\n"), "{shown}");
    assert!(
        shown.contains("created by import of sample-leads.csv"),
        "{shown}"
    );

    let run = scratch.run(&["leads", "show", "anna.keler@example.test"]);
    assert_eq!(run.code(), 3);
    assert!(
        run.stderr()
            .contains("no lead `anna.keler@example.test` in the store; did you mean `anna.keller@example.test`?"),
        "{}",
        run.stderr()
    );
    let run = scratch.run(&["leads", "show", "nobody@nowhere.example"]);
    assert_eq!(run.code(), 3);
    assert!(
        run.stderr()
            .contains("no lead `nobody@nowhere.example` in the store")
    );
    assert!(!run.stderr().contains("did you mean"), "{}", run.stderr());
    assert_eq!(scratch.run(&["leads", "show", "not an address"]).code(), 2);
}

#[test]
fn changes_by_hand_show_up_and_are_journaled() {
    let scratch = Scratch::new("edit");
    scratch.import_samples();
    let anna = "anna.keller@example.test";
    assert_eq!(
        scratch
            .ok(&[
                "leads",
                "set",
                anna,
                "company=Nordwind AG",
                "plan=pro",
                "score=40",
                "country="
            ])
            .trim(),
        "anna.keller@example.test: changed company, plan, score, country"
    );
    assert_eq!(
        scratch
            .ok(&["leads", "set", anna, "company=Nordwind AG"])
            .trim(),
        "anna.keller@example.test: nothing changed"
    );
    let run = scratch.run(&["leads", "set", anna, "score=high"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert_eq!(scratch.run(&["leads", "set", anna, "stage=lead"]).code(), 2);
    assert_eq!(
        scratch
            .run(&["leads", "set", "ghost@example.test", "plan=x"])
            .code(),
        3
    );

    scratch.ok(&["leads", "tag", anna, "vip", "hot"]);
    scratch.ok(&["leads", "untag", anna, "trial"]);
    let promoted = scratch.ok(&["leads", "promote", anna]);
    assert_eq!(
        promoted.trim(),
        "anna.keller@example.test: promoted to contact"
    );
    let again = scratch.ok(&["leads", "promote", anna]);
    assert!(
        again.contains("already a contact") && again.contains("only moves forward"),
        "{again}"
    );
    scratch.ok(&["leads", "suppress", anna, "--reason", "asked by phone"]);
    let shown = scratch.ok(&["leads", "show", anna]);
    assert!(shown.contains("  company    Nordwind AG\n"), "{shown}");
    assert!(shown.contains("  tags       hot, vip\n"), "{shown}");
    assert!(shown.contains("  score      40\n"), "{shown}");
    assert!(shown.contains("  stage      contact\n"), "{shown}");
    assert!(
        shown.contains("  suppressed manual (asked by phone) since"),
        "{shown}"
    );
    assert!(shown.contains("attributes\n  plan  pro\n"), "{shown}");
    assert!(
        !shown.contains("  country"),
        "an empty value removes the attribute: {shown}"
    );
    for line in [
        "company, plan, score, country changed by nurture leads set",
        "tags changed by nurture leads tag",
        "tags changed by nurture leads untag",
        "promoted to contact by hand",
        "suppressed: asked by phone",
    ] {
        assert!(shown.contains(line), "missing `{line}`:\n{shown}");
    }
    scratch.ok(&["leads", "unsuppress", anna]);
    let shown = scratch.ok(&["leads", "show", anna]);
    assert!(
        shown.contains("  suppressed no\n") && shown.contains("no longer suppressed"),
        "{shown}"
    );
}

#[test]
fn suppress_ends_active_enrollments_in_the_same_change() {
    use chrono::{Duration, Utc};
    use nurture::engine::{Enrollment, ExitReason, Facts, Position, Status};
    use nurture::store::{Batch, Store};

    let scratch = Scratch::new("suppress");
    scratch.import_samples();
    let anna = "anna.keller@example.test";
    let now = Utc::now();
    let enrollment = |workflow: &str, status: Status| Enrollment {
        workflow: workflow.into(),
        version: "v1".into(),
        lead: anna.into(),
        due: (status == Status::Active).then(|| now + Duration::days(1)),
        status,
        position: Position::new("welcome", 0),
        enrolled_at: now,
        updated_at: now,
        deferred_from: None,
        facts: Facts::default(),
    };
    {
        // The CLI is not running: this process may open the store.
        let store = Store::open(&scratch.store(), 1 << 20).unwrap();
        let batch = Batch {
            enrollments: vec![
                enrollment("trial-welcome", Status::Active),
                enrollment("newsletter-welcome", Status::Completed),
            ],
            ..Batch::default()
        };
        store.apply(&batch).unwrap();
        store.flush().unwrap();
    }
    let before = scratch.ok(&[
        "leads",
        "list",
        "--workflow",
        "trial-welcome",
        "--format",
        "csv",
    ]);
    assert_eq!(before.lines().count(), 2, "{before}");
    let out = scratch.ok(&["leads", "suppress", anna]);
    assert_eq!(
        out.trim(),
        "anna.keller@example.test: suppressed; ended 1 active enrollment (trial-welcome)"
    );
    let shown = scratch.ok(&["leads", "show", anna]);
    assert!(
        shown.contains(
            "  trial-welcome: exited: the address is suppressed, step welcome, nothing due"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("[trial-welcome] left the workflow: the address is suppressed"),
        "{shown}"
    );
    let store = Store::open(&scratch.store(), 1 << 20).unwrap();
    let ended = store.enrollment("trial-welcome", anna).unwrap().unwrap();
    assert_eq!(ended.status, Status::Exited(ExitReason::Suppressed));
    assert_eq!(ended.due, None);
    assert_eq!(
        store.next_due().unwrap(),
        None,
        "nothing left in the due index"
    );
    let completed = store
        .enrollment("newsletter-welcome", anna)
        .unwrap()
        .unwrap();
    assert_eq!(
        completed.status,
        Status::Completed,
        "ended enrollments stay as they were"
    );
    assert!(store.changed(10).unwrap().contains(&anna.to_string()));
}

#[test]
fn contacts_lists_promoted_leads_with_when_and_why() {
    use chrono::{Duration, TimeZone, Utc};
    use nurture::lead::Stage;
    use nurture::store::{Batch, EventKind, Store};

    let scratch = Scratch::new("contacts");
    assert_eq!(scratch.ok(&["contacts"]).trim(), "no contacts yet");
    scratch.import_samples();
    // The sample file itself makes Hana a customer and Rachel a contact.
    let imported = scratch.ok(&["contacts"]);
    assert_eq!(imported.lines().count(), 3, "{imported}");
    assert!(imported.contains("imported as customer") && imported.contains("imported as contact"));
    scratch.ok(&["leads", "promote", "tom.becker@example.test"]);
    let replied_at = Utc.with_ymd_and_hms(2030, 1, 2, 10, 0, 0).unwrap();
    {
        // What the daemon journals when a reply promotes a lead.
        let store = Store::open(&scratch.store(), 1 << 20).unwrap();
        let anna = "anna.keller@example.test";
        let mut lead = store.lead(anna).unwrap().unwrap();
        lead.stage = Stage::Contact;
        let mut batch = Batch::default();
        let workflow = Some("trial-welcome");
        let received = EventKind::Received {
            what: "reply".into(),
        };
        batch.event(anna, replied_at, workflow, received);
        let promoted = EventKind::Promoted {
            stage: Stage::Contact,
            by: "workflow `trial-welcome`".into(),
        };
        batch.event(anna, replied_at + Duration::seconds(1), workflow, promoted);
        batch.leads.push(lead);
        store.apply(&batch).unwrap();
        store.flush().unwrap();
    }
    let table = scratch.ok(&["contacts"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(
        lines[1].starts_with("anna.keller@example.test"),
        "newest first: {table}"
    );
    assert!(lines[1].contains("2030-01-02 10:00:01 UTC"), "{table}");
    assert!(lines[1].contains("workflow `trial-welcome`"), "{table}");
    assert!(lines[1].ends_with("reply received"), "{table}");
    assert!(lines[2].starts_with("tom.becker@example.test") && lines[2].contains("by hand"));
    assert!(lines[3].contains("imported as") && lines[4].contains("imported as"));
    let json: serde_json::Value =
        serde_json::from_str(&scratch.ok(&["contacts", "--format", "json"])).unwrap();
    assert_eq!(json[0]["workflow"], "trial-welcome");
    assert_eq!(json[0]["why"], "reply received");
    assert_eq!(json[1]["email"], "tom.becker@example.test");
    assert!(json[1]["why"].is_null());
}

// ---- one person, one lead; addresses the sender takes; a private store (issue 10) ----

/// The one lead `leads list --format json` shows, with its address and company.
fn only_lead(scratch: &Scratch) -> (String, String) {
    let listed: serde_json::Value =
        serde_json::from_str(&scratch.ok(&["leads", "list", "--format", "json"])).unwrap();
    let leads = listed.as_array().unwrap();
    assert_eq!(leads.len(), 1, "one person, one lead: {listed}");
    let text = |field: &str| leads[0][field].as_str().unwrap_or_default().to_string();
    (text("email"), text("company"))
}

// Issue 10: `DANA.SCULLY@…` and `dana.scully@…` were two leads: both got the sequence, and
// suppressing one left the other mailable.
#[test]
fn one_address_in_two_cases_imports_as_one_lead_spelled_as_first_seen() {
    let scratch = Scratch::new("one-person");
    let file = scratch.write(
        "leads.csv",
        "email,first_name,company\n\
         Dana.Scully@fbi.example,Dana,\n\
         dana.scully@FBI.example,,FBI\n",
    );
    scratch.ok(&["leads", "import", file.to_str().unwrap()]);
    assert_eq!(
        only_lead(&scratch),
        ("Dana.Scully@fbi.example".into(), "FBI".into())
    );

    // A later file in yet another case updates the same lead; the spelling stays.
    let later = scratch.write(
        "later.csv",
        "email,company\nDANA.SCULLY@fbi.example,Federal Bureau\n",
    );
    let imported = scratch.ok(&["leads", "import", later.to_str().unwrap()]);
    assert!(imported.contains("0 created, 1 updated"), "{imported}");
    assert_eq!(
        only_lead(&scratch),
        ("Dana.Scully@fbi.example".into(), "Federal Bureau".into())
    );

    // Any spelling finds it, and suppressing it by any spelling suppresses the one person.
    let shown = scratch.ok(&["leads", "show", "dana.scully@fbi.example"]);
    assert!(shown.starts_with("Dana.Scully@fbi.example"), "{shown}");
    scratch.ok(&["leads", "suppress", "DANA.scully@fbi.example"]);
    let shown = scratch.ok(&[
        "leads",
        "show",
        "Dana.Scully@fbi.example",
        "--format",
        "json",
    ]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["lead"]["suppression"]["reason"], "manual", "{shown}");
}

// Issue 10: these were accepted by import, then refused by the sender at send time, silently.
#[test]
fn addresses_the_sender_would_refuse_are_rejected_at_import_with_their_line() {
    let scratch = Scratch::new("unsendable");
    let file = scratch.write(
        "leads.csv",
        "email,first_name\n\
         .dot@x.example,Dot\n\
         x..y@x.example,Double\n\
         a@b@x.example,Twice\n\
         ok@x.example,Ok\n",
    );
    let run = scratch.run(&["leads", "import", file.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "rejected rows do not fail the import");
    let stderr = run.stderr();
    for expected in [
        "leads.csv:2: bad email address: `.dot@x.example` cannot be sent to: the part before the `@` starts or ends with a dot",
        "leads.csv:3: bad email address: `x..y@x.example` cannot be sent to: the part before the `@` has two dots in a row",
        "leads.csv:4: bad email address: `a@b@x.example` cannot be sent to: the part before the `@` contains another `@`",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    assert_eq!(only_lead(&scratch).0, "ok@x.example");
}

// Issue 10: with the default umask the store was 0755/0644: any local user read every lead
// and the unsubscribe key (so could forge unsubscribe links).
#[test]
fn the_store_and_the_outbox_are_private_even_under_a_permissive_umask() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new("private");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let outbox = scratch.dir.join("outbox");
    let under_umask_000 = |args: &[&str]| {
        let output = Command::new("sh")
            .arg("-c")
            .arg(r#"umask 000 && exec "$0" "$@""#)
            .arg(env!("CARGO_BIN_EXE_nurture"))
            .args(args)
            .current_dir(&scratch.dir)
            .env("NURTURE_STORE_PATH", scratch.store())
            .env("NURTURE_TRANSPORT_OUTBOX", &outbox)
            .env("NURTURE_WORKFLOWS", repo.join("workflows"))
            .env("NURTURE_TEMPLATES", repo.join("templates"))
            .env_remove("NURTURE_CONFIG")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    };
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    // The shell's umask is really permissive: a file it makes is world-writable.
    under_umask_000(&["leads", "list"]);
    let probe = scratch.dir.join("probe");
    let made = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000 && : > "$0""#)
        .arg(&probe)
        .status()
        .unwrap();
    assert!(made.success());
    assert_eq!(mode(&probe), 0o666);

    under_umask_000(&["leads", "import", sample_csv().to_str().unwrap()]);
    let store = scratch.store();
    assert_eq!(mode(&store), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&store).unwrap() {
        let path = entry.unwrap().path();
        let expected = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), expected, "{}", path.display());
        files += usize::from(path.is_file());
    }
    assert!(files >= 2, "sled's files were checked");

    // The daemon's file transport: the outbox folder is the owner's alone.
    let empty = scratch.dir.join("empty-store");
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_nurture"))
        .args(["run", "--until-idle"])
        .current_dir(&scratch.dir)
        .env("NURTURE_STORE_PATH", &empty)
        .env("NURTURE_TRANSPORT_OUTBOX", &outbox)
        .env("NURTURE_WORKFLOWS", repo.join("workflows"))
        .env("NURTURE_TEMPLATES", repo.join("templates"))
        .env_remove("NURTURE_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(mode(&outbox), 0o700);
    assert_eq!(mode(&empty), 0o700);

    // The emails in it too: the sample leads' welcomes, on a Monday morning in their windows.
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_nurture"))
        .args(["run", "--until-idle"])
        .current_dir(&scratch.dir)
        .env("NURTURE_STORE_PATH", scratch.store())
        .env("NURTURE_TRANSPORT_OUTBOX", &outbox)
        .env("NURTURE_DAEMON_REHEARSAL_START", "2026-11-23T10:00:00Z")
        .env("NURTURE_WORKFLOWS", repo.join("workflows"))
        .env("NURTURE_TEMPLATES", repo.join("templates"))
        .env_remove("NURTURE_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let emails: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(!emails.is_empty(), "welcome emails were written");
    for email in emails {
        assert_eq!(mode(&email), 0o600, "{}", email.display());
    }
}

// Issue 10: a store from a nurture that told the two spellings apart is merged when first
// opened, and the command says so.
#[test]
fn a_store_holding_one_person_twice_is_merged_when_opened_and_the_command_says_so() {
    use chrono::{TimeZone, Utc};
    use nurture::lead::Lead;

    let scratch = Scratch::new("upgrade");
    {
        // Version 1's layout: leads keyed by the address as spelled.
        let db = sled::open(scratch.store()).unwrap();
        let leads = db.open_tree("leads").unwrap();
        for (email, hour) in [
            ("Dana.Scully@fbi.example", 1),
            ("dana.scully@fbi.example", 2),
        ] {
            let created = Utc.with_ymd_and_hms(2026, 1, 1, hour, 0, 0).unwrap();
            let mut value = vec![1u8];
            value.extend(serde_json::to_vec(&Lead::new(email.into(), created)).unwrap());
            leads.insert(email, value).unwrap();
        }
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", &1u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let run = scratch.run(&["leads", "list", "--format", "json"]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stderr().contains(
            "note: store upgraded: merged `dana.scully@fbi.example` into `Dana.Scully@fbi.example`"
        ),
        "{}",
        run.stderr()
    );
    assert_eq!(only_lead(&scratch).0, "Dana.Scully@fbi.example");
    // Said once: the store is at the new version now.
    assert_eq!(scratch.run(&["leads", "list"]).stderr(), "");
}

// ---------------------------------------------------------------------------------------------
// Import that never loses a row in silence; list, show and export that survive any stored
// value (issue 10). Each test below failed on the import that read CSV through the `csv` crate.
// ---------------------------------------------------------------------------------------------

/// The leads the store holds, by address, as the JSON list gives them.
fn stored(scratch: &Scratch) -> std::collections::BTreeMap<String, serde_json::Value> {
    let listed = scratch.ok(&["leads", "list", "--format", "json"]);
    let leads: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    leads
        .into_iter()
        .map(|lead| (lead["email"].as_str().unwrap().to_string(), lead))
        .collect()
}

/// One unclosed quote used to swallow every row after it ("3 rows read" for a 9-row file, and
/// no warning): now it costs its own row, reported on its line, and the rest import.
#[test]
fn an_unclosed_quote_costs_only_its_row_and_reading_resumes_on_the_next_line() {
    let scratch = Scratch::new("unclosed-quote");
    let file = scratch.write(
        "leads.csv",
        "email,first_name,company\n\
         a@acme.example,Ana,Acme\n\
         b@acme.example,Bo,\"Beta, Inc\n\
         c@acme.example,Cy,Cyberdyne\n\
         d@acme.example,Di,\"Dee, Ltd\"\n\
         e@acme.example,Ed,Eee\n\
         f@acme.example,Fy,Fff\n\
         g@acme.example,Gil,Ggg\n\
         h@acme.example,Hal,Hhh\n\
         i@acme.example,Ida,Iii\n",
    );
    let run = scratch.run(&["leads", "import", file.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        run.stdout().trim(),
        "9 rows read: 8 created, 0 updated, 0 unchanged, 1 rejected"
    );
    let stderr = run.stderr();
    assert!(
        stderr.contains("leads.csv:3: unclosed quote in column 3 (`company`)"),
        "{stderr}"
    );
    assert!(stderr.contains("reading resumes at line 4"), "{stderr}");
    let leads = stored(&scratch);
    assert_eq!(leads.len(), 8);
    assert!(!leads.contains_key("b@acme.example"));
    assert_eq!(leads["c@acme.example"]["company"], "Cyberdyne");
    assert_eq!(leads["d@acme.example"]["company"], "Dee, Ltd");
}

/// A `;`- or tab-separated file was refused ("no `email` column") with no hint.
#[test]
fn semicolon_and_tab_separated_files_import_and_a_separator_can_be_chosen() {
    let scratch = Scratch::new("separators");
    let semicolons = scratch.write(
        "semicolons.csv",
        "E-Mail;First Name;Company\nana@acme.example;Ana;\"Acme; Söhne\"\n",
    );
    let tabs = scratch.write(
        "tabs.csv",
        "email\tfirst_name\tcompany\nbo@acme.example\tBo\tBeta, Inc\n",
    );
    let pipes = scratch.write("pipes.csv", "email|first_name\ncy@acme.example|Cy\n");
    for file in [&semicolons, &tabs] {
        let out = scratch.ok(&["leads", "import", file.to_str().unwrap()]);
        assert_eq!(
            out.trim(),
            "1 row read: 1 created, 0 updated, 0 unchanged, 0 rejected"
        );
    }
    let chosen = scratch.ok(&[
        "leads",
        "import",
        pipes.to_str().unwrap(),
        "--delimiter",
        "|",
    ]);
    assert!(chosen.starts_with("1 row read: 1 created"), "{chosen}");
    let leads = stored(&scratch);
    assert_eq!(leads["ana@acme.example"]["company"], "Acme; Söhne");
    assert_eq!(leads["bo@acme.example"]["company"], "Beta, Inc");
    assert_eq!(leads["cy@acme.example"]["first_name"], "Cy");

    let run = scratch.run(&["leads", "import", "x.csv", "--delimiter", "::"]);
    assert_eq!(run.code(), 2, "a bad --delimiter is a usage error");
    assert!(
        run.stderr().contains("is not a separator"),
        "{}",
        run.stderr()
    );
}

/// A Latin-1 (Windows-1252) row was dropped as "not UTF-8 text".
#[test]
fn windows_1252_rows_are_read_or_an_encoding_is_chosen() {
    let scratch = Scratch::new("latin1");
    let file = scratch.dir.join("latin1.csv");
    std::fs::write(
        &file,
        b"email,first_name,company\nj@acme.example,J\xfcrgen,Fa\xe7ade \x80 GmbH\nm@acme.example,M\xc3\xbcller,Acme\n",
    )
    .unwrap();
    let run = scratch.run(&["leads", "import", file.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        run.stdout().trim(),
        "2 rows read: 2 created, 0 updated, 0 unchanged, 0 rejected"
    );
    assert!(
        run.stderr().contains(
            "latin1.csv: 1 row is not UTF-8 text, read as Windows-1252 (Latin-1), the first on line 2"
        ),
        "{}",
        run.stderr()
    );
    let leads = stored(&scratch);
    assert_eq!(leads["j@acme.example"]["first_name"], "Jürgen");
    assert_eq!(leads["j@acme.example"]["company"], "Façade € GmbH");
    assert_eq!(leads["m@acme.example"]["first_name"], "Müller");

    let other = Scratch::new("latin1-utf8");
    let run = other.run(&[
        "leads",
        "import",
        file.to_str().unwrap(),
        "--encoding",
        "utf-8",
    ]);
    assert_eq!(
        run.stdout().trim(),
        "2 rows read: 1 created, 0 updated, 0 unchanged, 1 rejected"
    );
    assert!(
        run.stderr().contains(
            "latin1.csv:2: column 2 (`first_name`) is not UTF-8 text; if the file is Windows-1252 (Latin-1), import it with --encoding windows-1252"
        ),
        "{}",
        run.stderr()
    );
    let chosen = Scratch::new("latin1-chosen");
    let out = chosen.ok(&[
        "leads",
        "import",
        file.to_str().unwrap(),
        "--encoding",
        "latin1",
    ]);
    assert!(out.starts_with("2 rows read: 2 created"), "{out}");
    assert_eq!(stored(&chosen)["m@acme.example"]["first_name"], "MÃ¼ller");
}

/// Line numbers were those of data rows in some files (a BOM and CRLF made `bad` on line 3
/// "line 2"): now they are the file's own lines, where the row starts.
#[test]
fn rejected_rows_are_reported_at_the_file_line_where_they_start() {
    let scratch = Scratch::new("file-lines");
    let file = scratch.write(
        "excel.csv",
        "\u{feff}email,first_name,notes\r\n\
         ana@acme.example,Ana,\"first line\r\nsecond line\r\nthird line\"\r\n\
         \r\n\
         not-an-address,Bo,\r\n\
         cy@acme.example,Cy,\"one\ntwo\"\r\n\
         dy@acme.example,Dy,Mars/Olympus,extra\r\n",
    );
    let run = scratch.run(&["leads", "import", file.to_str().unwrap()]);
    assert_eq!(
        run.stdout().trim(),
        "4 rows read: 2 created, 0 updated, 0 unchanged, 2 rejected"
    );
    let stderr = run.stderr();
    assert!(
        stderr.contains("excel.csv:6: bad email address: `not-an-address` has no `@`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("excel.csv:9: expected 3 cells like the header, found 4"),
        "{stderr}"
    );
    let leads = stored(&scratch);
    assert_eq!(
        leads["ana@acme.example"]["attributes"]["notes"],
        "first line\r\nsecond line\r\nthird line"
    );
}

/// A 10 MB cell was accepted, and then `leads list` panicked ("Formatting argument out of
/// range"); a row that repeats an address was counted nowhere, so the summary did not add up.
#[test]
fn a_huge_cell_is_refused_by_line_and_column_and_every_row_is_counted() {
    let scratch = Scratch::new("huge-cell");
    let mut text = String::from("email,first_name,notes\nana@acme.example,Ana,short\n");
    text.push_str("bo@acme.example,Bo,");
    text.push_str(&"x".repeat(10 * 1024 * 1024));
    text.push_str("\nana@acme.example,Anna,\ncy@acme.example,Cy,fine\n");
    let file = scratch.write("huge.csv", &text);
    let run = scratch.run(&["leads", "import", file.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        run.stdout().trim(),
        "4 rows read: 2 created, 0 updated, 0 unchanged, \
         1 merged (same address as an earlier row), 1 rejected"
    );
    assert!(
        run.stderr().contains(
            "huge.csv:3: column 3 (`notes`) holds more than 64 KiB; a cell may hold at most 64 KiB"
        ),
        "{}",
        run.stderr()
    );
    assert_eq!(stored(&scratch)["ana@acme.example"]["first_name"], "Anna");
}

/// Whatever a store holds (a 10 MB company from an older import, escape sequences and newlines
/// from a file), `leads list` and `leads show` print without panicking, one line per lead, and
/// never write a control character to the terminal.
#[test]
fn list_and_show_survive_any_stored_value_and_escape_control_characters() {
    use nurture::lead::{Lead, Value};
    use nurture::store::{Batch, Store};

    let scratch = Scratch::new("hostile-values");
    {
        let store = Store::open(&scratch.store(), 1 << 20).unwrap();
        let now = chrono::Utc::now();
        let mut huge = Lead::new("huge@acme.example".into(), now);
        huge.company = Some("C".repeat(10 * 1024 * 1024));
        huge.attributes
            .insert("y".repeat(70_000), Value::Text("long key".into()));
        let mut evil = Lead::new("evil@acme.example".into(), now);
        evil.first_name = Some("Eve\u{1b}[2J\u{1b}[31m".into());
        evil.company = Some("Two\nLines\tInc\u{202e}".into());
        let mut batch = Batch::default();
        batch.leads.push(huge);
        batch.leads.push(evil);
        store.apply(&batch).unwrap();
        store.flush().unwrap();
    }
    let table = scratch.ok(&["leads", "list"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "{table:?}"
    );
    assert!(
        table.contains(r"Eve\u{1b}[2J\u{1b}[31m") && table.contains(r"Two\nLines\tInc\u{202e}"),
        "{table}"
    );
    assert!(
        table.lines().all(|line| line.chars().count() < 400),
        "long cells are cut in the table"
    );
    let show = scratch.ok(&["leads", "show", "evil@acme.example"]);
    assert!(
        show.contains(r"company    Two\nLines\tInc\u{202e}"),
        "{show}"
    );
    assert!(!show.contains('\u{1b}'), "{show:?}");
    let show = scratch.ok(&["leads", "show", "huge@acme.example"]);
    assert!(
        show.contains("more characters; --format json shows all"),
        "long values are cut in show"
    );
    let json = scratch.ok(&["leads", "show", "huge@acme.example", "--format", "json"]);
    assert!(
        json.len() > 10 * 1024 * 1024,
        "JSON keeps every value whole"
    );
}

/// A cell starting with `=`, `+`, `-` or `@` ran as a formula when the export was opened in a
/// spreadsheet. Now it gets a leading `'`, which the import takes off again.
#[test]
fn csv_export_neutralizes_formulas_and_imports_back_to_the_same_values() {
    let scratch = Scratch::new("formulas");
    let file = scratch.write(
        "formulas.csv",
        "email,first_name,company,tags,score,plan,note\n\
         ana@acme.example,@SUM(A1),\"=HYPERLINK(\"\"http://evil.example\"\")\",-trial,-5,+pro,-1+2\n",
    );
    scratch.ok(&["leads", "import", file.to_str().unwrap()]);
    let before = stored(&scratch);
    let export = scratch.ok(&["leads", "export"]);
    let row = export.lines().nth(1).unwrap();
    assert_eq!(
        row,
        "ana@acme.example,'@SUM(A1),,\"'=HYPERLINK(\"\"http://evil.example\"\")\",,'-trial,,-5,lead,,'-1+2,'+pro",
        "{export}"
    );
    let out = scratch.write("export.csv", &export);
    let other = Scratch::new("formulas-back");
    other.ok(&["leads", "import", out.to_str().unwrap()]);
    let after = stored(&other);
    for field in ["first_name", "company", "tags", "score", "attributes"] {
        assert_eq!(
            after["ana@acme.example"][field], before["ana@acme.example"][field],
            "{field}"
        );
    }
    assert_eq!(
        after["ana@acme.example"]["company"],
        "=HYPERLINK(\"http://evil.example\")"
    );
}

// Issue 13: dates in leads files are read as dates, kept in one form, and a malformed one is
// reported at its line with its field instead of being kept as text no condition can order.
#[test]
fn dates_import_in_their_canonical_form_and_a_bad_one_is_reported_at_its_line() {
    let scratch = Scratch::new("import-dates");
    let file = scratch.write(
        "leads.csv",
        "email,trial_ends,offer_ends,order_ref\n\
         ana@acme.example,2026-12-04,2026-12-24 18:00:00+01:00,ACME-2026\n\
         bo@acme.example,2026-02-30,,\n\
         cy@acme.example,2026-12-10,2026-13-01T10:00,\n",
    );
    let run = scratch.run(&["leads", "import", file.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "rejected rows do not fail the import");
    assert_eq!(
        run.stdout().trim(),
        "3 rows read: 1 created, 0 updated, 0 unchanged, 2 rejected"
    );
    let stderr = run.stderr();
    for expected in [
        "leads.csv:3: `trial_ends`: `2026-02-30` is not a valid date",
        "leads.csv:4: `offer_ends`: `2026-13-01T10:00` is not a valid date",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    let shown = scratch.ok(&["leads", "show", "ana@acme.example", "--format", "json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let attributes = &shown["lead"]["attributes"];
    assert_eq!(attributes["trial_ends"], "2026-12-04", "{shown}");
    assert_eq!(attributes["offer_ends"], "2026-12-24T17:00:00Z", "{shown}");
    assert_eq!(
        attributes["order_ref"], "ACME-2026",
        "text that is not a date stays text"
    );

    // JSON Lines go through the same rules, with the line of the object.
    let jsonl = scratch.write(
        "leads.jsonl",
        "{\"email\": \"dy@acme.example\", \"trial_ends\": \"2026-12-04T09:00\"}\n\
         {\"email\": \"ed@acme.example\", \"attributes\": {\"trial_ends\": \"2026-11-31\"}}\n",
    );
    let run = scratch.run(&["leads", "import", jsonl.to_str().unwrap()]);
    assert!(
        run.stderr()
            .contains("leads.jsonl:2: `trial_ends`: `2026-11-31` is not a valid date"),
        "{}",
        run.stderr()
    );
}
