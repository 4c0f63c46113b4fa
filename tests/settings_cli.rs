//! Settings checked like workflows, and flags that cannot overflow, through the real binary:
//! `nurture check` and `nurture run` refuse the same out-of-range values and unknown
//! `NURTURE_*` variables, each at its file line or by its name; a duration flag too large for
//! a date is a usage error (exit 2), never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `nurture ARGS` in `dir` with the repository's workflows and templates, a store in `dir`
/// and the extra variables `env`.
fn nurture(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .args(args)
        .current_dir(dir)
        .env("NURTURE_STORE_PATH", dir.join("data"))
        .env("NURTURE_TRANSPORT_OUTBOX", dir.join("outbox"))
        .env("NURTURE_WORKFLOWS", repo.join("workflows"))
        .env("NURTURE_TEMPLATES", repo.join("templates"))
        .env_remove("NURTURE_CONFIG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    crate::support::scratch(&format!("settings-{name}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `daemon.batch = 0` passed `check` and spun the daemon at 84 % CPU sending nothing; `check`
/// passed an `http.listen` that `run` refused. Both commands now refuse both, at their lines.
#[test]
fn check_and_run_refuse_values_out_of_range_at_their_line() {
    let dir = scratch("out-of-range");
    std::fs::write(
        dir.join("nurture.toml"),
        "[daemon]\nbatch = 0\n\n[http]\nlisten = \"localhost\"\n",
    )
    .unwrap();
    for (command, code) in [("check", 1), ("run", 2)] {
        let output = nurture(&dir, &[command], &[]);
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{command}: {stderr}");
        assert!(
            stderr.contains("error: `daemon.batch` is 0; it must be from 1 to 10000")
                && stderr.contains("--> nurture.toml:2:9"),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains("`http.listen` = \"localhost\" is not an IP address and port")
                && stderr.contains("--> nurture.toml:5:10"),
            "{command}: {stderr}"
        );
    }
    assert!(
        !dir.join("data").exists(),
        "run stopped before opening the store"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A misspelled variable was ignored in silence: the daemon ran with the default batch.
#[test]
fn an_unknown_nurture_variable_is_an_error_naming_the_closest_setting() {
    let dir = scratch("unknown-variable");
    for (command, code) in [("check", 1), ("run", 2)] {
        let output = nurture(&dir, &[command], &[("NURTURE_DEAMON_BATCH", "64")]);
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(code), "{command}: {stderr}");
        assert!(
            stderr.contains(
                "environment variable NURTURE_DEAMON_BATCH is not a setting; did you mean NURTURE_DAEMON_BATCH?"
            ),
            "{command}: {stderr}"
        );
    }
    // The variables the command line, the settings and the rehearsal use are all fine.
    let output = nurture(
        &dir,
        &["check"],
        &[
            ("NURTURE_DAEMON_REHEARSAL_START", "2026-11-22T12:00:00Z"),
            ("NURTURE_DAEMON_REHEARSAL_SPEED", "1000000"),
            ("NURTURE_SMTP_PASSWORD_ENV", "NURTURE_SMTP_SECRET"),
            ("NURTURE_SMTP_SECRET", "hunter2"),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `nurture dry-run trial-welcome --until 99999999999d` panicked in chrono.
#[test]
fn an_overflowing_duration_flag_is_a_usage_error() {
    let dir = scratch("overflow");
    for args in [
        ["dry-run", "trial-welcome", "--until", "99999999999d"],
        [
            "dry-run",
            "trial-welcome",
            "--until",
            "999999999999999999999w",
        ],
        ["dry-run", "trial-welcome", "--reply-after", "99999999999d"],
    ] {
        let output = nurture(&dir, &args, &[]);
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("is too long; at most 100 years"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
