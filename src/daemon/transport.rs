//! Where emails go: a folder of `.eml` files (lettre's file transport, the default, so a fresh
//! checkout works before any SMTP server is configured), an SMTP server, or nowhere
//! (benchmarks).
//!
//! A transport reports failures as permanent (do not retry) or transient (retry later).

use std::path::Path;

use lettre::address::Envelope;
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};

use super::smtp::Smtp;
use crate::store::OutboxEmail;

pub enum Transport {
    /// Each email as `<uuid>.eml` in a folder.
    File(AsyncFileTransport<Tokio1Executor>),
    /// An SMTP server.
    Smtp(Box<Smtp>),
    /// Accepts everything, sends nothing: measures the daemon without a transport.
    Null,
}

/// Why an email did not leave.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// A permanent failure is not retried.
    pub permanent: bool,
}

impl SendError {
    /// A permanent refusal of the recipient address itself (enhanced status 5.1.x: no such
    /// user, bad address): the address is suppressed. Other permanent failures (policy, size,
    /// content) are not the lead's fault and suppress nothing.
    pub fn rejects_recipient(&self) -> bool {
        self.permanent
            && self.message.split([' ', ':', '(', ')', '<']).any(|word| {
                let mut parts = word.split('.');
                parts.next() == Some("5")
                    && parts.next() == Some("1")
                    && parts
                        .next()
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    && parts.next().is_none()
            })
    }
}

impl Transport {
    /// A file transport writing into `dir`, created if missing; owner-only either way.
    pub fn file(dir: &Path) -> std::io::Result<Transport> {
        crate::private::private_dir(dir)?;
        Ok(Transport::File(AsyncFileTransport::new(dir)))
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::File(_) => "file".into(),
            Transport::Smtp(smtp) => smtp.describe(),
            Transport::Null => "null".into(),
        }
    }

    /// How many emails may be with this transport at once.
    pub fn parallelism(&self) -> usize {
        match self {
            Transport::File(_) => 4,
            Transport::Smtp(smtp) => smtp.connections(),
            Transport::Null => 1,
        }
    }

    pub async fn send(&self, email: &OutboxEmail) -> Result<(), SendError> {
        let envelope = envelope(email)?;
        match self {
            Transport::File(files) => files
                .send_raw(&envelope, &email.eml)
                .await
                .map(|_| ())
                .map_err(|error| SendError {
                    // A full disk or a missing folder may be fixed while we wait.
                    message: format!("cannot write the email file: {error}"),
                    permanent: false,
                }),
            Transport::Smtp(smtp) => smtp.send(&envelope, &email.eml).await,
            Transport::Null => Ok(()),
        }
    }
}

fn envelope(email: &OutboxEmail) -> Result<Envelope, SendError> {
    let bad = |what: &str, error: String| SendError {
        message: format!("bad {what} address: {error}"),
        permanent: true,
    };
    let from = email
        .envelope_from
        .parse()
        .map_err(|e: lettre::address::AddressError| bad("sender", e.to_string()))?;
    let to = email
        .envelope_to
        .parse()
        .map_err(|e: lettre::address::AddressError| bad("recipient", e.to_string()))?;
    Envelope::new(Some(from), vec![to]).map_err(|e| bad("envelope", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(message: &str, permanent: bool) -> SendError {
        SendError {
            message: message.into(),
            permanent,
        }
    }

    #[test]
    fn only_a_permanent_5_1_x_rejects_the_recipient() {
        let unknown = "SMTP smtp://127.0.0.1:25: permanent error (550): 5.1.1 <ghost@example.test>: Recipient address rejected: User unknown";
        assert!(error(unknown, true).rejects_recipient());
        assert!(!error(unknown, false).rejects_recipient());
        assert!(
            !error(
                "permanent error (554): 5.7.1 Message rejected as spam",
                true
            )
            .rejects_recipient()
        );
        assert!(!error("permanent error (552): 5.3.4 Message too big", true).rejects_recipient());
        assert!(!error("permanent error (550): mailbox unavailable 5.1", true).rejects_recipient());
    }
}
