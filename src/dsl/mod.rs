//! The workflow language: pest grammar binding, AST with spans, validation, and compilation
//! into [`crate::workflow::Workflow`].
//!
//! One file goes through four stages, each in its own module:
//!
//! 1. `parser`: size and bracket-depth limits, then the pest grammar (`grammar/workflow.pest`).
//!    A syntax error stops here: it is the only diagnostic for that file.
//! 2. `lower`: pest pairs → `ast`, a tree that keeps the byte span of everything.
//! 3. `validate`: small structural checks (order, duplicates, reachability, loops…) that each
//!    return every problem they find.
//! 4. `compile`: words and texts → program values (zones, units, weekdays, addresses…),
//!    reporting each one that does not resolve, and the flattened instruction lists.
//!
//! Everything a file gets wrong is reported at once, sorted by position; the workflow is only
//! produced when there is no error (warnings are fine). This module does no I/O except in
//! [`load`].

mod ast;
mod compile;
mod lower;
mod parser;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::diagnostic::Diagnostic;
use crate::workflow::Workflow;

/// Larger files are refused with a diagnostic.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// How deep `if` blocks may nest.
pub const MAX_NESTING: usize = 8;

/// The result of compiling one file: the workflow when there was no error, and every diagnostic
/// (errors and warnings), sorted by position.
#[derive(Debug)]
pub struct Compiled {
    pub workflow: Option<Workflow>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Compiles one workflow file. `templates`: the names of the templates that exist (for
/// "unknown template" and its did-you-mean).
pub fn compile(path: &Path, source: &str, templates: &BTreeSet<String>) -> Compiled {
    compile_file(path, source, templates).0
}

/// What [`load`] found.
#[derive(Debug)]
pub struct Loaded {
    pub workflows: Vec<Workflow>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Loads workflow files: each path is a `.flow` file or a directory (its `*.flow` files, sorted,
/// not recursive). Reads and compiles each file, and reports workflow names used by two files.
pub fn load(paths: &[PathBuf], templates: &BTreeSet<String>) -> Loaded {
    let mut loaded = Loaded {
        workflows: Vec::new(),
        diagnostics: Vec::new(),
    };
    // Name → the file that used it first.
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in workflow_files(paths, &mut loaded.diagnostics) {
        let source = match std::fs::read(&file) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(source) => source,
                Err(_) => {
                    loaded.diagnostics.push(
                        Diagnostic::error(format!("`{}` is not UTF-8 text", file.display()))
                            .in_file(&file)
                            .with_hint("save the workflow file as UTF-8"),
                    );
                    continue;
                }
            },
            Err(error) => {
                loaded.diagnostics.push(unreadable(&file, &error));
                continue;
            }
        };
        let (compiled, name_span) = compile_file(&file, &source, templates);
        loaded.diagnostics.extend(compiled.diagnostics);
        let Some(workflow) = compiled.workflow else {
            continue;
        };
        if let Some(first) = names.get(&workflow.name) {
            let mut diagnostic =
                Diagnostic::error(format!("two workflows are named `{}`", workflow.name))
                    .with_label("already used")
                    .with_hint(format!(
                        "the first is in `{}`; workflow names are unique across all files",
                        first.display()
                    ));
            diagnostic = match name_span {
                Some(span) => diagnostic.at(&file, &source, span),
                None => diagnostic.in_file(&file),
            };
            loaded.diagnostics.push(diagnostic);
            continue;
        }
        names.insert(workflow.name.clone(), file.clone());
        loaded.workflows.push(workflow);
    }
    share_scoring(&mut loaded);
    loaded
}

/// A lead has one score: the `scoring` block of one workflow applies to every lead, and so to
/// every workflow's conditions and triggers. A second block is an error.
fn share_scoring(loaded: &mut Loaded) {
    let mut defining = loaded.workflows.iter().filter(|w| w.defines_scoring);
    let Some(first) = defining.next() else {
        return;
    };
    let (scoring, first_path) = (first.scoring.clone(), first.path.clone());
    let second: Vec<std::path::PathBuf> = defining.map(|w| w.path.clone()).collect();
    for path in second {
        loaded.diagnostics.push(
            Diagnostic::error("a second `scoring` block")
                .in_file(&path)
                .with_hint(format!(
                    "a lead has one score: keep the rules in one place (`{}` has them)",
                    first_path.display()
                )),
        );
    }
    for workflow in &mut loaded.workflows {
        workflow.scoring = scoring.clone();
    }
}

/// The files named by `paths`: files as given, directories as their `*.flow` files, sorted.
fn workflow_files(paths: &[PathBuf], diagnostics: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(error) => {
                diagnostics.push(unreadable(path, &error));
                continue;
            }
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|file| file.extension().is_some_and(|ext| ext == "flow") && file.is_file())
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

fn unreadable(path: &Path, error: &std::io::Error) -> Diagnostic {
    Diagnostic::error(format!("cannot read `{}`: {error}", path.display())).in_file(path)
}

/// Compiles one file, also returning the span of its workflow name (for duplicate names).
fn compile_file(
    path: &Path,
    source: &str,
    templates: &BTreeSet<String>,
) -> (Compiled, Option<Range<usize>>) {
    let failed = |diagnostic: Diagnostic| {
        let compiled = Compiled {
            workflow: None,
            diagnostics: vec![diagnostic],
        };
        (compiled, None)
    };
    if source.len() > MAX_FILE_BYTES {
        return failed(
            Diagnostic::error(format!(
                "this file is too large ({} bytes); a workflow file is at most {MAX_FILE_BYTES} bytes",
                source.len()
            ))
            .in_file(path)
            .with_hint("split it into several workflows"),
        );
    }
    let file = match parser::parse(path, source) {
        Ok(file) => file,
        Err(diagnostic) => return failed(*diagnostic),
    };
    let ast = lower::lower(file);
    let context = Context {
        path,
        source,
        templates,
    };
    let mut diagnostics = validate::validate(&context, &ast);
    let (workflow, compile_diagnostics) = compile::compile(&context, &ast, version(source));
    diagnostics.extend(compile_diagnostics);
    diagnostics.sort_by_key(|diagnostic| {
        diagnostic
            .location
            .as_ref()
            .map(|location| (location.line, location.column))
    });
    let workflow = workflow.filter(|_| !diagnostics.iter().any(Diagnostic::is_error));
    let compiled = Compiled {
        workflow,
        diagnostics,
    };
    (compiled, Some(ast.name.span))
}

/// What the checks and the compiler need to know about the file at hand.
struct Context<'a> {
    path: &'a Path,
    source: &'a str,
    templates: &'a BTreeSet<String>,
}

impl Context<'_> {
    fn error(&self, message: impl Into<String>, span: Range<usize>) -> Diagnostic {
        Diagnostic::error(message).at(self.path, self.source, span)
    }

    fn warning(&self, message: impl Into<String>, span: Range<usize>) -> Diagnostic {
        Diagnostic::warning(message).at(self.path, self.source, span)
    }

    /// The 1-based line of a byte offset, for hints such as "the first is on line 4".
    fn line(&self, offset: usize) -> usize {
        self.source.as_bytes()[..offset.min(self.source.len())]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count()
            + 1
    }
}

/// The FNV-1a 64 hash of the source, in hex: stable across Rust releases and platforms, unlike
/// `DefaultHasher`, because it names the version enrollments ran under.
fn version(source: &str) -> String {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = source.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_fnv1a_64() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(version(""), "cbf29ce484222325");
        assert_eq!(version("a"), "af63dc4c8601ec8c");
    }
}
