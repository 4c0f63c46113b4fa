//! The status page against `nurture run` on 127.0.0.1: the login over real HTTP (bad password,
//! the cookie's attributes, a forged cookie, posts from another site, logout, the rate limit,
//! scripts with an API key), then the page in headless Chromium: signed in through the form,
//! the funnel numbers equal to `nurture status --format json`, a lead page with the timeline
//! of `nurture leads show`, lead data shown as text (never as markup), screenshots kept.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use reqwest::blocking::{Client, Response};
use reqwest::header;
use serde_json::{Value, json};

use crate::api::{Daemon, KEY, client};
use crate::browser::Browser;
use crate::support::scratch;
use nurture::engine::{Enrollment, ExitReason, Facts, Position, Status};
use nurture::lead::{Lead, Stage};
use nurture::store::{Batch, DEFAULT_CACHE_BYTES, EventKind, Store};

const PASSWORD: &str = "page password for people";
const WORKFLOW: &str = "trial-welcome";
/// The reply that made dora a contact; its first lines show with her promotion.
const REPLY: &str =
    "reply “Re: Welcome to Acme”: “Yes please, call me on Tuesday. We have 40 seats.”";

/// The daemon of `dir`, with the page password in a file beside it.
fn start(dir: &Path, base_url: Option<&str>) -> Daemon {
    let file = dir.join("page-password");
    fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let file = file.display().to_string();
    let mut env = vec![("NURTURE_HTTP_PAGE_PASSWORD_FILE", file.as_str())];
    if let Some(base_url) = base_url {
        env.push(("NURTURE_HTTP_BASE_URL", base_url));
    }
    Daemon::start(dir, &env)
}

fn log_in(http: &Client, daemon: &Daemon, origin: Option<&str>, password: &str) -> Response {
    let mut request = http
        .post(daemon.url("/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string([("password", password)]).unwrap());
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    request.send().unwrap()
}

fn get(http: &Client, daemon: &Daemon, path: &str, cookie: Option<&str>) -> Response {
    let mut request = http.get(daemon.url(path));
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.send().unwrap()
}

fn set_cookie(response: &Response) -> String {
    response
        .headers()
        .get(header::SET_COOKIE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The `name=value` part of a `Set-Cookie`.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[test]
fn people_log_in_with_a_signed_cookie_and_out_again_and_others_are_kept_out() {
    let dir = scratch("page-login");
    let daemon = start(&dir, None);
    let http = client();
    let page = daemon.url("");
    let origin = Some(page.as_str());

    // Nobody signed in: the login form, 401, nothing cached, a policy that allows no script.
    let answer = get(&http, &daemon, "/", None);
    assert_eq!(answer.status(), 401);
    let policy = answer.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'none'") && policy.contains("style-src 'sha256-"));
    assert_eq!(answer.headers()[header::CACHE_CONTROL], "no-store");
    let html = answer.text().unwrap();
    assert!(html.contains("<form class=\"login\" method=\"post\" action=\"/login\">"));
    assert!(!html.contains("<script"), "no script at all");
    assert_eq!(
        get(&http, &daemon, "/leads/anna@example.test", None).status(),
        401
    );

    // Scripts: an API key as Bearer; a wrong one is the API's 401.
    let answer = http.get(daemon.url("/")).bearer_auth(KEY).send().unwrap();
    assert_eq!(answer.status(), 200);
    assert!(answer.text().unwrap().contains("<h1>Workflows</h1>"));
    let answer = http
        .get(daemon.url("/"))
        .bearer_auth("not-a-key-0123456789abcdef")
        .send()
        .unwrap();
    assert_eq!(answer.status(), 401);

    // A wrong password: the form again, saying so, and no cookie.
    let answer = log_in(&http, &daemon, origin, "not the password at all");
    assert_eq!(answer.status(), 401);
    assert!(set_cookie(&answer).is_empty());
    assert!(answer.text().unwrap().contains("That is not the password"));

    // The right password posted by another site, or with no origin at all: refused (login
    // CSRF), and not counted against the address's tries.
    for other in [Some("https://evil.example"), Some("null"), None] {
        let answer = log_in(&http, &daemon, other, PASSWORD);
        assert_eq!(answer.status(), 403, "{other:?}");
        assert!(set_cookie(&answer).is_empty(), "{other:?}");
    }

    // The right one: 303 to the page with a session cookie only this site's pages send.
    let answer = log_in(&http, &daemon, origin, PASSWORD);
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()[header::LOCATION], "/");
    let cookie = set_cookie(&answer);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http base_url: {cookie}");
    let session = pair(&cookie);
    let answer = get(&http, &daemon, "/", Some(&session));
    assert_eq!(answer.status(), 200);
    assert!(answer.text().unwrap().contains("<h1>Workflows</h1>"));

    // A cookie changed by one character is nobody's.
    let mut forged = session.clone().into_bytes();
    let middle = session.find('=').unwrap() + 3;
    forged[middle] = if forged[middle] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(get(&http, &daemon, "/", Some(&forged)).status(), 401);

    // An API key works in the form too.
    let answer = log_in(&http, &daemon, origin, KEY);
    assert_eq!(answer.status(), 303);
    let by_key = pair(&set_cookie(&answer));
    assert_ne!(by_key, session, "each login is its own session");

    // Logging out from another site does nothing; from the page, it ends the session for
    // good: the old cookie no longer opens the page even when sent again.
    let other_site = http
        .post(daemon.url("/logout"))
        .header(header::COOKIE, &session)
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .unwrap();
    assert_eq!(other_site.status(), 403);
    assert_eq!(get(&http, &daemon, "/", Some(&session)).status(), 200);
    let answer = http
        .post(daemon.url("/logout"))
        .header(header::COOKIE, &session)
        .header(header::ORIGIN, &page)
        .send()
        .unwrap();
    assert_eq!(answer.status(), 303);
    assert!(set_cookie(&answer).contains("Max-Age=0"));
    assert_eq!(get(&http, &daemon, "/", Some(&session)).status(), 401);
    assert_eq!(get(&http, &daemon, "/", Some(&by_key)).status(), 200);

    // Three logins so far from this address; five a minute are taken, so within two more
    // tries the address is told to wait, and then even the right password waits.
    let mut limited = None;
    for attempt in 0..4 {
        let answer = log_in(&http, &daemon, origin, "still not the password");
        if answer.status() == 429 {
            limited = Some(attempt);
            assert!(answer.headers().contains_key(header::RETRY_AFTER));
            break;
        }
        assert_eq!(answer.status(), 401);
    }
    assert!(limited.is_some_and(|attempt| attempt <= 2), "{limited:?}");
    assert_eq!(log_in(&http, &daemon, origin, PASSWORD).status(), 429);
    let log = daemon.stop();
    assert!(
        !log.contains(PASSWORD) && !log.contains(KEY),
        "secrets are never logged"
    );

    // Served behind https (base_url), the cookie is Secure; the page's origin is base_url's.
    let dir = scratch("page-login-https");
    let daemon = start(&dir, Some("https://nurture.example.test"));
    let answer = log_in(
        &http,
        &daemon,
        Some("https://nurture.example.test"),
        PASSWORD,
    );
    assert_eq!(answer.status(), 303);
    assert!(
        set_cookie(&answer).contains("; Secure"),
        "{}",
        set_cookie(&answer)
    );
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().to_utc()
}

/// Six leads in trial-welcome, none due (the daemon leaves them be):
/// anna (emailed, clicked), ben (emailed; engages through the API in the test), carla
/// (completed, clicked), dora (replied, promoted to contact), emil (bounced before any email),
/// and a lead whose name is markup (emailed, replied).
fn seed(dir: &Path) {
    let store = Store::open(&dir.join("data"), DEFAULT_CACHE_BYTES).unwrap();
    let created = at("2026-11-02T08:00:00Z");
    let mut batch = Batch::default();
    let people = ["anna", "ben", "carla", "dora", "emil", "eve"];
    for name in people {
        let mut lead = Lead::new(format!("{name}@example.test"), created);
        if name == "eve" {
            lead.first_name = Some("<b>Eve</b>".into());
            lead.company = Some("<script>alert(1)</script>".into());
        }
        if name == "dora" {
            lead.stage = Stage::Contact;
        }
        batch.leads.push(lead);
    }
    let sent = |templates: &[&str]| templates.iter().map(|t| t.to_string()).collect();
    for name in people {
        let (status, facts) = match name {
            "anna" => (
                Status::Active,
                Facts {
                    clicked: true,
                    sent: sent(&["welcome"]),
                    ..Facts::default()
                },
            ),
            "ben" => (
                Status::Active,
                Facts {
                    sent: sent(&["welcome"]),
                    ..Facts::default()
                },
            ),
            "carla" => (
                Status::Completed,
                Facts {
                    clicked: true,
                    sent: sent(&["welcome", "trial-tips"]),
                    ..Facts::default()
                },
            ),
            "dora" => (
                Status::Exited(ExitReason::Replied),
                Facts {
                    replied: true,
                    sent: sent(&["welcome"]),
                    ..Facts::default()
                },
            ),
            "emil" => (Status::Exited(ExitReason::Bounced), Facts::default()),
            _ => (
                Status::Active,
                Facts {
                    replied: true,
                    sent: sent(&["welcome"]),
                    ..Facts::default()
                },
            ),
        };
        batch.enrollments.push(Enrollment {
            workflow: WORKFLOW.into(),
            version: "v1".into(),
            lead: format!("{name}@example.test"),
            status,
            position: Position::new("welcome", 0),
            due: None,
            enrolled_at: created,
            updated_at: created,
            deferred_from: None,
            facts,
        });
    }
    let dora = "dora@example.test";
    let events = [
        ("2026-11-02T08:00:00Z", EventKind::Enrolled),
        (
            "2026-11-02T09:00:00Z",
            EventKind::Sent {
                message_id: "<1@nurture.test>".into(),
                step: "welcome".into(),
            },
        ),
        (
            "2026-11-03T10:00:00Z",
            EventKind::Received { what: REPLY.into() },
        ),
        (
            "2026-11-03T10:00:00Z",
            EventKind::Promoted {
                stage: Stage::Contact,
                by: "workflow `trial-welcome`".into(),
            },
        ),
        (
            "2026-11-03T10:00:00Z",
            EventKind::Exited {
                reason: ExitReason::Replied,
            },
        ),
    ];
    for (when, kind) in events {
        batch.event(dora, at(when), Some(WORKFLOW), kind);
    }
    store.apply(&batch).unwrap();
    store.flush().unwrap();
}

/// `nurture status --format json`, through the running daemon.
fn status_json(dir: &Path) -> Value {
    let output = Daemon::nurture(dir, &["status", "--format", "json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The funnel steps of the page and the report's fields they show.
const STEPS: [(&str, &str); 5] = [
    ("enrolled", "enrolled"),
    ("emailed", "emailed"),
    ("engaged", "engaged"),
    ("replied", "replies"),
    ("contact", "promoted"),
];

/// Every workflow's funnel and exits as the page in `browser` shows them, as `nurture status
/// --format json` names them.
fn page_numbers(browser: &Browser, report: &Value) -> Value {
    let mut shown = serde_json::Map::new();
    for workflow in report["workflows"].as_array().unwrap() {
        let name = workflow["name"].as_str().unwrap();
        let section = format!("section[data-workflow=\"{name}\"]");
        let mut numbers = serde_json::Map::new();
        for (step, field) in STEPS {
            let text = browser.text_of(&format!("{section} td[data-step=\"{step}\"]"));
            numbers.insert(field.into(), json!(text.parse::<u64>().unwrap()));
        }
        let exits = browser.script(&format!(
            "return Array.from(document.querySelectorAll('{section} td[data-exit]'))\
             .map(cell => [cell.dataset.exit, Number(cell.textContent)]);"
        ));
        numbers.insert("exited".into(), exits);
        let title = browser.script(&format!(
            "return document.querySelector('{section} svg[role=img] title').textContent;"
        ));
        numbers.insert("svg_title".into(), title);
        shown.insert(name.into(), Value::Object(numbers));
    }
    Value::Object(shown)
}

/// What the page must show for `report`.
fn expected_numbers(report: &Value) -> Value {
    let mut expected = serde_json::Map::new();
    for workflow in report["workflows"].as_array().unwrap() {
        let name = workflow["name"].as_str().unwrap();
        let mut numbers = serde_json::Map::new();
        for (_, field) in STEPS {
            numbers.insert(field.into(), workflow[field].clone());
        }
        let exits: Vec<Value> = workflow["exited"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(reason, count)| json!([reason.replace('_', " "), count]))
            .collect();
        numbers.insert("exited".into(), Value::Array(exits));
        let title = format!(
            "Funnel of {name}: enrolled {}, emailed {}, engaged {}, replied {}, contact {}",
            workflow["enrolled"],
            workflow["emailed"],
            workflow["engaged"],
            workflow["replies"],
            workflow["promoted"]
        );
        numbers.insert("svg_title".into(), json!(title));
        expected.insert(name.into(), Value::Object(numbers));
    }
    Value::Object(expected)
}

#[test]
fn the_status_page_in_headless_chromium_shows_the_numbers_of_status() {
    let dir = scratch("page-chromium");
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/page");
    fs::create_dir_all(&artifacts).unwrap();
    seed(&dir);
    let daemon = start(&dir, None);
    // ben reports an event through the API: he is engaged from now on.
    let answer = client()
        .post(daemon.url("/v1/leads/ben@example.test/events"))
        .bearer_auth(KEY)
        .json(&json!({"event": "visited pricing"}))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 201);
    // emil reports one from before he enrolled: that is no engagement in the workflow.
    let answer = client()
        .post(daemon.url("/v1/leads/emil@example.test/events"))
        .bearer_auth(KEY)
        .json(&json!({"event": "downloaded the whitepaper", "at": "2026-11-01T12:00:00Z"}))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 201);

    let browser = Browser::start();
    browser.open(&daemon.url("/"));
    browser.wait_for("#password");
    browser.type_into("#password", PASSWORD);
    browser.screenshot(&artifacts.join("1-login.png"));
    browser.click("#login");
    browser.wait_for("#totals");

    // The style sheet applies under the page's Content-Security-Policy (by its hash).
    assert_eq!(
        browser.script("return getComputedStyle(document.body).maxWidth;"),
        "960px"
    );

    // The numbers on the page are the report's, read in the same quiet moment: the report
    // before and after the page agree, so the daemon changed nothing in between.
    let (report, shown) = loop {
        let before = status_json(&dir);
        browser.open(&daemon.url("/"));
        browser.wait_for("#totals");
        let shown = page_numbers(&browser, &before);
        if status_json(&dir)["workflows"] == before["workflows"] {
            break (before, shown);
        }
    };
    assert_eq!(shown, expected_numbers(&report));
    let trial = &shown[WORKFLOW];
    assert_eq!(
        (
            &trial["enrolled"],
            &trial["emailed"],
            &trial["engaged"],
            &trial["replies"],
            &trial["promoted"]
        ),
        (&json!(6), &json!(5), &json!(3), &json!(2), &json!(1)),
        "{shown:#}"
    );
    assert_eq!(trial["exited"], json!([["bounced", 1], ["replied", 1]]));
    // dora's promotion, with the first lines of the reply that earned it.
    let section = format!("section[data-workflow=\"{WORKFLOW}\"]");
    let promotions = browser.text_of(&format!("{section} ol.promotions"));
    assert!(promotions.contains("dora@example.test"), "{promotions}");
    assert!(
        promotions.contains("call me on Tuesday. We have 40 seats."),
        "{promotions}"
    );

    browser.resize(1200, 3000);
    browser.screenshot(&artifacts.join("2-workflows.png"));
    // On a phone: nothing wider than the screen but the tables, which scroll in their box.
    browser.resize(390, 2400);
    let overflow = browser.script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth;",
    );
    assert_eq!(overflow, true, "the page fits a phone's width");
    browser.screenshot(&artifacts.join("3-workflows-phone.png"));
    browser.resize(1200, 2000);

    // dora's page, through the link of her promotion: her timeline is `leads show`'s.
    browser.click(&format!("{section} ol.promotions a"));
    browser.wait_for("#timeline");
    assert!(
        browser.url().ends_with("/leads/dora@example.test"),
        "{}",
        browser.url()
    );
    let timeline = browser.text_of("#timeline");
    let show = Daemon::nurture(&dir, &["leads", "show", "dora@example.test"]);
    let show = String::from_utf8_lossy(&show.stdout).into_owned();
    let lines: Vec<&str> = show
        .split_once("timeline\n")
        .unwrap()
        .1
        .lines()
        .map(|line| line.trim().split_once("  ").unwrap().1)
        .collect();
    assert_eq!(lines.len(), 5, "{show}");
    for line in lines {
        // `leads show` writes "[workflow] sentence"; the page shows the workflow as a badge.
        let sentence = line.split_once("] ").map_or(line, |(_, sentence)| sentence);
        assert!(timeline.contains(sentence), "{sentence} in\n{timeline}");
    }
    browser.screenshot(&artifacts.join("4-lead.png"));

    // A lead whose name is markup, opened with the page's lookup form: shown as text, never
    // run or rendered as markup.
    browser.open(&daemon.url("/"));
    browser.wait_for("#lookup");
    browser.type_into("#lookup", "Eve@Example.test");
    browser.click("#open-lead");
    browser.wait_for("#lead");
    assert_eq!(browser.text_of("#lead"), "eve@example.test");
    let text = browser.text();
    assert!(
        text.contains("<b>Eve</b>") && text.contains("<script>alert(1)</script>"),
        "{text}"
    );
    assert_eq!(
        browser.script("return document.querySelectorAll('main b, main script').length;"),
        0
    );
    browser.screenshot(&artifacts.join("5-lead-markup.png"));

    // Signing out leads back to the form; the page is closed again.
    browser.click("#logout");
    browser.wait_for("#password");
    browser.open(&daemon.url("/"));
    browser.wait_for("#password");
    drop(browser);
    println!("screenshots: {}", artifacts.display());
    daemon.stop();
}
