//! Golden tests of rendered diagnostics, and what valid files compile to.
//!
//! Each `tests/fixtures/diagnostics/<case>.flow` is compiled against a fixed set of templates;
//! the `Display` of every diagnostic, joined, must equal `<case>.expected`. On a mismatch the
//! actual output is written to `<case>.actual` beside it (diff the two, and rename it to
//! `.expected` when the change is intended).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use nurture::dsl::{self, Compiled};
use nurture::lead::{Stage, Value};
use nurture::workflow::{
    Action, CompareOp, Condition, Instr, NotifyTarget, Wait, WaitLength, Weekdays, WindowZone,
};

const FIXTURES: &str = "tests/fixtures/diagnostics";

fn templates() -> BTreeSet<String> {
    [
        "welcome",
        "nudge",
        "case-study",
        "demo-offer",
        "last-chance",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

fn compile(source: &str) -> Compiled {
    dsl::compile(Path::new("test.flow"), source, &templates())
}

fn render(compiled: &Compiled) -> String {
    compiled
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn golden_diagnostics() {
    // Relative paths keep the rendered `-->` lines stable wherever the repository lives.
    let mut cases: Vec<PathBuf> = fs::read_dir(FIXTURES)
        .expect("the fixtures folder exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "flow"))
        .map(|path| Path::new(FIXTURES).join(path.file_name().expect("a file name")))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no fixtures in {FIXTURES}");

    let mut failures = Vec::new();
    for case in &cases {
        let source = fs::read_to_string(case).expect("readable fixture");
        // The same bytes whatever git did to line endings on checkout.
        let source = source.replace("\r\n", "\n");
        let compiled = dsl::compile(case, &source, &templates());
        let actual = render(&compiled);
        let expected_path = case.with_extension("expected");
        let actual_path = case.with_extension("actual");
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_default()
            .replace("\r\n", "\n");
        if actual == expected {
            let _ = fs::remove_file(&actual_path);
        } else {
            fs::write(&actual_path, &actual).expect("write the .actual file");
            failures.push(format!(
                "{} differs: diff {} {}",
                case.display(),
                expected_path.display(),
                actual_path.display()
            ));
        }
        assert!(
            !actual.is_empty(),
            "{}: every fixture should produce a diagnostic",
            case.display()
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Compares `actual` with the golden file `expected`; on a mismatch writes `<expected>.actual`
/// beside it and returns what to diff.
fn golden(expected: &Path, actual: &str) -> Option<String> {
    let mut actual_path = expected.as_os_str().to_owned();
    actual_path.push(".actual");
    let actual_path = PathBuf::from(actual_path);
    let wanted = fs::read_to_string(expected)
        .unwrap_or_default()
        .replace("\r\n", "\n");
    if actual == wanted {
        let _ = fs::remove_file(&actual_path);
        return None;
    }
    fs::write(&actual_path, actual).expect("write the .actual file");
    Some(format!(
        "diff {} {}",
        expected.display(),
        actual_path.display()
    ))
}

/// Template fields used without a guard (`template_fields/`): a near miss of a lead field, of
/// an attribute a workflow names, or of a template extra is an error with a did-you-mean; a
/// field some leads may lack is a warning; a name no lead has is an error once the store's
/// attributes are known (`expected-with-store`), a warning without them.
#[test]
fn template_fields_no_lead_can_have_are_errors() {
    let dir = Path::new(FIXTURES).join("template_fields");
    let render = |project: &nurture::project::Project| {
        project
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let workflows = [dir.join("workflows")];
    let templates = dir.join("templates");
    let without = nurture::project::Project::load(&workflows, &templates);
    let stored = BTreeSet::from(["seats".to_string(), "employees".to_string()]);
    let with = nurture::project::Project::load_knowing(&workflows, &templates, Some(stored));
    let failures: Vec<String> = [
        golden(&dir.join("expected"), &render(&without)),
        golden(&dir.join("expected-with-store"), &render(&with)),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_eq!(
        without.workflows.len(),
        1,
        "template errors leave the workflow valid"
    );
}

const VALID: &str = r#"
# Leads who asked for a trial on the website.
workflow "trial-welcome" {
  enroll when lead.source is "website-form" and lead.tags has "trial"
  from "Ana Ortiz <ana@ACME.example>"
  reply to "sales@acme.example"
  owner "Sales <sales@acme.example>"
  timezone "Europe/Berlin"
  send on Mon-Fri between 09:00 and 17:30 in workflow timezone

  on auto-reply { pause until return }
  on bounce { tag "bounced"; continue }

  step welcome {
    send "welcome" subject "Welcome aboard, {{first_name}}!"
    wait 2 days
  }
  step nudge {
    if lead.score >= 20 {
      send "demo-offer" subject "A 15-minute demo, {{first_name}}?"
    } else if lead.country in ["DE", "AT"] {
      send "case-study" subject "How Globex cut churn by 30%"
    } else {
      score +5
    }
    wait 3 business days
  }
  step breakup {
    if not replied { send "last-chance" subject "Should I close your file?" ; goto later }
    set lead.plan to "pro"
  }
  step later {
    wait until Tue, Thu 10:00
    goto breakup
  }
}
"#;

#[test]
fn valid_file_compiles_to_the_expected_program() {
    let compiled = compile(VALID);
    assert!(compiled.diagnostics.is_empty(), "{}", render(&compiled));
    let workflow = compiled.workflow.expect("a workflow");

    assert_eq!(workflow.name, "trial-welcome");
    assert_eq!(workflow.from.to_string(), "Ana Ortiz <ana@acme.example>");
    assert_eq!(workflow.reply_to.unwrap().address, "sales@acme.example");
    assert_eq!(workflow.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(workflow.version.len(), 16);
    let window = workflow.window.expect("a send window");
    assert_eq!(window.days, Weekdays::BUSINESS);
    assert_eq!(window.zone, WindowZone::Workflow);
    assert!(matches!(
        workflow.enroll,
        Some(Condition::And(ref left, ref right))
            if matches!(**left, Condition::Compare { ref field, op: CompareOp::Eq, .. } if field == "source")
            && **right == Condition::HasTag("trial".into())
    ));

    // Handlers: `on reply` is left out, so it gets the default (with the owner notified).
    assert!(matches!(
        workflow.handlers.reply.as_slice(),
        [
            Instr::Act(Action::Promote(Stage::Contact)),
            Instr::Act(Action::Notify(NotifyTarget::Owner)),
            Instr::Exit
        ]
    ));
    assert!(matches!(
        workflow.handlers.auto_reply.as_slice(),
        [Instr::PauseUntilReturn]
    ));
    // `continue` jumps to the end of the handler.
    assert!(matches!(
        workflow.handlers.bounce.as_slice(),
        [Instr::Act(Action::Tag(_)), Instr::Jump(2)]
    ));
    assert!(matches!(
        workflow.handlers.unsubscribe.as_slice(),
        [Instr::Exit]
    ));

    let names: Vec<&str> = workflow.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["welcome", "nudge", "breakup", "later"]);
    assert!(matches!(
        workflow.steps[0].code[1],
        Instr::Wait(Wait::For(WaitLength::Days(2)))
    ));

    // if / else if / else flattened:
    // 0 Branch(score >= 20, else→3) 1 Send 2 Jump(7)
    // 3 Branch(country in …, else→6) 4 Send 5 Jump(7) 6 Score(5) 7 Wait
    let nudge = &workflow.steps[1].code;
    assert_eq!(nudge.len(), 8);
    assert!(
        matches!(&nudge[0], Instr::Branch { text, else_to: 3, .. } if text == "lead.score >= 20")
    );
    assert!(matches!(nudge[2], Instr::Jump(7)));
    assert!(
        matches!(&nudge[3], Instr::Branch { else_to: 6, condition: Condition::In { field, values }, .. }
        if field == "country" && values == &[Value::Text("DE".into()), Value::Text("AT".into())])
    );
    assert!(matches!(nudge[5], Instr::Jump(7)));
    assert!(matches!(nudge[6], Instr::Act(Action::Score(5))));
    assert!(matches!(nudge[7], Instr::Wait(Wait::BusinessDays(3))));

    // An `if` without `else` needs no jump; `goto` is a step index.
    let breakup = &workflow.steps[2].code;
    assert!(
        matches!(&breakup[0], Instr::Branch { text, else_to: 3, condition: Condition::Not(_) } if text == "not replied")
    );
    assert!(matches!(breakup[2], Instr::Goto(3)));
    assert!(matches!(&breakup[3], Instr::Act(Action::Set { field, .. }) if field == "plan"));
    assert!(matches!(
        &workflow.steps[3].code[0],
        Instr::Wait(Wait::UntilWeekday { days, .. })
            if days.contains(chrono::Weekday::Tue) && days.contains(chrono::Weekday::Thu)
            && !days.contains(chrono::Weekday::Mon)
    ));
}

#[test]
fn defaults_without_owner_or_timezone() {
    let compiled = compile(
        r#"workflow "w" { from "a@b.example"; send on weekends between 10:00 and 12:00
           step s { send "welcome" subject "Hi" } }"#,
    );
    assert!(compiled.diagnostics.is_empty(), "{}", render(&compiled));
    let workflow = compiled.workflow.expect("a workflow");
    assert_eq!(workflow.timezone, chrono_tz::Tz::UTC);
    assert_eq!(workflow.window.unwrap().zone, WindowZone::Lead);
    assert!(matches!(
        workflow.handlers.reply.as_slice(),
        [Instr::Act(Action::Promote(Stage::Contact)), Instr::Exit]
    ));
    assert!(workflow.handlers.auto_reply.is_empty());
    assert!(matches!(workflow.handlers.bounce.as_slice(), [Instr::Exit]));
}

#[test]
fn warnings_do_not_prevent_compilation() {
    let compiled = compile(r#"workflow "w" { from "a@b.example" step empty { } }"#);
    assert_eq!(compiled.diagnostics.len(), 1);
    assert!(!compiled.diagnostics[0].is_error());
    assert!(compiled.workflow.is_some());
}

#[test]
fn version_changes_with_the_source() {
    let a = compile(r#"workflow "w" { from "a@b.example" }"#)
        .workflow
        .unwrap();
    let b = compile(r#"workflow "w" { from "a@b.example"  }"#)
        .workflow
        .unwrap();
    assert_ne!(a.version, b.version);
    assert_eq!(
        a.version,
        compile(r#"workflow "w" { from "a@b.example" }"#)
            .workflow
            .unwrap()
            .version
    );
}

#[test]
fn load_reports_duplicate_names_across_files() {
    let dir = std::env::temp_dir().join(format!("nurture-dsl-load-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("a.flow"),
        "workflow \"same\" { from \"a@b.example\" }\n",
    )
    .unwrap();
    fs::write(
        dir.join("b.flow"),
        "workflow \"same\" { from \"c@d.example\" }\n",
    )
    .unwrap();
    fs::write(
        dir.join("c.flow"),
        "workflow \"other\" { from \"c@d.example\" }\n",
    )
    .unwrap();
    fs::write(dir.join("notes.txt"), "not a workflow").unwrap();

    let loaded = dsl::load(&[dir.clone(), dir.join("missing.flow")], &templates());
    let names: Vec<&str> = loaded.workflows.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["same", "other"]);
    assert_eq!(loaded.diagnostics.len(), 2, "{:?}", loaded.diagnostics);
    let duplicate = &loaded.diagnostics[0];
    assert_eq!(duplicate.message, "two workflows are named `same`");
    let location = duplicate.location.as_ref().unwrap();
    assert_eq!(location.path, dir.join("b.flow"));
    assert_eq!((location.line, location.column), (1, 10));
    assert!(duplicate.hint.as_ref().unwrap().contains("a.flow"));
    assert!(loaded.diagnostics[1].message.starts_with("cannot read"));
    fs::remove_dir_all(&dir).unwrap();
}

// Issue 13: a lead has one score, so one `scoring` block holds the rules for every workflow.
#[test]
fn one_scoring_block_serves_every_workflow_and_a_second_is_refused() {
    let dir = std::env::temp_dir().join(format!("nurture-dsl-scoring-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let scored = "workflow \"a\" {\n  from \"a@b.example\"\n  scoring { +20 on event \"visited-pricing\"; hot at 40 }\n}\n";
    fs::write(dir.join("a.flow"), scored).unwrap();
    fs::write(
        dir.join("b.flow"),
        "workflow \"b\" {\n  from \"a@b.example\"\n  when lead becomes hot { tag \"sales-ready\" }\n}\n",
    )
    .unwrap();
    let loaded = dsl::load(std::slice::from_ref(&dir), &templates());
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    for workflow in &loaded.workflows {
        assert_eq!(workflow.scoring.hot, 40, "{}", workflow.name);
        assert_eq!(workflow.scoring.rules.len(), 1, "{}", workflow.name);
    }

    fs::write(dir.join("c.flow"), scored.replace("\"a\"", "\"c\"")).unwrap();
    let loaded = dsl::load(std::slice::from_ref(&dir), &templates());
    assert_eq!(loaded.diagnostics.len(), 1, "{:?}", loaded.diagnostics);
    let second = &loaded.diagnostics[0];
    assert_eq!(second.message, "a second `scoring` block");
    assert_eq!(second.location.as_ref().unwrap().path, dir.join("c.flow"));
    assert!(second.hint.as_ref().unwrap().contains("a.flow"));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn files_larger_than_the_limit_are_refused() {
    // Generated rather than a fixture: a golden file over a megabyte would bloat the repository.
    let source = format!(
        "workflow \"big\" {{ from \"a@b.example\" }}\n{}",
        "#".repeat(dsl::MAX_FILE_BYTES)
    );
    let compiled = compile(&source);
    assert!(compiled.workflow.is_none());
    assert_eq!(
        render(&compiled),
        format!(
            "error: this file is too large ({} bytes); a workflow file is at most {} bytes\n  \
             --> test.flow\n  = hint: split it into several workflows\n",
            source.len(),
            dsl::MAX_FILE_BYTES
        )
    );
}

/// `nurture check` with the store at hand: it says how many enrollments an edit inside a step
/// moves and where they continue, and a template field no stored lead has is an error.
#[test]
fn check_with_a_store_reports_enrollments_inside_an_edited_step() {
    use std::process::Command;

    use chrono::{TimeZone, Utc};
    use nurture::engine::{Input, advance, enroll};
    use nurture::lead::Lead;
    use nurture::store::{Batch, DEFAULT_CACHE_BYTES, Store};

    let dir = crate::support::scratch("check-edited-step");
    let (workflows, templates) = (dir.join("workflows"), dir.join("templates"));
    fs::create_dir_all(&workflows).unwrap();
    fs::create_dir_all(&templates).unwrap();
    for (name, body) in [("a", "A {{email}}"), ("b", "B {{industry}}")] {
        fs::write(templates.join(format!("{name}.html.hbs")), body).unwrap();
        fs::write(templates.join(format!("{name}.txt.hbs")), body).unwrap();
    }
    let flow = workflows.join("drip.flow");
    let original = "workflow \"drip\" {\n  from \"ana@example.test\"\n  step welcome {\n    send \"a\" subject \"One\"\n    wait 2 days\n    send \"b\" subject \"Two\"\n  }\n}\n";
    fs::write(&flow, original).unwrap();

    // Three leads got `a` and wait in step `welcome`.
    {
        let project = nurture::project::Project::load(std::slice::from_ref(&workflows), &templates);
        let workflow = project.workflow("drip").expect("the workflow compiles");
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap();
        let mut batch = Batch::default();
        for i in 0..3 {
            let mut lead = Lead::new(format!("lead{i}@example.test"), now);
            lead.attributes
                .insert("industry".into(), Value::Text("logistics".into()));
            let outcome = advance(
                workflow,
                &enroll(workflow, &lead, now),
                &lead,
                &Input::Due,
                now,
            );
            batch.enrollments.push(outcome.enrollment);
            batch.leads.push(lead);
        }
        let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
        store.apply(&batch).unwrap();
        store.flush().unwrap();
    }
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_nurture"))
            .arg("check")
            .current_dir(&dir)
            .env_remove("RUST_LOG")
            .env("NURTURE_WORKFLOWS", &workflows)
            .env("NURTURE_TEMPLATES", &templates)
            .output()
            .unwrap()
    };

    // Unchanged: nothing to say.
    let output = check();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("enrollments"), "{stderr}");

    // A `tag` before the send and a longer wait: the old index 2 would have been `wait` again.
    fs::write(
        &flow,
        original.replace(
            "    send \"a\" subject \"One\"\n    wait 2 days",
            "    tag \"new\"\n    send \"a\" subject \"One\"\n    wait 3 days",
        ),
    )
    .unwrap();
    let output = check();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "a warning, not an error:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "warning: 3 enrollments of `drip` stand inside step `welcome`, whose instructions \
             changed: they continue after its `send \"a\"`, the last email they got there\n \
             --> {}:3:8\n",
            flow.display()
        )),
        "{stderr}"
    );

    // The email they got there is gone: they go on, and check says so.
    fs::write(&flow, original.replace("send \"a\"", "send \"b\"")).unwrap();
    let stderr = String::from_utf8_lossy(&check().stderr).to_string();
    assert!(
        stderr.contains(
            "3 enrollments of `drip` stand inside step `welcome`, whose instructions changed: \
             the last email they got there, `a`, is no longer in it, so they complete the \
             workflow (the rest of the step is left out)"
        ),
        "{stderr}"
    );

    // A field no stored lead has, in a template, fails the check; one they carry does not.
    fs::write(&flow, original).unwrap();
    fs::write(templates.join("b.txt.hbs"), "B {{industry}} {{segment}}").unwrap();
    let output = check();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: no lead has a field `segment`"),
        "{stderr}"
    );
    assert!(!stderr.contains("field `industry`"), "{stderr}");
    fs::remove_dir_all(&dir).unwrap();
}
