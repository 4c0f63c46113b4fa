//! Sending over SMTP: lettre's SMTP client on sockets opened here with TCP_NODELAY, reused
//! from a small pool.
//!
//! lettre's own transport opens its sockets without TCP_NODELAY, and then every message waits
//! about 43 ms for Nagle's algorithm (about 22 messages/s per connection, measured on this
//! stack); so the daemon connects itself and hands lettre the socket. A reply in 5xx is a
//! permanent failure; 4xx, a refused connection or a timeout are transient and retried later.
//! STARTTLS (rustls, the Mozilla roots plus an optional CA file) when configured; plain SMTP
//! otherwise (a relay on the same host). Authentication comes next.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore};

use super::transport::SendError;
use crate::config::{SmtpConfig, SmtpTls};

pub struct Smtp {
    config: SmtpConfig,
    /// Set when the session is to be encrypted with STARTTLS.
    tls: Option<TlsParameters>,
    /// Connections that are open and idle, ready for the next message.
    idle: Mutex<Vec<AsyncSmtpConnection>>,
    /// At most `config.connections` messages in flight at once.
    slots: Semaphore,
}

impl Smtp {
    /// The transport for `config`; an unreadable CA file is an error here, not at each send.
    pub fn new(config: SmtpConfig) -> Result<Smtp, String> {
        let tls = match config.tls {
            SmtpTls::None => None,
            SmtpTls::Starttls => Some(tls_parameters(&config)?),
        };
        Ok(Smtp {
            slots: Semaphore::new(config.connections.max(1)),
            idle: Mutex::new(Vec::new()),
            tls,
            config,
        })
    }

    pub fn connections(&self) -> usize {
        self.config.connections.max(1)
    }

    pub fn describe(&self) -> String {
        format!("smtp://{}:{}", self.config.host, self.config.port)
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

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let transient = |message: String| SendError {
            message,
            permanent: false,
        };
        let timeout = Duration::from_secs(self.config.timeout_seconds.max(1));
        let address = (self.config.host.as_str(), self.config.port);
        let socket = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| transient(format!("connecting to {} timed out", self.describe())))?
            .map_err(|e| transient(format!("cannot connect to {}: {e}", self.describe())))?;
        socket
            .set_nodelay(true)
            .map_err(|e| transient(format!("cannot set TCP_NODELAY: {e}")))?;
        let hello = ClientId::Domain(self.config.hello.clone());
        let session = async {
            let mut connection =
                AsyncSmtpConnection::connect_with_transport(Box::new(socket), &hello).await?;
            if let Some(tls) = &self.tls {
                connection.starttls(tls.clone(), &hello).await?;
            }
            Ok::<_, lettre::transport::smtp::Error>(connection)
        };
        tokio::time::timeout(timeout, session)
            .await
            .map_err(|_| transient(format!("{} did not greet in time", self.describe())))?
            .map_err(|e| transient(format!("SMTP {}: {e}", self.describe())))
    }
}

/// What STARTTLS trusts: the Mozilla roots, plus the certificates of `ca_file`.
fn tls_parameters(config: &SmtpConfig) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(config.host.clone());
    if !config.ca_file.is_empty() {
        let pem = std::fs::read(&config.ca_file)
            .map_err(|e| format!("smtp.ca_file {}: {e}", config.ca_file))?;
        let certificate = Certificate::from_pem(&pem)
            .map_err(|e| format!("smtp.ca_file {}: {e}", config.ca_file))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|e| format!("TLS for {}: {e}", config.host))
}
