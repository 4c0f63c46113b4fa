//! `cargo bench --bench inbox`: reply → promotion latency on real Dovecot with IDLE.
//!
//! Postfix and Dovecot run on loopback (`tests/mailstack.sh`); the daemon runs in this process
//! with leads enrolled (file transport) and watches sales@'s inbox. For each of
//! `NURTURE_BENCH_REPLIES` (default 120) leads in turn, a reply is handed to Postfix; the clock
//! starts when Postfix accepts it (250 after DATA) and stops:
//! - for the floor: when a bare IDLE client on the same mailbox hears of it from Dovecot;
//! - for nurture: when the daemon logs that what the reply caused (the promotion) is durable.
//!
//! Both run side by side in the same run; p50 and p99 of each are printed.
//! Targets (issue 5): p50 within 100 ms of the floor, p99 under 1.5 s.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_imap::extensions::idle::IdleResponse;
use chrono::Utc;
use nurture::config::{Config, TransportKind};
use nurture::daemon::clock::Clock;
use nurture::daemon::transport::Transport;
use nurture::daemon::{Control, Paths, run};
use nurture::lead::Lead;
use nurture::store::{Batch, DEFAULT_CACHE_BYTES, Store};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

const SMTP_PORT: u16 = 2710;
const IMAP_PORT: u16 = 2171;

fn main() {
    let replies: usize = std::env::var("NURTURE_BENCH_REPLIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(120);
    let root = std::env::temp_dir().join(format!("nurture-bench-inbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    // Unix socket paths must stay short: the mail system lives under /tmp directly.
    let stack = PathBuf::from(format!("/tmp/nbi-{}", std::process::id()));
    mailstack(&[
        "up",
        &stack.display().to_string(),
        &SMTP_PORT.to_string(),
        &IMAP_PORT.to_string(),
        "sales",
        "boss",
    ]);

    let leads: Vec<String> = (0..replies)
        .map(|i| format!("r{i:04}@reply.example"))
        .collect();
    seed(&root.join("data"), &leads);
    let password = root.join("imap-password");
    std::fs::write(&password, "secret\n").expect("password file");

    let (processed_tx, processed) = mpsc::channel();
    let subscriber = tracing_subscriber::registry()
        .with(Probe(processed_tx).with_filter(tracing_subscriber::filter::LevelFilter::INFO));
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");

    let mut config = Config::default();
    config.store.path = root.join("data");
    config.transport.kind = TransportKind::File;
    config.transport.outbox = root.join("outbox");
    config.imap.url = format!("imap://127.0.0.1:{IMAP_PORT}");
    config.imap.user = "sales@example.test".into();
    config.imap.password_file = password.display().to_string();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let paths = Paths {
        workflows: repo.join("tests/fixtures/inbox/workflows"),
        templates: repo.join("tests/fixtures/inbox/templates"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let control = std::sync::Arc::new(Control::default());
    let transport = Transport::file(&config.transport.outbox).expect("outbox");
    let daemon = runtime.spawn(run(
        config,
        paths,
        Clock::system(),
        transport,
        control.clone(),
        false,
    ));
    // The welcome emails out (every lead enrolled and waiting), the watcher idling.
    let outbox = root.join("outbox");
    let started = Instant::now();
    while std::fs::read_dir(&outbox).map_or(0, |d| d.count()) < replies {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the welcomes did not leave"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (heard_tx, heard) = mpsc::channel();
    runtime.spawn(bare_idle(heard_tx));
    std::thread::sleep(Duration::from_secs(2));
    while processed.try_recv().is_ok() {}

    let mut floor = Vec::new();
    let mut nurture = Vec::new();
    for lead in &leads {
        while heard.try_recv().is_ok() {}
        let accepted = inject(lead);
        let idle_heard = heard
            .recv_timeout(Duration::from_secs(10))
            .expect("the bare IDLE client heard");
        let promoted = processed
            .recv_timeout(Duration::from_secs(10))
            .expect("the daemon processed the reply");
        floor.push(idle_heard.saturating_duration_since(accepted));
        nurture.push(promoted.saturating_duration_since(accepted));
    }
    control.stop();
    let _ = runtime.block_on(daemon);
    mailstack(&["kill", &stack.display().to_string()]);
    let _ = std::fs::remove_dir_all(&stack);
    let _ = std::fs::remove_dir_all(&root);

    floor.sort();
    nurture.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let pct =
        |v: &[Duration], p: f64| v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1];
    println!(
        "reply accepted by Postfix → bare IDLE client notified (the floor): p50 {:.0} ms, p99 {:.0} ms over {} replies",
        ms(pct(&floor, 0.5)),
        ms(pct(&floor, 0.99)),
        floor.len()
    );
    println!(
        "reply accepted by Postfix → promotion durable (nurture): p50 {:.0} ms, p99 {:.0} ms; p50 {:+.0} ms over the floor",
        ms(pct(&nurture, 0.5)),
        ms(pct(&nurture, 0.99)),
        ms(pct(&nurture, 0.5)) - ms(pct(&floor, 0.5))
    );
}

fn mailstack(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mailstack.sh");
    let status = Command::new(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("tests/mailstack.sh runs");
    assert!(
        status.success(),
        "tests/mailstack.sh {args:?} failed (run tests/run once to install Postfix and Dovecot)"
    );
}

/// The leads, enrolled by the daemon when it starts (as after an import).
fn seed(data: &Path, leads: &[String]) {
    let store = Store::open(data, DEFAULT_CACHE_BYTES).expect("store");
    let mut batch = Batch::default();
    for email in leads {
        let mut lead = Lead::new(email.clone(), Utc::now());
        lead.source = Some("inbox-test".into());
        batch.changed.push(email.clone());
        batch.leads.push(lead);
    }
    store.apply(&batch).expect("seed");
    store.flush().expect("flush");
}

/// A reply from `lead` handed to Postfix; the instant Postfix accepted it.
fn inject(lead: &str) -> Instant {
    let stream = std::net::TcpStream::connect(("127.0.0.1", SMTP_PORT)).expect("Postfix");
    stream.set_nodelay(true).expect("nodelay");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut expect = |code: &str| loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("answer");
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    expect("220");
    let message = format!(
        "From: <{lead}>\r\nTo: <sales@example.test>\r\nSubject: Re: Hello\r\nMessage-ID: <{}.{lead}>\r\n\r\nYes, let's talk.\r\n.",
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    for (command, code) in [
        ("EHLO bench.example".to_owned(), "250"),
        (format!("MAIL FROM:<{lead}>"), "250"),
        ("RCPT TO:<sales@example.test>".to_owned(), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        writer
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("write");
        expect(code);
    }
    writer
        .write_all(format!("{message}\r\n").as_bytes())
        .expect("write");
    expect("250");
    let accepted = Instant::now();
    write!(writer, "QUIT\r\n").expect("write");
    accepted
}

/// The floor: a plain IDLE session on the same folder, reporting each announcement.
async fn bare_idle(heard: mpsc::Sender<Instant>) {
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", IMAP_PORT))
        .await
        .expect("Dovecot");
    socket.set_nodelay(true).expect("nodelay");
    let mut client = async_imap::Client::new(socket);
    client.read_response().await.expect("greeting");
    let mut session = client
        .login("sales@example.test", "secret")
        .await
        .map_err(|(e, _)| e)
        .expect("login");
    session.examine("INBOX").await.expect("examine");
    // Ends when the mail system is stopped at the end of the run.
    loop {
        let mut idle = session.idle();
        if idle.init().await.is_err() {
            return;
        }
        let (waiting, _stop) = idle.wait_with_timeout(Duration::from_secs(25 * 60));
        if let Ok(IdleResponse::NewData(_)) = waiting.await {
            let _ = heard.send(Instant::now());
        }
        match idle.done().await {
            Ok(next) => session = next,
            Err(_) => return,
        }
    }
}

/// Hears the daemon's "mail from a lead" line (logged once the mail's effects are durable).
struct Probe(mpsc::Sender<Instant>);

impl<S: tracing::Subscriber> Layer<S> for Probe {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Message(bool);
        impl Visit for Message {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" && format!("{value:?}") == "mail from a lead" {
                    self.0 = true;
                }
            }
        }
        let mut message = Message(false);
        event.record(&mut message);
        if message.0 {
            let _ = self.0.send(Instant::now());
        }
    }
}
