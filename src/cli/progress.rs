//! Progress bars on long imports and exports, drawn on stderr by `indicatif` when stderr is a
//! terminal (and what is exported is not going to that same terminal), never otherwise: logs,
//! pipes and tests get no escape codes.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a bar is redrawn at most; also its delay, so a short command shows none.
const TICK: Duration = Duration::from_millis(500);

/// A bar for an import of `file`: its length is the file's lines (a CSV or JSON Lines file
/// has one lead a line; quoted line breaks make it an estimate, raised if rows outrun it).
pub fn import(file: &Path) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let lines = count_lines(file).unwrap_or(0);
    let bar = ProgressBar::with_draw_target(Some(lines), ProgressDrawTarget::stderr_with_hz(2));
    bar.set_style(
        ProgressStyle::with_template(
            "importing {bar:30} {human_pos}/{human_len} rows, {per_sec}, {eta} left",
        )
        .expect("a valid template"),
    );
    bar
}

/// Moves an import's bar to `rows` read.
pub fn rows_read(bar: &ProgressBar, rows: usize) {
    let rows = rows as u64;
    if bar.length().is_some_and(|length| rows > length) {
        bar.set_length(rows);
    }
    bar.set_position(rows);
}

/// A spinner counting the lines an export writes (one lead a line, the CSV header aside);
/// hidden unless stderr is a terminal and the export goes elsewhere (`--out`, or a redirected
/// stdout): a bar between the exported lines would garble them.
pub fn export(to_stdout: bool) -> ProgressBar {
    let elsewhere = !to_stdout || !std::io::stdout().is_terminal();
    if !std::io::stderr().is_terminal() || !elsewhere {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(2));
    bar.set_style(
        ProgressStyle::with_template("exporting {spinner} {human_pos} lines, {per_sec}")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(TICK);
    bar
}

/// A writer that moves `bar` by the lines written through it.
pub struct Counting<W> {
    pub inner: W,
    pub bar: ProgressBar,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        let lines = buf[..written].iter().filter(|&&b| b == b'\n').count();
        self.bar.inc(lines as u64);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Drop for Counting<W> {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

fn count_lines(file: &Path) -> std::io::Result<u64> {
    let mut input = std::fs::File::open(file)?;
    let mut buffer = vec![0; 1 << 20];
    let mut lines = 0;
    loop {
        let read = std::io::Read::read(&mut input, &mut buffer)?;
        if read == 0 {
            return Ok(lines);
        }
        lines += buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}
