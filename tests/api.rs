//! The `/v1` API over real HTTP on 127.0.0.1, against `nurture run`: create, update, get,
//! events, the errors (400, 401, 413, 415, 422, 429), idempotency; and the curl examples of
//! docs/api.md, run as written. Also the daemon starter the forms tests share.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;
use serde_json::{Value, json};

use crate::mail_system::REPO;
use crate::support::scratch;

pub const KEY: &str = "test-key-0123456789abcdef";
pub const OTHER_KEY: &str = "other-key-0123456789abcdef";

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `nurture run` in `dir` with its HTTP server on a free port; stopped (SIGTERM) when dropped.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with the repo's workflows and templates, the file transport into
    /// `dir/outbox`, the clock at Monday 2026-11-23 09:00 UTC (the send windows open), API keys
    /// [`KEY`] and [`OTHER_KEY`], and `env` on top; waits until it listens.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_on(dir, free_port(), env)
    }

    /// [`Daemon::start`] on `port`.
    pub fn start_on(dir: &Path, port: u16, env: &[(&str, &str)]) -> Daemon {
        let listen = format!("127.0.0.1:{port}");
        let base = format!("http://127.0.0.1:{port}");
        let log = dir.join("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_nurture"))
            .arg("run")
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env("NURTURE_WORKFLOWS", format!("{REPO}/workflows"))
            .env("NURTURE_TEMPLATES", format!("{REPO}/templates"))
            .env("NURTURE_TRANSPORT_OUTBOX", dir.join("outbox"))
            .env("NURTURE_DAEMON_REHEARSAL_START", "2026-11-23T09:00:00Z")
            .env("NURTURE_HTTP_LISTEN", &listen)
            .env("NURTURE_HTTP_BASE_URL", &base)
            .env("NURTURE_HTTP_API_KEY_ENV", "NURTURE_TEST_API_KEYS")
            .env("NURTURE_TEST_API_KEYS", format!("{KEY},{OTHER_KEY}"))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Daemon { child, port, log };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", daemon.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the daemon does not listen:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; the log.
    pub fn stop(mut self) -> String {
        self.terminate();
        self.log()
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// `nurture ARGS` on the daemon's store (after [`Daemon::stop`], or through the daemon).
    pub fn nurture(dir: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nurture"))
            .args(args)
            .current_dir(dir)
            .env("NURTURE_WORKFLOWS", format!("{REPO}/workflows"))
            .env("NURTURE_TEMPLATES", format!("{REPO}/templates"))
            .output()
            .unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// A client that does not follow redirects (the 303s are what is tested).
pub fn client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn post(client: &Client, url: &str, key: Option<&str>, body: &Value) -> Response {
    let mut request = client.post(url).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().unwrap()
}

/// Status and JSON body.
pub fn answer(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
    (status, body)
}

/// Asserts the error shape: status, stable code, a sentence, the field.
fn assert_error(got: (u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (got_status, body) = got;
    assert_eq!(got_status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.len() > 10),
        "{body}"
    );
    match field {
        Some(field) => assert_eq!(body["error"]["field"], field, "{body}"),
        None => assert!(body["error"].get("field").is_none(), "{body}"),
    }
}

/// The emails the file transport wrote so far, as text.
pub fn outbox(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(dir.join("outbox"))
        .map(|entries| {
            entries
                .filter_map(|entry| fs::read_to_string(entry.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn leads_are_created_updated_read_and_get_events_through_the_api() {
    let dir = scratch("api-leads");
    let daemon = Daemon::start(&dir, &[]);
    let http = client();
    let leads = daemon.url("/v1/leads");

    // Create: 201 with the lead; enrolled at once, the welcome email leaves within a second.
    let lead = json!({"email": "Ana.Lima@example.test", "first_name": "Ana", "source": "website-form",
        "tags": ["trial"], "timezone": "Europe/Berlin", "plan": "pro"});
    let (status, body) = answer(post(&http, &leads, Some(KEY), &lead));
    let created = Instant::now();
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["email"], "Ana.Lima@example.test");
    assert_eq!(body["tags"], json!(["trial"]));
    assert_eq!(body["attributes"]["plan"], "pro");
    loop {
        if outbox(&dir)
            .iter()
            .any(|eml| eml.contains("Ana.Lima@example.test"))
        {
            break;
        }
        assert!(
            created.elapsed() < Duration::from_secs(1),
            "no welcome email a second after the 201:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Update, in another case: 200, fields merged as an import merges them.
    let (status, body) = answer(post(
        &http,
        &leads,
        Some(KEY),
        &json!({"email": "ana.lima@example.test", "company": "Lima GmbH", "tags": ["vip"]}),
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["email"], "Ana.Lima@example.test",
        "one person, one lead"
    );
    assert_eq!(body["company"], "Lima GmbH");
    assert_eq!(body["first_name"], "Ana", "fields not sent stay");
    assert_eq!(body["tags"], json!(["trial", "vip"]));

    // Get.
    let get = |email: &str| {
        answer(
            http.get(daemon.url(&format!("/v1/leads/{email}")))
                .bearer_auth(KEY)
                .send()
                .unwrap(),
        )
    };
    let (status, body) = get("ANA.LIMA@example.test");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["company"], "Lima GmbH");
    assert_error(
        get("nobody@example.test"),
        404,
        "lead_not_found",
        Some("email"),
    );
    assert_error(get("not-an-address"), 422, "invalid_field", Some("email"));

    // Events.
    let events = daemon.url("/v1/leads/ana.lima@example.test/events");
    let (status, body) = answer(post(
        &http,
        &events,
        Some(KEY),
        &json!({"event": "visited-pricing", "properties": {"plan": "pro", "seconds": 42},
            "at": "2026-11-23T08:30:00Z"}),
    ));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["event"], "visited-pricing");
    assert_eq!(body["at"], "2026-11-23T08:30:00Z");
    assert_error(
        answer(post(
            &http,
            &daemon.url("/v1/leads/nobody@example.test/events"),
            Some(KEY),
            &json!({"event": "x"}),
        )),
        404,
        "lead_not_found",
        Some("email"),
    );
    for (body, field) in [
        (json!({"properties": {}}), "event"),
        (json!({"event": "x", "at": "yesterday"}), "at"),
        (json!({"event": "x", "properties": [1]}), "properties"),
        (json!({"event": "x", "colour": "red"}), "colour"),
    ] {
        assert_error(
            answer(post(&http, &events, Some(KEY), &body)),
            422,
            "invalid_field",
            Some(field),
        );
    }

    // The journal has the event; `leads show` tells it.
    let log = daemon.stop();
    let shown = Daemon::nurture(&dir, &["leads", "show", "ana.lima@example.test"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(r#"event visited-pricing {"plan":"pro","seconds":42}, reported by the API"#),
        "{shown}\n{log}"
    );
    assert!(shown.contains("2026-11-23 08:30:00 UTC"), "{shown}");
    assert!(shown.contains("created by the API"), "{shown}");
    assert!(log.contains("HTTP server"), "{log}");
    assert!(
        !log.contains(KEY) && !log.contains(OTHER_KEY),
        "keys are never logged"
    );
}

#[test]
fn bad_requests_get_json_errors_with_a_code_and_the_field() {
    let dir = scratch("api-errors");
    let daemon = Daemon::start(&dir, &[("NURTURE_HTTP_API_REQUESTS_PER_SECOND", "20")]);
    let http = client();
    let leads = daemon.url("/v1/leads");
    let lead = json!({"email": "eve@example.test"});

    // 401: no key, a wrong key, another scheme.
    assert_error(
        answer(post(&http, &leads, None, &lead)),
        401,
        "unauthorized",
        None,
    );
    let wrong = answer(post(&http, &leads, Some("not-the-key-0123456789"), &lead));
    assert_error(wrong, 401, "unauthorized", None);
    let basic = http
        .post(&leads)
        .basic_auth(KEY, Some(""))
        .json(&lead)
        .send()
        .unwrap();
    assert_eq!(basic.headers()["www-authenticate"], "Bearer");
    assert_error(answer(basic), 401, "unauthorized", None);

    // 400: not JSON, not an object.
    let raw = |body: &str, content_type: &str| {
        answer(
            http.post(&leads)
                .bearer_auth(KEY)
                .header("content-type", content_type)
                .body(body.to_owned())
                .send()
                .unwrap(),
        )
    };
    assert_error(
        raw("{\"email\": ", "application/json"),
        400,
        "invalid_json",
        None,
    );
    assert_error(raw("[1, 2]", "application/json"), 400, "invalid_json", None);
    // 415: not JSON at all.
    assert_error(
        raw(
            "email=eve@example.test",
            "application/x-www-form-urlencoded",
        ),
        415,
        "unsupported_media_type",
        None,
    );
    // 422: the field at fault.
    for (body, field) in [
        (json!({"first_name": "Eve"}), "email"),
        (json!({"email": "eve@@example.test"}), "email"),
        (
            json!({"email": "eve@example.test", "timezone": "Mars/Olympus"}),
            "timezone",
        ),
        (
            json!({"email": "eve@example.test", "score": "lots"}),
            "score",
        ),
        (json!({"email": "eve@example.test", "tags": [1]}), "tags"),
        (
            json!({"email": "eve@example.test", "confirm_with": "nope"}),
            "confirm_with",
        ),
    ] {
        let got = answer(post(&http, &leads, Some(KEY), &body));
        assert_error(got, 422, "invalid_field", Some(field));
    }
    // 413: over http.api_max_body_bytes (64 KiB by default).
    let big = json!({"email": "eve@example.test", "notes": "x".repeat(70_000)});
    assert_error(
        answer(post(&http, &leads, Some(KEY), &big)),
        413,
        "body_too_large",
        None,
    );

    // 429: over the key's rate (20 a second here), with Retry-After; the other key is not
    // held back by it.
    let mut limited = None;
    for _ in 0..60 {
        let response = http
            .get(daemon.url("/v1/leads/eve@example.test"))
            .bearer_auth(OTHER_KEY)
            .send()
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("60 requests at once stay under a limit of 20 a second");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    assert_error(answer(limited), 429, "rate_limited", None);
    std::thread::sleep(Duration::from_millis(100));
    let (status, _) = answer(post(&http, &leads, Some(KEY), &lead));
    assert_eq!(status, 201);
    drop(daemon);
}

#[test]
fn an_idempotency_key_makes_a_retried_post_harmless() {
    let dir = scratch("api-idempotency");
    let daemon = Daemon::start(&dir, &[]);
    let http = client();
    let leads = daemon.url("/v1/leads");
    let send = |key: &str, body: &Value| {
        answer(
            http.post(&leads)
                .bearer_auth(KEY)
                .header("Idempotency-Key", key)
                .json(body)
                .send()
                .unwrap(),
        )
    };
    let first = json!({"email": "ida@example.test", "tags": ["a"]});
    let (status, created) = send("k-1", &first);
    assert_eq!(status, 201, "{created}");
    // The retry gets the first answer, 201 and all, and changes nothing.
    assert_eq!(send("k-1", &first), (201, created.clone()));
    // The same key with another body: refused.
    let other = json!({"email": "ida@example.test", "tags": ["b"]});
    assert_error(send("k-1", &other), 422, "idempotency_key_reused", None);
    // Another key: a new request (an update).
    let (status, updated) = send("k-2", &other);
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["tags"], json!(["a", "b"]));
    // Keys are per API key: the other key's k-1 is its own.
    let (status, _) = answer(
        http.post(&leads)
            .bearer_auth(OTHER_KEY)
            .header("Idempotency-Key", "k-1")
            .json(&other)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    // A key too long is a 400 naming the header.
    assert_error(
        send(&"k".repeat(300), &first),
        400,
        "invalid_header",
        Some("Idempotency-Key"),
    );

    // Once: one creation in the journal, whatever the retries. And a restart keeps the keys.
    let log = daemon.stop();
    let shown = Daemon::nurture(&dir, &["leads", "show", "ida@example.test"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert_eq!(
        shown.matches("created by the API").count(),
        1,
        "{shown}\n{log}"
    );
    let daemon = Daemon::start(&dir, &[]);
    let http = client();
    let (status, again) = answer(
        http.post(daemon.url("/v1/leads"))
            .bearer_auth(KEY)
            .header("Idempotency-Key", "k-1")
            .json(&first)
            .send()
            .unwrap(),
    );
    assert_eq!((status, again), (201, created));
}

/// The `curl` commands of docs/api.md, in order, with the placeholders set for this daemon.
fn doc_commands(port: u16) -> Vec<String> {
    let doc = fs::read_to_string(format!("{REPO}/docs/api.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.trim_end();
        if current.is_empty() && !line.starts_with("curl ") {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
        .into_iter()
        .map(|command| {
            command
                .replace(
                    "https://nurture.example.com",
                    &format!("http://127.0.0.1:{port}"),
                )
                .replace("$NURTURE_API_KEY", KEY)
        })
        .collect()
}

#[test]
fn every_curl_example_in_the_api_documentation_works() {
    let dir = scratch("api-docs");
    // The documented form (`signup` of nurture.example.toml, with an origin of example.com).
    let example = fs::read_to_string(format!("{REPO}/nurture.example.toml")).unwrap();
    let config = example.replace(
        "allowed_origins = [\"http://127.0.0.1:8026\", \"http://localhost:8026\"]",
        "allowed_origins = [\"https://www.example.com\"]",
    );
    fs::write(dir.join("nurture.toml"), config).unwrap();
    let daemon = Daemon::start(&dir, &[]);
    let commands = doc_commands(daemon.port);
    assert!(commands.len() >= 6, "{commands:?}");
    for command in &commands {
        // Tokens come from the emails sent so far: the confirmation email of the form's
        // sign-up, the unsubscribe link of a welcome email.
        let command = command
            .replace("$CONFIRM_TOKEN", &token_in_outbox(&dir, "/confirm/"))
            .replace(
                "$UNSUBSCRIBE_TOKEN",
                &token_in_outbox(&dir, "/unsubscribe/"),
            );
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{command} --silent --show-error --write-out '\\n%{{http_code}}'"
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        let status = text.lines().last().unwrap_or_default();
        assert!(
            output.status.success() && (status.starts_with('2') || status.starts_with('3')),
            "{command}\n→ {text}\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            daemon.log()
        );
    }
}

/// The first token after `marker` in the emails sent so far (empty when there is none yet):
/// in the decoded text body or the `List-Unsubscribe` header.
pub fn token_in_outbox(dir: &Path, marker: &str) -> String {
    outbox(dir)
        .iter()
        .find_map(|eml| token_in_mail(eml.as_bytes(), marker))
        .unwrap_or_default()
}

/// The token after `marker` in one raw email.
pub fn token_in_mail(raw: &[u8], marker: &str) -> Option<String> {
    let message = mail_parser::MessageParser::default().parse(raw)?;
    let text = format!(
        "{} {}",
        message.body_text(0).unwrap_or_default(),
        message.header_raw("List-Unsubscribe").unwrap_or_default()
    );
    let start = text.find(marker)? + marker.len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    Some(token.trim_end_matches('.').to_owned())
}
