//! `cargo bench --bench check`: how long `nurture check` takes on 100 workflow files.
//!
//! Copies the shipped examples under 100 distinct workflow names into a temporary folder, then
//! compiles the project (templates + workflows) repeatedly and prints the median and spread.
//! Target (issue 2): well under 0.2 s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nurture::cli::Project;

const FILES: usize = 100;
const RUNS: usize = 21;

fn main() {
    let dir = std::env::temp_dir().join(format!("nurture-bench-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let examples: Vec<PathBuf> = std::fs::read_dir("workflows")
        .expect("run from the project root")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "flow"))
        .collect();
    for i in 0..FILES {
        let example = &examples[i % examples.len()];
        let source = std::fs::read_to_string(example).expect("readable example");
        // Give each copy its own workflow name: duplicate names are an error.
        let renamed = source.replacen("workflow \"", &format!("workflow \"copy-{i}-"), 1);
        std::fs::write(dir.join(format!("copy-{i}.flow")), renamed).expect("write copy");
    }

    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let project = Project::load(std::slice::from_ref(&dir), Path::new("templates"));
            let elapsed = start.elapsed();
            assert_eq!(project.workflows.len(), FILES, "every copy compiles");
            assert!(project.diagnostics.is_empty());
            elapsed
        })
        .collect();
    std::fs::remove_dir_all(&dir).expect("clean up");
    times.sort();
    println!(
        "check of {FILES} workflow files (+ templates): median {:.1} ms, min {:.1} ms, max {:.1} ms over {RUNS} runs",
        times[RUNS / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[RUNS - 1].as_secs_f64() * 1e3,
    );
}
