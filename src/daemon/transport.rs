//! Where emails go: a folder of `.eml` files (the default, so a fresh checkout works before any
//! SMTP server is configured), an SMTP server, or nowhere (benchmarks).
//!
//! A transport reports failures as permanent (do not retry) or transient (retry later).
//!
//! The folder transport names each file after the email's Message-ID and writes it whole or
//! not at all (a temporary file in the same folder, synced, then renamed): after a crash, an
//! email that was being handed over has left exactly when its file exists
//! ([`Transport::has_left`]), so the daemon settles it instead of calling it uncertain, and
//! writing it again replaces rather than duplicates.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use lettre::address::Envelope;

use super::smtp::Smtp;
use crate::mail::dkim::Signer;
use crate::store::OutboxEmail;

pub enum Transport {
    /// Each email as `<Message-ID>.eml` in this folder.
    File(PathBuf),
    /// An SMTP server.
    Smtp(Box<Smtp>),
    /// Accepts everything, sends nothing: measures the daemon without a transport.
    Null,
    /// DKIM-signs each email (`[dkim]`), then hands it to the transport inside.
    Signed(Box<Transport>, Box<Signer>),
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
    /// Temporary files a crash left
    /// behind are removed: their emails were never handed over, and are written again.
    pub fn file(dir: &Path) -> std::io::Result<Transport> {
        crate::private::private_dir(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == PARTIAL) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(Transport::File(dir.to_path_buf()))
    }

    /// Whether `email` has left, when this transport can tell after the fact: a folder
    /// transport can (the file is there or not), an SMTP server cannot be asked.
    pub fn has_left(&self, email: &OutboxEmail) -> Option<bool> {
        match self {
            Transport::File(dir) => Some(dir.join(file_name(&email.message_id)).exists()),
            Transport::Smtp(_) | Transport::Null => None,
            Transport::Signed(inner, _) => inner.has_left(email),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Transport::File(_) => "file".into(),
            Transport::Smtp(smtp) => smtp.describe(),
            Transport::Null => "null".into(),
            Transport::Signed(inner, _) => format!("{}, DKIM-signed", inner.describe()),
        }
    }

    /// How many emails may be with this transport at once.
    pub fn parallelism(&self) -> usize {
        match self {
            Transport::File(_) => 4,
            Transport::Smtp(smtp) => smtp.connections(),
            Transport::Null => 1,
            Transport::Signed(inner, _) => inner.parallelism(),
        }
    }

    pub async fn send(&self, email: &OutboxEmail) -> Result<(), SendError> {
        if let Transport::Signed(inner, signer) = self {
            let eml = signer.sign(&email.eml).map_err(|message| SendError {
                message,
                permanent: true,
            })?;
            let signed = OutboxEmail {
                eml,
                ..email.clone()
            };
            return Box::pin(inner.send(&signed)).await;
        }
        let envelope = envelope(email)?;
        match self {
            Transport::File(dir) => {
                let (dir, name, eml) =
                    (dir.clone(), file_name(&email.message_id), email.eml.clone());
                let written =
                    tokio::task::spawn_blocking(move || write_atomically(&dir, &name, &eml))
                        .await
                        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
                written.map_err(|error| SendError {
                    // A full disk or a missing folder may be fixed while we wait.
                    message: format!("cannot write the email file: {error}"),
                    permanent: false,
                })
            }
            Transport::Smtp(smtp) => smtp.send(&envelope, &email.eml).await,
            Transport::Null | Transport::Signed(..) => Ok(()),
        }
    }
}

/// The extension of a file being written; it becomes `.eml` when it is complete.
const PARTIAL: &str = "partial";

/// The file an email is written to: its Message-ID without the angle brackets, with anything
/// but letters, digits and `.@-_+=` replaced, so that an id cannot name another folder.
fn file_name(message_id: &str) -> String {
    let id: String = message_id
        .trim_matches(['<', '>'])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".@-_+=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{id}.eml")
}

/// Writes `dir/name` whole or not at all: a temporary file beside it, synced, renamed over it,
/// then the folder synced so the rename itself survives a power cut.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let partial = dir.join(format!(".{name}.{PARTIAL}"));
    // Owner-only from the first byte (mode 0600 whatever the umask; see crate::private).
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(crate::private::FILE_MODE)
        .open(&partial)?;
    crate::private::private_file(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
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
