//! `cargo bench --bench metrics`: `GET /metrics` of `nurture run` (release) at a million leads,
//! over real HTTP on loopback.
//!
//! 1. Builds the engine benchmark's store (`benches/support`): N leads (default 1,000,000;
//!    `NURTURE_BENCH_LEADS`), each enrolled in the 3-step drip workflow and due within the hour
//!    before now.
//! 2. Idle: the daemon's clock starts two hours back (rehearsal), so nothing is due yet. Time
//!    from start until `/metrics` shows the queues' depths (the one O(n) count, in the
//!    background); then `NURTURE_BENCH_SCRAPES` (default 1,000) scrapes one after another on a
//!    keep-alive connection: median and p99, beside `/healthz` on the same connection in the
//!    same run (the cost of the HTTP round trip alone) and the ratio. The figures are checked:
//!    N active enrollments, N in the due index.
//! 3. Busy: the same store with the real clock, the daemon working through the backlog (file
//!    transport); the same scrapes while it sends, and the emails counted by `/metrics` against
//!    the files written.
//!
//! Target (issue 14): a scrape ≤ 10 ms at 1,000,000 leads.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;

mod support;

fn main() {
    let leads = setting("NURTURE_BENCH_LEADS", 1_000_000);
    let scrapes = setting("NURTURE_BENCH_SCRAPES", 1_000);
    let root = std::env::temp_dir().join(format!("nurture-bench-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    let (project, workflows, templates) = support::drip_project();
    let started = Instant::now();
    let now = Utc::now();
    support::enrolled_store(&root.join("data"), &project, leads, now);
    println!(
        "store: {leads} leads enrolled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(project);

    // 2. Idle.
    let before = (now - chrono::Duration::hours(2)).to_rfc3339();
    let daemon = Daemon::start(&root, &workflows, &templates, Some(&before));
    let counted = daemon.wait_for_depths();
    println!(
        "idle daemon: /metrics shows the depths {:.2} s after the HTTP server answered (the one count of the store, in the background)",
        counted.as_secs_f64()
    );
    let text = daemon.get("/metrics");
    let active = value(&text, "nurture_enrollments_active{workflow=\"drip\"}");
    let due = value(&text, "nurture_due_queue_depth");
    assert_eq!(active, leads as f64, "active enrollments:\n{text}");
    assert_eq!(due, leads as f64, "due index:\n{text}");
    println!(
        "idle daemon: /metrics says {active} active enrollments, {due} in the due index ({} bytes)",
        text.len()
    );
    measure(&daemon, "idle daemon", scrapes);
    drop(daemon);

    // 3. Busy: everything is due now.
    let daemon = Daemon::start(&root, &workflows, &templates, None);
    daemon.wait_for_depths();
    measure(&daemon, "busy daemon", scrapes);
    let text = daemon.get("/metrics");
    let sent = value(
        &text,
        "nurture_emails_total{workflow=\"drip\",outcome=\"sent\"}",
    );
    let files = std::fs::read_dir(root.join("outbox")).map_or(0, |d| d.count());
    println!(
        "busy daemon: {sent} emails sent by /metrics, {files} files in the outbox folder meanwhile"
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&root);
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `scrapes` scrapes of `/metrics`, then as many of `/healthz`, interleaved in rounds so that
/// both see the same load; prints medians, p99 and the ratio.
fn measure(daemon: &Daemon, what: &str, scrapes: usize) {
    let mut metrics = Vec::with_capacity(scrapes);
    let mut health = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        let started = Instant::now();
        daemon.get("/metrics");
        metrics.push(started.elapsed());
        let started = Instant::now();
        daemon.get("/healthz");
        health.push(started.elapsed());
    }
    let (m50, m99) = percentiles(&mut metrics);
    let (h50, h99) = percentiles(&mut health);
    println!(
        "{what}: GET /metrics median {:.3} ms, p99 {:.3} ms over {scrapes} scrapes; GET /healthz median {:.3} ms, p99 {:.3} ms; /metrics costs {:.2}× /healthz",
        ms(m50),
        ms(m99),
        ms(h50),
        ms(h99),
        m50.as_secs_f64() / h50.as_secs_f64()
    );
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5), at(0.99))
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The value of the sample line that starts with `series` (name and labels).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// `nurture run` (release) on the store in `root`, serving HTTP on a free port; stopped when
/// dropped.
struct Daemon {
    child: Child,
    base: String,
    http: reqwest::blocking::Client,
}

impl Daemon {
    fn start(root: &Path, workflows: &Path, templates: &Path, clock: Option<&str>) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
        command
            .arg("run")
            .current_dir(root)
            .env_remove("RUST_LOG")
            .env("NURTURE_WORKFLOWS", workflows)
            .env("NURTURE_TEMPLATES", templates)
            .env("NURTURE_LOG_LEVEL", "warn")
            .env("NURTURE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("daemon.log")).expect("log"));
        if let Some(start) = clock {
            command.env("NURTURE_DAEMON_REHEARSAL_START", start);
        }
        let daemon = Daemon {
            child: command.spawn().expect("nurture run"),
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        let started = Instant::now();
        while daemon.try_get("/healthz").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the daemon does not answer:\n{}",
                std::fs::read_to_string(root.join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        daemon
    }

    fn try_get(&self, path: &str) -> Option<String> {
        let response = self.http.get(format!("{}{path}", self.base)).send().ok()?;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.text().ok()
    }

    fn get(&self, path: &str) -> String {
        self.try_get(path).expect("the daemon answers")
    }

    /// Waits until `/metrics` shows the depths; how long that took.
    fn wait_for_depths(&self) -> Duration {
        let started = Instant::now();
        while !self.get("/metrics").contains("nurture_due_queue_depth") {
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "no depths after 300 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
