//! The control socket: how a command reaches the store while `nurture run` holds it.
//!
//! sled lets one process open a store, and the daemon is its one writer. So while a daemon
//! runs, the store commands (`leads …`, `status`, `contacts`, `enroll`, `unenroll`: see
//! [`crate::cli::session`]) do not open the store: they send their arguments to the daemon over
//! a Unix socket in the store's folder (`control.sock`), the daemon runs the very same command
//! code against its own store handle, and the command's output streams back to the terminal.
//! Sending never stops for a command:
//! - a command that only reads (`leads list`, `status`, …) runs on a blocking thread of the
//!   daemon beside the work loop (sled is safe to read from many threads);
//! - a command that changes the store runs inside the work loop, between two batches of
//!   emails, as one more [`crate::daemon::inbound`] request: what it reads and what it writes
//!   see no other change in between, and its batch is applied by the loop like any other;
//! - `leads import` streams: the command reads and checks the file itself (its warnings, with
//!   line numbers, are the same as without a daemon) and sends the good leads in chunks; the
//!   loop merges and writes one chunk per turn, between batches, so emails keep leaving, and
//!   imported leads are enrolled as they arrive;
//! - `backup` asks the daemon for a consistent snapshot of its store
//!   ([`crate::store::backup`]), which it writes to a spool file in its own folder and streams
//!   back; the command writes the backup file.
//!
//! With no daemon (nothing listens on the socket), commands open the store themselves.
//!
//! The protocol ([`protocol`]) is JSON, one object a line, versioned by the first line. Only
//! the daemon's owner may talk to it: the socket is `0600` inside the store's `0700` folder,
//! and the daemon refuses a peer whose uid (`SO_PEERCRED`) is not the socket's owner. A daemon
//! that stops or dies before a command's last line is an error for the command (exit 3), never
//! a success.
//!
//! - [`protocol`]: the frames both sides exchange;
//! - [`client`]: the command's side;
//! - [`server`]: the daemon's side.

pub mod client;
pub mod protocol;
pub mod server;

use std::path::{Path, PathBuf};

/// The socket's file name in the store folder.
pub const SOCKET: &str = "control.sock";

pub fn socket_path(store: &Path) -> PathBuf {
    store.join(SOCKET)
}
