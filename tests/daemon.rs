//! `nurture run` end to end, on the file transport: emails leave when the dry-run said they
//! would; SIGKILL in the middle of thousands of sends loses nothing, sends nothing twice and
//! leaves nothing uncertain; SIGTERM stops cleanly; an email that cannot be made is failed,
//! never sent.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mail_parser::MessageParser;
use nurture::engine::Status;
use nurture::lead::Lead;
use nurture::store::{Batch, DEFAULT_CACHE_BYTES, EventKind, MessageState, Store};

use crate::support::{scratch, seed};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

struct Setup<'a> {
    dir: &'a Path,
    workflows: PathBuf,
    templates: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Setup<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
        command
            .args(args)
            .current_dir(self.dir)
            .env_remove("RUST_LOG")
            .env("NURTURE_WORKFLOWS", &self.workflows)
            .env("NURTURE_TEMPLATES", &self.templates);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Starts the daemon with its log in `dir/<log>`.
    fn start(&self, args: &[&str], log: &str) -> Child {
        let log = fs::File::create(self.dir.join(log)).unwrap();
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        self.command(&all)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the daemon starts")
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// One `.eml` of the outbox folder.
#[derive(Debug)]
struct Sent {
    message_id: String,
    to: String,
    /// Headers of ours (`X-Nurture-…`) that would show recipients a workflow's inner names.
    internal: Vec<String>,
    subject: String,
    date: i64,
}

fn outbox(dir: &Path) -> Vec<Sent> {
    let Ok(entries) = fs::read_dir(dir.join("outbox")) else {
        return Vec::new();
    };
    let mut sent = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "eml") {
            continue;
        }
        let raw = fs::read(&path).unwrap();
        let Some(message) = MessageParser::default().parse(&raw) else {
            continue;
        };
        sent.push(Sent {
            message_id: message.message_id().unwrap_or_default().to_string(),
            to: message
                .to()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_string(),
            internal: message
                .headers()
                .iter()
                .map(|h| h.name().to_string())
                .filter(|name| name.to_ascii_lowercase().starts_with("x-nurture"))
                .collect(),
            subject: message.subject().unwrap_or_default().to_string(),
            date: message.date().map_or(0, |d| d.to_timestamp()),
        });
    }
    sent
}

fn sample_leads() -> Vec<Lead> {
    let path = Path::new(REPO).join("workflows/sample-leads.csv");
    let report = nurture::leads_file::load(&path, Utc::now()).unwrap();
    assert!(report.rejected.is_empty());
    report.leads
}

#[test]
fn emails_leave_when_the_dry_run_said_they_would() {
    let dir = scratch("daemon-schedule");
    seed(&dir, sample_leads());
    // A Sunday: every first email waits for Monday's send window, as in the dry-run.
    let start = "2026-11-22T12:00:00Z";
    let setup = Setup {
        dir: &dir,
        workflows: Path::new(REPO).join("workflows"),
        templates: Path::new(REPO).join("templates"),
        env: vec![
            ("NURTURE_DAEMON_REHEARSAL_START", start.into()),
            // One virtual day per 86 ms of sleep.
            ("NURTURE_DAEMON_REHEARSAL_SPEED", "1000000".into()),
        ],
    };
    let preview = setup
        .command(&[
            "dry-run",
            "trial-welcome",
            "--leads",
            &format!("{REPO}/workflows/sample-leads.csv"),
            "--start",
            start,
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        preview.status.success(),
        "{}",
        String::from_utf8_lossy(&preview.stderr)
    );
    let preview: serde_json::Value = serde_json::from_slice(&preview.stdout).unwrap();
    let mut expected: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for lead in preview["leads"].as_array().unwrap() {
        let sends = lead["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["effect"] == "send")
            .map(|e| {
                let at: DateTime<Utc> = e["at"].as_str().unwrap().parse().unwrap();
                (e["subject"].as_str().unwrap().to_string(), at.timestamp())
            })
            .collect();
        expected.insert(lead["lead"].as_str().unwrap().to_string(), sends);
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(
        total >= 10,
        "the sample leads get several trial emails each"
    );

    let mut daemon = setup.start(&[], "daemon.log");
    let started = Instant::now();
    let trial = |dir: &Path| -> Vec<Sent> {
        let mut sent: Vec<Sent> = outbox(dir)
            .into_iter()
            .filter(|s| {
                expected
                    .get(&s.to)
                    .is_some_and(|sends| sends.iter().any(|(subject, _)| *subject == s.subject))
            })
            .collect();
        sent.sort_by_key(|s| (s.to.clone(), s.date));
        sent
    };
    while trial(&dir).len() < total && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&daemon, "TERM");
    let status =
        wait_exit(&mut daemon, Duration::from_secs(15)).expect("the daemon stops on SIGTERM");
    let log = fs::read_to_string(dir.join("daemon.log")).unwrap();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("stopped"), "{log}");

    let sent = trial(&dir);
    assert_eq!(sent.len(), total, "{log}");
    for (lead, sends) in &expected {
        let got: Vec<&Sent> = sent.iter().filter(|s| &s.to == lead).collect();
        assert_eq!(got.len(), sends.len(), "emails to {lead}");
        for ((subject, at), email) in sends.iter().zip(got) {
            assert_eq!(&email.subject, subject, "to {lead}");
            // Regression: every email showed its workflow and step ("breakup") to the lead.
            assert!(email.internal.is_empty(), "{lead}: {:?}", email.internal);
            // The rehearsal clock moves only while the daemon sleeps: to the second.
            assert_eq!(email.date, *at, "{lead}: `{subject}`");
        }
    }
}

fn load_test_leads(count: usize) -> Vec<Lead> {
    (0..count)
        .map(|i| {
            let mut lead = Lead::new(format!("lead{i:05}@example.test"), Utc::now());
            lead.source = Some("load-test".into());
            lead
        })
        .collect()
}

/// The `.eml` files of the outbox folder, and whether any other file is there.
fn eml_files(dir: &Path) -> (usize, Vec<String>) {
    let mut emls = 0;
    let mut others = Vec::new();
    for entry in fs::read_dir(dir.join("outbox")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "eml") {
            assert!(fs::metadata(&path).unwrap().len() > 0, "{path:?} is empty");
            emls += 1;
        } else {
            others.push(path.display().to_string());
        }
    }
    (emls, others)
}

/// Was: the emails a kill caught were reported as uncertain and never sent, though the file
/// transport's folder said which had left (140 of 6,000 leads never got their email; zero-byte
/// files were left); `status` between the crash and the restart did not count them at all.
#[test]
fn sigkill_during_thousands_of_sends_loses_nothing_sends_nothing_twice_and_leaves_nothing_uncertain()
 {
    let dir = scratch("daemon-crash");
    let leads = 1500;
    seed(&dir, load_test_leads(leads));
    let setup = Setup {
        dir: &dir,
        workflows: Path::new(REPO).join("tests/fixtures/daemon/workflows"),
        templates: Path::new(REPO).join("tests/fixtures/daemon/templates"),
        env: vec![("NURTURE_DAEMON_BATCH", "16".into())],
    };
    // Kill it at uneven moments while emails are leaving; count the kills that interrupted
    // sending (some emails had left in that run, and not all of them).
    let mut kills = 0;
    let mut mid_run = 0;
    let mut progress = vec![0];
    let mut caught = 0;
    let count = |dir: &Path| fs::read_dir(dir.join("outbox")).map_or(0, |d| d.count());
    for (round, pause) in [40_u64, 75, 10, 60, 25, 90, 5, 50].iter().enumerate() {
        let before = count(&dir);
        let mut daemon = setup.start(&[], &format!("run-{round}.log"));
        let started = Instant::now();
        while count(&dir) == before && started.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(*pause));
        if daemon.try_wait().unwrap().is_none() {
            signal(&daemon, "KILL");
            kills += 1;
        }
        daemon.wait().unwrap();
        let after = count(&dir);
        if after > before && after < leads * 2 {
            mid_run += 1;
        }
        progress.push(after);

        // Between the crash and the restart, `status` accounts for every email on disk: sent,
        // or in flight (the daemon settles those when it starts).
        let output = setup
            .command(&["status", "--format", "json"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let blast = report["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "blast")
            .unwrap();
        let (sent, in_flight) = (
            blast["sent"].as_u64().unwrap(),
            blast["in_flight"].as_u64().unwrap(),
        );
        assert_eq!(
            in_flight as usize,
            report["in_flight_emails"].as_array().unwrap().len()
        );
        let (on_disk, _) = eml_files(&dir);
        assert!(
            on_disk as u64 <= sent + in_flight,
            "round {round}: {on_disk} emails on disk, status says {sent} sent and {in_flight} in flight"
        );
        caught += u64::from(in_flight > 0);
    }
    assert!(
        caught > 0,
        "some kill caught emails in flight: {progress:?}"
    );
    assert!(
        mid_run >= 3,
        "kills interrupted sending: outbox after each round {progress:?}"
    );
    let mut last = setup.start(&["--until-idle"], "final.log");
    let status = wait_exit(&mut last, Duration::from_secs(120)).expect("the last run finishes");
    let log = fs::read_to_string(dir.join("final.log")).unwrap();
    assert!(status.success(), "{log}");

    let files = outbox(&dir);
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    // No enrollment stuck: every lead went through both steps.
    let enrollments: Vec<_> = store.enrollments().map(Result::unwrap).collect();
    assert_eq!(enrollments.len(), leads, "no lead lost");
    assert!(enrollments.iter().all(|e| e.status == Status::Completed));
    assert_eq!(store.outbox_len(), 0);
    assert!(store.in_flight().unwrap().is_empty());

    // Every step has exactly one record, and it says sent: the folder transport settles what
    // a kill caught from what is on disk, so nothing is uncertain.
    let records: Vec<_> = store.messages().map(Result::unwrap).collect();
    assert_eq!(records.len(), leads * 2);
    let steps: BTreeSet<(String, String)> = records
        .iter()
        .map(|r| (r.lead.clone(), r.step.clone()))
        .collect();
    assert_eq!(steps.len(), leads * 2);
    let not_sent: Vec<_> = records
        .iter()
        .filter(|r| r.state != MessageState::Sent)
        .collect();
    assert!(not_sent.is_empty(), "after {kills} kills: {not_sent:?}");
    assert!(store.uncertain().unwrap().is_empty());
    // The counters `nurture status` reads were kept by the same transactions, kills and all.
    let recounted = store.recount(false).unwrap();
    assert!(
        recounted.differences.is_empty() && recounted.index_differences == 0,
        "after {kills} kills: {recounted:?}"
    );
    let blast = &store.counters().unwrap().workflows["blast"];
    assert_eq!(blast.total(|step| step.sent), (leads * 2) as u64);

    // Every lead's two emails are on disk exactly once, whole; no partial file is left.
    let (on_disk, others) = eml_files(&dir);
    assert_eq!(on_disk, leads * 2, "{log}");
    assert!(others.is_empty(), "{others:?}");
    let mut seen = BTreeSet::new();
    for file in &files {
        assert!(
            seen.insert(file.message_id.clone()),
            "{} sent twice",
            file.message_id
        );
    }
    let to: BTreeSet<(String, bool)> = files
        .iter()
        .map(|f| (f.to.clone(), f.subject.starts_with("First")))
        .collect();
    assert_eq!(
        to.len(),
        leads * 2,
        "each lead got its first and its second email"
    );
    for record in &records {
        let id = record.message_id.trim_matches(['<', '>']);
        assert!(
            seen.contains(id),
            "{} marked sent but not on disk",
            record.message_id
        );
    }
}

fn wait_for_log(path: &Path, needle: &str, timeout: Duration) -> String {
    let started = Instant::now();
    loop {
        let log = fs::read_to_string(path).unwrap_or_default();
        if log.contains(needle) || started.elapsed() > timeout {
            return log;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_broken_edit_is_refused_and_a_valid_one_is_taken_while_running() {
    let dir = scratch("daemon-reload");
    let workflows = dir.join("workflows");
    fs::create_dir_all(&workflows).unwrap();
    let original =
        fs::read_to_string(Path::new(REPO).join("tests/fixtures/daemon/workflows/blast.flow"))
            .unwrap();
    fs::write(workflows.join("blast.flow"), &original).unwrap();
    let setup = Setup {
        dir: &dir,
        workflows: workflows.clone(),
        templates: Path::new(REPO).join("tests/fixtures/daemon/templates"),
        // Reload on SIGHUP only, so the test decides when.
        env: vec![("NURTURE_DAEMON_WATCH_SECONDS", "0".into())],
    };
    let log = dir.join("daemon.log");
    let mut daemon = setup.start(&[], "daemon.log");
    wait_for_log(&log, "nurture is running", Duration::from_secs(20));

    // A typo: the running version stays, and the log points at the line.
    fs::write(
        workflows.join("blast.flow"),
        original.replace(
            "send \"ping\" subject \"Second",
            "send \"pnig\" subject \"Second",
        ),
    )
    .unwrap();
    signal(&daemon, "HUP");
    let text = wait_for_log(&log, "reload refused", Duration::from_secs(20));
    assert!(text.contains("reload refused"), "{text}");
    assert!(text.contains("no template named `pnig`"), "{text}");
    assert!(
        text.contains("blast.flow:12"),
        "the diagnostic names file and line:\n{text}"
    );
    assert!(daemon.try_wait().unwrap().is_none(), "still running");

    // Fixed, with a third step: taken.
    let edited = original.replace(
        "  step second {",
        "  step third {\n    send \"ping\" subject \"Third\"\n  }\n\n  step second {",
    );
    fs::write(workflows.join("blast.flow"), edited).unwrap();
    signal(&daemon, "HUP");
    let text = wait_for_log(&log, "reloaded", Duration::from_secs(20));
    assert!(text.contains("workflow changed"), "{text}");
    assert!(text.contains("reloaded"), "{text}");

    signal(&daemon, "TERM");
    let status = wait_exit(&mut daemon, Duration::from_secs(15)).expect("stops");
    assert!(status.success());
}

#[test]
fn a_removed_step_is_a_check_warning_and_its_enrollments_exit_with_that_reason() {
    let dir = scratch("daemon-removed-step");
    let workflows = dir.join("workflows");
    fs::create_dir_all(&workflows).unwrap();
    let original =
        fs::read_to_string(Path::new(REPO).join("tests/fixtures/daemon/workflows/blast.flow"))
            .unwrap();
    // The edit drops step `second`, where one enrollment stands.
    let cut = original.find("  step second").unwrap();
    fs::write(
        workflows.join("blast.flow"),
        format!("{}}}\n", &original[..cut]),
    )
    .unwrap();
    {
        let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
        let project = nurture::project::Project::load(
            &[Path::new(REPO).join("tests/fixtures/daemon/workflows")],
            &Path::new(REPO).join("tests/fixtures/daemon/templates"),
        );
        let lead = load_test_leads(1).remove(0);
        let mut enrollment =
            nurture::engine::enroll(project.workflow("blast").unwrap(), &lead, Utc::now());
        enrollment.position.step = "second".into();
        let batch = Batch {
            leads: vec![lead],
            enrollments: vec![enrollment],
            ..Batch::default()
        };
        store.apply(&batch).unwrap();
        store.flush().unwrap();
    }
    let setup = Setup {
        dir: &dir,
        workflows,
        templates: Path::new(REPO).join("tests/fixtures/daemon/templates"),
        env: Vec::new(),
    };
    let check = setup.command(&["check"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "a warning, not an error:\n{stderr}");
    assert!(
        stderr.contains(
            "1 enrollment of `blast` stands in step `second`, which is no longer in the workflow"
        ),
        "{stderr}"
    );
    let strict = setup
        .command(&["check", "--deny-warnings"])
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));

    let run = setup.command(&["run", "--until-idle"]).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let enrollment = store
        .enrollment("blast", "lead00000@example.test")
        .unwrap()
        .unwrap();
    assert_eq!(
        enrollment.status,
        Status::Exited(nurture::engine::ExitReason::StepRemoved("second".into()))
    );
    assert_eq!(
        store.messages().count(),
        0,
        "nothing sent for a removed step"
    );
}

#[test]
fn commands_work_while_the_daemon_runs() {
    let dir = scratch("daemon-lend");
    let setup = Setup {
        dir: &dir,
        workflows: Path::new(REPO).join("tests/fixtures/daemon/workflows"),
        templates: Path::new(REPO).join("tests/fixtures/daemon/templates"),
        env: Vec::new(),
    };
    let log = dir.join("daemon.log");
    let mut daemon = setup.start(&[], "daemon.log");
    wait_for_log(&log, "nurture is running", Duration::from_secs(20));
    let socket = dir.join("data").join(nurture::control::SOCKET);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the owner may ask for the store");

    // An import while the daemon holds the store goes through it; the daemon enrolls and
    // sends to the new leads at once.
    let csv = dir.join("leads.csv");
    let rows: String = (0..20)
        .map(|i| format!("lead{i}@example.test,load-test\n"))
        .collect();
    fs::write(&csv, format!("email,source\n{rows}")).unwrap();
    let import = setup
        .command(&["leads", "import", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(String::from_utf8_lossy(&import.stdout).contains("20 created"));
    let started = Instant::now();
    while outbox(&dir).len() < 40 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(outbox(&dir).len(), 40, "two emails to each new lead");

    let status = setup
        .command(&["status", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["workflows"][0]["sent"], 40, "{report}");
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon is still running"
    );

    signal(&daemon, "TERM");
    let status = wait_exit(&mut daemon, Duration::from_secs(15)).expect("stops");
    assert!(status.success());
    assert!(!socket.exists(), "the socket goes with the daemon");
}

#[test]
fn a_sending_limit_makes_emails_wait_not_vanish() {
    let dir = scratch("daemon-throttle");
    seed(&dir, load_test_leads(5));
    let setup = Setup {
        dir: &dir,
        workflows: Path::new(REPO).join("tests/fixtures/daemon/workflows"),
        templates: Path::new(REPO).join("tests/fixtures/daemon/templates"),
        env: vec![
            ("NURTURE_LIMITS_PER_MINUTE", "2".into()),
            (
                "NURTURE_DAEMON_REHEARSAL_START",
                "2026-11-23T09:00:00Z".into(),
            ),
            ("NURTURE_DAEMON_REHEARSAL_SPEED", "1000000".into()),
        ],
    };
    let mut daemon = setup.start(&[], "daemon.log");
    let started = Instant::now();
    while outbox(&dir).len() < 10 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&daemon, "TERM");
    assert!(wait_exit(&mut daemon, Duration::from_secs(15)).is_some());

    // Ten emails, sent once each, never more than two in any minute.
    let files = outbox(&dir);
    assert_eq!(files.len(), 10);
    let ids: BTreeSet<&str> = files.iter().map(|f| f.message_id.as_str()).collect();
    assert_eq!(ids.len(), 10);
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let mut times: Vec<DateTime<Utc>> = store.messages().map(|m| m.unwrap().at).collect();
    times.sort();
    assert_eq!(times.len(), 10);
    for pair in times.windows(3) {
        assert!(
            pair[2] - pair[0] >= chrono::Duration::seconds(60),
            "three sends within a minute: {pair:?}"
        );
    }
    assert!(times[9] - times[0] >= chrono::Duration::minutes(4));
    assert_eq!(store.outbox_len(), 0);
    // An email that waited is dated when it left, not when it was composed.
    for file in &files {
        let id = format!("<{}>", file.message_id);
        let record = store.message(&id).unwrap().unwrap();
        assert_eq!(file.date, record.at.timestamp(), "{}", file.message_id);
    }
}

// Regression: a lead promoted to customer mid-sequence still received the next trial email;
// trial-welcome now says `exit when lead.stage is "customer"`.
#[test]
fn a_lead_promoted_to_customer_mid_sequence_gets_no_further_email() {
    let dir = scratch("daemon-goal");
    let mut dana = Lead::new("dana@example.test".into(), Utc::now());
    dana.source = Some("website-form".into());
    dana.tags = ["trial".to_string()].into();
    dana.timezone = Some("Europe/Berlin".into());
    seed(&dir, vec![dana]);
    let at = |start: &str| Setup {
        dir: &dir,
        workflows: Path::new(REPO).join("workflows"),
        templates: Path::new(REPO).join("templates"),
        env: vec![("NURTURE_DAEMON_REHEARSAL_START", start.into())],
    };
    let succeeds = |output: std::process::Output| {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let goal_reached = |setup: &Setup| -> serde_json::Value {
        let status = succeeds(
            setup
                .command(&["status", "--format", "json"])
                .output()
                .unwrap(),
        );
        let report: serde_json::Value = serde_json::from_str(&status).unwrap();
        report["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "trial-welcome")
            .map(|w| w["exited"]["goal_reached"].clone())
            .unwrap_or_default()
    };

    // Monday, in the send window: the welcome leaves; the nudge is two days away.
    let monday = at("2026-11-23T10:00:00Z");
    let mut daemon = monday.start(&[], "daemon.log");
    let started = Instant::now();
    while outbox(&dir).is_empty() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(outbox(&dir).len(), 1, "the welcome");
    // Promoted by hand while the daemon runs: the daemon ends the enrollment at once, not at
    // the nudge.
    succeeds(
        monday
            .command(&["leads", "promote", "dana@example.test", "--to", "customer"])
            .output()
            .unwrap(),
    );
    let started = Instant::now();
    while goal_reached(&monday) != 1 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(goal_reached(&monday), 1, "exits by reason `goal_reached`");
    signal(&daemon, "TERM");
    assert!(wait_exit(&mut daemon, Duration::from_secs(15)).is_some_and(|s| s.success()));

    // Weeks later, long after the nudge and the breakup were due: nothing more.
    let later = at("2026-12-15T10:00:00Z");
    succeeds(later.command(&["run", "--until-idle"]).output().unwrap());
    let sent = outbox(&dir);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let show = succeeds(
        later
            .command(&["leads", "show", "dana@example.test"])
            .output()
            .unwrap(),
    );
    assert!(
        show.contains("goal reached: lead.stage is \"customer\""),
        "{show}"
    );
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let enrollment = store
        .enrollment("trial-welcome", "dana@example.test")
        .unwrap()
        .unwrap();
    assert_eq!(
        enrollment.status,
        Status::Exited(nurture::engine::ExitReason::GoalReached(
            "lead.stage is \"customer\"".into()
        ))
    );
}

/// Was: an email whose template cannot render for the lead (a field it lacks) or whose
/// address the mail system refuses was journaled as "refused for good", counted nowhere
/// (`status`: failed 0), listed as sent by `leads show`, and the sequence went on; the
/// dry-run showed it and exited 0 when the address was the problem.
#[test]
fn an_email_that_cannot_be_made_is_failed_everywhere_and_ends_the_sequence() {
    let dir = scratch("daemon-failed");
    fs::create_dir_all(dir.join("workflows")).unwrap();
    fs::create_dir_all(dir.join("templates")).unwrap();
    fs::write(
        dir.join("workflows/onboarding.flow"),
        r#"workflow "onboarding" {
  enroll when lead.source is "render-test"
  from "Team <team@example.test>"

  step hello {
    send "hello" subject "Hello"
    wait 1 day
  }

  step later {
    send "later" subject "Later"
  }
}
"#,
    )
    .unwrap();
    for (name, text) in [
        ("hello.txt.hbs", "Hi, {{company}} team."),
        ("hello.html.hbs", "<p>Hi, {{company}} team.</p>"),
        ("later.txt.hbs", "Later."),
        ("later.html.hbs", "<p>Later.</p>"),
    ] {
        fs::write(dir.join("templates").join(name), text).unwrap();
    }
    let lead = |email: &str, company: Option<&str>| {
        let mut lead = Lead::new(email.into(), Utc::now());
        lead.source = Some("render-test".into());
        lead.company = company.map(str::to_string);
        lead
    };
    let setup = Setup {
        dir: &dir,
        workflows: dir.join("workflows"),
        templates: dir.join("templates"),
        env: Vec::new(),
    };

    // The dry-run says so first, and exits 1.
    fs::write(
        dir.join("leads.csv"),
        "email,company,source\ngood@example.test,Acme,render-test\nnocompany@example.test,,render-test\n",
    )
    .unwrap();
    let preview = setup
        .command(&["dry-run", "onboarding", "--leads", "leads.csv"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&preview.stdout);
    assert_eq!(preview.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "CANNOT RENDER: template `hello` needs `company`, which lead nocompany@example.test does not have"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("(`nurture run` records this email as failed and ends the sequence here)"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&preview.stderr).contains("1 email could not be rendered"),
        "{}",
        String::from_utf8_lossy(&preview.stderr)
    );
    let only_good = setup
        .command(&[
            "dry-run",
            "onboarding",
            "--leads",
            "leads.csv",
            "--lead",
            "good@example.test",
        ])
        .output()
        .unwrap();
    assert_eq!(only_good.status.code(), Some(0));

    seed(
        &dir,
        vec![
            lead("good@example.test", Some("Acme")),
            lead("nocompany@example.test", None),
            // An address the mail system refuses (a store filled before import checked it).
            lead("a@b@example.test", Some("Acme")),
        ],
    );
    let run = setup.command(&["run", "--until-idle"]).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (on_disk, _) = eml_files(&dir);
    assert_eq!(on_disk, 1, "only the good lead's email left");

    let status = setup
        .command(&["status", "--format", "json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let onboarding = &report["workflows"][0];
    assert_eq!(onboarding["name"], "onboarding");
    assert_eq!(
        (
            &onboarding["sent"],
            &onboarding["failed"],
            &onboarding["active"],
            &onboarding["exited"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!({ "email_failed": 2 })
        ),
        "{report:#}"
    );

    let show = setup
        .command(&["leads", "show", "nocompany@example.test"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains(
            "[onboarding] email of step hello failed, not sent: cannot render: template `hello` needs `company`"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("onboarding: exited: the email of step `hello` failed: cannot render"),
        "{shown}"
    );
    assert!(!shown.contains("sent hello"), "{shown}");

    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let refused = store
        .enrollment("onboarding", "a@b@example.test")
        .unwrap()
        .unwrap();
    let Status::Exited(reason) = &refused.status else {
        panic!("{:?}", refused.status);
    };
    assert!(
        reason
            .to_string()
            .contains("`a@b@example.test` is not an address that can be sent to"),
        "{reason}"
    );
    assert!(refused.facts.sent.is_empty());
    let journal = store.events_of("a@b@example.test").unwrap();
    assert!(
        journal.iter().any(|e| matches!(
            &e.kind,
            EventKind::SendFailed { permanent: true, message_id, .. } if !message_id.is_empty()
        )),
        "{journal:?}"
    );
    let failed: Vec<_> = store
        .messages()
        .map(Result::unwrap)
        .filter(|m| m.state == MessageState::Failed)
        .map(|m| m.lead)
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
}

// Was: an email held in the outbox by a sending limit left after its `expires` (an offer
// announced after it had ended); the expiry was checked only when its step ran.
#[test]
fn an_email_that_waits_in_the_outbox_past_its_expiry_is_not_sent() {
    let dir = scratch("daemon-expiring");
    let leads: Vec<Lead> = load_test_leads(5)
        .into_iter()
        .map(|mut lead| {
            lead.set_field(
                "offer_ends",
                nurture::lead::Value::Text("2026-11-23T09:02:00Z".into()),
            )
            .unwrap();
            lead
        })
        .collect();
    seed(&dir, leads);
    let setup = Setup {
        dir: &dir,
        workflows: Path::new(REPO).join("tests/fixtures/expiring/workflows"),
        templates: Path::new(REPO).join("tests/fixtures/daemon/templates"),
        env: vec![
            ("NURTURE_LIMITS_PER_MINUTE", "1".into()),
            (
                "NURTURE_DAEMON_REHEARSAL_START",
                "2026-11-23T09:00:00Z".into(),
            ),
            ("NURTURE_DAEMON_REHEARSAL_SPEED", "1000000".into()),
        ],
    };
    let mut daemon = setup.start(&[], "daemon.log");
    let log = || fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let started = Instant::now();
    while log().matches("expired: it is not sent").count() < 3
        && started.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&daemon, "TERM");
    assert!(wait_exit(&mut daemon, Duration::from_secs(15)).is_some());

    // One email a minute: 09:00 and 09:01 left; the three held to 09:02 and later did not.
    assert_eq!(outbox(&dir).len(), 2, "{}", log());
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(store.outbox_len(), 0);
    let expired: Vec<_> = store
        .all_events()
        .map(|entry| entry.unwrap())
        .filter(|(_, event)| matches!(event.kind, EventKind::Expired { .. }))
        .collect();
    assert_eq!(expired.len(), 3, "{expired:?}");
    for (_, event) in &expired {
        let EventKind::Expired {
            step,
            template,
            expires,
            ..
        } = &event.kind
        else {
            unreachable!()
        };
        assert_eq!((step.as_str(), template.as_str()), ("offer", "ping"));
        assert_eq!(expires, "lead.offer_ends");
        assert!(event.at >= "2026-11-23T09:02:00Z".parse::<DateTime<Utc>>().unwrap());
    }
}
