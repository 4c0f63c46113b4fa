//! Bench: `nurture leads import` of a 1,000,000-row CSV into a fresh store, then the same file
//! again (every lead unchanged). Prints rows, seconds and leads per second for both.
//!
//! It runs the `nurture` binary Cargo builds for benches (release settings), so the figures are
//! what a user sees: process start, store open, parsing, merging, the writes and the final
//! flush. The import function lives in the binary's private `cli` module, out of a bench's
//! reach. Run with `cargo bench --bench import`; `NURTURE_BENCH_ROWS` changes the row count.

mod leads_csv;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn main() {
    let rows: usize = std::env::var("NURTURE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("nurture-bench-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the bench folder");
    let csv = dir.join("leads.csv");
    leads_csv::write(&csv, rows, "lead");
    let size = std::fs::metadata(&csv).map_or(0, |m| m.len());
    println!(
        "import: {rows} rows, {:.1} MB CSV, into a fresh store",
        size as f64 / 1e6
    );

    let store = dir.join("data");
    let first = time_import(&csv, &store);
    assert!(
        first.1.contains(&format!("{rows} created")),
        "unexpected summary: {}",
        first.1
    );
    report("first import", rows, first.0);
    let again = time_import(&csv, &store);
    assert!(
        again.1.contains(&format!("{rows} unchanged")),
        "unexpected summary: {}",
        again.1
    );
    report("re-import (unchanged)", rows, again.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs one import; returns its wall time in seconds and its summary line.
fn time_import(csv: &Path, store: &Path) -> (f64, String) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["leads", "import"])
        .arg(csv)
        .env("NURTURE_STORE_PATH", store)
        .output()
        .expect("run nurture");
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "nurture leads import failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (
        seconds,
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    )
}

fn report(what: &str, rows: usize, seconds: f64) {
    println!(
        "  {what:<22} {rows} rows in {seconds:.2} s: {:.0} leads/s",
        rows as f64 / seconds
    );
}
