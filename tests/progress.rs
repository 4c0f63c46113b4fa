//! Progress bars on long imports and exports: drawn when stderr is a terminal (a pseudo-terminal
//! made by `script`), never when it is not (a pipe, as in these tests and in logs).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use crate::support::scratch;

fn nurture(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NURTURE_STORE_PATH", dir.join("data"))
        .output()
        .unwrap()
}

/// `nurture ARGS` with its stdin, stdout and stderr on a pseudo-terminal; what the terminal
/// showed.
fn on_a_terminal(dir: &Path, args: &str) -> String {
    let command = format!(
        "cd {} && NURTURE_STORE_PATH=data {} {args}",
        dir.display(),
        env!("CARGO_BIN_EXE_nurture")
    );
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("`script` (util-linux) runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn write_csv(path: &Path, rows: usize) {
    let mut csv = String::from("email,first_name\n");
    for i in 0..rows {
        csv.push_str(&format!("p{i:06}@example.test,P{i}\n"));
    }
    fs::write(path, csv).unwrap();
}

#[test]
fn imports_and_exports_draw_a_bar_on_a_terminal_and_nothing_elsewhere() {
    let dir = scratch("progress");
    write_csv(&dir.join("leads.csv"), 5_000);

    let import = nurture(&dir, &["leads", "import", "leads.csv"]);
    assert!(import.status.success());
    let export = nurture(&dir, &["leads", "export", "--out", "out.csv"]);
    assert!(export.status.success());
    for (what, output) in [("import", &import), ("export", &export)] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains('\x1b') && !stderr.contains('\r'),
            "{what} drew on a pipe: {stderr:?}"
        );
    }
    assert!(String::from_utf8_lossy(&import.stdout).contains("5000 rows read"));

    let shown = on_a_terminal(&dir, "leads import leads.csv");
    assert!(
        shown.contains("importing") && shown.contains("rows"),
        "no bar on a terminal: {shown:?}"
    );
    assert!(shown.contains("5000 rows read"), "{shown:?}");
    let shown = on_a_terminal(&dir, "leads export --out again.csv");
    assert!(
        shown.contains("exporting"),
        "no bar on a terminal: {shown:?}"
    );
    assert_eq!(
        fs::read(dir.join("again.csv")).unwrap(),
        fs::read(dir.join("out.csv")).unwrap(),
        "the bar is not in the file"
    );
    // Exported to the terminal itself: no bar between the lines.
    let shown = on_a_terminal(&dir, "leads export --format jsonl");
    assert!(
        !shown.contains("exporting"),
        "a bar among the exported lines"
    );
    let _ = fs::remove_dir_all(&dir);
}
