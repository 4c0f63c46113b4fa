//! Several `nurture run` on one PostgreSQL store (`[store] url`), on a real PostgreSQL started
//! by tests/pgcluster.sh: they share the due queue (each claims what it runs), one of them
//! leads (enrolls, settles the emails of a daemon that died), and a daemon killed with
//! `kill -9` mid-batch loses no lead and makes no email go twice: the survivor takes its work
//! over once its claims run out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use nurture::config::StoreConfig;
use nurture::lead::Lead;
use nurture::store::postgres::testing;
use nurture::store::{Batch, EventKind, Store};

use crate::support::scratch;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// `nurture ARGS` in `dir`, on the daemon fixtures' workflows and templates.
fn nurture_in(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .args(args)
        .current_dir(dir)
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

/// One daemon: its own folder (control socket, log), the shared database and outbox folder.
fn start(dir: &Path, url: &str, outbox: &Path, name: &str) -> Child {
    let home = dir.join(name);
    fs::create_dir_all(&home).unwrap();
    let log = fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    nurture_in(&home, &["run"])
        .env("NURTURE_STORE_URL", url)
        .env("NURTURE_STORE_LEASE_SECONDS", "3")
        .env("NURTURE_DAEMON_BATCH", "32")
        .env("NURTURE_TRANSPORT_OUTBOX", outbox)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the daemon starts")
}

fn open(url: &str) -> Store {
    Store::open_configured(&StoreConfig {
        url: url.to_owned(),
        ..StoreConfig::default()
    })
    .expect("the PostgreSQL store opens")
}

/// The `Sent` journal lines, by Message-ID: how many times each email was handed over.
fn sent_lines(store: &Store) -> BTreeMap<String, usize> {
    let mut sent = BTreeMap::new();
    for entry in store.all_events() {
        let (_, event) = entry.unwrap();
        if let EventKind::Sent { message_id, .. } = event.kind {
            *sent.entry(message_id).or_default() += 1;
        }
    }
    sent
}

fn emls(outbox: &Path) -> usize {
    fs::read_dir(outbox).map_or(0, |entries| {
        entries
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
            })
            .count()
    })
}

fn stop(mut daemon: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let started = Instant::now();
    while daemon.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the daemon did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_daemons_on_one_postgres_send_a_5000_lead_sequence_with_every_email_once() {
    share("two_daemons", 2, 5000, false);
}

#[test]
fn three_daemons_finish_the_work_of_a_leader_killed_mid_batch_with_every_email_once() {
    share("three_daemons", 3, 5000, true);
}

/// `daemons` daemons on one database send the two emails of the blast workflow to `leads`
/// imported leads; with `kill`, the leader is killed with `kill -9` once about a quarter has
/// left. Then every email was handed over exactly once, none is uncertain, every enrollment
/// completed, and every daemon claimed some of the due work.
fn share(name: &str, daemons: usize, leads: usize, kill: bool) {
    let dir = scratch(&format!("shared-{name}"));
    let url = testing::cluster().database(name);
    let outbox: PathBuf = dir.join("outbox");
    // Imported leads, as `leads import` leaves them: marked for the leader's enrollment.
    let store = open(&url);
    let mut batch = Batch::default();
    for i in 0..leads {
        let mut lead = Lead::new(format!("lead{i:05}@example.test"), Utc::now());
        lead.source = Some("load-test".into());
        batch.changed.push(lead.email.clone());
        batch.leads.push(lead);
    }
    store.apply(&batch).unwrap();

    let names: Vec<String> = (0..daemons).map(|i| format!("daemon{i}")).collect();
    let mut running: Vec<Option<Child>> = names
        .iter()
        .map(|name| Some(start(&dir, &url, &outbox, name)))
        .collect();
    let log = |name: &str| fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
    let logs = || {
        names
            .iter()
            .map(|name| format!("{name}:\n{}", log(name)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Watch the claims' owners while the emails leave.
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut owners = BTreeSet::new();
    let watch = |db: &mut postgres::Client, owners: &mut BTreeSet<String>| {
        for row in db
            .query(
                "SELECT DISTINCT lease_owner FROM enrollments WHERE lease_owner IS NOT NULL",
                &[],
            )
            .unwrap()
        {
            owners.insert(row.get::<_, String>(0));
        }
    };
    let mut killed = None;
    if kill {
        let started = Instant::now();
        while emls(&outbox) < leads / 2 && started.elapsed() < Duration::from_secs(120) {
            watch(&mut db, &mut owners);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            emls(&outbox) < leads * 2,
            "the work ended before a daemon could be killed in the middle of it"
        );
        // The leader dies mid-batch: another takes the lead, settles what it left in flight,
        // and the others finish its claimed work once its leases run out.
        let leader = names
            .iter()
            .position(|name| log(name).contains("this daemon now leads"))
            .expect("a daemon leads");
        let mut child = running[leader].take().unwrap();
        Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        child.wait().unwrap();
        killed = Some(leader);
    }
    let started = Instant::now();
    // (The journal is read whole: a look every 400 ms, the claims every 20.)
    while sent_lines(&store).len() < leads * 2 && started.elapsed() < Duration::from_secs(300) {
        for _ in 0..20 {
            watch(&mut db, &mut owners);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for child in running.into_iter().flatten() {
        stop(child);
    }

    if let Some(leader) = killed {
        let took_over = names
            .iter()
            .enumerate()
            .any(|(i, name)| i != leader && log(name).contains("this daemon now leads"));
        assert!(took_over, "another daemon took the lead:\n{}", logs());
    }
    assert_eq!(
        owners.len(),
        daemons,
        "every daemon claimed due work: {owners:?}\n{}",
        logs()
    );
    let sent = sent_lines(&store);
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "emails handed over twice: {twice:?}");
    assert_eq!(
        sent.len(),
        leads * 2,
        "every lead got both emails\n{}",
        logs()
    );
    assert_eq!(emls(&outbox), leads * 2);
    // The file transport says which emails the killed daemon had written: none uncertain.
    assert!(store.uncertain().unwrap().is_empty());
    assert!(store.in_flight().unwrap().is_empty());
    for entry in store.enrollments() {
        let enrollment = entry.unwrap();
        assert_eq!(
            enrollment.status,
            nurture::engine::Status::Completed,
            "{enrollment:?}"
        );
    }
}

/// Runs `nurture` in `dir` with the daemon fixtures' workflows; its output if it succeeds.
fn nurture(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> String {
    let output = nurture_in(dir, args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "nurture {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn store_copy_moves_a_store_to_postgres_and_back_and_daemons_carry_on_without_a_repeat() {
    let dir = scratch("store-copy");
    let url = testing::cluster().database("store_copy");
    let leads = 40;
    // A sled store with leads imported, none enrolled yet.
    crate::support::seed(
        &dir,
        (0..leads)
            .map(|i| {
                let mut lead = Lead::new(format!("copy{i:03}@example.test"), Utc::now());
                lead.source = Some("load-test".into());
                lead
            })
            .collect(),
    );
    let copied = nurture(
        &dir,
        &[],
        &["store", "copy", "--from", "data", "--to", &url],
    );
    assert!(copied.contains(&format!("{leads} leads")), "{copied}");
    // A second copy into the same database is refused: it is no longer empty.
    let refused = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["store", "copy", "--from", "data", "--to", &url])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not empty"));

    // The daemon on the copy enrolls the imported leads and sends both emails to each.
    let on_postgres = [
        ("NURTURE_STORE_URL", url.as_str()),
        ("NURTURE_TRANSPORT_OUTBOX", "outbox-pg"),
    ];
    nurture(&dir, &on_postgres, &["run", "--until-idle"]);
    assert_eq!(emls(&dir.join("outbox-pg")), leads * 2);
    let postgres = open(&url);
    let sent_on_postgres = sent_lines(&postgres);
    assert_eq!(sent_on_postgres.len(), leads * 2);

    // Back into a new sled store: the same journal; a daemon on it has nothing to send.
    let back = nurture(
        &dir,
        &[],
        &["store", "copy", "--from", &url, "--to", "back"],
    );
    assert!(back.contains(&format!("{leads} leads")), "{back}");
    let on_sled = [
        ("NURTURE_STORE_PATH", "back"),
        ("NURTURE_TRANSPORT_OUTBOX", "outbox-back"),
    ];
    nurture(&dir, &on_sled, &["run", "--until-idle"]);
    assert_eq!(emls(&dir.join("outbox-back")), 0, "nothing is sent twice");
    let sled = Store::open(&dir.join("back"), nurture::store::DEFAULT_CACHE_BYTES).unwrap();
    assert_eq!(sent_lines(&sled), sent_on_postgres);
    let enrollments: Vec<_> = sled.enrollments().map(Result::unwrap).collect();
    assert_eq!(enrollments.len(), leads);
    assert!(
        enrollments
            .iter()
            .all(|e| e.status == nurture::engine::Status::Completed)
    );
    drop(sled);
    // The counters `status` reads were counted on the copy.
    let status = nurture(&dir, &on_sled, &["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["workflows"][0]["sent"],
        serde_json::json!(leads * 2),
        "{status}"
    );
}

/// `/metrics` of a daemon on PostgreSQL shows the queues as the database holds them, whichever
/// daemon wrote them: counted when it starts (and again every 15 s).
#[test]
fn a_daemon_on_postgres_shows_the_queues_the_database_holds_in_its_metrics() {
    let dir = scratch("shared-metrics");
    let url = testing::cluster().database("metrics_depths");
    let store = open(&url);
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    let mut batch = Batch::default();
    for i in 0..3 {
        let lead = Lead::new(format!("lead{i}@example.test"), Utc::now());
        let mut enrollment = nurture::engine::Enrollment {
            workflow: "blast".into(),
            version: String::new(),
            lead: lead.email.clone(),
            status: nurture::engine::Status::Active,
            position: nurture::engine::Position::new("one", 0),
            due: Some(tomorrow),
            enrolled_at: Utc::now(),
            updated_at: Utc::now(),
            deferred_from: None,
            facts: nurture::engine::Facts::default(),
        };
        if i == 2 {
            // Waiting for nothing: active, not in the due queue.
            enrollment.due = None;
        }
        batch.enrollments.push(enrollment);
        batch.leads.push(lead);
    }
    batch.outbox_put.push(nurture::store::OutboxEmail {
        message_id: "<held@example.test>".into(),
        workflow: "blast".into(),
        lead: "lead0@example.test".into(),
        step: "one".into(),
        subject: "Hi".into(),
        envelope_from: "team@example.test".into(),
        envelope_to: "lead0@example.test".into(),
        queued_at: Utc::now(),
        not_before: tomorrow,
        attempts: 1,
        expires: None,
        eml: b"Subject: Hi\r\n\r\nHello\r\n".to_vec(),
    });
    store.apply(&batch).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = dir.join("daemon");
    fs::create_dir_all(&home).unwrap();
    let log = dir.join("daemon.log");
    let daemon = nurture_in(&home, &["run"])
        .env("NURTURE_STORE_URL", &url)
        .env("NURTURE_TRANSPORT_OUTBOX", dir.join("outbox"))
        .env("NURTURE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("the daemon starts");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let gauge = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    };
    let started = Instant::now();
    let text = loop {
        let text = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .ok()
            .and_then(|response| response.text().ok())
            .unwrap_or_default();
        if gauge(&text, "nurture_due_queue_depth").is_some() {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no queue depths in /metrics after 30 s:\n{text}\n{}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    stop(daemon);
    assert_eq!(gauge(&text, "nurture_due_queue_depth"), Some(2.0), "{text}");
    assert_eq!(gauge(&text, "nurture_outbox_depth"), Some(1.0), "{text}");
    assert_eq!(
        gauge(&text, "nurture_enrollments_active{workflow=\"blast\"}"),
        Some(3.0),
        "{text}"
    );
}
