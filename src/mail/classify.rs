//! What an inbound mail is: a person's reply, an automatic answer, a bounce, a spam complaint,
//! an unsubscribe request, or unrelated mail. A pure function over the raw bytes
//! ([`classify`]); the bounce shapes live in [`bounce`], their reasons in [`reason`], the
//! complaints in [`complaint`].
//!
//! Rules:
//! - It never panics and never fails: mail that cannot be read is [`Kind::Unknown`].
//! - Nothing automatic is ever a [`Kind::HumanReply`]: only a human reply promotes a lead, so
//!   every doubt leans away from it. Complaints are checked first (a feedback report may come
//!   from a postmaster address), then bounces (they often carry `Auto-Submitted` too), then
//!   unsubscribe requests, auto-replies and bulk mail.
//! - Every kind says the signal that decided it, so that `nurture mail classify` can answer
//!   "why".
//! - Signals, in order: ARF feedback reports; RFC 3464 delivery reports (a report of
//!   successful delivery is not a bounce) and the common non-standard bounce shapes;
//!   the token of our `mailto:` unsubscribe link in the subject, or a first line that says
//!   "unsubscribe"/"stop"; RFC 3834 `Auto-Submitted` (≠ `no`), `X-Autoreply`, `X-Autorespond`,
//!   `Precedence: auto_reply|bulk|junk|list`, an empty `Return-Path`, out-of-office subjects in
//!   seven languages (with the return date read from the body when it is unambiguous); list
//!   mail (`List-Id`, `List-Unsubscribe`, `Precedence: bulk|junk|list`) that answers nothing is
//!   unrelated, while the same `Precedence` on a mail with `In-Reply-To`/`References` is an
//!   automatic answer (vacation responders set it).
//! - Our unsubscribe token travels in the subject of the `mailto:` link
//!   ([`crate::unsubscribe`]), not in the address, so that is where it is read.
//! - Message-IDs are given without angle brackets, as mail-parser reads them.

use aho_corasick::AhoCorasick;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use memchr::{memchr, memchr2, memmem, memrchr};
use std::borrow::Cow;
use std::sync::LazyLock;

use mail_parser::parsers::MessageStream;
use mail_parser::{Header, HeaderName, HeaderValue, Message, MessageParser, MimeHeaders, PartType};
use serde::Serialize;

use crate::unsubscribe::token_in_subject;

mod address;
mod ascii;
mod bounce;
mod complaint;
mod ids;
pub mod reason;
mod returned;
mod ses;

pub use reason::Reason;

/// A classified inbound mail: what it is, and what correlation needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incoming {
    pub kind: Kind,
    pub message_id: Option<String>,
    /// `In-Reply-To` then `References`, deduplicated: the mails this one answers.
    pub references: Vec<String>,
    /// For a bounce: the Message-ID of the returned message, when it can be read.
    pub original_message_id: Option<String>,
    /// The sender's address, lower case.
    pub from: Option<String>,
    pub subject: Option<String>,
    /// What the person wrote, quoted history and signature left out: one line, at most
    /// [`EXCERPT_CHARS`] characters.
    pub excerpt: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    HumanReply,
    AutoReply {
        return_date: Option<NaiveDate>,
        /// The signal that decided it.
        reason: String,
    },
    Bounce {
        recipient: Option<String>,
        /// The enhanced status code (`5.1.1`), or the SMTP code when that is all there is.
        status: Option<String>,
        /// Why it failed.
        reason: Reason,
        /// The address is gone for good (no such user or domain, answered with 5.x.x): the
        /// lead is suppressed. False for everything the sender or the moment is to blame for.
        permanent: bool,
        /// A warning that delivery is still being tried, not a failure.
        delayed: bool,
        /// The receiving server's words, on one line.
        diagnostic: Option<String>,
        /// What made it a bounce, and what decided the reason.
        signal: String,
    },
    /// A spam complaint (a feedback-loop report) about one of our messages.
    Complaint {
        /// The recipient of the reported message.
        recipient: Option<String>,
        /// `abuse`, `fraud`, `virus`, `other`, `not-spam`, `auth-failure` (RFC 5965), when
        /// given.
        feedback_type: Option<String>,
        signal: String,
    },
    Unsubscribe {
        token: Option<String>,
        reason: String,
    },
    Unrelated {
        reason: String,
    },
    Unknown {
        reason: String,
    },
}

impl Kind {
    /// The kind's name as `nurture mail classify` prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::HumanReply => "reply",
            Kind::AutoReply { .. } => "auto-reply",
            Kind::Bounce { .. } => "bounce",
            Kind::Complaint { .. } => "complaint",
            Kind::Unsubscribe { .. } => "unsubscribe",
            Kind::Unrelated { .. } => "unrelated",
            Kind::Unknown { .. } => "unknown",
        }
    }

    /// The signal that decided the kind.
    pub fn signal(&self) -> &str {
        match self {
            Kind::HumanReply => "no sign of an automatic sender",
            Kind::AutoReply { reason, .. }
            | Kind::Unsubscribe { reason, .. }
            | Kind::Unrelated { reason }
            | Kind::Unknown { reason } => reason,
            Kind::Bounce { signal, .. } | Kind::Complaint { signal, .. } => signal,
        }
    }
}

pub const EXCERPT_CHARS: usize = 200;

/// Parses only the headers classification reads: the three MIME headers mail-parser needs to
/// find the parts, and the subject. Every other header is skipped, not even copied: the few
/// read by name (`From`, `To`, `Date`, `Auto-Submitted`, `Return-Path`,
/// `X-Failed-Recipients`, …) are read raw ([`header_text`]), from where the parser saw them,
/// and so are the Message-IDs (`Message-ID`, `In-Reply-To`, `References`), read by [`ids`] as
/// mail-parser would read them, at a fraction of the cost. `Received` lines, a dozen in a
/// returned message, are the costly ones no decision needs.
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        .header_content_type(HeaderName::ContentType)
        .header_content_type(HeaderName::ContentDisposition)
        .header_text(HeaderName::ContentTransferEncoding)
        .header_text(HeaderName::Subject)
        .default_header_ignore()
});

/// Classifies one raw message (RFC 5322, LF or CRLF).
pub fn classify(raw: &[u8]) -> Incoming {
    let unknown = |reason: &str| Incoming {
        kind: Kind::Unknown {
            reason: reason.to_owned(),
        },
        message_id: None,
        references: Vec::new(),
        original_message_id: None,
        from: None,
        subject: None,
        excerpt: String::new(),
    };
    if raw.iter().all(u8::is_ascii_whitespace) {
        return unknown("empty message");
    }
    // What is parsed may be a copy of the mail: the messages bounces and complaints return
    // are kept raw, not parsed (`returned`), and ASCII parts are read as UTF-8 (`ascii`).
    let mut copy = returned::hide(raw);
    ascii::declare_utf8(raw, &mut copy);
    let Some(message) = PARSER.parse(copy.as_deref().unwrap_or(raw)) else {
        return unknown("not a mail message");
    };
    let mut inbound = Incoming {
        kind: Kind::HumanReply,
        message_id: message_id(&message),
        references: references(&message),
        original_message_id: None,
        from: first_address(&message, HeaderName::From),
        subject: header_value(&message, &HeaderName::Subject)
            .and_then(HeaderValue::as_text)
            .map(|s| s.trim().to_owned()),
        excerpt: String::new(),
    };
    let new_text = new_text(&message);
    inbound.excerpt = excerpt(&new_text);
    // Complaints, bounces and automatic answers all look for words in the subject: it is made
    // lower case once, here.
    let subject = inbound
        .subject
        .as_deref()
        .unwrap_or_default()
        .to_lowercase();
    let found = complaint::complaint(&message, &mut inbound, &subject)
        .or_else(|| bounce::bounce(&message, &mut inbound, &subject));
    inbound.kind = match found {
        Some(kind) => kind,
        None if inbound.from.is_none() => Kind::Unknown {
            reason: "no sender address".into(),
        },
        None => unsubscribe(&inbound, &new_text)
            .or_else(|| automatic(&message, &inbound, &new_text, &subject))
            .unwrap_or(Kind::HumanReply),
    };
    inbound
}

fn references(message: &Message<'_>) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for name in [HeaderName::InReplyTo, HeaderName::References] {
        for id in raw_value(message, &name).map(ids::ids).unwrap_or_default() {
            if !ids.iter().any(|known| *known == id) {
                ids.push(id.into_owned());
            }
        }
    }
    ids
}

/// `To`, `Cc`, then the envelope recipients the receiving server recorded (`Delivered-To`,
/// `X-Original-To`: the only trace of a `Bcc` or an alias), lower case, each once. Read from the
/// raw headers when a bounce needs them: [`PARSER`] does not parse them for every message.
fn recipients(message: &Message<'_>) -> Vec<String> {
    let lists: Vec<HeaderValue<'_>> = [HeaderName::To, HeaderName::Cc]
        .iter()
        .filter_map(|name| addresses(message, name))
        .chain(
            [HeaderName::DeliveredTo, other_header("X-Original-To")]
                .iter()
                .flat_map(|name| addresses_of_every(message, name)),
        )
        .collect();
    let mut found: Vec<String> = Vec::new();
    for address in lists
        .iter()
        .filter_map(HeaderValue::as_address)
        .flat_map(|list| list.iter())
        .filter_map(|a| a.address())
    {
        let address = address.to_ascii_lowercase();
        if !found.contains(&address) {
            found.push(address);
        }
    }
    found
}

/// When the message says it was sent (its `Date`), read from the raw header: only an automatic
/// answer needs it, to place a return date given without a year.
fn sent_date(message: &Message<'_>) -> Option<DateTime<Utc>> {
    let raw = raw_value(message, &HeaderName::Date)?;
    MessageStream::new(raw)
        .parse_date()
        .as_datetime()
        .and_then(|date| DateTime::from_timestamp(date.to_timestamp(), 0))
}

/// The last header of `message`'s top part named `name`: the one mail-parser's accessors
/// (`Message::from`, `Message::header_raw`, …) return. Names compare as mail-parser compares
/// them (a name of its own by variant, any other ignoring ASCII case), but inline: its
/// comparison, a call per header and lookup, was a tenth of what classification itself spent
/// (callgrind).
fn last_header<'a, 'x>(message: &'a Message<'x>, name: &HeaderName<'_>) -> Option<&'a Header<'x>> {
    message
        .root_part()
        .headers
        .iter()
        .rev()
        .find(|header| same_name(&header.name, name))
}

/// `HeaderName`'s equality: every name mail-parser knows is a variant of its own.
fn same_name(a: &HeaderName<'_>, b: &HeaderName<'_>) -> bool {
    match (a, b) {
        (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// The parsed value of the last `name` header ([`PARSER`] says which are parsed).
fn header_value<'a, 'x>(
    message: &'a Message<'x>,
    name: &HeaderName<'_>,
) -> Option<&'a HeaderValue<'x>> {
    last_header(message, name).map(|header| &header.value)
}

/// The addresses of the last `name` header (`From`, `To`, …), parsed from its raw value as
/// mail-parser parses an address header. [`PARSER`] leaves them unparsed: most messages need
/// only `From`'s first address ([`first_address`]), and a bounce a few more.
fn addresses<'a>(message: &'a Message<'_>, name: &HeaderName<'_>) -> Option<HeaderValue<'a>> {
    raw_value(message, name).map(address::parse)
}

/// The address of the first mailbox of the `name` header (`From`, `To`), lower case.
fn first_address(message: &Message<'_>, name: HeaderName<'static>) -> Option<String> {
    address::first_address(raw_value(message, &name)?)
}

/// The Message-ID of `message`, as `Message::message_id` reads it.
fn message_id(message: &Message<'_>) -> Option<String> {
    ids::last_id(raw_value(message, &HeaderName::MessageId)?)
}

/// The raw value of the last `name` header, from after its colon to the end of its last
/// folded line: what mail-parser parses the header from.
fn raw_value<'a>(message: &'a Message<'_>, name: &HeaderName<'_>) -> Option<&'a [u8]> {
    let header = last_header(message, name)?;
    message
        .raw_message
        .get(header.offset_start as usize..header.offset_end as usize)
}

/// Every `name` header of `message`, in order, read as addresses: what
/// `Message::header_as(name, HeaderForm::Addresses)` gives, with the names compared inline.
fn addresses_of_every<'a>(message: &'a Message<'_>, name: &HeaderName<'_>) -> Vec<HeaderValue<'a>> {
    message
        .root_part()
        .headers
        .iter()
        .filter(|header| same_name(&header.name, name))
        .map(|header| {
            message
                .raw_message
                .get(header.offset_start as usize..header.offset_end as usize)
                .map_or(HeaderValue::Empty, address::parse)
        })
        .collect()
}

/// A header's raw value, trimmed: as `Message::header_raw` reads it. The name is a
/// [`HeaderName`], not a `&str`: mail-parser would parse a string name again on every lookup.
fn header_text<'a>(message: &'a Message<'_>, name: HeaderName<'static>) -> Option<&'a str> {
    std::str::from_utf8(raw_value(message, &name)?)
        .ok()
        .map(str::trim)
}

/// The lines of `text`, as `str::lines` gives them (`\n` or `\r\n` ends one), found with
/// `memchr`: `str::lines` looks for each end with a searcher set up anew for every line, and
/// the lines of a notice or a report are short.
pub(super) fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let line = match memchr(b'\n', rest.as_bytes()) {
            Some(at) => {
                let line = &rest[..at];
                rest = &rest[at + 1..];
                line.strip_suffix('\r').unwrap_or(line)
            }
            None => std::mem::take(&mut rest),
        };
        Some(line)
    })
}

/// `bytes` as text, what is not UTF-8 replaced: as `String::from_utf8_lossy`, but checked first
/// with `str::from_utf8`, which passes over ASCII several bytes at a time where the lossy
/// decoder reads it a byte at a time. Parts are nearly always valid UTF-8.
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    std::str::from_utf8(bytes).map_or_else(|_| String::from_utf8_lossy(bytes), Cow::Borrowed)
}

/// A header mail-parser has no variant of its own for (`X-Failed-Recipients`, …).
const fn other_header(name: &'static str) -> HeaderName<'static> {
    HeaderName::Other(Cow::Borrowed(name))
}

// ---- bounces and complaints ----

/// Whether `message` is a `multipart/report` of `report_type`.
fn is_report(message: &Message<'_>, report_type: &str) -> bool {
    message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct
                .attribute("report-type")
                .is_some_and(|t| t.eq_ignore_ascii_case(report_type))
    })
}

/// The Message-ID of the message a bounce or a complaint returns: from an attached message or
/// attached headers, else the first `Message-ID:` line quoted in the body that is not the
/// bounce's own.
fn returned_message_id(message: &Message<'_>, own: Option<&str>) -> Option<String> {
    if let Some(id) = returned::returned(message).find_map(|returned| returned.message_id()) {
        return Some(id);
    }
    let headers_part = message.parts.iter().find(|part| {
        part.content_type().is_some_and(|ct| {
            ct.subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("rfc822-headers"))
        })
    });
    if let Some(part) = headers_part
        && let Some(id) = quoted_message_id(part.contents(), own)
    {
        return Some(id);
    }
    let raw = message.raw_message();
    let body = memmem::find(raw, b"\r\n\r\n")
        .map(|at| at + 4)
        .or_else(|| memmem::find(raw, b"\n\n").map(|at| at + 2))
        .map_or(&[][..], |at| &raw[at..]);
    quoted_message_id(body, own)
}

/// The id of the first `Message-ID:` line of `text` (leading blanks allowed, the name in any
/// case) that is neither empty nor `own`. Only lines holding the name are decoded: a returned
/// message can be long.
fn quoted_message_id(text: &[u8], own: Option<&str>) -> Option<String> {
    let mut from = 0;
    while let Some(at) = find_ignoring_case(&text[from..], b"message-id:") {
        let at = from + at;
        let start = memrchr(b'\n', &text[..at]).map_or(0, |i| i + 1);
        let end = memchr(b'\n', &text[at..]).map_or(text.len(), |i| at + i);
        from = end;
        let line = lossy(&text[start..end]);
        let Some((name, value)) = line.trim_start().split_once(':') else {
            continue;
        };
        if !name.eq_ignore_ascii_case("message-id") {
            continue;
        }
        let id = value.trim().trim_matches(['<', '>']);
        if !id.is_empty() && Some(id) != own {
            return Some(id.to_owned());
        }
    }
    None
}

/// Where `needle` (ASCII lower case) first occurs in `text`, ignoring ASCII case, without
/// copying: candidates are found by the needle's last byte in either case, which for
/// `message-id:` is a `:`, far rarer in mail than its first letter.
fn find_ignoring_case(text: &[u8], needle: &[u8]) -> Option<usize> {
    let Some(&last) = needle.last() else {
        return Some(0);
    };
    let mut from = needle.len() - 1;
    while let Some(at) = text
        .get(from..)
        .and_then(|rest| memchr2(last, last.to_ascii_uppercase(), rest))
    {
        let end = from + at + 1;
        let start = end - needle.len();
        if text[start..end].eq_ignore_ascii_case(needle) {
            return Some(start);
        }
        from = end;
    }
    None
}

/// Whether `text` contains `needle` (ASCII lower case), ignoring ASCII case, without copying.
fn contains_ignoring_case(text: &str, needle: &str) -> bool {
    find_ignoring_case(text.as_bytes(), needle.as_bytes()).is_some()
}

/// An enhanced status code (`5.1.1`) in a bounce's text, else a bare SMTP code (`550`).
fn status_in_text(text: &str) -> Option<String> {
    // "550-5.1.1", "(#5.1.1)", "<5.1.1>": the code is what the punctuation leaves. Both kinds of
    // code begin with 4 or 5, so only the words that begin with one are read: found with
    // memchr, in one pass, rather than splitting the whole text into words (twice).
    let is_separator = |c: char| {
        c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | ',' | ';' | '-' | '#' | '<' | '>')
    };
    let enhanced = |word: &str| {
        let mut parts = word.split('.');
        matches!(parts.next(), Some("4" | "5"))
            && parts.clone().count() == 2
            && parts.all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    let reply = |word: &str| word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit());
    let mut first_reply = None;
    let mut from = 0;
    while let Some(found) = memchr2(b'4', b'5', &text.as_bytes()[from..]) {
        // An ASCII digit is always a character boundary.
        let start = from + found;
        let end = text[start..]
            .find(is_separator)
            .map_or(text.len(), |length| start + length);
        from = end;
        let starts_a_word = text[..start].chars().next_back().is_none_or(is_separator);
        if !starts_a_word {
            continue;
        }
        let word = text[start..end].trim_end_matches(['.', ':']);
        if enhanced(word) {
            return Some(word.to_owned());
        }
        if first_reply.is_none() && reply(word) {
            first_reply = Some(word);
        }
    }
    first_reply.map(str::to_owned)
}

// ---- unsubscribe ----

/// First lines that ask to be taken off the list.
const UNSUBSCRIBE_WORDS: [&str; 14] = [
    "unsubscribe",
    "stop",
    "remove me",
    "abmelden",
    "austragen",
    "désabonner",
    "se désabonner",
    "désinscrire",
    "baja",
    "darme de baja",
    "cancelar suscripción",
    "disiscrivimi",
    "cancelar inscrição",
    "afmelden",
];

fn unsubscribe(inbound: &Incoming, new_text: &str) -> Option<Kind> {
    let subject = inbound.subject.as_deref().unwrap_or_default();
    if let Some(token) = token_in_subject(subject) {
        return Some(Kind::Unsubscribe {
            token: Some(token.to_owned()),
            reason: "the subject of our unsubscribe link".into(),
        });
    }
    let says = |text: &str| {
        let text = text.trim().trim_end_matches(['.', '!', ' ']).to_lowercase();
        UNSUBSCRIBE_WORDS.contains(&text.as_str())
    };
    if says(subject) {
        return Some(Kind::Unsubscribe {
            token: None,
            reason: format!("subject “{subject}”"),
        });
    }
    let first = lines(new_text)
        .map(str::trim)
        .find(|line| !line.is_empty())?;
    says(first).then(|| Kind::Unsubscribe {
        token: None,
        reason: format!("first line “{first}”"),
    })
}

// ---- automatic mail ----

/// Out-of-office subjects: English, German, French, Spanish, Italian, Portuguese, Dutch.
const OUT_OF_OFFICE_SUBJECTS: [&str; 24] = [
    "out of office",
    "out of the office",
    "automatic reply",
    "auto-reply",
    "autoreply",
    "auto reply",
    "away from the office",
    "abwesenheitsnotiz",
    "automatische antwort",
    "abwesend",
    "réponse automatique",
    "absence du bureau",
    "absent du bureau",
    "respuesta automática",
    "fuera de la oficina",
    "ausente",
    "risposta automatica",
    "fuori ufficio",
    "fuori sede",
    "resposta automática",
    "fora do escritório",
    "afwezig",
    "automatisch antwoord",
    "buiten kantoor",
];

/// [`OUT_OF_OFFICE_SUBJECTS`] as one automaton over the lower-cased subject.
static OUT_OF_OFFICE: LazyLock<AhoCorasick> =
    LazyLock::new(|| AhoCorasick::new(OUT_OF_OFFICE_SUBJECTS).expect("a valid set of patterns"));

/// `subject` is the message's subject in lower case.
fn automatic(
    message: &Message<'_>,
    inbound: &Incoming,
    new_text: &str,
    subject: &str,
) -> Option<Kind> {
    let answers_something = !inbound.references.is_empty();
    let auto = |reason: String| {
        Some(Kind::AutoReply {
            return_date: return_date(new_text, sent_date(message)),
            reason,
        })
    };
    if let Some(value) = header_text(message, HeaderName::AutoSubmitted)
        && !value.eq_ignore_ascii_case("no")
    {
        return auto(format!("Auto-Submitted: {value}"));
    }
    for name in ["X-Autoreply", "X-Autorespond", "X-Autoresponder"] {
        if let Some(value) = header_text(message, other_header(name)) {
            return auto(format!("{name}: {value}"));
        }
    }
    if let Some(precedence) = header_text(message, other_header("Precedence")) {
        let lower = precedence.to_ascii_lowercase();
        if lower == "auto_reply" {
            return auto(format!("Precedence: {precedence}"));
        }
        if matches!(lower.as_str(), "bulk" | "junk" | "list") {
            return if answers_something {
                auto(format!("Precedence: {precedence}"))
            } else {
                Some(Kind::Unrelated {
                    reason: format!("Precedence: {precedence}"),
                })
            };
        }
    }
    // The first phrase of the list that the subject holds, found in one pass over it.
    if let Some(words) = OUT_OF_OFFICE
        .find_overlapping_iter(subject)
        .map(|hit| hit.pattern().as_usize())
        .min()
        .map(|phrase| OUT_OF_OFFICE_SUBJECTS[phrase])
    {
        return auto(format!("subject says “{words}”"));
    }
    // French responders often say only "Absence" or "Absent(e)": too common a word to look for
    // anywhere in a subject, so only as its first word.
    if let Some(word) = ["absence", "absente", "absent"]
        .into_iter()
        .find(|word| first_word(subject) == *word)
    {
        return auto(format!("subject begins “{word}”"));
    }
    if header_text(message, HeaderName::ReturnPath) == Some("<>") {
        return auto("empty Return-Path".into());
    }
    let list_mail = header_text(message, HeaderName::ListId).is_some()
        || header_text(message, HeaderName::ListUnsubscribe).is_some();
    if list_mail && !answers_something {
        return Some(Kind::Unrelated {
            reason: "list mail that answers nothing".into(),
        });
    }
    None
}

fn first_word(text: &str) -> &str {
    text.split(|c: char| !c.is_alphanumeric())
        .find(|word| !word.is_empty())
        .unwrap_or_default()
}

// ---- the person's own words ----

/// Lines that start the quoted history, per language ("On … wrote:", "Am … schrieb …:",
/// "Le … a écrit :"), and Outlook's separators and header blocks: `From:` with an address, or
/// `From: Ana Ortiz` followed by `Sent:` (Outlook shows only the name when it knows the person).
fn is_attribution<'t>(line: &str, next: impl FnOnce() -> Option<&'t str>) -> bool {
    const FROM: [&str; 6] = ["from:", "von:", "de :", "de:", "da:", "van:"];
    const SENT: [&str; 14] = [
        "sent:",
        "date:",
        "gesendet:",
        "datum:",
        "envoyé :",
        "envoyé:",
        "date :",
        "enviado:",
        "enviado el:",
        "fecha:",
        "inviato:",
        "data:",
        "verzonden:",
        "verstuurd:",
    ];
    const VERBS: [&str; 8] = [
        "wrote",
        "writes",
        "schrieb",
        "écrit",
        "escribió",
        "scritto",
        "escreveu",
        "schreef",
    ];
    // Every shape below ends with `:` or starts with `-`, `_`, `f`, `v` or `d` in either
    // case (no other character lower-cases to those): most lines are settled without a copy.
    if !(line.trim_end().ends_with(':')
        || line
            .trim_start()
            .starts_with(['-', '_', 'f', 'F', 'v', 'V', 'd', 'D']))
    {
        return false;
    }
    let lower = line.trim().to_lowercase();
    (lower.ends_with(':') && VERBS.iter().any(|verb| lower.contains(verb)))
        || lower.starts_with("-----original message-----")
        || lower.starts_with("-----ursprüngliche nachricht-----")
        || lower.starts_with("-----message d'origine-----")
        || lower.starts_with("________________________________")
        || (FROM.iter().any(|start| lower.starts_with(start))
            && (lower.contains('@')
                || next().is_some_and(|next| {
                    let next = next.trim().to_lowercase();
                    SENT.iter().any(|start| next.starts_with(start))
                })))
}

/// The text the sender wrote: the first block that is not quoted, up to the quoted history
/// or the signature. From the text part, or from the HTML part when there is none.
fn new_text<'x>(message: &'x Message<'_>) -> Cow<'x, str> {
    match message.text_part(0).map(|part| &part.body) {
        Some(PartType::Text(text)) => Cow::Borrowed(own_words(text)),
        _ => {
            let text = message
                .body_html(0)
                .map(|html| html_to_text(&html))
                .unwrap_or_default();
            Cow::Owned(own_words(&text).to_owned())
        }
    }
}

/// What the sender wrote in `text`: from its first line that says something (quoted lines and
/// an attribution above it are passed over: bottom-posting) to the line before the quoted
/// history or the signature. Always one stretch of `text`, so it is borrowed, not copied.
fn own_words(text: &str) -> &str {
    let bytes = text.as_bytes();
    let mut start = None;
    let mut end = 0;
    let mut at = 0;
    while at < bytes.len() {
        let line_start = at;
        let line_end = memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |i| at + i);
        at = line_end + 1;
        let line = &text[line_start..line_end];
        let line = line.strip_suffix('\r').unwrap_or(line);
        let trimmed = line.trim();
        let next = || {
            text.get(at..)
                .map(|rest| lines(rest).next().unwrap_or(rest))
        };
        if trimmed.starts_with('>') || is_attribution(trimmed, next) {
            if start.is_some() {
                break;
            }
            continue;
        }
        if line == "-- " || trimmed == "--" {
            break;
        }
        if start.is_none() {
            if trimmed.is_empty() {
                continue;
            }
            start = Some(line_start);
        }
        end = line_start + line.len();
    }
    start.map_or("", |start| &text[start..end])
}

/// One line of at most [`EXCERPT_CHARS`] characters: the words joined by single spaces, and
/// when that is longer, its first `EXCERPT_CHARS - 1` characters and `…`.
fn excerpt(text: &str) -> String {
    // Most texts are ASCII, where a byte is a character: read a byte at a time, they cost less
    // than half of splitting into words (which decodes every character). An excerpt is taken
    // of every message.
    ascii_excerpt(text).unwrap_or_else(|| any_excerpt(text))
}

/// Each byte as the excerpt writes it: what `char::is_whitespace` takes in ASCII (`\t` to
/// `\r`, the vertical tab too, and `' '`) as `' '`, any other as it is. Looked up, not matched:
/// a match compiles to a branch.
static BLANKED: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = if matches!(byte, 9..=13 | 32) {
            b' '
        } else {
            byte as u8
        };
        byte += 1;
    }
    table
};

/// [`excerpt`] of a text that is ASCII as far as the excerpt reaches; `None` at the first
/// other byte. Without a branch per byte that depends on the text: each byte is written, a
/// space as `' '`, and the end moves past it unless it is a space after a space (or before
/// the first word). Word boundaries come every few bytes, too often to guess.
fn ascii_excerpt(text: &str) -> Option<String> {
    // Room for the excerpt and one character more: when there is one, the excerpt is cut.
    let mut out = [0u8; EXCERPT_CHARS + 1];
    let mut len = 0;
    let mut after_space = 1u8;
    let bytes = text.as_bytes();
    let mut at = 0;
    // The loop ends on the length alone: a test of the byte to end it compiles to a branch.
    while at < bytes.len() && len <= EXCERPT_CHARS {
        let byte = bytes[at];
        at += 1;
        if !byte.is_ascii() {
            return None;
        }
        let written = BLANKED[usize::from(byte)];
        let space = u8::from(written == b' ');
        out[len] = written;
        len += usize::from((space & after_space) ^ 1);
        after_space = space;
    }
    let mut cut = len > EXCERPT_CHARS;
    if after_space == 1 && len > 0 {
        // A space ends what was written: the excerpt is cut only if a word follows it.
        len -= 1;
        cut = match bytes[at..]
            .iter()
            .find(|&&b| BLANKED[usize::from(b)] != b' ')
        {
            Some(byte) if !byte.is_ascii() => return None,
            Some(_) => cut,
            None => false,
        };
    }
    let mut excerpt = String::with_capacity(EXCERPT_CHARS + 2);
    if cut {
        excerpt.push_str(std::str::from_utf8(&out[..EXCERPT_CHARS - 1]).ok()?);
        excerpt.push('…');
    } else {
        excerpt.push_str(std::str::from_utf8(&out[..len]).ok()?);
    }
    Some(excerpt)
}

/// [`excerpt`] of any text.
fn any_excerpt(text: &str) -> String {
    let mut out = String::with_capacity(EXCERPT_CHARS + 8);
    let mut count = 0;
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
            count += 1;
        }
        out.push_str(word);
        count += word.chars().count();
        if count > EXCERPT_CHARS {
            let cut = out
                .char_indices()
                .nth(EXCERPT_CHARS - 1)
                .map_or(out.len(), |(at, _)| at);
            out.truncate(cut);
            out.push('…');
            return out;
        }
    }
    out
}

/// Text of an HTML reply without its quoted history (Gmail's `gmail_quote`, Apple Mail's
/// `blockquote type="cite"`, Outlook's `divRplyFwdMsg`).
pub fn html_to_text(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let cut = [
        "gmail_quote",
        "<blockquote",
        "divrplyfwdmsg",
        "id=\"appendonsend\"",
    ]
    .iter()
    .filter_map(|marker| lower.find(marker))
    .min()
    .map(|at| lower[..at].rfind('<').unwrap_or(at))
    .unwrap_or(html.len());
    let mut text = String::new();
    let mut in_tag = false;
    let mut tag = String::new();
    let mut skipping = false;
    for c in html[..cut].chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let name = tag
                    .trim_start_matches('/')
                    .split(|c: char| c.is_whitespace() || c == '/')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if matches!(name.as_str(), "style" | "script" | "head") {
                    skipping = !tag.starts_with('/');
                }
                if matches!(
                    name.as_str(),
                    "br" | "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3"
                ) {
                    text.push('\n');
                }
            }
            (true, c) => tag.push(c),
            (false, c) if !skipping => text.push(c),
            _ => {}
        }
    }
    decode_entities(&text)
}

/// The common named entities and every numeric one; anything else stays as written.
fn decode_entities(text: &str) -> String {
    const NAMED: [(&str, &str); 11] = [
        ("nbsp", " "),
        ("lt", "<"),
        ("gt", ">"),
        ("quot", "\""),
        ("apos", "'"),
        ("amp", "&"),
        ("mdash", "—"),
        ("ndash", "–"),
        ("hellip", "…"),
        ("rsquo", "’"),
        ("lsquo", "‘"),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let entity = rest[1..]
            .find(';')
            .filter(|end| *end <= 10)
            .map(|end| &rest[1..=end]);
        let decoded = entity.and_then(|name| {
            if let Some(number) = name.strip_prefix('#') {
                let code = match number.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                    None => number.parse().ok()?,
                };
                char::from_u32(code).map(String::from)
            } else {
                NAMED
                    .iter()
                    .find(|(known, _)| *known == name)
                    .map(|(_, text)| (*text).to_owned())
            }
        });
        match (entity, decoded) {
            (Some(name), Some(decoded)) => {
                out.push_str(&decoded);
                rest = &rest[name.len() + 2..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---- return dates ----

/// Month names (lower case, accents kept) per language, January first.
const MONTHS: [&[&str]; 12] = [
    &[
        "january", "jan", "januar", "jänner", "janvier", "janv", "enero", "gennaio", "janeiro",
        "januari",
    ],
    &[
        "february",
        "feb",
        "februar",
        "février",
        "févr",
        "febrero",
        "febbraio",
        "fevereiro",
        "februari",
    ],
    &[
        "march", "mar", "märz", "maerz", "mars", "marzo", "março", "maart",
    ],
    &["april", "apr", "avril", "abril", "aprile"],
    &["may", "mai", "mayo", "maggio", "maio", "mei"],
    &["june", "jun", "juni", "juin", "junio", "giugno", "junho"],
    &["july", "jul", "juli", "juillet", "julio", "luglio", "julho"],
    &["august", "aug", "août", "agosto", "augustus"],
    &[
        "september",
        "sep",
        "sept",
        "septembre",
        "septiembre",
        "settembre",
        "setembro",
    ],
    &[
        "october", "oct", "oktober", "octobre", "octubre", "ottobre", "outubro", "okt",
    ],
    &["november", "nov", "novembre", "noviembre", "novembro"],
    &[
        "december",
        "dec",
        "dezember",
        "décembre",
        "diciembre",
        "dicembre",
        "dezembro",
        "dez",
    ],
];

/// The date the person is back, when the text gives one unambiguously: the latest date it
/// names on or after the message's own date (an absence is "from … until …"), within a year.
/// Dates without a year take the next such day after the message date.
pub fn return_date(text: &str, sent: Option<DateTime<Utc>>) -> Option<NaiveDate> {
    // Every date read has a day or a year in digits: a text without one names no date, and
    // only the words around one are lowered and compared.
    if !text.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let today = sent.map(|d| d.date_naive());
    let words: Vec<&str> = date_words(text)
        .map(|w| w.trim_matches(['"', '\'', '“', '”', '«', '»']))
        .filter(|w| !w.is_empty())
        .take(400)
        .collect();
    let word = |i: usize| words.get(i).map(|w| lower_case(w));
    let is = |i: usize, wanted: &[&str]| word(i).is_some_and(|w| wanted.contains(&w.as_ref()));
    let mut found: Vec<NaiveDate> = Vec::new();
    for (i, raw) in words.iter().enumerate() {
        if !raw.bytes().any(|b| b.is_ascii_digit()) {
            continue;
        }
        let lowered = lower_case(raw);
        let here = lowered.trim_end_matches(['.', ':']);
        // "March 12, 2026", "March 12th": the month is the word before (a word with a digit is
        // never a month, so it is read from this one).
        if let Some(before) = i.checked_sub(1).and_then(word)
            && let Some(month) = month_number(before.trim_end_matches(['.', ':']))
            && let Some(day) = day_number(&lowered)
        {
            let year = word(i + 1).and_then(|w| year_number(&w));
            found.extend(resolve(day, month, year, today));
        }
        if let Some(date) = numeric_date(here) {
            found.push(date);
            continue;
        }
        // "12 March 2026", "12. März", "12 de marzo de 2026", "1er avril"
        if let Some(day) = day_number(here) {
            let mut j = i + 1;
            if is(j, &["de", "of"]) {
                j += 1;
            }
            if let Some(month) = word(j).and_then(|w| month_number(&w)) {
                let mut k = j + 1;
                if is(k, &["de"]) {
                    k += 1;
                }
                let year = word(k).and_then(|w| year_number(&w));
                found.extend(resolve(day, month, year, today));
            }
        }
    }
    found
        .into_iter()
        .filter(|date| {
            today.is_none_or(|today| *date >= today && *date <= today + chrono::Duration::days(366))
        })
        .max()
}

/// The words of `text` that dates are read from: what lies between spaces (as
/// `char::is_whitespace` says) and the marks `,();!?`, the empty ones left out. An ASCII byte
/// is tested as it is; a character is decoded only where a byte is not ASCII.
fn date_words(text: &str) -> impl Iterator<Item = &str> {
    let is_separator = |byte: u8| {
        matches!(
            byte,
            b' ' | b'\t'
                | b'\n'
                | b'\x0b'
                | b'\x0c'
                | b'\r'
                | b','
                | b'('
                | b')'
                | b';'
                | b'!'
                | b'?'
        )
    };
    // Whether the character at `at` (a character boundary) separates words, and its length.
    let separator_at = move |at: usize| -> Option<(bool, usize)> {
        let byte = *text.as_bytes().get(at)?;
        if byte.is_ascii() {
            return Some((is_separator(byte), 1));
        }
        let c = text[at..].chars().next()?;
        Some((c.is_whitespace(), c.len_utf8()))
    };
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Some((true, length)) = separator_at(at) {
            at += length;
        }
        let start = at;
        while let Some((false, length)) = separator_at(at) {
            at += length;
        }
        (at > start).then(|| &text[start..at])
    })
}

/// `word` in lower case, copied only when that changes it: most words of a text are lower
/// case already.
fn lower_case(word: &str) -> Cow<'_, str> {
    if word
        .bytes()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
    {
        Cow::Owned(word.to_lowercase())
    } else {
        Cow::Borrowed(word)
    }
}

/// Whether `word` can be read as a number: `parse` takes a digit or a sign first. Most words
/// are settled by this, before any splitting.
fn numeric(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit() || c == '+')
}

/// `2026-03-12`, `12.03.2026`, `12/03/2026` (day first; unless the second number cannot be a
/// month).
fn numeric_date(word: &str) -> Option<NaiveDate> {
    // Every shape parses its first part, and the year is never the first part to have a '-'.
    if !numeric(word) {
        return None;
    }
    if let Some([y, m, d]) = three_parts(word, '-')
        && y.len() == 4
    {
        return NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    }
    for separator in ['.', '/'] {
        if let Some([a, b, y]) = three_parts(word, separator)
            && y.len() == 4
        {
            let (a, b, y): (u32, u32, i32) = (a.parse().ok()?, b.parse().ok()?, y.parse().ok()?);
            let (day, month) = if b > 12 { (b, a) } else { (a, b) };
            return NaiveDate::from_ymd_opt(y, month, day);
        }
    }
    None
}

/// `word` split at `separator` when that makes exactly three parts (no list allocated: most
/// numbers are not dates).
fn three_parts(word: &str, separator: char) -> Option<[&str; 3]> {
    let mut parts = word.split(separator);
    let three = [parts.next()?, parts.next()?, parts.next()?];
    parts.next().is_none().then_some(three)
}

fn day_number(word: &str) -> Option<u32> {
    if !numeric(word) {
        return None;
    }
    let digits = word
        .trim_end_matches(['.', 'º', '°'])
        .trim_end_matches("st")
        .trim_end_matches("nd")
        .trim_end_matches("rd")
        .trim_end_matches("th")
        .trim_end_matches("er");
    let day: u32 = digits.parse().ok()?;
    (1..=31).contains(&day).then_some(day)
}

/// The first letters of the names in [`MONTHS`], and their shortest and longest lengths in
/// bytes: most words of a text are settled by these, before the dozens of names are compared.
const MONTH_INITIALS: &[u8] = b"adefgjlmnos";
const MONTH_LENGTHS: std::ops::RangeInclusive<usize> = 3..=10;

fn month_number(word: &str) -> Option<u32> {
    let word = word.trim_end_matches(['.', ',']);
    if !MONTH_LENGTHS.contains(&word.len()) || !MONTH_INITIALS.contains(&word.as_bytes()[0]) {
        return None;
    }
    MONTHS
        .iter()
        .position(|names| names.contains(&word))
        .map(|index| index as u32 + 1)
}

fn year_number(word: &str) -> Option<i32> {
    let year: i32 = word.trim_end_matches(['.', ',']).parse().ok()?;
    (2000..=2100).contains(&year).then_some(year)
}

fn resolve(day: u32, month: u32, year: Option<i32>, today: Option<NaiveDate>) -> Option<NaiveDate> {
    match (year, today) {
        (Some(year), _) => NaiveDate::from_ymd_opt(year, month, day),
        (None, Some(today)) => {
            // A day a few weeks back is a past date ("away since 20 November"), not one
            // next year.
            let this_year = NaiveDate::from_ymd_opt(today.year(), month, day)?;
            if this_year >= today - chrono::Duration::days(60) {
                Some(this_year)
            } else {
                NaiveDate::from_ymd_opt(today.year() + 1, month, day)
            }
        }
        (None, None) => None,
    }
}

/// Every message of the golden corpus (`tests/corpus/classify/*.eml`) and its path: the
/// tests that compare a reading of ours with mail-parser's run over all of them.
#[cfg(test)]
fn corpus() -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/classify");
    std::fs::read_dir(folder)
        .expect("the corpus")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .map(|path| {
            let raw = std::fs::read(&path).expect("readable");
            (path, raw)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::Address;

    #[test]
    fn header_names_compare_as_mail_parser_compares_them() {
        let names = [
            HeaderName::From,
            HeaderName::To,
            HeaderName::ReturnPath,
            HeaderName::AutoSubmitted,
            HeaderName::ListId,
            HeaderName::Other("X-Failed-Recipients".into()),
            HeaderName::Other("x-failed-recipients".into()),
            HeaderName::Other("X-Original-To".into()),
            HeaderName::Other("From".into()),
            HeaderName::Other("".into()),
        ];
        for a in &names {
            for b in &names {
                assert_eq!(same_name(a, b), a == b, "{a:?} {b:?}");
            }
        }
    }

    /// The header lookups read what mail-parser's own accessors read, in every corpus
    /// message and every message one returns.
    #[test]
    fn header_lookups_agree_with_mail_parser_in_the_corpus() {
        let mut count = 0;
        for (path, raw) in corpus() {
            let Some(message) = PARSER.parse(&raw) else {
                continue;
            };
            let returned = message.parts.iter().filter_map(|part| match &part.body {
                PartType::Message(returned) => Some(returned),
                _ => None,
            });
            for message in std::iter::once(&message).chain(returned) {
                count += 1;
                for name in [HeaderName::From, HeaderName::To, HeaderName::Cc] {
                    assert_eq!(
                        addresses(message, &name)
                            .as_ref()
                            .and_then(HeaderValue::as_address),
                        message
                            .header_as(name.as_str(), mail_parser::HeaderForm::Addresses)
                            .last()
                            .and_then(HeaderValue::as_address),
                        "{name:?} in {path:?}"
                    );
                    let theirs = message
                        .header_as(name.as_str(), mail_parser::HeaderForm::Addresses)
                        .last()
                        .and_then(HeaderValue::as_address)
                        .and_then(Address::first)
                        .and_then(|addr| addr.address())
                        .map(str::to_ascii_lowercase);
                    assert_eq!(first_address(message, name.clone()), theirs, "{path:?}");
                }
                // The ids, left unparsed, read as mail-parser reads them parsed.
                let full = MessageParser::default()
                    .parse(message.raw_message())
                    .expect("a message");
                assert_eq!(message_id(message).as_deref(), full.message_id());
                let mut theirs: Vec<String> = Vec::new();
                for value in [full.in_reply_to(), full.references()] {
                    for id in value.clone().into_text_list().unwrap_or_default() {
                        if !theirs.iter().any(|known| *known == id) {
                            theirs.push(id.into_owned());
                        }
                    }
                }
                assert_eq!(references(message), theirs, "{path:?}");
                for name in [
                    "X-Failed-Recipients",
                    "x-original-to",
                    "Return-Path",
                    "Subject",
                ] {
                    assert_eq!(
                        header_text(message, HeaderName::parse(name).unwrap().to_owned()),
                        message.header_raw(name).map(str::trim),
                        "{name} in {path:?}"
                    );
                }
                for name in ["Delivered-To", "X-Original-To"] {
                    assert_eq!(
                        addresses_of_every(message, &HeaderName::parse(name).unwrap()),
                        message.header_as(name, mail_parser::HeaderForm::Addresses),
                        "{name} in {path:?}"
                    );
                }
            }
        }
        assert!(count > 90, "{count} messages");
    }

    #[test]
    fn date_words_split_as_the_marks_and_spaces_say() {
        let texts = [
            "",
            " ,;! ",
            "Back on (Monday) 12.03.2026, really?! yes;no",
            "zurück am 3.\u{a0}Dezember\u{2003}2026\u{85}ok",
            "«retour» le 1er avril\tà\r\n9h",
        ];
        for text in texts {
            let expected: Vec<&str> = text
                .split(|c: char| {
                    c.is_whitespace() || matches!(c, ',' | '(' | ')' | ';' | '!' | '?')
                })
                .filter(|w| !w.is_empty())
                .collect();
            assert_eq!(date_words(text).collect::<Vec<_>>(), expected, "{text:?}");
        }
    }

    #[test]
    fn every_month_name_passes_the_quick_filters() {
        for (month, names) in (1..).zip(MONTHS) {
            for name in names {
                assert!(MONTH_LENGTHS.contains(&name.len()), "{name}");
                assert!(MONTH_INITIALS.contains(&name.as_bytes()[0]), "{name}");
                assert_eq!(month_number(name), Some(month), "{name}");
            }
        }
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn sent() -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339("2026-11-23T09:00:00Z")
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    #[test]
    fn return_dates_in_seven_languages() {
        let cases = [
            (
                "I am out of the office until 30 November 2026.",
                date(2026, 11, 30),
            ),
            (
                "Back on December 2nd, 2026 with limited access.",
                date(2026, 12, 2),
            ),
            (
                "Ich bin ab dem 01.12.2026 wieder im Büro.",
                date(2026, 12, 1),
            ),
            ("Je serai de retour le 3 décembre.", date(2026, 12, 3)),
            (
                "Estaré de regreso el 4 de diciembre de 2026.",
                date(2026, 12, 4),
            ),
            ("Rientro in ufficio il 7 dicembre 2026.", date(2026, 12, 7)),
            ("Regresso a 9 de dezembro.", date(2026, 12, 9)),
            ("Ik ben terug op 10 december 2026.", date(2026, 12, 10)),
            (
                "Away from 23 November until 2026-12-11.",
                date(2026, 12, 11),
            ),
            ("Back in January: 5 January.", date(2027, 1, 5)),
        ];
        for (text, expected) in cases {
            assert_eq!(return_date(text, sent()), Some(expected), "{text}");
        }
        assert_eq!(return_date("I am away for a while.", sent()), None);
        // A date in the past is not a return date.
        assert_eq!(
            return_date("Since 1 March 2026 I work elsewhere.", sent()),
            None
        );
    }

    #[test]
    fn quoted_history_and_signatures_are_left_out() {
        let top = "Sounds good, Tuesday works.\n\nOn Mon, 23 Nov 2026 at 10:00, Ana <ana@example.test> wrote:\n> Hi Tom\n> …";
        let message = format!("From: tom@example.test\nSubject: Re: hi\n\n{top}");
        let parsed = MessageParser::default().parse(message.as_bytes()).unwrap();
        assert_eq!(new_text(&parsed).trim(), "Sounds good, Tuesday works.");
        let bottom = "> Would a demo help?\n\nYes please.\n-- \nTom";
        let message = format!("From: tom@example.test\nSubject: Re: hi\n\n{bottom}");
        let parsed = MessageParser::default().parse(message.as_bytes()).unwrap();
        assert_eq!(new_text(&parsed).trim(), "Yes please.");
        // Outlook names a known sender without the address; "Sent:" below tells it apart from
        // a line that merely begins with "From:".
        let outlook = "Thursday is fine.\n\nFrom: Ana Ortiz\nSent: Monday, 23 November 2026 10:00\nTo: Tom\n\nHi Tom";
        let message = format!("From: tom@example.test\nSubject: RE: hi\n\n{outlook}");
        let parsed = MessageParser::default().parse(message.as_bytes()).unwrap();
        assert_eq!(new_text(&parsed).trim(), "Thursday is fine.");
        let not_quoted = "From: the team, thanks!\nWe will call you.";
        let message = format!("From: tom@example.test\nSubject: Re: hi\n\n{not_quoted}");
        let parsed = MessageParser::default().parse(message.as_bytes()).unwrap();
        assert_eq!(new_text(&parsed).trim(), not_quoted);
    }

    #[test]
    fn lines_are_those_of_str_lines() {
        for text in [
            "",
            "\n",
            "a",
            "a\n",
            "a\r\nb",
            "a\r\n\r\nb\n",
            "a\rb\r",
            "\r",
            "\r\n",
            "é\nü\r\n",
        ] {
            assert_eq!(
                lines(text).collect::<Vec<_>>(),
                text.lines().collect::<Vec<_>>(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn excerpts_of_ascii_and_other_text_agree() {
        let long = "word ".repeat(60);
        let exact = "x".repeat(EXCERPT_CHARS);
        let over = "y".repeat(EXCERPT_CHARS + 1);
        // Text that is not ASCII within a word, after the excerpt's end or just before it.
        let past_the_end = format!("{}é and more", "z".repeat(EXCERPT_CHARS + 3));
        let at_the_end = format!("{} é", "w".repeat(EXCERPT_CHARS - 1));
        let many_accents = "Réponse très détaillée à votre demande, ".repeat(9);
        let long_words = format!("{} {}", "é".repeat(EXCERPT_CHARS - 2), "ü".repeat(9));
        // The excerpt's length reached at a space: cut only when a word follows.
        let exact_then_spaces = format!("{} \n\t ", "x".repeat(EXCERPT_CHARS));
        let exact_then_a_word = format!("{} \n z", "x".repeat(EXCERPT_CHARS));
        let words_to_the_end = format!("{}ab", "a ".repeat(EXCERPT_CHARS / 2 - 1));
        let texts = [
            exact_then_spaces.as_str(),
            exact_then_a_word.as_str(),
            words_to_the_end.as_str(),
            "",
            "  \n\t ",
            "  Hello,\n\n  Ana \x0b here\r\n",
            long.as_str(),
            exact.as_str(),
            over.as_str(),
            past_the_end.as_str(),
            at_the_end.as_str(),
            "ab é",
            "é",
            "café\u{a0}crème  brûlée",
            "one\u{2003}two",
            "a\u{85}b\u{2028}c\u{3000}d\u{200b}e",
            many_accents.as_str(),
            long_words.as_str(),
        ];
        // Every ending around the excerpt's length.
        for words in [1, 2, 3, 7] {
            for length in EXCERPT_CHARS - 4..EXCERPT_CHARS + 4 {
                for tail in ["", " ", "  \n", " x", " \t é", "é", "\u{a0}y"] {
                    let word = "w".repeat(length / words);
                    let text = format!(" {}{tail}", vec![word; words].join(" "));
                    assert_eq!(excerpt(&text), any_excerpt(&text), "{text:?}");
                }
            }
        }
        for text in texts {
            assert_eq!(excerpt(text), any_excerpt(text), "{text:?}");
            assert!(excerpt(text).chars().count() <= EXCERPT_CHARS, "{text:?}");
        }
        assert_eq!(excerpt(&exact), exact);
        assert_eq!(excerpt(&over), format!("{}…", &over[..EXCERPT_CHARS - 1]));
        assert_eq!(
            excerpt("  Hello,\n\n  Ana \x0b here\r\n"),
            "Hello, Ana here"
        );
        // A non-breaking space separates words, as `split_whitespace` says.
        assert_eq!(excerpt("one\u{a0}two"), "one two");
    }

    #[test]
    fn message_ids_are_found_in_any_case() {
        assert_eq!(
            find_ignoring_case(b"x\nMESSAGE-ID: <a@b>", b"message-id:"),
            Some(2)
        );
        assert_eq!(
            find_ignoring_case(b"id: message-Id:", b"message-id:"),
            Some(4)
        );
        assert_eq!(find_ignoring_case(b"message-id", b"message-id:"), None);
        assert_eq!(find_ignoring_case(b":", b"message-id:"), None);
        assert_eq!(
            quoted_message_id(
                b"Message-ID: <own@x>\n  message-id:  <theirs@y>\n",
                Some("own@x")
            ),
            Some("theirs@y".to_owned())
        );
    }

    #[test]
    fn entities_are_decoded_and_odd_ampersands_kept() {
        assert_eq!(
            decode_entities("a &amp; b &mdash; c&#39;s &#x41; &bogus; & d &#99999999;"),
            "a & b — c's A &bogus; & d &#99999999;"
        );
    }

    #[test]
    fn html_replies_lose_their_quoted_part() {
        let html = "<div dir=\"ltr\">Yes, call me!<br></div><div class=\"gmail_quote\">On Mon … wrote:<blockquote>old</blockquote></div>";
        assert_eq!(html_to_text(html).trim(), "Yes, call me!");
    }

    #[test]
    fn status_codes_in_bounce_text() {
        assert_eq!(
            status_in_text("host said: 550 5.1.1 <x@y>: Recipient address rejected").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            status_in_text("SMTP error 552: mailbox full").as_deref(),
            Some("552")
        );
        assert_eq!(status_in_text("nothing here"), None);
    }
}
