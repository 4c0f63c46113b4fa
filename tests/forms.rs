//! Web forms and double opt-in over real HTTP on 127.0.0.1: a post with and without the
//! honeypot, origins, an oversized body, rate limits; the opt-in round trip through the real
//! Postfix + Dovecot; and the example signup page (examples/signup.html) driven in headless
//! Chromium over WebDriver.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mail_parser::MessageParser;
use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::api::{Daemon, KEY, client, free_port, outbox, token_in_mail, token_in_outbox};
use crate::browser::Browser;
use crate::mail_system::{MailStack, REPO};
use crate::support::scratch;
use nurture::store::{DEFAULT_CACHE_BYTES, EventKind, Store};

const FORMS: &str = r#"
[[forms]]
name = "contact"
fields = { "your-email" = "email", first = "first_name", org = "company" }
source = "website-form"
tags = ["trial"]
allowed_origins = ["https://shop.example.test"]
thank_you_url = "https://shop.example.test/thanks"
error_url = "https://shop.example.test/oops"
honeypot = "website"
max_body_bytes = 2048
per_address_per_minute = 100

[[forms]]
name = "tight"
fields = { email = "email" }
thank_you_url = "https://shop.example.test/thanks"
error_url = "https://shop.example.test/oops"
per_address_per_minute = 2
"#;

fn post_form(http: &Client, url: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut request = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().unwrap()
}

fn location(response: &Response) -> String {
    assert_eq!(response.status(), 303, "{response:?}");
    response.headers()["location"].to_str().unwrap().to_owned()
}

fn lead(daemon: &Daemon, http: &Client, email: &str) -> (u16, Value) {
    let response = http
        .get(daemon.url(&format!("/v1/leads/{email}")))
        .bearer_auth(KEY)
        .send()
        .unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

#[test]
fn a_form_post_becomes_a_lead_and_bots_and_strangers_are_turned_away() {
    let dir = scratch("forms-post");
    fs::write(dir.join("nurture.toml"), FORMS).unwrap();
    let daemon = Daemon::start(&dir, &[]);
    let http = client();
    let contact = daemon.url("/forms/contact");
    let shop = [("Origin", "https://shop.example.test")];

    // A person: 303 to the thank-you page; the lead exists with the form's source and tags,
    // and is enrolled (the welcome email is written).
    let response = post_form(
        &http,
        &contact,
        &shop,
        "your-email=Lea%40example.test&first=L%C3%A9a&org=Acme&website=&ignored=1",
    );
    assert_eq!(location(&response), "https://shop.example.test/thanks");
    let (status, body) = lead(&daemon, &http, "lea@example.test");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["first_name"], "Léa");
    assert_eq!(body["company"], "Acme");
    assert_eq!(body["source"], "website-form");
    assert_eq!(body["tags"], json!(["trial"]));
    assert!(body["attributes"].get("ignored").is_none(), "{body}");
    let started = Instant::now();
    while !outbox(&dir)
        .iter()
        .any(|eml| eml.contains("Lea@example.test"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A bot that fills the honeypot: sent to the thank-you page all the same, and dropped.
    let response = post_form(
        &http,
        &contact,
        &shop,
        "your-email=bot%40example.test&website=http%3A%2F%2Fspam.example",
    );
    assert_eq!(location(&response), "https://shop.example.test/thanks");
    assert_eq!(lead(&daemon, &http, "bot@example.test").0, 404);

    // The Referer stands in for a missing Origin; another site, or neither, is refused.
    let referer = [("Referer", "https://shop.example.test/pricing?plan=pro")];
    let response = post_form(&http, &contact, &referer, "your-email=ref%40example.test");
    assert_eq!(location(&response), "https://shop.example.test/thanks");
    let evil = [("Origin", "https://evil.example")];
    let refused = post_form(&http, &contact, &evil, "your-email=x%40example.test");
    assert_eq!(refused.status(), 403);
    assert_eq!(
        post_form(&http, &contact, &[], "your-email=x%40example.test").status(),
        403
    );
    assert_eq!(lead(&daemon, &http, "x@example.test").0, 404);

    // Bad input: to the error page, saying what and which form field.
    let response = post_form(&http, &contact, &shop, "your-email=not-an-address");
    assert_eq!(
        location(&response),
        "https://shop.example.test/oops?error=invalid_field&field=your-email"
    );
    let response = post_form(&http, &contact, &shop, "first=Nobody");
    assert_eq!(
        location(&response),
        "https://shop.example.test/oops?error=missing_field&field=your-email"
    );

    // An oversized body (the form takes 2048 bytes), JSON, an unknown form.
    let big = format!("your-email=big%40example.test&org={}", "x".repeat(3000));
    assert_eq!(post_form(&http, &contact, &shop, &big).status(), 413);
    assert_eq!(lead(&daemon, &http, "big@example.test").0, 404);
    let json = http
        .post(&contact)
        .header("Origin", "https://shop.example.test")
        .json(&json!({"your-email": "j@example.test"}))
        .send()
        .unwrap();
    assert_eq!(json.status(), 415);
    assert_eq!(
        post_form(&http, &daemon.url("/forms/nope"), &shop, "email=a%40b.test").status(),
        404
    );

    // The per-address limit (2 a minute on `tight`): the third post waits.
    let tight = daemon.url("/forms/tight");
    for n in 0..2 {
        let response = post_form(&http, &tight, &[], &format!("email=t{n}%40example.test"));
        assert_eq!(location(&response), "https://shop.example.test/thanks");
    }
    let limited = post_form(&http, &tight, &[], "email=t2%40example.test");
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    drop(daemon);
}

const OPT_IN: &str = r#"
[[forms]]
name = "signup"
fields = { email = "email", first_name = "first_name" }
source = "website-form"
tags = ["trial"]
thank_you_url = "https://www.example.test/thanks"
error_url = "https://www.example.test/oops"
double_opt_in = true
confirm_from = "Ana Ortiz <ana@example.test>"
confirm_subject = "Please confirm, {{default first_name \"there\"}}"
consent_version = "v7"
confirm_within_hours = 1
"#;

#[test]
fn double_opt_in_round_trip_through_postfix_and_dovecot() {
    let stack = MailStack::up("optin", 2900, 2190, &["lina", "ana", "sales"]);
    let dir = scratch("forms-optin");
    fs::write(dir.join("nurture.toml"), OPT_IN).unwrap();
    let smtp = format!("smtp://127.0.0.1:{}", stack.smtp_port);
    let daemon = Daemon::start(
        &dir,
        &[
            ("NURTURE_TRANSPORT_KIND", "smtp"),
            ("NURTURE_SMTP_URL", &smtp),
            ("NURTURE_SMTP_TIMEOUT_SECONDS", "5"),
        ],
    );
    let http = client();
    let response = post_form(
        &http,
        &daemon.url("/forms/signup"),
        &[],
        "email=lina%40example.test&first_name=Lina",
    );
    assert_eq!(location(&response), "https://www.example.test/thanks");
    // Unconfirmed: no lead yet, nothing enrolled.
    let (status, body) = lead(&daemon, &http, "lina@example.test");
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not confirmed"),
        "{body}"
    );

    // The confirmation email arrives in Lina's mailbox, read over IMAP.
    let confirmation = wait_for_imap(&stack, "lina", 1, &daemon);
    let message = MessageParser::default().parse(&confirmation[0]).unwrap();
    assert_eq!(message.subject(), Some("Please confirm, Lina"));
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );
    let token = token_in_mail(&confirmation[0], "/confirm/").expect("a confirmation link");
    let link = daemon.url(&format!("/confirm/{token}"));

    // A link scanner's GET confirms nobody: a page with a button.
    let page = http.get(&link).send().unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().unwrap();
    assert!(
        page.contains("lina@example.test") && page.contains("method=\"post\""),
        "{page}"
    );
    assert_eq!(lead(&daemon, &http, "lina@example.test").0, 404);
    // A forged link (another address, this MAC) is refused.
    let (_, mac) = token.split_once('.').unwrap();
    let forged = format!(
        "{}.{mac}",
        base64_url("eve@example.test\0signup\x004102444800")
    );
    assert_eq!(
        http.post(daemon.url(&format!("/confirm/{forged}")))
            .send()
            .unwrap()
            .status(),
        404
    );

    // The button: confirmed; the lead enrolls and the first email of the sequence arrives.
    let confirmed = http.post(&link).send().unwrap();
    assert_eq!(confirmed.status(), 200);
    assert!(confirmed.text().unwrap().contains("confirmed"));
    let (status, body) = lead(&daemon, &http, "lina@example.test");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tags"], json!(["trial"]));
    let both = wait_for_imap(&stack, "lina", 2, &daemon);
    let welcome = MessageParser::default().parse(&both[1]).unwrap();
    assert!(
        welcome.subject().unwrap_or_default().contains("Lina"),
        "{:?}",
        welcome.subject()
    );
    // Nothing internal reaches the lead (correlation needs only our Message-IDs).
    assert!(welcome.header_raw("X-Nurture-Workflow").is_none());
    // Pressing the button again is harmless.
    assert_eq!(http.post(&link).send().unwrap().status(), 200);

    let log = daemon.stop();
    let shown = Daemon::nurture(&dir, &["leads", "show", "lina@example.test"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("consent")
            && shown.contains("confirmed through form `signup`, consent text v7"),
        "{shown}\n{log}"
    );
    assert!(shown.contains("signed up through form `signup`"), "{shown}");
    assert_eq!(stack.fetch_over_imap("lina").len(), 2, "nothing sent twice");
}

#[test]
fn unconfirmed_sign_ups_expire_and_their_links_confirm_nobody() {
    let dir = scratch("forms-expire");
    fs::write(dir.join("nurture.toml"), OPT_IN).unwrap();
    let daemon = Daemon::start(&dir, &[]);
    let http = client();
    let signup = daemon.url("/forms/signup");
    let response = post_form(&http, &signup, &[], "email=late%40example.test");
    assert_eq!(location(&response), "https://www.example.test/thanks");
    let started = Instant::now();
    let token = loop {
        let token = token_in_outbox(&dir, "/confirm/");
        if !token.is_empty() {
            break token;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = daemon.stop();
    // Two hours later on the daemon's clock (the form allows one): the link has expired, and
    // the next sign-up's turn drops the unconfirmed one.
    let daemon = Daemon::start(
        &dir,
        &[("NURTURE_DAEMON_REHEARSAL_START", "2026-11-23T11:00:00Z")],
    );
    let expired = http
        .post(daemon.url(&format!("/confirm/{token}")))
        .send()
        .unwrap();
    assert_eq!(expired.status(), 410, "{log}");
    let response = post_form(
        &http,
        &daemon.url("/forms/signup"),
        &[],
        "email=other%40example.test",
    );
    assert_eq!(response.status(), 303);
    assert_eq!(lead(&daemon, &http, "late@example.test").0, 404);
    daemon.stop();
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let events = store.events_of("late@example.test").unwrap();
    assert!(
        events.iter().any(
            |e| matches!(&e.kind, EventKind::ConfirmationExpired { form } if form == "signup")
        ),
        "{events:?}"
    );
    assert!(store.lead("late@example.test").unwrap().is_none());
    assert!(
        nurture::daemon::intake::pending(&store, "late@example.test")
            .unwrap()
            .is_none()
    );
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// `user`'s messages over IMAP once there are `count` (15 s at most).
fn wait_for_imap(stack: &MailStack, user: &str, count: usize, daemon: &Daemon) -> Vec<Vec<u8>> {
    let started = Instant::now();
    loop {
        if stack.mailbox(user).len() >= count {
            let fetched = stack.fetch_over_imap(user);
            if fetched.len() >= count {
                return fetched;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{user} has not {count} messages:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Serves the files of examples/ on 127.0.0.1 (a thread per connection, for the browser),
/// with the form's action pointed at the test's daemon.
fn serve_examples(daemon_port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request_line.split(' ').nth(1).unwrap_or("/");
                let file = path.split('?').next().unwrap_or("").trim_start_matches('/');
                let mut stream = stream;
                let (status, body) =
                    match fs::read_to_string(Path::new(REPO).join("examples").join(file)) {
                        Ok(body) if !file.contains("..") => (
                            "200 OK",
                            body.replace(
                                "http://127.0.0.1:8025",
                                &format!("http://127.0.0.1:{daemon_port}"),
                            ),
                        ),
                        _ => ("404 Not Found", "not found".to_owned()),
                    };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

#[test]
fn the_example_signup_page_works_in_headless_chromium() {
    let dir = scratch("forms-chromium");
    let artifacts: PathBuf = dir.join("screenshots");
    fs::create_dir_all(&artifacts).unwrap();
    // The example configuration as shipped, its ports moved to free ones.
    let daemon_port = free_port();
    let pages = serve_examples(daemon_port);
    let example = fs::read_to_string(format!("{REPO}/nurture.example.toml")).unwrap();
    fs::write(
        dir.join("nurture.toml"),
        example.replace("8026", &pages.to_string()),
    )
    .unwrap();
    let daemon = Daemon::start_on(&dir, daemon_port, &[]);

    let browser = Browser::start();
    browser.open(&format!("http://127.0.0.1:{pages}/signup.html"));
    browser.type_into("#email", "mara@example.test");
    browser.type_into("#first_name", "Mara");
    browser.type_into("#company", "Globex");
    browser.screenshot(&artifacts.join("1-signup.png"));
    browser.click("#submit");
    browser.wait_for_url("/thanks.html");
    assert!(browser.text().contains("Thank you!"), "{}", browser.text());
    browser.screenshot(&artifacts.join("2-thanks.png"));

    // The confirmation email's link, followed in the browser: a page, a button, confirmed.
    let started = Instant::now();
    let token = loop {
        let token = token_in_outbox(&dir, "/confirm/");
        if !token.is_empty() {
            break token;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    browser.open(&format!("http://127.0.0.1:{daemon_port}/confirm/{token}"));
    browser.screenshot(&artifacts.join("3-confirm.png"));
    browser.click("#confirm");
    let started = Instant::now();
    while !browser.text().contains("is confirmed") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            browser.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    browser.screenshot(&artifacts.join("4-confirmed.png"));
    drop(browser);
    println!("screenshots: {}", artifacts.display());

    // The lead exists, from the form, with its consent; trial-welcome's first email was written.
    let log = daemon.stop();
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let lead = store.lead("mara@example.test").unwrap().expect(&log);
    assert_eq!(lead.first_name.as_deref(), Some("Mara"));
    assert_eq!(lead.company.as_deref(), Some("Globex"));
    assert_eq!(lead.source.as_deref(), Some("website-form"));
    assert!(lead.tags.contains("trial"));
    let events = store.events_of("mara@example.test").unwrap();
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::Consented { form, version } if form == "signup" && version == "2026-01"
    )));
    assert!(
        outbox(&dir)
            .iter()
            .any(|eml| eml.contains("Subject: Welcome to Acme Analytics, Mara!")),
        "{log}"
    );
}
