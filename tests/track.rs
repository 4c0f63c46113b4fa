//! Click and open tracking over real HTTP against `nurture run`: a tracked link redirects to
//! exactly its target, a forged or altered token gets 404 and records nothing, a machine's
//! click is kept as a machine's and moves nothing, a person's click wakes the sequence that
//! waits for it; and end to end through Postfix and Dovecot: the email arrives, the link read
//! from it is followed, and the branch that waited for that click sends its email.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mail_parser::MessageParser;
use nurture::lead::Lead;
use reqwest::blocking::Client;
use reqwest::header::{LOCATION, USER_AGENT};
use reqwest::redirect::Policy;

use crate::api::free_port;
use crate::mail_system::{MailStack, nurture_command};
use crate::support::{scratch, seed};

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const PRICING: &str = "https://shop.example.test/pricing?plan=pro&seats=5";
const DOCS: &str = "https://docs.example.test/start";

const FLOW: &str = r#"workflow "tracked" {
  enroll when lead.source is "track-test"
  from "Ana Ortiz <sales@example.test>"
  track clicks and opens
  scoring {
    +7 on click
    +3 on open
  }

  step offer {
    send "track-offer" subject "Our offer"
    wait until lead clicked "offer" or 3 days
  }

  step follow-up {
    if lead clicked link "pricing" {
      send "track-pricing" subject "About pricing"
    } else {
      send "track-nudge" subject "Still there?"
    }
  }
}
"#;

/// A project with the tracked workflow and its templates in `dir`.
fn project(dir: &Path) {
    fs::create_dir_all(dir.join("workflows")).unwrap();
    fs::create_dir_all(dir.join("templates")).unwrap();
    fs::write(dir.join("workflows/tracked.flow"), FLOW).unwrap();
    let templates = [
        (
            "track-offer.html.hbs",
            "<html><body><p>Hi {{default first_name \"there\"}},</p>\
             <p><a href=\"{{link \"pricing\" \"https://shop.example.test/pricing?plan=pro&seats=5\"}}\">Pricing</a>\
             and <a href=\"https://docs.example.test/start\">the docs</a>.</p>\
             <p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a></p></body></html>\n",
        ),
        (
            "track-offer.txt.hbs",
            "Hi {{default first_name \"there\"}},\n\nPricing: {{link \"pricing\" \"https://shop.example.test/pricing?plan=pro&seats=5\"}}\n\
             Docs: https://docs.example.test/start\n\nUnsubscribe: {{unsubscribe_url}}\n",
        ),
        ("track-pricing.html.hbs", "<p>About pricing.</p>\n"),
        ("track-pricing.txt.hbs", "About pricing.\n"),
        ("track-nudge.html.hbs", "<p>Still there?</p>\n"),
        ("track-nudge.txt.hbs", "Still there?\n"),
    ];
    for (name, text) in templates {
        fs::write(dir.join("templates").join(name), text).unwrap();
    }
}

fn lead(email: &str) -> Lead {
    let mut lead = Lead::new(email.into(), chrono::Utc::now());
    lead.first_name = Some("Ana".into());
    lead.source = Some("track-test".into());
    lead
}

/// `nurture run` on the system clock, stopped (SIGTERM) when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(mut command: Command, dir: &Path, port: u16) -> Running {
        let log = dir.join("daemon.log");
        let child = command
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env("NURTURE_WORKFLOWS", dir.join("workflows"))
            .env("NURTURE_TEMPLATES", dir.join("templates"))
            .env("NURTURE_HTTP_LISTEN", format!("127.0.0.1:{port}"))
            .env("NURTURE_HTTP_BASE_URL", format!("http://127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut running = Running { child, log };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = running.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", running.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{}",
                running.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        running
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The `.eml` files in `dir`, oldest first, as bytes; waits up to 15 s for `count` (0: looks
/// once).
fn emails(dir: &Path, count: usize) -> Vec<Vec<u8>> {
    let started = Instant::now();
    loop {
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
        if files.len() >= count || started.elapsed() > Duration::from_secs(15) {
            return files.iter().map(|p| fs::read(p).unwrap()).collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The subject, HTML part and text part of a message.
fn parts(raw: &[u8]) -> (String, String, String) {
    let message = MessageParser::default().parse(raw).expect("a message");
    (
        message.subject().unwrap_or_default().to_string(),
        message.body_html(0).unwrap_or_default().into_owned(),
        message.body_text(0).unwrap_or_default().into_owned(),
    )
}

/// Every `{base}/{kind}/…` address in `text`, in order, once each.
fn tracked(text: &str, base: &str, kind: &str) -> Vec<String> {
    let prefix = format!("{base}/{kind}/");
    let mut found: Vec<String> = Vec::new();
    for (at, _) in text.match_indices(&prefix) {
        let rest = &text[at..];
        let end = rest
            .find(|c: char| c == '"' || c.is_whitespace())
            .unwrap_or(rest.len());
        let url = rest[..end].to_string();
        if !found.contains(&url) {
            found.push(url);
        }
    }
    found
}

fn get(client: &Client, url: &str, agent: &str) -> reqwest::blocking::Response {
    client.get(url).header(USER_AGENT, agent).send().unwrap()
}

fn location(response: &reqwest::blocking::Response) -> String {
    response.headers()[LOCATION].to_str().unwrap().to_string()
}

/// `nurture leads show EMAIL` through the running daemon.
fn journal(dir: &Path, email: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["leads", "show", email])
        .current_dir(dir)
        .env("NURTURE_WORKFLOWS", dir.join("workflows"))
        .env("NURTURE_TEMPLATES", dir.join("templates"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Waits until at least `after` has passed since `since` (a fetch within seconds of delivery is
/// a machine's).
fn wait_past(since: Instant, after: Duration) {
    if let Some(left) = after.checked_sub(since.elapsed()) {
        std::thread::sleep(left);
    }
}

#[test]
fn tracked_links_redirect_to_their_target_forgeries_404_and_machines_move_nothing() {
    let dir = scratch("track-http");
    project(&dir);
    seed(&dir, vec![lead("ana@example.test")]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .arg("run")
        .env("NURTURE_TRANSPORT_OUTBOX", dir.join("outbox"));
    let daemon = Running::start(command, &dir, port);

    let sent = emails(&dir.join("outbox"), 1);
    let delivered = Instant::now();
    assert_eq!(sent.len(), 1, "{}", daemon.log());
    let (subject, html, text) = parts(&sent[0]);
    assert_eq!(subject, "Our offer");
    // Both web links are tracked, in both parts, by the same two addresses; the unsubscribe
    // link is not; the open image is there.
    let clicks = tracked(&html, &base, "c");
    assert_eq!(clicks.len(), 2, "{html}");
    assert_eq!(tracked(&text, &base, "c"), clicks, "{text}");
    assert!(!html.contains(PRICING) && !html.contains(DOCS), "{html}");
    assert!(html.contains(&format!("{base}/unsubscribe/")), "{html}");
    let opens = tracked(&html, &base, "o");
    assert_eq!(opens.len(), 1, "{html}");
    let (pricing, docs) = (&clicks[0], &clicks[1]);

    let client = client();
    // Forged and altered tokens: 404, and nothing recorded.
    let token = pricing.rsplit('/').next().unwrap();
    let (payload, mac) = token.split_once('.').unwrap();
    let flipped = |text: &str| {
        let mut chars: Vec<char> = text.chars().collect();
        chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    for forged in [
        format!("{base}/c/{payload}.{}", flipped(mac)),
        format!("{base}/c/{}.{mac}", flipped(payload)),
        format!("{base}/c/{payload}"),
        format!("{base}/o/{payload}.{mac}"),
        format!("{base}/c/{}", opens[0].rsplit('/').next().unwrap()),
    ] {
        let response = get(&client, &forged, FIREFOX);
        assert_eq!(response.status(), 404, "{forged}");
        assert!(response.headers().get(LOCATION).is_none());
    }
    assert!(!journal(&dir, "ana@example.test").contains("clicked"));

    // A scanner follows both links at once (a HEAD, an HTTP library): redirected all the same,
    // kept as a machine's, and the sequence does not move.
    let head = client
        .head(docs)
        .header(USER_AGENT, FIREFOX)
        .send()
        .unwrap();
    assert_eq!(head.status(), 302);
    let scanner = get(&client, pricing, "python-requests/2.31");
    assert_eq!(scanner.status(), 302);
    assert_eq!(location(&scanner), PRICING);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        emails(&dir.join("outbox"), 0).len(),
        1,
        "a machine moved it"
    );

    // A person, after reading: exactly the target, and the waiting sequence goes on at once
    // on the branch for that link.
    wait_past(delivered, Duration::from_secs(7));
    let person = get(&client, pricing, FIREFOX);
    assert_eq!(person.status(), 302);
    assert_eq!(location(&person), PRICING);
    // Another link a moment later (a person reads first: no burst).
    std::thread::sleep(Duration::from_millis(2500));
    let docs_click = get(&client, docs, FIREFOX);
    assert_eq!(location(&docs_click), DOCS);
    let open = get(&client, &opens[0], FIREFOX);
    assert_eq!(open.status(), 200);
    assert_eq!(open.headers()["content-type"], "image/gif");
    let sent = emails(&dir.join("outbox"), 2);
    assert_eq!(sent.len(), 2, "{}", daemon.log());
    assert_eq!(parts(&sent[1]).0, "About pricing");

    let shown = journal(&dir, "ana@example.test");
    assert!(
        shown.contains("clicked link `pricing` of `offer` (a person)"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("clicked {DOCS} in `offer` (a person)")),
        "{shown}"
    );
    assert!(
        shown.contains("(a machine: an HTTP library; not counted)")
            && shown.contains("(a machine: a HEAD request; not counted)"),
        "{shown}"
    );
    assert!(shown.contains("opened `offer` (a person)"), "{shown}");
    // People's clicks and opens score (`scoring { +7 on click … }`); machines' do not.
    assert_eq!(shown.matches("score +7 on click").count(), 2, "{shown}");
    assert_eq!(shown.matches("score +3 on open").count(), 1, "{shown}");
    // The address and the agent are judged, never kept.
    assert!(!shown.contains("python-requests") && !shown.contains("127.0.0.1"));
    // `status` counts people per step, machines apart.
    let status = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .arg("status")
        .current_dir(&dir)
        .env("NURTURE_WORKFLOWS", dir.join("workflows"))
        .env("NURTURE_TEMPLATES", dir.join("templates"))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(
            "tracked / offer: 1 sent, 1 open, 2 clicks, 0 replies (machines: 0 opens, 2 clicks)"
        ),
        "{status}"
    );
    drop(daemon);
    // Those figures are counters kept with each write; a count of every journal line agrees.
    let recount = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["status", "--recount"])
        .current_dir(&dir)
        .env("NURTURE_WORKFLOWS", dir.join("workflows"))
        .env("NURTURE_TEMPLATES", dir.join("templates"))
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&recount.stdout),
        String::from_utf8_lossy(&recount.stderr),
    );
    assert!(
        err.contains("recount: the counters agree with a count of every record"),
        "{err}"
    );
    assert!(
        out.contains(
            "tracked / offer: 1 sent, 1 open, 2 clicks, 0 replies (machines: 0 opens, 2 clicks)"
        ),
        "{out}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_link_read_from_dovecot_is_followed_and_the_branch_waiting_for_it_sends() {
    let stack = MailStack::up("track", 2950, 2195, &["ana", "sales"]);
    let dir = scratch("track-e2e");
    project(&dir);
    seed(&dir, vec![lead("ana@example.test")]);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let command = nurture_command(&dir, &stack, &["run"], &[]);
    let daemon = Running::start(command, &dir, port);

    let arrived = stack.wait_for("ana", 1);
    let delivered = Instant::now();
    assert_eq!(arrived.len(), 1, "{}", daemon.log());
    // As the lead's mail client sees it.
    let inbox = stack.fetch_over_imap("ana");
    let (subject, html, _) = parts(&inbox[0]);
    assert_eq!(subject, "Our offer");
    let clicks = tracked(&html, &base, "c");
    assert_eq!(clicks.len(), 2, "{html}");

    wait_past(delivered, Duration::from_secs(7));
    let response = get(&client(), &clicks[0], FIREFOX);
    assert_eq!(response.status(), 302);
    assert_eq!(location(&response), PRICING);

    let arrived = stack.wait_for("ana", 2);
    assert_eq!(arrived.len(), 2, "{}", daemon.log());
    let subjects: Vec<String> = stack
        .fetch_over_imap("ana")
        .iter()
        .map(|raw| parts(raw).0)
        .collect();
    assert_eq!(subjects, ["Our offer", "About pricing"]);
    drop(daemon);
    let _ = fs::remove_dir_all(&dir);
}

const DID_FLOW: &str = r#"workflow "pricing-watch" {
  enroll when lead.source is "track-test"
  from "Ana Ortiz <sales@example.test>"

  step start {
    send "track-nudge" subject "Hello"
    wait until lead did "visited-pricing" or 3 days
  }

  step after {
    if lead did "visited-pricing" within 1 day {
      send "track-pricing" subject "About pricing"
    }
  }
}
"#;

#[test]
fn an_event_through_the_api_wakes_the_sequence_that_waits_for_it() {
    let dir = scratch("track-did");
    project(&dir);
    fs::remove_file(dir.join("workflows/tracked.flow")).unwrap();
    fs::write(dir.join("workflows/pricing-watch.flow"), DID_FLOW).unwrap();
    seed(&dir, vec![lead("ana@example.test")]);
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nurture"));
    command
        .arg("run")
        .env("NURTURE_TRANSPORT_OUTBOX", dir.join("outbox"))
        .env("NURTURE_HTTP_API_KEY_ENV", "NURTURE_TEST_API_KEYS")
        .env("NURTURE_TEST_API_KEYS", "track-key-0123456789abcdef");
    let daemon = Running::start(command, &dir, port);
    assert_eq!(emails(&dir.join("outbox"), 1).len(), 1, "{}", daemon.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        emails(&dir.join("outbox"), 0).len(),
        1,
        "nothing happened yet"
    );

    let response = client()
        .post(format!(
            "http://127.0.0.1:{port}/v1/leads/ana@example.test/events"
        ))
        .bearer_auth("track-key-0123456789abcdef")
        .header("content-type", "application/json")
        .body(r#"{"event": "visited-pricing"}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let sent = emails(&dir.join("outbox"), 2);
    assert_eq!(sent.len(), 2, "{}", daemon.log());
    assert_eq!(parts(&sent[1]).0, "About pricing");
    drop(daemon);
    let _ = fs::remove_dir_all(&dir);
}
