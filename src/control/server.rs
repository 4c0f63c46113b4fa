//! The daemon's side of the control socket: it listens, checks who connects, and runs each
//! command where it belongs.
//!
//! - A command that reads runs on a blocking thread beside the work loop, on a clone of the
//!   daemon's store handle; its output streams back through a small bounded channel, so a
//!   slow reader (`nurture leads export | less`) holds only that thread, never the loop.
//! - A command that writes runs inside the work loop, as an [`inbound::Request::Command`]
//!   answered between two batches; its output (a few lines) is collected and sent after.
//! - An import's chunks run in the loop one per request, in order; the next chunk is parsed
//!   while the loop writes the one before.
//! - A backup's snapshot is written on a blocking thread into a spool file in the store's
//!   folder (unlinked as soon as it is created: nothing is left behind if the daemon dies),
//!   which is then streamed back. Writers wait only while the snapshot is written to this
//!   disk, never for the command reading it (a stalled `nurture backup` holds no lock); and
//!   the daemon writes only in its own folder, which its sandbox allows.
//!
//! Connections live in the listener's task: when the daemon stops, the [`Server`] goes, and
//! with it every connection (a command still running gets no `Exit` and reports the stop).

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use super::protocol::{self, Chunk, Hello, Reply, Request, VERSION};
use super::socket_path;
use crate::cli::leads::import::{ImportOptions, Merger};
use crate::cli::session::{Output, Session, StoreCommand};
use crate::cli::{CliError, ExitCode};
use crate::daemon::clock::Clock;
use crate::daemon::inbound::{Context, Inbound};
use crate::project::Project;
use crate::store::Store;

/// What the daemon shares with the commands it runs.
pub struct Shared {
    /// A handle on the daemon's store, for commands that read.
    pub store: Store,
    /// The workflows the daemon runs now (the loop sends each reload).
    pub project: watch::Receiver<Arc<Project>>,
    /// The work loop's queue, for commands that write.
    pub inbound: Inbound,
    pub clock: Clock,
    /// The workflows folder, as messages name it.
    pub workflows_dir: String,
}

/// The listening socket; dropping it stops listening, ends every connection and removes the
/// socket file.
pub struct Server {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How long a new connection may take to say what it wants.
const HELLO_WITHIN: Duration = Duration::from_secs(10);

/// Output bytes gathered before they go out as one frame.
const FRAME_BYTES: usize = 32 * 1024;

/// Listens on the socket in the store folder `store` (replacing one a crash left behind),
/// readable and writable by its owner only.
pub fn start(store: &Path, shared: Shared) -> std::io::Result<Server> {
    let path = socket_path(store);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    // The socket is this process's: its owner is the one user commands are taken from.
    let owner = std::fs::metadata(&path)?.uid();
    let spool_dir = store.to_path_buf();
    let task = tokio::spawn(accept(listener, owner, Arc::new(shared), spool_dir));
    Ok(Server { task, path })
}

async fn accept(listener: UnixListener, owner: u32, shared: Arc<Shared>, spool_dir: PathBuf) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, owner, shared.clone(), spool_dir.clone()));
                }
                Err(error) => {
                    // Out of file descriptors, most likely: wait rather than spin.
                    warn!(%error, "the control socket cannot accept a command");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(stream: UnixStream, owner: u32, shared: Arc<Shared>, spool_dir: PathBuf) {
    let peer = stream.peer_cred().map(|cred| cred.uid());
    let (read, mut write) = stream.into_split();
    match peer {
        Ok(uid) if uid == owner => {}
        peer => {
            let who = peer.map_or_else(|e| format!("unknown ({e})"), |uid| uid.to_string());
            warn!(uid = %who, owner, "control socket: refused a command from another user");
            let message = format!(
                "refused: the daemon takes commands from its own user (uid {owner}) only, not uid {who}"
            );
            reply(&mut write, &Reply::failed(message)).await;
            return;
        }
    }
    let mut lines = BufReader::new(read).lines();
    let hello = match tokio::time::timeout(HELLO_WITHIN, lines.next_line()).await {
        Ok(Ok(Some(line))) => protocol::parse::<Hello>(&line),
        // Gone without a word, or silent: nothing to answer.
        _ => return,
    };
    let hello = match hello {
        Ok(hello) if hello.version == VERSION => hello,
        Ok(hello) => {
            let message = format!(
                "this nurture speaks control protocol {}, the running daemon {VERSION}: use the \
                 same nurture for both",
                hello.version
            );
            reply(&mut write, &Reply::failed(message)).await;
            return;
        }
        Err(error) => {
            reply(&mut write, &Reply::failed(error.to_string())).await;
            return;
        }
    };
    match hello.request {
        Request::Run(command) if command.writes() => write_command(command, &shared, write).await,
        Request::Run(command) => read_command(command, &shared, write).await,
        Request::Import { file, options } => import(&file, options, lines, &shared, write).await,
        Request::Backup => backup(&shared, &spool_dir, write).await,
    }
}

/// Writes a snapshot of the store into a spool file in `spool_dir`, then streams it.
async fn backup(shared: &Shared, spool_dir: &Path, mut write: OwnedWriteHalf) {
    let (frames, mut output) = mpsc::channel::<Reply>(16);
    let store = shared.store.clone();
    let spool = spool_dir.join(format!("backup-{}.spool", std::process::id()));
    let worker = tokio::task::spawn_blocking(move || {
        let sink = RefCell::new(Sink {
            target: Target::Stream(frames),
            pending: Vec::new(),
            to_err: false,
        });
        let result = spool_and_stream(&store, &spool, &sink);
        let mut sink = sink.into_inner();
        let _ = sink.send(Reply::exit(result));
    });
    let started = std::time::Instant::now();
    let mut exited = false;
    while let Some(frame) = output.recv().await {
        exited = matches!(frame, Reply::Exit { .. });
        if !reply(&mut write, &frame).await {
            return;
        }
    }
    if !exited {
        let _ = worker.await;
        reply(
            &mut write,
            &Reply::failed("the backup ended without a result"),
        )
        .await;
        return;
    }
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "backup through the control socket"
    );
}

/// The snapshot into the spool file (created `0600` and unlinked at once), then the file into
/// `sink` in frames of whole lines.
fn spool_and_stream(
    store: &Store,
    spool: &Path,
    sink: &RefCell<Sink>,
) -> Result<ExitCode, CliError> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| {
        CliError::Input(format!(
            "the daemon cannot write its spool file {}: {e}",
            spool.display()
        ))
    };
    let _ = std::fs::remove_file(spool);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(crate::private::FILE_MODE)
        .open(spool)
        .map_err(failed)?;
    let _ = std::fs::remove_file(spool);
    let started = std::time::Instant::now();
    let summary = {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        let summary = store
            .backup(&mut out)
            .map_err(|e| CliError::Input(e.to_string()))?;
        out.flush().map_err(failed)?;
        summary
    };
    info!(
        records = summary.records,
        leads = summary.leads,
        snapshot_ms = started.elapsed().as_millis() as u64,
        "backup snapshot written (writers waited for it)"
    );
    file.rewind().map_err(failed)?;
    let mut buffer = vec![0; FRAME_BYTES];
    loop {
        let read = file.read(&mut buffer).map_err(failed)?;
        if read == 0 {
            break;
        }
        sink.borrow_mut()
            .write(&buffer[..read], false)
            .map_err(crate::cli::leads::view::write_error)?;
    }
    sink.borrow_mut()
        .flush()
        .map_err(crate::cli::leads::view::write_error)?;
    Ok(ExitCode::Success)
}

/// Runs a command that only reads on a blocking thread, streaming its output.
async fn read_command(command: StoreCommand, shared: &Shared, mut write: OwnedWriteHalf) {
    let (frames, mut output) = mpsc::channel::<Reply>(16);
    let store = shared.store.clone();
    let project = shared.project.borrow().clone();
    let now = shared.clock.now();
    let dir = shared.workflows_dir.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let session = Session::running(&store, &project, now, dir);
        let sink = RefCell::new(Sink {
            target: Target::Stream(frames),
            pending: Vec::new(),
            to_err: false,
        });
        let result = execute(&command, &session, &sink);
        let mut sink = sink.into_inner();
        let _ = sink.send(Reply::exit(result));
    });
    let mut exited = false;
    while let Some(frame) = output.recv().await {
        exited = matches!(frame, Reply::Exit { .. });
        if !reply(&mut write, &frame).await {
            // The command went away: dropping the channel stops the worker at its next write.
            return;
        }
    }
    if !exited {
        let why = match worker.await {
            Err(error) if error.is_panic() => {
                "the command failed inside the daemon (a bug: see its log)"
            }
            _ => "the command ended without a result",
        };
        reply(&mut write, &Reply::failed(why)).await;
    }
}

/// Runs a command that may write in the work loop, between two batches.
async fn write_command(command: StoreCommand, shared: &Shared, mut write: OwnedWriteHalf) {
    let (answer, done) = oneshot::channel::<Vec<Reply>>();
    let dir = shared.workflows_dir.clone();
    let job = Box::new(move |cx: &Context<'_>| {
        let session = Session::running(cx.store, cx.project, cx.now, dir);
        let sink = RefCell::new(Sink {
            target: Target::Collect(Vec::new()),
            pending: Vec::new(),
            to_err: false,
        });
        let result = execute(&command, &session, &sink);
        let mut sink = sink.into_inner();
        let _ = sink.send(Reply::exit(result));
        if let Target::Collect(frames) = sink.target {
            let _ = answer.send(frames);
        }
    });
    let frames = match shared.inbound.command(job).await {
        Ok(()) => done.await.ok(),
        Err(_) => None,
    };
    let frames = frames.unwrap_or_else(|| vec![Reply::failed(STOPPING)]);
    for frame in &frames {
        if !reply(&mut write, frame).await {
            return;
        }
    }
}

const STOPPING: &str = "the daemon is stopping: run the command again once it has stopped";

/// Runs `command` with its output into `sink`; a panic in it is the command's failure, not
/// the daemon's.
fn execute(
    command: &StoreCommand,
    session: &Session<'_>,
    sink: &RefCell<Sink>,
) -> Result<ExitCode, CliError> {
    let run = || {
        let mut out = Port { sink, err: false };
        let mut err = Port { sink, err: true };
        let mut output = Output {
            out: &mut out,
            err: &mut err,
        };
        command.execute(session, &mut output)
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
        Err(CliError::Input(
            "the command failed inside the daemon (a bug: see its log)".into(),
        ))
    });
    let flushed = sink.borrow_mut().flush();
    match (result, flushed) {
        (Ok(_), Err(error)) => Err(crate::cli::leads::view::write_error(error)),
        (result, _) => result,
    }
}

/// Streams an import's chunks into the work loop, one request each, in order.
async fn import(
    file: &str,
    options: ImportOptions,
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    shared: &Shared,
    mut write: OwnedWriteHalf,
) {
    // The next chunk is read and parsed while the loop writes this one.
    let (parsed, mut chunks) = mpsc::channel::<std::io::Result<Chunk>>(1);
    let reading = tokio::spawn(async move {
        loop {
            let chunk = match lines.next_line().await {
                Ok(Some(line)) => protocol::parse::<Chunk>(&line),
                Ok(None) => return,
                Err(error) => Err(error),
            };
            let failed = chunk.is_err();
            if parsed.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    let _reading = AbortOnDrop(reading);
    let mut merger = Box::new(Merger::new(options, file, false));
    let mut leads = 0;
    loop {
        let frame = match chunks.recv().await {
            Some(Ok(Chunk::Leads(rows))) => {
                leads += rows.len();
                let (answer, done) = oneshot::channel();
                let job = Box::new(move |cx: &Context<'_>| {
                    let rows = rows.into_iter().map(Into::into).collect();
                    let result = merger.merge_and_apply(cx.store, rows, cx.now);
                    let _ = answer.send((merger, result));
                });
                let answered = match shared.inbound.command(job).await {
                    Ok(()) => done.await.ok(),
                    Err(_) => None,
                };
                let Some((back, result)) = answered else {
                    reply(&mut write, &Reply::failed(STOPPING)).await;
                    return;
                };
                merger = back;
                match result {
                    Ok(counts) => Reply::Imported(counts),
                    Err(error) => {
                        reply(&mut write, &Reply::failed(error.to_string())).await;
                        return;
                    }
                }
            }
            Some(Ok(Chunk::End)) => {
                let store = shared.store.clone();
                let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
                let frame = match flushed {
                    Ok(Ok(())) => Reply::exit(Ok(ExitCode::Success)),
                    Ok(Err(error)) => Reply::failed(error.to_string()),
                    Err(error) => Reply::failed(error.to_string()),
                };
                info!(file, leads, "import through the control socket");
                reply(&mut write, &frame).await;
                return;
            }
            Some(Err(error)) => {
                reply(&mut write, &Reply::failed(error.to_string())).await;
                return;
            }
            None => {
                // The chunks written stay written, as when an import without a daemon stops.
                warn!(
                    file,
                    leads, "an import through the control socket stopped early"
                );
                return;
            }
        };
        if !reply(&mut write, &frame).await {
            return;
        }
    }
}

/// Writes one frame; false when the command is gone.
async fn reply(write: &mut OwnedWriteHalf, frame: &Reply) -> bool {
    write.write_all(&protocol::line(frame)).await.is_ok()
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A command's output on its way to the socket: standard output and error in the order they
/// were written, gathered into frames of up to [`FRAME_BYTES`].
struct Sink {
    target: Target,
    /// Bytes not yet sent, all for one stream.
    pending: Vec<u8>,
    /// Whether `pending` is standard error's.
    to_err: bool,
}

enum Target {
    /// To the connection as it comes (a command that reads: its output may be large).
    Stream(mpsc::Sender<Reply>),
    /// Kept until the command ends (a command that writes runs in the work loop, which must
    /// never wait for a slow terminal).
    Collect(Vec<Reply>),
}

impl Sink {
    fn write(&mut self, bytes: &[u8], to_err: bool) -> std::io::Result<()> {
        if to_err != self.to_err {
            self.flush()?;
            self.to_err = to_err;
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= FRAME_BYTES {
            // Whole lines only, so a character is never cut in two.
            if let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
                let rest = self.pending.split_off(end + 1);
                let full = std::mem::replace(&mut self.pending, rest);
                self.send_text(full)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let full = std::mem::take(&mut self.pending);
        self.send_text(full)
    }

    fn send_text(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let frame = if self.to_err {
            Reply::Err(text)
        } else {
            Reply::Out(text)
        };
        self.send(frame)
    }

    fn send(&mut self, frame: Reply) -> std::io::Result<()> {
        match &mut self.target {
            Target::Stream(sender) => sender.blocking_send(frame).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the command closed the connection",
                )
            }),
            Target::Collect(frames) => {
                frames.push(frame);
                Ok(())
            }
        }
    }
}

/// One of a command's two output streams.
struct Port<'a> {
    sink: &'a RefCell<Sink>,
    err: bool,
}

impl Write for Port<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sink.borrow_mut().write(buf, self.err)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Frames leave in order at the end anyway; a command's flush need not cut one short.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect() -> RefCell<Sink> {
        RefCell::new(Sink {
            target: Target::Collect(Vec::new()),
            pending: Vec::new(),
            to_err: false,
        })
    }

    fn frames(sink: RefCell<Sink>) -> Vec<String> {
        let mut sink = sink.into_inner();
        sink.flush().unwrap();
        let Target::Collect(frames) = sink.target else {
            unreachable!("a collecting sink")
        };
        frames
            .iter()
            .map(|frame| String::from_utf8(protocol::line(frame)).unwrap())
            .collect()
    }

    #[test]
    fn output_and_errors_keep_the_order_they_were_written_in() {
        let sink = collect();
        let mut out = Port {
            sink: &sink,
            err: false,
        };
        let mut err = Port {
            sink: &sink,
            err: true,
        };
        writeln!(out, "one").unwrap();
        writeln!(out, "two").unwrap();
        writeln!(err, "warning: three").unwrap();
        write!(out, "four").unwrap();
        assert_eq!(
            frames(sink),
            [
                "{\"out\":\"one\\ntwo\\n\"}\n",
                "{\"err\":\"warning: three\\n\"}\n",
                "{\"out\":\"four\"}\n"
            ]
        );
    }

    #[test]
    fn a_large_output_goes_in_frames_of_whole_lines() {
        let sink = collect();
        let mut out = Port {
            sink: &sink,
            err: false,
        };
        // Two-byte characters, so a frame cut anywhere but a line's end would split one.
        let line = format!("{}\n", "é".repeat(99));
        for _ in 0..400 {
            out.write_all(line.as_bytes()).unwrap();
        }
        let frames = frames(sink);
        assert!(frames.len() > 1, "{} frames", frames.len());
        let mut text = String::new();
        for frame in &frames {
            let Reply::Out(part) = protocol::parse::<Reply>(frame).unwrap() else {
                panic!("{frame}")
            };
            assert!(part.ends_with('\n'));
            text.push_str(&part);
        }
        assert_eq!(text, line.repeat(400));
    }
}
