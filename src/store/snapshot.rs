//! The figures a store leaves beside itself when it closes, so that `nurture status` with no
//! daemon running reads one small file instead of opening the store: sled replays its log when
//! it opens, which takes seconds at a million leads, while the report needs only the counters
//! and the first enrollments due.
//!
//! The file, [`FILE_NAME`] in the store's folder (owner-only: it names leads), is only ever
//! true of the store as it stands:
//! - [`SledStore::open`](super::SledStore::open) removes it, holding the store's lock, before anything
//!   can change the store;
//! - [`SledStore::close`](super::SledStore::close) writes it after the last flush, still holding the
//!   lock, through a temporary file renamed into place (a reader sees the old file or the new
//!   one, never half of one);
//! - a write after that close (a task still holding a clone of the store) removes it again
//!   before it changes anything ([`Seal::unseal`]);
//! - a process that ends without closing (a crash, `kill -9`) leaves none, and the next
//!   `status` opens the store as before, then leaves one when it closes.
//!
//! So a snapshot that is there is exact; one that is not costs time, never a wrong figure. As a
//! guard against writes that know nothing of it (an older nurture, a tool that opens the sled
//! database itself), it also keeps the size and time of change of sled's data file at the
//! close, and is not read once they differ.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Counters, Result, StoreError};

/// The snapshot's name in the store's folder.
pub const FILE_NAME: &str = "status-snapshot.json";

/// How many of the first enrollments due a snapshot keeps (`status --next N` up to this reads
/// the snapshot; more opens the store).
pub const UPCOMING: usize = 100;

/// Bumped when the file's shape changes; a snapshot of another format is not read (the store
/// is opened instead).
const FORMAT: u32 = 1;

/// sled 0.34's data file in its folder: every write reaches it.
const DATA_FILE: &str = "db";

/// An enrollment due: when, the workflow, the lead's address (as [`super::SledStore::upcoming`]
/// gives them).
pub type Due = (DateTime<Utc>, String, String);

/// What a closed store left for `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    format: u32,
    /// When the store was closed.
    pub closed_at: DateTime<Utc>,
    pub counters: Counters,
    /// The first [`UPCOMING`] enrollments due, earliest first: `(at, workflow, lead)`.
    pub upcoming: Vec<Due>,
    /// Whether `upcoming` is every enrollment due (the store had no more).
    pub upcoming_complete: bool,
    /// sled's data file as the close left it.
    data_file: Option<FileStamp>,
}

/// A file's size and time of last change, in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    len: u64,
    modified_ns: u128,
}

impl FileStamp {
    /// The stamp of sled's data file in the store's folder `store`.
    fn of(store: &Path) -> Option<FileStamp> {
        let metadata = std::fs::metadata(store.join(DATA_FILE)).ok()?;
        let modified = metadata.modified().ok()?;
        Some(FileStamp {
            len: metadata.len(),
            modified_ns: modified.duration_since(UNIX_EPOCH).ok()?.as_nanos(),
        })
    }
}

impl Snapshot {
    pub fn new(counters: Counters, upcoming: Vec<Due>, closed_at: DateTime<Utc>) -> Snapshot {
        Snapshot {
            format: FORMAT,
            closed_at,
            upcoming_complete: upcoming.len() < UPCOMING,
            counters,
            upcoming,
            data_file: None,
        }
    }

    /// The counters and the first `limit` enrollments due, when the snapshot knows that many.
    pub fn answer(self, limit: usize) -> Option<(Counters, Vec<Due>)> {
        if limit > self.upcoming.len() && !self.upcoming_complete {
            return None;
        }
        let mut upcoming = self.upcoming;
        upcoming.truncate(limit);
        Some((self.counters, upcoming))
    }

    /// The snapshot the store in `store` left when it was last closed, if it left one that
    /// this nurture reads. Whether the store is closed now is the caller's to know (it holds
    /// its lock, or no process does).
    pub fn read(store: &Path) -> Option<Snapshot> {
        let bytes = std::fs::read(store.join(FILE_NAME)).ok()?;
        serde_json::from_slice::<Snapshot>(&bytes)
            .ok()
            .filter(|snapshot| {
                snapshot.format == FORMAT
                    && snapshot.data_file.is_some()
                    && snapshot.data_file == FileStamp::of(store)
            })
    }

    /// Writes the snapshot into the store's folder `store` (temporary file, then rename), with
    /// the stamp of sled's data file as it is now.
    fn write(&self, store: &Path) -> std::io::Result<()> {
        let stamped = Snapshot {
            data_file: FileStamp::of(store),
            ..self.clone()
        };
        let json = serde_json::to_vec(&stamped).map_err(std::io::Error::other)?;
        let temporary = store.join(format!("{FILE_NAME}.tmp"));
        let _ = std::fs::remove_file(&temporary);
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(crate::private::FILE_MODE)
                .open(&temporary)?;
            file.write_all(&json)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, store.join(FILE_NAME))
    }
}

/// Whether the store's snapshot is on disk, shared by every clone of one open store.
#[derive(Debug)]
pub(super) struct Seal {
    folder: PathBuf,
    /// True from a close that wrote the snapshot until the next write removes it.
    sealed: Mutex<bool>,
}

impl Seal {
    /// The seal of the store just opened in `folder`: removes a snapshot an earlier close left,
    /// before the store can change.
    pub(super) fn open(folder: &Path) -> Result<Seal> {
        remove(folder)?;
        Ok(Seal {
            folder: folder.to_path_buf(),
            sealed: Mutex::new(false),
        })
    }

    /// Writes `snapshot` and marks the store sealed. The caller has flushed the store and
    /// holds its write gate exclusively, so nothing changes meanwhile.
    pub(super) fn seal(&self, snapshot: &Snapshot) -> Result<()> {
        let mut sealed = self.sealed.lock().unwrap_or_else(|e| e.into_inner());
        snapshot
            .write(&self.folder)
            .map_err(|error| StoreError::Snapshot {
                path: self.folder.join(FILE_NAME),
                error,
            })?;
        *sealed = true;
        Ok(())
    }

    /// Called before every write: a store written after its close no longer matches its
    /// snapshot, so the snapshot goes first.
    pub(super) fn unseal(&self) -> Result<()> {
        let mut sealed = self.sealed.lock().unwrap_or_else(|e| e.into_inner());
        if *sealed {
            remove(&self.folder)?;
            *sealed = false;
        }
        Ok(())
    }
}

/// Removes the snapshot in `folder`, if there is one.
fn remove(folder: &Path) -> Result<()> {
    let path = folder.join(FILE_NAME);
    match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::Snapshot { path, error })
        }
        _ => Ok(()),
    }
}
