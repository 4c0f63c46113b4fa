//! Sending over SMTP: lettre's SMTP client on sockets opened here with TCP_NODELAY, reused
//! from a small pool, with command pipelining (RFC 2920) where the server offers it.
//!
//! lettre's own transport opens its sockets without TCP_NODELAY, and then every message waits
//! about 43 ms for Nagle's algorithm (about 22 messages/s per connection, measured on this
//! stack); so the daemon connects itself and hands lettre the socket. lettre writes each
//! command and waits for its answer, and writes a message's final dot apart from its content:
//! five writes and four waits per email, each a TCP segment that wakes the server. To a server
//! that announces PIPELINING, [`send_pipelined`] writes MAIL, RCPT and DATA at once and the
//! content with its dot at once: two writes and two waits, which halves the system's work per
//! email on both sides (the server shares this machine's cores in the benchmark, and often in
//! production). Through lettre's own commands and reply parser, so the answers and the errors
//! are exactly lettre's. A reply in 5xx is a
//! permanent failure; 4xx, a refused connection, a timeout or a failed login are transient and
//! retried later (a wrong password is the operator's to fix, not a reason to drop emails).
//!
//! Encryption: `smtps://` is TLS from the first byte ([`crate::tls`]); `smtp://` with
//! `tls = "starttls"` upgrades after EHLO (lettre's rustls); both verify the certificate, with
//! no fallback to plain. AUTH (PLAIN, LOGIN) only over an encrypted session or to this host.
//! The password is read once at start-up ([`crate::secret`]) and never printed.
//!
//! Each hand-over is timed and its outcome noted for `/metrics` and `/readyz`
//! ([`crate::metrics`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::fmt;

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use tokio::sync::{Mutex, Semaphore};
use tokio_rustls::rustls::ClientConfig;

use super::transport::SendError;
use crate::config::SmtpConfig;
use crate::endpoint::{Endpoint, SMTP, Security};
use crate::metrics::{self, SmtpOutcome};
use crate::secret;

/// The login of `config`, if `smtp.user` is set.
fn credentials(config: &SmtpConfig) -> Result<Option<Credentials>, String> {
    if config.user.is_empty() {
        return Ok(None);
    }
    let password = secret::read("smtp", &config.password_file, &config.password_env)?
        .ok_or("smtp.user is set: give the password in smtp.password_file or smtp.password_env")?;
    Ok(Some(Credentials::new(
        config.user.clone(),
        password.expose().to_owned(),
    )))
}

pub struct Smtp {
    config: SmtpConfig,
    endpoint: Endpoint,
    /// Set for STARTTLS (lettre upgrades the session).
    starttls: Option<TlsParameters>,
    /// Set for implicit TLS (the socket is encrypted before the greeting).
    implicit_tls: Option<Arc<ClientConfig>>,
    /// Never printed: `Smtp` has no `Debug`, and errors name the user only.
    login: Option<Credentials>,
    /// Connections that are open and idle, ready for the next message.
    idle: Mutex<Vec<Session>>,
    /// At most `config.connections` messages in flight at once.
    slots: Semaphore,
}

impl Smtp {
    /// The transport for `config`. Everything that can be wrong with the configuration (the
    /// URL, the CA file, the password) is an error here, not at each send.
    pub fn new(config: SmtpConfig) -> Result<Smtp, String> {
        let endpoint = Endpoint::parse(&SMTP, &config.url, config.tls)?;
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
        let started = Instant::now();
        let (outcome, result) = self.hand_over(envelope, eml).await;
        metrics::get().smtp_attempt(outcome, started.elapsed());
        result
    }

    /// One email over a pooled or new session, and what came of it for the figures.
    async fn hand_over(
        &self,
        envelope: &Envelope,
        eml: &[u8],
    ) -> (SmtpOutcome, Result<(), SendError>) {
        let reused = self.idle.lock().await.pop();
        let mut session = match reused {
            Some(session) if !session.connection.has_broken() => session,
            _ => match self.connect().await {
                Ok(session) => session,
                Err(error) => return (SmtpOutcome::Failed, Err(error)),
            },
        };
        let sent = match session.pipelined(envelope, eml) {
            Some(text) => send_pipelined(&mut session.connection, envelope, text).await,
            None => session.connection.send(envelope, eml).await.map(drop),
        };
        match sent {
            Ok(()) => {
                self.idle.lock().await.push(session);
                (SmtpOutcome::Sent, Ok(()))
            }
            Err(error) => {
                // The session's state after a refusal is not worth repairing (with pipelining,
                // answers to commands after the refused one may still be on their way): drop it.
                session.connection.abort().await;
                // A 4xx or 5xx is an answer: the server is up. Anything else (a broken
                // session, a timeout) is not.
                let outcome = if error.is_permanent() || error.is_transient() {
                    SmtpOutcome::Refused
                } else {
                    SmtpOutcome::Failed
                };
                let error = SendError {
                    permanent: error.is_permanent(),
                    message: format!("SMTP {}: {error}", self.describe()),
                };
                (outcome, Err(error))
            }
        }
    }

    /// A new session: TCP (TCP_NODELAY), TLS if implicit, greeting and EHLO, STARTTLS, a second
    /// EHLO to learn whether the server pipelines (lettre keeps only the extensions it uses),
    /// AUTH. Every failure here is transient: the server, the network or the login may be fixed.
    async fn connect(&self) -> Result<Session, SendError> {
        let transient = |message: String| SendError {
            message,
            permanent: false,
        };
        let timeout = Duration::from_secs(self.config.timeout_seconds.max(1));
        let socket = self.endpoint.connect(timeout).await.map_err(transient)?;
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
            let pipelining = connection
                .command(Ehlo::new(hello.clone()))
                .await
                .map_err(|e| format!("SMTP {}: {e}", self.describe()))?
                .message()
                .any(|line| line.eq_ignore_ascii_case("PIPELINING"));
            if let Some(credentials) = &self.login {
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
            Ok::<_, String>(Session {
                connection,
                pipelining,
            })
        };
        tokio::time::timeout(timeout, session)
            .await
            .map_err(|_| transient(format!("{} did not greet in time", self.describe())))?
            .map_err(transient)
    }
}

/// An open session and what its server offers that lettre does not keep.
struct Session {
    connection: AsyncSmtpConnection,
    /// The server announced PIPELINING (RFC 2920).
    pipelining: bool,
}

impl Session {
    /// `eml` as text, when this email may be pipelined: the server pipelines, the addresses are
    /// ASCII and the content is ASCII or the server takes 8BITMIME. The others (SMTPUTF8, which
    /// lettre checks and refuses with its own errors; bytes that are not UTF-8) go through
    /// lettre's `send`.
    fn pipelined<'a>(&self, envelope: &Envelope, eml: &'a [u8]) -> Option<&'a str> {
        let ascii = |address: &Address| AsRef::<str>::as_ref(address).is_ascii();
        let plain = envelope.from().is_none_or(ascii) && envelope.to().iter().all(ascii);
        let text = std::str::from_utf8(eml).ok()?;
        let carried = text.is_ascii() || self.eight_bit();
        (self.pipelining && plain && carried).then_some(text)
    }

    fn eight_bit(&self) -> bool {
        self.connection
            .server_info()
            .supports_feature(Extension::EightBitMime)
    }
}

/// One email in two round trips (RFC 2920): MAIL, RCPT and DATA written at once, their answers
/// read in order; then the content, dot-stuffed, and its final dot written at once, and the
/// answer read. Any refusal stops there (the caller drops the session, so answers still on
/// their way do not matter; a refused RCPT makes a conforming server refuse DATA too, and a
/// DATA the server accepted all the same gets no content, only a closed connection). The bytes
/// on the wire are those lettre's `send` writes, 8BITMIME included.
async fn send_pipelined(
    connection: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    eml: &str,
) -> Result<(), lettre::transport::smtp::Error> {
    let mut parameters = Vec::new();
    if !eml.is_ascii() {
        // [`Session::pipelined`] checked the server takes it.
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mut commands = Mail::new(envelope.from().cloned(), parameters).to_string();
    for to in envelope.to() {
        commands.push_str(&Rcpt::new(to.clone(), Vec::new()).to_string());
    }
    commands.push_str(&Data.to_string());
    // `command` writes its text whole, then reads the first answer (MAIL's).
    connection.command(Verbatim(&commands)).await?;
    for _ in envelope.to() {
        connection.read_response().await?;
    }
    connection.read_response().await?;
    connection.command(Content(eml)).await?;
    Ok(())
}

/// Text lettre writes as it is, as a "command".
struct Verbatim<'a>(&'a str);

impl fmt::Display for Verbatim<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A message's content as SMTP carries it after DATA (RFC 5321 4.5.2): a dot that starts a line
/// doubled, then `CRLF . CRLF`, as lettre's own `message` writes it.
struct Content<'a>(&'a str);

impl fmt::Display for Content<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        if rest.starts_with('.') {
            f.write_str(".")?;
        }
        while let Some(at) = rest.find("\r\n.") {
            f.write_str(&rest[..at + 3])?;
            f.write_str(".")?;
            rest = &rest[at + 3..];
        }
        f.write_str(rest)?;
        f.write_str("\r\n.\r\n")
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

    #[test]
    fn content_doubles_every_dot_that_starts_a_line_and_ends_with_a_lone_dot() {
        let wire = |eml: &str| Content(eml).to_string();
        assert_eq!(wire("a\r\nb\r\n"), "a\r\nb\r\n\r\n.\r\n");
        assert_eq!(
            wire(".x\r\n.\r\n..y\r\nz.\r\n\r\n.\r\n"),
            "..x\r\n..\r\n...y\r\nz.\r\n\r\n..\r\n\r\n.\r\n"
        );
        // A bare LF does not start a line on the wire; lettre stuffs the same way.
        assert_eq!(wire("a\n.b"), "a\n.b\r\n.\r\n");
        assert_eq!(wire(""), "\r\n.\r\n");
    }
}
