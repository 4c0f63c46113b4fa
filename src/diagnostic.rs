//! Diagnostics: one problem in a user's file, rendered like rustc.
//!
//! ```text
//! error: no template named `welcom`
//!   --> workflows/trial.flow:12:10
//!    |
//! 12 |     send "welcom" subject "Hi"
//!    |          ^^^^^^^^ not in templates/
//!    |
//!    = hint: did you mean `welcome`?
//! ```
//!
//! Every problem a user can cause in a workflow or template file becomes a `Diagnostic`, made
//! from a byte span of the source so it can always point at it. Wording lives with the code that
//! finds the problem; the layout lives here, in one place.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The file cannot be used: `check` fails, the daemon keeps the previous version.
    Error,
    /// Worth fixing, but the file works.
    Warning,
}

/// Where a diagnostic points: a file, a 1-based line and column, and how many characters to
/// underline, with the text of that line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub width: usize,
    pub source_line: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Lower case, names in backticks: "no step named `nudg`".
    pub message: String,
    pub location: Option<Location>,
    /// Short text printed after the caret.
    pub label: Option<String>,
    /// How to fix it: "did you mean `nudge`?".
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            location: None,
            label: None,
            hint: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    /// Points the diagnostic at `span` (byte offsets) of `source`, the text of `path`.
    pub fn at(mut self, path: &Path, source: &str, span: Range<usize>) -> Diagnostic {
        self.location = Some(Location::from_span(path, source, span));
        self
    }

    /// Points the diagnostic at a 1-based line and column (for errors from other parsers, such
    /// as handlebars, that report positions rather than spans).
    pub fn at_line(mut self, path: &Path, source: &str, line: usize, column: usize) -> Diagnostic {
        let source_line = source.lines().nth(line.saturating_sub(1)).unwrap_or("");
        self.location = Some(Location {
            path: path.to_path_buf(),
            line: line.max(1),
            column: column.max(1),
            width: 1,
            source_line: source_line.to_string(),
        });
        self
    }

    /// Points at a whole file, with no line.
    pub fn in_file(mut self, path: &Path) -> Diagnostic {
        self.location = Some(Location {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            width: 0,
            source_line: String::new(),
        });
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl Location {
    fn from_span(path: &Path, source: &str, span: Range<usize>) -> Location {
        let start = floor_char_boundary(source, span.start.min(source.len()));
        let end = floor_char_boundary(source, span.end.clamp(start, source.len()));
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let source_line = source[line_start..line_end].trim_end_matches('\r');
        let column = source[line_start..start].chars().count() + 1;
        // Underline to the end of the span, or of the line when the span goes past it.
        let width = source[start..end.min(line_end)].chars().count().max(1);
        Location {
            path: path.to_path_buf(),
            line: source[..start].matches('\n').count() + 1,
            column,
            width,
            source_line: source_line.to_string(),
        }
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.severity, self.message)?;
        let Some(location) = &self.location else {
            if let Some(hint) = &self.hint {
                writeln!(f, "  = hint: {hint}")?;
            }
            return Ok(());
        };
        if location.line == 0 {
            writeln!(f, "  --> {}", location.path.display())?;
            if let Some(hint) = &self.hint {
                writeln!(f, "  = hint: {hint}")?;
            }
            return Ok(());
        }
        let number = location.line.to_string();
        let pad = " ".repeat(number.len());
        writeln!(
            f,
            "{pad}--> {}:{}:{}",
            location.path.display(),
            location.line,
            location.column
        )?;
        writeln!(f, "{pad} |")?;
        // Tabs would misalign the caret: show them as one space each.
        let shown = location.source_line.replace('\t', " ");
        writeln!(f, "{number} | {shown}")?;
        let caret = format!(
            "{}{}",
            " ".repeat(location.column - 1),
            "^".repeat(location.width)
        );
        match &self.label {
            Some(label) => writeln!(f, "{pad} | {caret} {label}")?,
            None => writeln!(f, "{pad} | {caret}")?,
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "{pad} |")?;
            writeln!(f, "{pad} = hint: {hint}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            let distance = strsim::levenshtein(&word_lower, &candidate.to_lowercase());
            (distance, candidate)
        })
        .filter(|(distance, candidate)| {
            // Allow about one edit per three characters, and at least one.
            *distance <= (candidate.chars().count().max(word.chars().count()) / 3).max(1)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rustc() {
        let source = "workflow \"x\" {\n  step a {\n    goto nudg\n  }\n}\n";
        let start = source.find("nudg").unwrap();
        let diagnostic = Diagnostic::error("no step named `nudg`")
            .at(Path::new("w.flow"), source, start..start + 4)
            .with_label("unknown step")
            .with_hint("did you mean `nudge`?");
        assert_eq!(
            diagnostic.to_string(),
            "error: no step named `nudg`\n\
             \x20--> w.flow:3:10\n\
             \x20 |\n\
             3 |     goto nudg\n\
             \x20 |          ^^^^ unknown step\n\
             \x20 |\n\
             \x20 = hint: did you mean `nudge`?\n"
        );
    }

    #[test]
    fn span_at_end_of_file_points_after_last_character() {
        let source = "abc";
        let location = Location::from_span(Path::new("f"), source, 3..3);
        assert_eq!((location.line, location.column, location.width), (1, 4, 1));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let source = "é = x";
        let location = Location::from_span(Path::new("f"), source, 5..6);
        assert_eq!(location.column, 5);
    }

    #[test]
    fn did_you_mean_finds_close_names_only() {
        let steps = ["welcome", "nudge", "breakup"];
        assert_eq!(did_you_mean("nudg", steps), Some("nudge"));
        assert_eq!(did_you_mean("Welcom", steps), Some("welcome"));
        assert_eq!(did_you_mean("zzz", steps), None);
    }
}
