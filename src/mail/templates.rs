//! The templates directory: loading, strict rendering, subjects, and the optional-field check.
//!
//! `templates/NAME.html.hbs` and `templates/NAME.txt.hbs` make the template `NAME`; partials live
//! in `templates/partials/` with the same two flavors and are included with `{{> NAME}}`. Every
//! file is compiled once, up front, into one of two handlebars registries: the HTML registry
//! escapes what it prints, the text registry prints as is (escaping would turn `&` into `&amp;`
//! in the plain-text part). Both are strict, so a field the lead lacks is an error, never
//! "Hi ,". Subjects are handlebars too, rendered without escaping and flattened to one clean
//! line so they can never break a header.
//!
//! `nurture check` asks [`Templates::field_diagnostics`] about every use of a field that is not
//! guarded by `{{#if}}`/`{{#unless}}`/`{{#with}}` or the `default` helper; the check walks the
//! parsed template (handlebars' own AST), so it sees exactly what rendering sees. Such a use is
//! judged by [`KnownFields`]: a field every lead has is fine; one some leads may lack is a
//! warning; one no lead can have (a near miss of a known name, or, when the store was read, a
//! name no lead carries and no workflow names) is an error, since every email of the template
//! would fail.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderErrorReason, ScopedJson,
    TemplateErrorReason,
};
use serde_json::Value as Json;

use super::compose::header_text;
use super::link_plan::{self, LinkPlan};
use super::links::{self, TrackedLink, Tracker};
use super::render::{CONTEXT_EXTRAS, RenderError, RenderedBody};
use crate::diagnostic::Diagnostic;
use crate::lead::{ALWAYS_PRESENT_FIELDS, BUILT_IN_FIELDS};

const HTML_SUFFIX: &str = ".html.hbs";
const TEXT_SUFFIX: &str = ".txt.hbs";

/// Helpers a name-only expression (`{{len}}`) may call; such a name is not a field.
const HELPERS: [&str; 18] = [
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len", "link",
];

/// One template file as read from disk (or given in memory).
#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    text: String,
}

/// The two flavors of one template or partial.
#[derive(Debug, Clone)]
struct Pair {
    html: Source,
    text: Source,
}

impl Pair {
    fn get(&self, flavor: Flavor) -> &Source {
        match flavor {
            Flavor::Html => &self.html,
            Flavor::Text => &self.text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Html,
    Text,
}

/// Every template and partial, compiled. Cheap to share (`Sync`); rendering never compiles,
/// except a subject the first time it is seen.
pub struct Templates {
    /// Templates and partials, HTML flavor, with HTML escaping.
    html: Handlebars<'static>,
    /// Templates and partials, text flavor, without escaping.
    text: Handlebars<'static>,
    /// The HTML flavor of the templates whose links were placed at load, with marks where
    /// the links go, and the partials they include ([`link_plan`]).
    marked: Handlebars<'static>,
    /// Those links, and which templates have them placed.
    link_plan: LinkPlan,
    /// Subject templates, compiled on first use and kept: subjects come from workflow files, so
    /// there are few of them. Keyed by the subject text itself.
    subjects: RwLock<Handlebars<'static>>,
    /// The sources of the templates that compiled (both flavors), by name.
    templates: BTreeMap<String, Pair>,
    /// The sources of the partials that compiled, by name.
    partials: BTreeMap<String, Pair>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .field("partials", &self.partials.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Templates {
    /// Loads `dir` (usually `templates/`) and `dir/partials/`. A file that does not compile, or a
    /// template with only one of its two files, is reported and left out; the rest load.
    pub fn load(dir: &Path) -> (Templates, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let templates = read_pairs(dir, "template", &mut diagnostics);
        let partials_dir = dir.join("partials");
        let partials = if partials_dir.is_dir() {
            read_pairs(&partials_dir, "partial", &mut diagnostics)
        } else {
            Vec::new()
        };
        let (loaded, more) = Templates::build(templates, partials);
        diagnostics.extend(more);
        (loaded, diagnostics)
    }

    /// Builds from text held in memory: `(name, html, text)` for templates and for partials.
    /// Paths in diagnostics are `templates/NAME.html.hbs` and `templates/partials/…`. For tests
    /// and previews that have no templates directory.
    pub fn from_memory(
        templates: &[(&str, &str, &str)],
        partials: &[(&str, &str, &str)],
    ) -> (Templates, Vec<Diagnostic>) {
        let pairs = |list: &[(&str, &str, &str)], dir: &Path| -> Vec<(String, Pair)> {
            list.iter()
                .map(|(name, html, text)| {
                    let source = |suffix: &str, text: &str| Source {
                        path: dir.join(format!("{name}{suffix}")),
                        text: text.to_string(),
                    };
                    let pair = Pair {
                        html: source(HTML_SUFFIX, html),
                        text: source(TEXT_SUFFIX, text),
                    };
                    (name.to_string(), pair)
                })
                .collect()
        };
        let dir = Path::new("templates");
        Templates::build(
            pairs(templates, dir),
            pairs(partials, &dir.join("partials")),
        )
    }

    fn build(
        templates: Vec<(String, Pair)>,
        partials: Vec<(String, Pair)>,
    ) -> (Templates, Vec<Diagnostic>) {
        let mut loaded = Templates {
            html: registry(true),
            text: registry(false),
            marked: registry(true),
            link_plan: LinkPlan::default(),
            subjects: RwLock::new(registry(false)),
            templates: BTreeMap::new(),
            partials: BTreeMap::new(),
        };
        let mut diagnostics = Vec::new();
        let template_names: BTreeSet<&str> = templates.iter().map(|(n, _)| n.as_str()).collect();
        for (name, pair) in &partials {
            // Templates and partials share handlebars' namespace.
            if template_names.contains(name.as_str()) {
                diagnostics.push(
                    Diagnostic::error(format!(
                        "partial `{name}` has the name of a template; `{{{{> {name}}}}}` would be ambiguous"
                    ))
                    .in_file(&pair.html.path)
                    .with_hint("rename the partial"),
                );
                continue;
            }
            if loaded.register(name, pair, &mut diagnostics) {
                loaded.partials.insert(name.clone(), pair.clone());
            }
        }
        for (name, pair) in templates {
            if loaded.register(&name, &pair, &mut diagnostics) {
                loaded.templates.insert(name, pair);
            }
        }
        loaded.check_references(&mut diagnostics);
        loaded.place_links();
        (loaded, diagnostics)
    }

    /// Works out, once, where the links of each HTML template go ([`link_plan`]).
    fn place_links(&mut self) {
        let compiled = |names: &BTreeMap<String, Pair>| -> BTreeMap<String, &Template> {
            names
                .keys()
                .filter_map(|name| Some((name.clone(), self.html.get_template(name)?)))
                .collect()
        };
        let (plan, copies) = link_plan::plan(&compiled(&self.templates), &compiled(&self.partials));
        for (name, copy) in copies {
            self.marked.register_template(&name, copy);
        }
        self.link_plan = plan;
    }

    /// Compiles both flavors; on any error neither is kept. Returns whether both compiled.
    fn register(&mut self, name: &str, pair: &Pair, diagnostics: &mut Vec<Diagnostic>) -> bool {
        let mut ok = true;
        for (registry, source) in [(&mut self.html, &pair.html), (&mut self.text, &pair.text)] {
            if let Err(error) = registry.register_template_string(name, &source.text) {
                diagnostics.push(compile_error(&source.path, &source.text, &error));
                ok = false;
            }
        }
        if !ok {
            self.html.unregister_template(name);
            self.text.unregister_template(name);
        }
        ok
    }

    /// A `{{> NAME}}` naming no partial, or a helper handlebars does not have, would fail every
    /// render: report them at load.
    fn check_references(&self, diagnostics: &mut Vec<Diagnostic>) {
        let all = self.templates.iter().chain(&self.partials);
        for (name, pair) in all {
            for flavor in [Flavor::Html, Flavor::Text] {
                let Some(template) = self.registry(flavor).get_template(name) else {
                    continue;
                };
                let mut references = Vec::new();
                collect_references(template, None, &mut references);
                let inline: Vec<&str> = references
                    .iter()
                    .filter(|r| r.kind == ReferenceKind::Inline)
                    .map(|r| r.name.as_str())
                    .collect();
                let source = pair.get(flavor);
                for reference in &references {
                    let known = match reference.kind {
                        ReferenceKind::Inline => true,
                        ReferenceKind::Partial => {
                            self.partials.contains_key(&reference.name)
                                || self.templates.contains_key(&reference.name)
                                || inline.contains(&reference.name.as_str())
                        }
                        ReferenceKind::Helper => {
                            HELPERS.contains(&reference.name.as_str())
                                || reference.name == "default"
                                || reference.name == super::date_helper::NAME
                        }
                    };
                    if known {
                        continue;
                    }
                    let span = locate(&source.text, reference.position, &reference.name);
                    let partial = &reference.name;
                    let diagnostic = match reference.kind {
                        ReferenceKind::Partial => Diagnostic::error(format!("no partial named `{partial}`"))
                            .with_label("not in templates/partials/")
                            .with_hint(format!(
                                "add templates/partials/{partial}{HTML_SUFFIX} and {partial}{TEXT_SUFFIX}"
                            )),
                        _ => Diagnostic::error(format!("no helper named `{partial}`"))
                            .with_label("unknown helper")
                            .with_hint(match crate::diagnostic::did_you_mean(partial, HELPERS.iter().copied().chain(["default", super::date_helper::NAME])) {
                                Some(close) => format!("did you mean `{close}`?"),
                                None => "helpers are `default`, `date`, `if`, `unless`, `each`, `with`, `eq`, `ne`, `gt`, `lt`, `and`, `or`, `not`, `len`, `lookup`, `link`".to_string(),
                            }),
                    };
                    diagnostics.push(diagnostic.at(&source.path, &source.text, span));
                }
            }
        }
    }

    fn registry(&self, flavor: Flavor) -> &Handlebars<'static> {
        match flavor {
            Flavor::Html => &self.html,
            Flavor::Text => &self.text,
        }
    }

    /// Why template `name`'s links were not placed at load, if they were not.
    #[cfg(test)]
    pub(crate) fn links_refused(&self, name: &str) -> Option<&link_plan::NotPlaced> {
        self.link_plan.refused(name)
    }

    /// Template names (partials excluded).
    pub fn names(&self) -> BTreeSet<String> {
        self.templates.keys().cloned().collect()
    }

    /// Renders both parts of template `name` for a context made by [`super::context`].
    pub fn render(&self, name: &str, context: &Json) -> Result<RenderedBody, RenderError> {
        if !self.templates.contains_key(name) {
            return Err(RenderError::UnknownTemplate(name.to_string()));
        }
        let what = || format!("template `{name}`");
        // One conversion of the data for both parts.
        let data = Context::from(context.clone());
        let html = self
            .html
            .render_with_context(name, &data)
            .map_err(|e| self.render_error(what(), context, &e, Some(Flavor::Html)))?;
        let text = self
            .text
            .render_with_context(name, &data)
            .map_err(|e| self.render_error(what(), context, &e, Some(Flavor::Text)))?;
        Ok(RenderedBody { html, text })
    }

    /// Renders both parts of template `name` with their links finished as
    /// [`links::finish`] does (`keep`: the unsubscribe link, never rewritten), and the tracked
    /// links. A tracked email of a template whose links were placed at load skips the HTML
    /// tokenizer ([`link_plan::fill`]), for the same bytes.
    pub fn render_linked(
        &self,
        name: &str,
        context: &Json,
        tracker: Option<&Tracker>,
        keep: &str,
    ) -> Result<(RenderedBody, Vec<TrackedLink>), String> {
        if let Some(tracker) = tracker.filter(|t| t.clicks || t.opens)
            && self.link_plan.is_planned(name)
        {
            let data = Context::from(context.clone());
            let parts = (
                self.marked.render_with_context(name, &data),
                self.text.render_with_context(name, &data),
            );
            // An error is reported by the usual path, word for word.
            if let (Ok(html), Ok(text)) = parts
                && let Some(done) =
                    link_plan::finish(&self.link_plan, name, html, text, tracker, keep)
            {
                return Ok(done);
            }
        }
        let body = self.render(name, context).map_err(|e| e.to_string())?;
        links::finish(body, tracker, keep)
    }

    /// Renders a subject: nothing escaped, then flattened to one line (control characters
    /// become spaces, runs of whitespace collapse, ends trimmed) so it can never break a header.
    pub fn render_subject(
        &self,
        subject_template: &str,
        context: &Json,
    ) -> Result<String, RenderError> {
        let what = || format!("the subject `{subject_template}`");
        let rendered = {
            let subjects = self.subjects.read().unwrap_or_else(PoisonError::into_inner);
            subjects
                .has_template(subject_template)
                .then(|| subjects.render(subject_template, context))
        };
        let rendered = match rendered {
            Some(rendered) => rendered,
            None => {
                let mut subjects = self
                    .subjects
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                if !subjects.has_template(subject_template) {
                    subjects
                        .register_template_string(subject_template, subject_template)
                        .map_err(|e| RenderError::Failed {
                            what: what(),
                            lead: lead_of(context),
                            message: e.reason().to_string(),
                        })?;
                }
                subjects.render(subject_template, context)
            }
        };
        rendered
            .map(|text| header_text(&text))
            .map_err(|e| self.render_error(what(), context, &e, None))
    }

    /// Checks that a subject compiles; the error names line and column in the subject.
    pub fn validate_subject(subject: &str) -> Result<(), String> {
        Template::compile(subject)
            .map(|_| ())
            .map_err(|e| match e.pos() {
                Some((_, column)) => format!("{} (column {column})", e.reason()),
                None => e.reason().to_string(),
            })
    }

    fn render_error(
        &self,
        what: String,
        context: &Json,
        error: &handlebars::RenderError,
        flavor: Option<Flavor>,
    ) -> RenderError {
        let lead = lead_of(context);
        if let RenderErrorReason::MissingVariable(Some(path)) = error.reason() {
            return RenderError::MissingField {
                what,
                field: field_of_path(path).to_string(),
                lead,
            };
        }
        let mut message = error.reason().to_string();
        // Point at the file: the template itself or the partial the error is in.
        if let (Some(name), Some(line), Some(column), Some(flavor)) =
            (&error.template_name, error.line_no, error.column_no, flavor)
        {
            let file = self.templates.get(name).or_else(|| self.partials.get(name));
            if let Some(pair) = file {
                let path = pair.get(flavor).path.display();
                message.push_str(&format!(" (at {path}:{line}:{column})"));
            }
        }
        RenderError::Failed {
            what,
            lead,
            message,
        }
    }

    /// For `nurture check`: every use, in either file of template `name` or in a partial it
    /// includes, of a field some leads may lack (a warning) or no lead can have (an error), with
    /// no guard and no `default`.
    pub fn field_diagnostics(&self, name: &str, known: &KnownFields) -> Vec<Diagnostic> {
        let Some(pair) = self.templates.get(name) else {
            return Vec::new();
        };
        let mut diagnostics: Vec<Diagnostic> = Vec::new();
        for flavor in [Flavor::Html, Flavor::Text] {
            let Some(template) = self.registry(flavor).get_template(name) else {
                continue;
            };
            let mut walker = Walker {
                templates: Some(self),
                flavor,
                uses: Vec::new(),
                partial_stack: vec![name.to_string()],
            };
            walker.walk(template, Some(pair.get(flavor)), &Scope::default(), None);
            for found in walker.uses {
                let Some(source) = found.source else { continue };
                let span = locate(&source.text, found.position, &found.raw);
                let diagnostic = known
                    .judge(&found.field)
                    .at(&source.path, &source.text, span);
                if !diagnostics.contains(&diagnostic) {
                    diagnostics.push(diagnostic);
                }
            }
        }
        diagnostics.sort_by(|a, b| a.location.cmp(&b.location));
        diagnostics
    }

    /// The fields a subject uses that some leads may lack (unguarded, no `default`), once each,
    /// in order of first use. A subject that does not compile has none (see
    /// [`Templates::validate_subject`]).
    pub fn optional_fields_in_subject(&self, subject: &str) -> Vec<String> {
        unguarded_fields(subject, Some(self))
    }
}

/// The fields `subject` uses that some leads may lack (unguarded, no `default`), once each, in
/// order of first use; partials it includes are followed when `templates` are given. For the
/// workflow compiler, which checks subjects before any template is loaded.
pub fn unguarded_fields(subject: &str, templates: Option<&Templates>) -> Vec<String> {
    let Ok(template) = Template::compile(subject) else {
        return Vec::new();
    };
    let mut walker = Walker {
        templates,
        flavor: Flavor::Text,
        uses: Vec::new(),
        partial_stack: Vec::new(),
    };
    walker.walk(&template, None, &Scope::default(), None);
    let mut fields: Vec<String> = Vec::new();
    for found in walker.uses {
        if !fields.contains(&found.field) {
            fields.push(found.field);
        }
    }
    fields
}

/// A template that does not compile, in words a marketer can act on. Pest's own message lists
/// grammar rules ("expected escape, expression, html_expression, …"), so a syntax error gets a
/// plain description instead; the other reasons are already readable.
fn compile_error(path: &Path, text: &str, error: &handlebars::TemplateError) -> Diagnostic {
    let (line, column) = error.pos().unwrap_or((1, 1));
    let file = path.display();
    let diagnostic = match error.reason() {
        TemplateErrorReason::InvalidSyntax(_) if offset_of(text, line, column) >= text.trim_end().len() => {
            Diagnostic::error(format!("`{file}` ends inside an unfinished block or expression"))
                .with_label("the file ends here")
                .with_hint("close every `{{#if …}}`, `{{#each …}}`, `{{#with …}}` and `{{#unless …}}` with its `{{/…}}`, and every `{{` with `}}`")
        }
        TemplateErrorReason::InvalidSyntax(_) => {
            Diagnostic::error(format!("`{file}` is not valid handlebars here"))
                .with_label("cannot read this")
                .with_hint("check the `{{` and `}}` around here: a field is `{{name}}`, a block `{{#if name}}…{{/if}}`")
        }
        reason => Diagnostic::error(format!("`{file}` is not a valid template: {reason}")),
    };
    diagnostic.at_line(path, text, line, column)
}

/// What `nurture check` knows about the fields leads can have beyond the built-in ones, to
/// judge a template field used without a guard:
///
/// - a built-in field (`first_name`…) or an attribute the workflows name or the stored leads
///   carry: a warning, since some leads may lack it;
/// - a name within one or two edits of one of those, or of a field every lead has
///   (`frist_name`, `compnay`): an error with a did-you-mean, as the workflow language refuses
///   such names;
/// - any other name, when the store was read (`stored`): an error, since no lead has it and no
///   workflow gives it one; without the store, a warning (it may be a column of the leads).
#[derive(Debug, Clone, Default)]
pub struct KnownFields {
    /// Attributes the workflows name (`lead.country` in a condition, `set lead.plan`).
    pub named: BTreeSet<String>,
    /// The attribute names the leads in the store carry, when `nurture check` could read it.
    pub stored: Option<BTreeSet<String>>,
}

impl KnownFields {
    fn judge(&self, field: &str) -> Diagnostic {
        let stored = self.stored.as_ref();
        let carried = BUILT_IN_FIELDS.contains(&field)
            || self.named.contains(field)
            || stored.is_some_and(|names| names.contains(field));
        if carried {
            return optional_field_warning(field);
        }
        let known = BUILT_IN_FIELDS
            .iter()
            .chain(CONTEXT_EXTRAS.iter())
            .map(|name| name.to_string())
            .chain(self.named.iter().cloned())
            .chain(stored.into_iter().flatten().cloned());
        if let Some(close) = near_miss(field, known) {
            return Diagnostic::error(format!("no lead has a field `{field}`"))
                .with_label("every email of this template would fail")
                .with_hint(format!("did you mean `{close}`?"));
        }
        if stored.is_some() {
            return Diagnostic::error(format!("no lead has a field `{field}`"))
                .with_label("every email of this template would fail")
                .with_hint(format!(
                    "no lead in the store has `{field}` and no workflow names it: fix the name, \
                     or write {{{{default {field} \"…\"}}}} or {{{{#if {field}}}}}…{{{{/if}}}}"
                ));
        }
        optional_field_warning(field)
    }
}

/// The known name `field` is likely a typo of: within one edit for names shorter than five
/// characters, two otherwise (the rule the workflow compiler applies to `lead.NAME`).
pub fn near_miss(field: &str, known: impl Iterator<Item = String>) -> Option<String> {
    let allowed = if field.chars().count() < 5 { 1 } else { 2 };
    known
        .filter(|name| name != field)
        .map(|name| (strsim::levenshtein(field, &name), name))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)))
        .map(|(_, name)| name)
}

/// The warning `nurture check` shows for one unguarded use of `field`.
fn optional_field_warning(field: &str) -> Diagnostic {
    Diagnostic::warning(format!(
        "`{field}` is used without a fallback, but some leads may not have it"
    ))
    .with_label("rendering fails for a lead without it")
    .with_hint(format!(
        "write {{{{default {field} \"there\"}}}} or wrap it in {{{{#if {field}}}}}…{{{{/if}}}}"
    ))
}

/// A strict registry with the `default` helper; `escape` chooses HTML escaping or none.
fn registry(escape: bool) -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    if !escape {
        registry.register_escape_fn(handlebars::no_escape);
    }
    registry.register_helper("default", Box::new(DefaultHelper));
    registry.register_helper(super::links::HELPER, Box::new(super::links::LinkHelper));
    registry.register_helper(
        super::date_helper::NAME,
        Box::new(super::date_helper::DateHelper),
    );
    registry
}

/// `{{default x "fallback"}}`: `x` when the lead has it and it is not empty, else the fallback.
/// Handlebars evaluates a missing parameter to "missing" without failing, even in strict mode,
/// so the helper sees it and falls back. The result is a value, so the registry escapes it (or
/// not) like any other expression, and it also works as a subexpression.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let fallback = h
            .param(1)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 1))?;
        let value = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 0))?;
        let empty = match value.value() {
            _ if value.is_value_missing() => true,
            Json::Null => true,
            Json::String(text) => text.trim().is_empty(),
            Json::Array(items) => items.is_empty(),
            _ => false,
        };
        let chosen = if empty { fallback } else { value };
        if fallback.is_value_missing() && empty {
            // A fallback that is itself a missing field: say which one.
            return Err(handlebars::RenderError::strict_error(
                fallback.relative_path(),
            ));
        }
        Ok(ScopedJson::Derived(chosen.value().clone()))
    }
}

/// The lead's address for error messages, read back from the context.
fn lead_of(context: &Json) -> String {
    context
        .get("email")
        .and_then(Json::as_str)
        .unwrap_or("(unknown)")
        .to_string()
}

/// `first_name` from `this.first_name`, `../first_name`, `@root.first_name`.
fn field_of_path(path: &str) -> &str {
    let mut rest = path;
    loop {
        let stripped = rest
            .strip_prefix("../")
            .or_else(|| rest.strip_prefix("@root."))
            .or_else(|| rest.strip_prefix("@root/"))
            .or_else(|| rest.strip_prefix("this."))
            .or_else(|| rest.strip_prefix("this/"))
            .or_else(|| rest.strip_prefix("./"));
        match stripped {
            Some(next) => rest = next,
            None => return rest,
        }
    }
}

/// Lists the template files of `dir`, pairs them by name, and reads them. `kind` is "template"
/// or "partial", for messages.
fn read_pairs(dir: &Path, kind: &str, diagnostics: &mut Vec<Diagnostic>) -> Vec<(String, Pair)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            diagnostics.push(
                Diagnostic::error(format!("cannot read the {kind} directory: {error}"))
                    .in_file(dir),
            );
            return Vec::new();
        }
    };
    // name -> (html path, text path)
    let mut found: BTreeMap<String, (Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let Some(file_name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if let Some(name) = file_name.strip_suffix(HTML_SUFFIX) {
            found.entry(name.to_string()).or_default().0 = Some(path);
        } else if let Some(name) = file_name.strip_suffix(TEXT_SUFFIX) {
            found.entry(name.to_string()).or_default().1 = Some(path);
        } else if file_name.ends_with(".hbs") {
            diagnostics.push(
                Diagnostic::warning(format!(
                    "`{file_name}` is neither `.html.hbs` nor `.txt.hbs`, so it is ignored"
                ))
                .in_file(&path)
                .with_hint("name template files NAME.html.hbs and NAME.txt.hbs"),
            );
        }
    }
    let mut pairs = Vec::new();
    for (name, files) in found {
        let (present, missing_suffix) = match files {
            (Some(html), Some(text)) => {
                let read = |path: PathBuf, diagnostics: &mut Vec<Diagnostic>| {
                    match std::fs::read_to_string(&path) {
                        Ok(text) => Some(Source { path, text }),
                        Err(error) => {
                            diagnostics.push(
                                Diagnostic::error(format!("cannot read the {kind}: {error}"))
                                    .in_file(&path),
                            );
                            None
                        }
                    }
                };
                let html = read(html, diagnostics);
                let text = read(text, diagnostics);
                if let (Some(html), Some(text)) = (html, text) {
                    pairs.push((name, Pair { html, text }));
                }
                continue;
            }
            (Some(present), None) => (present, TEXT_SUFFIX),
            (None, Some(present)) => (present, HTML_SUFFIX),
            (None, None) => continue,
        };
        let missing = dir.join(format!("{name}{missing_suffix}"));
        diagnostics.push(
            Diagnostic::error(format!("{kind} `{name}` has no `{}`", missing.display()))
                .in_file(&present)
                .with_hint(format!(
                    "every {kind} needs both files: {name}{HTML_SUFFIX} for the HTML part and {name}{TEXT_SUFFIX} for the text part"
                )),
        );
    }
    pairs
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReferenceKind {
    /// `{{> NAME}}`.
    Partial,
    /// `{{NAME arg}}`, `{{#NAME arg}}`, `(NAME arg)`.
    Helper,
    /// `{{#*inline "NAME"}}`: a partial defined in the template itself.
    Inline,
}

/// A name a template relies on, with the position handlebars recorded (if any).
struct Reference {
    kind: ReferenceKind,
    name: String,
    position: Option<(usize, usize)>,
}

/// Every partial, helper and inline partial a template names.
fn collect_references(
    template: &Template,
    inherited: Option<(usize, usize)>,
    out: &mut Vec<Reference>,
) {
    let reference = |kind, name: &str, position| Reference {
        kind,
        name: name.to_string(),
        position,
    };
    for (index, element) in template.elements.iter().enumerate() {
        let position = template
            .mapping
            .get(index)
            .map(|m| (m.0, m.1))
            .or(inherited);
        match element {
            TemplateElement::PartialExpression(partial)
            | TemplateElement::PartialBlock(partial) => {
                if let Some(name) = static_partial_name(&partial.name) {
                    out.push(reference(ReferenceKind::Partial, name, position));
                }
                for param in partial.params.iter().chain(partial.hash.values()) {
                    helper_references(param, position, out);
                }
                if let Some(block) = &partial.template {
                    collect_references(block, position, out);
                }
            }
            TemplateElement::Expression(helper) | TemplateElement::HtmlExpression(helper) => {
                let name_only = helper.params.is_empty() && helper.hash.is_empty();
                if !name_only && let Some(name) = helper.name.as_name() {
                    out.push(reference(ReferenceKind::Helper, name, position));
                }
                helper_references(&helper.name, position, out);
                for param in helper.params.iter().chain(helper.hash.values()) {
                    helper_references(param, position, out);
                }
            }
            TemplateElement::HelperBlock(helper) => {
                if let Some(name) = helper.name.as_name() {
                    out.push(reference(ReferenceKind::Helper, name, position));
                }
                for param in helper.params.iter().chain(helper.hash.values()) {
                    helper_references(param, position, out);
                }
                for inner in [&helper.template, &helper.inverse].into_iter().flatten() {
                    collect_references(inner, position, out);
                }
            }
            TemplateElement::DecoratorBlock(decorator) => {
                if decorator.name.as_name() == Some("inline")
                    && let Some(Parameter::Literal(Json::String(name))) = decorator.params.first()
                {
                    out.push(reference(ReferenceKind::Inline, name, position));
                }
                if let Some(inner) = &decorator.template {
                    collect_references(inner, position, out);
                }
            }
            _ => {}
        }
    }
}

/// Helpers called in a subexpression argument: `(eq plan "pro")`.
fn helper_references(
    param: &Parameter,
    position: Option<(usize, usize)>,
    out: &mut Vec<Reference>,
) {
    if let Parameter::Subexpression(sub) = param
        && let TemplateElement::Expression(helper) = sub.as_element()
    {
        if let Some(name) = helper.name.as_name() {
            out.push(Reference {
                kind: ReferenceKind::Helper,
                name: name.to_string(),
                position,
            });
        }
        for inner in helper.params.iter().chain(helper.hash.values()) {
            helper_references(inner, position, out);
        }
    }
}

/// The name in `{{> NAME}}`, unless it is computed (`{{> (lookup …)}}`) or the special
/// `@partial-block`.
fn static_partial_name(name: &Parameter) -> Option<&str> {
    match name {
        Parameter::Name(_) | Parameter::Path(_) => name.as_name().filter(|n| !n.starts_with('@')),
        _ => None,
    }
}

/// Where a walk stands: how many blocks have changed the context (`with`, `each`, a partial with
/// a context argument), and which root fields an enclosing block guarantees.
#[derive(Debug, Clone, Default)]
struct Scope {
    depth: usize,
    guarded: Vec<String>,
}

impl Scope {
    fn guarding(&self, field: Option<String>) -> Scope {
        let mut scope = self.clone();
        scope.guarded.extend(field);
        scope
    }

    fn deeper(&self) -> Scope {
        Scope {
            depth: self.depth + 1,
            guarded: self.guarded.clone(),
        }
    }

    /// The root field a path names, if it names one: `first_name`, `../first_name` one block
    /// down, `@root.first_name` anywhere. `None` for block-local data (`this`, `@index`, a
    /// field of an `each` item).
    fn root_field(&self, raw: &str) -> Option<String> {
        let (rest, at_root) = match raw.strip_prefix("@root") {
            Some(rest) => (rest.strip_prefix(['.', '/'])?, true),
            None if raw.starts_with('@') => return None,
            None => (raw, false),
        };
        let mut rest = rest;
        let mut ups = 0;
        while let Some(next) = rest.strip_prefix("../") {
            ups += 1;
            rest = next;
        }
        if rest == "this" || rest == "." {
            return None;
        }
        for prefix in ["this.", "this/", "./"] {
            if let Some(next) = rest.strip_prefix(prefix) {
                rest = next;
            }
        }
        if !at_root && ups < self.depth {
            return None;
        }
        let first = rest.split(['.', '/']).next()?;
        let first = first.trim_start_matches('[').trim_end_matches(']');
        (!first.is_empty() && !first.starts_with('@')).then(|| first.to_string())
    }
}

/// One unguarded use of an optional field.
struct Use<'a> {
    field: String,
    /// The path as written (`../first_name`), to find it in the source.
    raw: String,
    /// Where handlebars says the enclosing expression starts.
    position: Option<(usize, usize)>,
    /// The file it is in; `None` for a subject.
    source: Option<&'a Source>,
}

/// Walks a template's AST collecting unguarded uses of optional fields.
struct Walker<'a> {
    /// Where included partials are found; `None`: they are not followed.
    templates: Option<&'a Templates>,
    flavor: Flavor,
    uses: Vec<Use<'a>>,
    /// Partials being walked, so a partial including itself cannot loop.
    partial_stack: Vec<String>,
}

impl<'a> Walker<'a> {
    fn walk(
        &mut self,
        template: &'a Template,
        source: Option<&'a Source>,
        scope: &Scope,
        inherited: Option<(usize, usize)>,
    ) {
        for (index, element) in template.elements.iter().enumerate() {
            // An `else if` node is spliced in without a position: use its parent's.
            let position = template
                .mapping
                .get(index)
                .map(|m| (m.0, m.1))
                .or(inherited);
            match element {
                TemplateElement::Expression(helper) | TemplateElement::HtmlExpression(helper) => {
                    self.expression(helper, source, scope, position);
                }
                TemplateElement::HelperBlock(helper) => {
                    self.block(helper, source, scope, position);
                }
                TemplateElement::PartialExpression(partial)
                | TemplateElement::PartialBlock(partial) => {
                    for param in &partial.params {
                        self.parameter(param, source, scope, position);
                    }
                    for value in partial.hash.values() {
                        self.parameter(value, source, scope, position);
                    }
                    if let Some(block) = &partial.template {
                        self.walk(block, source, scope, position);
                    }
                    let Some(name) = static_partial_name(&partial.name) else {
                        continue;
                    };
                    if self.partial_stack.iter().any(|n| n == name) {
                        continue;
                    }
                    // A context argument replaces the context; hash arguments add names.
                    let mut inner = if partial.params.is_empty() {
                        scope.clone()
                    } else {
                        scope.deeper()
                    };
                    inner.guarded.extend(partial.hash.keys().cloned());
                    let Some(templates) = self.templates else {
                        continue;
                    };
                    let pair = templates
                        .partials
                        .get(name)
                        .or_else(|| templates.templates.get(name));
                    let ast = templates.registry(self.flavor).get_template(name);
                    if let (Some(pair), Some(ast)) = (pair, ast) {
                        self.partial_stack.push(name.to_string());
                        self.walk(ast, Some(pair.get(self.flavor)), &inner, None);
                        self.partial_stack.pop();
                    }
                }
                TemplateElement::DecoratorBlock(decorator) => {
                    if let Some(inner) = &decorator.template {
                        self.walk(inner, source, scope, position);
                    }
                }
                _ => {}
            }
        }
    }

    /// `{{x}}`, `{{helper a b}}`, or the same as a subexpression.
    fn expression(
        &mut self,
        helper: &'a HelperTemplate,
        source: Option<&'a Source>,
        scope: &Scope,
        position: Option<(usize, usize)>,
    ) {
        let name_only = !helper.block && helper.params.is_empty() && helper.hash.is_empty();
        if name_only {
            match &helper.name {
                Parameter::Subexpression(_) => {
                    self.parameter(&helper.name, source, scope, position)
                }
                name => {
                    if let Some(raw) = name.as_name()
                        && !HELPERS.contains(&raw)
                        && raw != "default"
                    {
                        self.path(raw, source, scope, position);
                    }
                }
            }
            return;
        }
        // `default`'s first argument may be missing: that is its purpose.
        let skip = usize::from(helper.name.as_name() == Some("default"));
        for param in helper.params.iter().skip(skip) {
            self.parameter(param, source, scope, position);
        }
        if skip == 1
            && let Some(Parameter::Subexpression(_)) = helper.params.first()
        {
            self.parameter(&helper.params[0], source, scope, position);
        }
        for value in helper.hash.values() {
            self.parameter(value, source, scope, position);
        }
    }

    fn block(
        &mut self,
        helper: &'a HelperTemplate,
        source: Option<&'a Source>,
        scope: &Scope,
        position: Option<(usize, usize)>,
    ) {
        let first_path = match helper.params.first() {
            Some(param @ Parameter::Path(_)) => param.as_name(),
            _ => None,
        };
        let guard = first_path.and_then(|raw| scope.root_field(raw));
        // Arguments other than a plain first path are ordinary uses.
        let other_params = |walker: &mut Self| {
            let skip = usize::from(first_path.is_some());
            for param in helper.params.iter().skip(skip) {
                walker.parameter(param, source, scope, position);
            }
            for value in helper.hash.values() {
                walker.parameter(value, source, scope, position);
            }
        };
        let (body, inverse) = match helper.name.as_name().unwrap_or("") {
            "if" => {
                other_params(self);
                (scope.guarding(guard), scope.clone())
            }
            "unless" => {
                other_params(self);
                (scope.clone(), scope.guarding(guard))
            }
            "with" => {
                other_params(self);
                (scope.deeper(), scope.clone())
            }
            "each" => {
                // `each` over a missing field fails in strict mode, unless it has an `else`.
                if helper.inverse.is_none() {
                    for param in &helper.params {
                        self.parameter(param, source, scope, position);
                    }
                } else {
                    other_params(self);
                }
                (scope.deeper(), scope.clone())
            }
            _ => {
                for param in &helper.params {
                    self.parameter(param, source, scope, position);
                }
                for value in helper.hash.values() {
                    self.parameter(value, source, scope, position);
                }
                (scope.clone(), scope.clone())
            }
        };
        if let Some(template) = &helper.template {
            self.walk(template, source, &body, position);
        }
        if let Some(template) = &helper.inverse {
            self.walk(template, source, &inverse, position);
        }
    }

    fn parameter(
        &mut self,
        param: &'a Parameter,
        source: Option<&'a Source>,
        scope: &Scope,
        position: Option<(usize, usize)>,
    ) {
        match param {
            Parameter::Path(_) => {
                if let Some(raw) = param.as_name() {
                    self.path(raw, source, scope, position);
                }
            }
            Parameter::Subexpression(sub) => {
                if let TemplateElement::Expression(helper) = sub.as_element() {
                    self.expression(helper, source, scope, position);
                }
            }
            _ => {}
        }
    }

    fn path(
        &mut self,
        raw: &str,
        source: Option<&'a Source>,
        scope: &Scope,
        position: Option<(usize, usize)>,
    ) {
        let Some(field) = scope.root_field(raw) else {
            return;
        };
        let always = ALWAYS_PRESENT_FIELDS.contains(&field.as_str())
            || CONTEXT_EXTRAS.contains(&field.as_str());
        if always || scope.guarded.contains(&field) {
            return;
        }
        self.uses.push(Use {
            field,
            raw: raw.to_string(),
            position,
            source,
        });
    }
}

/// The byte span of `word` in `text`, searched from the 1-based (line, character column)
/// handlebars gave for the enclosing expression, then from the start; the expression's start if
/// the word cannot be found.
fn locate(text: &str, position: Option<(usize, usize)>, word: &str) -> Range<usize> {
    let start = position.map_or(0, |(line, column)| offset_of(text, line, column));
    let found = find_word(text, start, word).or_else(|| find_word(text, 0, word));
    match found {
        Some(at) => at..at + word.len(),
        None => start..start,
    }
}

/// Byte offset of a 1-based line and character column.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (index, content) in text.split_inclusive('\n').enumerate() {
        if index + 1 == line {
            return offset
                + content
                    .char_indices()
                    .nth(column.saturating_sub(1))
                    .map_or(content.len(), |(i, _)| i);
        }
        offset += content.len();
    }
    text.len()
}

/// The first occurrence of `word` at or after `from` that is not part of a longer name.
fn find_word(text: &str, from: usize, word: &str) -> Option<usize> {
    if word.is_empty() || from > text.len() {
        return None;
    }
    let is_name = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let mut search = from;
    while let Some(found) = text.get(search..)?.find(word) {
        let at = search + found;
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if !before.is_some_and(is_name) && !after.is_some_and(is_name) {
            return Some(at);
        }
        search = at + word.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::render::context;
    use crate::mail::render::tests::{lead, workflow};

    fn ctx() -> Json {
        context(&lead(), &workflow(), "welcome", "https://acme.example/u/1")
    }

    fn one(html: &str, text: &str) -> Templates {
        let (templates, diagnostics) = Templates::from_memory(&[("t", html, text)], &[]);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        templates
    }

    #[test]
    fn strict_render_names_template_field_and_lead() {
        let templates = one("<p>Hi {{company}}</p>", "Hi {{company}}");
        let error = templates.render("t", &ctx()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "template `t` needs `company`, which lead bo@globex.example does not have"
        );
    }

    #[test]
    fn default_helper_works_in_strict_mode() {
        let templates = one(
            "{{default company \"your team\"}}|{{default first_name \"there\"}}",
            "{{default company \"your team\"}}|{{default (default company \"\") \"x\"}}",
        );
        let body = templates.render("t", &ctx()).unwrap();
        assert_eq!(body.html, "your team|Bo");
        assert_eq!(body.text, "your team|x");
    }

    #[test]
    fn default_helper_treats_empty_text_as_missing() {
        let templates = one("{{default plan \"free\"}}", "{{default plan \"free\"}}");
        let mut data = ctx();
        data["plan"] = Json::String("  ".into());
        assert_eq!(templates.render("t", &data).unwrap().text, "free");
    }

    #[test]
    fn html_is_escaped_text_is_not() {
        let templates = one(
            "<p>{{company}} {{default company \"x\"}}</p>",
            "{{company}} {{default company \"x\"}}",
        );
        let mut data = ctx();
        data["company"] = Json::String("<b>&".into());
        let body = templates.render("t", &data).unwrap();
        assert_eq!(body.html, "<p>&lt;b&gt;&amp; &lt;b&gt;&amp;</p>");
        assert_eq!(body.text, "<b>& <b>&");
    }

    #[test]
    fn if_guard_on_missing_field_renders_else() {
        let templates = one(
            "Hi {{#if company}}{{company}}{{else}}there{{/if}}",
            "Hi {{#unless company}}there{{/unless}}",
        );
        let body = templates.render("t", &ctx()).unwrap();
        assert_eq!(
            (body.html.as_str(), body.text.as_str()),
            ("Hi there", "Hi there")
        );
    }

    #[test]
    fn partials_resolve_per_flavor() {
        let (templates, diagnostics) = Templates::from_memory(
            &[("t", "<p>{{> footer}}</p>", "{{> footer}}")],
            &[(
                "footer",
                "<a href=\"{{unsubscribe_url}}\">stop</a>",
                "Stop: {{unsubscribe_url}}",
            )],
        );
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let body = templates.render("t", &ctx()).unwrap();
        assert_eq!(
            body.html,
            "<p><a href=\"https://acme.example/u/1\">stop</a></p>"
        );
        assert_eq!(body.text, "Stop: https://acme.example/u/1");
        assert_eq!(templates.names(), BTreeSet::from(["t".to_string()]));
    }

    #[test]
    fn unknown_partial_is_reported_at_load() {
        let (_, diagnostics) = Templates::from_memory(&[("t", "a\n {{> footr}}", "x")], &[]);
        assert_eq!(diagnostics.len(), 1);
        let location = diagnostics[0].location.as_ref().unwrap();
        assert_eq!((location.line, location.column), (2, 6));
        assert_eq!(diagnostics[0].message, "no partial named `footr`");
    }

    #[test]
    fn unknown_helper_is_reported_at_load_inline_partials_are_known() {
        let (_, diagnostics) = Templates::from_memory(
            &[(
                "t",
                "{{#*inline \"sig\"}}S{{/inline}}{{> sig}}\n{{#if (eq plan \"pro\")}}{{upper company}}{{/if}}",
                "{{defualt first_name \"x\"}}",
            )],
            &[],
        );
        let shown: Vec<String> = diagnostics
            .iter()
            .map(|d| {
                let l = d.location.as_ref().unwrap();
                format!(
                    "{}:{}:{} {} {:?}",
                    l.path.display(),
                    l.line,
                    l.column,
                    d.message,
                    d.hint
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                "templates/t.html.hbs:2:26 no helper named `upper` Some(\"helpers are `default`, `date`, `if`, `unless`, `each`, `with`, `eq`, `ne`, `gt`, `lt`, `and`, `or`, `not`, `len`, `lookup`, `link`\")",
                "templates/t.txt.hbs:1:3 no helper named `defualt` Some(\"did you mean `default`?\")",
            ]
        );
    }

    #[test]
    fn templates_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Templates>();
    }

    #[test]
    fn subject_is_unescaped_and_flattened() {
        let templates = one("x", "x");
        let mut data = ctx();
        data["company"] = Json::String("A&B\r\nBcc: evil@x.example\t <c>".into());
        let subject = templates
            .render_subject("Hi {{first_name}},   news for {{company}}", &data)
            .unwrap();
        assert_eq!(subject, "Hi Bo, news for A&B Bcc: evil@x.example <c>");
        // The second render uses the cached compiled subject.
        let again = templates
            .render_subject("Hi {{first_name}},   news for {{company}}", &data)
            .unwrap();
        assert_eq!(again, subject);
        let error = templates
            .render_subject("Hi {{last_name}}", &ctx())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the subject `Hi {{last_name}}` needs `last_name`, which lead bo@globex.example does not have"
        );
    }

    #[test]
    fn optional_fields_points_at_unguarded_uses_only() {
        let html = "<p>Hi {{#if first_name}}{{first_name}}{{/if}}</p>\n\
                    <p>{{default company \"you\"}} {{email}} {{score}}</p>\n\
                    <p>from {{sender_name}}, {{ last_name }}</p>";
        let text = "Hi {{first_name}}!\n{{#with company}}{{this}}{{../country}}{{/with}}\n\
                    {{#each tags}}{{this}} {{@root.plan}}{{/each}}\n\
                    {{#unless country}}x{{else}}{{country}}{{/unless}}";
        let templates = one(html, text);
        let found: Vec<(String, usize, usize, String)> = templates
            .field_diagnostics("t", &KnownFields::default())
            .into_iter()
            .map(|d| {
                let l = d.location.unwrap();
                (l.path.display().to_string(), l.line, l.column, d.message)
            })
            .collect();
        let expect = |path: &str, line, column, field: &str| {
            (
                path.to_string(),
                line,
                column,
                format!("`{field}` is used without a fallback, but some leads may not have it"),
            )
        };
        assert_eq!(
            found,
            vec![
                expect("templates/t.html.hbs", 3, 29, "last_name"),
                expect("templates/t.txt.hbs", 1, 6, "first_name"),
                expect("templates/t.txt.hbs", 2, 28, "country"),
                expect("templates/t.txt.hbs", 3, 26, "plan"),
            ]
        );
    }

    #[test]
    fn optional_fields_follow_partials_and_else_if() {
        let (templates, diagnostics) = Templates::from_memory(
            &[(
                "t",
                "{{#if a}}{{a}}{{else if b}}{{b}}{{a}}{{/if}}{{> sig}}",
                "{{> sig}}",
            )],
            &[("sig", "{{#if title}}{{title}}{{/if}}", "\n  {{title}}")],
        );
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let found: Vec<String> = templates
            .field_diagnostics("t", &KnownFields::default())
            .iter()
            .map(|d| {
                let l = d.location.as_ref().unwrap();
                format!("{}:{}:{}", l.path.display(), l.line, l.column)
            })
            .collect();
        assert_eq!(
            found,
            [
                "templates/partials/sig.txt.hbs:2:5",
                "templates/t.html.hbs:1:35"
            ]
        );
    }

    #[test]
    fn optional_field_warning_has_the_hint() {
        let templates = one("{{first_name}}", "x");
        let warning = &templates.field_diagnostics("t", &KnownFields::default())[0];
        assert!(!warning.is_error());
        assert_eq!(
            warning.hint.as_deref(),
            Some("write {{default first_name \"there\"}} or wrap it in {{#if first_name}}…{{/if}}")
        );
    }

    #[test]
    fn optional_fields_in_subject_lists_names() {
        let templates = one("x", "x");
        assert_eq!(
            templates.optional_fields_in_subject(
                "{{first_name}}, {{default company \"you\"}} {{#if plan}}{{plan}}{{/if}} {{first_name}} {{tags}} {{last_name}}"
            ),
            ["first_name", "last_name"]
        );
        assert!(Templates::validate_subject("Hi {{first_name").is_err());
    }

    #[test]
    fn compile_error_reports_file_line_column_and_leaves_template_out() {
        let (templates, diagnostics) = Templates::from_memory(
            &[
                ("unclosed", "<p>\n  {{#if x}}\n</p>\n", "ok"),
                ("bad", "ok", "Hi\n  {{foo bar=}} there"),
                ("good", "a", "b"),
            ],
            &[],
        );
        let shown: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            shown,
            [
                "error: `templates/unclosed.html.hbs` ends inside an unfinished block or expression\n \
                 --> templates/unclosed.html.hbs:4:1\n  |\n4 | \n  | ^ the file ends here\n  |\n  \
                 = hint: close every `{{#if …}}`, `{{#each …}}`, `{{#with …}}` and `{{#unless …}}` with its `{{/…}}`, and every `{{` with `}}`\n",
                "error: `templates/bad.txt.hbs` is not valid handlebars here\n \
                 --> templates/bad.txt.hbs:2:13\n  |\n2 |   {{foo bar=}} there\n  |             ^ cannot read this\n  |\n  \
                 = hint: check the `{{` and `}}` around here: a field is `{{name}}`, a block `{{#if name}}…{{/if}}`\n",
            ]
        );
        assert!(diagnostics.iter().all(Diagnostic::is_error));
        assert_eq!(templates.names(), BTreeSet::from(["good".to_string()]));
        assert!(matches!(
            templates.render("bad", &ctx()),
            Err(RenderError::UnknownTemplate(_))
        ));
    }

    #[test]
    fn load_reads_directory_and_reports_missing_flavor() {
        let dir = std::env::temp_dir().join(format!("nurture-templates-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("partials")).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write(
            "welcome.html.hbs",
            "<p>Hi {{default first_name \"there\"}}</p>{{> footer}}",
        );
        write(
            "welcome.txt.hbs",
            "Hi {{default first_name \"there\"}}\n{{> footer}}",
        );
        write("lonely.html.hbs", "<p>x</p>");
        write("broken.html.hbs", "line one\n  {{#if x}}y{{/each}}\nmore\n");
        write("broken.txt.hbs", "x");
        write(
            "partials/footer.html.hbs",
            "<a href=\"{{unsubscribe_url}}\">unsubscribe</a>",
        );
        write(
            "partials/footer.txt.hbs",
            "Unsubscribe: {{unsubscribe_url}}",
        );
        let (templates, diagnostics) = Templates::load(&dir);
        let messages: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(diagnostics.len(), 2, "{messages:#?}");
        assert!(
            messages[0].starts_with(&format!(
                "error: template `lonely` has no `{}`",
                dir.join("lonely.txt.hbs").display()
            )),
            "{messages:#?}"
        );
        let broken = diagnostics[1].location.as_ref().unwrap();
        assert_eq!(broken.path, dir.join("broken.html.hbs"));
        assert_eq!((broken.line, broken.column), (2, 13), "{messages:#?}");
        assert_eq!(
            diagnostics[1].message,
            format!(
                "`{}` is not a valid template: helper \"if\" was opened, but \"each\" is closing",
                dir.join("broken.html.hbs").display()
            )
        );
        assert_eq!(templates.names(), BTreeSet::from(["welcome".to_string()]));
        let body = templates.render("welcome", &ctx()).unwrap();
        assert_eq!(body.text, "Hi Bo\nUnsubscribe: https://acme.example/u/1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
