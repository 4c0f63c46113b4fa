//! Replies, auto-replies and bounces through the real mail system: mail is handed to Postfix,
//! delivered into Dovecot, and the daemon, idling on the sales@ inbox over IMAP, acts on it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use mail_parser::MessageParser;
use nurture::engine::Status;
use nurture::lead::{Lead, Stage};
use nurture::store::{DEFAULT_CACHE_BYTES, Event, EventKind, Store};

use crate::mail_system::{MailStack, REPO, nurture, nurture_command};
use crate::support::{scratch, seed};

const USERS: [&str; 4] = ["sales", "boss", "tom", "lea"];

fn lead(email: &str, first_name: &str) -> Lead {
    let mut lead = Lead::new(email.into(), Utc::now());
    lead.first_name = Some(first_name.into());
    lead.source = Some("inbox-test".into());
    lead
}

/// What makes the daemon use the inbox workflow and watch sales@ over IMAP.
fn inbox_env(stack: &MailStack) -> Vec<(&'static str, String)> {
    vec![
        (
            "NURTURE_WORKFLOWS",
            format!("{REPO}/tests/fixtures/inbox/workflows"),
        ),
        (
            "NURTURE_TEMPLATES",
            format!("{REPO}/tests/fixtures/inbox/templates"),
        ),
        (
            "NURTURE_IMAP_URL",
            format!("imap://127.0.0.1:{}", stack.imap_port),
        ),
        ("NURTURE_IMAP_USER", "sales@example.test".into()),
        ("NURTURE_IMAP_PASSWORD_ENV", "TEST_IMAP_PASSWORD".into()),
        ("TEST_IMAP_PASSWORD", "secret".into()),
    ]
}

/// The daemon, watching the inbox; its log goes to `dir/daemon.log` (appended across starts).
fn start(dir: &Path, stack: &MailStack) -> Daemon {
    let env = inbox_env(stack);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .unwrap();
    let child = nurture_command(dir, stack, &["run"], &env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Daemon {
        child,
        log: dir.join("daemon.log"),
    }
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (up to 15 s) until the log has `count` lines containing `needle`.
    fn wait_log(self, needle: &str, count: usize) -> Daemon {
        let started = Instant::now();
        while self.log().matches(needle).count() < count {
            if started.elapsed() > Duration::from_secs(15) {
                let log = stop(self);
                panic!("no {count}× `{needle}` in the log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self
    }
}

/// SIGTERM; the daemon's log once it has exited.
fn stop(mut daemon: Daemon) -> String {
    Command::new("kill")
        .arg(daemon.child.id().to_string())
        .status()
        .unwrap();
    daemon.child.wait().unwrap();
    daemon.log()
}

/// Waits up to 15 s for `user` to have `count` messages; the daemon's log on failure.
fn wait_for(stack: &MailStack, user: &str, count: usize, daemon: Daemon) -> (Vec<Vec<u8>>, Daemon) {
    let started = Instant::now();
    loop {
        let found = stack.mailbox(user);
        if found.len() >= count {
            return (found, daemon);
        }
        if started.elapsed() > Duration::from_secs(15) {
            let log = stop(daemon);
            panic!("{user} has {} of {count} messages:\n{log}", found.len());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn message_id(raw: &[u8]) -> String {
    let message = MessageParser::default().parse(raw).unwrap();
    format!("<{}>", message.message_id().unwrap())
}

/// `from` ("Name <address>") answers `welcome` through Postfix, to sales@.
fn answer(stack: &MailStack, from: &str, welcome: &[u8], subject: &str, extra: &str, body: &str) {
    let address = from
        .rsplit_once('<')
        .map_or(from, |(_, rest)| rest.trim_end_matches('>'));
    let raw = reply(from, &message_id(welcome), subject, extra, body);
    stack.inject(address, "sales@example.test", &raw);
}

fn reply(from: &str, to_id: &str, subject: &str, extra: &str, body: &str) -> String {
    format!(
        "From: {from}\nTo: Sales <sales@example.test>\nSubject: {subject}\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\nMessage-ID: <{}.{}@other.example>\n\
         In-Reply-To: {to_id}\nReferences: {to_id}\n{extra}\
         Content-Type: text/plain; charset=utf-8\n\n{body}\n",
        subject.len(),
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    )
}

/// Whether the lead's enrollment in the inbox workflow is still running.
fn active(store: &Store, email: &str) -> bool {
    store
        .enrollment("welcome", email)
        .unwrap()
        .expect("enrolled")
        .is_active()
}

fn open_store(dir: &Path) -> Store {
    Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap()
}

/// The counters `nurture status` reads agree with a count of every record.
fn counters_agree(store: &Store) -> nurture::store::Counters {
    let recounted = store.recount(false).unwrap();
    assert!(
        recounted.differences.is_empty() && recounted.index_differences == 0,
        "{recounted:?}"
    );
    store.counters().unwrap()
}

fn events(store: &Store, email: &str) -> Vec<Event> {
    store.events_of(email).unwrap()
}

fn replies(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Received { what } if what.starts_with("reply")))
        .count()
}

/// Nothing more is sent to `user` weeks later.
fn nothing_more(dir: &Path, stack: &MailStack, user: &str, had: usize) {
    nurture_inbox(
        dir,
        stack,
        &["run", "--until-idle"],
        &[("NURTURE_DAEMON_REHEARSAL_START", "2027-01-15T09:00:00Z")],
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stack.mailbox(user).len(), had, "{user} got more mail");
}

/// A mail system, a store with one lead, and the daemon running: the lead's first email has
/// arrived and the watcher is idling (mail in the folder at its first look is left alone, so
/// replies come after this).
fn welcomed(
    name: &str,
    smtp_port: u16,
    imap_port: u16,
    email: &str,
    first_name: &str,
) -> (MailStack, PathBuf, Daemon, Vec<u8>) {
    let stack = MailStack::up(name, smtp_port, imap_port, &USERS);
    let dir = scratch(&format!("inbox-{name}"));
    seed(&dir, vec![lead(email, first_name)]);
    let daemon = start(&dir, &stack);
    let user = email.split('@').next().unwrap();
    let (mut welcome, daemon) = wait_for(&stack, user, 1, daemon);
    let daemon = daemon.wait_log("watching the inbox", 1);
    (stack, dir, daemon, welcome.remove(0))
}

/// `nurture ARGS` with the inbox settings (the watcher left out: only the schedule) and
/// `extra` variables.
fn nurture_inbox(dir: &Path, stack: &MailStack, args: &[&str], extra: &[(&str, &str)]) -> Output {
    let env = inbox_env(stack);
    let mut env: Vec<(&str, &str)> = env
        .iter()
        .filter(|(k, _)| *k != "NURTURE_IMAP_URL")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    env.extend_from_slice(extra);
    nurture(dir, stack, args, &env)
}

#[test]
fn a_reply_promotes_the_lead_stops_its_sequence_and_tells_the_owner() {
    let (stack, dir, daemon, welcome) = welcomed("reply", 2600, 2160, "tom@example.test", "Tom");
    // Tom answers from another address of his: the reply still finds him.
    answer(
        &stack,
        "Tom Becker <tom.private@other.example>",
        &welcome,
        "Re: Hello Tom",
        "",
        "Yes, let's talk on Tuesday.\n\nOn Monday Sales wrote:\n> Hi Tom",
    );
    let (notified, daemon) = wait_for(&stack, "boss", 1, daemon);
    let log = stop(daemon);
    let notice = MessageParser::default().parse(&notified[0]).unwrap();
    let text = notice.body_text(0).unwrap();
    assert!(text.contains("Yes, let's talk on Tuesday."), "{text}");
    assert_eq!(
        notice.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated"),
        "a notification is machine-made"
    );

    let store = open_store(&dir);
    let tom = store.lead("tom@example.test").unwrap().unwrap();
    assert_eq!(tom.stage, Stage::Contact, "{log}");
    assert!(!active(&store, "tom@example.test"));
    assert_eq!(replies(&events(&store, "tom@example.test")), 1);
    let welcome = &counters_agree(&store).workflows["welcome"];
    assert_eq!((welcome.replies, welcome.promoted), (1, 1));
    drop(store);
    // `nurture contacts` says when and why: the reply, quoted.
    let contacts = nurture_inbox(&dir, &stack, &["contacts", "--format", "json"], &[]);
    let contacts = String::from_utf8_lossy(&contacts.stdout);
    assert!(
        contacts.contains("tom@example.test") && contacts.contains("Yes, let's talk on Tuesday."),
        "{contacts}"
    );

    // Mail is never marked read by the watcher.
    let seen: Vec<PathBuf> = stack
        .maildir_files("sales")
        .into_iter()
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.split_once(":2,")
                .is_some_and(|(_, flags)| flags.contains('S'))
        })
        .collect();
    assert!(seen.is_empty(), "marked \\Seen: {seen:?}");
    assert!(!stack.maildir_files("sales").is_empty());

    nothing_more(&dir, &stack, "tom", 1);
}

#[test]
fn an_out_of_office_never_promotes_and_the_sequence_goes_on() {
    let (stack, dir, daemon, welcome) = welcomed("ooo", 2610, 2161, "lea@example.test", "Lea");
    answer(
        &stack,
        "Lea <lea@example.test>",
        &welcome,
        "Out of Office: Hello Lea",
        "Auto-Submitted: auto-replied\n",
        "I am away and read mail from time to time.",
    );
    let log = stop(daemon.wait_log("mail from a lead", 1));
    let store = open_store(&dir);
    let journal = events(&store, "lea@example.test");
    assert!(
        journal.iter().any(
            |e| matches!(&e.kind, EventKind::Received { what } if what.starts_with("auto-reply"))
        ),
        "{log}"
    );
    let lea = store.lead("lea@example.test").unwrap().unwrap();
    assert_eq!(lea.stage, Stage::Lead, "an auto-reply never promotes");
    let enrollment = store
        .enrollment("welcome", "lea@example.test")
        .unwrap()
        .unwrap();
    assert!(
        enrollment.is_active(),
        "the sequence continues: {enrollment:?}"
    );
    drop(store);
    // Two days later the follow-up leaves.
    let later = (Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    nurture_inbox(
        &dir,
        &stack,
        &["run", "--until-idle"],
        &[("NURTURE_DAEMON_REHEARSAL_START", &later)],
    );
    assert_eq!(stack.wait_for("lea", 2).len(), 2, "the follow-up was sent");
}

#[test]
fn a_bounce_from_the_mail_system_suppresses_the_lead() {
    let stack = MailStack::up("bounce", 2620, 2162, &USERS);
    let dir = scratch("inbox-bounce");
    seed(&dir, Vec::new());
    let daemon = start(&dir, &stack).wait_log("watching the inbox", 1);
    // Postfix accepts mail for gone@, Dovecot has no such user: a DSN to sales@. The lead comes in
    // while the daemon runs, after the watcher's first look at the folder.
    std::fs::write(
        dir.join("leads.csv"),
        "email,first_name,source\ngone@example.test,Gone,inbox-test\n",
    )
    .unwrap();
    nurture_inbox(&dir, &stack, &["leads", "import", "leads.csv"], &[]);
    let log = stop(daemon.wait_log("mail from a lead", 1));
    let store = open_store(&dir);
    let gone = store.lead("gone@example.test").unwrap().unwrap();
    assert!(gone.is_suppressed(), "{log}");
    assert!(!active(&store, "gone@example.test"));
    let journal = events(&store, "gone@example.test");
    assert!(
        journal.iter().any(|e| matches!(
            &e.kind,
            EventKind::Received { what } if what.contains("permanent bounce (5.1.1)")
        )),
        "{journal:?}"
    );
    let counters = counters_agree(&store);
    assert_eq!(counters.suppressed, 1);
    assert_eq!(
        counters.workflows["welcome"].exited().get("bounced"),
        Some(&1)
    );
}

#[test]
fn a_reply_that_arrives_while_the_daemon_is_down_is_processed_once_at_start() {
    let (stack, dir, daemon, welcome) = welcomed("down", 2630, 2163, "tom@example.test", "Tom");
    stop(daemon);

    // A backlog: sixty newsletters, then Tom's reply (caught up on in slices).
    for i in 0..60 {
        stack.inject(
            "news@weekly.example",
            "sales@example.test",
            &format!(
                "From: <news@weekly.example>\nTo: <sales@example.test>\nSubject: Issue {i}\n\
                 List-Id: <weekly.example>\nMessage-ID: <issue.{i}@weekly.example>\n\nNews.\n"
            ),
        );
    }
    answer(
        &stack,
        "Tom <tom@example.test>",
        &welcome,
        "Re: Hello Tom",
        "",
        "Call me.",
    );
    assert_eq!(stack.wait_for("sales", 61).len(), 61);
    let daemon = start(&dir, &stack);
    let (_, daemon) = wait_for(&stack, "boss", 1, daemon);
    stop(daemon);
    // Started again: the reply is not run a second time.
    let daemon = start(&dir, &stack);
    let log = stop(daemon.wait_log("watching the inbox", 3));
    let store = open_store(&dir);
    assert_eq!(replies(&events(&store, "tom@example.test")), 1, "{log}");
    assert_eq!(stack.mailbox("boss").len(), 1, "one notification");
    assert_eq!(
        store.lead("tom@example.test").unwrap().unwrap().stage,
        Stage::Contact
    );
}

#[test]
fn the_watcher_reconnects_after_dovecot_restarts() {
    let (stack, _dir, daemon, welcome) = welcomed("restart", 2640, 2164, "tom@example.test", "Tom");
    stack.run(&["restart-imap"], &[]);
    answer(
        &stack,
        "Tom <tom@example.test>",
        &welcome,
        "Re: Hello Tom",
        "",
        "After the restart: still keen.",
    );
    let (notified, daemon) = wait_for(&stack, "boss", 1, daemon);
    let log = stop(daemon);
    let notice = MessageParser::default().parse(&notified[0]).unwrap();
    assert!(notice.body_text(0).unwrap().contains("still keen"), "{log}");
    assert!(
        log.contains("inbox watcher"),
        "the lost session was noticed:\n{log}"
    );
}

#[test]
fn mail_sent_through_the_unsubscribe_link_suppresses_the_lead() {
    let (stack, dir, daemon, welcome) =
        welcomed("unsubscribe-mail", 2650, 2165, "lea@example.test", "Lea");
    // What a mail client sends for the `mailto:` entry of List-Unsubscribe.
    let message = MessageParser::default().parse(&welcome).unwrap();
    let list = message.header_raw("List-Unsubscribe").unwrap().to_owned();
    let mailto = list
        .split(',')
        .map(|entry| entry.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|entry| entry.starts_with("mailto:"))
        .expect("a mailto: entry");
    let (address, query) = mailto
        .trim_start_matches("mailto:")
        .split_once('?')
        .unwrap();
    assert_eq!(address, "sales@example.test");
    let subject = query.strip_prefix("subject=").unwrap().replace("%20", " ");
    stack.inject(
        "lea.other@example.test",
        address,
        &format!(
            "From: <lea.other@example.test>\nTo: <{address}>\nSubject: {subject}\n\
             Message-ID: <unsubscribe.1@example.test>\n\nThis message was sent to unsubscribe.\n"
        ),
    );
    let log = stop(daemon.wait_log("mail from a lead", 1));
    let store = open_store(&dir);
    let lea = store.lead("lea@example.test").unwrap().unwrap();
    assert!(lea.is_suppressed(), "{log}");
    assert!(!active(&store, "lea@example.test"));
}

#[test]
fn every_configured_mailbox_is_watched() {
    let stack = MailStack::up("accounts", 2660, 2166, &USERS);
    let dir = scratch("inbox-accounts");
    seed(&dir, vec![lead("tom@example.test", "Tom")]);
    // boss@'s folder too, from the file (arrays have no environment variables).
    std::fs::write(
        dir.join("nurture.toml"),
        format!(
            "[[imap.accounts]]\nurl = \"imap://127.0.0.1:{}\"\nuser = \"boss@example.test\"\n\
             password_env = \"TEST_IMAP_PASSWORD\"\n",
            stack.imap_port
        ),
    )
    .unwrap();
    let daemon = start(&dir, &stack);
    let (welcome, daemon) = wait_for(&stack, "tom", 1, daemon);
    let daemon = daemon.wait_log("watching the inbox", 2);
    // Tom writes to boss@ instead of replying to sales@.
    let raw = reply(
        "Tom <tom@example.test>",
        &message_id(&welcome[0]),
        "Re: Hello Tom",
        "",
        "Writing to you directly.",
    );
    stack.inject("tom@example.test", "boss@example.test", &raw);
    let log = stop(daemon.wait_log("mail from a lead", 1));
    assert!(log.contains("boss@example.test@127.0.0.1"), "{log}");
    let store = open_store(&dir);
    let tom = store.lead("tom@example.test").unwrap().unwrap();
    assert_eq!(tom.stage, Stage::Contact, "{log}");
}

#[test]
fn without_idle_on_the_server_the_watcher_polls() {
    let stack = MailStack::up_without_idle("poll", 2670, 2167, &USERS);
    let dir = scratch("inbox-poll");
    seed(&dir, vec![lead("tom@example.test", "Tom")]);
    std::fs::write(dir.join("nurture.toml"), "[imap]\npoll_seconds = 1\n").unwrap();
    let daemon = start(&dir, &stack);
    let (welcome, daemon) = wait_for(&stack, "tom", 1, daemon);
    let daemon = daemon.wait_log("watching the inbox", 1);
    answer(
        &stack,
        "Tom <tom@example.test>",
        &welcome[0],
        "Re: Hello Tom",
        "",
        "Polled, and promoted.",
    );
    let log = stop(daemon.wait_log("mail from a lead", 1));
    let store = open_store(&dir);
    let tom = store.lead("tom@example.test").unwrap().unwrap();
    assert_eq!(tom.stage, Stage::Contact, "{log}");
    assert!(log.contains("idle=false"), "{log}");
}

// ---- one person, one lead (issue 10) ----

/// A lead imported as `imported` answers from `answers_from` (the same address in another
/// case) with no threading headers, so only its sender can match it: it must be one lead, and
/// promoted. Returns the store and the daemon's log.
fn answers_in_another_case(
    name: &str,
    smtp_port: u16,
    imap_port: u16,
    imported: &str,
    answers_from: &str,
) -> (Store, String) {
    let stack = MailStack::up(
        name,
        smtp_port,
        imap_port,
        &["sales", "boss", "dana.scully"],
    );
    let dir = scratch(&format!("inbox-{name}"));
    std::fs::write(
        dir.join("leads.csv"),
        format!("email,first_name,source\n{imported},Dana,inbox-test\n"),
    )
    .unwrap();
    nurture_inbox(&dir, &stack, &["leads", "import", "leads.csv"], &[]);
    let daemon = start(&dir, &stack);
    // The welcome leaves (Dovecot files it under the user's lower-case name).
    let started = Instant::now();
    while stack.mailbox("dana.scully").is_empty() {
        if started.elapsed() > Duration::from_secs(15) {
            panic!("no welcome for {imported}:\n{}", stop(daemon));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let daemon = daemon.wait_log("watching the inbox", 1);
    let raw = format!(
        "From: Dana Scully <{answers_from}>\nTo: Sales <sales@example.test>\n\
         Subject: Re: Hello Dana\nDate: Mon, 23 Nov 2026 10:00:00 +0000\n\
         Message-ID: <{name}.1@fbi.example>\nContent-Type: text/plain; charset=utf-8\n\n\
         Yes, call me on Tuesday.\n"
    );
    stack.inject(answers_from, "sales@example.test", &raw);
    let (notified, daemon) = wait_for(&stack, "boss", 1, daemon);
    let log = stop(daemon);
    let notice = MessageParser::default().parse(&notified[0]).unwrap();
    assert!(
        notice.body_text(0).unwrap().contains("call me on Tuesday"),
        "{log}"
    );
    (open_store(&dir), log)
}

/// One lead, spelled as imported, promoted once by the reply, its sequence stopped.
fn promoted_once(store: &Store, imported: &str, log: &str) {
    assert_eq!(store.lead_count(), 1, "one person, one lead:\n{log}");
    let lead = store.lead(imported).unwrap().unwrap();
    assert_eq!(lead.email, imported, "the spelling imported is kept");
    assert_eq!(lead.stage, Stage::Contact, "{log}");
    assert_eq!(replies(&events(store, imported)), 1, "{log}");
    assert!(!active(store, imported));
}

// Issue 10: the sender of a reply was matched only as spelled (lower-cased), so a lead imported
// as `Dana.Scully@…` who wrote from `dana.scully@…` was nobody of ours.
#[test]
fn a_reply_from_the_address_in_lower_case_promotes_the_lead_imported_in_mixed_case() {
    let imported = "Dana.Scully@example.test";
    let (store, log) = answers_in_another_case(
        "case-lower",
        2760,
        2176,
        imported,
        "dana.scully@example.test",
    );
    promoted_once(&store, imported, &log);
}

#[test]
fn a_reply_from_the_address_in_mixed_case_promotes_the_lead_imported_in_lower_case() {
    let imported = "dana.scully@example.test";
    let (store, log) = answers_in_another_case(
        "case-mixed",
        2770,
        2177,
        imported,
        "Dana.Scully@example.test",
    );
    promoted_once(&store, imported, &log);
}

// Regression: a sequence completes the moment its last email leaves, and handlers ran only for
// active enrollments, so a reply to the final email (the one written to draw replies) promoted
// nobody and told nobody.
#[test]
fn a_reply_to_the_final_email_of_a_completed_sequence_promotes_and_notifies() {
    let (stack, dir, daemon, _) = welcomed("final", 2740, 2174, "tom@example.test", "Tom");
    stop(daemon);
    // Three days later the follow-up, the last email, leaves: the sequence is completed.
    let later = (Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    nurture_inbox(
        &dir,
        &stack,
        &["run", "--until-idle"],
        &[("NURTURE_DAEMON_REHEARSAL_START", &later)],
    );
    let mail = stack.wait_for("tom", 2);
    let last = mail
        .iter()
        .find(|raw| {
            MessageParser::default()
                .parse(raw.as_slice())
                .unwrap()
                .subject()
                == Some("Still there?")
        })
        .expect("the last email arrived");
    {
        let store = open_store(&dir);
        let enrollment = store
            .enrollment("welcome", "tom@example.test")
            .unwrap()
            .unwrap();
        assert_eq!(enrollment.status, Status::Completed);
    }

    let daemon = start(&dir, &stack).wait_log("watching the inbox", 2);
    answer(
        &stack,
        "Tom Becker <tom@example.test>",
        last,
        "Re: Still there?",
        "",
        "Yes! Sorry for the silence, can we talk on Friday?",
    );
    let (notified, daemon) = wait_for(&stack, "boss", 1, daemon);
    let log = stop(daemon);
    let notice = MessageParser::default().parse(&notified[0]).unwrap();
    let text = notice.body_text(0).unwrap();
    assert!(text.contains("can we talk on Friday?"), "{text}");

    let store = open_store(&dir);
    let tom = store.lead("tom@example.test").unwrap().unwrap();
    assert_eq!(tom.stage, Stage::Contact, "{log}");
    let journal = events(&store, "tom@example.test");
    assert_eq!(replies(&journal), 1, "{journal:?}");
    assert!(
        journal.iter().any(|e| matches!(
            &e.kind,
            EventKind::Promoted {
                stage: Stage::Contact,
                ..
            }
        )),
        "{journal:?}"
    );
    // The sequence stays completed: it is over, and nothing more is sent.
    let enrollment = store
        .enrollment("welcome", "tom@example.test")
        .unwrap()
        .unwrap();
    assert_eq!(enrollment.status, Status::Completed);
    drop(store);
    nothing_more(&dir, &stack, "tom", 2);
}

#[test]
fn a_spam_complaint_suppresses_the_lead_it_names_and_never_promotes() {
    let (stack, dir, daemon, welcome) =
        welcomed("complaint", 2790, 2179, "tom@example.test", "Tom");
    // The provider's feedback loop (ARF, RFC 5965) returns the welcome email as reported; the
    // report comes from the provider, not from Tom, and names him only inside.
    let report = format!(
        "From: Feedback Loop <fbl@isp.example>\nTo: sales@example.test\n\
         Subject: Abuse report\nDate: Mon, 23 Nov 2026 11:00:00 +0000\n\
         Message-ID: <{}.arf@isp.example>\nMIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"\n\n\
         --arf\nContent-Type: text/plain\n\nThis is an email abuse report.\n\n\
         --arf\nContent-Type: message/feedback-report\n\n\
         Feedback-Type: abuse\nUser-Agent: ISP-FBL/1.0\nVersion: 1\n\n\
         --arf\nContent-Type: message/rfc822\n\n{}\n--arf--\n",
        Utc::now().timestamp_nanos_opt().unwrap_or(0),
        String::from_utf8_lossy(&welcome).replace("\r\n", "\n"),
    );
    stack.inject("fbl@isp.example", "sales@example.test", &report);
    let log = stop(daemon.wait_log("mail from a lead", 1));
    let store = open_store(&dir);
    let tom = store.lead("tom@example.test").unwrap().unwrap();
    let suppression = tom.suppression.as_ref().expect("suppressed");
    assert_eq!(
        suppression.reason,
        nurture::lead::SuppressionReason::Complained,
        "{log}"
    );
    assert_eq!(tom.stage, Stage::Lead, "a complaint is never a reply");
    assert!(!active(&store, "tom@example.test"), "its enrollment ends");
    let journal = events(&store, "tom@example.test");
    assert!(
        journal.iter().any(|e| matches!(
            &e.kind,
            EventKind::Received { what } if what.starts_with("spam complaint (abuse)")
        )),
        "{journal:?}"
    );
    assert_eq!(replies(&journal), 0);
    let counters = counters_agree(&store);
    assert_eq!(counters.workflows["welcome"].complaints, 1);
    assert_eq!(counters.workflows["welcome"].promoted, 0);
    drop(store);
    nothing_more(&dir, &stack, "tom", 1);
}

/// A delivery report (RFC 3464) from the recipient's mail system: the welcome was refused with
/// `status` and `diagnostic`.
fn delivery_report(welcome: &[u8], status: &str, diagnostic: &str) -> String {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.test>\nTo: sales@example.test\n\
         Subject: Undelivered Mail Returned to Sender\nDate: Mon, 23 Nov 2026 11:00:00 +0000\n\
         Message-ID: <{}.dsn@mx.example.test>\nMIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"dsn\"\n\n\
         --dsn\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n\
         --dsn\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.test\n\n\
         Final-Recipient: rfc822; tom@example.test\nAction: failed\nStatus: {status}\n\
         Diagnostic-Code: smtp; {diagnostic}\n\n\
         --dsn\nContent-Type: message/rfc822\n\n{}\n--dsn--\n",
        Utc::now().timestamp_nanos_opt().unwrap_or(0),
        String::from_utf8_lossy(welcome).replace("\r\n", "\n"),
    )
}

#[test]
fn three_soft_bounces_suppress_the_lead_and_a_sender_side_rejection_leaves_it_alone() {
    let (stack, dir, daemon, welcome) = welcomed("soft", 2810, 2186, "tom@example.test", "Tom");
    let full = || {
        delivery_report(
            &welcome,
            "5.2.2",
            "552 5.2.2 <tom@example.test>: Mailbox full",
        )
    };
    // Blocked for the sender's sake first: neither the lead's fault nor one of its soft bounces.
    stack.inject(
        "",
        "sales@example.test",
        &delivery_report(
            &welcome,
            "5.7.1",
            "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        ),
    );
    let daemon = daemon.wait_log("mail from a lead", 1);
    stack.inject("", "sales@example.test", &full());
    let daemon = daemon.wait_log("mail from a lead", 2);
    stack.inject("", "sales@example.test", &full());
    let log = stop(daemon.wait_log("mail from a lead", 3));
    assert!(
        log.contains("mail to tom@example.test was refused by example.test: sender blocked"),
        "the operator hears of it:\n{log}"
    );

    let store = open_store(&dir);
    let tom = store.lead("tom@example.test").unwrap().unwrap();
    assert!(!tom.is_suppressed(), "two soft bounces: {log}");
    assert!(active(&store, "tom@example.test"));
    drop(store);
    let status = nurture_inbox(&dir, &stack, &["status", "--format", "json"], &[]);
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let welcome_row = report["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "welcome")
        .unwrap();
    assert_eq!(welcome_row["sender_side_rejections"], 1, "{report:#}");
    assert_eq!(report["sender_side_rejections"], 1);

    let daemon = start(&dir, &stack).wait_log("watching the inbox", 2);
    stack.inject("", "sales@example.test", &full());
    let log = stop(daemon.wait_log("mail from a lead", 4));
    let store = open_store(&dir);
    let tom = store.lead("tom@example.test").unwrap().unwrap();
    let suppression = tom.suppression.as_ref().expect("suppressed");
    assert_eq!(
        (suppression.reason, suppression.detail.as_str()),
        (
            nurture::lead::SuppressionReason::Bounced,
            "undeliverable: 3 soft bounces in 30 days"
        ),
        "{log}"
    );
    assert!(!active(&store, "tom@example.test"), "its sequence ends");
}

/// Two daemons on one PostgreSQL store: the leader watches the inbox; killed, the other takes
/// the lead and the watch over, and a reply that arrives then still promotes the lead.
#[test]
fn with_two_daemons_on_postgres_the_watcher_moves_to_the_survivor_and_a_reply_still_promotes() {
    let stack = MailStack::up("shared", 2960, 2196, &USERS);
    let dir = scratch("inbox-shared");
    let url = nurture::store::postgres::testing::cluster().database("inbox_shared");
    let config = nurture::config::StoreConfig {
        url: url.clone(),
        ..Default::default()
    };
    let store = Store::open_configured(&config).unwrap();
    store
        .apply(&nurture::store::Batch {
            changed: vec!["tom@example.test".into()],
            leads: vec![lead("tom@example.test", "Tom")],
            ..Default::default()
        })
        .unwrap();
    let start_on_postgres = |name: &str| {
        let home = dir.join(name);
        std::fs::create_dir_all(&home).unwrap();
        let mut env = inbox_env(&stack);
        env.push(("NURTURE_STORE_URL", url.clone()));
        env.push(("NURTURE_STORE_LEASE_SECONDS", "3".into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let log = std::fs::File::create(home.join("daemon.log")).unwrap();
        Daemon {
            child: nurture_command(&home, &stack, &["run"], &env)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
            log: home.join("daemon.log"),
        }
    };
    let first = start_on_postgres("first");
    let second = start_on_postgres("second");
    let (welcome, first) = wait_for(&stack, "tom", 1, first);
    // The leader watches; the other does not.
    let started = Instant::now();
    let watching = |daemon: &Daemon| daemon.log().contains("watching the inbox");
    while !watching(&first) && !watching(&second) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no daemon watches"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut leader, survivor) = if watching(&first) {
        (first, second)
    } else {
        (second, first)
    };
    assert!(!watching(&survivor), "{}", survivor.log());
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    let survivor = survivor.wait_log("this daemon now leads", 1);
    let survivor = survivor.wait_log("watching the inbox", 1);
    // Past the survivor's first look at the folder.
    std::thread::sleep(Duration::from_millis(500));
    answer(
        &stack,
        "Tom Becker <tom@example.test>",
        &welcome[0],
        "Re: Hello Tom",
        "",
        "Sounds good, call me.",
    );
    let (_, survivor) = wait_for(&stack, "boss", 1, survivor);
    let log = stop(survivor);
    let tom = store.lead("tom@example.test").unwrap().unwrap();
    assert_eq!(tom.stage, Stage::Contact, "{log}");
    assert!(!active(&store, "tom@example.test"));
    assert_eq!(replies(&events(&store, "tom@example.test")), 1);
    assert_eq!(stack.mailbox("tom").len(), 1, "the welcome went once");
}
