//! `nurture backup FILE` and `nurture restore FILE`.
//!
//! A backup is taken by whoever holds the store: the running daemon (over the control socket,
//! which streams the snapshot back) or this process when no daemon runs. Either way the file
//! is written as `FILE`'s hidden sibling, `0600`, synced, checked whole (header, record count,
//! checksum), and only then renamed over `FILE`: a backup that fails halfway leaves the
//! previous `FILE` as it was. The format and its consistency are [`crate::store::backup`]'s.
//!
//! A restore goes into an empty or absent store only, and never while a daemon holds it.

use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Args;

use super::session::{Target, target};
use super::{Cli, CliError, ExitCode};
use crate::control::client;
use crate::store::Store;
use crate::store::backup::{self, BackupError, Summary};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write (replaced whole once the new backup is complete; `0600`).
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `nurture backup`.
    pub file: PathBuf,
}

pub fn backup(cli: &Cli, args: &BackupArgs) -> Result<ExitCode, CliError> {
    let config = cli.load_config()?;
    let (temp, mut file) = create_temp(&args.file)?;
    let written = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, &mut file);
        let through = match target(&config)? {
            Target::Daemon(daemon) => {
                daemon.backup(&mut out)?;
                "the running daemon"
            }
            Target::Here(store) => {
                store.backup(&mut out).map_err(backup_error)?;
                "this process (no daemon runs)"
            }
        };
        out.flush().map_err(|e| write_error(&temp, e))?;
        drop(out);
        file.sync_all().map_err(|e| write_error(&temp, e))?;
        // What arrived is what was sent: a daemon that stopped mid-stream is caught above,
        // a full disk or a damaged transfer here.
        let summary = backup::verify(&temp).map_err(backup_error)?;
        std::fs::rename(&temp, &args.file).map_err(|e| write_error(&args.file, e))?;
        sync_parent(&args.file);
        Ok::<_, CliError>((summary, through))
    })();
    let (summary, through) = match written {
        Ok(done) => done,
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            return Err(error);
        }
    };
    println!(
        "backup written to {}: {} leads, {} records, taken at {} by {through}",
        args.file.display(),
        summary.leads,
        summary.records,
        summary.header.taken_at.to_rfc3339(),
    );
    Ok(ExitCode::Success)
}

pub fn restore(cli: &Cli, args: &RestoreArgs) -> Result<ExitCode, CliError> {
    let config = cli.load_config()?;
    if !config.store.url.is_empty() {
        return Err(CliError::Input(
            "[store] url names a PostgreSQL database: a nurture backup is restored into a sled store (unset the url); a database is backed up and restored with PostgreSQL's own tools (pg_dump)".into(),
        ));
    }
    let path = &config.store.path;
    if client::connect(path)?.is_some() {
        return Err(CliError::Input(format!(
            "a daemon is running on the store at {}: a backup is restored into an empty store that no daemon holds; stop it first",
            path.display()
        )));
    }
    let store = super::opened(Store::open(path, config.cache_bytes()))?;
    let summary = store.restore(&args.file).map_err(backup_error)?;
    drop(store);
    // Opened again: an older schema is upgraded now, and the store is known to open.
    super::close(&super::opened(Store::open(path, config.cache_bytes()))?);
    print_restored(&summary, &args.file, path);
    Ok(ExitCode::Success)
}

fn print_restored(summary: &Summary, file: &Path, store: &Path) {
    println!(
        "restored {} into {}: {} leads, {} records, as the store stood at {}",
        file.display(),
        store.display(),
        summary.leads,
        summary.records,
        summary.header.taken_at.to_rfc3339(),
    );
}

/// `FILE`'s hidden sibling, created owner-only.
fn create_temp(file: &Path) -> Result<(PathBuf, std::fs::File), CliError> {
    let name = file
        .file_name()
        .ok_or_else(|| CliError::Usage(format!("`{}` names no file", file.display())))?;
    let temp = file.with_file_name(format!(
        ".{}.{}.partial",
        name.to_string_lossy(),
        std::process::id()
    ));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(true)
        .mode(crate::private::FILE_MODE)
        .open(&temp)
        .and_then(|created| crate::private::private_file(&temp).map(|()| created));
    created
        .map(|created| (temp.clone(), created))
        .map_err(|e| write_error(&temp, e))
}

/// Makes the rename durable; a folder that cannot be synced is not worth failing the backup.
fn sync_parent(file: &Path) {
    let parent = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
}

fn write_error(path: &Path, error: std::io::Error) -> CliError {
    CliError::Input(format!("cannot write {}: {error}", path.display()))
}

fn backup_error(error: BackupError) -> CliError {
    CliError::Input(error.to_string())
}
