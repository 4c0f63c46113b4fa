//! A headless Chromium session over W3C WebDriver (Debian's `chromium` and `chromium-driver`,
//! which tests/run installs), spoken as plain JSON over HTTP; for the tests of pages people use.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::api::{client, free_port};

/// A headless Chromium session over W3C WebDriver (chromedriver), ended when dropped.
pub struct Browser {
    driver: Child,
    http: Client,
    session: String,
    base: String,
}

impl Browser {
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (tests/run installs Debian's chromium and chromium-driver)");
        let http = client();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let session = loop {
            let answer = http
                .post(format!("{base}/session"))
                .json(
                    &json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
                    "goog:chromeOptions": {"args": ["--headless=new", "--no-sandbox",
                    "--disable-gpu", "--window-size=1200,900"]}}}}),
                )
                .send()
                .and_then(Response::json::<Value>);
            match answer {
                Ok(value) if value["value"]["sessionId"].is_string() => {
                    break value["value"]["sessionId"].as_str().unwrap().to_owned();
                }
                other => assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "no WebDriver session: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser {
            driver,
            http,
            session,
            base,
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let value = self.try_call(method, path, body);
        assert!(value.get("error").is_none(), "{path}: {value}");
        value
    }

    /// The WebDriver's answer to a command, an error included.
    fn try_call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body),
        };
        let value: Value = request.send().unwrap().json().unwrap();
        value["value"].clone()
    }

    pub fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    pub fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        found
            .as_object()
            .and_then(|object| object.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        );
    }

    pub fn click(&self, css: &str) {
        let element = self.element(css);
        self.call("POST", &format!("/element/{element}/click"), json!({}));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's text as shown. A page that is being replaced (a form just posted) can drop
    /// its body between finding it and reading it: that is read again, from the new page.
    pub fn text(&self) -> String {
        let started = Instant::now();
        loop {
            let body = self.element("body");
            let text = self.try_call("GET", &format!("/element/{body}/text"), Value::Null);
            match text.get("error").and_then(Value::as_str) {
                Some("stale element reference") if started.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Some(_) => panic!("the page's text: {text}"),
                None => return text.as_str().unwrap_or_default().to_owned(),
            }
        }
    }

    /// Waits (10 s at most) until the page's address ends with `suffix`.
    pub fn wait_for_url(&self, suffix: &str) -> String {
        let started = Instant::now();
        loop {
            let url = self.url();
            // The address changes before the new page has loaded: wait for both.
            if url.ends_with(suffix)
                && self.call(
                    "POST",
                    "/execute/sync",
                    json!({ "script": "return document.readyState", "args": [] }),
                ) == "complete"
            {
                return url;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "still at {url}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (10 s at most) until an element matches `css`.
    pub fn wait_for(&self, css: &str) {
        let started = Instant::now();
        loop {
            let url = format!("{}/session/{}/element", self.base, self.session);
            let found: Value = self
                .http
                .post(url)
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .unwrap()
                .json()
                .unwrap();
            if found["value"].get("error").is_none() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no {css} on {}:\n{}",
                self.url(),
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The text of the first element `css` matches, as shown.
    pub fn text_of(&self, css: &str) -> String {
        let element = self.element(css);
        self.call("GET", &format!("/element/{element}/text"), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// What `script` (a function body) returns in the page.
    pub fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    /// Resizes the window (a phone's width, or tall enough for a whole page).
    pub fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            json!({ "width": width, "height": height }),
        );
    }

    /// Keeps a screenshot of the page as a test artifact.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let png = self.call("GET", "/screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or_default())
            .unwrap();
        fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
