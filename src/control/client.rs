//! The command's side of the control socket: run a store command in the running daemon, or
//! stream an import to it.
//!
//! Plain blocking I/O: a command does one thing at a time. An import keeps at most [`WINDOW`]
//! chunks unanswered, so the daemon always has the next one at hand while neither side can
//! fill the other's socket buffer and wait forever.

use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::protocol::{self, Chunk, Hello, Reply, Request, VERSION, WireLead};
use super::socket_path;
use crate::cli::leads::import::{ImportOptions, ImportSummary, file_name};
use crate::cli::session::StoreCommand;
use crate::cli::{CliError, ExitCode};
use crate::leads_file::{LeadsReader, RejectedRow};

/// Leads per import chunk, merged and written in one turn of the daemon's work loop, between
/// two batches of emails. Measured with `cargo bench --bench control` (100,000 leads, 256
/// emails a batch): 1,000 a turn left sending at about half its rate; 500 at about 70 %, the
/// import at some 7,000 leads/s (at 1,000,000 leads, as the store grows: 54 %, 4,800/s).
pub const CHUNK_LEADS: usize = 500;

/// Import chunks sent ahead of the daemon's answers.
const WINDOW: usize = 2;

/// A connection to the running daemon.
pub struct Daemon {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    path: PathBuf,
}

/// Connects to the daemon that holds the store at `store`; `None` when no daemon listens.
pub fn connect(store: &Path) -> Result<Option<Daemon>, CliError> {
    let path = socket_path(store);
    let unreachable = |e: std::io::Error| {
        CliError::Input(format!(
            "cannot reach the running daemon at {}: {e}",
            path.display()
        ))
    };
    let writer = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        // No socket, or one a stopped daemon left behind.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(unreachable(e)),
    };
    let reader = BufReader::new(writer.try_clone().map_err(unreachable)?);
    Ok(Some(Daemon {
        writer,
        reader,
        path,
    }))
}

impl Daemon {
    /// Runs `command` in the daemon: its output goes to `stdout` and this process's stderr as
    /// it arrives; its result is the command's.
    pub fn run(self, command: &StoreCommand, stdout: &mut dyn Write) -> Result<ExitCode, CliError> {
        self.relay(Request::Run(command.clone()), stdout)
    }

    /// Has the daemon take a consistent snapshot of its store: the backup's lines go to `out`
    /// as they arrive.
    pub fn backup(self, out: &mut dyn Write) -> Result<ExitCode, CliError> {
        self.relay(Request::Backup, out)
    }

    /// Sends `request` and relays the answer: standard output to `stdout`, errors to this
    /// process's stderr, the result last.
    fn relay(mut self, request: Request, stdout: &mut dyn Write) -> Result<ExitCode, CliError> {
        self.send(&Hello {
            version: VERSION,
            request,
        })?;
        loop {
            match self.receive()? {
                Reply::Out(text) => stdout
                    .write_all(text.as_bytes())
                    .map_err(crate::cli::leads::view::write_error)?,
                Reply::Err(text) => {
                    let _ = std::io::stderr().write_all(text.as_bytes());
                }
                Reply::Exit { code, error } => return protocol::result(code, error),
                Reply::Imported(_) => return Err(self.confused("an import count")),
            }
        }
    }

    /// Streams the leads file at `path` to the daemon, which merges and writes them (see
    /// [`crate::cli::leads::import`] for the rules). The file is read and checked here, so
    /// `on_chunk` gets the same counts and line-numbered rejections, in the same order, as an
    /// import without a daemon; it is called once each chunk is written.
    pub fn import(
        mut self,
        path: &Path,
        options: &ImportOptions,
        mut on_chunk: impl FnMut(&ImportSummary, &[RejectedRow]),
    ) -> Result<ImportSummary, CliError> {
        let mut reader = LeadsReader::open_with(path, Utc::now(), options.csv)
            .map_err(|e| CliError::Input(e.to_string()))?;
        self.send(&Hello {
            version: VERSION,
            request: Request::Import {
                file: file_name(path),
                options: options.clone(),
            },
        })?;
        let mut summary = ImportSummary::default();
        let mut merged_in_chunks = 0;
        // Rows and rejections of the chunks sent and not yet answered, oldest first.
        let mut unanswered: VecDeque<(usize, usize, Vec<RejectedRow>)> = VecDeque::new();
        let unreadable = loop {
            match reader.next_chunk(CHUNK_LEADS) {
                Ok(Some(chunk)) => {
                    let merged = chunk.rows - chunk.rejected.len() - chunk.leads.len();
                    unanswered.push_back((chunk.rows, merged, chunk.rejected));
                    let leads = chunk.leads.into_iter().map(WireLead::from).collect();
                    self.send(&Chunk::Leads(leads))?;
                    while unanswered.len() > WINDOW {
                        self.written(
                            &mut unanswered,
                            &mut summary,
                            &mut merged_in_chunks,
                            &mut on_chunk,
                        )?;
                    }
                }
                Ok(None) => break None,
                // What was read before is imported all the same, as without a daemon.
                Err(error) => break Some(error),
            }
        };
        self.send(&Chunk::End)?;
        while !unanswered.is_empty() {
            self.written(
                &mut unanswered,
                &mut summary,
                &mut merged_in_chunks,
                &mut on_chunk,
            )?;
        }
        match self.receive()? {
            Reply::Exit { code, error } => protocol::result(code, error)?,
            _ => return Err(self.confused("more than one answer per chunk")),
        };
        summary.notes = reader.notes();
        match unreadable {
            Some(error) => Err(CliError::Input(error.to_string())),
            None => Ok(summary),
        }
    }

    /// Waits for the daemon to have written the oldest unanswered chunk.
    fn written(
        &mut self,
        unanswered: &mut VecDeque<(usize, usize, Vec<RejectedRow>)>,
        summary: &mut ImportSummary,
        merged_in_chunks: &mut usize,
        on_chunk: &mut impl FnMut(&ImportSummary, &[RejectedRow]),
    ) -> Result<(), CliError> {
        match self.receive()? {
            Reply::Imported(counts) => {
                let (rows, merged, rejected) = unanswered.pop_front().unwrap_or_default();
                summary.rows += rows;
                summary.rejected += rejected.len();
                *merged_in_chunks += merged;
                counts.add_to(summary, *merged_in_chunks);
                on_chunk(summary, &rejected);
                Ok(())
            }
            // The import failed in the daemon (a store error): nothing more is written.
            Reply::Exit { code, error } => {
                protocol::result(code, error)?;
                Err(self.confused("an early end"))
            }
            Reply::Out(_) | Reply::Err(_) => Err(self.confused("output during an import")),
        }
    }

    fn send<T: serde::Serialize>(&mut self, frame: &T) -> Result<(), CliError> {
        let Err(error) = protocol::send(&mut self.writer, frame) else {
            return Ok(());
        };
        // The daemon may have said why before it closed the connection (a refusal).
        if let Ok(Some(Reply::Exit {
            code,
            error: Some(why),
        })) = protocol::receive(&mut self.reader)
        {
            protocol::result(code, Some(why))?;
        }
        Err(self.stopped(&error.to_string()))
    }

    fn receive(&mut self) -> Result<Reply, CliError> {
        match protocol::receive(&mut self.reader) {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(self.stopped("it closed the connection")),
            Err(e) => Err(self.stopped(&e.to_string())),
        }
    }

    /// The daemon went away mid-command: never a success, since what it was doing may be
    /// half done.
    fn stopped(&self, detail: &str) -> CliError {
        CliError::Input(format!(
            "the running daemon ({}) stopped before the command ended ({detail}): its output may \
             be incomplete, and a change it was making may or may not be saved",
            self.path.display()
        ))
    }

    fn confused(&self, what: &str) -> CliError {
        CliError::Input(format!(
            "the running daemon ({}) answered with {what}, which this nurture does not expect: \
             is it another version of nurture?",
            self.path.display()
        ))
    }
}
