//! CSV records split by hand, for an import that never loses a row in silence.
//!
//! The `csv` crate reads an unclosed quote as one cell running to the end of the file (every
//! later row vanishes into it without a word), and it has no limit on a cell. This reader
//! splits records itself so that it can:
//!
//! - number each record by the file line where it starts, counting a first line behind a BOM,
//!   CRLF endings and newlines inside quoted cells;
//! - notice a quote that does not close where a row can end (at the end of the file, past
//!   [`MAX_CELL`], before text that is not a separator, or where the row would have the wrong
//!   number of cells) and, rather than swallowing what follows, reject that row and read on
//!   from the line after the one it started on;
//! - refuse a cell over [`MAX_CELL`] bytes or a line over [`MAX_LINE`] while holding no more
//!   than about that much in memory;
//! - tell `,` from `;` and tab by looking at the header line;
//! - read rows that are not UTF-8 as Windows-1252 (what "Latin-1" files from Excel are), or
//!   every row in an encoding chosen by label (any ASCII-compatible one `encoding_rs` knows).
//!
//! It is the bulk path of an import (a million rows): a cell is found with `memchr`, not a
//! byte at a time, a row is checked for UTF-8 once and its cells are slices of it, and the
//! buffers are reused from row to row.
//!
//! Quoting follows RFC 4180: a cell that starts with `"` ends at the next lone `"`, `""`
//! inside it is one quote, and the closing quote must be followed by the separator or the end
//! of the row. A quote inside an unquoted cell (`5" screen`) is kept as text, as spreadsheets
//! write it. Empty lines between rows are not rows.

use std::borrow::Cow;
use std::io::{self, BufRead};

use encoding_rs::{Encoding, WINDOWS_1252};
use memchr::{memchr, memchr2};

/// The most bytes one cell may hold. Far above any real name, note or address, and small
/// enough that a table of leads stays readable and a runaway quote is caught early.
pub const MAX_CELL: usize = 64 * 1024;

/// The most bytes one line may hold; the rest of a longer line is skipped, not kept.
pub const MAX_LINE: usize = 1024 * 1024;

/// How to read a CSV file; what is `None` is worked out from the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CsvOptions {
    /// The separator; by default the most frequent of `,`, `;` and tab in the header line
    /// (outside quotes), `,` when none or tied.
    pub delimiter: Option<u8>,
    /// The encoding of every row; by default each row is UTF-8 when it is valid UTF-8 and
    /// Windows-1252 otherwise.
    pub encoding: Option<&'static Encoding>,
}

impl CsvOptions {
    /// `--delimiter`: one ASCII character, or `tab` / `\t`.
    pub fn parse_delimiter(text: &str) -> Result<u8, String> {
        match text {
            "tab" | "TAB" | "\\t" | "\t" => Ok(b'\t'),
            _ if text.len() == 1 && text.is_ascii() && !matches!(text, "\"" | "\n" | "\r") => {
                Ok(text.as_bytes()[0])
            }
            _ => Err(format!(
                "`{text}` is not a separator; write one character such as `,` `;` `|`, or `tab`"
            )),
        }
    }

    /// `--encoding`: a WHATWG label (`utf-8`, `windows-1252`, `latin1`, `iso-8859-15`, …) of
    /// an encoding in which the separators and quotes are the ASCII bytes.
    pub fn parse_encoding(text: &str) -> Result<&'static Encoding, String> {
        match Encoding::for_label_no_replacement(text.trim().as_bytes()) {
            Some(encoding) if encoding.is_ascii_compatible() => Ok(encoding),
            Some(encoding) => Err(format!(
                "{} cannot be read as CSV here; save the file as UTF-8",
                encoding.name()
            )),
            None => Err(format!(
                "`{text}` is not an encoding name; for example utf-8, windows-1252, latin1, iso-8859-15"
            )),
        }
    }
}

/// One record: its cells (read them with [`Records::cell`]), or why it was refused. Both carry
/// the file line where the record starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Cells(usize),
    Bad(usize, String),
}

/// Where a quoted cell that spans lines opened: its line and 1-based column.
#[derive(Debug, Clone, Copy)]
struct Quote {
    line: usize,
    column: usize,
}

/// A CSV file read a record at a time.
pub struct Records<'a> {
    lines: Lines<'a>,
    delimiter: u8,
    /// The chosen encoding, or `None`: each row UTF-8 if it is, else Windows-1252.
    encoding: Option<&'static Encoding>,
    /// The header's cell count, once known: a row that spans lines only to end with another
    /// count is taken for an unclosed quote.
    expected: Option<usize>,
    /// The header's names, for messages that name a column.
    names: Vec<String>,
    /// Rows read as Windows-1252 because they were not UTF-8, and the first one's line.
    legacy_rows: usize,
    legacy_first: usize,
    /// The current record: its raw bytes (every line it spans), the lines among them that were
    /// cut at [`MAX_LINE`], its cells' bytes one after another, and where each cell ends.
    raw: Vec<u8>,
    cut: Vec<usize>,
    cells: Vec<u8>,
    ends: Vec<usize>,
    /// The cells' bytes once they were found to be UTF-8 (`in_text`; `cells` is then empty):
    /// checked once per row, each cell is then a slice of it. The two buffers trade places,
    /// never copied.
    text: String,
    in_text: bool,
    /// Whether the current record is decoded as Windows-1252 (detection only).
    legacy: bool,
}

impl<'a> Records<'a> {
    /// Starts reading: skips a UTF-8 byte order mark, refuses UTF-16, and picks the separator.
    pub fn new(reader: Box<dyn BufRead + 'a>, options: CsvOptions) -> Result<Records<'a>, String> {
        let mut lines = Lines::new(reader);
        // The first non-blank line, for the byte order mark and the separator; then it is read
        // again as a record.
        let mut head = Vec::new();
        let mut cut = Vec::new();
        let mut last;
        loop {
            let number = lines.next;
            last = head.len();
            match lines.read(&mut head).map_err(|e| e.to_string())? {
                None => break,
                Some(was_cut) => {
                    if was_cut {
                        cut.push(number);
                    }
                    if number == 1 && head.starts_with(b"\xEF\xBB\xBF") {
                        head.drain(..3);
                    }
                    if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
                        return Err("the file is UTF-16 text; save it as UTF-8 (in Excel: \
                                    \"CSV UTF-8\")"
                            .to_string());
                    }
                    if !is_blank(&head[last..]) {
                        break;
                    }
                }
            }
        }
        let delimiter = options
            .delimiter
            .unwrap_or_else(|| sniff(&head[last.min(head.len())..]));
        lines.push_back(&head, 1, &cut);
        Ok(Records {
            lines,
            delimiter,
            encoding: options.encoding,
            expected: None,
            names: Vec::new(),
            legacy_rows: 0,
            legacy_first: 0,
            raw: Vec::new(),
            cut: Vec::new(),
            cells: Vec::new(),
            ends: Vec::new(),
            text: String::new(),
            in_text: false,
            legacy: false,
        })
    }

    /// Records the header: its names for messages, its cell count for telling an unclosed
    /// quote from a cell that spans lines.
    pub fn set_header(&mut self, names: Vec<String>) {
        self.expected = Some(names.len());
        self.names = names;
    }

    /// How many rows were read as Windows-1252 because they were not UTF-8, and the line of the
    /// first (detection only).
    pub fn legacy_rows(&self) -> (usize, usize) {
        (self.legacy_rows, self.legacy_first)
    }

    /// The next record, skipping empty lines; `None` at the end of the file. Only a failed read
    /// is an error: whatever the bytes, a record is a row or a refused row.
    pub fn next_row(&mut self) -> io::Result<Option<Row>> {
        loop {
            self.raw.clear();
            self.cut.clear();
            if self.in_text {
                self.cells = std::mem::take(&mut self.text).into_bytes();
                self.in_text = false;
            }
            self.cells.clear();
            self.ends.clear();
            self.legacy = false;
            let line = self.lines.next;
            match self.lines.read(&mut self.raw)? {
                None => return Ok(None),
                Some(true) => self.cut.push(line),
                Some(false) => {}
            }
            if is_blank(&self.raw) {
                continue;
            }
            let row = self.scan(line)?;
            if let Row::Cells(_) = row
                && self.encoding.is_none_or(|e| e == encoding_rs::UTF_8)
            {
                match String::from_utf8(std::mem::take(&mut self.cells)) {
                    Ok(text) => {
                        self.text = text;
                        self.in_text = true;
                    }
                    Err(error) => {
                        self.cells = error.into_bytes();
                        if self.encoding.is_none() {
                            self.legacy = true;
                            if self.legacy_rows == 0 {
                                self.legacy_first = line;
                            }
                            self.legacy_rows += 1;
                        }
                    }
                }
            }
            return Ok(Some(row));
        }
    }

    /// How many cells the current record has.
    pub fn cell_count(&self) -> usize {
        self.ends.len()
    }

    /// The current record's cell `index` as text; `Err` says why it cannot be read.
    pub fn cell(&self, index: usize) -> Result<Cow<'_, str>, String> {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        let end = self.ends[index];
        // For rows read as UTF-8: detected (`None`) or chosen (`Some(UTF_8)`).
        let not_utf8 = || match self.encoding {
            None => format!("{} is not UTF-8 text", self.column(index + 1)),
            Some(_) => format!(
                "{} is not UTF-8 text; if the file is Windows-1252 (Latin-1), import it with \
                 --encoding windows-1252",
                self.column(index + 1)
            ),
        };
        if self.in_text {
            // The row is UTF-8; a cell is too unless it splits a character, which a slice
            // that does not end on character boundaries tells.
            return self
                .text
                .get(start..end)
                .map(Cow::Borrowed)
                .ok_or_else(not_utf8);
        }
        let bytes = &self.cells[start..end];
        match self.encoding {
            None if self.legacy => Ok(WINDOWS_1252.decode_without_bom_handling(bytes).0),
            None => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| not_utf8()),
            Some(encoding) if encoding == encoding_rs::UTF_8 => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| not_utf8()),
            Some(encoding) => encoding
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or_else(|| {
                    format!("{} is not {} text", self.column(index + 1), encoding.name())
                }),
        }
    }

    /// "column 3 (`company`)", or "column 3" past the header.
    fn column(&self, column: usize) -> String {
        match self.names.get(column - 1) {
            Some(name) if !name.is_empty() => format!("column {column} (`{name}`)"),
            _ => format!("column {column}"),
        }
    }

    /// Splits the record that starts on `line` (already in `raw`) into cells, reading more
    /// lines while a quoted cell runs on.
    ///
    /// A cell at a time, not a byte at a time: an unquoted cell is copied up to the next
    /// separator or newline and a quoted one up to its next quote, both found with `memchr`
    /// (a million-row import spends most of its reading here).
    fn scan(&mut self, line: usize) -> io::Result<Row> {
        let mut at = 0;
        let mut current = line;
        // The first quoted cell that ran past the end of a line.
        let mut spanning: Option<Quote> = None;
        loop {
            let start = self.cells.len();
            let column = self.ends.len() + 1;
            if self.raw.get(at) != Some(&b'"') {
                // An unquoted cell (a quote inside it is text): up to the separator, or the
                // end of the line without the CR of a CRLF.
                let rest = &self.raw[at..];
                let (len, newline) = match memchr2(self.delimiter, b'\n', rest) {
                    Some(i) => (i, rest[i] == b'\n'),
                    None => (rest.len(), true),
                };
                let text = &rest[..len];
                let text = match text.strip_suffix(b"\r") {
                    Some(text) if newline => text,
                    _ => text,
                };
                if text.len() > MAX_CELL {
                    return Ok(self.too_big(line, column));
                }
                self.cells.extend_from_slice(text);
                self.ends.push(self.cells.len());
                at += len + 1;
                if newline {
                    break;
                }
                continue;
            }
            // A quoted cell: up to the next lone quote, reading on past the end of a line.
            let quote = Quote {
                line: current,
                column,
            };
            at += 1;
            loop {
                let rest = &self.raw[at..];
                let found = memchr(b'"', rest);
                self.cells
                    .extend_from_slice(&rest[..found.unwrap_or(rest.len())]);
                let doubled = match found {
                    Some(i) => {
                        at += i + 1;
                        // `""` is one quote in the text; a lone quote closes the cell.
                        let doubled = self.raw.get(at) == Some(&b'"');
                        if doubled {
                            self.cells.push(b'"');
                            at += 1;
                        }
                        doubled
                    }
                    None => {
                        at = self.raw.len();
                        true
                    }
                };
                if self.cells.len() - start > MAX_CELL {
                    if current != quote.line {
                        return Ok(self.unclosed(line, quote, "it runs past 64 KiB"));
                    }
                    return Ok(self.too_big(line, column));
                }
                if found.is_some() && !doubled {
                    break;
                }
                if found.is_none() {
                    spanning.get_or_insert(quote);
                    let next = self.lines.next;
                    match self.lines.read(&mut self.raw)? {
                        None => {
                            return Ok(self.unclosed(
                                line,
                                quote,
                                "it runs to the end of the file",
                            ));
                        }
                        Some(was_cut) => {
                            if was_cut {
                                self.cut.push(next);
                            }
                            current = next;
                        }
                    }
                }
            }
            // After the closing quote: the separator or the end of the row (a CR before the
            // newline belongs to the line end), nothing else.
            if self.raw.get(at) == Some(&b'\r')
                && matches!(self.raw.get(at + 1), None | Some(b'\n'))
            {
                at += 1;
            }
            match self.raw.get(at) {
                None | Some(b'\n') => {
                    self.ends.push(self.cells.len());
                    break;
                }
                Some(&byte) if byte == self.delimiter => {
                    self.ends.push(self.cells.len());
                    at += 1;
                }
                Some(_) => {
                    if let Some(open) = spanning {
                        let detail = format!(
                            "the quote that would close it, on line {current}, is followed by \
                             text instead of a separator"
                        );
                        return Ok(self.unclosed(line, open, &detail));
                    }
                    let reason = format!(
                        "{}: text after the closing quote; a quote inside a quoted cell is \
                         written twice (\"\")",
                        self.column(column)
                    );
                    return Ok(Row::Bad(line, reason));
                }
            }
        }
        self.finish(line, current, spanning)
    }

    /// A record read to its end: refused if one of its lines was cut, or if a quoted cell ran
    /// on to leave it with another cell count than the header's.
    fn finish(&mut self, line: usize, current: usize, spanning: Option<Quote>) -> io::Result<Row> {
        if let Some(&cut) = self.cut.first() {
            return Ok(Row::Bad(
                line,
                format!("line {cut} is longer than 1 MiB; a line may hold at most 1 MiB"),
            ));
        }
        if let (Some(open), Some(expected)) = (spanning, self.expected)
            && self.ends.len() != expected
        {
            let detail = format!(
                "the row would end on line {current} with {} cells where the header has \
                 {expected}",
                self.ends.len()
            );
            return Ok(self.unclosed(line, open, &detail));
        }
        Ok(Row::Cells(line))
    }

    /// Refuses the record that starts on `line` for its cell in `column` over [`MAX_CELL`].
    fn too_big(&self, line: usize, column: usize) -> Row {
        let reason = format!(
            "{} holds more than 64 KiB; a cell may hold at most 64 KiB",
            self.column(column)
        );
        Row::Bad(line, reason)
    }

    /// Refuses the record that starts on `line` for the quote `open`, and hands the lines after
    /// `line` back to be read again as rows of their own.
    fn unclosed(&mut self, line: usize, open: Quote, detail: &str) -> Row {
        let resume = line + 1;
        if let Some(end) = memchr(b'\n', &self.raw) {
            let cut: Vec<usize> = self.cut.iter().copied().filter(|&n| n > line).collect();
            self.lines.push_back(&self.raw[end + 1..], resume, &cut);
        }
        let opened = if open.line == line {
            String::new()
        } else {
            format!(" opened on line {}", open.line)
        };
        Row::Bad(
            line,
            format!(
                "unclosed quote in {}{opened}: {detail}; this row is skipped and reading \
                 resumes at line {resume}",
                self.column(open.column)
            ),
        )
    }
}

/// An empty line (or the end of one).
fn is_blank(line: &[u8]) -> bool {
    matches!(line, b"" | b"\n" | b"\r\n" | b"\r")
}

/// The separator of a header line: the most frequent of `,`, `;` and tab outside quotes, a
/// comma when none or tied.
fn sniff(line: &[u8]) -> u8 {
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for &byte in line {
        if byte == b'"' {
            quoted = !quoted;
        } else if !quoted && let Some(count) = counts.iter_mut().find(|(c, _)| *c == byte) {
            count.1 += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(separator, count)| (count, separator == b','))
        .map_or(b',', |(separator, _)| separator)
}

/// Appends the next line of `inner`, with its newline, to `out`. `Some(true)`: the line was
/// longer than [`MAX_LINE`] and only its start was kept (with a newline, so lines stay lines);
/// `None`: the end of the input.
pub fn read_line(inner: &mut dyn BufRead, out: &mut Vec<u8>) -> io::Result<Option<bool>> {
    let mut taken = 0;
    let mut cut = false;
    loop {
        let buffer = match inner.fill_buf() {
            Ok(buffer) => buffer,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if buffer.is_empty() {
            break;
        }
        let (len, ends) = match memchr(b'\n', buffer) {
            Some(i) => (i + 1, true),
            None => (buffer.len(), false),
        };
        let room = MAX_LINE.saturating_sub(taken);
        if len > room {
            cut = true;
        }
        out.extend_from_slice(&buffer[..len.min(room)]);
        taken += len;
        inner.consume(len);
        if ends {
            break;
        }
    }
    if taken == 0 {
        return Ok(None);
    }
    if cut {
        out.push(b'\n');
    }
    Ok(Some(cut))
}

/// The file's lines, with lines handed back to be read again first, each numbered.
struct Lines<'a> {
    inner: Box<dyn BufRead + 'a>,
    /// Lines handed back ([`Lines::push_back`]), read before `inner`.
    replay: Vec<u8>,
    replay_at: usize,
    /// Lines in `replay` that were cut at [`MAX_LINE`] when first read.
    cut: Vec<usize>,
    /// The number of the next line [`Lines::read`] hands out.
    next: usize,
}

impl<'a> Lines<'a> {
    fn new(inner: Box<dyn BufRead + 'a>) -> Lines<'a> {
        Lines {
            inner,
            replay: Vec::new(),
            replay_at: 0,
            cut: Vec::new(),
            next: 1,
        }
    }

    /// Appends the next line, with its newline, to `out`. `Some(true)`: the line was longer
    /// than [`MAX_LINE`] and only its start was kept (with a newline, so lines stay lines);
    /// `None`: the end of the file.
    fn read(&mut self, out: &mut Vec<u8>) -> io::Result<Option<bool>> {
        let number = self.next;
        if self.replay_at < self.replay.len() {
            let rest = &self.replay[self.replay_at..];
            let len = memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            out.extend_from_slice(&rest[..len]);
            self.replay_at += len;
            if self.replay_at == self.replay.len() {
                self.replay.clear();
                self.replay_at = 0;
            }
            self.next += 1;
            let cut = match self.cut.iter().position(|&n| n == number) {
                Some(i) => {
                    self.cut.swap_remove(i);
                    true
                }
                None => false,
            };
            return Ok(Some(cut));
        }
        let cut = read_line(&mut self.inner, out)?;
        if cut.is_some() {
            self.next += 1;
        }
        Ok(cut)
    }

    /// Hands `lines` (whole lines, the first numbered `first`) back, to be read before anything
    /// else.
    fn push_back(&mut self, lines: &[u8], first: usize, cut: &[usize]) {
        if lines.is_empty() {
            return;
        }
        let mut replay = Vec::with_capacity(lines.len() + self.replay.len() - self.replay_at);
        replay.extend_from_slice(lines);
        replay.extend_from_slice(&self.replay[self.replay_at..]);
        self.replay = replay;
        self.replay_at = 0;
        self.next = first;
        self.cut.extend_from_slice(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the tests see it: its line and cells, or its line and why it was refused.
    type Read = Result<(usize, Vec<String>), (usize, String)>;

    /// Every record of `text` as its line and cells, or its line and reason.
    fn rows(text: &[u8], options: CsvOptions, header: usize) -> Vec<Read> {
        let mut records = Records::new(Box::new(text), options).unwrap();
        let mut out = Vec::new();
        while let Some(row) = records.next_row().unwrap() {
            match row {
                Row::Cells(line) => {
                    let cells = (0..records.cell_count())
                        .map(|i| records.cell(i).unwrap().into_owned())
                        .collect::<Vec<_>>();
                    if out.is_empty() && header > 0 {
                        records.set_header(cells.clone());
                    }
                    out.push(Ok((line, cells)));
                }
                Row::Bad(line, reason) => out.push(Err((line, reason))),
            }
        }
        out
    }

    fn lines_of(rows: &[Read]) -> Vec<usize> {
        rows.iter()
            .map(|row| match row {
                Ok((line, _)) | Err((line, _)) => *line,
            })
            .collect()
    }

    #[test]
    fn an_unclosed_quote_is_one_bad_row_and_reading_resumes_on_the_next_line() {
        let text = b"email,company\na@x,\"Acme\nb@x,Beta\nc@x,\"Cee, Inc\"\nd@x,Dee\n";
        let rows = rows(text, CsvOptions::default(), 1);
        assert_eq!(lines_of(&rows), [1, 2, 3, 4, 5]);
        let Err((2, reason)) = &rows[1] else {
            panic!("{rows:?}")
        };
        assert!(
            reason.starts_with("unclosed quote in column 2 (`company`)"),
            "{reason}"
        );
        assert!(reason.ends_with("resumes at line 3"), "{reason}");
        assert_eq!(rows[3], Ok((4, vec!["c@x".into(), "Cee, Inc".into()])));

        // No later quote at all: the quote runs to the end of the file.
        let rows = super::tests::rows(b"email,n\na@x,\"A\nb@x,B\nc@x,C", CsvOptions::default(), 1);
        assert_eq!(lines_of(&rows), [1, 2, 3, 4]);
        assert!(matches!(&rows[1], Err((2, r)) if r.contains("end of the file")));
        assert_eq!(rows[3], Ok((4, vec!["c@x".into(), "C".into()])));
    }

    #[test]
    fn quoted_newlines_crlf_and_a_bom_keep_the_file_lines() {
        let text = b"\xEF\xBB\xBFemail,notes\r\na@x,\"one\r\ntwo\"\r\n\r\nb@x,\"say \"\"hi\"\"\"\r\nc@x,plain";
        let rows = rows(text, CsvOptions::default(), 1);
        assert_eq!(lines_of(&rows), [1, 2, 5, 6]);
        assert_eq!(rows[0], Ok((1, vec!["email".into(), "notes".into()])));
        assert_eq!(rows[1], Ok((2, vec!["a@x".into(), "one\r\ntwo".into()])));
        assert_eq!(rows[2], Ok((5, vec!["b@x".into(), "say \"hi\"".into()])));
    }

    #[test]
    fn separators_are_sniffed_from_the_header_or_chosen() {
        let semicolons = rows(
            b"email;name;\"a,b,c\"\nx@y;Ana;1\n",
            CsvOptions::default(),
            0,
        );
        assert_eq!(
            semicolons[1],
            Ok((2, vec!["x@y".into(), "Ana".into(), "1".into()]))
        );
        let tabs = rows(b"email\tname\nx@y\tAna, Bo\n", CsvOptions::default(), 0);
        assert_eq!(tabs[1], Ok((2, vec!["x@y".into(), "Ana, Bo".into()])));
        let chosen = CsvOptions {
            delimiter: Some(b'|'),
            ..CsvOptions::default()
        };
        assert_eq!(
            rows(b"email|n\nx@y|1\n", chosen, 0)[1],
            Ok((2, vec!["x@y".into(), "1".into()]))
        );
        assert_eq!(CsvOptions::parse_delimiter("tab"), Ok(b'\t'));
        assert!(CsvOptions::parse_delimiter(";;").is_err());
    }

    #[test]
    fn rows_that_are_not_utf8_are_windows_1252_unless_an_encoding_is_chosen() {
        let text = b"email,name\na@x,J\xFCrgen\nb@x,M\xC3\xBCller\n";
        let rows = rows(text, CsvOptions::default(), 0);
        assert_eq!(rows[1], Ok((2, vec!["a@x".into(), "Jürgen".into()])));
        assert_eq!(rows[2], Ok((3, vec!["b@x".into(), "Müller".into()])));

        let utf8 = CsvOptions {
            encoding: Some(CsvOptions::parse_encoding("utf-8").unwrap()),
            ..CsvOptions::default()
        };
        let mut records = Records::new(Box::new(&text[..]), utf8).unwrap();
        records.next_row().unwrap();
        records.next_row().unwrap();
        assert!(
            records
                .cell(1)
                .unwrap_err()
                .contains("--encoding windows-1252")
        );
        let latin1 = CsvOptions::parse_encoding("latin1").unwrap();
        assert_eq!(latin1, WINDOWS_1252);
        assert!(CsvOptions::parse_encoding("utf-16le").is_err());
        assert!(Records::new(Box::new(&b"\xFF\xFEe\0"[..]), CsvOptions::default()).is_err());
    }

    #[test]
    fn a_huge_cell_is_refused_with_its_column_and_the_next_line_reads() {
        let mut text = b"email,notes\na@x,".to_vec();
        text.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
        text.extend_from_slice(b"\nb@x,fine\n");
        let rows = rows(&text, CsvOptions::default(), 1);
        assert_eq!(lines_of(&rows), [1, 2, 3]);
        assert!(
            matches!(&rows[1], Err((2, r)) if r.starts_with("column 2 (`notes`) holds more than 64 KiB")),
            "{:?}",
            rows[1]
        );
        assert_eq!(rows[2], Ok((3, vec!["b@x".into(), "fine".into()])));
    }

    #[test]
    fn text_after_a_closing_quote_is_refused_on_its_line() {
        let rows = rows(b"email,n\na@x,\"A\"B\nb@x,C\n", CsvOptions::default(), 1);
        assert!(matches!(&rows[1], Err((2, r)) if r.contains("text after the closing quote")));
        assert_eq!(rows[2], Ok((3, vec!["b@x".into(), "C".into()])));
    }
}
