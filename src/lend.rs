//! Lending the store: how a command reaches the store while `nurture run` holds it.
//!
//! sled lets one process open a store. A running daemon therefore listens on a Unix socket in
//! the store's folder (`control.sock`, readable and writable by its owner only). A command that
//! finds the store locked connects, asks `lend`, and waits; the daemon finishes the batch in
//! hand, flushes, closes the store and answers `lent`; the command opens the store, does its
//! work, and exits, which closes the connection; the daemon then opens the store again and
//! carries on (it notices imported or changed leads at once). While the store is lent the
//! daemon sends nothing, so long commands pause it for their duration.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

/// The socket's file name in the store folder.
pub const SOCKET: &str = "control.sock";

const REQUEST: &str = "lend";
const ANSWER: &str = "lent";

pub fn socket_path(store: &Path) -> PathBuf {
    store.join(SOCKET)
}

/// The daemon's side: requests from commands, as they arrive.
pub struct Lender {
    requests: mpsc::Receiver<UnixStream>,
    path: PathBuf,
}

impl Lender {
    /// Listens on the store's socket (replacing a stale one left by a crash); `wake` is called
    /// for each request so that a sleeping daemon answers at once.
    pub fn listen(store: &Path, wake: impl Fn() + Send + 'static) -> std::io::Result<Lender> {
        let path = socket_path(store);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let (sender, requests) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if sender.send(stream).await.is_err() {
                    return;
                }
                wake();
            }
        });
        Ok(Lender { requests, path })
    }

    /// A command waiting for the store, if any.
    pub fn pending(&mut self) -> Option<UnixStream> {
        self.requests.try_recv().ok()
    }
}

impl Drop for Lender {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one request once the store is closed, then waits until the command is done with
/// it (its connection closes). A connection that does not ask properly is dropped.
pub async fn lend(mut stream: UnixStream) -> std::io::Result<()> {
    let mut request = String::new();
    let mut reader = tokio::io::BufReader::new(&mut stream);
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut request))
        .await
        .map_err(|_| std::io::Error::other("no request"))??;
    if request.trim() != REQUEST {
        return Ok(());
    }
    stream.write_all(format!("{ANSWER}\n").as_bytes()).await?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await?;
    Ok(())
}

/// The command's side: asks a running daemon to lend the store. `Ok(Some(lease))` once the
/// store is free; keep the lease open while using the store. `Ok(None)`: no daemon answers.
pub fn borrow(store: &Path) -> std::io::Result<Option<std::os::unix::net::UnixStream>> {
    let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket_path(store)) else {
        return Ok(None);
    };
    stream.write_all(format!("{REQUEST}\n").as_bytes())?;
    // The daemon finishes the batch in hand first.
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer)?;
    if answer.trim() == ANSWER {
        Ok(Some(stream))
    } else {
        Ok(None)
    }
}
