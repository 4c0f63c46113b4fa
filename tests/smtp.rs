//! Sending for real: the daemon hands emails to a real Postfix on loopback, which delivers them
//! into real Dovecot mailboxes (`tests/mailstack.sh`). A missing or broken mail system fails
//! these tests; it is never skipped.

use std::path::Path;
use std::process::{Command, Stdio};

use mail_parser::{MessageParser, MimeHeaders};
use nurture::store::{DEFAULT_CACHE_BYTES, EventKind, MessageState, Store};

use crate::mail_system::{MailStack, nurture, nurture_command, run_daemon, trial_lead};
use crate::support::{scratch, seed};

fn header_names(raw: &[u8]) -> Vec<String> {
    let message = MessageParser::default().parse(raw).unwrap();
    message
        .headers()
        .iter()
        .map(|header| header.name().to_ascii_lowercase())
        .collect()
}

#[test]
fn an_email_due_now_arrives_in_the_leads_mailbox_and_lead_data_injects_nothing() {
    let stack = MailStack::up(
        "deliver",
        2510,
        2141,
        &["anna", "eve", "victim", "ana", "sales"],
    );
    let dir = scratch("smtp-deliver");
    seed(
        &dir,
        vec![
            trial_lead("anna@example.test", "Anna <b>"),
            trial_lead("eve@example.test", "Eve\r\nBcc: victim@example.test"),
        ],
    );
    // Monday 10:00 in Berlin: the send window is open, the welcome is due at once.
    run_daemon(&dir, &stack, "2026-11-23T09:00:00Z");

    stack.wait_for("anna", 1);
    // Read back as Anna's mail client would: over IMAP, logged in as her.
    let anna = stack.fetch_over_imap("anna");
    assert_eq!(anna.len(), 1, "one welcome email in Anna's mailbox");
    let message = MessageParser::default().parse(&anna[0]).unwrap();
    assert_eq!(
        message.subject(),
        Some("Welcome to Acme Analytics, Anna <b>!")
    );
    let from = message.from().and_then(|a| a.first()).unwrap();
    assert_eq!(from.address(), Some("ana@example.test"));
    assert_eq!(from.name(), Some("Ana Ortiz"));
    let message_id = message.message_id().unwrap().to_string();
    assert!(message_id.ends_with("@example.test"), "{message_id}");
    assert!(message.date().is_some());
    assert!(message.header_raw("List-Unsubscribe").is_some());
    // Both parts: the text one as written, the HTML one escaped.
    assert!(message.content_type().unwrap().c_subtype.as_deref() == Some("alternative"));
    let text = message.body_text(0).unwrap();
    assert!(text.contains("Hi Anna <b>,"), "{text}");
    let html = message.body_html(0).unwrap();
    assert!(html.contains("Anna &lt;b&gt;"), "{html}");
    assert!(!html.contains("Anna <b>"), "{html}");

    // Eve's name tried to add a Bcc header: her email has none, and nobody else got a copy.
    let eve = stack.wait_for("eve", 1);
    assert_eq!(eve.len(), 1);
    let names = header_names(&eve[0]);
    assert!(names.contains(&"subject".to_string()), "{names:?}");
    assert!(!names.contains(&"bcc".to_string()), "{names:?}");
    assert!(stack.mailbox("victim").is_empty());

    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let record = store.message(&format!("<{message_id}>")).unwrap().unwrap();
    assert_eq!(record.state, MessageState::Sent);
    assert_eq!(record.lead, "anna@example.test");
}

#[test]
fn while_smtp_is_down_emails_wait_and_leave_once_it_is_back() {
    let stack = MailStack::up("outage", 2520, 2142, &["anna", "ana", "sales"]);
    let dir = scratch("smtp-outage");
    seed(&dir, vec![trial_lead("anna@example.test", "Anna")]);
    stack.run(&["down"], &[]);

    run_daemon(&dir, &stack, "2026-11-23T09:00:00Z");
    {
        let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(store.outbox_len(), 1, "the email waits in the outbox");
        assert_eq!(store.messages().count(), 0);
        let failed = failed_for_now(&store, "anna@example.test");
        assert!(failed, "the failed attempt is in the lead's timeline");
    }

    stack.run(&["up", "2520", "2142"], &["anna", "ana", "sales"]);
    // A minute later the retry is due.
    run_daemon(&dir, &stack, "2026-11-23T09:01:00Z");
    let anna = stack.wait_for("anna", 1);
    assert_eq!(anna.len(), 1, "sent once, after the outage");
    // And not again.
    run_daemon(&dir, &stack, "2026-11-23T09:05:00Z");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(stack.mailbox("anna").len(), 1);
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(store.outbox_len(), 0);
    let sent: Vec<_> = store.messages().map(Result::unwrap).collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].state, MessageState::Sent);
}

#[test]
fn a_recipient_refused_for_good_is_suppressed_and_only_that_lead() {
    // `ghost` has no mailbox: Postfix answers 550 5.1.1 at RCPT.
    let stack = MailStack::up("refused", 2530, 2143, &["anna", "ana", "sales"]);
    let dir = scratch("smtp-refused");
    seed(
        &dir,
        vec![
            trial_lead("anna@example.test", "Anna"),
            trial_lead("ghost@example.test", "Ghost"),
        ],
    );
    run_daemon(&dir, &stack, "2026-11-23T09:00:00Z");
    assert_eq!(stack.wait_for("anna", 1).len(), 1);

    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let ghost = store.lead("ghost@example.test").unwrap().unwrap();
    let suppression = ghost
        .suppression
        .expect("the refused address is suppressed");
    assert!(
        suppression.detail.contains("5.1.1"),
        "{}",
        suppression.detail
    );
    let enrollment = store
        .enrollment("trial-welcome", "ghost@example.test")
        .unwrap()
        .unwrap();
    assert_eq!(
        enrollment.status,
        nurture::engine::Status::Exited(nurture::engine::ExitReason::Bounced)
    );
    let failed: Vec<_> = store
        .messages()
        .map(Result::unwrap)
        .filter(|m| m.lead == "ghost@example.test")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].state, MessageState::Failed);

    let anna = store.lead("anna@example.test").unwrap().unwrap();
    assert!(anna.suppression.is_none(), "only the refused lead");
    assert!(
        store
            .enrollment("trial-welcome", "anna@example.test")
            .unwrap()
            .unwrap()
            .is_active()
    );
}

#[test]
fn send_test_sends_every_email_of_the_workflow_to_one_address() {
    let stack = MailStack::up("send-test", 2540, 2144, &["ana", "sales", "anna"]);
    let dir = scratch("smtp-send-test");
    seed(&dir, vec![trial_lead("anna@example.test", "Anna")]);
    nurture(
        &dir,
        &stack,
        &[
            "send-test",
            "trial-welcome",
            "--to",
            "ana@example.test",
            "--lead",
            "anna@example.test",
        ],
        &[],
    );

    // trial-welcome has five `send`s: the welcome, three alternatives in the nudge, the last.
    let received = stack.wait_for("ana", 5);
    let mut subjects: Vec<String> = received
        .iter()
        .map(|raw| {
            let message = MessageParser::default().parse(raw).unwrap();
            message.subject().unwrap().to_string()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "[test 1/5] Welcome to Acme Analytics, Anna!",
            "[test 2/5] A 15-minute demo?",
            "[test 3/5] How Globex cut churn by 30% with Acme Analytics",
            "[test 4/5] 3 things to try in your first week",
            "[test 5/5] Anna, should I close your file?",
        ]
    );
    assert!(
        stack.mailbox("anna").is_empty(),
        "the lead itself gets nothing"
    );
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(store.messages().count(), 0, "a test send is not recorded");
    assert!(
        store
            .enrollments_of("anna@example.test")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn starttls_encrypts_the_session_and_an_untrusted_server_gets_nothing() {
    let stack = MailStack::up("tls", 2550, 2145, &["anna", "ana", "sales"]);
    let ca = stack.dir.join("ca.pem");
    let ca = ca.to_str().unwrap();

    // Not trusting the test CA: the email waits, it is never sent in the clear instead.
    let untrusted = scratch("smtp-tls-untrusted");
    seed(&untrusted, vec![trial_lead("anna@example.test", "Anna")]);
    nurture(
        &untrusted,
        &stack,
        &["run", "--until-idle"],
        &[
            ("NURTURE_DAEMON_REHEARSAL_START", "2026-11-23T09:00:00Z"),
            ("NURTURE_SMTP_TLS", "starttls"),
        ],
    );
    {
        let store = Store::open(&untrusted.join("data"), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(store.outbox_len(), 1, "the email waits");
        assert_eq!(store.messages().count(), 0);
    }
    assert!(stack.mailbox("anna").is_empty());

    let dir = scratch("smtp-tls");
    seed(&dir, vec![trial_lead("anna@example.test", "Anna")]);
    nurture(
        &dir,
        &stack,
        &["run", "--until-idle"],
        &[
            ("NURTURE_DAEMON_REHEARSAL_START", "2026-11-23T09:00:00Z"),
            ("NURTURE_SMTP_TLS", "starttls"),
            ("NURTURE_SMTP_CA_FILE", ca),
        ],
    );
    let received = stack.wait_for("anna", 1);
    assert_eq!(received.len(), 1);
    let text = String::from_utf8_lossy(&received[0]);
    assert!(
        text.contains("(using TLSv1."),
        "Postfix notes the encrypted session in its Received header:\n{text}"
    );
}

#[test]
fn a_login_over_implicit_tls_or_starttls_sends_and_a_wrong_password_never_shows() {
    // 2560: plain; 2561: submission (STARTTLS and login required); 2562: implicit TLS, login.
    let stack = MailStack::up("auth", 2560, 2146, &["anna", "ana", "sales"]);
    let ca = stack.dir.join("ca.pem").display().to_string();
    let secure = |url: &str| {
        vec![
            ("NURTURE_SMTP_URL", url.to_owned()),
            ("NURTURE_SMTP_CA_FILE", ca.clone()),
            ("NURTURE_SMTP_USER", "sales@example.test".to_owned()),
            ("NURTURE_SMTP_PASSWORD_ENV", "TEST_SMTP_PASSWORD".to_owned()),
            (
                "NURTURE_DAEMON_REHEARSAL_START",
                "2026-11-23T09:00:00Z".to_owned(),
            ),
        ]
    };
    let run = |dir: &Path, env: &[(&str, String)], password: &str| {
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("TEST_SMTP_PASSWORD", password));
        nurture(dir, &stack, &["run", "--until-idle"], &env)
    };

    // A wrong password: refused, the email waits, and the password is nowhere in the logs.
    let refused = scratch("smtp-auth-refused");
    seed(&refused, vec![trial_lead("anna@example.test", "Anna")]);
    let output = run(&refused, &secure("smtps://127.0.0.1:2562"), "not-the-pw-71");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("login as `sales@example.test`"), "{log}");
    assert!(
        !log.contains("not-the-pw-71"),
        "the password leaked:\n{log}"
    );
    {
        let store = Store::open(&refused.join("data"), DEFAULT_CACHE_BYTES).unwrap();
        assert_eq!(store.outbox_len(), 1, "the email waits for a fixed login");
    }
    assert!(stack.mailbox("anna").is_empty());

    // The right password, over implicit TLS, then over STARTTLS on the submission port.
    let implicit = scratch("smtp-auth-implicit");
    seed(&implicit, vec![trial_lead("anna@example.test", "Anna")]);
    let output = run(&implicit, &secure("smtps://127.0.0.1:2562"), "secret");
    assert!(!String::from_utf8_lossy(&output.stderr).contains("secret"));
    let starttls = scratch("smtp-auth-starttls");
    seed(&starttls, vec![trial_lead("ana@example.test", "Ana")]);
    let mut env = secure("smtp://127.0.0.1:2561");
    env.push(("NURTURE_SMTP_TLS", "starttls".to_owned()));
    run(&starttls, &env, "secret");

    for user in ["anna", "ana"] {
        let received = stack.wait_for(user, 1);
        assert_eq!(received.len(), 1, "{user}");
        let text = String::from_utf8_lossy(&received[0]);
        assert!(text.contains("(using TLSv1."), "encrypted:\n{text}");
        assert!(
            text.contains("(Authenticated sender: sales@example.test)"),
            "logged in:\n{text}"
        );
    }
}

#[test]
fn smtp_killed_mid_run_makes_sends_wait_and_resume_with_nothing_lost_or_doubled() {
    let leads: Vec<String> = (0..40).map(|i| format!("m{i:02}")).collect();
    let mut users: Vec<&str> = leads.iter().map(String::as_str).collect();
    users.extend(["sales", "ana"]);
    let stack = MailStack::up("midrun", 2570, 2147, &users);
    let dir = scratch("smtp-midrun");
    seed(
        &dir,
        leads
            .iter()
            .map(|user| trial_lead(&format!("{user}@example.test"), "Mo"))
            .collect(),
    );
    // A rehearsal clock 60 times faster than real time, and 20 emails a (virtual) minute:
    // about 20 a second, so the run lasts two seconds and the outage falls in its middle; the
    // first retry (30 s later) comes half a real second after a failure.
    let daemon = nurture_command(
        &dir,
        &stack,
        &["run"],
        &[
            ("NURTURE_DAEMON_REHEARSAL_START", "2026-11-23T09:00:00Z"),
            ("NURTURE_DAEMON_REHEARSAL_SPEED", "60"),
            ("NURTURE_LIMITS_PER_MINUTE", "20"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let delivered =
        |stack: &MailStack| -> usize { leads.iter().map(|user| stack.mailbox(user).len()).sum() };
    let started = std::time::Instant::now();
    while delivered(&stack) < 10 && started.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before_outage = delivered(&stack);
    assert!(before_outage >= 10, "the run started");
    stack.run(&["kill"], &[]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stack.run(&["up", "2570", "2147"], &users);
    let started = std::time::Instant::now();
    while leads.iter().any(|user| stack.mailbox(user).is_empty())
        && started.elapsed().as_secs() < 30
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A resend of an email whose 250 was lost may still wait in the outbox: until it leaves.
    let started = std::time::Instant::now();
    while queued(&dir, &stack) > 0 && started.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // SIGTERM: a graceful stop.
    Command::new("kill")
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    let output = daemon.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(
        before_outage < leads.len(),
        "the outage came mid-run:\n{log}"
    );

    // Every lead got its email. A second copy can only be the very same email (same
    // Message-ID), and there are two ways to get one: Postfix killed after Dovecot stored a
    // message but before it noted the delivery delivers it again from its queue (same Postfix
    // queue id: not ours), or nurture resent one whose 250 was lost with the connection (a new
    // SMTP transaction: at most one per connection cut).
    let mut resent = 0;
    for user in &leads {
        let received = stack.mailbox(user);
        assert!(!received.is_empty(), "{user} got nothing:\n{log}");
        let mut transactions = std::collections::BTreeSet::new();
        for raw in &received {
            let message = MessageParser::default().parse(raw).unwrap();
            assert_eq!(
                message.message_id(),
                MessageParser::default()
                    .parse(&received[0])
                    .unwrap()
                    .message_id(),
                "{user}"
            );
            transactions.insert(postfix_queue_id(raw));
        }
        resent += transactions.len() - 1;
    }
    assert!(
        resent <= 4,
        "at most one per connection cut mid-reply, got {resent}"
    );
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(store.outbox_len(), 0, "nothing left waiting");
    let sent: Vec<_> = store.messages().map(Result::unwrap).collect();
    assert_eq!(sent.len(), leads.len());
    assert!(sent.iter().all(|m| m.state == MessageState::Sent));
    let retried = leads
        .iter()
        .any(|user| failed_for_now(&store, &format!("{user}@example.test")));
    assert!(
        retried,
        "some sends failed during the outage and were retried:\n{log}"
    );
}

/// Emails waiting in the outbox, as `nurture status` tells while the daemon runs.
fn queued(dir: &Path, stack: &MailStack) -> u64 {
    let output = nurture(dir, stack, &["status", "--format", "json"], &[]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    status["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|workflow| workflow["queued"].as_u64().unwrap())
        .sum()
}

/// Whether a send to `lead` failed in a way that is retried (its timeline says so).
fn failed_for_now(store: &Store, lead: &str) -> bool {
    store.events_of(lead).unwrap().into_iter().any(|e| {
        matches!(
            e.kind,
            EventKind::SendFailed {
                permanent: false,
                ..
            }
        )
    })
}

/// The queue id Postfix gave the SMTP transaction that brought `raw` in.
fn postfix_queue_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let after = text
        .split_once("(Postfix) with ")
        .map(|(_, rest)| rest)
        .expect("a Received header from Postfix");
    after
        .split_whitespace()
        .skip_while(|word| *word != "id")
        .nth(1)
        .expect("a queue id")
        .to_owned()
}

/// A bare HTTP/1.1 exchange on loopback: the status code and the body.
fn http(method: &str, url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    let body = if method == "POST" {
        "List-Unsubscribe=One-Click"
    } else {
        ""
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn one_click_unsubscribe_from_the_received_headers_stops_the_sequence() {
    let stack = MailStack::up("unsubscribe", 2580, 2148, &["anna", "ana", "sales"]);
    let dir = scratch("smtp-unsubscribe");
    seed(&dir, vec![trial_lead("anna@example.test", "Anna")]);
    let http_env = [
        ("NURTURE_HTTP_LISTEN", "127.0.0.1:2589"),
        ("NURTURE_HTTP_BASE_URL", "http://127.0.0.1:2589"),
        ("NURTURE_DAEMON_REHEARSAL_START", "2026-11-23T09:00:00Z"),
    ];
    let daemon = nurture_command(&dir, &stack, &["run"], &http_env)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let received = stack.wait_for("anna", 1);
    if received.len() != 1 {
        Command::new("kill")
            .arg(daemon.id().to_string())
            .status()
            .unwrap();
        let output = daemon.wait_with_output().unwrap();
        panic!(
            "the welcome email did not arrive:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let message = MessageParser::default().parse(&received[0]).unwrap();
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|value| value.trim().replace("\r\n", "").replace('\n', ""))
            .unwrap_or_default()
    };
    assert_eq!(
        header("List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    let list = header("List-Unsubscribe");
    let links: Vec<&str> = list
        .split(',')
        .map(|entry| entry.trim().trim_start_matches('<').trim_end_matches('>'))
        .collect();
    assert_eq!(links.len(), 2, "{list}");
    let one_click = links[0];
    assert!(
        one_click.starts_with("http://127.0.0.1:2589/unsubscribe/"),
        "{list}"
    );
    let token = one_click.rsplit('/').next().unwrap();
    assert_eq!(
        links[1],
        format!("mailto:sales@example.test?subject=unsubscribe%20{token}")
    );
    assert!(
        !token.contains("anna@"),
        "the token is not the address in clear: {token}"
    );

    // A link scanner's GET changes nothing; a forged token gets a 404.
    let (status, page) = http("GET", one_click);
    assert_eq!(status, 200);
    assert!(page.contains("anna@example.test") && page.contains("method=\"post\""));
    let (_, mac) = token.split_once('.').unwrap();
    let forged = format!("http://127.0.0.1:2589/unsubscribe/ZXZlQGV4YW1wbGUudGVzdA.{mac}");
    assert_eq!(http("POST", &forged).0, 404);
    // The one-click POST: durable when it answers.
    let (status, done) = http("POST", one_click);
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("no more emails"));

    Command::new("kill")
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    let output = daemon.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    {
        let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
        let lead = store.lead("anna@example.test").unwrap().unwrap();
        assert!(lead.is_suppressed(), "{log}");
        let enrollment = store
            .enrollment("trial-welcome", "anna@example.test")
            .unwrap()
            .unwrap();
        assert!(!enrollment.is_active(), "{enrollment:?}");
        let events = store.events_of("anna@example.test").unwrap();
        assert!(events.iter().any(|e| matches!(
            &e.kind,
            EventKind::Exited { reason } if reason.to_string().contains("unsubscribed")
        )));
        let other = store.lead("anna@example.test").unwrap().unwrap();
        assert!(other.is_suppressed());
    }
    // Weeks later nothing more is sent.
    run_daemon(&dir, &stack, "2026-12-14T09:00:00Z");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(stack.mailbox("anna").len(), 1, "{log}");
}

/// An email caught by a crash while Postfix had it, as the daemon lists it in flight.
fn in_flight_email(id: &str, user: &str) -> nurture::store::OutboxEmail {
    let to = format!("{user}@example.test");
    let now = chrono::Utc::now();
    let eml = format!(
        "From: Ana Ortiz <ana@example.test>\r\nTo: {to}\r\nSubject: Welcome, {user}\r\n\
         Message-ID: {id}\r\nDate: {}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nHello {user}.\r\n",
        now.to_rfc2822()
    );
    nurture::store::OutboxEmail {
        message_id: id.into(),
        workflow: "trial-welcome".into(),
        lead: to.clone(),
        step: "welcome".into(),
        subject: format!("Welcome, {user}"),
        envelope_from: "ana@example.test".into(),
        envelope_to: to,
        queued_at: now,
        not_before: now,
        attempts: 0,
        expires: None,
        eml: eml.into_bytes(),
    }
}

/// Was: emails caught mid-send were marked uncertain and that was all: no command listed them
/// (nor did `status --format json`), none could be sent again or closed, and `status` between
/// the crash and the restart did not show them.
#[test]
fn uncertain_smtp_emails_are_listed_and_resent_or_dropped_by_command() {
    let stack = MailStack::up("uncertain", 2596, 2156, &["anna", "ben", "ana", "sales"]);
    let dir = scratch("smtp-uncertain");
    let lead = |email: &str| {
        let mut lead = nurture::lead::Lead::new(email.into(), chrono::Utc::now());
        // No shipped workflow enrolls it: only the emails below are sent.
        lead.source = Some("outbox-test".into());
        lead
    };
    seed(
        &dir,
        vec![lead("anna@example.test"), lead("ben@example.test")],
    );
    let anna_id = "<00000000000000a1.anna.nurture@example.test>";
    let ben_id = "<00000000000000b2.ben.nurture@example.test>";
    {
        // The state a kill -9 leaves while the server has the two emails.
        let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
        let emails = vec![
            in_flight_email(anna_id, "anna"),
            in_flight_email(ben_id, "ben"),
        ];
        let batch = nurture::store::Batch {
            in_flight_set: Some((store.new_id().unwrap(), emails)),
            ..Default::default()
        };
        store.apply(&batch).unwrap();
        store.flush().unwrap();
    }
    let json = |args: &[&str]| -> serde_json::Value {
        serde_json::from_slice(&nurture(&dir, &stack, args, &[]).stdout).unwrap()
    };
    let trial = |report: &serde_json::Value| -> serde_json::Value {
        report["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "trial-welcome")
            .unwrap()
            .clone()
    };

    // Between the crash and the restart, status shows them in flight.
    let report = json(&["status", "--format", "json"]);
    assert_eq!(trial(&report)["in_flight"], 2, "{report:#}");
    assert_eq!(report["in_flight_emails"][0]["message_id"], anna_id);
    let table = String::from_utf8(nurture(&dir, &stack, &["status"], &[]).stdout).unwrap();
    assert!(
        table.contains("2 emails were in flight when the daemon stopped"),
        "{table}"
    );

    // The restart cannot ask Postfix: both are uncertain, neither is sent again.
    nurture(&dir, &stack, &["run", "--until-idle"], &[]);
    let report = json(&["status", "--format", "json"]);
    assert_eq!(
        (&trial(&report)["uncertain"], &trial(&report)["in_flight"]),
        (&serde_json::json!(2), &serde_json::json!(0))
    );
    let listed: Vec<&str> = report["uncertain_emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [anna_id, ben_id]);
    let uncertain = json(&["outbox", "uncertain", "--format", "json"]);
    assert_eq!(
        uncertain[1],
        serde_json::json!({
            "message_id": ben_id,
            "workflow": "trial-welcome",
            "lead": "ben@example.test",
            "step": "welcome",
            "subject": "Welcome, ben",
            "at": uncertain[1]["at"],
            "resendable": true,
        })
    );
    let text =
        String::from_utf8(nurture(&dir, &stack, &["outbox", "uncertain"], &[]).stdout).unwrap();
    assert!(text.starts_with("2 uncertain emails"), "{text}");
    assert!(
        text.contains(&format!(
            "{anna_id}  trial-welcome  anna@example.test  step welcome"
        )),
        "{text}"
    );

    // Anna's did not leave (the server's log says): sent again. Ben's did: dropped.
    let resent = nurture(
        &dir,
        &stack,
        &["outbox", "resend", anna_id.trim_matches(['<', '>'])],
        &[],
    );
    assert_eq!(
        String::from_utf8_lossy(&resent.stdout),
        "1 uncertain email back in the outbox: the daemon sends them\n"
    );
    nurture(&dir, &stack, &["outbox", "drop", "--all"], &[]);
    let again = nurture_command(&dir, &stack, &["outbox", "resend", ben_id], &[])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "no longer uncertain");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no uncertain email has the Message-ID")
    );

    // On the real clock: `resend` queued it for now.
    nurture(&dir, &stack, &["run", "--until-idle"], &[]);
    let anna = stack.wait_for("anna", 1);
    assert_eq!(anna.len(), 1);
    let message = MessageParser::default().parse(&anna[0]).unwrap();
    assert_eq!(message.message_id(), Some(anna_id.trim_matches(['<', '>'])));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        stack.mailbox("ben").is_empty(),
        "a dropped email is not sent"
    );

    let report = json(&["status", "--format", "json"]);
    let counts = trial(&report);
    assert_eq!(
        (
            &counts["sent"],
            &counts["uncertain"],
            &counts["dropped"],
            &counts["queued"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(0),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{report:#}"
    );
    assert_eq!(report["uncertain_emails"], serde_json::json!([]));
    let none =
        String::from_utf8(nurture(&dir, &stack, &["outbox", "uncertain"], &[]).stdout).unwrap();
    assert_eq!(none, "no uncertain emails\n");
    let shown = String::from_utf8(
        nurture(&dir, &stack, &["leads", "show", "anna@example.test"], &[]).stdout,
    )
    .unwrap();
    let order: Vec<usize> = [
        "may or may not have left",
        "sent again by the operator",
        "email of step welcome sent (<",
    ]
    .iter()
    .map(|line| {
        shown
            .find(line)
            .unwrap_or_else(|| panic!("{line}:\n{shown}"))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{shown}");
    let ben = String::from_utf8(
        nurture(&dir, &stack, &["leads", "show", "ben@example.test"], &[]).stdout,
    )
    .unwrap();
    assert!(
        ben.contains("dropped by the operator: not sent again"),
        "{ben}"
    );
}

/// Both ways of handing an email over, into Postfix's `smtp-sink`: to a server that announces
/// PIPELINING (MAIL, RCPT and DATA written at once, the content with its final dot at once) and
/// to one that does not (`-p`: lettre's one command at a time). Either way the content arrives
/// byte for byte, lines that start with a dot included.
#[test]
fn an_email_arrives_whole_whether_the_server_pipelines_or_not() {
    use nurture::config::SmtpConfig;
    use nurture::daemon::smtp::Smtp;
    use nurture::daemon::transport::Transport;
    use std::os::unix::fs::PermissionsExt as _;

    let body = ".starts with a dot\r\n..two dots\r\nin the middle . of a line\r\n.\r\n";
    for (port, flags) in [(2591, &[][..]), (2592, &["-p"][..])] {
        // smtp-sink drops root for the `postfix` user, who writes the dumps.
        let dumps =
            std::env::temp_dir().join(format!("nurture-sink-{port}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dumps);
        std::fs::create_dir_all(&dumps).unwrap();
        std::fs::set_permissions(&dumps, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut sink = Command::new("smtp-sink")
            .args(flags)
            .args(["-u", "postfix", "-d"])
            .arg(format!("{}/%M.", dumps.display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("10")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink (Postfix) is installed: run tests/run");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let smtp = Smtp::new(SmtpConfig {
            url: format!("smtp://127.0.0.1:{port}"),
            connections: 1,
            ..SmtpConfig::default()
        })
        .unwrap();
        let transport = Transport::Smtp(Box::new(smtp));
        let email = |i: usize| {
            let mut email = in_flight_email(&format!("<sink{i}@example.test>"), "lead");
            email.eml = format!(
                "From: <ana@example.test>\r\nTo: <lead@example.test>\r\nMessage-ID: <sink{i}@example.test>\r\nSubject: dots\r\n\r\n{body}"
            )
            .into_bytes();
            email
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for i in 0..2 {
            runtime
                .block_on(transport.send(&email(i)))
                .unwrap_or_else(|error| panic!("{flags:?}: {error}"));
        }
        let started = std::time::Instant::now();
        let mut dumped = Vec::new();
        while dumped.len() < 2 && started.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            dumped = std::fs::read_dir(&dumps)
                .unwrap()
                .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
                .collect();
        }
        let _ = sink.kill();
        let _ = sink.wait();
        let _ = std::fs::remove_dir_all(&dumps);
        assert_eq!(dumped.len(), 2, "{flags:?}: both emails were accepted");
        // smtp-sink writes the content as it received it, dots unstuffed, lines ending in LF.
        let expected = format!("Subject: dots\n\n{}", body.replace("\r\n", "\n"));
        for dump in &dumped {
            let text = String::from_utf8_lossy(dump);
            assert!(
                text.contains(&expected),
                "{flags:?}: the content arrived whole:\n{text}"
            );
        }
    }
}
