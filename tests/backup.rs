//! `nurture backup` and `nurture restore` against the real daemon (file transport, rehearsal
//! clock): a backup taken through the running daemon between two emails of a sequence,
//! restored into a new store, lets a new daemon finish every sequence with each email sent
//! exactly once; bad files, a non-empty store and a running daemon are refused.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use nurture::control::SOCKET;
use nurture::lead::Lead;

use crate::support::{scratch, seed};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const LEADS: usize = 600;
/// The rehearsal: a virtual day lasts 8 s of real time, the gap the backup is taken in.
const START: &str = "2026-11-23T08:00:00Z";
const SPEED: &str = "10800";

/// `nurture …` in `dir` on the store `store`, with the `drip` workflow (three emails a day
/// apart), writing emails into `dir/outbox`.
fn nurture(dir: &Path, store: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NURTURE_STORE_PATH", store)
        .env("NURTURE_TRANSPORT_OUTBOX", dir.join("outbox"))
        .env(
            "NURTURE_WORKFLOWS",
            Path::new(REPO).join("tests/fixtures/backup/workflows"),
        )
        .env(
            "NURTURE_TEMPLATES",
            Path::new(REPO).join("tests/fixtures/daemon/templates"),
        );
    command
}

fn run(dir: &Path, store: &Path, args: &[&str]) -> Output {
    nurture(dir, store, args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts a rehearsing daemon on `store` and waits until its control socket answers.
fn start(dir: &Path, store: &Path, log: &str) -> Child {
    let log_file = fs::File::create(dir.join(log)).unwrap();
    let daemon = nurture(dir, store, &["run"])
        .env("NURTURE_DAEMON_REHEARSAL_START", START)
        .env("NURTURE_DAEMON_REHEARSAL_SPEED", SPEED)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let socket = store.join(SOCKET);
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon did not start:\n{}",
            fs::read_to_string(dir.join(log)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}

fn stop(mut daemon: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
}

fn emails(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir.join("outbox")).map_or(Vec::new(), |d| {
        d.filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect()
    })
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many emails each (lead, step) got, from the subjects in the outbox.
fn received(dir: &Path) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for path in emails(dir) {
        let eml = fs::read_to_string(&path).unwrap();
        let subject = eml
            .lines()
            .find_map(|line| line.strip_prefix("Subject: "))
            .unwrap_or_else(|| panic!("{} has no subject", path.display()));
        let (step, lead) = subject.split_once(" for ").unwrap();
        *counts
            .entry((lead.to_string(), step.to_string()))
            .or_insert(0) += 1;
    }
    counts
}

fn drip_leads() -> Vec<Lead> {
    (0..LEADS)
        .map(|i| {
            let mut lead = Lead::new(format!("drip{i:04}@example.test"), Utc::now());
            lead.source = Some("drip".into());
            lead
        })
        .collect()
}

#[test]
fn a_backup_taken_mid_sequence_through_the_daemon_restores_and_each_email_leaves_once() {
    let dir = scratch("backup-mid-run");
    let store = dir.join("data");
    seed(&dir, drip_leads());
    let daemon = start(&dir, &store, "daemon.log");
    // The first email of every sequence leaves at once; the second a (virtual) day later.
    wait_for("the first emails", Duration::from_secs(60), || {
        emails(&dir).len() >= LEADS
    });
    let file = dir.join("backups/drip.backup");
    fs::create_dir_all(dir.join("backups")).unwrap();
    let backup = run(&dir, &store, &["backup", file.to_str().unwrap()]);
    let sent_at_backup = emails(&dir).len();
    stop(daemon);
    assert!(
        backup.status.success(),
        "backup failed: {}",
        text(&backup.stderr)
    );
    assert!(
        text(&backup.stdout).contains(&format!("{LEADS} leads"))
            && text(&backup.stdout).contains("by the running daemon"),
        "{}",
        text(&backup.stdout)
    );
    assert_eq!(
        sent_at_backup, LEADS,
        "the second emails began before the backup was taken (machine too slow for an 8 s day?)"
    );
    assert_eq!(
        emails(&dir).len(),
        LEADS,
        "emails left between the backup and the stop: the test's gap was too short"
    );
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup is its owner's alone");
    let leftovers: Vec<_> = fs::read_dir(dir.join("backups"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
    let spools: Vec<_> = fs::read_dir(&store)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
        .collect();
    assert!(spools.is_empty(), "the daemon's spool file is gone");

    // The disk is lost: a new store from the backup, and a daemon on it.
    let restored = dir.join("restored");
    let restore = run(&dir, &restored, &["restore", file.to_str().unwrap()]);
    assert!(
        restore.status.success(),
        "restore failed: {}",
        text(&restore.stderr)
    );
    assert!(
        text(&restore.stdout).contains(&format!("{LEADS} leads")),
        "{}",
        text(&restore.stdout)
    );
    let daemon = start(&dir, &restored, "restored.log");
    wait_for(
        "every email of every sequence",
        Duration::from_secs(90),
        || emails(&dir).len() >= 3 * LEADS,
    );
    // Nothing more is due; give a stray duplicate the time to show.
    std::thread::sleep(Duration::from_secs(2));
    stop(daemon);

    let counts = received(&dir);
    for i in 0..LEADS {
        let lead = format!("drip{i:04}@example.test");
        for step in ["One", "Two", "Three"] {
            assert_eq!(
                counts.get(&(lead.clone(), step.to_string())),
                Some(&1),
                "{lead} got step {step} a wrong number of times"
            );
        }
    }
    assert_eq!(emails(&dir).len(), 3 * LEADS, "no other email");
    let status = run(&dir, &restored, &["status", "--format", "json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn restore_refuses_a_non_empty_store_a_running_daemon_and_bad_files() {
    let dir = scratch("backup-refusals");
    let store = dir.join("data");
    seed(&dir, drip_leads()[..20].to_vec());
    // Without a daemon, the command takes the backup itself.
    let file = dir.join("good.backup");
    let backup = run(&dir, &store, &["backup", file.to_str().unwrap()]);
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    assert!(
        text(&backup.stdout).contains("by this process (no daemon runs)"),
        "{}",
        text(&backup.stdout)
    );
    let bytes = fs::read(&file).unwrap();

    let refused = |store: &Path, file: &Path| {
        let output = run(&dir, store, &["restore", file.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
        text(&output.stderr)
    };
    // A store with leads.
    let error = refused(&store, &file);
    assert!(error.contains("not empty (20 leads)"), "{error}");

    // A truncated file, a file that is not a backup, one that does not exist.
    let cut = dir.join("cut.backup");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let target = dir.join("target");
    let error = refused(&target, &cut);
    assert!(
        error.contains("cut.backup is truncated") && error.contains("nothing was restored"),
        "{error}"
    );
    let flow = Path::new(REPO).join("tests/fixtures/backup/workflows/drip.flow");
    let error = refused(&target, &flow);
    assert!(error.contains("is not a nurture backup"), "{error}");
    let error = refused(&target, &dir.join("missing.backup"));
    assert!(error.contains("cannot read the backup"), "{error}");

    // The refusals left the target empty: the good file restores into it.
    let output = run(&dir, &target, &["restore", file.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let list = run(&dir, &target, &["leads", "list"]);
    assert!(
        text(&list.stdout).contains("drip0019@example.test"),
        "{}",
        text(&list.stdout)
    );

    // A daemon holds the (empty) store: no restore under it.
    let empty = dir.join("empty");
    let daemon = start(&dir, &empty, "daemon.log");
    let error = refused(&empty, &file);
    stop(daemon);
    assert!(error.contains("a daemon is running"), "{error}");
    let _ = fs::remove_dir_all(&dir);
}
