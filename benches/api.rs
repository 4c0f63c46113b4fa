//! `cargo bench --bench api`: the HTTP doors under load, against `nurture run` (release build).
//!
//! 1. `POST /v1/leads` sustained on loopback, the store durable (every answer after the flush of
//!    its group): `NURTURE_BENCH_CONNECTIONS` (default 32) keep-alive connections post new leads
//!    back to back for `NURTURE_BENCH_SECONDS` (default 10) after a 2 s warm-up; leads/s with
//!    p50/p99 latency. The workflows folder is empty: this is the door and the store, not the
//!    engine. Target (issue 12): ≥ 5,000 leads/s on a 2-core machine.
//! 2. Form post → first email accepted by Postfix: `NURTURE_BENCH_SIGNUPS` (default 120)
//!    sign-ups one after another through a form (no double opt-in) that the shipped
//!    `trial-welcome` workflow enrolls; the clock starts before the post and stops when the
//!    daemon logs the welcome email as sent (Postfix answered 250). p50/p99. Needs Postfix and
//!    Dovecot (tests/mailstack.sh); run under `flock /tmp/nurture-mail.lock`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const KEY: &str = "bench-key-0123456789abcdef";
const SMTP_PORT: u16 = 2910;
const IMAP_PORT: u16 = 2191;

fn main() {
    let connections = setting("NURTURE_BENCH_CONNECTIONS", 32);
    let seconds = setting("NURTURE_BENCH_SECONDS", 10);
    let signups = setting("NURTURE_BENCH_SIGNUPS", 120);
    let root = std::env::temp_dir().join(format!("nurture-bench-api-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).expect("temp dir");

    api_throughput(&root.join("api"), connections, seconds as u64);
    form_to_postfix(&root.join("form"), signups);
    let _ = fs::remove_dir_all(&root);
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// `nurture run` in `dir` on `port`, with `env`; killed when dropped.
struct Daemon(Child);

impl Daemon {
    fn start(dir: &Path, port: u16, env: &[(&str, String)]) -> Daemon {
        fs::create_dir_all(dir).expect("daemon dir");
        let child = Command::new(env!("CARGO_BIN_EXE_nurture"))
            .arg("run")
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env("NURTURE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("NURTURE_HTTP_BASE_URL", format!("http://127.0.0.1:{port}"))
            .env("NURTURE_HTTP_API_KEY_ENV", "NURTURE_BENCH_API_KEY")
            .env("NURTURE_BENCH_API_KEY", KEY)
            .env("NURTURE_HTTP_API_REQUESTS_PER_SECOND", "0")
            .env("NURTURE_DAEMON_REHEARSAL_START", "2026-11-23T09:00:00Z")
            .env("NURTURE_TEMPLATES", format!("{REPO}/templates"))
            .env("NURTURE_TRANSPORT_OUTBOX", dir.join("outbox"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("daemon.log")).expect("log file"))
            .spawn()
            .expect("nurture runs");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the daemon does not listen: {}",
                fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("its address")
        .port()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn api_throughput(dir: &Path, connections: usize, seconds: u64) {
    let workflows = dir.join("no-workflows");
    fs::create_dir_all(&workflows).expect("workflows dir");
    let port = free_port();
    let daemon = Daemon::start(
        dir,
        port,
        &[("NURTURE_WORKFLOWS", workflows.display().to_string())],
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("http://127.0.0.1:{port}/v1/leads");
    let (count, latencies, elapsed) = runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .build()
            .expect("client");
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for connection in 0..connections {
            let (client, url) = (client.clone(), url.clone());
            let (measuring, stop, counter) = (measuring.clone(), stop.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = format!(
                        r#"{{"email":"c{connection}-{n}@load.example","first_name":"Load","source":"api-bench","tags":["bench"],"plan":"pro"}}"#
                    );
                    let started = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(KEY)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("the daemon answers");
                    assert_eq!(response.status(), 201, "{:?}", response.text().await);
                    let _ = response.bytes().await;
                    if measuring.load(Ordering::Relaxed) {
                        latencies.push(started.elapsed());
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let count = counter.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("a load task"));
        }
        (count, latencies, elapsed)
    });
    drop(daemon);
    let mut latencies = latencies;
    latencies.sort();
    println!(
        "POST /v1/leads, {connections} connections, durable: {:.0} leads/s ({count} in {:.1} s), p50 {}, p99 {}",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
    );
}

fn mailstack(args: &[&str]) {
    let status = Command::new(format!("{REPO}/tests/mailstack.sh"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("tests/mailstack.sh runs");
    assert!(
        status.success(),
        "the mail system did not {} (tests/run installs it)",
        args[0]
    );
}

fn form_to_postfix(dir: &Path, signups: usize) {
    let stack = PathBuf::from(format!("/tmp/nba-{}", std::process::id()));
    let stack_dir = stack.display().to_string();
    mailstack(&[
        "up",
        &stack_dir,
        &SMTP_PORT.to_string(),
        &IMAP_PORT.to_string(),
        "ana",
        "sales",
    ]);
    fs::create_dir_all(dir).expect("dir");
    fs::write(
        dir.join("nurture.toml"),
        r#"
[[forms]]
name = "trial"
fields = { email = "email", first_name = "first_name" }
source = "website-form"
tags = ["trial"]
thank_you_url = "https://www.example.test/thanks"
error_url = "https://www.example.test/oops"
per_address_per_minute = 0
"#,
    )
    .expect("config");
    let port = free_port();
    let daemon = Daemon::start(
        dir,
        port,
        &[
            ("NURTURE_WORKFLOWS", format!("{REPO}/workflows")),
            ("NURTURE_TRANSPORT_KIND", "smtp".into()),
            ("NURTURE_SMTP_URL", format!("smtp://127.0.0.1:{SMTP_PORT}")),
        ],
    );
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let log = dir.join("daemon.log");
    let mut read = 0;
    let mut latencies = Vec::with_capacity(signups);
    for n in 0..signups {
        let lead = format!("s{n:04}@signup.example");
        let started = Instant::now();
        let response = client
            .post(format!("http://127.0.0.1:{port}/forms/trial"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("email={lead}&first_name=Sam"))
            .send()
            .expect("the daemon answers");
        assert_eq!(response.status(), 303);
        // The daemon logs `sent` once Postfix has answered 250 for the email.
        let needle = format!("lead={lead}");
        loop {
            let text = fs::read(&log).unwrap_or_default();
            let fresh = String::from_utf8_lossy(&text[read.min(text.len())..]).into_owned();
            if let Some(line) = fresh
                .lines()
                .find(|line| line.contains(" sent") && line.contains(&needle))
            {
                latencies.push(started.elapsed());
                read += fresh.find(line).unwrap_or(0) + line.len();
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no email sent for {lead}:\n{fresh}"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    drop(daemon);
    mailstack(&["kill", &stack_dir]);
    latencies.sort();
    println!(
        "form post → first email accepted by Postfix, {signups} sign-ups: p50 {}, p99 {}",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
    );
}
