//! `nurture.toml` and its environment overrides.
//!
//! Every setting has an embedded default, so a fresh checkout runs with no file at all. A file
//! (`--config`, `NURTURE_CONFIG`, or `./nurture.toml` when present) overrides the defaults, and
//! an environment variable `NURTURE_<SECTION>_<KEY>` overrides the file: `NURTURE_STORE_PATH`,
//! `NURTURE_TRANSPORT_OUTBOX`, `NURTURE_DAEMON_BATCH`… The variable is parsed as the type of the
//! setting it replaces. Unknown keys are errors, so a typo is not silently ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    pub bounces: BouncesConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The sled database directory.
    pub path: PathBuf,
    /// sled's page cache, in MiB.
    pub cache_mb: u64,
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

/// The one-click unsubscribe endpoint and the key of unsubscribe tokens (`crate::unsubscribe`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where the daemon serves `/unsubscribe/<token>`, e.g. `127.0.0.1:8025`; empty: no server.
    pub listen: String,
    /// The public `https://` address that reaches `listen` (through your TLS proxy); empty: no
    /// one-click links, only the `mailto:` one.
    pub base_url: String,
    /// A file holding the key of unsubscribe tokens (at least 16 bytes).
    pub secret_file: String,
    /// Or: the name of an environment variable holding it. Neither: a random key is made on
    /// first start and kept in the store.
    pub secret_env: String,
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
            cache_mb: crate::store::DEFAULT_CACHE_BYTES / (1024 * 1024),
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
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?}: {message}")]
    Environment {
        name: String,
        value: String,
        message: String,
    },
}

impl Config {
    /// The configuration: defaults, then the file (`explicit`, or `./nurture.toml` if it
    /// exists), then the environment.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let variables: Vec<(String, String)> = std::env::vars()
            .filter(|(name, _)| name.starts_with("NURTURE_"))
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

    /// Builds a configuration from file text and `NURTURE_*` variables.
    pub fn from_parts(
        path: &Path,
        text: &str,
        variables: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let file: toml::Table = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        // Start from the defaults so every key exists, with its type, for the overrides.
        let mut merged =
            toml::Table::try_from(Config::default()).expect("the default configuration serializes");
        for (section, values) in file {
            match (merged.get_mut(&section), values) {
                (Some(toml::Value::Table(into)), toml::Value::Table(values)) => {
                    for (key, value) in values {
                        into.insert(key, value);
                    }
                }
                (Some(_), _) => return Err(parse_error(format!("`{section}` must be a table"))),
                (None, _) => {
                    return Err(parse_error(format!(
                        "unknown section `[{section}]`; the sections are {}",
                        section_names()
                    )));
                }
            }
        }
        for (name, value) in variables {
            apply_override(&mut merged, name, value)?;
        }
        Config::deserialize(toml::Value::Table(merged)).map_err(|e| parse_error(e.to_string()))
    }

    pub fn cache_bytes(&self) -> u64 {
        self.store.cache_mb.max(1) * 1024 * 1024
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })
}

fn section_names() -> String {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
    let names: Vec<String> = defaults.keys().map(|k| format!("[{k}]")).collect();
    names.join(", ")
}

/// Applies `NURTURE_SECTION_KEY=value`, typed like the setting it replaces. Variables that
/// name no setting (`NURTURE_CONFIG`, `NURTURE_WORKFLOWS`) are for the command line.
fn apply_override(merged: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    let Some(rest) = name.strip_prefix("NURTURE_") else {
        return Ok(());
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
        let error = |message: &str| ConfigError::Environment {
            name: name.to_string(),
            value: value.to_string(),
            message: message.to_string(),
        };
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
            _ => toml::Value::String(value.to_string()),
        };
        table.insert(key.to_string(), replacement);
    }
    Ok(())
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
        assert_eq!(config.cache_bytes(), 16 * 1024 * 1024);
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
    fn the_shipped_example_is_the_defaults() {
        let text = include_str!("../nurture.example.toml");
        let config = Config::from_parts(Path::new("nurture.example.toml"), text, &[]).unwrap();
        assert_eq!(config, Config::default());
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
}
