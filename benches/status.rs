//! `cargo bench --bench status`: `nurture status` at a million leads.
//!
//! 1. Builds a store of N leads (default 1,000,000; `NURTURE_BENCH_LEADS` to change), each
//!    enrolled in the drip workflow and due now, and runs `SENT` of their steps through the
//!    daemon's scheduler and sender, so the store holds emails sent and journal lines too.
//! 2. The report from the counters (`nurture::cli::status::report::report`, what the command,
//!    the status page and `/metrics` call) in this process: median of `RUNS` runs. Beside it,
//!    once, the full count of every record that `status` did before the counters
//!    (`Store::recount`, which `nurture status --recount` runs), and the ratio.
//! 3. The `nurture status --format json` binary (release) on that store with no daemon
//!    running: the store closed (its last process left the snapshot `status` reads), median of
//!    `RUNS` runs; and as after a crash (no snapshot: the store is opened), median of
//!    `CRASH_RUNS` runs. Both answers must be the same bytes.
//! 4. The same through a running daemon's control socket (`nurture run`, working through the
//!    backlog of due leads meanwhile), and once that daemon stopped: medians of `RUNS` runs.
//!
//! `NURTURE_BENCH_KEEP=1` keeps the store (its folder is printed).
//!
//! Target (issue 14): `nurture status` ≤ 100 ms at 1,000,000 leads.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use nurture::config::Limits;
use nurture::daemon::pipeline::Pipeline;
use nurture::daemon::throttle::Throttle;
use nurture::daemon::transport::Transport;
use nurture::store::{DEFAULT_CACHE_BYTES, Store};

mod support;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Due steps run before measuring (each sends an email and writes journal lines).
const SENT: usize = 100_000;
const RUNS: usize = 15;
/// Runs that open the store (seconds each at a million leads).
const CRASH_RUNS: usize = 3;

fn main() {
    let leads: usize = std::env::var("NURTURE_BENCH_LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let root = std::env::temp_dir().join(format!("nurture-bench-status-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let (project, workflows, templates) = support::drip_project();

    // 1. The store, with emails sent.
    let data = root.join("data");
    let now = Utc::now();
    let started = Instant::now();
    support::enrolled_store(&data, &project, leads, now);
    let store = Store::open(&data, DEFAULT_CACHE_BYTES).expect("store");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut pipeline = Pipeline::new(
        store.clone(),
        std::sync::Arc::new(Transport::Null),
        Throttle::new(Limits::default()),
        std::sync::Arc::new(nurture::unsubscribe::Unsubscribe::preview("")),
    );
    let sent = SENT.min(leads / 2);
    let mut done = 0;
    while done < sent {
        done += runtime
            .block_on(pipeline.run_due(&project, now, 256.min(sent - done)))
            .expect("run");
    }
    runtime.block_on(pipeline.finish()).expect("send");
    drop(pipeline);
    store.flush().expect("flush");
    println!(
        "store: {leads} leads enrolled, {sent} steps run, in {:.1} s; {:.0} MB on disk",
        started.elapsed().as_secs_f64(),
        store.size_on_disk().unwrap_or(0) as f64 / 1e6
    );

    // 2. In this process: the report from the counters, and the full count it replaces.
    let names: Vec<String> = project.workflows.iter().map(|w| w.name.clone()).collect();
    let report = || nurture::cli::status::report::report(&store, &names, 5).expect("report");
    let checked = report();
    let drip = checked
        .workflows
        .iter()
        .find(|w| w.name == "drip")
        .expect("drip");
    assert_eq!(drip.enrolled, leads as u64);
    assert_eq!(drip.sent, sent as u64);
    let from_counters = median(RUNS, || {
        report();
    });
    let started = Instant::now();
    let recounted = store.recount(false).expect("recount");
    let full = started.elapsed();
    assert!(
        recounted.differences.is_empty(),
        "{:?}",
        recounted.differences
    );
    println!(
        "report in process: median {:.2} ms over {RUNS} runs from the counters; a full count of every record (`status --recount`, what `status` did before) {:.2} s: {:.0}× faster",
        ms(from_counters),
        full.as_secs_f64(),
        full.as_secs_f64() / from_counters.as_secs_f64()
    );
    // Closed as every nurture process closes it: the snapshot `status` reads is left.
    store.close().expect("close");
    drop(store);

    // 3. The binary, no daemon: from the snapshot the close left, and (as after a crash, which
    //    leaves none) opening the store, which leaves the snapshot again.
    let nurture = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_nurture"))
            .args(args)
            .current_dir(&root)
            .env("NURTURE_WORKFLOWS", &workflows)
            .env("NURTURE_TEMPLATES", &templates)
            .env("NURTURE_LOG_LEVEL", "warn")
            .output()
            .expect("nurture");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let snapshot = data.join(nurture::store::snapshot::FILE_NAME);
    let mut from_snapshot = Vec::new();
    let binary = median(RUNS, || {
        assert!(snapshot.exists(), "the last close left the snapshot");
        from_snapshot = nurture(&["status", "--format", "json"]);
    });
    println!(
        "`nurture status --format json`, no daemon, the store closed: median {:.1} ms over {RUNS} runs (process start, snapshot read, workflows loaded, report)",
        ms(binary)
    );
    let mut from_store = Vec::new();
    let after_crash = median(CRASH_RUNS, || {
        std::fs::remove_file(&snapshot).expect("remove the snapshot");
        from_store = nurture(&["status", "--format", "json"]);
    });
    assert_eq!(
        from_snapshot, from_store,
        "the snapshot says what the store says"
    );
    println!(
        "`nurture status --format json`, no daemon, after a crash (no snapshot: the store is opened): median {:.1} ms over {CRASH_RUNS} runs",
        ms(after_crash)
    );

    // 4. Through a running daemon, busy with the backlog.
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("run")
        .current_dir(&root)
        .env("NURTURE_WORKFLOWS", &workflows)
        .env("NURTURE_TEMPLATES", &templates)
        .env("NURTURE_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("daemon.log")).expect("log"))
        .spawn()
        .expect("nurture run");
    let socket = nurture::control::socket_path(&data);
    let waiting = Instant::now();
    while !socket.exists() || !sending(&root.join("outbox")) {
        if waiting.elapsed() > Duration::from_secs(120) {
            stop(&mut daemon);
            let log = std::fs::read_to_string(root.join("daemon.log")).unwrap_or_default();
            panic!("the daemon did not start sending in 120 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let through_daemon = median(RUNS, || {
        nurture(&["status", "--format", "json"]);
    });
    stop(&mut daemon);
    println!(
        "`nurture status --format json` through the running daemon (sending meanwhile): median {:.1} ms over {RUNS} runs",
        ms(through_daemon)
    );
    let after_stop = median(RUNS, || {
        assert!(snapshot.exists(), "the daemon's stop left the snapshot");
        nurture(&["status", "--format", "json"]);
    });
    println!(
        "`nurture status --format json` once the daemon stopped: median {:.1} ms over {RUNS} runs",
        ms(after_stop)
    );

    if std::env::var_os("NURTURE_BENCH_KEEP").is_some() {
        println!("kept: {}", root.display());
    } else {
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// The median time of `runs` runs of `work`.
fn median(runs: usize, mut work: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn ms(time: Duration) -> f64 {
    time.as_secs_f64() * 1e3
}

/// Whether the daemon has written an email into its outbox folder.
fn sending(outbox: &Path) -> bool {
    std::fs::read_dir(outbox).is_ok_and(|mut entries| entries.next().is_some())
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
