//! `nurture.toml` and its environment overrides.
//!
//! Every setting has an embedded default, so a fresh checkout runs with no file at all. A file
//! (`--config`, `NURTURE_CONFIG`, or `./nurture.toml` when present) overrides the defaults, and
//! an environment variable `NURTURE_<SECTION>_<KEY>` overrides the file: `NURTURE_STORE_PATH`,
//! `NURTURE_TRANSPORT_OUTBOX`, `NURTURE_DAEMON_BATCH`… The variable is parsed as the type of the
//! setting it replaces.
//!
//! Settings are checked like workflows, and the same way for `nurture check` and `nurture run`:
//! an unknown section, key or `NURTURE_*` variable, a value of the wrong type and a value out of
//! its range (`daemon.batch = 0`, an `http.listen` that is not an address) are errors, all
//! reported at once, each at its line in the file (or naming its variable) with the closest
//! name or the range. `NURTURE_CONFIG`, `NURTURE_WORKFLOWS` and `NURTURE_TEMPLATES` belong to
//! the command line, `NURTURE_BENCH_*` to the benchmarks, and a variable a setting names
//! (`password_env`, `secret_env`) holds a secret: none of those is an unknown setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, did_you_mean};

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_FILE: &str = "nurture.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub store: StoreConfig,
    pub transport: TransportConfig,
    pub smtp: SmtpConfig,
    pub limits: Limits,
    pub http: HttpConfig,
    pub imap: ImapConfig,
    pub daemon: DaemonConfig,
    pub log: LogConfig,
    /// Webhooks out (`[[webhooks]]`, one entry per receiving URL; see `crate::webhooks`).
    pub webhooks: Vec<WebhookConfig>,
    /// Web forms served at `POST /forms/<name>` (`[[forms]]` in the file).
    pub forms: Vec<FormConfig>,
    /// When soft bounces add up to an undeliverable address (`[bounces]`).
    pub bounces: BouncesConfig,
    /// DKIM signing of outgoing emails (`[dkim]`; see `crate::mail::dkim`).
    pub dkim: DkimConfig,
}

/// DKIM signing: all three set, or none (no signing).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DkimConfig {
    /// The selector: the key is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// The signing domain (`d=`), usually the sender address's domain.
    pub domain: String,
    /// The private key, PEM (RSA or Ed25519); read when the daemon starts.
    pub key_file: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The sled database directory; with `url` set, only the folder of the control socket.
    pub path: PathBuf,
    /// sled's page cache, in MiB; 0: sized from the store when it opens ([`crate::store::cache`]).
    pub cache_mb: u64,
    /// A PostgreSQL database (`postgres://user@host:port/db`, `?sslmode=require` for TLS)
    /// instead of sled: several daemons may share it. Empty: the sled store in `path`.
    pub url: String,
    /// The database password: the first line of this file, or the variable `password_env`
    /// names (never in the URL).
    pub password_file: String,
    pub password_env: String,
    /// Extra CA certificates (PEM) to trust for `sslmode=require`, beside Mozilla's roots.
    pub ca_file: String,
    /// With `url`: how long a daemon's claim on due work holds, so how long the other daemons
    /// wait before they take over the work of one that died.
    pub lease_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// `file` writes each email as an `.eml` into `outbox`.
    pub kind: TransportKind,
    pub outbox: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    File,
    Smtp,
}

/// The SMTP server emails are handed to when `transport.kind = "smtp"`.
///
/// The password is never a setting: it is read from the file `password_file` or the environment
/// variable named by `password_env`, so a config file can be shared and logged without it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://host[:port]` (port 25 by default; see `tls`) or `smtps://host[:port]` (implicit
    /// TLS from the first byte, port 465 by default).
    pub url: String,
    /// The name this host gives in EHLO.
    pub hello: String,
    /// At most this many messages in flight at once, each on its own connection.
    pub connections: usize,
    pub timeout_seconds: u64,
    /// For `smtp://`: `none`, or `starttls`: encrypt the session after EHLO, verifying the
    /// server's certificate against the Mozilla roots (and `ca_file`, if set). `smtps://` is
    /// always encrypted and verified the same way.
    pub tls: TlsMode,
    /// A PEM file of extra trusted certificates (a private relay's own CA).
    pub ca_file: String,
    /// The login for SMTP AUTH (PLAIN or LOGIN); empty: no authentication.
    pub user: String,
    /// A file whose first line is the password (e.g. a mounted secret).
    pub password_file: String,
    /// Or: the name of an environment variable holding the password.
    pub password_env: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    None,
    Starttls,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            url: "smtp://127.0.0.1:25".into(),
            hello: "localhost".into(),
            connections: 4,
            timeout_seconds: 30,
            tls: TlsMode::None,
            ca_file: String::new(),
            user: String::new(),
            password_file: String::new(),
            password_env: String::new(),
        }
    }
}

/// The daemon's HTTP server (`daemon::http`): one-click unsubscribe, the `/v1` API, web forms
/// and opt-in confirmation; the key of signed links (`crate::token`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the daemon serves, e.g. `127.0.0.1:8025`; empty: no server.
    pub listen: String,
    /// The public `https://` address that reaches `listen` (through your TLS proxy); empty: no
    /// one-click links, only the `mailto:` one.
    pub base_url: String,
    /// A file holding the key of signed links (at least 16 bytes).
    pub secret_file: String,
    /// Or: the name of an environment variable holding it. Neither: a random key is made on
    /// first start and kept in the store.
    pub secret_env: String,
    /// API keys for `/v1`, one a line (blank lines and `#` comments skipped). Neither this nor
    /// `api_key_env`: no API.
    pub api_key_file: String,
    /// Or: the name of an environment variable holding the keys (separated by commas).
    pub api_key_env: String,
    /// The status page's password (`GET /`), one line, at least 12 characters: it opens the
    /// page and nothing else. The API keys open it too; neither: no page.
    pub page_password_file: String,
    /// Requests per second one API key may make (bursts up to as many); 0: no limit.
    pub api_requests_per_second: u32,
    /// The largest API request body, in bytes.
    pub api_max_body_bytes: usize,
    /// A request that takes longer is answered 408.
    pub timeout_seconds: u64,
    /// The header a proxy in front puts the client's address in (`X-Forwarded-For`: its last
    /// entry counts); empty: the address of the connection. For the forms' per-address limit.
    pub client_ip_header: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: String::new(),
            base_url: String::new(),
            secret_file: String::new(),
            secret_env: String::new(),
            api_key_file: String::new(),
            api_key_env: String::new(),
            page_password_file: String::new(),
            api_requests_per_second: 1000,
            api_max_body_bytes: 64 * 1024,
            timeout_seconds: 30,
            client_ip_header: String::new(),
        }
    }
}

/// One web form (`[[forms]]`): what `POST /forms/<name>` takes from a plain HTML form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FormConfig {
    /// In the URL: letters, digits, `-` and `_`.
    pub name: String,
    /// Form field → lead field (`email`, `first_name`, `company`, an attribute name…). Fields
    /// not named here are ignored; one must map to `email`.
    pub fields: std::collections::BTreeMap<String, String>,
    /// The lead's source, when it has none yet.
    pub source: String,
    /// Tags every lead from this form gets.
    pub tags: Vec<String>,
    /// Pages allowed to post (`https://www.example.com`), checked against `Origin` (or
    /// `Referer`); empty: any.
    pub allowed_origins: Vec<String>,
    /// Where the browser goes after a sign-up (303).
    pub thank_you_url: String,
    /// Where it goes when the input is refused (303, with `?error=<code>&field=<field>`).
    pub error_url: String,
    /// A field people leave empty and bots fill: a post with it filled is dropped quietly
    /// (and still sent to the thank-you page). Empty: none.
    pub honeypot: String,
    /// Posts one client address may make to this form per minute; 0: no limit.
    pub per_address_per_minute: u32,
    /// The largest body this form takes, in bytes.
    pub max_body_bytes: usize,
    /// Keep sign-ups unconfirmed until the link in a confirmation email is followed.
    pub double_opt_in: bool,
    /// The template of the confirmation email (`templates/<name>.html.hbs` and `.txt.hbs`).
    pub confirm_template: String,
    /// Its subject (handlebars, like a workflow's).
    pub confirm_subject: String,
    /// Its sender, `Name <address>`.
    pub confirm_from: String,
    /// An unconfirmed sign-up is dropped after this many hours.
    pub confirm_within_hours: u32,
    /// Where the browser goes once confirmed (303); empty: a page of the daemon's.
    pub confirmed_url: String,
    /// The version of the consent text the form shows, recorded with the consent.
    pub consent_version: String,
}

impl Default for FormConfig {
    fn default() -> Self {
        FormConfig {
            name: String::new(),
            fields: std::collections::BTreeMap::new(),
            source: String::new(),
            tags: Vec::new(),
            allowed_origins: Vec::new(),
            thank_you_url: String::new(),
            error_url: String::new(),
            honeypot: String::new(),
            per_address_per_minute: 10,
            max_body_bytes: 16 * 1024,
            double_opt_in: false,
            confirm_template: "confirm".into(),
            confirm_subject: "Please confirm your subscription".into(),
            confirm_from: String::new(),
            confirm_within_hours: 72,
            confirmed_url: String::new(),
            consent_version: String::new(),
        }
    }
}

impl FormConfig {
    /// What is wrong with this form's settings, in words that name the setting.
    pub fn problems(&self) -> Vec<String> {
        let at = |key: &str| format!("[[forms]] `{}`: {key}", self.name);
        let mut problems = Vec::new();
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(format!(
                "[[forms]] name `{}`: use letters, digits, `-` and `_`",
                self.name
            ));
        }
        if !self.fields.values().any(|field| field == "email") {
            problems.push(format!("{}: no form field maps to `email`", at("fields")));
        }
        for (key, url) in [
            ("thank_you_url", &self.thank_you_url),
            ("error_url", &self.error_url),
        ] {
            if url.is_empty() {
                problems.push(format!("{}: where should the browser go?", at(key)));
            }
        }
        if self.double_opt_in {
            if crate::workflow::Mailbox::parse(&self.confirm_from).is_err() {
                problems.push(format!(
                    "{}: `{}` is not `Name <address>` or an address",
                    at("confirm_from"),
                    self.confirm_from
                ));
            }
            if self.confirm_within_hours == 0 {
                problems.push(format!(
                    "{}: must be at least 1",
                    at("confirm_within_hours")
                ));
            }
        }
        problems
    }
}

/// The inbox the daemon watches for replies, auto-replies, bounces and unsubscribe mail
/// (`daemon::inbox`). The reply-to address of the workflows must deliver into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapConfig {
    /// `imap://host[:port]` (port 143; see `tls`) or `imaps://host[:port]` (implicit TLS,
    /// port 993). Empty: no inbox is watched.
    pub url: String,
    /// For `imap://`: `none` or `starttls` (verified like SMTP's; no fallback to plain).
    pub tls: TlsMode,
    /// A PEM file of extra trusted certificates.
    pub ca_file: String,
    pub user: String,
    /// A file whose first line is the password, or the name of a variable holding it.
    pub password_file: String,
    pub password_env: String,
    /// The folder to watch.
    pub mailbox: String,
    /// IDLE is re-issued after this many seconds (servers drop it after 30 minutes).
    pub idle_seconds: u64,
    /// Without IDLE on the server: look for new mail this often.
    pub poll_seconds: u64,
    pub timeout_seconds: u64,
    /// More folders to watch (one per sender whose replies land elsewhere), each with the
    /// settings above from `url` to `mailbox`; `[[imap.accounts]]` in the file.
    pub accounts: Vec<ImapAccount>,
}

/// One more watched folder (`[[imap.accounts]]`): the same keys as `[imap]`'s own account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapAccount {
    pub url: String,
    pub tls: TlsMode,
    pub ca_file: String,
    pub user: String,
    pub password_file: String,
    pub password_env: String,
    pub mailbox: String,
}

impl Default for ImapAccount {
    fn default() -> Self {
        let top = ImapConfig::default();
        ImapAccount {
            url: top.url,
            tls: top.tls,
            ca_file: top.ca_file,
            user: top.user,
            password_file: top.password_file,
            password_env: top.password_env,
            mailbox: top.mailbox,
        }
    }
}

impl ImapConfig {
    /// Every folder to watch: `[imap]`'s own (when its `url` is set), then the others.
    pub fn all_accounts(&self) -> Vec<ImapAccount> {
        let own = ImapAccount {
            url: self.url.clone(),
            tls: self.tls,
            ca_file: self.ca_file.clone(),
            user: self.user.clone(),
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
            mailbox: self.mailbox.clone(),
        };
        std::iter::once(own)
            .filter(|own| !own.url.is_empty())
            .chain(self.accounts.iter().cloned())
            .collect()
    }
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            url: String::new(),
            tls: TlsMode::None,
            ca_file: String::new(),
            user: String::new(),
            password_file: String::new(),
            password_env: String::new(),
            mailbox: "INBOX".into(),
            idle_seconds: 25 * 60,
            poll_seconds: 60,
            timeout_seconds: 30,
            accounts: Vec::new(),
        }
    }
}

/// Sending limits (see `daemon::throttle`); 0 means none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Emails per sender address in any 60 seconds.
    pub per_minute: usize,
    /// Emails per sender address in any 24 hours.
    pub per_day: usize,
    /// Emails to one recipient domain (all senders together) in any 24 hours.
    pub per_domain_per_day: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Enrollments advanced per store transaction; also the most emails handed to the
    /// transport under one durable in-flight mark (a crash leaves at most two uncertain).
    pub batch: usize,
    /// How long a graceful stop may take before the daemon exits anyway, in seconds.
    pub shutdown_seconds: u64,
    /// How often the workflow and template folders are looked at for changes, in seconds
    /// (0: only on SIGHUP).
    pub watch_seconds: u64,
    /// Rehearsal: start the clock at this instant (RFC 3339) instead of now. Empty: the
    /// system clock. For watching a sequence play out against the file transport.
    pub rehearsal_start: String,
    /// Rehearsal: how many times faster than real time the clock runs.
    pub rehearsal_speed: u32,
}

/// One receiver of webhooks (`[[webhooks]]`): the events it wants, signed with its secret
/// (Standard Webhooks), retried with backoff until delivered or given up. Set in the file only:
/// environment variables do not reach a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// The `http://` or `https://` address nurture POSTs to.
    pub url: String,
    /// Event types (`lead.promoted`, `lead.unsubscribed`, …: `crate::webhooks::EVENTS`), or
    /// `"*"` for all.
    pub events: Vec<String>,
    /// A file whose first line is the secret: `whsec_` + base64 of 24–64 random bytes.
    pub secret_file: String,
    /// Or: the name of an environment variable holding it.
    pub secret_env: String,
    /// One attempt may take this long (connecting, sending, the answer).
    pub timeout_seconds: u64,
    /// The first retry waits this long; each further one twice as long, up to
    /// `retry_max_seconds` (each stretched by up to a quarter).
    pub retry_min_seconds: u64,
    pub retry_max_seconds: u64,
    /// Given up after this many attempts, or once the event is this many hours old, whichever
    /// comes first; kept as failed (`nurture webhooks`, `nurture webhooks retry`).
    pub max_attempts: u32,
    pub give_up_hours: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            url: String::new(),
            events: Vec::new(),
            secret_file: String::new(),
            secret_env: String::new(),
            timeout_seconds: 10,
            retry_min_seconds: 5,
            retry_max_seconds: 3600,
            max_attempts: 40,
            give_up_hours: 72,
        }
    }
}

/// When soft bounces (a full or disabled mailbox, a timeout: not the address's own failure,
/// not the sender's) add up to an undeliverable address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BouncesConfig {
    /// This many soft bounces of one lead within the window suppress it (0: never).
    pub soft_limit: u32,
    /// The window, in days, counted back from the latest soft bounce.
    pub soft_window_days: u32,
}

impl Default for BouncesConfig {
    fn default() -> Self {
        BouncesConfig {
            soft_limit: 3,
            soft_window_days: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `nurture=debug`, …
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("data"),
            cache_mb: 0,
            url: String::new(),
            password_file: String::new(),
            password_env: String::new(),
            ca_file: String::new(),
            lease_seconds: crate::store::postgres::DEFAULT_LEASE.as_secs(),
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            kind: TransportKind::File,
            outbox: PathBuf::from("outbox"),
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            batch: 256,
            shutdown_seconds: 10,
            watch_seconds: 2,
            rehearsal_start: String::new(),
            rehearsal_speed: 1,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Every problem found, each pointing at its line in the file or naming its variable.
    #[error("invalid settings (every setting is described in nurture.example.toml):\n{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    rendered.join("\n").trim_end().to_string()
}

/// Variables named `NURTURE_…` that are not settings: the command line's own
/// (`--config`, `--workflows`, `--templates`).
const COMMAND_LINE_VARIABLES: [&str; 3] =
    ["NURTURE_CONFIG", "NURTURE_WORKFLOWS", "NURTURE_TEMPLATES"];

/// Variables with this prefix belong to the benchmarks (`cargo bench`), which start nurture
/// with their own environment.
const BENCH_PREFIX: &str = "NURTURE_BENCH_";

/// Where each setting in the file is, for pointing at it: section, key, value span.
#[derive(Default, Deserialize)]
struct Spans(BTreeMap<String, SectionSpans>);

/// A section's keys with their places; a list of tables (`[[webhooks]]`) is checked by its own
/// types and carries no places here.
enum SectionSpans {
    Keys(BTreeMap<String, toml::Spanned<toml::Value>>),
    List,
}

// By hand rather than `#[serde(untagged)]`: untagged buffers the values, which loses the
// places `toml::Spanned` reads from the file's own deserializer.
impl<'de> Deserialize<'de> for SectionSpans {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SectionSpans;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table or a list of tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SectionSpans, A::Error> {
                let mut keys = BTreeMap::new();
                while let Some((key, value)) = map.next_entry()? {
                    keys.insert(key, value);
                }
                Ok(SectionSpans::Keys(keys))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SectionSpans, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(SectionSpans::List)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Spans {
    /// Where `section.key`'s value is in the file.
    fn get(&self, section: &str, key: &str) -> Option<&toml::Spanned<toml::Value>> {
        match self.0.get(section)? {
            SectionSpans::Keys(keys) => keys.get(key),
            SectionSpans::List => None,
        }
    }
}

impl Config {
    /// The configuration: defaults, then the file (`explicit`, or `./nurture.toml` if it
    /// exists), then the environment.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        // `vars_os`: a variable that is not Unicode (anyone's) must not stop nurture.
        let variables: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
            .filter(|(name, _)| name.starts_with("NURTURE_"))
            .map(|(name, value)| (name, value.to_string_lossy().into_owned()))
            .collect();
        let (path, text) = match explicit {
            Some(path) => (path.to_path_buf(), read(path)?),
            None if Path::new(DEFAULT_FILE).exists() => {
                (PathBuf::from(DEFAULT_FILE), read(Path::new(DEFAULT_FILE))?)
            }
            None => (PathBuf::from("(defaults)"), String::new()),
        };
        Config::from_parts(&path, &text, &variables)
    }

    /// Builds a configuration from file text and `NURTURE_*` variables, and checks it: unknown
    /// sections, keys and variables, values of the wrong type and values out of range are
    /// errors, all reported at once.
    pub fn from_parts(
        path: &Path,
        text: &str,
        variables: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let located = |error: toml::de::Error| {
            let diagnostic = Diagnostic::error(error.message().trim().to_string());
            match error.span() {
                Some(span) => diagnostic.at(path, text, span),
                None => diagnostic.in_file(path),
            }
        };
        let file: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(vec![located(e)]))?;
        // Start from the defaults so every key exists, with its type, for the overrides.
        let mut merged =
            toml::Table::try_from(Config::default()).expect("the default configuration serializes");
        // Where each key of the file is; a file whose top level is not all tables has none, and
        // is reported below.
        let spans: Spans = toml::from_str(text).unwrap_or_default();
        let unknown = unknown_keys(path, text, &file, &merged, &spans);
        if !unknown.is_empty() {
            return Err(ConfigError::Invalid(unknown));
        }
        // The file alone, typed: a wrong type or an unknown value is reported at its place.
        toml::from_str::<Config>(text).map_err(|e| ConfigError::Invalid(vec![located(e)]))?;
        for (section, values) in file {
            match (merged.get_mut(&section), values) {
                (Some(toml::Value::Table(into)), toml::Value::Table(values)) => into.extend(values),
                // A list of tables (`[[webhooks]]`, `[[forms]]`): the file's list replaces the default.
                (Some(toml::Value::Array(into)), toml::Value::Array(values)) => *into = values,
                // Anything else was reported by `unknown_keys` or the typed parse above.
                _ => {}
            }
        }
        let mut problems = Vec::new();
        let mut set_by = BTreeMap::new();
        let mut unclaimed = Vec::new();
        for (name, value) in variables {
            match apply_override(&mut merged, name, value) {
                Ok(Some(setting)) => {
                    set_by.insert(setting, name.clone());
                }
                Ok(None) => unclaimed.push(name.as_str()),
                Err(message) => problems.push(Diagnostic::error(message)),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let config = Config::deserialize(toml::Value::Table(merged)).map_err(|e| {
            let names: Vec<String> = set_by.values().cloned().collect();
            ConfigError::Invalid(vec![Diagnostic::error(format!(
                "the environment ({}): {e}",
                names.join(", ")
            ))])
        })?;
        problems.extend(unknown_variables(&config, &unclaimed));
        let origins = Origins {
            path,
            text,
            spans: &spans,
            set_by: &set_by,
        };
        problems.extend(
            out_of_range(&config)
                .into_iter()
                .map(|problem| origins.diagnostic(problem)),
        );
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// sled's page cache for the store in `[store] path`.
    pub fn cache_bytes(&self) -> u64 {
        crate::store::cache::cache_bytes(self.store.cache_mb, &self.store.path)
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// Sections and keys of the file that are not settings, each at its place with the closest
/// name.
fn unknown_keys(
    path: &Path,
    text: &str,
    file: &toml::Table,
    defaults: &toml::Table,
    spans: &Spans,
) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    for (section, values) in file {
        let known = match defaults.get(section) {
            Some(toml::Value::Table(known)) => known,
            // A list of tables: its entries are checked by their own types.
            Some(toml::Value::Array(_)) => {
                if !values.is_array() {
                    problems.push(
                        Diagnostic::error(format!(
                            "`{section}` must be a list of tables: `[[{section}]]`, one per entry"
                        ))
                        .in_file(path),
                    );
                }
                continue;
            }
            _ => {
                let written = section_name(section, values);
                let header = text.find(&written);
                let diagnostic = Diagnostic::error(format!("unknown section `{written}`"));
                let diagnostic = match header {
                    Some(at) => diagnostic.at(path, text, at..at + written.len()),
                    None => diagnostic.in_file(path),
                };
                let hint = match did_you_mean(section, defaults.keys().map(String::as_str)) {
                    Some(close) => {
                        format!("did you mean `{}`?", section_name(close, &defaults[close]))
                    }
                    None => format!("the sections are {}", section_names(defaults)),
                };
                problems.push(diagnostic.with_hint(hint));
                continue;
            }
        };
        let toml::Value::Table(values) = values else {
            problems.push(
                Diagnostic::error(format!("`{section}` must be a table: `[{section}]`"))
                    .in_file(path),
            );
            continue;
        };
        for key in values.keys().filter(|key| !known.contains_key(*key)) {
            let diagnostic = Diagnostic::error(format!("unknown setting `{section}.{key}`"));
            let span = spans.get(section, key);
            let diagnostic = match span {
                Some(value) => diagnostic.at(path, text, key_span(text, value.span(), key)),
                None => diagnostic.in_file(path),
            };
            let hint = match did_you_mean(key, known.keys().map(String::as_str)) {
                Some(close) => format!("did you mean `{close}`?"),
                None => {
                    let keys: Vec<String> = known.keys().map(|k| format!("`{k}`")).collect();
                    format!("the settings of [{section}] are {}", keys.join(", "))
                }
            };
            problems.push(diagnostic.with_hint(hint));
        }
    }
    problems
}

/// The span of `key` on the line where its value starts, or the value's span.
fn key_span(text: &str, value: std::ops::Range<usize>, key: &str) -> std::ops::Range<usize> {
    let line_start = text[..value.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = &text[line_start..];
    let indent = line.len() - line.trim_start().len();
    if line.trim_start().starts_with(key) {
        let start = line_start + indent;
        start..start + key.len()
    } else {
        value
    }
}

/// A section as a file writes it: `[smtp]`, or `[[webhooks]]` for a list of tables.
fn section_name(section: &str, value: &toml::Value) -> String {
    match value {
        toml::Value::Array(_) => format!("[[{section}]]"),
        _ => format!("[{section}]"),
    }
}

fn section_names(defaults: &toml::Table) -> String {
    let names: Vec<String> = defaults.iter().map(|(k, v)| section_name(k, v)).collect();
    names.join(", ")
}

/// Applies `NURTURE_SECTION_KEY=value`, typed like the setting it replaces; returns the
/// setting's section and key, or `None` when the variable names no setting.
fn apply_override(
    merged: &mut toml::Table,
    name: &str,
    value: &str,
) -> Result<Option<(String, String)>, String> {
    let Some(rest) = name.strip_prefix("NURTURE_") else {
        return Ok(None);
    };
    let rest = rest.to_ascii_lowercase();
    for (section, table) in merged.iter_mut() {
        let Some(key) = rest.strip_prefix(&format!("{section}_")) else {
            continue;
        };
        let toml::Value::Table(table) = table else {
            continue;
        };
        let Some(current) = table.get(key) else {
            continue;
        };
        let error = |message: &str| format!("environment variable {name}={value:?}: {message}");
        let replacement = match current {
            toml::Value::Integer(_) => toml::Value::Integer(
                value
                    .trim()
                    .parse()
                    .map_err(|_| error("expected a whole number"))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(
                value
                    .trim()
                    .parse()
                    .map_err(|_| error("expected true or false"))?,
            ),
            // `[[imap.accounts]]`: a list of tables, set in the file only.
            toml::Value::Array(_) => return Ok(None),
            _ => toml::Value::String(value.to_string()),
        };
        table.insert(key.to_string(), replacement);
        return Ok(Some((section.clone(), key.to_string())));
    }
    Ok(None)
}

/// `NURTURE_*` variables that are neither a setting, nor the command line's, nor the
/// benchmarks', nor a password or key variable the settings name (`password_env =
/// "NURTURE_SMTP_PASSWORD"`): a misspelled setting would otherwise be ignored in silence.
fn unknown_variables(config: &Config, unclaimed: &[&str]) -> Vec<Diagnostic> {
    let mut named: Vec<&str> = vec![
        config.smtp.password_env.as_str(),
        config.imap.password_env.as_str(),
        config.store.password_env.as_str(),
        config.http.secret_env.as_str(),
        config.http.api_key_env.as_str(),
    ];
    named.extend(config.imap.accounts.iter().map(|a| a.password_env.as_str()));
    named.extend(config.webhooks.iter().map(|w| w.secret_env.as_str()));
    let mut candidates = setting_variables();
    candidates.extend(COMMAND_LINE_VARIABLES.map(String::from));
    unclaimed
        .iter()
        .filter(|name| {
            name.starts_with("NURTURE_")
                && !COMMAND_LINE_VARIABLES.contains(name)
                && !name.starts_with(BENCH_PREFIX)
                && !named.contains(name)
        })
        .map(|name| {
            // Jaro-Winkler weighs the start of a name: `NURTURE_STORE_PTH` is closest to
            // `NURTURE_STORE_PATH`, which Levenshtein would rank below `NURTURE_SMTP_URL`.
            let similarity = |candidate: &String| {
                strsim::jaro_winkler(&name["NURTURE_".len()..], &candidate["NURTURE_".len()..])
            };
            let closest = candidates
                .iter()
                .max_by(|a, b| similarity(a).total_cmp(&similarity(b)))
                .cloned()
                .unwrap_or_default();
            Diagnostic::error(format!(
                "environment variable {name} is not a setting; did you mean {closest}?"
            ))
            .with_hint(
                "settings are NURTURE_<SECTION>_<KEY>, e.g. NURTURE_DAEMON_BATCH for `batch` in [daemon]",
            )
        })
        .collect()
}

/// Every variable that sets a setting: `NURTURE_STORE_PATH`, `NURTURE_DAEMON_BATCH`, …
fn setting_variables() -> Vec<String> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
    let mut names = Vec::new();
    for (section, values) in &defaults {
        if let toml::Value::Table(values) = values {
            for (key, value) in values {
                if !value.is_array() {
                    names.push(format!("NURTURE_{section}_{key}").to_ascii_uppercase());
                }
            }
        }
    }
    names
}

/// A value out of its range: the setting, what is wrong, and why the range is what it is.
struct Problem {
    section: &'static str,
    key: &'static str,
    message: String,
    hint: String,
}

/// Values that parse but that `nurture run` cannot work with (or would work badly with: a
/// batch of 0 spins the daemon sending nothing).
fn out_of_range(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut within =
        |section, key, value: u64, range: std::ops::RangeInclusive<u64>, hint: &str| {
            if !range.contains(&value) {
                problems.push(Problem {
                    section,
                    key,
                    message: format!(
                        "`{section}.{key}` is {value}; it must be from {} to {}",
                        range.start(),
                        range.end()
                    ),
                    hint: hint.to_string(),
                });
            }
        };
    let size = |n: usize| n as u64;
    within(
        "store",
        "lease_seconds",
        config.store.lease_seconds,
        1..=86_400,
        "how long a claim on due work holds; 60 suits most",
    );
    within(
        "store",
        "cache_mb",
        config.store.cache_mb,
        0..=65_536,
        "sled's page cache in MiB; 0 sizes it from the store (16 to 128), 16 serves a million leads",
    );
    within(
        "smtp",
        "connections",
        size(config.smtp.connections),
        1..=100,
        "with 0 nothing is ever sent",
    );
    within(
        "smtp",
        "timeout_seconds",
        config.smtp.timeout_seconds,
        1..=600,
        "how long to wait for the SMTP server before retrying later",
    );
    within(
        "imap",
        "idle_seconds",
        config.imap.idle_seconds,
        10..=29 * 60,
        "servers end IDLE after 30 minutes (RFC 2177 asks to renew within 29)",
    );
    within(
        "imap",
        "poll_seconds",
        config.imap.poll_seconds,
        1..=86_400,
        "how often to look for mail when the server has no IDLE",
    );
    within(
        "imap",
        "timeout_seconds",
        config.imap.timeout_seconds,
        1..=600,
        "how long to wait for the IMAP server before reconnecting",
    );
    within(
        "daemon",
        "batch",
        size(config.daemon.batch),
        1..=10_000,
        "a batch of 0 advances no enrollment and spins the daemon; a large one leaves more emails uncertain after a crash",
    );
    within(
        "daemon",
        "shutdown_seconds",
        config.daemon.shutdown_seconds,
        1..=3_600,
        "how long a graceful stop may take; 0 would make every stop a crash",
    );
    within(
        "daemon",
        "watch_seconds",
        config.daemon.watch_seconds,
        0..=86_400,
        "0 reloads on SIGHUP only",
    );
    within(
        "daemon",
        "rehearsal_speed",
        u64::from(config.daemon.rehearsal_speed),
        1..=1_000_000_000,
        "how many times faster than real time a rehearsal runs",
    );
    let mut problem = |section, key, message: String, hint: &str| {
        problems.push(Problem {
            section,
            key,
            message,
            hint: hint.to_string(),
        });
    };
    if config.store.path.as_os_str().is_empty() {
        problem(
            "store",
            "path",
            "`store.path` is empty".into(),
            "the folder of the store, e.g. \"data\"",
        );
    }
    if config.transport.outbox.as_os_str().is_empty() {
        problem(
            "transport",
            "outbox",
            "`transport.outbox` is empty".into(),
            "the folder the file transport writes emails into, e.g. \"outbox\"",
        );
    }
    let listen = config.http.listen.trim();
    if !listen.is_empty() {
        match listen.parse::<std::net::SocketAddr>() {
            Err(_) => problem(
                "http",
                "listen",
                format!("`http.listen` = {listen:?} is not an IP address and port"),
                "write e.g. \"127.0.0.1:8025\" (IPv6: \"[::1]:8025\"); host names are not looked up",
            ),
            Ok(address) if address.port() == 0 => problem(
                "http",
                "listen",
                format!("`http.listen` = {listen:?} has port 0"),
                "port 0 would listen on a random port your proxy cannot know; choose one, e.g. 8025",
            ),
            Ok(_) => {}
        }
    }
    let start = config.daemon.rehearsal_start.trim();
    if !start.is_empty() && chrono::DateTime::parse_from_rfc3339(start).is_err() {
        problem(
            "daemon",
            "rehearsal_start",
            format!("`daemon.rehearsal_start` = {start:?} is not an RFC 3339 time"),
            "write e.g. \"2026-11-23T09:00:00Z\", or leave it empty for the system clock",
        );
    }
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&config.log.level) {
        problem(
            "log",
            "level",
            format!(
                "`log.level` = {:?} is not a log filter: {error}",
                config.log.level
            ),
            "write e.g. \"info\", \"warn\" or \"nurture=debug\"",
        );
    }
    problems
}

/// Where settings came from, for pointing at a problem: the variable that set it, else its
/// line in the file.
struct Origins<'a> {
    path: &'a Path,
    text: &'a str,
    spans: &'a Spans,
    set_by: &'a BTreeMap<(String, String), String>,
}

impl Origins<'_> {
    fn diagnostic(&self, problem: Problem) -> Diagnostic {
        let setting = (problem.section.to_string(), problem.key.to_string());
        let span = self.spans.get(problem.section, problem.key);
        let diagnostic = match (self.set_by.get(&setting), span) {
            (Some(variable), _) => Diagnostic::error(format!(
                "{} (set by the environment variable {variable})",
                problem.message
            )),
            (None, Some(value)) => {
                Diagnostic::error(problem.message).at(self.path, self.text, value.span())
            }
            (None, None) => Diagnostic::error(problem.message),
        };
        diagnostic.with_hint(problem.hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_file_means_the_embedded_defaults() {
        let config = Config::from_parts(Path::new("x"), "", &[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.store.path, PathBuf::from("data"));
        assert_eq!(config.transport.outbox, PathBuf::from("outbox"));
        assert_eq!(config.store.cache_mb, 0, "sized from the store");
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let text = "[store]\npath = \"/srv/nurture\"\ncache_mb = 32\n[daemon]\nbatch = 10\n";
        let env = vars(&[
            ("NURTURE_STORE_CACHE_MB", "16"),
            ("NURTURE_TRANSPORT_OUTBOX", "/tmp/out"),
            ("NURTURE_WORKFLOWS", "elsewhere"),
        ]);
        let config = Config::from_parts(Path::new("n.toml"), text, &env).unwrap();
        assert_eq!(config.store.path, PathBuf::from("/srv/nurture"));
        assert_eq!(config.store.cache_mb, 16);
        assert_eq!(config.daemon.batch, 10);
        assert_eq!(config.transport.outbox, PathBuf::from("/tmp/out"));
    }

    #[test]
    fn the_shipped_example_is_the_defaults_plus_the_example_form() {
        let text = include_str!("../nurture.example.toml");
        let mut config = Config::from_parts(Path::new("nurture.example.toml"), text, &[]).unwrap();
        let forms = std::mem::take(&mut config.forms);
        assert_eq!(config, Config::default());
        // The form examples/signup.html posts to, every key written out.
        assert_eq!(forms.len(), 1);
        let form = &forms[0];
        assert_eq!(form.name, "signup");
        assert!(form.double_opt_in);
        assert_eq!(form.fields["email"], "email");
        assert_eq!(form.problems(), Vec::<String>::new());
        let written: toml::Table = toml::from_str(text).unwrap();
        let keys = written["forms"].as_array().unwrap()[0]
            .as_table()
            .unwrap()
            .len();
        let all = toml::Table::try_from(FormConfig::default()).unwrap().len();
        assert_eq!(keys, all, "every form setting is in the example");
    }

    #[test]
    fn forms_are_a_list_of_tables_and_their_mistakes_are_named() {
        let text = "[[forms]]\nname = \"a b\"\nthank_you_url = \"x\"\n";
        let config = Config::from_parts(Path::new("n.toml"), text, &[]).unwrap();
        let problems = config.forms[0].problems().join("\n");
        assert!(problems.contains("name `a b`"), "{problems}");
        assert!(problems.contains("maps to `email`"), "{problems}");
        assert!(problems.contains("error_url"), "{problems}");
        let error = Config::from_parts(Path::new("n.toml"), "[forms]\nname = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("`[[forms]]`"), "{error}");
        let error = Config::from_parts(Path::new("n.toml"), "[[forms]]\nnaem = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("naem"), "{error}");
    }

    #[test]
    fn webhooks_are_a_list_of_tables_with_defaults_per_entry() {
        let text = "[[webhooks]]\nurl = \"https://crm.example/hook\"\nevents = [\"lead.promoted\"]\nsecret_env = \"CRM_SECRET\"\n\n[[webhooks]]\nurl = \"http://127.0.0.1:9000/\"\nevents = [\"*\"]\nsecret_file = \"/run/secrets/hook\"\nmax_attempts = 3\n";
        let config = Config::from_parts(Path::new("n.toml"), text, &[]).unwrap();
        assert_eq!(config.webhooks.len(), 2);
        assert_eq!(config.webhooks[0].events, ["lead.promoted"]);
        assert_eq!(config.webhooks[0].timeout_seconds, 10);
        assert_eq!(config.webhooks[1].max_attempts, 3);
        assert_eq!(config.webhooks[1].retry_min_seconds, 5);

        let error = Config::from_parts(Path::new("n.toml"), "[webhooks]\nurl = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("`[[webhooks]]`, one per entry"), "{error}");
        let error = Config::from_parts(Path::new("n.toml"), "[[webhook]]\nurl = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("[[webhooks]]"), "{error}");
        let error = Config::from_parts(Path::new("n.toml"), "[[webhooks]]\nurls = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("urls"), "{error}");
    }

    #[test]
    fn mistakes_are_named() {
        let error = Config::from_parts(Path::new("n.toml"), "[stor]\npath = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown section `[stor]`"), "{error}");
        assert!(error.contains("[store]"), "{error}");

        let error = Config::from_parts(Path::new("n.toml"), "[store]\npaht = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("paht"), "{error}");

        let env = vars(&[("NURTURE_DAEMON_BATCH", "many")]);
        let error = Config::from_parts(Path::new("n.toml"), "", &env)
            .unwrap_err()
            .to_string();
        assert!(error.contains("NURTURE_DAEMON_BATCH") && error.contains("whole number"));
    }

    fn problems(text: &str, env: &[(&str, &str)]) -> String {
        match Config::from_parts(Path::new("nurture.toml"), text, &vars(env)) {
            Ok(_) => String::new(),
            Err(error) => error.to_string(),
        }
    }

    /// `daemon.batch = 0` passed `check` and spun the daemon at 84 % CPU sending nothing; an
    /// `http.listen` without a port passed `check` and was refused by `run`.
    #[test]
    fn values_out_of_range_are_errors_at_their_line_or_variable() {
        let text =
            "[store]\npath = \"data\"\n\n[daemon]\nbatch = 0\n\n[http]\nlisten = \"localhost\"\n";
        let error = problems(text, &[]);
        assert!(
            error.contains("`daemon.batch` is 0; it must be from 1 to 10000"),
            "{error}"
        );
        assert!(error.contains("--> nurture.toml:5:9"), "{error}");
        assert!(
            error.contains("`http.listen` = \"localhost\" is not an IP address and port"),
            "{error}"
        );
        assert!(error.contains("--> nurture.toml:8:10"), "{error}");

        let error = problems("", &[("NURTURE_DAEMON_BATCH", "0")]);
        assert!(
            error.contains("`daemon.batch` is 0; it must be from 1 to 10000 (set by the environment variable NURTURE_DAEMON_BATCH)"),
            "{error}"
        );
        // The variable wins over the file, so it is the one named.
        let error = problems("[daemon]\nbatch = 5\n", &[("NURTURE_DAEMON_BATCH", "0")]);
        assert!(
            error.contains("NURTURE_DAEMON_BATCH") && !error.contains("nurture.toml:"),
            "{error}"
        );

        for (text, wanted) in [
            (
                "[smtp]\ntimeout_seconds = 0\n",
                "`smtp.timeout_seconds` is 0",
            ),
            ("[smtp]\nconnections = 0\n", "`smtp.connections` is 0"),
            (
                "[daemon]\nshutdown_seconds = 0\n",
                "`daemon.shutdown_seconds` is 0",
            ),
            (
                "[daemon]\nrehearsal_speed = 0\n",
                "`daemon.rehearsal_speed` is 0",
            ),
            (
                "[daemon]\nrehearsal_start = \"monday\"\n",
                "not an RFC 3339 time",
            ),
            (
                "[imap]\nidle_seconds = 7200\n",
                "`imap.idle_seconds` is 7200",
            ),
            ("[http]\nlisten = \"127.0.0.1:0\"\n", "has port 0"),
            ("[http]\nlisten = \"8025\"\n", "not an IP address and port"),
            ("[log]\nlevel = \"nurture=loud\"\n", "not a log filter"),
        ] {
            let error = problems(text, &[]);
            assert!(
                error.contains(wanted) && error.contains("nurture.toml:2:"),
                "{text}: {error}"
            );
        }
        assert_eq!(problems("[http]\nlisten = \"[::1]:8025\"\n", &[]), "");
    }

    /// A misspelled `NURTURE_*` variable was ignored in silence.
    #[test]
    fn an_unknown_variable_is_an_error_naming_the_closest_setting() {
        let error = problems("", &[("NURTURE_DEAMON_BATCH", "5")]);
        assert!(
            error.contains("environment variable NURTURE_DEAMON_BATCH is not a setting; did you mean NURTURE_DAEMON_BATCH?"),
            "{error}"
        );
        let error = problems("", &[("NURTURE_STORE_PTH", "/srv")]);
        assert!(
            error.contains("did you mean NURTURE_STORE_PATH?"),
            "{error}"
        );
        let error = problems("", &[("NURTURE_WORKFLOW", "flows")]);
        assert!(error.contains("did you mean NURTURE_WORKFLOWS?"), "{error}");

        // The command line's variables, the benchmarks', and the secrets the settings name are
        // not settings, and not mistakes.
        let text = "[smtp]\npassword_env = \"NURTURE_SMTP_PASSWORD\"\n[http]\nsecret_env = \"NURTURE_UNSUBSCRIBE_KEY\"\n";
        let fine = [
            ("NURTURE_CONFIG", "n.toml"),
            ("NURTURE_WORKFLOWS", "w"),
            ("NURTURE_TEMPLATES", "t"),
            ("NURTURE_BENCH_ROWS", "1000"),
            ("NURTURE_SMTP_PASSWORD", "secret"),
            ("NURTURE_UNSUBSCRIBE_KEY", "0123456789abcdef"),
            ("NURTURE_IMAP_PASSWORD_ENV", "NURTURE_IMAP_SECRET"),
            ("NURTURE_IMAP_SECRET", "secret"),
            ("NURTURE_DAEMON_REHEARSAL_START", "2026-11-22T12:00:00Z"),
            ("NURTURE_DAEMON_REHEARSAL_SPEED", "1000000"),
            ("NURTURE_HTTP_API_KEY_ENV", "NURTURE_API_KEYS"),
            ("NURTURE_API_KEYS", "key-1,key-2"),
        ];
        assert_eq!(problems(text, &fine), "");
        let hooks = "[[webhooks]]\nurl = \"https://crm.example/hook\"\nevents = [\"*\"]\nsecret_env = \"NURTURE_HOOK_SECRET\"\n";
        assert_eq!(problems(hooks, &[("NURTURE_HOOK_SECRET", "whsec_x")]), "");
    }

    #[test]
    fn unknown_keys_and_wrong_types_point_at_their_line() {
        let error = problems("[store]\npath = \"x\"\n[daemon]\nbatchh = 3\n", &[]);
        assert!(error.contains("unknown setting `daemon.batchh`"), "{error}");
        assert!(
            error.contains("--> nurture.toml:4:1") && error.contains("did you mean `batch`?"),
            "{error}"
        );
        let error = problems("[daemon]\nbatch = \"x\"\n", &[]);
        assert!(
            error.contains("--> nurture.toml:2:9") && error.contains("expected usize"),
            "{error}"
        );
        let error = problems("[imap]\n[[imap.accounts]]\nurll = \"imaps://x\"\n", &[]);
        assert!(
            error.contains("urll") && error.contains("nurture.toml:3"),
            "{error}"
        );
    }
}
