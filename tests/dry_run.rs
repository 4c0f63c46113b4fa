//! Golden tests of dry-run timelines, and the emails `--out` writes.
//!
//! Each `tests/fixtures/dry_run/<case>.args` holds a `nurture` command line, one argument per
//! line; its whole standard output must equal `<case>.expected`. On a mismatch the actual output
//! is written to `<case>.actual` (diff the two; rename it when the change is intended).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: &str = "tests/fixtures/dry_run";

fn nurture(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .output()
        .expect("the nurture binary runs")
}

#[test]
fn golden_timelines() {
    let mut cases: Vec<PathBuf> = fs::read_dir(FIXTURES)
        .expect("the fixtures folder exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "args"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 7, "fixtures are missing from {FIXTURES}");

    let mut failures = Vec::new();
    for case in &cases {
        let args: Vec<String> = fs::read_to_string(case)
            .expect("readable args")
            .lines()
            .map(String::from)
            .collect();
        let output = nurture(&args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{}: exit {:?}\n{}",
            case.display(),
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        );
        let expected_path = case.with_extension("expected");
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        let actual_path = case.with_extension("actual");
        if stdout == expected {
            let _ = fs::remove_file(&actual_path);
        } else {
            fs::write(&actual_path, &stdout).expect("write .actual");
            failures.push(format!(
                "{} differs: diff {} {}",
                case.display(),
                expected_path.display(),
                actual_path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `nurture dry-run ARGS --leads workflows/sample-leads.csv --out DIR`, which must succeed;
/// the folder it wrote into.
fn dry_run_out(name: &str, args: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nurture-dry-run-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let args: Vec<String> = ["dry-run"]
        .iter()
        .chain(args)
        .chain(&["--leads", "workflows/sample-leads.csv", "--out"])
        .map(|s| s.to_string())
        .chain([dir.display().to_string()])
        .collect();
    let output = nurture(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

#[test]
fn out_writes_the_mime_the_daemon_sends_and_an_html_preview() {
    let dir = dry_run_out(
        "out",
        &[
            "trial-welcome",
            "--lead",
            "tom.becker@example.test",
            "--start",
            "2026-11-23 08:00",
        ],
    );

    let folder = dir.join("tom.becker@example.test");
    let mut names: Vec<String> = fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "01-welcome-welcome.eml",
            "01-welcome-welcome.html",
            "02-nudge-demo-offer.eml",
            "02-nudge-demo-offer.html",
            "03-breakup-last-chance.eml",
            "03-breakup-last-chance.html",
        ]
    );
    let eml = fs::read(folder.join("02-nudge-demo-offer.eml")).unwrap();
    let message = mail_parser::MessageParser::default()
        .parse(&eml)
        .expect("the .eml parses");
    // The company "Bits & <Bytes> GmbH" is raw in the subject and the text part, escaped in HTML.
    assert_eq!(
        message.subject(),
        Some("A 15-minute demo for Bits & <Bytes> GmbH?")
    );
    assert!(
        message
            .body_text(0)
            .unwrap()
            .contains("Bits & <Bytes> GmbH")
    );
    let html = message.body_html(0).unwrap();
    assert!(html.contains("Bits &amp; &lt;Bytes&gt; GmbH"));
    assert!(message.message_id().unwrap().ends_with("@example.test"));
    assert!(message.header("List-Unsubscribe").is_some());
    // A personal sequence: nothing that marks it as mass mail.
    assert!(message.header("Auto-Submitted").is_none());
    assert!(message.header("Precedence").is_none());
    let preview = fs::read_to_string(folder.join("02-nudge-demo-offer.html")).unwrap();
    assert!(preview.contains("Bits &amp; &lt;Bytes&gt; GmbH"));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_workflow_marked_as_bulk_says_so_in_every_email() {
    let dir = dry_run_out(
        "bulk",
        &["newsletter-welcome", "--lead", "chloe.nguyen@example.test"],
    );
    let folder = dir.join("chloe.nguyen@example.test");
    let emails: Vec<PathBuf> = fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    assert!(!emails.is_empty());
    for path in emails {
        let eml = fs::read(&path).unwrap();
        let message = mail_parser::MessageParser::default().parse(&eml).unwrap();
        let header = |name| message.header_raw(name).map(str::trim);
        assert_eq!(header("Auto-Submitted"), Some("auto-generated"), "{path:?}");
        assert_eq!(header("Precedence"), Some("bulk"), "{path:?}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unknown_workflow_or_step_is_a_usage_error_with_a_hint() {
    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let output = nurture(&args);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["dry-run", "trial-welcom", "--lead", "a@example.test"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("did you mean `trial-welcome`?"), "{stderr}");

    let (code, stderr) = run(&[
        "dry-run",
        "trial-welcome",
        "--lead",
        "a@example.test",
        "--reply-after",
        "nudg",
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("did you mean `nudge`?"), "{stderr}");

    let (code, stderr) = run(&["dry-run", "trial-welcome"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--lead EMAIL, or --leads FILE"), "{stderr}");
}

#[test]
fn a_missing_leads_file_is_an_input_error() {
    let output = nurture(&[
        "dry-run".into(),
        "trial-welcome".into(),
        "--leads".into(),
        Path::new(FIXTURES)
            .join("no-such-file.csv")
            .display()
            .to_string(),
    ]);
    assert_eq!(output.status.code(), Some(3));
}

#[test]
fn a_reader_that_stops_early_is_not_a_crash() {
    // `nurture dry-run … | head -1`: the pipe closes after the first line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args([
            "dry-run",
            "trial-welcome",
            "--leads",
            "workflows/sample-leads.csv",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the nurture binary runs");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("nurture ends");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stderr.is_empty());
}
