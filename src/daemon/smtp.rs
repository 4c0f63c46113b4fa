//! Sending over SMTP: lettre's SMTP client on sockets opened here with TCP_NODELAY, reused
//! from a small pool.
//!
//! lettre's own transport opens its sockets without TCP_NODELAY, and then every message waits
//! about 43 ms for Nagle's algorithm (about 22 messages/s per connection, measured on this
//! stack); so the daemon connects itself and hands lettre the socket. A reply in 5xx is a
//! permanent failure; 4xx, a refused connection, a timeout or a failed login are transient and
//! retried later (a wrong password is the operator's to fix, not a reason to drop emails).
//!
//! Encryption: `smtps://` is TLS from the first byte ([`crate::tls`]); `smtp://` with
//! `tls = "starttls"` upgrades after EHLO (lettre's rustls); both verify the certificate, with
//! no fallback to plain. AUTH (PLAIN, LOGIN) only over an encrypted session or to this host.
//! The password is read once at start-up and kept in a [`Secret`], which never prints.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};
use tokio_rustls::rustls::ClientConfig;

use super::transport::SendError;
use crate::config::{SmtpConfig, SmtpTls};

/// Where the server is and how the session is encrypted, from `smtp.url` and `smtp.tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    Starttls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

impl Endpoint {
    /// Reads `smtp://host[:port]` or `smtps://host[:port]`; IPv6 hosts in brackets.
    pub fn parse(url: &str, tls: SmtpTls) -> Result<Endpoint, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("smtp.url `{url}`: expected smtp://host[:port] or smtps://host[:port]")
        })?;
        let (security, default_port) = match (scheme.to_ascii_lowercase().as_str(), tls) {
            ("smtp", SmtpTls::None) => (Security::Plain, 25),
            ("smtp", SmtpTls::Starttls) => (Security::Starttls, 25),
            ("smtps", SmtpTls::None) => (Security::Implicit, 465),
            ("smtps", SmtpTls::Starttls) => {
                return Err(format!(
                    "smtp.url `{url}` is already TLS (smtps://): leave smtp.tls at \"none\" or use smtp://"
                ));
            }
            (other, _) => {
                return Err(format!(
                    "smtp.url `{url}`: unknown scheme `{other}` (expected smtp or smtps)"
                ));
            }
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('@') {
            // A password in the URL would travel into logs and `describe()`.
            return Err("smtp.url must not carry a user or password: set smtp.user, and the password in smtp.password_file or smtp.password_env".into());
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("smtp.url `{url}`: unclosed `[`"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return Err(format!("smtp.url `{url}`: expected smtp://host[:port]"));
        }
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .map_err(|_| format!("smtp.url `{url}`: `{port}` is not a port"))?,
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            security,
        })
    }

    fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.security {
            Security::Implicit => "smtps",
            Security::Plain | Security::Starttls => "smtp",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// A login whose password never reaches a log line or a `Debug` dump.
#[derive(Clone)]
pub struct Secret(Credentials);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The login of `config`, if `smtp.user` is set: the password from the file or the variable.
pub fn credentials(config: &SmtpConfig) -> Result<Option<Secret>, String> {
    if config.user.is_empty() {
        return Ok(None);
    }
    let password = match (
        config.password_file.is_empty(),
        config.password_env.is_empty(),
    ) {
        (false, true) => {
            let text = std::fs::read_to_string(&config.password_file)
                .map_err(|e| format!("smtp.password_file {}: {e}", config.password_file))?;
            text.lines().next().unwrap_or_default().to_owned()
        }
        (true, false) => std::env::var(&config.password_env).map_err(|_| {
            format!(
                "smtp.password_env: the environment variable {} is not set",
                config.password_env
            )
        })?,
        (true, true) => {
            return Err(
                "smtp.user is set: give the password in smtp.password_file or smtp.password_env"
                    .into(),
            );
        }
        (false, false) => {
            return Err("smtp.password_file and smtp.password_env are both set: keep one".into());
        }
    };
    if password.is_empty() {
        return Err("the SMTP password is empty".into());
    }
    Ok(Some(Secret(Credentials::new(
        config.user.clone(),
        password,
    ))))
}

pub struct Smtp {
    config: SmtpConfig,
    endpoint: Endpoint,
    /// Set for STARTTLS (lettre upgrades the session).
    starttls: Option<TlsParameters>,
    /// Set for implicit TLS (the socket is encrypted before the greeting).
    implicit_tls: Option<Arc<ClientConfig>>,
    login: Option<Secret>,
    /// Connections that are open and idle, ready for the next message.
    idle: Mutex<Vec<AsyncSmtpConnection>>,
    /// At most `config.connections` messages in flight at once.
    slots: Semaphore,
}

impl Smtp {
    /// The transport for `config`. Everything that can be wrong with the configuration (the
    /// URL, the CA file, the password) is an error here, not at each send.
    pub fn new(config: SmtpConfig) -> Result<Smtp, String> {
        let endpoint = Endpoint::parse(&config.url, config.tls)?;
        let login = credentials(&config)?;
        if login.is_some() && endpoint.security == Security::Plain && !endpoint.is_loopback() {
            return Err(format!(
                "smtp.user is set but {endpoint} is not encrypted: the password would cross the network in the clear; use tls = \"starttls\" or smtps://"
            ));
        }
        let (starttls, implicit_tls) = match endpoint.security {
            Security::Plain => (None, None),
            Security::Starttls => (Some(tls_parameters(&endpoint.host, &config.ca_file)?), None),
            Security::Implicit => (
                None,
                Some(
                    crate::tls::client_config(&config.ca_file)
                        .map_err(|e| format!("smtp.ca_file {e}"))?,
                ),
            ),
        };
        Ok(Smtp {
            slots: Semaphore::new(config.connections.max(1)),
            idle: Mutex::new(Vec::new()),
            endpoint,
            starttls,
            implicit_tls,
            login,
            config,
        })
    }

    pub fn connections(&self) -> usize {
        self.config.connections.max(1)
    }

    /// `smtps://host:port` (never a password: the URL cannot carry one).
    pub fn describe(&self) -> String {
        self.endpoint.to_string()
    }

    pub async fn send(&self, envelope: &Envelope, eml: &[u8]) -> Result<(), SendError> {
        let _slot = self.slots.acquire().await.map_err(|_| SendError {
            message: "the SMTP transport is closed".into(),
            permanent: false,
        })?;
        let reused = self.idle.lock().await.pop();
        let mut connection = match reused {
            Some(connection) if !connection.has_broken() => connection,
            _ => self.connect().await?,
        };
        match connection.send(envelope, eml).await {
            Ok(_) => {
                self.idle.lock().await.push(connection);
                Ok(())
            }
            Err(error) => {
                // The session's state after a refusal is not worth repairing: drop it.
                connection.abort().await;
                Err(SendError {
                    permanent: error.is_permanent(),
                    message: format!("SMTP {}: {error}", self.describe()),
                })
            }
        }
    }

    /// A new session: TCP (TCP_NODELAY), TLS if implicit, greeting and EHLO, STARTTLS, AUTH.
    /// Every failure here is transient: the server, the network or the login may be fixed.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let transient = |message: String| SendError {
            message,
            permanent: false,
        };
        let timeout = Duration::from_secs(self.config.timeout_seconds.max(1));
        let address = (self.endpoint.host.as_str(), self.endpoint.port);
        let socket = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| transient(format!("connecting to {} timed out", self.describe())))?
            .map_err(|e| transient(format!("cannot connect to {}: {e}", self.describe())))?;
        socket
            .set_nodelay(true)
            .map_err(|e| transient(format!("cannot set TCP_NODELAY: {e}")))?;
        let hello = ClientId::Domain(self.config.hello.clone());
        let session = async {
            let mut connection = match &self.implicit_tls {
                Some(tls) => {
                    let socket = crate::tls::connect(tls.clone(), &self.endpoint.host, socket)
                        .await
                        .map_err(|e| format!("TLS with {}: {e}", self.describe()))?;
                    AsyncSmtpConnection::connect_with_transport(Box::new(socket), &hello).await
                }
                None => AsyncSmtpConnection::connect_with_transport(Box::new(socket), &hello).await,
            }
            .map_err(|e| format!("SMTP {}: {e}", self.describe()))?;
            if let Some(tls) = &self.starttls {
                connection
                    .starttls(tls.clone(), &hello)
                    .await
                    .map_err(|e| format!("STARTTLS with {}: {e}", self.describe()))?;
            }
            if let Some(Secret(credentials)) = &self.login {
                connection
                    .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(|e| {
                        format!(
                            "login as `{}` at {} refused: {e}",
                            self.config.user,
                            self.describe()
                        )
                    })?;
            }
            Ok::<_, String>(connection)
        };
        tokio::time::timeout(timeout, session)
            .await
            .map_err(|_| transient(format!("{} did not greet in time", self.describe())))?
            .map_err(transient)
    }
}

/// What STARTTLS trusts: the Mozilla roots, plus the certificates of `ca_file`.
fn tls_parameters(host: &str, ca_file: &str) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if !ca_file.is_empty() {
        let pem = std::fs::read(ca_file).map_err(|e| format!("smtp.ca_file {ca_file}: {e}"))?;
        let certificate =
            Certificate::from_pem(&pem).map_err(|e| format!("smtp.ca_file {ca_file}: {e}"))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("TLS for {host}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Endpoint, String> {
        Endpoint::parse(url, SmtpTls::None)
    }

    #[test]
    fn urls_give_host_port_and_encryption() {
        let relay = parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((relay.host.as_str(), relay.port), ("127.0.0.1", 2525));
        assert_eq!(relay.security, Security::Plain);
        let provider = parse("smtps://mail.example.com").unwrap();
        assert_eq!(
            (provider.port, provider.security),
            (465, Security::Implicit)
        );
        let upgraded = Endpoint::parse("smtp://mail.example.com", SmtpTls::Starttls).unwrap();
        assert_eq!((upgraded.port, upgraded.security), (25, Security::Starttls));
        let v6 = parse("smtp://[::1]:587").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 587));
        assert_eq!(v6.to_string(), "smtp://[::1]:587");
        assert!(v6.is_loopback());
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_repeating_it() {
        let error = parse("smtp://ana:hunter2@mail.example.com").unwrap_err();
        assert!(error.contains("password_file"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn odd_urls_are_named() {
        assert!(
            parse("mail.example.com")
                .unwrap_err()
                .contains("smtp://host")
        );
        assert!(
            parse("http://x")
                .unwrap_err()
                .contains("unknown scheme `http`")
        );
        assert!(parse("smtp://x:port").unwrap_err().contains("not a port"));
        assert!(
            Endpoint::parse("smtps://x", SmtpTls::Starttls)
                .unwrap_err()
                .contains("already TLS")
        );
    }

    #[test]
    fn the_password_comes_from_a_file_or_a_variable_and_never_prints() {
        let file = std::env::temp_dir().join(format!("nurture-pw-{}", std::process::id()));
        std::fs::write(&file, "s3cret-pw\n").unwrap();
        let config = SmtpConfig {
            user: "hello@acme.example".into(),
            password_file: file.display().to_string(),
            ..SmtpConfig::default()
        };
        let login = credentials(&config).unwrap().expect("a login");
        assert_eq!(format!("{login:?}"), "Secret(…)");
        std::fs::remove_file(&file).unwrap();

        let missing = SmtpConfig {
            user: "hello@acme.example".into(),
            password_env: "NURTURE_TEST_SURELY_UNSET_PASSWORD".into(),
            ..SmtpConfig::default()
        };
        assert!(credentials(&missing).unwrap_err().contains("is not set"));
        let neither = SmtpConfig {
            user: "hello@acme.example".into(),
            ..SmtpConfig::default()
        };
        assert!(credentials(&neither).unwrap_err().contains("password_file"));
        assert!(credentials(&SmtpConfig::default()).unwrap().is_none());
    }

    #[test]
    fn a_login_over_plain_smtp_to_another_host_is_refused() {
        let file = std::env::temp_dir().join(format!("nurture-pw2-{}", std::process::id()));
        std::fs::write(&file, "pw").unwrap();
        let remote = SmtpConfig {
            url: "smtp://mail.example.com:587".into(),
            user: "hello@acme.example".into(),
            password_file: file.display().to_string(),
            ..SmtpConfig::default()
        };
        let error = Smtp::new(remote).err().expect("refused");
        assert!(error.contains("not encrypted"), "{error}");
        std::fs::remove_file(&file).unwrap();
    }
}
