//! Webhooks out, over real HTTP on 127.0.0.1: a receiver that is down at first gets every
//! webhook once it is up, across a restart of the daemon; a 500 is retried with the same
//! `webhook-id`; every attempt's signature verifies under the secret the test made; given-up
//! webhooks are listed and sent again by `nurture webhooks retry`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use nurture::lead::Lead;
use nurture::store::{DEFAULT_CACHE_BYTES, Store};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;

use crate::support::{scratch, seed};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// One request as the receiver saw it, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: String,
    answered: u16,
}

/// A small HTTP/1.1 receiver on 127.0.0.1 that records every request. With `fail_first`, the
/// first request of each `webhook-id` gets a 500 and later ones a 200.
struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, fail_first: bool) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopping) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => serve(stream, &log, fail_first),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests have arrived (or the timeout), and returns them all.
    fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let started = Instant::now();
        while self.received().len() < count && started.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.received()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut stream: TcpStream, log: &Mutex<Vec<Received>>, fail_first: bool) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let headers: BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    while raw.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&raw[head_end..head_end + length]).into_owned();
    let mut log = log.lock().unwrap();
    let id = headers.get("webhook-id").cloned().unwrap_or_default();
    let seen = log.iter().any(|r| r.headers.get("webhook-id") == Some(&id));
    let answered = if fail_first && !seen { 500 } else { 200 };
    log.push(Received {
        headers,
        body,
        answered,
    });
    drop(log);
    let reason = if answered == 200 { "OK" } else { "Oops" };
    let _ = write!(
        stream,
        "HTTP/1.1 {answered} {reason}\r\nContent-Length: 4\r\nConnection: close\r\n\r\n{}",
        if answered == 200 { "done" } else { "oops" }
    );
}

/// A port nobody listens on (yet).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes; and its key.
fn make_secret() -> (String, hmac::Key) {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).unwrap();
    (
        format!("whsec_{}", STANDARD.encode(bytes)),
        hmac::Key::new(hmac::HMAC_SHA256, &bytes),
    )
}

/// Checks a request the way a receiver following the spec does: the signature over
/// `id.timestamp.body` under the secret's bytes, and a timestamp within five minutes.
fn verify(key: &hmac::Key, request: &Received) {
    let id = &request.headers["webhook-id"];
    let timestamp = &request.headers["webhook-timestamp"];
    let sent_at: i64 = timestamp.parse().expect("unix seconds");
    assert!(
        (Utc::now().timestamp() - sent_at).abs() < 300,
        "a timestamp a receiver accepts: {sent_at}"
    );
    let signed = format!("{id}.{timestamp}.{}", request.body);
    let signatures = &request.headers["webhook-signature"];
    let verified = signatures.split(' ').any(|signature| {
        let Some(encoded) = signature.strip_prefix("v1,") else {
            return false;
        };
        let Ok(tag) = STANDARD.decode(encoded) else {
            return false;
        };
        hmac::verify(key, signed.as_bytes(), &tag).is_ok()
    });
    assert!(verified, "signature {signatures} over {signed}");
    assert_eq!(request.headers["content-type"], "application/json");
}

struct Setup {
    dir: PathBuf,
}

impl Setup {
    /// A scratch folder with a `nurture.toml` that sends `events` to the receiver's port.
    fn new(name: &str, port: u16, events: &str, extra: &str) -> (Setup, hmac::Key) {
        let dir = scratch(name);
        let (secret, key) = make_secret();
        fs::write(dir.join("webhook-secret"), format!("{secret}\n")).unwrap();
        fs::write(
            dir.join("nurture.toml"),
            format!(
                "[[webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\nevents = {events}\nsecret_file = \"{}\"\nretry_min_seconds = 1\nretry_max_seconds = 2\n{extra}",
                dir.join("webhook-secret").display()
            ),
        )
        .unwrap();
        (Setup { dir }, key)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
        command
            .args(args)
            .current_dir(&self.dir)
            .env_remove("RUST_LOG")
            .env(
                "NURTURE_WORKFLOWS",
                Path::new(REPO).join("tests/fixtures/daemon/workflows"),
            )
            .env(
                "NURTURE_TEMPLATES",
                Path::new(REPO).join("tests/fixtures/daemon/templates"),
            );
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "nurture {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn start(&self, log: &str) -> Child {
        let log = fs::File::create(self.dir.join(log)).unwrap();
        self.command(&["run"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the daemon starts")
    }

    /// Waits until the log holds `needle` `times` times.
    fn wait_for_log(&self, log: &str, needle: &str, times: usize) -> String {
        let started = Instant::now();
        loop {
            let text = fs::read_to_string(self.dir.join(log)).unwrap_or_default();
            if text.matches(needle).count() >= times || started.elapsed() > Duration::from_secs(30)
            {
                return text;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

fn stop(daemon: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        if let Some(status) = daemon.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = daemon.kill();
    panic!("the daemon did not stop");
}

fn lead(email: &str, source: &str) -> Lead {
    let mut lead = Lead::new(email.into(), Utc::now());
    lead.source = Some(source.into());
    lead
}

#[test]
fn webhooks_wait_for_a_receiver_that_is_down_across_a_restart_and_verify() {
    let port = free_port();
    let (setup, key) = Setup::new(
        "webhooks-down",
        port,
        r#"["lead.promoted", "lead.enrolled"]"#,
        "",
    );
    // Enrolled by the daemon itself (its own batch journals `lead.enrolled`).
    seed(&setup.dir, vec![lead("dana@example.test", "load-test")]);

    let mut daemon = setup.start("daemon.log");
    setup.wait_for_log("daemon.log", "nurture is running", 1);
    // Promoted by a command while the daemon runs: its batch queues `lead.promoted`.
    setup.ok(&["leads", "promote", "dana@example.test", "--to", "contact"]);
    let log = setup.wait_for_log("daemon.log", "webhook not delivered", 2);
    assert!(
        log.contains("lead.promoted") && log.contains("lead.enrolled"),
        "both attempted while the receiver is down:\n{log}"
    );

    // The receiver is down: both wait, with what went wrong.
    let table = setup.ok(&["webhooks"]);
    assert!(table.contains("waiting (2)"), "{table}");
    assert!(table.contains("no webhooks given up"), "{table}");
    assert!(table.contains("Connection refused"), "{table}");
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon still runs"
    );
    stop(&mut daemon);

    let pending = setup.json(&["webhooks", "--format", "json"])["pending"].clone();
    let pending = pending.as_array().unwrap();
    assert_eq!(pending.len(), 2, "kept across the stop: {pending:?}");
    assert!(pending.iter().all(|d| d["attempts"].as_u64() >= Some(1)));

    // The receiver comes up, answering 500 to each webhook's first attempt; the daemon
    // starts again.
    let receiver = Receiver::start(port, true);
    let mut daemon = setup.start("daemon-2.log");
    let received = receiver.wait_for(4, Duration::from_secs(30));
    setup.wait_for_log("daemon-2.log", "webhook delivered", 2);
    stop(&mut daemon);
    let received_after_stop = receiver.received();
    assert_eq!(
        received_after_stop.len(),
        4,
        "each webhook twice (500, then 200), no more: {received:?}"
    );

    let mut by_id: BTreeMap<String, Vec<&Received>> = BTreeMap::new();
    for request in &received_after_stop {
        verify(&key, request);
        by_id
            .entry(request.headers["webhook-id"].clone())
            .or_default()
            .push(request);
    }
    assert_eq!(
        by_id.len(),
        2,
        "one webhook-id per webhook, kept across retries"
    );
    let mut types = Vec::new();
    for attempts in by_id.values() {
        assert_eq!(
            attempts.iter().map(|r| r.answered).collect::<Vec<_>>(),
            [500, 200]
        );
        assert_eq!(
            attempts[0].body, attempts[1].body,
            "the same body each time"
        );
        let body: Value = serde_json::from_str(&attempts[0].body).unwrap();
        assert_eq!(body["data"]["email"], "dana@example.test");
        types.push(body["type"].as_str().unwrap().to_owned());
        if body["type"] == "lead.promoted" {
            assert_eq!(body["data"]["stage"], "contact");
            assert_eq!(body["data"]["by"], "by hand");
            assert_eq!(body["data"]["lead"]["stage"], "contact");
        } else {
            assert_eq!(body["data"]["workflow"], "blast");
        }
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    types.sort();
    assert_eq!(types, ["lead.enrolled", "lead.promoted"]);

    // Delivered: out of the queue, and in the lead's timeline.
    let report = setup.json(&["webhooks", "--format", "json"]);
    assert_eq!(report["pending"], serde_json::json!([]), "{report}");
    assert_eq!(report["failed"], serde_json::json!([]), "{report}");
    let show = setup.ok(&["leads", "show", "dana@example.test"]);
    assert!(
        show.contains(&format!(
            "webhook lead.promoted delivered to http://127.0.0.1:{port}/hook (attempt"
        )),
        "{show}"
    );
}

#[test]
fn a_given_up_webhook_is_listed_and_sent_again_by_retry() {
    let port = free_port();
    let (setup, key) = Setup::new(
        "webhooks-retry",
        port,
        r#"["lead.promoted"]"#,
        "max_attempts = 2\n",
    );
    seed(&setup.dir, vec![lead("erin@example.test", "webinar")]);
    // No daemon: the command queues the webhook in its own batch.
    setup.ok(&["leads", "promote", "erin@example.test", "--to", "customer"]);
    let report = setup.json(&["webhooks", "--format", "json"]);
    assert_eq!(report["pending"][0]["event"], "lead.promoted", "{report}");
    assert_eq!(report["pending"][0]["attempts"], 0);
    let id = report["pending"][0]["id"].as_str().unwrap().to_owned();

    // Two attempts against nobody, then it is given up and kept.
    setup.ok(&["run", "--until-idle"]);
    std::thread::sleep(Duration::from_millis(2600));
    setup.ok(&["run", "--until-idle"]);
    let table = setup.ok(&["webhooks"]);
    assert!(table.contains("no webhooks waiting"), "{table}");
    assert!(table.contains("given up (1)"), "{table}");
    assert!(
        table.contains(&id) && table.contains("Connection refused"),
        "{table}"
    );
    let failed = setup.json(&["webhooks", "--format", "json"])["failed"][0].clone();
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert_eq!(failed["next_attempt"], Value::Null);
    let show = setup.ok(&["leads", "show", "erin@example.test"]);
    assert!(show.contains("given up after 2 attempts"), "{show}");

    let unknown = setup.run(&["webhooks", "retry", "msg_nosuch"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no given-up webhook has the id"));

    // Back up: retried by hand, delivered with the same id by the next run.
    let receiver = Receiver::start(port, false);
    let retried = setup.ok(&["webhooks", "retry", &id]);
    assert!(retried.contains("1 webhook queued again"), "{retried}");
    setup.ok(&["run", "--until-idle"]);
    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].headers["webhook-id"], id);
    verify(&key, &received[0]);
    let body: Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(body["data"]["stage"], "customer");

    let store = Store::open(&setup.dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(store.webhooks_pending().count(), 0);
    assert_eq!(store.webhooks_failed().count(), 0);
}

#[test]
fn a_bad_webhook_setting_is_named_by_check_and_refused_by_run() {
    let (setup, _) = Setup::new("webhooks-config", free_port(), r#"["lead.promotd"]"#, "");
    let said = |output: &Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };
    let typo = "webhooks[0].events: unknown event `lead.promotd`; did you mean `lead.promoted`?";
    let check = setup.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", said(&check));
    assert!(said(&check).contains(typo), "{}", said(&check));
    let run = setup.run(&["run", "--until-idle"]);
    assert!(!run.status.success());
    assert!(said(&run).contains(typo), "{}", said(&run));

    fs::write(
        setup.dir.join("nurture.toml"),
        "[[webhooks]]\nurl = \"https://crm.example/hook\"\nevents = [\"*\"]\nsecret_env = \"NURTURE_TEST_SURELY_UNSET_HOOK_SECRET\"\n",
    )
    .unwrap();
    let check = setup.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", said(&check));
    assert!(
        said(&check).contains(
            "webhooks[0].secret_env: the environment variable NURTURE_TEST_SURELY_UNSET_HOOK_SECRET is not set"
        ),
        "{}",
        said(&check)
    );
}
