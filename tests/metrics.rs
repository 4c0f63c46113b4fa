//! `/metrics`, `/healthz` and `/readyz` of the real daemon, sending through the real Postfix and
//! watching the real Dovecot: the figures, parsed by a Prometheus text parser, move by exactly
//! what was sent and what came back; readiness follows Dovecot going away and coming back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use mail_parser::MessageParser;
use nurture::lead::Lead;
use prometheus_parse::{Scrape, Value};

use crate::api::{KEY, free_port};
use crate::mail_system::{MailStack, REPO, nurture_command};
use crate::support::{scratch, seed};

const USERS: [&str; 4] = ["sales", "boss", "tom", "lea"];

fn lead(email: &str, first_name: &str) -> Lead {
    let mut lead = Lead::new(email.into(), Utc::now());
    lead.first_name = Some(first_name.into());
    lead.source = Some("inbox-test".into());
    lead
}

struct Daemon {
    child: Child,
    log: PathBuf,
    base: String,
    http: reqwest::blocking::Client,
}

impl Daemon {
    /// The daemon with the inbox workflow, watching sales@ over IMAP, serving HTTP on a free
    /// port.
    fn start(dir: &Path, stack: &MailStack) -> Daemon {
        let port = free_port();
        let imap = format!("imap://127.0.0.1:{}", stack.imap_port);
        let listen = format!("127.0.0.1:{port}");
        let log = dir.join("daemon.log");
        let child = nurture_command(
            dir,
            stack,
            &["run"],
            &[
                (
                    "NURTURE_WORKFLOWS",
                    &format!("{REPO}/tests/fixtures/inbox/workflows"),
                ),
                (
                    "NURTURE_TEMPLATES",
                    &format!("{REPO}/tests/fixtures/inbox/templates"),
                ),
                ("NURTURE_IMAP_URL", &imap),
                ("NURTURE_IMAP_USER", "sales@example.test"),
                ("NURTURE_IMAP_PASSWORD_ENV", "TEST_IMAP_PASSWORD"),
                ("TEST_IMAP_PASSWORD", "secret"),
                ("NURTURE_HTTP_LISTEN", &listen),
                ("NURTURE_HTTP_API_KEY_ENV", "TEST_API_KEY"),
                ("TEST_API_KEY", KEY),
            ],
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        let daemon = Daemon {
            child,
            log,
            base: format!("http://{listen}"),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        daemon.wait("the HTTP server answers", |d| d.get("/healthz").is_some());
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Status and body of `GET path`; `None` while nothing answers.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = self.http.get(format!("{}{path}", self.base)).send().ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().unwrap()))
    }

    /// `/metrics`, parsed.
    fn scrape(&self) -> Figures {
        let (status, text) = self.get("/metrics").expect("the daemon answers");
        assert_eq!(status, 200, "{text}");
        let lines = text.lines().map(|line| Ok(line.to_owned()));
        Figures {
            scrape: Scrape::parse(lines).expect("Prometheus text"),
            text,
        }
    }

    /// `/readyz`: its status and its JSON.
    fn ready(&self) -> (u16, serde_json::Value) {
        let (status, body) = self.get("/readyz").expect("the daemon answers");
        (status, serde_json::from_str(&body).expect("JSON"))
    }

    /// Waits up to 20 s for `done`; fails with the daemon's log.
    fn wait(&self, what: &str, done: impl Fn(&Daemon) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "waited 20 s for: {what}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// One scrape.
struct Figures {
    scrape: Scrape,
    text: String,
}

impl Figures {
    /// The value of the counter or gauge `metric` with `labels`; 0 when it is absent (a
    /// counter nothing has moved yet).
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(metric, labels)
            .map(|value| match value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                other => panic!("{metric} is not a number: {other:?}"),
            })
            .unwrap_or(0.0)
    }

    fn find(&self, metric: &str, labels: &[(&str, &str)]) -> Option<&Value> {
        self.scrape
            .samples
            .iter()
            .find(|sample| {
                sample.metric == metric
                    && labels
                        .iter()
                        .all(|(name, value)| sample.labels.get(name) == Some(*value))
            })
            .map(|sample| &sample.value)
    }

    fn emails(&self, outcome: &str) -> f64 {
        self.value(
            "nurture_emails_total",
            &[("workflow", "welcome"), ("outcome", outcome)],
        )
    }
}

/// Waits up to 20 s for `user` to have `count` messages.
fn mailbox(stack: &MailStack, user: &str, count: usize, daemon: &Daemon) -> Vec<Vec<u8>> {
    daemon.wait(&format!("{count} messages for {user}"), |_| {
        stack.mailbox(user).len() >= count
    });
    stack.mailbox(user)
}

/// `from` answers `welcome`, through Postfix, to sales@.
fn answer(stack: &MailStack, from: &str, welcome: &[u8], subject: &str, extra: &str) {
    let message = MessageParser::default().parse(welcome).unwrap();
    let to_id = format!("<{}>", message.message_id().unwrap());
    let raw = format!(
        "From: {from}\nTo: Sales <sales@example.test>\nSubject: {subject}\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <{}@other.example>\n\
         In-Reply-To: {to_id}\nReferences: {to_id}\n{extra}\
         Content-Type: text/plain; charset=utf-8\n\nThanks, let's talk.\n",
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    stack.inject(from, "sales@example.test", &raw);
}

#[test]
fn the_figures_move_with_real_sends_and_replies_and_readiness_follows_dovecot_and_postfix() {
    let stack = MailStack::up("metrics", 2940, 2194, &USERS);
    let dir = scratch("metrics");
    seed(
        &dir,
        vec![
            lead("tom@example.test", "Tom"),
            lead("lea@example.test", "Lea"),
        ],
    );
    let daemon = Daemon::start(&dir, &stack);
    let (status, body) = daemon.get("/healthz").unwrap();
    assert_eq!(status, 200, "{body}");

    // Two welcome emails through Postfix into Dovecot.
    let tom = mailbox(&stack, "tom", 1, &daemon).remove(0);
    let lea = mailbox(&stack, "lea", 1, &daemon).remove(0);
    daemon.wait("the watcher connected and the queues counted", |d| {
        let figures = d.scrape();
        figures.value("nurture_imap_connected", &[]) == 1.0
            && figures.find("nurture_outbox_depth", &[]).is_some()
            && figures.emails("sent") == 2.0
    });
    let before = daemon.scrape();
    assert_eq!(before.emails("sent"), 2.0, "{}", before.text);
    assert_eq!(before.emails("failed"), 0.0);
    assert_eq!(
        before.value("nurture_enrollments_total", &[("workflow", "welcome")]),
        2.0
    );
    assert_eq!(
        before.value("nurture_enrollments_active", &[("workflow", "welcome")]),
        2.0,
        "{}",
        before.text
    );
    // Both wait two days for their next step; nothing is held in the outbox.
    assert_eq!(before.value("nurture_due_queue_depth", &[]), 2.0);
    assert_eq!(before.value("nurture_outbox_depth", &[]), 0.0);
    assert_eq!(
        before.value(
            "nurture_smtp_send_duration_seconds_count",
            &[("outcome", "sent")]
        ),
        2.0,
        "{}",
        before.text
    );
    let folder = "sales@example.test@127.0.0.1:2194/INBOX";
    assert_eq!(
        before.value("nurture_imap_connected", &[("folder", folder)]),
        1.0,
        "{}",
        before.text
    );
    let (status, ready) = daemon.ready();
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["imap"], "ok");
    assert_eq!(ready["checks"]["smtp"], "ok");

    // Tom answers (a human reply: promoted, his sequence ends, the owner is told); Lea's
    // out-of-office comes back.
    answer(&stack, "tom@example.test", &tom, "Re: Hello Tom", "");
    answer(
        &stack,
        "lea@example.test",
        &lea,
        "Out of Office: Hello Lea",
        "Auto-Submitted: auto-replied\n",
    );
    mailbox(&stack, "boss", 1, &daemon);
    daemon.wait("both mails counted", |d| {
        let figures = d.scrape();
        figures.value("nurture_inbound_total", &[("kind", "reply")])
            + figures.value("nurture_inbound_total", &[("kind", "auto_reply")])
            == 2.0
    });
    let after = daemon.scrape();
    let moved = |metric: &str, labels: &[(&str, &str)]| {
        after.value(metric, labels) - before.value(metric, labels)
    };
    assert_eq!(moved("nurture_inbound_total", &[("kind", "reply")]), 1.0);
    assert_eq!(
        moved("nurture_inbound_total", &[("kind", "auto_reply")]),
        1.0
    );
    assert_eq!(moved("nurture_inbound_total", &[("kind", "bounce")]), 0.0);
    assert_eq!(
        moved("nurture_promotions_total", &[("workflow", "welcome")]),
        1.0
    );
    // The one email sent since: the owner's notification.
    assert_eq!(after.emails("sent") - before.emails("sent"), 1.0);
    assert_eq!(stack.mailbox("boss").len(), 1);
    assert_eq!(
        after.value("nurture_enrollments_active", &[("workflow", "welcome")]),
        1.0,
        "Tom's sequence ended:\n{}",
        after.text
    );
    assert_eq!(after.value("nurture_due_queue_depth", &[]), 1.0);
    // The HTTP requests of this test were timed, by route template.
    assert!(
        after.value(
            "nurture_http_request_duration_seconds_count",
            &[("route", "/metrics"), ("method", "GET"), ("status", "200")]
        ) >= 3.0,
        "{}",
        after.text
    );

    // Dovecot goes away: not ready, with the reason; back: ready again.
    stack.run(&["stop-imap"], &[]);
    daemon.wait("/readyz says 503", |d| d.ready().0 == 503);
    let (_, ready) = daemon.ready();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["checks"]["imap"], "failing");
    assert_eq!(ready["checks"]["store"], "ok");
    let reasons = ready["reasons"].to_string();
    assert!(
        reasons.contains("inbox watcher") && reasons.contains(folder),
        "{ready}"
    );
    let down = daemon.scrape();
    assert_eq!(
        down.value("nurture_imap_connected", &[("folder", folder)]),
        0.0
    );
    assert!(down.value("nurture_imap_reconnects_total", &[("folder", folder)]) >= 1.0);
    // The process still answers.
    assert_eq!(daemon.get("/healthz").unwrap().0, 200);

    stack.run(&["start-imap"], &[]);
    daemon.wait("/readyz says 200 again", |d| d.ready().0 == 200);
    let (_, ready) = daemon.ready();
    assert_eq!(ready["ready"], true, "{ready}");
    let up = daemon.scrape();
    assert_eq!(
        up.value("nurture_imap_connected", &[("folder", folder)]),
        1.0
    );

    // Postfix goes away and a new lead arrives through the API: its welcome email cannot be
    // handed over, waits in the outbox for a retry, and nurture is not ready.
    let port = stack.smtp_port.to_string();
    stack.run(&["stop-smtp", &port], &[]);
    let created = daemon
        .http
        .post(format!("{}/v1/leads", daemon.base))
        .bearer_auth(KEY)
        .json(&serde_json::json!({
            "email": "ben@example.test", "first_name": "Ben", "source": "inbox-test"
        }))
        .send()
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    daemon.wait("/readyz says 503 for SMTP", |d| d.ready().0 == 503);
    let (_, ready) = daemon.ready();
    assert_eq!(ready["checks"]["smtp"], "failing", "{ready}");
    assert_eq!(ready["checks"]["imap"], "ok", "{ready}");
    assert!(ready["reasons"].to_string().contains("SMTP"), "{ready}");
    daemon.wait("the deferred email counted", |d| {
        d.scrape().emails("deferred") == 1.0
    });
    let failing = daemon.scrape();
    assert_eq!(failing.emails("sent"), up.emails("sent"));
    assert_eq!(failing.emails("deferred") - up.emails("deferred"), 1.0);
    assert_eq!(failing.value("nurture_outbox_depth", &[]), 1.0);
    assert_eq!(
        failing.value("nurture_enrollments_active", &[("workflow", "welcome")]),
        2.0
    );
    assert_eq!(
        failing.value(
            "nurture_smtp_send_duration_seconds_count",
            &[("outcome", "failed")]
        ),
        1.0,
        "{}",
        failing.text
    );
    assert_eq!(
        failing.value(
            "nurture_http_request_duration_seconds_count",
            &[
                ("route", "/v1/leads"),
                ("method", "POST"),
                ("status", "201")
            ]
        ),
        1.0,
        "{}",
        failing.text
    );
    stack.run(&["start-smtp"], &[]);
}
