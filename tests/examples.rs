//! The shipped examples can never rot: every workflow in `workflows/` compiles without a
//! diagnostic, every template it sends renders for every sample lead, and `nurture check`
//! agrees (exit 0 on the examples, exit 1 with a pointed message after a typo).

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use nurture::cli::Project;
use nurture::lead::Lead;
use nurture::leads_file;
use nurture::mail;
use nurture::workflow::Instr;

fn project() -> Project {
    Project::load(&[PathBuf::from("workflows")], Path::new("templates"))
}

fn sample_leads() -> Vec<Lead> {
    let mut leads = Vec::new();
    for file in ["workflows/sample-leads.csv", "workflows/sample-leads.json"] {
        let report = leads_file::load(Path::new(file), Utc::now()).expect("sample leads load");
        assert!(
            report.rejected.is_empty(),
            "{file} has rejected rows: {:?}",
            report.rejected
        );
        leads.extend(report.leads);
    }
    leads
}

#[test]
fn every_shipped_workflow_compiles_cleanly() {
    let project = project();
    assert!(
        project.diagnostics.is_empty(),
        "the shipped examples have problems:\n{}",
        project.render_diagnostics()
    );
    let files = std::fs::read_dir("workflows")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "flow")
        })
        .count();
    assert!(files >= 3, "at least three example workflows ship");
    assert_eq!(project.workflows.len(), files, "every .flow file compiled");
}

#[test]
fn every_sent_template_and_subject_renders_for_every_sample_lead() {
    let project = project();
    let leads = sample_leads();
    assert!(leads.len() >= 10);
    for workflow in &project.workflows {
        for step in &workflow.steps {
            for instr in &step.code {
                let Instr::Send(send) = instr else { continue };
                for lead in &leads {
                    let context = mail::context(
                        lead,
                        workflow,
                        &step.name,
                        "mailto:unsubscribe@example.test",
                    );
                    let body = project
                        .templates
                        .render(&send.template, &context)
                        .unwrap_or_else(|e| panic!("{}/{}: {e}", workflow.name, step.name));
                    assert!(body.html.contains("mailto:unsubscribe@example.test"));
                    assert!(body.text.contains("mailto:unsubscribe@example.test"));
                    let subject = project
                        .templates
                        .render_subject(&send.subject, &context)
                        .unwrap_or_else(|e| panic!("{}/{}: {e}", workflow.name, step.name));
                    assert!(!subject.is_empty());
                }
            }
        }
    }
}

#[test]
fn check_passes_on_the_examples() {
    let output = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok: 5 workflows"));
}

#[test]
fn check_points_at_a_typo_in_an_edited_example() {
    let dir = std::env::temp_dir().join(format!("nurture-check-typo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = std::fs::read_to_string("workflows/trial-welcome.flow").unwrap();
    let edited = source.replace("send \"case-study\"", "send \"case-stduy\"");
    assert_ne!(source, edited);
    std::fs::write(dir.join("trial-welcome.flow"), &edited).unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("check")
        .arg(&dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let line = edited
        .lines()
        .position(|l| l.contains("case-stduy"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!("trial-welcome.flow:{line}:12")),
        "{stderr}"
    );
    assert!(stderr.contains("error: no template named `case-stduy`"));
    assert!(stderr.contains("= hint: did you mean `case-study`?"));
    assert!(stderr.contains("check failed"));
}

#[test]
fn check_reports_settings_that_nurture_run_would_refuse() {
    let output = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("check")
        .env("NURTURE_TRANSPORT_KIND", "smtp")
        .env("NURTURE_SMTP_URL", "smtp://ana:hunter2@mail.example.com")
        .env("NURTURE_IMAP_URL", "imaps://imap.example.com")
        .env("NURTURE_IMAP_USER", "ana@example.com")
        .env("NURTURE_IMAP_PASSWORD_ENV", "NURTURE_TEST_SURELY_UNSET")
        .env("NURTURE_HTTP_BASE_URL", "http://unsubscribe.example.com")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: configuration: smtp.url must not carry a user or password"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(
        stderr.contains("NURTURE_TEST_SURELY_UNSET is not set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("http.base_url `http://unsubscribe.example.com`"),
        "{stderr}"
    );
    assert!(stderr.contains("3 errors"), "{stderr}");
}
