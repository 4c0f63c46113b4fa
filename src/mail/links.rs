//! The links of a rendered email: named links (`{{link "NAME" "URL"}}`) and, for a workflow
//! that says `track clicks` or `track opens`, the rewriting that makes an email report back.
//!
//! The `link` helper renders its URL behind a mark, `nurture-link:NAME:URL`, which [`finish`]
//! always takes away: untracked, the link is left exactly as written; tracked, every web link
//! of the HTML part (`<a href>`, `<area href>`, read with a real HTML tokenizer, `lol_html`)
//! and every bare web address of the text part becomes `{base}/c/{token}`, and the link
//! itself (its target, its name) is returned, in token order, for the store to keep with the
//! message. The token only names the message and the link's number, signed
//! ([`crate::token`]): the target comes back from the store, so the redirect can only ever go
//! where the email pointed (no open redirect). Opens: a 1×1 image `{base}/o/{token}` at the end
//! of the HTML body.
//!
//! Never rewritten: the unsubscribe link (nor any link to the daemon itself), `mailto:` and
//! other non-web links, anchors. Only attribute values change and one invisible image is
//! added, so the text a reader sees is the same (property-tested).

use std::cell::{Cell, RefCell};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderErrorReason, ScopedJson,
};
use lol_html::html_content::ContentType;
use lol_html::{RewriteStrSettings, element, rewrite_str};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::render::RenderedBody;
use crate::token::Signer;

/// The helper's name in templates.
pub const HELPER: &str = "link";
/// What the `link` helper puts before `NAME:URL`; never left in an email.
const MARK: &str = "nurture-link:";
/// Token kinds ([`crate::token`]): a click token is no open token, nor an unsubscribe token.
const CLICK: &str = "click";
const OPEN: &str = "open";

/// One link of a tracked email, as kept with the message: where a click on it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedLink {
    /// The target, with HTML entities resolved (what a browser would have followed).
    pub url: String,
    /// `{{link "NAME" …}}`'s name, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// How one email is tracked: its message number (the daemon's sequence, in its Message-ID)
/// and what to report.
pub struct Tracker<'a> {
    pub signer: &'a Signer,
    /// `http.base_url`, without a trailing slash.
    pub base_url: &'a str,
    pub message: u64,
    pub clicks: bool,
    pub opens: bool,
}

impl Tracker<'_> {
    fn click_url(&self, index: usize) -> String {
        format!(
            "{}/c/{}",
            self.base_url,
            click_token(self.signer, self.message, index)
        )
    }

    fn open_url(&self) -> String {
        format!(
            "{}/o/{}",
            self.base_url,
            open_token(self.signer, self.message)
        )
    }

    /// Whether a click on `url` is tracked: web links, except the daemon's own (unsubscribe,
    /// confirmation) and `keep`.
    fn tracks(&self, url: &str, keep: &str) -> bool {
        let lower = url.trim().to_ascii_lowercase();
        self.clicks
            && (lower.starts_with("https://") || lower.starts_with("http://"))
            && url.trim() != keep
            && !lower.starts_with(&self.base_url.to_ascii_lowercase())
    }
}

/// Whether `name` may name a link: letters, digits, `-` and `_`, at most 64.
pub fn is_link_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The token of link `index` of message `message`.
pub fn click_token(signer: &Signer, message: u64, index: usize) -> String {
    signer.seal(CLICK, &[&format!("{message:x}"), &index.to_string()])
}

/// The token of message `message`'s open image.
pub fn open_token(signer: &Signer, message: u64) -> String {
    signer.seal(OPEN, &[&format!("{message:x}")])
}

/// The message and link a genuine click token names; `None` for anything else.
pub fn read_click(signer: &Signer, token: &str) -> Option<(u64, usize)> {
    match signer.open(CLICK, token)?.as_slice() {
        [message, index] => Some((u64::from_str_radix(message, 16).ok()?, index.parse().ok()?)),
        _ => None,
    }
}

/// The message a genuine open token names.
pub fn read_open(signer: &Signer, token: &str) -> Option<u64> {
    match signer.open(OPEN, token)?.as_slice() {
        [message] => u64::from_str_radix(message, 16).ok(),
        _ => None,
    }
}

/// Takes the `link` helper's marks away and, with a tracker, rewrites the links (see the
/// module header). `keep`: the unsubscribe link, never rewritten. Returns the body and the
/// tracked links in token order (the same target and name in both parts is one link).
pub fn finish(
    body: RenderedBody,
    tracker: Option<&Tracker>,
    keep: &str,
) -> Result<(RenderedBody, Vec<TrackedLink>), String> {
    // Untracked email without named links: nothing to do (the engine's hot path).
    if tracker.is_none_or(|t| !t.clicks && !t.opens)
        && !body.html.contains(MARK)
        && !body.text.contains(MARK)
    {
        return Ok((body, Vec::new()));
    }
    let links = RefCell::new(Vec::new());
    let html = rewrite_html(&body.html, tracker, keep, &links)?;
    let text = rewrite_text(&body.text, tracker, keep, &links);
    Ok((RenderedBody { html, text }, links.into_inner()))
}

/// The number of `link` in `links`, added if new.
fn index_of(links: &RefCell<Vec<TrackedLink>>, link: TrackedLink) -> usize {
    let mut links = links.borrow_mut();
    match links.iter().position(|known| *known == link) {
        Some(index) => index,
        None => {
            links.push(link);
            links.len() - 1
        }
    }
}

/// `nurture-link:NAME:rest` → `(NAME, rest)`.
fn unmark(text: &str) -> Option<(&str, &str)> {
    text.strip_prefix(MARK)?.split_once(':')
}

fn rewrite_html(
    html: &str,
    tracker: Option<&Tracker>,
    keep: &str,
    links: &RefCell<Vec<TrackedLink>>,
) -> Result<String, String> {
    let saw_body = Cell::new(false);
    let pixel = tracker.filter(|t| t.opens).map(pixel);
    let rewrite_link = |el: &mut lol_html::html_content::Element| {
        let Some(raw) = el.get_attribute("href") else {
            return Ok(());
        };
        if let Some(href) = rewritten_href(&Href::read(&raw), tracker, keep, links) {
            el.set_attribute("href", &href)?;
        }
        Ok(())
    };
    let mut settings = RewriteStrSettings::new()
        .append_element_content_handler(element!("a[href]", |el| rewrite_link(el)))
        .append_element_content_handler(element!("area[href]", |el| rewrite_link(el)));
    if let Some(pixel) = &pixel {
        settings = settings.append_element_content_handler(element!("body", |el| {
            saw_body.set(true);
            el.append(pixel, ContentType::Html);
            Ok(())
        }));
    }
    let mut out = rewrite_str(html, settings)
        .map_err(|error| format!("cannot rewrite the links of the HTML part: {error}"))?;
    if let Some(pixel) = pixel
        && !saw_body.get()
    {
        out.push_str(&pixel);
    }
    Ok(out)
}

/// An `href` of the HTML part, as written (entities and all), read once.
#[derive(Debug, Clone)]
pub(super) struct Href {
    /// `{{link "NAME" …}}`'s name, when the `link` helper wrote it.
    name: Option<String>,
    /// As written, without the helper's mark.
    written: String,
    /// With entities resolved: what a browser would follow.
    url: String,
}

impl Href {
    pub(super) fn read(raw: &str) -> Href {
        let (name, written) = match unmark(raw.trim_start()) {
            Some((name, rest)) => (Some(name.to_string()), rest.to_string()),
            None => (None, raw.to_string()),
        };
        let url = html_escape::decode_html_entities(&written).into_owned();
        Href { name, written, url }
    }
}

/// The value a link's `href` becomes, or `None` when it stays as written: a tracked link's
/// `{base}/c/{token}` (numbered in `links`), an untracked named link's URL without the mark.
pub(super) fn rewritten_href(
    href: &Href,
    tracker: Option<&Tracker>,
    keep: &str,
    links: &RefCell<Vec<TrackedLink>>,
) -> Option<String> {
    match tracker.filter(|t| t.tracks(&href.url, keep)) {
        Some(tracker) => {
            let link = TrackedLink {
                url: href.url.clone(),
                name: href.name.clone(),
            };
            Some(tracker.click_url(index_of(links, link)))
        }
        None if href.name.is_some() => Some(href.written.clone()),
        None => None,
    }
}

/// The open image, put at the end of the HTML body.
pub(super) fn pixel(tracker: &Tracker) -> String {
    format!(
        "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" \
             style=\"display:block;width:1px;height:1px;border:0\">",
        tracker.open_url()
    )
}

/// What the `link` helper prints for `{{link "NAME" "URL"}}` (before HTML escaping).
pub(super) fn marked(name: &str, url: &str) -> String {
    format!("{MARK}{name}:{}", url.trim())
}

/// The text part: marked links and bare web addresses.
pub(super) fn rewrite_text(
    text: &str,
    tracker: Option<&Tracker>,
    keep: &str,
    links: &RefCell<Vec<TrackedLink>>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = next_link(rest) {
        out.push_str(&rest[..start]);
        let (name, from) = match unmark(&rest[start..]) {
            Some((name, after)) => (Some(name.to_string()), rest.len() - after.len()),
            None => (None, start),
        };
        let length = url_length(&rest[from..]);
        let url = &rest[from..from + length];
        match tracker.filter(|t| !url.is_empty() && t.tracks(url, keep)) {
            Some(tracker) => {
                let link = TrackedLink {
                    url: url.to_string(),
                    name,
                };
                out.push_str(&tracker.click_url(index_of(links, link)));
            }
            None => out.push_str(url),
        }
        rest = &rest[from + length..];
    }
    out.push_str(rest);
    out
}

/// Where the next mark or web address starts.
fn next_link(text: &str) -> Option<usize> {
    [MARK, "https://", "http://"]
        .iter()
        .filter_map(|pattern| text.find(pattern))
        .min()
}

/// How long the address at the start of `text` is: up to a space or a character that cannot
/// be in one, without the punctuation that ends a sentence.
fn url_length(text: &str) -> usize {
    let end = text
        .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '`'))
        .unwrap_or(text.len());
    text[..end]
        .trim_end_matches(['.', ',', ';', ':', '!', '?', ')', ']', '\''])
        .len()
}

/// `{{link "NAME" "URL"}}`: the URL, marked with its name for [`finish`]. A value, so the HTML
/// registry escapes it like any other.
pub struct LinkHelper;

impl HelperDef for LinkHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let text = |index: usize| {
            h.param(index)
                .and_then(|param| param.value().as_str().map(str::to_owned))
                .ok_or(RenderErrorReason::ParamNotFoundForIndex(HELPER, index))
        };
        let name = text(0)?;
        let url = text(1)?;
        if !is_link_name(&name) {
            return Err(RenderErrorReason::Other(format!(
                "`{name}` is not a link name: letters, digits, `-` and `_` only"
            ))
            .into());
        }
        Ok(ScopedJson::Derived(Json::String(marked(&name, &url))))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEEP: &str = "https://n.example/unsubscribe/abc";

    fn signer() -> Signer {
        Signer::new(b"0123456789abcdef0123").unwrap()
    }

    fn tracked(html: &str, text: &str) -> (RenderedBody, Vec<TrackedLink>) {
        let signer = signer();
        let tracker = Tracker {
            signer: &signer,
            base_url: "https://n.example",
            message: 0x4d2,
            clicks: true,
            opens: true,
        };
        let body = RenderedBody {
            html: html.into(),
            text: text.into(),
        };
        finish(body, Some(&tracker), KEEP).unwrap()
    }

    /// The text a reader sees: every text chunk of the HTML, in order.
    fn visible(html: &str) -> String {
        let seen = RefCell::new(String::new());
        let settings = RewriteStrSettings::new().append_document_content_handler(
            lol_html::doc_text!(|chunk| {
                seen.borrow_mut().push_str(chunk.as_str());
                Ok(())
            }),
        );
        rewrite_str(html, settings).unwrap();
        seen.into_inner()
    }

    #[test]
    fn links_become_tokens_that_name_the_message_and_the_link() {
        let (body, links) = tracked(
            "<html><body><p>Hi <a href=\"https://a.example/x?q=1&amp;r=2\">A</a> \
             <a href=\"nurture-link:pricing:https://b.example/p\">B</a> \
             <a href=\"https://n.example/unsubscribe/abc\">stop</a> \
             <a href=\"mailto:x@y.example\">mail</a></p></body></html>",
            "See https://a.example/x?q=1&r=2. And nurture-link:pricing:https://b.example/p\n",
        );
        assert_eq!(
            links,
            vec![
                TrackedLink {
                    url: "https://a.example/x?q=1&r=2".into(),
                    name: None
                },
                TrackedLink {
                    url: "https://b.example/p".into(),
                    name: Some("pricing".into())
                },
            ]
        );
        let signer = signer();
        let first = format!("https://n.example/c/{}", click_token(&signer, 0x4d2, 0));
        let second = format!("https://n.example/c/{}", click_token(&signer, 0x4d2, 1));
        assert!(body.html.contains(&first) && body.html.contains(&second));
        assert!(
            body.html
                .contains("href=\"https://n.example/unsubscribe/abc\"")
        );
        assert!(body.html.contains("href=\"mailto:x@y.example\""));
        // The open image goes at the end of the body.
        let pixel = format!("https://n.example/o/{}", open_token(&signer, 0x4d2));
        let at = body.html.find(&pixel).unwrap();
        assert!(body.html[at..].contains("</body>"));
        // The text part's same links are the same numbers; the full stop stays text.
        assert_eq!(body.text, format!("See {first}. And {second}\n"));
        assert_eq!(
            read_click(&signer, &click_token(&signer, 7, 3)),
            Some((7, 3))
        );
        assert_eq!(read_open(&signer, &click_token(&signer, 7, 3)), None);
    }

    #[test]
    fn untracked_named_links_are_left_as_written() {
        let body = RenderedBody {
            html: "<a href=\"nurture-link:pricing:https://b.example/?a=1&amp;b=2\">B</a>".into(),
            text: "nurture-link:pricing:https://b.example/?a=1&b=2".into(),
        };
        let (body, links) = finish(body, None, KEEP).unwrap();
        assert!(links.is_empty());
        assert_eq!(
            body.html,
            "<a href=\"https://b.example/?a=1&amp;b=2\">B</a>"
        );
        assert_eq!(body.text, "https://b.example/?a=1&b=2");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        // Hostile HTML: whatever comes in, rewriting answers, and never changes what a reader
        // sees, and the unsubscribe link stays as it was.
        #[test]
        fn rewriting_keeps_the_visible_text_and_the_unsubscribe_link(
            before in "(<[a-zA-Z/!?][^>]{0,20}>?|&[a-z#0-9]{0,6};?|[^<&]{0,12}|<a href=\"https://[a-z.]{1,8}/[a-z]{0,4}\">){0,12}",
            after in "(<[a-zA-Z/!?][^>]{0,20}>?|[^<&]{0,12}|<a href='http://x.example/'>){0,6}",
        ) {
            let html = format!(
                "{before}<a href=\"{KEEP}\">unsubscribe</a>{after}"
            );
            let Ok((body, links)) = finish(
                RenderedBody { html: html.clone(), text: String::new() },
                Some(&Tracker {
                    signer: &signer(),
                    base_url: "https://n.example",
                    message: 1,
                    clicks: true,
                    opens: false,
                }),
                KEEP,
            ) else {
                return Err(TestCaseError::fail("rewriting failed"));
            };
            prop_assert_eq!(visible(&body.html), visible(&html));
            prop_assert!(links.iter().all(|link| link.url != KEEP));
            // Unless hostile markup before it swallowed it into another tag's attribute, the
            // unsubscribe link is still there, as written.
            if !before.to_ascii_lowercase().contains("href") {
                prop_assert_eq!(body.html.matches(KEEP).count(), html.matches(KEEP).count());
            }
        }

        #[test]
        fn any_text_part_keeps_its_words(text in "[ -~\n]{0,200}") {
            let (body, _) = tracked("", &text);
            let words = |t: &str| -> Vec<String> {
                t.split_whitespace()
                    .filter(|w| !w.contains("http://") && !w.contains("https://"))
                    .map(str::to_owned)
                    .collect()
            };
            prop_assert_eq!(words(&body.text), words(&text));
        }
    }
}
