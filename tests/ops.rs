//! Running nurture in production: the systemd notifications (`Type=notify`, the watchdog), the
//! shipped unit file, and the completions and man pages generated from the command line.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use nurture::cli::Cli;

use crate::support::scratch;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn nurture(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("NURTURE_WORKFLOWS", Path::new(REPO).join("workflows"))
        .env("NURTURE_TEMPLATES", Path::new(REPO).join("templates"));
    command
}

/// The datagrams the daemon sent to the notification socket until `until` says stop (or the
/// deadline passes).
fn receive_until(
    socket: &UnixDatagram,
    deadline: Duration,
    mut until: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < deadline && !until(&received) {
        if let Ok(n) = socket.recv(&mut buffer) {
            received.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }
    received
}

#[test]
fn under_systemd_the_daemon_says_ready_feeds_the_watchdog_and_says_stopping() {
    let dir = scratch("ops-notify");
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // systemd names the process the watchdog is for: the shell's own pid, which `exec` hands
    // to nurture.
    let mut daemon = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run"])
        .arg(env!("CARGO_BIN_EXE_nurture"))
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .env("NURTURE_WORKFLOWS", Path::new(REPO).join("workflows"))
        .env("NURTURE_TEMPLATES", Path::new(REPO).join("templates"))
        .env("NOTIFY_SOCKET", &socket_path)
        // A 400 ms watchdog: the idle loop must wake to feed it every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();

    let ready = receive_until(&socket, Duration::from_secs(30), |got| {
        got.iter().any(|m| m.contains("READY=1"))
    });
    let log = || fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    assert!(
        ready.iter().any(|m| m.contains("READY=1")),
        "no READY=1 from the daemon; got {ready:?}; log:\n{}",
        log()
    );
    // Ready means the store is open: its folder exists by then.
    assert!(dir.join("data").is_dir());

    let pings = receive_until(&socket, Duration::from_secs(10), |got| {
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    });
    assert!(
        pings.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "the idle daemon did not feed a 400 ms watchdog; got {pings:?}"
    );

    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let stopping = receive_until(&socket, Duration::from_secs(20), |got| {
        got.iter().any(|m| m.contains("STOPPING=1"))
    });
    assert!(
        stopping.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING=1 on SIGTERM; got {stopping:?}"
    );
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status}; log:\n{}", log());
}

#[test]
fn without_systemd_the_daemon_runs_as_before() {
    // No NOTIFY_SOCKET: nothing to notify, and no error about it in the log.
    let dir = scratch("ops-no-notify");
    let status = nurture(&dir)
        .args(["run", "--until-idle"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("daemon.log")).unwrap())
        .status()
        .unwrap();
    let log = fs::read_to_string(dir.join("daemon.log")).unwrap();
    assert!(status.success(), "{log}");
    assert!(!log.contains("NOTIFY_SOCKET"), "{log}");
}

/// The value of `Key=` lines in the shipped unit file.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_shipped_unit_file_starts_nurture_with_arguments_and_settings_it_accepts() {
    let unit = fs::read_to_string(Path::new(REPO).join("docs/systemd/nurture.service")).unwrap();
    assert_eq!(unit_values(&unit, "Type"), ["notify"]);
    assert_eq!(unit_values(&unit, "WatchdogSec").len(), 1);
    assert_eq!(unit_values(&unit, "NoNewPrivileges"), ["yes"]);
    assert_eq!(unit_values(&unit, "ProtectSystem"), ["strict"]);

    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1);
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    assert!(words[0].ends_with("/nurture"), "{words:?}");
    let cli = Cli::try_parse_from(&words).unwrap_or_else(|e| panic!("{}: {e}", exec[0]));
    assert!(matches!(cli.command, nurture::cli::Command::Run(_)));

    // Every setting the unit gives in the environment is one `nurture check` accepts.
    let dir = scratch("ops-unit-env");
    let mut check = nurture(&dir);
    check.arg("check");
    for assignment in unit_values(&unit, "Environment") {
        let (name, value) = assignment.split_once('=').unwrap();
        assert!(name.starts_with("NURTURE_"), "{assignment}");
        // Same setting, a folder of this test's (the unit's /var/lib is not ours).
        let leaf = Path::new(value).file_name().unwrap();
        check.env(name, dir.join(leaf));
    }
    let output = check.output().unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What bash completes after `words` with the script `nurture completions bash` prints.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let words_array = words
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let program = format!(
        "source '{}'; COMP_WORDS=({words_array}); COMP_CWORD={}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; \
         _nurture nurture '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words.len() - 1,
        words.join(" "),
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let output = Command::new("bash")
        .args(["--norc", "-c", &program])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_offers_the_subcommands_and_their_flags() {
    let dir = scratch("ops-completions");
    let output = nurture(&dir)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let script = dir.join("nurture.bash");
    fs::write(&script, &output.stdout).unwrap();

    assert_eq!(bash_completes(&script, &["nurture", "dry-"]), ["dry-run"]);
    assert!(bash_completes(&script, &["nurture", "leads", "imp"]).contains(&"import".to_string()));
    let flags = bash_completes(&script, &["nurture", "dry-run", "--reply"]);
    assert_eq!(flags, ["--reply-after"]);

    for shell in ["zsh", "fish"] {
        let output = nurture(&dir).args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("dry-run"));
    }
    let bad = nurture(&dir)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_are_written_for_the_command_and_every_subcommand() {
    let dir = scratch("ops-man");
    let out = dir.join("man");
    let status = nurture(&dir)
        .args(["man", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let main = fs::read_to_string(out.join("nurture.1")).unwrap();
    assert!(
        main.starts_with(".ie") || main.contains(".TH nurture 1"),
        "{main}"
    );
    assert!(
        main.contains("dry\\-run"),
        "the main page lists the subcommands"
    );
    let dry_run = fs::read_to_string(out.join("nurture-dry-run.1")).unwrap();
    assert!(dry_run.contains("reply\\-after"), "{dry_run}");
    assert!(out.join("nurture-leads-import.1").is_file());
}
