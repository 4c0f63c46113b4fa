//! `cargo bench --bench classify`: classification throughput over the golden corpus
//! (`tests/corpus/classify/`: replies, auto-replies, bounces of every shape, complaints,
//! delivery notices, unsubscribe and list mail).
//!
//! Classifies the whole corpus in a loop for about a second per round, five rounds, and prints
//! the median in messages and megabytes per second. Each message is classified from its raw
//! bytes, as the daemon does with each mail it fetches, under the daemon's allocator.

use std::time::{Duration, Instant};

use nurture::mail::classify::classify;

// The allocator the `nurture` binary (and so the daemon that classifies) uses: a classification
// allocates and frees a few dozen small strings: under glibc's malloc it takes 8 % more
// instructions (callgrind).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_secs(1);

fn main() {
    let corpus: Vec<Vec<u8>> = std::fs::read_dir("tests/corpus/classify")
        .expect("run from the project root")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .map(|path| std::fs::read(path).expect("readable"))
        .collect();
    assert!(!corpus.is_empty(), "the corpus is empty");
    let bytes: usize = corpus.iter().map(Vec::len).sum();
    let mut rates: Vec<(f64, f64)> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            let mut messages = 0usize;
            let mut passes = 0usize;
            while started.elapsed() < ROUND {
                for raw in &corpus {
                    std::hint::black_box(classify(std::hint::black_box(raw)));
                }
                messages += corpus.len();
                passes += 1;
            }
            let seconds = started.elapsed().as_secs_f64();
            (
                messages as f64 / seconds,
                (passes * bytes) as f64 / seconds / 1e6,
            )
        })
        .collect();
    rates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, megabytes) = rates[ROUNDS / 2];
    println!(
        "classify: {} messages ({:.1} KB) of the corpus: median {median:.0} messages/s ({megabytes:.1} MB/s) over {ROUNDS} rounds; min {:.0}, max {:.0}",
        corpus.len(),
        bytes as f64 / 1e3,
        rates[0].0,
        rates[ROUNDS - 1].0,
    );
}
