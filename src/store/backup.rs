//! Backups of the store: a consistent snapshot of every tree written to one file, and the
//! restore of such a file into an empty store.
//!
//! Consistency: sled's iterators see each tree as it is at the moment they read a key, and
//! its `Db::export` is only a list of such iterators, so a snapshot taken while batches commit
//! could hold an enrollment without its due entry, or a sent email without its journal line.
//! [`SledStore::apply`] (and every other write) holds the store's write gate shared; a snapshot
//! holds it alone, so no transaction commits while the trees are read: the snapshot is the
//! store as it stood between two transactions. Writers wait for the snapshot, which is why the
//! daemon writes it to a file on its own disk first (see `crate::control::server`).
//!
//! The file is text, one record a line, so it travels through the control socket as any
//! command's output does and can be inspected with standard tools:
//!
//! ```text
//! NURTURE-BACKUP {"version":1,"schema":2,"next_id":1234,"taken_at":"2026-12-06T19:00:00Z"}
//! tree <name, base64>
//! <key, base64> <value, base64>
//! …
//! END {"records":5678,"sha256":"<hex of every byte before this line>"}
//! ```
//!
//! `next_id` is where the store's id generator stood: journal lines and Message-IDs are
//! numbered by it, and a restored store continues above it, so no number is used twice. A
//! restore reads the whole file once to check it (header, every line, the record count, the
//! checksum) before it writes anything: a truncated or damaged file is refused with where it
//! fails, and the store is left untouched. While it writes, a `restore_incomplete` mark and
//! no schema version stand in `meta`, so a store whose restore was cut short is refused when
//! opened rather than run half-restored.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use super::{SCHEMA_KEY, SCHEMA_VERSION, SledStore, StoreError};

/// The backup format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &str = "NURTURE-BACKUP ";
const TREE: &str = "tree ";
const END: &str = "END ";

/// Set in `meta` while a restore writes; its presence refuses the store on open.
pub(super) const RESTORING_KEY: &[u8] = b"restore_incomplete";

/// Records written to sled in one batch while restoring.
const RESTORE_BATCH: usize = 10_000;

/// The first line of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// The file format ([`FORMAT_VERSION`]).
    pub version: u32,
    /// The store's schema version when it was taken.
    pub schema: u32,
    /// The store's id generator, for the restored store to continue above.
    pub next_id: u64,
    pub taken_at: DateTime<Utc>,
}

/// The last line of a backup.
#[derive(Debug, Serialize, Deserialize)]
struct Trailer {
    records: u64,
    sha256: String,
}

/// What a backup holds, or what a restore wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    pub header: Header,
    /// Key-value records, all trees together.
    pub records: u64,
    pub leads: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the store is a PostgreSQL database: back it up with PostgreSQL's own tools (pg_dump)")]
    NotSled,
    #[error("cannot read the backup {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot write the backup: {0}")]
    Write(std::io::Error),
    #[error(
        "{path} is not a nurture backup: its first line does not begin with `NURTURE-BACKUP` (a file written by `nurture backup` does)"
    )]
    NotABackup { path: PathBuf },
    #[error(
        "{path} is a nurture backup in format {found}, which this build of nurture cannot read (it reads format {FORMAT_VERSION}): restore it with the nurture that wrote it"
    )]
    Version { path: PathBuf, found: u32 },
    #[error(
        "{path} holds a store of schema version {found}, newer than this build of nurture reads ({SCHEMA_VERSION}): upgrade nurture"
    )]
    Schema { path: PathBuf, found: u32 },
    #[error("{path}:{line}: {detail}")]
    Malformed {
        path: PathBuf,
        line: u64,
        detail: String,
    },
    #[error(
        "{path} is truncated: it ends at line {line} without its END line, so it was not written whole; nothing was restored"
    )]
    Truncated { path: PathBuf, line: u64 },
    #[error("{path}:{line}: the backup is damaged: {detail}; nothing was restored")]
    Damaged {
        path: PathBuf,
        line: u64,
        detail: String,
    },
    #[error(
        "the store is not empty ({what}): a backup is restored into an empty or absent store only; choose a new store path (NURTURE_STORE_PATH or `[store] path`)"
    )]
    NotEmpty { what: String },
    #[error(transparent)]
    SledStore(#[from] StoreError),
}

impl From<sled::Error> for BackupError {
    fn from(error: sled::Error) -> BackupError {
        BackupError::SledStore(StoreError::Sled(error))
    }
}

impl SledStore {
    /// Writes a snapshot of every tree to `out` (see the module header). Writers wait until
    /// it is written.
    pub fn backup(&self, out: &mut dyn Write) -> Result<Summary, BackupError> {
        let _alone = self
            .gate
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = Hashing::new(out);
        let header = Header {
            version: FORMAT_VERSION,
            schema: SCHEMA_VERSION,
            // The id the generator would hand out next (this one is spent, never reused).
            next_id: self.db.generate_id()?,
            taken_at: Utc::now(),
        };
        let header_json = serde_json::to_string(&header).expect("a header serializes");
        writeln!(out, "{MAGIC}{header_json}").map_err(BackupError::Write)?;
        let mut records = 0;
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name)?;
            writeln!(out, "{TREE}{}", BASE64.encode(&name)).map_err(BackupError::Write)?;
            for entry in tree.iter() {
                let (key, value) = entry?;
                writeln!(out, "{} {}", BASE64.encode(&key), BASE64.encode(&value))
                    .map_err(BackupError::Write)?;
                records += 1;
            }
        }
        let trailer = Trailer {
            records,
            sha256: hex(out.digest.clone().finish().as_ref()),
        };
        let trailer = serde_json::to_string(&trailer).expect("a trailer serializes");
        writeln!(out.inner, "{END}{trailer}").map_err(BackupError::Write)?;
        Ok(Summary {
            header,
            records,
            leads: self.leads.len() as u64,
        })
    }

    /// Whether the store holds nothing but settings-like state: no lead, enrollment, journal
    /// line, email or webhook. `Err` names what it holds.
    fn check_empty(&self) -> Result<(), BackupError> {
        if !self.leads.is_empty() {
            let what = format!("{} leads", self.leads.len());
            return Err(BackupError::NotEmpty { what });
        }
        for name in self.db.tree_names() {
            if name.as_ref() == b"meta" {
                continue;
            }
            let tree = self.db.open_tree(&name)?;
            if !tree.is_empty() {
                let what = format!("its `{}` tree has entries", String::from_utf8_lossy(&name));
                return Err(BackupError::NotEmpty { what });
            }
        }
        Ok(())
    }

    /// Restores the backup `path` into this store, which must be empty (see
    /// [`SledStore::check_empty`]); the file is checked whole before anything is written. The
    /// store should be opened again afterwards (an older schema is upgraded by that open).
    pub fn restore(&self, path: &Path) -> Result<Summary, BackupError> {
        self.check_empty()?;
        let checked = read(path, |_, _, _| Ok(()))?;
        if checked.header.schema > SCHEMA_VERSION {
            return Err(BackupError::Schema {
                path: path.to_path_buf(),
                found: checked.header.schema,
            });
        }
        let _alone = self
            .gate
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // What the empty store's meta held (its schema stamp, a watcher's position) gives way
        // to the backup's; the mark stands until the last record is written.
        self.meta.clear()?;
        self.meta.insert(RESTORING_KEY, &[])?;
        self.db.flush()?;
        let mut schema = None;
        let mut pending: Option<(sled::Tree, sled::Batch, usize)> = None;
        let summary = read(path, |tree, key, value| {
            if tree == b"meta" && key == SCHEMA_KEY {
                schema = Some(value);
                return Ok(());
            }
            let same = matches!(&pending, Some((open, _, _)) if open.name() == tree);
            if !same {
                if let Some((open, batch, _)) = pending.take() {
                    open.apply_batch(batch)?;
                }
                pending = Some((self.db.open_tree(tree)?, sled::Batch::default(), 0));
            }
            if let Some((open, batch, count)) = &mut pending {
                batch.insert(key, value);
                *count += 1;
                if *count == RESTORE_BATCH {
                    open.apply_batch(std::mem::take(batch))?;
                    *count = 0;
                }
            }
            Ok(())
        })?;
        if let Some((open, batch, _)) = pending.take() {
            open.apply_batch(batch)?;
        }
        // Numbers handed out before the backup are never handed out again.
        while self.db.generate_id()? < summary.header.next_id {}
        let schema = schema.unwrap_or_else(|| summary.header.schema.to_be_bytes().to_vec());
        self.db.flush()?;
        self.meta.insert(SCHEMA_KEY, schema)?;
        self.meta.remove(RESTORING_KEY)?;
        self.db.flush()?;
        Ok(summary)
    }
}

/// Checks the backup at `path` whole (header, lines, count, checksum) without restoring it.
pub fn verify(path: &Path) -> Result<Summary, BackupError> {
    read(path, |_, _, _| Ok(()))
}

/// Reads the backup at `path`, handing each record (tree, key, value) to `record`, and checks
/// it ends with a trailer that matches what was read.
fn read(
    path: &Path,
    mut record: impl FnMut(&[u8], Vec<u8>, Vec<u8>) -> Result<(), BackupError>,
) -> Result<Summary, BackupError> {
    let unreadable = |error| BackupError::Read {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut input = BufReader::with_capacity(256 * 1024, file);
    let mut digest = Context::new(&SHA256);
    let mut line = Vec::new();
    let mut number = 0;
    let malformed = |number, detail: String| BackupError::Malformed {
        path: path.to_path_buf(),
        line: number,
        detail,
    };
    // The header.
    input.read_until(b'\n', &mut line).map_err(unreadable)?;
    number += 1;
    let Some(json) = line.strip_prefix(MAGIC.as_bytes()) else {
        return Err(BackupError::NotABackup {
            path: path.to_path_buf(),
        });
    };
    if line.last() != Some(&b'\n') {
        return Err(BackupError::Truncated {
            path: path.to_path_buf(),
            line: number,
        });
    }
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let version: Version = serde_json::from_slice(json)
        .map_err(|e| malformed(number, format!("the header does not parse: {e}")))?;
    if version.version != FORMAT_VERSION {
        return Err(BackupError::Version {
            path: path.to_path_buf(),
            found: version.version,
        });
    }
    let header: Header = serde_json::from_slice(json)
        .map_err(|e| malformed(number, format!("the header does not parse: {e}")))?;
    digest.update(&line);
    let mut tree: Option<Vec<u8>> = None;
    let mut records = 0;
    let mut leads = 0;
    loop {
        line.clear();
        input.read_until(b'\n', &mut line).map_err(unreadable)?;
        number += 1;
        if line.last() != Some(&b'\n') {
            return Err(BackupError::Truncated {
                path: path.to_path_buf(),
                line: number - 1,
            });
        }
        let text = &line[..line.len() - 1];
        if let Some(json) = text.strip_prefix(END.as_bytes()) {
            let trailer: Trailer = serde_json::from_slice(json)
                .map_err(|e| malformed(number, format!("the END line does not parse: {e}")))?;
            let damaged = |detail| BackupError::Damaged {
                path: path.to_path_buf(),
                line: number,
                detail,
            };
            if trailer.records != records {
                return Err(damaged(format!(
                    "the END line counts {} records, the file holds {records}",
                    trailer.records
                )));
            }
            if trailer.sha256 != hex(digest.finish().as_ref()) {
                return Err(damaged(
                    "its checksum does not match its contents (changed since it was written?)"
                        .to_string(),
                ));
            }
            line.clear();
            if input.read_until(b'\n', &mut line).map_err(unreadable)? > 0 {
                return Err(malformed(number + 1, "text after the END line".to_string()));
            }
            return Ok(Summary {
                header,
                records,
                leads,
            });
        }
        digest.update(&line);
        let decode = |part: &[u8], what: &str| {
            BASE64
                .decode(part)
                .map_err(|e| malformed(number, format!("the {what} is not base64: {e}")))
        };
        if let Some(name) = text.strip_prefix(TREE.as_bytes()) {
            tree = Some(decode(name, "tree name")?);
            continue;
        }
        let Some(space) = text.iter().position(|&b| b == b' ') else {
            return Err(malformed(
                number,
                "expected `KEY VALUE` (base64, one space between)".to_string(),
            ));
        };
        let Some(name) = &tree else {
            return Err(malformed(
                number,
                "a record before any `tree` line".to_string(),
            ));
        };
        let key = decode(&text[..space], "key")?;
        let value = decode(&text[space + 1..], "value")?;
        records += 1;
        if name.as_slice() == b"leads" {
            leads += 1;
        }
        record(name, key, value)?;
    }
}

/// A writer that hashes what passes through it.
struct Hashing<'a> {
    inner: &'a mut dyn Write,
    digest: Context,
}

impl<'a> Hashing<'a> {
    fn new(inner: &'a mut dyn Write) -> Hashing<'a> {
        Hashing {
            inner,
            digest: Context::new(&SHA256),
        }
    }
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.digest.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
