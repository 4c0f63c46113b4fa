//! `nurture run`: start the daemon with the configuration, logging to stderr.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use tracing_subscriber::EnvFilter;

use super::{Cli, CliError, ExitCode};
use crate::config::{Config, LogFormat, TransportKind};
use crate::daemon::clock::Clock;
use crate::daemon::smtp::Smtp;
use crate::daemon::transport::Transport;
use crate::daemon::{self, Control, DaemonError, Paths};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Exit once nothing is due and no email is ready to leave (for cron jobs and scripts),
    /// instead of waiting for the next due time.
    #[arg(long)]
    pub until_idle: bool,
}

pub fn run(cli: &Cli, args: &RunArgs) -> Result<ExitCode, CliError> {
    let config = cli.load_config()?;
    init_logging(&config);
    let clock = clock(&config)?;
    let transport = transport(&config)?;
    let paths = Paths {
        workflows: cli.workflows.clone(),
        templates: cli.templates.clone(),
    };
    let until_idle = args.until_idle;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Input(format!("cannot start the runtime: {e}")))?;
    let deadline = Duration::from_secs(config.daemon.shutdown_seconds);
    let result = runtime.block_on(async move {
        let control = Arc::new(Control::default());
        daemon::handle_signals(control.clone(), deadline)?;
        daemon::run(config, paths, clock, transport, control, until_idle).await
    });
    match result {
        Ok(()) => Ok(ExitCode::Success),
        Err(DaemonError::Invalid) => Err(CliError::Invalid(DaemonError::Invalid.to_string())),
        Err(error) => Err(CliError::Input(error.to_string())),
    }
}

/// The transport the configuration names.
pub(super) fn transport(config: &Config) -> Result<Transport, CliError> {
    let transport = match config.transport.kind {
        TransportKind::File => Transport::file(&config.transport.outbox).map_err(|e| {
            CliError::Input(format!(
                "cannot create the outbox folder {}: {e}",
                config.transport.outbox.display()
            ))
        })?,
        TransportKind::Smtp => Transport::Smtp(Box::new(
            Smtp::new(config.smtp.clone()).map_err(CliError::Usage)?,
        )),
    };
    // Signed as they leave, whatever the transport (see crate::mail::dkim).
    Ok(
        match crate::mail::dkim::Signer::load(&config.dkim).map_err(CliError::Usage)? {
            Some(signer) => Transport::Signed(Box::new(transport), Box::new(signer)),
            None => transport,
        },
    )
}

fn init_logging(config: &Config) {
    // RUST_LOG, when set, wins over the configured level.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    if stderr_is_the_journal() {
        // Under systemd: each event goes to the journal with its fields as journal fields
        // (`journalctl -u nurture -o verbose` shows them; `WORKFLOW=…` filters on them).
        match tracing_journald::layer() {
            Ok(journal) => {
                use tracing_subscriber::layer::SubscriberExt;
                use tracing_subscriber::util::SubscriberInitExt;
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journal.with_syslog_identifier("nurture".to_string()))
                    .init();
                return;
            }
            Err(error) => eprintln!("cannot log to the journal ({error}); logging to stderr"),
        }
    }
    // Colours only for a person at a terminal, never into a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether stderr is the journal's stream: systemd sets `JOURNAL_STREAM` to its
/// `device:inode`, and a child whose stderr was redirected elsewhere inherits the variable, so
/// the two are compared (as sd_journal_stream_fd(3) advises).
fn stderr_is_the_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    journal_stream_is(&stream.to_string_lossy(), stderr.dev(), stderr.ino())
}

/// `JOURNAL_STREAM`'s `device:inode` names this file.
fn journal_stream_is(stream: &str, dev: u64, ino: u64) -> bool {
    stream
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

fn clock(config: &Config) -> Result<Clock, CliError> {
    let start = config.daemon.rehearsal_start.trim();
    if start.is_empty() {
        return Ok(Clock::system());
    }
    let origin = DateTime::parse_from_rfc3339(start)
        .map_err(|e| {
            CliError::Usage(format!(
                "daemon.rehearsal_start `{start}` is not an RFC 3339 time ({e}); write 2026-11-23T09:00:00Z"
            ))
        })?
        .with_timezone(&Utc);
    Ok(Clock::rehearsal(origin, config.daemon.rehearsal_speed))
}

#[cfg(test)]
mod tests {
    use super::journal_stream_is;

    #[test]
    fn the_journal_stream_matches_only_its_own_device_and_inode() {
        assert!(journal_stream_is("8:12345", 8, 12345));
        assert!(!journal_stream_is("8:12345", 8, 12346));
        assert!(!journal_stream_is("9:12345", 8, 12345));
        assert!(!journal_stream_is("garbage", 8, 12345));
        assert!(!journal_stream_is("", 0, 0));
    }
}
