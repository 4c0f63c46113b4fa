//! Tracked links placed once per template, instead of found again in every email.
//!
//! [`super::links::finish`] reads each tracked email with an HTML tokenizer (`lol_html`) to
//! find its links, which costs more than rendering the email. But a template writes its links
//! itself (a literal `href`, a `{{link "NAME" "URL"}}`), so where they stand can be worked out
//! once, at load: [`plan`] reads a compiled HTML template the way the tokenizer would read any
//! email made from it and, when that reading holds whatever a lead's data is, returns a copy
//! of the template in which each link's start tag is a mark (and the end of `<body>`, where
//! the open image goes, another). An email rendered from that copy, with each mark swapped for
//! the start tag the tokenizer pass would have written ([`fill`]), is byte for byte the same,
//! with the same links in the same token order; the tokens are still signed per email.
//!
//! The reading holds when nothing a lead's data prints can change how the tokenizer reads the
//! template's own markup. What a lead's data prints is HTML-escaped (no `<`, `>`, quotes or
//! `=`), so that is so when every `{{…}}` stands in text or inside a quoted attribute value of
//! a tag that is no link, and when every block (`{{#if}}`, `{{#each}}`…) and partial starts
//! and ends in text: any choice or repetition of them then reads the same. [`plan`] checks
//! exactly that with the tokenizer itself, on a stand-in of the template: a `{{…}}` in text,
//! and each block boundary, becomes a probe tag `x<nurture-probe-N>`, which the tokenizer only
//! sees as a tag where it reads text (the `x` ends any tag left open before it); a `{{…}}`
//! inside a tag becomes a stand-in value `nurturegapN x`, which must come back whole in one
//! attribute's value (so it was quoted).
//!
//! Anything it cannot prove keeps the tokenizer pass per email (see [`NotPlaced`] for the
//! cases): a link whose href a lead's data writes (except the unsubscribe link, which is never
//! rewritten), `{{{…}}}`, helpers that may print unescaped, partials with arguments or whose
//! own reading does not hold, inline partials and decorators, `<select>`, `<template>` and
//! `<frameset>` (where the tokenizer may refuse to go on), and a `<body>` not written once in
//! the template itself.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::rc::Rc;

use handlebars::template::{HelperTemplate, Parameter, Template, TemplateElement};
use lol_html::html_content::Element;
use lol_html::{RewriteStrSettings, element, rewrite_str};
use memchr::memmem;
use serde_json::Value as Json;

use super::links::{self, Href, TrackedLink, Tracker};
use super::render::RenderedBody;

/// Starts every mark. No lead's data can print `<`, and a template that writes this is not
/// planned, so a mark in the output is always one of ours.
const MARK: &str = "<\u{1}";
/// Ends every mark.
const MARK_END: char = '\u{2}';
/// What the open image's mark holds (a link's holds its number).
const PIXEL: &str = "o";
/// The tag name of the probes ([`NotPlaced::Marked`] if a template writes it).
const PROBE: &str = "nurture-probe-";
/// The stand-in value of a `{{…}}` inside a tag; the space tells a quoted value.
const GAP: &str = "nurturegap";
/// Where the new href goes in a start tag rewritten by the tokenizer pass (no `"`: that would
/// be escaped).
const HREF_HERE: &str = "\u{3}";

/// Why a template keeps the tokenizer pass per email (for tests and debugging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotPlaced {
    /// `{{{…}}}`, a decorator, an inline partial, a partial block, a block helper other than
    /// `if`, `unless`, `each`, `with`, or a helper that may print unescaped.
    Construct,
    /// A partial with arguments, inside `each`/`with`, unknown, or not planned itself.
    Partial,
    /// A `{{link …}}` that is not the whole href of a link, or whose arguments are not text.
    NamedLink,
    /// The template writes a mark or a probe's name.
    Marked,
    /// The tokenizer does not read the stand-in as planned: a `{{…}}` in a comment, a
    /// `<script>`, a tag name, an unquoted value, a link, or a block that does not start and
    /// end in text.
    Reading,
    /// `<select>`, `<template>` or `<frameset>`.
    Ambiguous,
    /// No single `<body>` … `</body>` outside blocks, in a template; any `<body>` in a partial.
    Body,
}

/// One link of a planned template, by the number in its mark.
#[derive(Debug, Clone)]
struct PlacedLink {
    /// The start tag as written: what an untouched link renders as.
    tag: String,
    /// The start tag as the tokenizer pass writes it with a new href: before and after it.
    before: String,
    after: String,
    /// The href, read as the tokenizer pass reads it.
    href: Href,
}

/// What [`plan`] worked out for every template: its links, and how each planned template
/// places its open image.
#[derive(Debug, Default)]
pub struct LinkPlan {
    links: Vec<PlacedLink>,
    /// Planned templates: whether the open image goes at the very end (no `<body>`).
    templates: BTreeMap<String, bool>,
    /// The others, and why.
    refused: BTreeMap<String, NotPlaced>,
}

impl LinkPlan {
    /// Whether template `name` renders from its marked copy.
    pub fn is_planned(&self, name: &str) -> bool {
        self.templates.contains_key(name)
    }

    /// Why template `name` keeps the tokenizer pass, if it does.
    pub fn refused(&self, name: &str) -> Option<&NotPlaced> {
        self.refused.get(name)
    }
}

/// Plans every template and partial (HTML flavor). Returns the plan and the marked copies to
/// register, by name: the planned templates and every partial they may include.
pub fn plan(
    templates: &BTreeMap<String, &Template>,
    partials: &BTreeMap<String, &Template>,
) -> (LinkPlan, Vec<(String, Template)>) {
    let mut planner = Planner {
        partials,
        links: Vec::new(),
        planned_partials: BTreeMap::new(),
        in_progress: Vec::new(),
    };
    let mut plan = LinkPlan::default();
    let mut copies = Vec::new();
    for (name, template) in templates {
        match planner.plan_one(template, Mode::Template) {
            Ok((copy, pixel_at_end)) => {
                plan.templates.insert(name.clone(), pixel_at_end);
                copies.push((name.clone(), copy));
            }
            Err(why) => {
                plan.refused.insert(name.clone(), why);
            }
        }
    }
    for (name, planned) in planner.planned_partials {
        match planned {
            Ok(copy) => copies.push((name, copy)),
            Err(why) => {
                plan.refused.insert(format!("> {name}"), why);
            }
        }
    }
    plan.links = planner.links;
    (plan, copies)
}

/// An email of planned template `template` (its HTML part rendered from the marked copy)
/// finished as [`links::finish`] would: the body and the tracked links in token order. `None`
/// when the usual path must do it: the unsubscribe link would not stay as written (an
/// unsubscribe address with spaces around it, say), or a mark is not ours (never, short of a
/// bug).
pub fn finish(
    plan: &LinkPlan,
    template: &str,
    html: String,
    text: String,
    tracker: &Tracker,
    keep: &str,
) -> Option<(RenderedBody, Vec<TrackedLink>)> {
    let found = RefCell::new(Vec::new());
    let unsubscribe = Href::read(&handlebars::html_escape(keep));
    if links::rewritten_href(&unsubscribe, Some(tracker), keep, &found).is_some() {
        return None;
    }
    let html = fill(plan, template, &html, tracker, keep, &found)?;
    let text = links::rewrite_text(&text, Some(tracker), keep, &found);
    Some((RenderedBody { html, text }, found.into_inner()))
}

/// The HTML part with its marks swapped as the tokenizer pass would have rewritten the links
/// and placed the open image; the tracked links are numbered in `found`.
fn fill(
    plan: &LinkPlan,
    template: &str,
    html: &str,
    tracker: &Tracker,
    keep: &str,
    found: &RefCell<Vec<TrackedLink>>,
) -> Option<String> {
    let pixel_at_end = *plan.templates.get(template)?;
    let pixel = tracker.opens.then(|| links::pixel(tracker));
    let mut out = String::with_capacity(html.len() + 1024);
    let mut rest = html;
    while let Some(at) = memmem::find(rest.as_bytes(), MARK.as_bytes()) {
        out.push_str(&rest[..at]);
        let after = &rest[at + MARK.len()..];
        let end = after.find(MARK_END)?;
        let what = &after[..end];
        if what == PIXEL {
            out.push_str(pixel.as_deref().unwrap_or_default());
        } else {
            let link = plan.links.get(what.parse::<usize>().ok()?)?;
            match links::rewritten_href(&link.href, Some(tracker), keep, found) {
                Some(href) => {
                    out.push_str(&link.before);
                    escape_double_quotes(&href, &mut out);
                    out.push_str(&link.after);
                }
                None => out.push_str(&link.tag),
            }
        }
        rest = &after[end + MARK_END.len_utf8()..];
    }
    out.push_str(rest);
    if pixel_at_end && let Some(pixel) = pixel {
        out.push_str(&pixel);
    }
    Some(out)
}

/// As the tokenizer writes an attribute value it sets: `"` escaped, nothing else.
fn escape_double_quotes(value: &str, out: &mut String) {
    let mut parts = value.split('"');
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        out.push_str("&quot;");
        out.push_str(part);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A template: its `<body>` places the open image.
    Template,
    /// A partial: it must end in text, and holds no `<body>`.
    Partial,
}

struct Planner<'a> {
    partials: &'a BTreeMap<String, &'a Template>,
    links: Vec<PlacedLink>,
    /// Partials planned so far: their marked copy, or why not.
    planned_partials: BTreeMap<String, Result<Template, NotPlaced>>,
    /// Partials being planned, so a partial including itself cannot loop.
    in_progress: Vec<String>,
}

impl Planner<'_> {
    /// The marked copy of `template`, and whether its open image goes at the end.
    fn plan_one(&mut self, template: &Template, mode: Mode) -> Result<(Template, bool), NotPlaced> {
        self.plan_partials(template)?;
        // First reading: every `{{…}}` as a stand-in value, to learn which stand inside a tag.
        let first = Skeleton::build(template, &BTreeSet::new(), &self.planned_partials, true)?;
        let in_tag = first.gaps_inside_tags()?;
        // Second reading: the others as probes; it must read as planned.
        let skeleton = Skeleton::build(template, &in_tag, &self.planned_partials, false)?;
        let reading = skeleton.read()?;
        skeleton.check(&reading, mode)?;
        let mut edits = Vec::new();
        for link in &reading.links {
            let number = self.links.len();
            if let Some(placed) =
                skeleton.place_link(link, &mark(&number.to_string()), &mut edits)?
            {
                self.links.push(placed);
            }
        }
        let pixel_at_end = match (mode, &reading.bodies[..]) {
            (Mode::Template, []) => true,
            (Mode::Partial, []) => false,
            (Mode::Template, [body]) => {
                let end = body.end.clone().ok_or(NotPlaced::Body)?;
                skeleton.top_raw(&body.start).ok_or(NotPlaced::Body)?;
                let (loc, offset) = skeleton.top_raw(&end).ok_or(NotPlaced::Body)?;
                edits.push(Edit {
                    loc,
                    range: offset..offset,
                    replacement: mark(PIXEL),
                });
                false
            }
            _ => return Err(NotPlaced::Body),
        };
        Ok((apply(template, edits), pixel_at_end))
    }

    /// Plans, first, every partial `template` includes.
    fn plan_partials(&mut self, template: &Template) -> Result<(), NotPlaced> {
        let mut names = BTreeSet::new();
        included_partials(template, &mut names);
        for name in names {
            if self.planned_partials.contains_key(&name) {
                continue;
            }
            if self.in_progress.contains(&name) {
                return Err(NotPlaced::Partial);
            }
            let partial = *self.partials.get(&name).ok_or(NotPlaced::Partial)?;
            self.in_progress.push(name.clone());
            let planned = self.plan_one(partial, Mode::Partial).map(|(copy, _)| copy);
            self.in_progress.pop();
            self.planned_partials.insert(name, planned);
        }
        Ok(())
    }
}

/// The `{{> NAME}}` names anywhere in `template`.
fn included_partials(template: &Template, names: &mut BTreeSet<String>) {
    for element in &template.elements {
        match element {
            TemplateElement::PartialExpression(partial) => {
                names.extend(partial.name.as_name().map(str::to_owned));
            }
            TemplateElement::HelperBlock(helper) => {
                for inner in [&helper.template, &helper.inverse].into_iter().flatten() {
                    included_partials(inner, names);
                }
            }
            _ => {}
        }
    }
}

fn mark(what: &str) -> String {
    format!("{MARK}{what}{MARK_END}")
}

/// Where an element is in a template: the blocks leading to it (element number, inverse or
/// not) and its number in the innermost.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Loc {
    blocks: Vec<(usize, bool)>,
    index: usize,
}

/// A change to a raw text of the template: `range` of it becomes `replacement`. The
/// expression of a named link is emptied by a change to it with an empty range.
struct Edit {
    loc: Loc,
    range: Range<usize>,
    replacement: String,
}

/// The template with `edits` made (each text's changes from its end, so that ranges hold).
fn apply(template: &Template, mut edits: Vec<Edit>) -> Template {
    let mut copy = template.clone();
    edits.sort_by(|a, b| {
        (&a.loc.blocks, a.loc.index, b.range.start).cmp(&(
            &b.loc.blocks,
            b.loc.index,
            a.range.start,
        ))
    });
    for edit in edits {
        let Some(elements) = elements_mut(&mut copy, &edit.loc.blocks) else {
            continue;
        };
        match elements.get_mut(edit.loc.index) {
            Some(TemplateElement::RawString(text)) => {
                text.replace_range(edit.range, &edit.replacement)
            }
            Some(element @ TemplateElement::Expression(_)) => {
                *element = TemplateElement::RawString(edit.replacement)
            }
            _ => {}
        }
    }
    copy
}

fn elements_mut<'t>(
    template: &'t mut Template,
    blocks: &[(usize, bool)],
) -> Option<&'t mut Vec<TemplateElement>> {
    let mut template = template;
    for &(index, inverse) in blocks {
        let TemplateElement::HelperBlock(helper) = template.elements.get_mut(index)? else {
            return None;
        };
        template = if inverse {
            helper.inverse.as_mut()?
        } else {
            helper.template.as_mut()?
        };
    }
    Some(&mut template.elements)
}

/// What a `{{…}}` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GapKind {
    /// `{{link "NAME" "URL"}}`: the marked URL, as the helper prints it (escaped).
    Link(String),
    /// `{{unsubscribe_url}}` where it names the context's own (never a lead's field).
    Unsubscribe,
    /// Anything else: an escaped value, or a partial's output (starting and ending in text).
    Value,
}

enum Piece {
    /// A raw text of the template; `top`: outside any block.
    Raw { loc: Loc, top: bool },
    /// A `{{…}}`, a partial, or a block boundary (a probe with no `loc`).
    Gap {
        id: usize,
        loc: Option<Loc>,
        kind: GapKind,
        in_tag: bool,
    },
}

struct Segment {
    range: Range<usize>,
    piece: Piece,
}

/// The stand-in of a template that the tokenizer reads.
struct Skeleton {
    text: String,
    segments: Vec<Segment>,
    /// Where each probe's `<` is.
    probes: Vec<usize>,
    gaps: usize,
}

/// What the tokenizer read in a skeleton.
#[derive(Default)]
struct Reading {
    elements: Vec<SeenElement>,
    links: Vec<SeenLink>,
    bodies: Vec<SeenBody>,
}

struct SeenElement {
    range: Range<usize>,
    name: String,
    html: bool,
    values: Vec<String>,
}

struct SeenLink {
    range: Range<usize>,
    href: String,
}

struct SeenBody {
    start: Range<usize>,
    end: Option<Range<usize>>,
}

impl Skeleton {
    /// `in_tag`: the `{{…}}` (by number) that stand inside a tag; `all_in_tag` puts every one
    /// as a stand-in value (the first reading).
    fn build(
        template: &Template,
        in_tag: &BTreeSet<usize>,
        partials: &BTreeMap<String, Result<Template, NotPlaced>>,
        all_in_tag: bool,
    ) -> Result<Skeleton, NotPlaced> {
        let mut builder = Builder {
            in_tag,
            all_in_tag,
            partials,
            skeleton: Skeleton {
                text: String::new(),
                segments: Vec::new(),
                probes: Vec::new(),
                gaps: 0,
            },
        };
        builder.walk(template, &[], true)?;
        // The end reads as text (what a partial must do; harmless for a template).
        builder.probe();
        Ok(builder.skeleton)
    }

    /// The first reading: the `{{…}}` that stand inside a start tag.
    fn gaps_inside_tags(&self) -> Result<BTreeSet<usize>, NotPlaced> {
        let reading = self.read()?;
        let mut inside = BTreeSet::new();
        for segment in &self.segments {
            if let Piece::Gap {
                id, loc: Some(_), ..
            } = segment.piece
                && reading
                    .elements
                    .iter()
                    .any(|element| contains(&element.range, &segment.range))
            {
                inside.insert(id);
            }
        }
        Ok(inside)
    }

    fn read(&self) -> Result<Reading, NotPlaced> {
        let reading = Rc::new(RefCell::new(Reading::default()));
        let (all, links, bodies) = (reading.clone(), reading.clone(), reading.clone());
        let link = move |el: &mut Element| {
            links.borrow_mut().links.push(SeenLink {
                range: el.source_location().bytes(),
                href: el.get_attribute("href").unwrap_or_default(),
            });
            Ok(())
        };
        let settings = RewriteStrSettings::new()
            .append_element_content_handler(element!("*", move |el| {
                all.borrow_mut().elements.push(SeenElement {
                    range: el.source_location().bytes(),
                    name: el.tag_name(),
                    html: el.namespace_uri() == "http://www.w3.org/1999/xhtml",
                    values: el.attributes().iter().map(|a| a.value()).collect(),
                });
                Ok(())
            }))
            .append_element_content_handler(element!("a[href]", link.clone()))
            .append_element_content_handler(element!("area[href]", link))
            .append_element_content_handler(element!("body", move |el| {
                let number = {
                    let mut reading = bodies.borrow_mut();
                    reading.bodies.push(SeenBody {
                        start: el.source_location().bytes(),
                        end: None,
                    });
                    reading.bodies.len() - 1
                };
                let ends = bodies.clone();
                el.on_end_tag(lol_html::end_tag!(move |end| {
                    ends.borrow_mut().bodies[number].end = Some(end.source_location().bytes());
                    Ok(())
                }))?;
                Ok(())
            }));
        rewrite_str(&self.text, settings).map_err(|_| NotPlaced::Reading)?;
        Rc::try_unwrap(reading)
            .map(RefCell::into_inner)
            .map_err(|_| NotPlaced::Reading)
    }

    /// Whether the second reading is as planned (see the module header).
    fn check(&self, reading: &Reading, mode: Mode) -> Result<(), NotPlaced> {
        if reading
            .elements
            .iter()
            .any(|e| matches!(e.name.as_str(), "select" | "template" | "frameset"))
        {
            return Err(NotPlaced::Ambiguous);
        }
        // Every probe read as a tag, where it was put, in HTML.
        for (number, &at) in self.probes.iter().enumerate() {
            let name = format!("{PROBE}{number}");
            let seen = reading
                .elements
                .iter()
                .any(|e| e.name == name && e.range.start == at && e.html);
            if !seen {
                return Err(NotPlaced::Reading);
            }
        }
        // Every `{{…}}` inside a tag: whole in one quoted value, of a tag that is no link
        // (the links' own are judged in `place_link`).
        for segment in &self.segments {
            let Piece::Gap {
                id, in_tag: true, ..
            } = segment.piece
            else {
                continue;
            };
            let stand_in = &self.text[segment.range.clone()];
            let element = reading
                .elements
                .iter()
                .find(|e| contains(&e.range, &segment.range))
                .ok_or(NotPlaced::Reading)?;
            let quoted = element.values.iter().any(|v| v.contains(stand_in));
            let link = matches!(element.name.as_str(), "a" | "area");
            let href_of_link = reading
                .links
                .iter()
                .any(|l| contains(&l.range, &segment.range) && l.href == stand_in);
            if !quoted || (link && !href_of_link) {
                return Err(NotPlaced::Reading);
            }
            debug_assert!(id < self.gaps);
        }
        if mode == Mode::Partial && !reading.bodies.is_empty() {
            return Err(NotPlaced::Body);
        }
        Ok(())
    }

    /// The link, and the changes that put `mark` in place of its start tag; `None` for the
    /// unsubscribe link, left as written.
    fn place_link(
        &self,
        link: &SeenLink,
        mark: &str,
        edits: &mut Vec<Edit>,
    ) -> Result<Option<PlacedLink>, NotPlaced> {
        let inside: Vec<&Segment> = self
            .segments
            .iter()
            .filter(|s| matches!(s.piece, Piece::Gap { .. }) && overlaps(&link.range, &s.range))
            .collect();
        match inside[..] {
            [] => {
                // Written whole in one raw text.
                let (loc, offset) = self.raw_at(&link.range).ok_or(NotPlaced::Reading)?;
                let tag = &self.text[link.range.clone()];
                let placed = placed_link(tag, &link.href).ok_or(NotPlaced::Reading)?;
                edits.push(Edit {
                    loc,
                    range: offset..offset + tag.len(),
                    replacement: mark.to_string(),
                });
                Ok(Some(placed))
            }
            [gap] => {
                let Piece::Gap {
                    loc: Some(loc),
                    kind,
                    in_tag: true,
                    ..
                } = &gap.piece
                else {
                    return Err(NotPlaced::Reading);
                };
                if link.href != self.text[gap.range.clone()] {
                    return Err(NotPlaced::Reading);
                }
                let printed = match kind {
                    GapKind::Unsubscribe => return Ok(None),
                    GapKind::Link(printed) => printed,
                    GapKind::Value => return Err(NotPlaced::Reading),
                };
                // The tag: raw text before the `{{link}}`, the `{{link}}`, raw text after, all
                // three side by side in one element list.
                let before = link.range.start..gap.range.start;
                let after = gap.range.end..link.range.end;
                let (before_loc, before_offset) =
                    self.raw_at(&before).ok_or(NotPlaced::NamedLink)?;
                let (after_loc, _) = self.raw_at(&after).ok_or(NotPlaced::NamedLink)?;
                let beside = |other: &Loc, step: isize| {
                    other.blocks == loc.blocks && other.index as isize == loc.index as isize + step
                };
                if !beside(&before_loc, -1) || !beside(&after_loc, 1) {
                    return Err(NotPlaced::NamedLink);
                }
                let tag = format!(
                    "{}{printed}{}",
                    &self.text[before.clone()],
                    &self.text[after.clone()]
                );
                let placed = placed_link(&tag, printed).ok_or(NotPlaced::NamedLink)?;
                edits.push(Edit {
                    loc: after_loc,
                    range: 0..after.len(),
                    replacement: String::new(),
                });
                edits.push(Edit {
                    loc: loc.clone(),
                    range: 0..0,
                    replacement: String::new(),
                });
                edits.push(Edit {
                    loc: before_loc,
                    range: before_offset..before_offset + before.len(),
                    replacement: mark.to_string(),
                });
                Ok(Some(placed))
            }
            _ => Err(NotPlaced::Reading),
        }
    }

    /// The raw text that holds all of `range`, and where `range` starts in it.
    fn raw_at(&self, range: &Range<usize>) -> Option<(Loc, usize)> {
        self.segments
            .iter()
            .find_map(|segment| match &segment.piece {
                Piece::Raw { loc, .. } if contains(&segment.range, range) => {
                    Some((loc.clone(), range.start - segment.range.start))
                }
                _ => None,
            })
    }

    /// As [`Skeleton::raw_at`], for a raw text outside any block.
    fn top_raw(&self, range: &Range<usize>) -> Option<(Loc, usize)> {
        self.segments
            .iter()
            .find_map(|segment| match &segment.piece {
                Piece::Raw { loc, top: true } if contains(&segment.range, range) => {
                    Some((loc.clone(), range.start - segment.range.start))
                }
                _ => None,
            })
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

/// A start tag read on its own: as written, and as the tokenizer pass rewrites its href.
/// `href` is its href as read in the skeleton, which it must be again.
fn placed_link(tag: &str, href: &str) -> Option<PlacedLink> {
    let seen = RefCell::new(None);
    let set = |el: &mut Element| {
        *seen.borrow_mut() = el.get_attribute("href");
        el.set_attribute("href", HREF_HERE)?;
        Ok(())
    };
    let settings = RewriteStrSettings::new()
        .append_element_content_handler(element!("a[href]", set))
        .append_element_content_handler(element!("area[href]", set));
    let rewritten = rewrite_str(tag, settings).ok()?;
    if seen.into_inner().as_deref() != Some(href) || rewritten.matches(HREF_HERE).count() != 1 {
        return None;
    }
    let (before, after) = rewritten.split_once(HREF_HERE)?;
    Some(PlacedLink {
        tag: tag.to_string(),
        before: before.to_string(),
        after: after.to_string(),
        href: Href::read(href),
    })
}

struct Builder<'b> {
    in_tag: &'b BTreeSet<usize>,
    all_in_tag: bool,
    partials: &'b BTreeMap<String, Result<Template, NotPlaced>>,
    skeleton: Skeleton,
}

impl Builder<'_> {
    /// `root`: the context is the email's own (no `each`/`with` around).
    fn walk(
        &mut self,
        template: &Template,
        blocks: &[(usize, bool)],
        root: bool,
    ) -> Result<(), NotPlaced> {
        for (index, element) in template.elements.iter().enumerate() {
            let loc = Loc {
                blocks: blocks.to_vec(),
                index,
            };
            match element {
                TemplateElement::RawString(text) => {
                    if text.contains(MARK) || text.contains(PROBE) || text.contains(GAP) {
                        return Err(NotPlaced::Marked);
                    }
                    let start = self.skeleton.text.len();
                    self.skeleton.text.push_str(text);
                    self.skeleton.segments.push(Segment {
                        range: start..self.skeleton.text.len(),
                        piece: Piece::Raw {
                            loc,
                            top: blocks.is_empty(),
                        },
                    });
                }
                TemplateElement::Comment(_) => {}
                TemplateElement::Expression(helper) => {
                    let kind = gap_kind(helper, root)?;
                    self.gap(loc, kind);
                }
                TemplateElement::HelperBlock(helper) => {
                    let name = helper.name.as_name().ok_or(NotPlaced::Construct)?;
                    let keeps_context = match name {
                        "if" | "unless" => true,
                        "each" | "with" => false,
                        _ => return Err(NotPlaced::Construct),
                    };
                    let inner = root && keeps_context;
                    self.probe();
                    if let Some(template) = &helper.template {
                        self.walk(template, &[blocks, &[(index, false)]].concat(), inner)?;
                    }
                    self.probe();
                    if let Some(inverse) = &helper.inverse {
                        self.walk(inverse, &[blocks, &[(index, true)]].concat(), inner)?;
                    }
                    self.probe();
                }
                TemplateElement::PartialExpression(partial) => {
                    let planned = partial
                        .name
                        .as_name()
                        .and_then(|name| self.partials.get(name));
                    let simple = partial.params.is_empty()
                        && partial.hash.is_empty()
                        && partial.template.is_none();
                    if !root || !simple || !matches!(planned, Some(Ok(_))) {
                        return Err(NotPlaced::Partial);
                    }
                    // Starts in text (checked here) and ends in text (checked in its plan).
                    self.probe();
                }
                // `{{{…}}}`, decorators, inline partials, partial blocks.
                _ => return Err(NotPlaced::Construct),
            }
        }
        Ok(())
    }

    /// A `{{…}}`: a stand-in value inside a tag, a probe in text.
    fn gap(&mut self, loc: Loc, kind: GapKind) {
        let id = self.skeleton.gaps;
        self.skeleton.gaps += 1;
        let in_tag = self.all_in_tag || self.in_tag.contains(&id);
        let start = self.skeleton.text.len();
        if in_tag {
            self.skeleton.text.push_str(&format!("{GAP}{id} x"));
        } else {
            self.push_probe();
        }
        self.skeleton.segments.push(Segment {
            range: start..self.skeleton.text.len(),
            piece: Piece::Gap {
                id,
                loc: Some(loc),
                kind,
                in_tag,
            },
        });
    }

    /// A block boundary, or the start of a partial: must be read in text.
    fn probe(&mut self) {
        let start = self.skeleton.text.len();
        self.push_probe();
        self.skeleton.segments.push(Segment {
            range: start..self.skeleton.text.len(),
            piece: Piece::Gap {
                id: usize::MAX,
                loc: None,
                kind: GapKind::Value,
                in_tag: false,
            },
        });
    }

    fn push_probe(&mut self) {
        let number = self.skeleton.probes.len();
        self.skeleton.text.push('x');
        self.skeleton.probes.push(self.skeleton.text.len());
        self.skeleton.text.push_str(&format!("<{PROBE}{number}>"));
    }
}

/// What a `{{…}}` prints, if a planned template may hold it.
fn gap_kind(helper: &HelperTemplate, root: bool) -> Result<GapKind, NotPlaced> {
    let name = helper.name.as_name().ok_or(NotPlaced::Construct)?;
    let name_only = helper.params.is_empty() && helper.hash.is_empty();
    match name {
        links::HELPER => {
            let text = |index: usize| match helper.params.get(index) {
                Some(Parameter::Literal(Json::String(text))) => Some(text.as_str()),
                _ => None,
            };
            match (
                text(0),
                text(1),
                helper.params.len(),
                helper.hash.is_empty(),
            ) {
                // An invalid name fails the render: left to the usual path, which says so.
                (Some(link_name), Some(url), 2, true) if links::is_link_name(link_name) => Ok(
                    GapKind::Link(handlebars::html_escape(&links::marked(link_name, url))),
                ),
                _ => Err(NotPlaced::NamedLink),
            }
        }
        // Block helpers called as values, and helpers that write instead of returning a value.
        "if" | "unless" | "each" | "with" | "raw" | "log" | "lookup" => Err(NotPlaced::Construct),
        "unsubscribe_url" if name_only && root => Ok(GapKind::Unsubscribe),
        _ => Ok(GapKind::Value),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::lead::Value;
    use crate::mail::Templates;
    use crate::mail::render::context;
    use crate::mail::render::tests::{lead, workflow};
    use crate::token::Signer;

    fn signer() -> Signer {
        Signer::new(b"0123456789abcdef0123").unwrap()
    }

    /// Leads whose data tries everything: markup, quotes, links, the `link` helper's mark.
    fn leads() -> Vec<Json> {
        let hostile = [
            "<a href=\"https://evil.example/\">x</a>",
            "\"' onclick=alert(1) x='",
            "nurture-link:pricing:https://evil.example/",
            "https://lead.example/a?b=1&c=2",
            "</body><body>",
            "Ünïcødé & Co <\u{1}0\u{2}>",
            "",
        ];
        let mut all = Vec::new();
        for (number, text) in hostile.iter().enumerate() {
            let mut lead = lead();
            lead.company = Some(text.to_string());
            lead.first_name = (number % 2 == 0).then(|| text.to_string());
            lead.attributes
                .insert("offer_ends".into(), Value::Text("2026-12-11".into()));
            lead.attributes.insert(
                "trial_ends".into(),
                Value::Text("2026-12-01T10:00:00Z".into()),
            );
            lead.attributes.insert(
                "confirm_url".into(),
                Value::Text("https://n.example/confirm/x".into()),
            );
            lead.attributes
                .insert("expires_at".into(), Value::Text(text.to_string()));
            lead.attributes
                .insert("items".into(), Value::Text(text.to_string()));
            for keep in [
                "https://n.example/unsubscribe/abc?x=1&y=2",
                "mailto:stop@acme.example?subject=unsubscribe%20abc",
                " https://n.example/unsubscribe/spaces ",
            ] {
                all.push(context(&lead, &workflow(), "welcome", keep));
            }
        }
        all
    }

    /// Renders every template of `templates` for every lead and tracker, through the usual
    /// path (render, then the tokenizer pass) and through `render_linked`: the same bytes and
    /// the same links, always.
    fn same_both_ways(templates: &Templates) {
        let signer = signer();
        for name in templates.names() {
            for context in leads() {
                let keep = context["unsubscribe_url"].as_str().unwrap().to_string();
                for (base_url, clicks, opens) in [
                    ("https://n.example", true, true),
                    ("https://n.example", true, false),
                    ("https://n.example", false, true),
                    // Links to the daemon itself are not rewritten.
                    ("https://www.example.test", true, true),
                    ("https://q\"uote.example", true, true),
                ] {
                    let tracker = Tracker {
                        signer: &signer,
                        base_url,
                        message: 0x4d2,
                        clicks,
                        opens,
                    };
                    let usual = templates
                        .render(&name, &context)
                        .map_err(|e| e.to_string())
                        .and_then(|body| links::finish(body, Some(&tracker), &keep));
                    let linked = templates.render_linked(&name, &context, Some(&tracker), &keep);
                    assert_eq!(linked, usual, "template `{name}`, lead {context}");
                }
            }
        }
    }

    fn load(dir: &str) -> Templates {
        let (templates, diagnostics) =
            Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir));
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        templates
    }

    #[test]
    fn shipped_and_test_templates_render_the_same_both_ways_and_are_planned() {
        for dir in [
            "templates",
            "benches/fixtures/templates",
            "tests/fixtures/daemon/templates",
            "tests/fixtures/inbox/templates",
            "tests/fixtures/diagnostics/template_fields/templates",
        ] {
            let templates = load(dir);
            same_both_ways(&templates);
            for name in templates.names() {
                // The confirmation email's link is the lead's own confirmation address.
                let expected = (name == "confirm").then_some(&NotPlaced::Reading);
                assert_eq!(templates.links_refused(&name), expected, "{dir}: `{name}`");
            }
        }
    }

    fn refused(html: &str, partials: &[(&str, &str, &str)]) -> Option<NotPlaced> {
        let (templates, diagnostics) = Templates::from_memory(&[("t", html, "")], partials);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        same_both_ways(&templates);
        templates.links_refused("t").cloned()
    }

    #[test]
    fn what_a_lead_cannot_change_is_planned() {
        let planned = [
            "<p>Hi {{first_name}}</p><a href=\"https://a.example/x?q=1&amp;r=2\">A</a>",
            "<html><body class=\"x\">\n<A HREF='https://a.example/\"q'\n  title=\"x\">{{company}}</A></body></html>",
            "<img alt=\"{{company}}\" src=\"https://img.example/i.png\"><area href=\"https://a.example/m\">",
            "{{#if company}}<b>{{company}}</b><a href=\"https://a.example/c\">c</a>{{else}}<i>no</i>{{/if}}<a href=\"https://a.example/c\">again</a>",
            "{{#each tags}}<a href=\"https://a.example/t\">{{this}}</a>{{/each}}",
            "<a href=\"{{link \"pricing\" \" https://b.example/p?a=1&b=2 \"}}\" class=\"btn\">P</a> <a href=\"{{unsubscribe_url}}\">stop</a>",
            "<a href=\"{{link \"pricing\" \"https://b.example/p\"}}\">1</a><a href=\"{{link \"pricing\" \"https://b.example/p\"}}\">2</a>",
            "<a href=\"mailto:x@y.example\">m</a><a href=\"#top\">t</a><a href=\"https://n.example/self\">s</a>",
            "<body>{{> sig}}</body>",
            "<a href=\"nurture-link:odd:https://c.example/\">written mark</a>",
        ];
        let partial = [(
            "sig",
            "<p>{{sender_name}} <a href=\"https://a.example/sig\">site</a></p>",
            "",
        )];
        for html in planned {
            assert_eq!(refused(html, &partial), None, "{html}");
        }
    }

    #[test]
    fn what_a_lead_could_change_keeps_the_tokenizer() {
        let partial = [
            ("sig", "<a href=\"{{company}}\">x</a>", ""),
            ("open", "<p title=\"", ""),
        ];
        let cases = [
            ("<a href=\"{{company}}\">x</a>", NotPlaced::Reading),
            (
                "<a href=\"https://a.example/{{first_name}}\">x</a>",
                NotPlaced::Reading,
            ),
            (
                "<a title=\"{{company}}\" href=\"https://a.example/\">x</a>",
                NotPlaced::Reading,
            ),
            (
                "<a {{company}} href=\"https://a.example/\">x</a>",
                NotPlaced::Reading,
            ),
            ("<td class={{company}}>x</td>", NotPlaced::Reading),
            (
                "<{{company}} href=\"https://a.example/\">x</a>",
                NotPlaced::Reading,
            ),
            (
                "<!-- {{company}} --><a href=\"https://a.example/\">x</a>",
                NotPlaced::Reading,
            ),
            ("<title>{{company}}</title>", NotPlaced::Reading),
            (
                "{{#if company}}<a href=\"https://a.example/\"{{/if}}>x</a>",
                NotPlaced::Reading,
            ),
            (
                "{{#if company}}<!--{{/if}}<a href=\"https://a.example/\">x</a>",
                NotPlaced::Reading,
            ),
            (
                "{{{company}}}<a href=\"https://a.example/\">x</a>",
                NotPlaced::Construct,
            ),
            ("{{> sig}}", NotPlaced::Partial),
            ("{{> open}}{{company}}\">", NotPlaced::Partial),
            ("{{#with company}}{{> open}}{{/with}}", NotPlaced::Partial),
            (
                "<a href=\"{{link \"bad name\" \"https://b.example/p\"}}\">x</a>",
                NotPlaced::NamedLink,
            ),
            (
                "<a href=\"{{link \"p\" company}}\">x</a>",
                NotPlaced::NamedLink,
            ),
            (
                "{{#with company}}<a href=\"{{unsubscribe_url}}\">x</a>{{/with}}",
                NotPlaced::Reading,
            ),
            ("<select>{{company}}</select>", NotPlaced::Ambiguous),
            ("<body>a</body><body>b</body>", NotPlaced::Body),
            ("<body>{{#if company}}</body>{{/if}}", NotPlaced::Body),
            ("<body>no end", NotPlaced::Body),
            ("<p>x<\u{1}0\u{2}</p>", NotPlaced::Marked),
        ];
        for (html, why) in cases {
            assert_eq!(refused(html, &partial), Some(why), "{html}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        // Any mix of markup, links, blocks and values, planned or not, renders the same both
        // ways for any lead.
        #[test]
        fn any_template_renders_the_same_both_ways(
            pieces in prop::collection::vec(prop::sample::select(vec![
                "<p>", "</p>", "<body style=\"m\">", "</body>", "<!--", "-->", "<title>",
                "</title>", "<b title=\"", "\">", "'", "\"", "<", ">", "&amp;", " ", "\n",
                "<a href=\"https://a.example/x\">", "<a href='https://b.example/&quot;'>",
                "<area href=\"https://a.example/x\">", "</a>", "<a href=\"{{unsubscribe_url}}\">",
                "<a href=\"{{link \\\"n\\\" \\\"https://c.example/\\\"}}\">", "<a href=\"",
                "{{company}}", "{{default first_name \"there\"}}", "{{#if company}}",
                "{{else}}", "{{/if}}", "https://d.example/t", "<script>", "</script>",
            ]), 0..24),
            company in "[a-z<>\"'&= /:.]{0,12}",
        ) {
            let html = balanced(&pieces);
            let Ok(_) = Template::compile(&html) else { return Ok(()) };
            let (templates, diagnostics) = Templates::from_memory(&[("t", &html, "")], &[]);
            prop_assume!(diagnostics.is_empty());
            let mut data = context(&lead(), &workflow(), "s", "https://n.example/u/1");
            data["company"] = Json::String(company);
            let signer = signer();
            let tracker = Tracker {
                signer: &signer,
                base_url: "https://n.example",
                message: 7,
                clicks: true,
                opens: true,
            };
            let keep = "https://n.example/u/1";
            let usual = templates
                .render("t", &data)
                .map_err(|e| e.to_string())
                .and_then(|body| links::finish(body, Some(&tracker), keep));
            let linked = templates.render_linked("t", &data, Some(&tracker), keep);
            prop_assert_eq!(linked, usual, "{}", html);
        }
    }

    /// The pieces joined, with the `{{#if}}` blocks closed so the template compiles more often.
    fn balanced(pieces: &[&str]) -> String {
        let mut html = String::new();
        let mut open = 0usize;
        for piece in pieces {
            match *piece {
                "{{#if company}}" => open += 1,
                "{{else}}" | "{{/if}}" if open == 0 => continue,
                "{{/if}}" => open -= 1,
                _ => {}
            }
            html.push_str(piece);
        }
        html.push_str(&"{{/if}}".repeat(open));
        html
    }
}
