//! Commands while `nurture run` holds the store: they go through its control socket, and
//! sending never stops for them. An import streams through the daemon while emails keep
//! leaving; reads and changes take effect in the running daemon; a daemon that dies
//! mid-command fails the command; another user is refused.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use nurture::control::SOCKET;
use nurture::lead::Lead;
use nurture::store::{DEFAULT_CACHE_BYTES, Store};

use crate::support::{scratch, seed};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// `nurture …` in `dir`, on the daemon test workflow (`blast`: two emails to each lead whose
/// source is `load-test`).
fn nurture(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env(
            "NURTURE_WORKFLOWS",
            Path::new(REPO).join("tests/fixtures/daemon/workflows"),
        )
        .env(
            "NURTURE_TEMPLATES",
            Path::new(REPO).join("tests/fixtures/daemon/templates"),
        );
    command
}

fn run(dir: &Path, args: &[&str]) -> Output {
    nurture(dir, args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts the daemon and waits until its control socket answers.
fn start(dir: &Path) -> Child {
    let log = fs::File::create(dir.join("daemon.log")).unwrap();
    let daemon = nurture(dir, &["run"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let socket = dir.join("data").join(SOCKET);
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon did not start:\n{}",
            fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
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

fn emails(dir: &Path) -> usize {
    fs::read_dir(dir.join("outbox")).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
        })
        .count()
    })
}

/// The emails in the outbox addressed to `to`.
fn emails_to(dir: &Path, to: &str) -> usize {
    fs::read_dir(dir.join("outbox")).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                fs::read_to_string(e.path()).is_ok_and(|m| m.contains(&format!("To: {to}")))
            })
            .count()
    })
}

fn lead(email: &str, source: &str) -> Lead {
    let mut lead = Lead::new(email.into(), Utc::now());
    lead.source = Some(source.into());
    lead
}

fn backlog(count: usize) -> Vec<Lead> {
    (0..count)
        .map(|i| lead(&format!("due{i:05}@example.test"), "load-test"))
        .collect()
}

fn write_csv(path: &Path, rows: usize, source: &str) {
    let mut csv = String::from("email,first_name,source\n");
    for i in 0..rows {
        csv.push_str(&format!("new{i:06}@example.test,New{i},{source}\n"));
    }
    fs::write(path, csv).unwrap();
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_import_streams_through_the_daemon_while_emails_keep_leaving() {
    let dir = scratch("control-import");
    // Enough work that the daemon is still sending when the import ends.
    let due = 6000;
    seed(&dir, backlog(due));
    let csv = dir.join("leads.csv");
    // Row 3 is refused with its line number, as without a daemon.
    write_csv(&csv, 4000, "webinar");
    let mut file = fs::read_to_string(&csv).unwrap();
    file = file.replacen("new000001@example.test", "new000001@@example.test", 1);
    fs::write(&csv, file).unwrap();

    let daemon = start(&dir);
    wait_for("the first emails", Duration::from_secs(30), || {
        emails(&dir) > 0
    });
    let before = emails(&dir);
    let import = run(&dir, &["leads", "import", csv.to_str().unwrap()]);
    let after = emails(&dir);
    let stderr = text(&import.stderr);
    assert!(import.status.success(), "{stderr}");
    assert_eq!(
        text(&import.stdout).trim(),
        "4000 rows read: 3999 created, 0 updated, 0 unchanged, 1 rejected"
    );
    assert!(
        stderr.contains(&format!("warning: {}:3: ", csv.display())),
        "{stderr}"
    );
    assert!(
        after > before,
        "emails left while the import ran ({before} before it, {after} after it)"
    );
    assert!(
        after < 2 * due,
        "the daemon was still busy when the import ended, so the import really ran beside it"
    );

    // The imported leads are in the running daemon's store, and a second import changes
    // nothing.
    let list = run(
        &dir,
        &["leads", "list", "--source", "webinar", "--format", "csv"],
    );
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert_eq!(text(&list.stdout).lines().count(), 1 + 3999);
    let again = run(&dir, &["leads", "import", csv.to_str().unwrap()]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        text(&again.stdout).trim(),
        "4000 rows read: 0 created, 0 updated, 3999 unchanged, 1 rejected"
    );
    stop(daemon);
    let log = fs::read_to_string(dir.join("daemon.log")).unwrap();
    assert!(log.contains("import through the control socket"), "{log}");
}

#[test]
fn commands_read_and_change_the_store_of_the_running_daemon() {
    let dir = scratch("control-commands");
    seed(
        &dir,
        vec![
            lead("ana@example.test", "load-test"),
            lead("quiet@example.test", "webinar"),
        ],
    );
    let daemon = start(&dir);
    wait_for("ana's two emails", Duration::from_secs(30), || {
        emails(&dir) == 2
    });

    let show = run(&dir, &["leads", "show", "ana@example.test"]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    assert!(
        text(&show.stdout).contains("blast: completed"),
        "{}",
        text(&show.stdout)
    );
    let status = run(&dir, &["status", "--format", "json"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["workflows"][0]["name"], "blast", "{report}");
    assert_eq!(report["workflows"][0]["sent"], 2, "{report}");
    assert_eq!(report["leads"], 2, "{report}");

    // A suppression made through the daemon is the daemon's: enrolling is refused.
    let suppress = run(
        &dir,
        &[
            "leads",
            "suppress",
            "QUIET@example.test",
            "--reason",
            "asked",
        ],
    );
    assert!(suppress.status.success(), "{}", text(&suppress.stderr));
    assert_eq!(
        text(&suppress.stdout).trim(),
        "quiet@example.test: suppressed"
    );
    let refused = run(&dir, &["enroll", "blast", "quiet@example.test"]);
    assert_eq!(refused.status.code(), Some(3));
    assert!(
        text(&refused.stderr).contains("not enrolled: quiet@example.test"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(emails_to(&dir, "quiet@example.test"), 0);

    // Lifted, the lead is enrolled by hand and the running daemon sends to it at once.
    assert!(
        run(&dir, &["leads", "unsuppress", "quiet@example.test"])
            .status
            .success()
    );
    let enroll = run(&dir, &["enroll", "blast", "quiet@example.test"]);
    assert!(enroll.status.success(), "{}", text(&enroll.stderr));
    assert_eq!(
        text(&enroll.stdout).trim(),
        "enrolled quiet@example.test in blast"
    );
    wait_for(
        "the emails to the lead enrolled by hand",
        Duration::from_secs(30),
        || emails_to(&dir, "quiet@example.test") == 2,
    );

    // Changes by hand, and an export written where the command runs.
    let tag = run(&dir, &["leads", "tag", "ana@example.test", "vip"]);
    assert_eq!(text(&tag.stdout).trim(), "ana@example.test: tagged vip");
    let out = dir.join("export.jsonl");
    let export = run(
        &dir,
        &[
            "leads",
            "export",
            "--format",
            "jsonl",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(export.status.success(), "{}", text(&export.stderr));
    assert!(
        text(&export.stderr).contains("2 leads written to"),
        "{}",
        text(&export.stderr)
    );
    let exported = fs::read_to_string(&out).unwrap();
    assert_eq!(exported.lines().count(), 2);
    assert!(exported.contains("\"vip\""), "{exported}");
    // A test send rendered for a stored lead reads it through the daemon.
    let test = run(
        &dir,
        &[
            "send-test",
            "blast",
            "--to",
            "me@example.test",
            "--lead",
            "ana@example.test",
        ],
    );
    assert!(test.status.success(), "{}", text(&test.stderr));
    assert_eq!(emails_to(&dir, "me@example.test"), 2);
    let missing = run(&dir, &["leads", "show", "nobody@example.test"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(
        text(&missing.stderr).contains("no lead `nobody@example.test` in the store"),
        "{}",
        text(&missing.stderr)
    );
    stop(daemon);

    // What the daemon wrote for the commands is in the store.
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let quiet = store.lead("quiet@example.test").unwrap().unwrap();
    assert!(quiet.suppression.is_none());
    assert!(
        store
            .lead("ana@example.test")
            .unwrap()
            .unwrap()
            .tags
            .contains("vip")
    );
}

#[test]
fn a_daemon_killed_mid_import_fails_the_import() {
    let dir = scratch("control-killed");
    seed(&dir, Vec::new());
    let csv = dir.join("big.csv");
    write_csv(&csv, 200_000, "webinar");
    let mut daemon = start(&dir);
    let import = nurture(&dir, &["leads", "import", csv.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the daemon has written some of it, it dies.
    let log = dir.join("daemon.log");
    std::thread::sleep(Duration::from_millis(700));
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let import = import.wait_with_output().unwrap();
    assert_eq!(
        import.status.code(),
        Some(3),
        "{}\n{}",
        text(&import.stdout),
        fs::read_to_string(log).unwrap_or_default()
    );
    assert!(
        text(&import.stderr).contains("stopped before the command ended"),
        "{}",
        text(&import.stderr)
    );
    assert!(text(&import.stdout).is_empty(), "no summary of success");
}

#[test]
fn a_daemon_that_closes_without_an_answer_fails_the_command() {
    let dir = scratch("control-silent");
    let data = dir.join("data");
    fs::create_dir_all(&data).unwrap();
    // Something listening that reads the request and goes away, as a daemon that dies.
    let listener = UnixListener::bind(data.join(SOCKET)).unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut hello = String::new();
        BufReader::new(&stream).read_line(&mut hello).unwrap();
        (&stream).write_all(b"{\"out\":\"half a li\"}\n").unwrap();
        hello
    });
    let list = run(&dir, &["leads", "list"]);
    let hello = server.join().unwrap();
    assert!(hello.contains("\"version\":1"), "{hello}");
    assert_eq!(list.status.code(), Some(3));
    assert!(
        text(&list.stderr).contains("stopped before the command ended"),
        "{}",
        text(&list.stderr)
    );
}

#[test]
fn another_users_command_is_refused() {
    let is_root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let setpriv = Path::new("/usr/bin/setpriv");
    if !is_root || !setpriv.exists() {
        eprintln!("skipped: needs root and setpriv(1) to run a command as another user");
        return;
    }
    let dir = scratch("control-other-user");
    seed(&dir, vec![lead("ana@example.test", "webinar")]);
    let daemon = start(&dir);
    use std::os::unix::fs::PermissionsExt;
    let open = |path: PathBuf, mode| fs::set_permissions(path, fs::Permissions::from_mode(mode));
    // The socket is 0600 in a 0700 folder: another user cannot even reach it.
    let nobody = |args: &[&str]| {
        let mut command = Command::new(setpriv);
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_nurture"))
            .args(args)
            .current_dir(&dir)
            .env_remove("RUST_LOG");
        command.output().unwrap()
    };
    let blocked = nobody(&["leads", "list"]);
    assert_eq!(blocked.status.code(), Some(3), "{}", text(&blocked.stderr));
    // Opened up by mistake, it is still the daemon's owner alone who is heard.
    open(dir.clone(), 0o755).unwrap();
    open(dir.join("data"), 0o755).unwrap();
    open(dir.join("data").join(SOCKET), 0o666).unwrap();
    let refused = nobody(&["leads", "list"]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("refused: the daemon takes commands from its own user"),
        "{}",
        text(&refused.stderr)
    );
    assert!(refused.stdout.is_empty());
    stop(daemon);
}
