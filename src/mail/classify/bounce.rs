//! Bounces: telling a non-delivery notice from other mail, and reading from it the failed
//! recipient, the status code, the diagnostic text and the [`Reason`].
//!
//! Shapes read:
//! - RFC 3464 delivery reports (`multipart/report; report-type=delivery-status`), every
//!   recipient block, folded `Diagnostic-Code` lines included; a report whose recipients were
//!   all delivered, relayed or expanded (status 2.x.x) is a delivery notice, not a bounce;
//! - the non-standard notices of Postfix, Sendmail, Exim (`X-Failed-Recipients`), qmail,
//!   Exchange, Gmail, Yahoo, Apache James (`Error message below:` / `RCPT TO:`), carriers such
//!   as KDDI (`Could not be delivered to: <…>`) and Verizon, mail gateways, and mailing-list
//!   managers such as fml (`X-MLServer`, a `…-admin@` sender): recognized by a daemon sender,
//!   a bounce subject with a second sign (null sender, an automated sender name, a returned
//!   message attached, `Auto-Submitted`, or a notice's own wording), or that wording alone;
//! - Amazon SES notifications delivered by mail ([`super::ses`]).
//!
//! The diagnostic is the report's `Diagnostic-Code`, else the notice's own text with the
//! returned message cut off; the reason is read from it and the status ([`reason::judge`]).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::LazyLock;

use aho_corasick::{AhoCorasick, MatchKind};
use mail_parser::{HeaderName, Message, MessagePart, MimeHeaders, PartType};
use memchr::memchr;

use super::reason::{self, Reason};
use super::returned::{Returned, returned};
use super::{Incoming, Kind, excerpt, header_text, is_report, lines, other_header};

/// Subjects of non-delivery notices (lower case, matched anywhere in the subject).
const BOUNCE_SUBJECTS: [&str; 32] = [
    "undelivered mail returned to sender",
    "delivery status notification",
    "mail delivery failed",
    "mail delivery failure",
    "undeliverable",
    "failure notice",
    "returned mail",
    "delivery failure",
    "failure delivery",
    "failed delivery",
    "mail delivery subsystem",
    "nondeliverable",
    "non-deliverable",
    "message not delivered",
    "delivery has failed",
    "[bounce]",
    "delivery status",
    "delivery notification",
    "delivery report",
    "mail system error",
    "could not be delivered",
    "permanent delivery failure",
    "warning: message",
    "warning: could not send message",
    "see transcript for details",
    "there was an error sending your mail",
    "error(s) in forwarding",
    "mail failure",
    "delayed mail",
    "non remis",
    "non recapitabile",
    "onbestelbaar",
];

/// Display names (lower case) of the programs that send notices.
const DAEMON_NAMES: [&str; 9] = [
    "mail delivery system",
    "mail delivery subsystem",
    "mailer-daemon",
    "mailer daemon",
    "mail delivery",
    "postmaster",
    "mail administrator",
    "system administrator",
    "mail system",
];

/// What a notice says in its own words (lower case): enough on its own, for notices that come
/// from an ordinary-looking sender.
const NOTICE_WORDS: [&str; 22] = [
    "this is the mail system at host",
    "this message was created automatically by mail delivery software",
    "this is the qmail-send program",
    "i'm afraid i wasn't able to deliver",
    "the following addresses had permanent fatal errors",
    "the following addresses had delivery problems",
    "delivery to the following recipient failed",
    "delivery to the following recipients failed",
    "delivery to the following recipient has been delayed",
    "your message could not be delivered",
    "your message wasn't delivered",
    "your message couldn't be delivered",
    "your message did not reach some or all of the intended recipients",
    "delivery has failed to these recipients or groups",
    "could not be delivered to: <",
    "error message below:",
    "original mail as follows:",
    "message could not be delivered to mobile",
    "the original message was received at",
    "unable to deliver your message",
    "the following message to <",
    "an error occurred while trying to deliver the mail",
];

/// Where a notice's own text ends and the returned message begins (lower case).
const RETURNED_MESSAGE: [&str; 11] = [
    "------ this is a copy of the message",
    "--- below this line is a copy of the message",
    "----- original message -----",
    "original message follows",
    "original mail as follows",
    "--- the header of the original message is following",
    "------- returned message --------",
    "----- the following is a copy of the message",
    "message details:",
    "original message headers:",
    "--- original message ---",
];

/// [`BOUNCE_SUBJECTS`] in one pass over the lower-cased subject, not one search per phrase.
static SUBJECTS: LazyLock<AhoCorasick> = LazyLock::new(|| phrases(&BOUNCE_SUBJECTS));
static NOTICE: LazyLock<AhoCorasick> = LazyLock::new(|| phrases(&NOTICE_WORDS));
static RETURNED: LazyLock<AhoCorasick> = LazyLock::new(|| phrases(&RETURNED_MESSAGE));

/// An automaton for lower-case phrases, searched for in lower-cased text ([`find_lower`]).
/// Leftmost-first and case-sensitive, so that aho-corasick puts its SIMD prefilter (Teddy) in
/// front of it, which skips the stretches of text no phrase starts in: on a reply's 2 KB it
/// searched six times faster than an automaton that ignores case (which cannot have it).
fn phrases(words: &[&str]) -> AhoCorasick {
    AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostFirst)
        .build(words)
        .expect("a valid set of patterns")
}

/// The first of `automaton`'s phrases in `text`, whatever its case: searched for in an ASCII
/// lower-case copy, whose offsets are `text`'s.
fn find_lower(automaton: &AhoCorasick, text: &str) -> Option<aho_corasick::Match> {
    automaton.find(&text.to_ascii_lowercase())
}

/// How much of a notice's text is read: the error is at its start.
const NOTICE_TEXT: usize = 8 * 1024;
/// Where a notice's own wording ([`NOTICE_WORDS`]) is looked for.
const NOTICE_WORDS_WITHIN: usize = 2 * 1024;

/// What a notice says about one recipient.
#[derive(Debug, Default)]
struct Delivery {
    recipient: Option<String>,
    action: Option<String>,
    status: Option<String>,
    diagnostic: Option<String>,
}

/// The bounce (or delivery notice) `message` is, or `None` when it is not one. `subject` is its
/// subject in lower case.
pub(super) fn bounce(message: &Message<'_>, inbound: &mut Incoming, subject: &str) -> Option<Kind> {
    if let Some(kind) = super::ses::notification(message, inbound) {
        return Some(kind);
    }
    let text = first_text(message);
    let signal = recognized(message, inbound, &text, subject)?;
    inbound.original_message_id =
        super::returned_message_id(message, inbound.message_id.as_deref());
    let mut deliveries = delivery_reports(message);
    if deliveries.is_empty() {
        // Some notices copy report fields into their text.
        deliveries = fields(&text);
    }
    if !deliveries.is_empty()
        && deliveries.iter().all(|d| {
            d.action.as_deref().is_some_and(|a| {
                a.starts_with("delivered") || a.starts_with("relayed") || a.starts_with("expanded")
            }) || d.status.as_deref().is_some_and(|s| s.starts_with('2'))
        })
    {
        let status = deliveries[0].status.as_deref().unwrap_or("no status");
        return Some(Kind::Unrelated {
            reason: format!("a delivery notice, not a bounce (status {status})"),
        });
    }
    let failed = deliveries
        .iter()
        .position(|d| d.action.as_deref().is_some_and(|a| a.starts_with("failed")))
        .or_else(|| (!deliveries.is_empty()).then_some(0));
    let mut delivery = match failed {
        Some(at) => deliveries.swap_remove(at),
        None => Delivery::default(),
    };
    // The notice's own words are read only for what a delivery report did not say: a full
    // report (recipient, status, action, diagnostic) never needs them.
    let notice = OnceCell::new();
    let notice = || notice.get_or_init(|| notice_text(&text)).as_str();
    if delivery.recipient.is_none() {
        delivery.recipient =
            failed_recipients(message).or_else(|| recipient_in_notice(notice(), message));
    }
    let diagnostic = delivery
        .diagnostic
        .take()
        .unwrap_or_else(|| collapse(focus(notice())));
    let status = match delivery.status.take() {
        // "5.0.0" says little; the diagnostic often has the precise code.
        Some(status) if status.ends_with(".0.0") => super::status_in_text(&diagnostic)
            .filter(|found| {
                found.contains('.') && status.chars().next().is_some_and(|c| found.starts_with(c))
            })
            .or(Some(status)),
        Some(status) => Some(status),
        None => super::status_in_text(&diagnostic).or_else(|| super::status_in_text(notice())),
    };
    let delayed = match delivery.action.as_deref() {
        Some(action) => action.starts_with("delayed"),
        None => {
            subject.contains("delay")
                || subject.starts_with("warning:")
                || super::contains_ignoring_case(notice(), "this is a warning")
        }
    };
    let (mut reason, mut why) = reason::judge(status.as_deref(), &diagnostic, delayed);
    if reason == Reason::Undefined {
        // The server's words said nothing; the rest of the notice, or its subject, may.
        let everything = format!("{} {}", collapse(notice()), subject);
        (reason, why) = reason::judge(status.as_deref(), &everything, delayed);
    }
    let permanent = reason::permanent(reason, status.as_deref(), delayed, &diagnostic);
    Some(Kind::Bounce {
        recipient: delivery.recipient,
        status,
        reason,
        permanent,
        delayed,
        diagnostic: Some(excerpt(&diagnostic)).filter(|d| !d.is_empty()),
        signal: format!("{signal}; {why}"),
    })
}

/// Why `message` is taken for a notice, or `None`. `lower` is its subject in lower case.
fn recognized(
    message: &Message<'_>,
    inbound: &Incoming,
    text: &str,
    lower: &str,
) -> Option<String> {
    if is_report(message, "delivery-status") {
        return Some("a delivery report (multipart/report; report-type=delivery-status)".into());
    }
    if header_text(message, other_header("X-Failed-Recipients")).is_some() {
        return Some("header X-Failed-Recipients".into());
    }
    let from = inbound.from.as_deref().unwrap_or_default();
    let local = from.split('@').next().unwrap_or_default();
    if matches!(
        local,
        "mailer-daemon" | "postmaster" | "mail-daemon" | "mailerdaemon" | "post_master"
    ) {
        return Some(format!("sender {from}"));
    }
    if local.ends_with("-admin") && header_text(message, other_header("X-MLServer")).is_some() {
        return Some(format!("a mailing-list manager's error (sender {from})"));
    }
    let subject = inbound.subject.as_deref().unwrap_or_default();
    let is_answer = ["re:", "aw:", "sv:", "fw:", "fwd:", "wg:", "tr:", "r:"]
        .iter()
        .any(|prefix| lower.starts_with(prefix));
    if is_answer {
        return None;
    }
    // A notice says what it is in its first lines.
    let notice_words = || {
        find_lower(
            &NOTICE,
            &text[..floor_char_boundary(text, NOTICE_WORDS_WITHIN)],
        )
        .map(|hit| text[hit.range()].to_lowercase())
    };
    if SUBJECTS.is_match(lower) {
        let from = super::addresses(message, &HeaderName::From);
        let name = from
            .as_ref()
            .and_then(|value| value.as_address())
            .and_then(|a| a.first())
            .and_then(|a| a.name())
            .unwrap_or_default()
            .to_lowercase();
        let second_sign = header_text(message, HeaderName::ReturnPath) == Some("<>")
            || inbound.from.is_none()
            || DAEMON_NAMES.iter().any(|n| name.contains(n))
            || header_text(message, HeaderName::AutoSubmitted).is_some()
            || returns_a_message(message)
            || notice_words().is_some();
        if second_sign {
            return Some(format!("subject “{subject}”"));
        }
        return None;
    }
    notice_words().map(|words| format!("text “{words}”"))
}

/// Whether a returned message (or its headers) is attached.
fn returns_a_message(message: &Message<'_>) -> bool {
    message.parts.iter().any(|part| {
        Returned::of(part).is_some()
            || part.content_type().is_some_and(|ct| {
                ct.subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("rfc822-headers"))
            })
    })
}

/// The text of the first text part (the notice itself), or of the HTML part.
fn first_text<'x>(message: &'x Message<'_>) -> Cow<'x, str> {
    match plain_text(message) {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(
            message
                .body_html(0)
                .map(|html| super::html_to_text(&html))
                .unwrap_or_default(),
        ),
    }
}

/// The first text/plain part as it is (no conversion from HTML).
pub(super) fn plain_text<'x>(message: &'x Message<'_>) -> Option<&'x str> {
    // mail-parser lists an HTML part as the text body when there is no other: not this.
    match &message.text_part(0)?.body {
        PartType::Text(text) => Some(text.as_ref()),
        _ => None,
    }
}

/// The notice's own words: its text up to where the returned message starts.
fn notice_text(text: &str) -> String {
    let head = &text[..floor_char_boundary(text, NOTICE_TEXT)];
    let end = find_lower(&RETURNED, head).map_or(head.len(), |hit| hit.start());
    // Apache James and Verizon list the recipient in their "message details".
    let details = lines(&head[end..])
        .take(12)
        .filter(|line| {
            line.trim_start()
                .get(..8)
                .is_some_and(|start| start.eq_ignore_ascii_case("rcpt to:"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    format!("{}\n{details}", &head[..end])
}

/// The lines of a notice that report the error: from the first one that names an address or
/// an SMTP code, a few lines on (the boilerplate before them says nothing of the cause).
fn focus(notice: &str) -> &str {
    let mut offset = 0;
    for line in notice.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let coded = trimmed
            .split(|c: char| c.is_whitespace() || c == '-')
            .any(|word| {
                word.len() == 3
                    && word.starts_with(['4', '5'])
                    && word.bytes().all(|b| b.is_ascii_digit())
            });
        if line.contains('@') || coded {
            let rest = &notice[offset..];
            let end = rest
                .split_inclusive('\n')
                .take(8)
                .map(str::len)
                .sum::<usize>();
            return &rest[..end];
        }
        offset += line.len();
    }
    notice
}

pub(super) fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0)
}

/// Whitespace runs as one space, trimmed.
fn collapse(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Every recipient block of the message's delivery-status parts.
fn delivery_reports(message: &Message<'_>) -> Vec<Delivery> {
    let mut found = Vec::new();
    for part in &message.parts {
        if is_status_part(part) {
            found.extend(fields(&super::lossy(part.contents())));
        }
    }
    found
}

fn is_status_part(part: &MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.subtype().is_some_and(|s| {
            s.eq_ignore_ascii_case("delivery-status")
                || s.eq_ignore_ascii_case("global-delivery-status")
        })
    })
}

/// Recipient blocks from RFC 3464 fields in `text`: a new block starts at each
/// `Final-Recipient` (or `Original-Recipient` not followed by one); folded lines continue
/// the field above them.
fn fields(text: &str) -> Vec<Delivery> {
    const WANTED: [&str; 5] = [
        "final-recipient",
        "original-recipient",
        "action",
        "status",
        "diagnostic-code",
    ];
    let mut found: Vec<Delivery> = Vec::new();
    let mut current: Option<Delivery> = None;
    // The field being read (its name, lower case, and its value so far: borrowed from the
    // text until a folded line is added to it).
    let mut field: Option<(&'static str, Cow<'_, str>)> = None;
    for line in lines(text).chain([""]) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = field.as_mut() {
                let value = value.to_mut();
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = field.take() {
            apply(&mut found, &mut current, name, value.trim());
        }
        // A wanted name, blanks around it, then the line's first `:`. Matched at the line's
        // start, the line is not searched for a `:` first: most lines (a notice's text, a
        // returned message) are settled by their first letters.
        let start = line.trim_start();
        // The wanted names begin with five letters: most lines end here.
        let first = start.as_bytes().first().map(u8::to_ascii_lowercase);
        if !matches!(first, Some(b'f' | b'o' | b'a' | b's' | b'd')) {
            continue;
        }
        let Some(wanted) = WANTED.iter().find(|wanted| {
            start
                .as_bytes()
                .get(..wanted.len())
                .is_some_and(|name| name.eq_ignore_ascii_case(wanted.as_bytes()))
        }) else {
            continue;
        };
        if let Some(value) = start[wanted.len()..].trim_start().strip_prefix(':') {
            field = Some((wanted, Cow::Borrowed(value)));
        }
    }
    found.extend(current);
    found.retain(|d| d.recipient.as_deref().is_some_and(|r| r.contains('@')) || d.status.is_some());
    found
}

/// One field of a delivery report, into the recipient block it belongs to.
fn apply(found: &mut Vec<Delivery>, current: &mut Option<Delivery>, name: &str, value: &str) {
    match name {
        "final-recipient" => match current.as_mut() {
            Some(block) if block.recipient.is_none() || block.status.is_none() => {
                block.recipient = Some(address_of(value));
            }
            _ => {
                found.extend(current.take());
                *current = Some(Delivery {
                    recipient: Some(address_of(value)),
                    ..Delivery::default()
                });
            }
        },
        // A new block, unless it belongs to the block above (after its Final-Recipient).
        "original-recipient" if current.as_ref().is_none_or(|b| b.status.is_some()) => {
            found.extend(current.take());
            *current = Some(Delivery {
                recipient: Some(address_of(value)),
                ..Delivery::default()
            });
        }
        "action" => {
            if let Some(block) = current.as_mut() {
                block.action = Some(value.to_ascii_lowercase());
            }
        }
        "status" => {
            if let Some(block) = current.as_mut() {
                block.status = value.split_whitespace().next().map(str::to_owned);
            }
        }
        "diagnostic-code" => {
            if let Some(block) = current.as_mut() {
                // "smtp; 550 5.1.1 …": the type before the first ';' is not the text.
                let text = value.split_once(';').map_or(value, |(_, text)| text);
                block.diagnostic = Some(text.trim().to_owned()).filter(|t| !t.is_empty());
            }
        }
        _ => {}
    }
}

/// `rfc822; <a@b>` → `a@b`, lower case.
fn address_of(value: &str) -> String {
    let address = value.rsplit(';').next().unwrap_or(value).trim();
    address.trim_matches(['<', '>', ' ']).to_ascii_lowercase()
}

/// Exim names the failed addresses in a header.
fn failed_recipients(message: &Message<'_>) -> Option<String> {
    let value = header_text(message, other_header("X-Failed-Recipients"))?;
    value
        .split(',')
        .map(|a| a.trim().trim_matches(['<', '>']).to_ascii_lowercase())
        .find(|a| a.contains('@'))
}

/// The failed recipient in a notice's text: after `RCPT TO:` or `delivered to:`, else the
/// first address that is neither ours, a daemon's, nor the returned message's sender.
fn recipient_in_notice(notice: &str, message: &Message<'_>) -> Option<String> {
    let lower = notice.to_ascii_lowercase();
    for marker in ["rcpt to:", "delivered to:", "delivered to"] {
        if let Some(at) = lower.find(marker)
            && let Some(address) = first_address(&lower[at + marker.len()..], &[])
        {
            return Some(address);
        }
    }
    let mut not: Vec<String> = super::recipients(message);
    if let Some(sender) = returned_sender(message) {
        not.push(sender);
    }
    first_address(&lower, &not)
}

/// The sender of the returned message, when it is attached.
fn returned_sender(message: &Message<'_>) -> Option<String> {
    returned(message).find_map(|returned| returned.first_address(HeaderName::From))
}

fn first_address(text: &str, not: &[String]) -> Option<String> {
    let separator = |c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | '(' | ')' | '"' | ',' | ';' | '[' | ']' | '\''
            )
    };
    // Most words are not addresses: only the word around each `@` is read, from the separator
    // before it to the one after it.
    let mut from = 0;
    while let Some(at) = memchr(b'@', &text.as_bytes()[from..]) {
        let at = from + at;
        let start = text[..at]
            .char_indices()
            .rfind(|&(_, c)| separator(c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = text[at..].find(separator).map_or(text.len(), |i| at + i);
        from = end;
        let word = text[start..end]
            .trim_end_matches([':', '.'])
            .trim_start_matches("mailto:")
            .to_ascii_lowercase();
        if !word.starts_with('@')
            && !word.ends_with('@')
            && word.matches('@').count() == 1
            && !not.contains(&word)
            && !word.starts_with("mailer-daemon@")
            && !word.starts_with("postmaster@")
        {
            return Some(word);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The phrase lists are searched for in lower-cased text ([`find_lower`]): a phrase with a
    /// capital would never match.
    #[test]
    fn phrases_are_lower_case_and_found_in_any_case() {
        for phrase in BOUNCE_SUBJECTS
            .iter()
            .chain(&NOTICE_WORDS)
            .chain(&RETURNED_MESSAGE)
        {
            assert_eq!(*phrase, phrase.to_ascii_lowercase());
        }
        let text = "Hi.\nThis Is The Mail System At Host mx.example.\n";
        let hit = find_lower(&NOTICE, text).expect("found");
        assert_eq!(&text[hit.range()], "This Is The Mail System At Host");
    }

    #[test]
    fn report_fields_are_read_by_name_in_any_case_and_spacing() {
        let text = "Final-Recipient: rfc822; A@Example.Test\nStatus :  5.1.1 (unknown)\nFinal-Recipient-Type: rfc822; x@y\nStatus-Code: 4.0.0\naction:failed\nDiagnostic-Code: smtp; 550 no\n  such user\nsaid: nothing\n";
        let found = fields(text);
        assert_eq!(found.len(), 1, "{found:?}");
        let delivery = &found[0];
        assert_eq!(delivery.recipient.as_deref(), Some("a@example.test"));
        assert_eq!(delivery.status.as_deref(), Some("5.1.1"));
        assert_eq!(delivery.action.as_deref(), Some("failed"));
        assert_eq!(delivery.diagnostic.as_deref(), Some("550 no such user"));
    }
}
