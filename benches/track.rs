//! `cargo bench --bench track`: tracked-link clicks against `nurture run` (release build).
//!
//! A workflow that says `track clicks` sends one email to each of `NURTURE_BENCH_LEADS`
//! (default 10,000) leads and waits for a click (`wait until lead clicked "offer" or 3 days`):
//! the daemon sends them all (`--until-idle`), then runs again a day later with its HTTP server
//! while `NURTURE_BENCH_CONNECTIONS` (default 32) keep-alive connections follow the emails'
//! tracked links back to back for `NURTURE_BENCH_SECONDS` (default 10) after a 2 s warm-up,
//! as a browser would (so each click is a person's: journaled, and the first one of each lead
//! wakes its sequence). Every `302` comes after the click is durable (group commit). Prints
//! clicks/s with p50/p99 latency. Target (issue 13): ≥ 5,000 clicks/s on a 2-core machine.
//!
//! Beside them, the daemon's CPU time per click over the measured window (Linux's
//! `/proc/<pid>/task/*/schedstat`): its work loop's thread (the store's one writer, which
//! bounds the rate) and all its threads. Clicks/s depend on what else the machine runs; these
//! much less, so they compare two builds run on a shared machine.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use nurture::lead::Lead;
use nurture::mail::links::click_token;
use nurture::store::{Batch, DEFAULT_CACHE_BYTES, Store};
use nurture::token::Signer;

const SECRET: &str = "bench secret for signed links, 0123456789";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";

const FLOW: &str = r#"workflow "clicks" {
  enroll when lead.source is "bench"
  from "Ana Ortiz <ana@example.test>"
  track clicks
  step offer {
    send "offer" subject "Our offer"
    wait until lead clicked "offer" or 3 days
  }
  step after {
    tag "clicked"
  }
}
"#;

fn main() {
    let leads = setting("NURTURE_BENCH_LEADS", 10_000);
    let connections = setting("NURTURE_BENCH_CONNECTIONS", 32);
    let seconds = setting("NURTURE_BENCH_SECONDS", 10);
    let dir = std::env::temp_dir().join(format!("nurture-bench-track-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    project(&dir);
    seed(&dir, leads);
    let port = free_port();

    let started = Instant::now();
    let status = daemon(&dir, port, "2026-11-23T09:00:00Z")
        .arg("--until-idle")
        .status()
        .expect("nurture runs");
    assert!(status.success(), "{}", log(&dir));
    println!(
        "sent {leads} tracked emails in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let links = links(&dir);
    assert_eq!(links.len(), leads, "one tracked email per lead");

    let child = daemon(&dir, port, "2026-11-24T09:00:00Z")
        .spawn()
        .expect("nurture runs");
    let running = Running(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "{}", log(&dir));
        std::thread::sleep(Duration::from_millis(20));
    }
    let base = format!("http://127.0.0.1:{port}/c/");
    let pid = running.0.id();
    let (count, mut latencies, elapsed, (work_loop, all)) =
        load(base, links, connections, seconds as u64, pid);
    drop(running);
    latencies.sort();
    println!(
        "GET /c/<token>, {connections} connections, durable: {:.0} clicks/s ({count} in {:.1} s), p50 {}, p99 {}",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
    );
    let per_click = |cpu: Duration| cpu.as_secs_f64() * 1e6 / count.max(1) as f64;
    println!(
        "daemon CPU per click: work loop {:.0} µs, all threads {:.0} µs",
        per_click(work_loop),
        per_click(all)
    );
    let _ = fs::remove_dir_all(&dir);
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn project(dir: &Path) {
    fs::create_dir_all(dir.join("workflows")).expect("workflows dir");
    fs::create_dir_all(dir.join("templates")).expect("templates dir");
    fs::write(dir.join("workflows/clicks.flow"), FLOW).expect("workflow");
    fs::write(
        dir.join("templates/offer.html.hbs"),
        "<html><body><p>Hi {{default first_name \"there\"}}, see \
         <a href=\"https://shop.example.test/offer?plan=pro\">the offer</a>.</p>\
         <p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a></p></body></html>\n",
    )
    .expect("template");
    fs::write(
        dir.join("templates/offer.txt.hbs"),
        "Hi {{default first_name \"there\"}}, see https://shop.example.test/offer?plan=pro\n",
    )
    .expect("template");
}

fn seed(dir: &Path, leads: usize) {
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).expect("store");
    let mut batch = Batch::default();
    for n in 0..leads {
        let mut lead = Lead::new(format!("lead{n:07}@example.test"), Utc::now());
        lead.source = Some("bench".into());
        batch.changed.push(lead.email.clone());
        batch.leads.push(lead);
    }
    store.apply(&batch).expect("seeded");
    store.flush().expect("flushed");
}

/// `nurture run` on the bench's project, with the clock starting at `start`.
fn daemon(dir: &Path, port: u16, start: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .arg("run")
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("NURTURE_WORKFLOWS", dir.join("workflows"))
        .env("NURTURE_TEMPLATES", dir.join("templates"))
        .env("NURTURE_TRANSPORT_OUTBOX", dir.join("outbox"))
        .env("NURTURE_DAEMON_REHEARSAL_START", start)
        .env("NURTURE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("NURTURE_HTTP_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("NURTURE_HTTP_SECRET_ENV", "NURTURE_BENCH_SECRET")
        .env("NURTURE_BENCH_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("daemon.log")).expect("log file"));
    command
}

fn log(dir: &Path) -> String {
    fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
}

/// The click token of the one link of every tracked email in the store.
fn links(dir: &Path) -> Vec<String> {
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).expect("store");
    let signer = Signer::new(SECRET.as_bytes()).expect("key");
    store
        .meta_prefix("track:", usize::MAX)
        .expect("tracked emails")
        .into_iter()
        .map(|(key, _)| {
            let message = u64::from_str_radix(&key["track:".len()..], 16).expect("a number");
            click_token(&signer, message, 0)
        })
        .collect()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// The CPU time so far of process `pid`'s main thread (the daemon's work loop) and of all its
/// threads.
fn cpu(pid: u32) -> (Duration, Duration) {
    let ran = |task: &Path| {
        fs::read_to_string(task.join("schedstat"))
            .ok()
            .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
            .map_or(Duration::ZERO, Duration::from_nanos)
    };
    let tasks = Path::new("/proc").join(pid.to_string()).join("task");
    let all = fs::read_dir(&tasks)
        .map(|entries| entries.flatten().map(|entry| ran(&entry.path())).sum())
        .unwrap_or_default();
    (ran(&tasks.join(pid.to_string())), all)
}

/// Clicks in the measured window, their latencies, its length, and the daemon's CPU time in
/// it (work loop, all threads).
type Measured = (usize, Vec<Duration>, Duration, (Duration, Duration));

fn load(base: String, tokens: Vec<String>, connections: usize, seconds: u64, pid: u32) -> Measured {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tokens = Arc::new(tokens);
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .expect("client");
        let measuring = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for connection in 0..connections {
            let (client, base, tokens) = (client.clone(), base.clone(), tokens.clone());
            let (measuring, stop, counter) = (measuring.clone(), stop.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                // Each connection walks its own share of the emails, round and round.
                let mut n = connection;
                while !stop.load(Ordering::Relaxed) {
                    let url = format!("{base}{}", tokens[n % tokens.len()]);
                    n += connections;
                    let started = Instant::now();
                    let response = client
                        .get(&url)
                        .header("user-agent", FIREFOX)
                        .send()
                        .await
                        .expect("the daemon answers");
                    assert_eq!(response.status(), 302);
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
        let before = cpu(pid);
        measuring.store(true, Ordering::Relaxed);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let after = cpu(pid);
        let count = counter.load(Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("a load task"));
        }
        (
            count,
            latencies,
            elapsed,
            (
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1),
            ),
        )
    })
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
