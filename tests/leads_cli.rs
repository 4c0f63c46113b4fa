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

    /// Runs `nurture ARGS`.
    fn run(&self, args: &[&str]) -> Run {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let output = Command::new(env!("CARGO_BIN_EXE_nurture"))
            .args(args)
            .current_dir(&self.dir)
            .env("NURTURE_STORE_PATH", self.store())
            .env("NURTURE_WORKFLOWS", repo.join("workflows"))
            .env("NURTURE_TEMPLATES", repo.join("templates"))
            .env_remove("NURTURE_CONFIG")
            .output()
            .unwrap();
        Run(output)
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code(), 0, "nurture {args:?} failed: {}", run.stderr());
        run.stdout()
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
    let second = scratch.ok(&["leads", "import", samples.to_str().unwrap()]);
    assert_eq!(
        second.trim(),
        "12 rows read: 0 created, 0 updated, 12 unchanged, 0 rejected"
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
