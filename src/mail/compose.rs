//! The outgoing email and its RFC 5322 form.
//!
//! [`OutgoingEmail`] is plain data the engine fills in (and the outbox stores); [`to_message`]
//! turns it into a lettre message: multipart/alternative with the text part first and the HTML
//! part second (clients show the last part they understand), UTF-8, a Message-ID on the sender's
//! domain, `Date`, and RFC 8058 one-click unsubscribe headers.
//!
//! Header safety: lettre encodes non-ASCII (RFC 2047) and never writes a raw CR or LF, but some
//! control characters (tab, vertical tab, form feed…) it passes through. Every text that may carry
//! lead data (display names, the subject) is first flattened by [`header_text`]; values of our own
//! headers (Message-ID, List-Unsubscribe, custom headers) are validated and refused if odd, since
//! they come from code and configuration, not from leads.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox as LettreMailbox, MultiPart, SinglePart};

use super::render::RenderedBody;
use crate::lead::Lead;
use crate::unsubscribe::is_https_or_local;
use crate::workflow::Mailbox;

/// One email ready to leave: what the outbox stores and the transports send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// `<…@sender-domain>`, from [`new_message_id`]; replies point back to it.
    pub message_id: String,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    /// The lead, with its full name as display name (see [`lead_mailbox`]).
    pub to: Mailbox,
    /// Already rendered; flattened again here in case it was not.
    pub subject: String,
    pub body: RenderedBody,
    pub date: DateTime<Utc>,
    /// `<mailto:…>` and/or `<https://…>` entries of `List-Unsubscribe`; empty: no header.
    pub list_unsubscribe: Vec<String>,
    /// Adds `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058); needs an https entry
    /// (or http to this host, for tests).
    pub one_click: bool,
    /// More headers: `Auto-Submitted` and `Precedence` for bulk mail. Nothing internal (a
    /// workflow's or a step's name): recipients see every header, and correlation needs only
    /// our Message-IDs.
    pub extra_headers: Vec<(String, String)>,
}

/// Why an email could not be put together. Each is a bug or a configuration mistake, not
/// something a lead can cause: lead data is cleaned, not refused.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("`{address}` is not an address that can be sent to: {reason}")]
    Address { address: String, reason: String },
    #[error("`{0}` is not a Message-ID (expected `<unique@domain>`)")]
    MessageId(String),
    #[error("`{0}` is not a List-Unsubscribe entry (expected `<mailto:…>` or `<https://…>`)")]
    ListUnsubscribe(String),
    #[error("one-click unsubscribe needs an `<https://…>` List-Unsubscribe entry")]
    OneClickWithoutHttps,
    #[error("`{0}` is not a header nurture may add")]
    HeaderName(String),
    #[error("the value of header `{0}` contains a line break or control character")]
    HeaderValue(String),
    #[error("the message could not be built: {0}")]
    Build(#[from] lettre::error::Error),
}

/// Flattens text for a header: control characters (CR, LF, tab…) and Unicode line separators
/// become spaces, runs of whitespace collapse to one space, the ends are trimmed. What comes out
/// is one line that cannot start a new header.
pub fn header_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_control() || c.is_whitespace() || c == '\u{2028}' || c == '\u{2029}' {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

/// The recipient for a lead: its address, with the full name (if known) as display name.
pub fn lead_mailbox(lead: &Lead) -> Mailbox {
    Mailbox {
        name: lead.full_name().map(|name| header_text(&name)),
        address: lead.email.clone(),
    }
}

/// A Message-ID that depends only on `unique` (e.g. `workflow|step|lead|version`) and the domain,
/// so a retry of the same step gets the same id and the receiving side can drop the duplicate.
/// The hash is FNV-1a over 128 bits: stable across Rust versions and platforms (the standard
/// library's hasher is not), and wide enough that distinct sends do not collide.
pub fn new_message_id(domain: &str, unique: &str) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash = OFFSET;
    for byte in unique.bytes() {
        hash ^= u128::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!(
        "<{hash:032x}.nurture@{}>",
        domain.trim().to_ascii_lowercase()
    )
}

/// `message_id` with `sequence` in front: `<00000000000004d2.…>`. The daemon numbers every
/// email it sends from one increasing counter, so that its record of sent emails, keyed by
/// Message-ID, grows at its end: with random keys, each send was a cache miss in a tree of a
/// million entries (13,500 against 19,500 steps/s measured with `cargo bench --bench engine`).
pub fn sequenced_message_id(message_id: &str, sequence: u64) -> String {
    format!("<{sequence:016x}.{}", message_id.trim_start_matches('<'))
}

/// The domain of an address (`acme.example` of `ana@acme.example`), for [`new_message_id`].
pub fn domain_of(address: &str) -> &str {
    address
        .rsplit_once('@')
        .map_or(address, |(_, domain)| domain)
}

/// Headers [`OutgoingEmail::extra_headers`] may not set: lettre writes them from the fields.
const RESERVED_HEADERS: [&str; 14] = [
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "sender",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-unsubscribe",
    "list-unsubscribe-post",
];

/// Builds the MIME message: multipart/alternative, text/plain then text/html, both UTF-8.
pub fn to_message(email: &OutgoingEmail) -> Result<Message, ComposeError> {
    let message_id = valid_message_id(&email.message_id)?;
    let mut builder = Message::builder()
        .message_id(Some(message_id))
        .from(mailbox(&email.from)?)
        .to(mailbox(&email.to)?)
        .subject(header_text(&email.subject))
        .date(SystemTime::from(email.date));
    if let Some(reply_to) = &email.reply_to {
        builder = builder.reply_to(mailbox(reply_to)?);
    }
    if !email.list_unsubscribe.is_empty() {
        for entry in &email.list_unsubscribe {
            valid_unsubscribe_entry(entry)?;
        }
        builder = builder.raw_header(raw_header(
            "List-Unsubscribe",
            email.list_unsubscribe.join(", "),
        ));
    }
    if email.one_click {
        let has_https = email.list_unsubscribe.iter().any(|entry| {
            entry
                .strip_prefix('<')
                .is_some_and(|uri| is_https_or_local(uri.trim_end_matches('>')))
        });
        if !has_https {
            return Err(ComposeError::OneClickWithoutHttps);
        }
        builder = builder.raw_header(raw_header(
            "List-Unsubscribe-Post",
            "List-Unsubscribe=One-Click".into(),
        ));
    }
    for (name, value) in &email.extra_headers {
        let valid_name = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            && !RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str());
        if !valid_name {
            return Err(ComposeError::HeaderName(name.clone()));
        }
        if value.chars().any(char::is_control) {
            return Err(ComposeError::HeaderValue(name.clone()));
        }
        let header_name = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| ComposeError::HeaderName(name.clone()))?;
        builder = builder.raw_header(HeaderValue::new(header_name, value.clone()));
    }
    let body = MultiPart::alternative()
        .singlepart(SinglePart::plain(email.body.text.clone()))
        .singlepart(SinglePart::html(email.body.html.clone()));
    Ok(builder.multipart(body)?)
}

/// The message as it goes over SMTP or into a `.eml` file.
pub fn to_eml(email: &OutgoingEmail) -> Result<Vec<u8>, ComposeError> {
    Ok(to_message(email)?.formatted())
}

/// `eml` with its `Date` header set to `date`: an email that waited in the outbox (a sending
/// limit, a retry) is dated when it leaves, as a person's mail client would date it, not hours
/// earlier. Everything else, the Message-ID included, stays byte for byte.
pub fn with_date(eml: &[u8], date: DateTime<Utc>) -> Vec<u8> {
    let header_end = eml
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(eml.len(), |at| at + 2);
    let mut out = Vec::with_capacity(eml.len() + 8);
    let mut replaced = false;
    let mut skipping = false;
    let mut start = 0;
    while start < header_end {
        let end = eml[start..header_end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(header_end, |at| start + at + 2);
        let line = &eml[start..end];
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            skipping = !replaced && line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"date:");
            if skipping {
                out.extend_from_slice(format!("Date: {}\r\n", date.to_rfc2822()).as_bytes());
                replaced = true;
            }
        }
        if !skipping {
            out.extend_from_slice(line);
        }
        start = end;
    }
    out.extend_from_slice(&eml[header_end..]);
    out
}

/// A header whose value was validated to be printable ASCII without line breaks.
fn raw_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

fn mailbox(mailbox: &Mailbox) -> Result<LettreMailbox, ComposeError> {
    // The very check import applies, so an address import accepted can be sent to.
    let address =
        crate::lead::send_address(&mailbox.address).map_err(|e| ComposeError::Address {
            address: mailbox.address.clone(),
            reason: e.to_string(),
        })?;
    let name = mailbox
        .name
        .as_deref()
        .map(header_text)
        .filter(|name| !name.is_empty());
    Ok(LettreMailbox::new(name, address))
}

fn valid_message_id(id: &str) -> Result<String, ComposeError> {
    let inner = id
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .filter(|inner| {
            inner
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
                && inner
                    .split_once('@')
                    .is_some_and(|(left, right)| !left.is_empty() && !right.is_empty())
        });
    match inner {
        Some(_) => Ok(id.to_string()),
        None => Err(ComposeError::MessageId(id.to_string())),
    }
}

fn valid_unsubscribe_entry(entry: &str) -> Result<(), ComposeError> {
    let ok = entry
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .is_some_and(|uri| {
            let lower = uri.to_ascii_lowercase();
            (lower.starts_with("mailto:") || is_https_or_local(uri))
                && uri
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
        });
    if ok {
        Ok(())
    } else {
        Err(ComposeError::ListUnsubscribe(entry.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use mail_parser::{Address, HeaderValue as ParsedValue, MessageParser, MimeHeaders};

    use super::*;

    fn email() -> OutgoingEmail {
        OutgoingEmail {
            message_id: new_message_id("acme.example", "trial|welcome|bo@globex.example|v1"),
            from: Mailbox {
                name: Some("Ana Ortiz".into()),
                address: "ana@acme.example".into(),
            },
            reply_to: Some(Mailbox {
                name: None,
                address: "sales@acme.example".into(),
            }),
            to: Mailbox {
                name: Some("Bo Berg".into()),
                address: "bo@globex.example".into(),
            },
            subject: "Welcome aboard, Bo!".into(),
            body: RenderedBody {
                html: "<p>Hi Bo &amp; team</p>".into(),
                text: "Hi Bo & team".into(),
            },
            date: Utc.with_ymd_and_hms(2025, 3, 3, 9, 30, 0).unwrap(),
            list_unsubscribe: vec![
                "<mailto:unsubscribe@acme.example?subject=abc>".into(),
                "<https://acme.example/u/abc>".into(),
            ],
            one_click: true,
            extra_headers: vec![
                ("Auto-Submitted".into(), "auto-generated".into()),
                ("Precedence".into(), "bulk".into()),
            ],
        }
    }

    /// The header section of a formatted message, unfolded: one entry per header.
    fn header_lines(eml: &[u8]) -> Vec<String> {
        let text = String::from_utf8(eml.to_vec()).unwrap();
        let head = text.split("\r\n\r\n").next().unwrap();
        let mut headers: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            assert!(!line.contains('\r') && !line.contains('\n'));
            if line.starts_with([' ', '\t']) {
                headers.last_mut().unwrap().push_str(line);
            } else {
                headers.push(line.to_string());
            }
        }
        headers
    }

    fn first_address(value: Option<&Address>) -> (Option<String>, String) {
        let addr = value.unwrap().first().unwrap();
        (
            addr.name().map(str::to_string),
            addr.address().unwrap().to_string(),
        )
    }

    #[test]
    fn an_email_that_waited_is_dated_when_it_leaves() {
        let email = email();
        let eml = to_eml(&email).unwrap();
        let later = email.date + chrono::Duration::hours(7);
        let redated = with_date(&eml, later);
        let parsed = mail_parser::MessageParser::default()
            .parse(&redated)
            .unwrap();
        assert_eq!(
            parsed.date().unwrap().to_timestamp(),
            later.timestamp(),
            "{}",
            String::from_utf8_lossy(&redated)
        );
        assert_eq!(
            parsed.message_id(),
            Some(email.message_id.trim_matches(['<', '>']))
        );
        // Only the Date line changed.
        let text = String::from_utf8_lossy(&eml);
        let new_text = String::from_utf8_lossy(&redated);
        let differing: Vec<_> = text
            .lines()
            .zip(new_text.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(differing.len(), 1, "{differing:?}");
        assert_eq!(text.lines().count(), new_text.lines().count());
    }

    #[test]
    fn eml_parses_back_with_every_header() {
        let eml = to_eml(&email()).unwrap();
        let message = MessageParser::default().parse(&eml).unwrap();
        assert_eq!(
            first_address(message.from()),
            (Some("Ana Ortiz".into()), "ana@acme.example".into())
        );
        assert_eq!(
            first_address(message.to()),
            (Some("Bo Berg".into()), "bo@globex.example".into())
        );
        assert_eq!(
            first_address(message.reply_to()),
            (None, "sales@acme.example".into())
        );
        assert_eq!(message.subject(), Some("Welcome aboard, Bo!"));
        assert_eq!(message.date().unwrap().to_rfc3339(), "2025-03-03T09:30:00Z");
        let id = email().message_id;
        assert_eq!(message.message_id(), Some(&id[1..id.len() - 1]));
        let raw = |name: &str| {
            message
                .header_raw(name)
                .map(|value| value.replace("\r\n", "").trim().to_string())
        };
        assert_eq!(
            raw("List-Unsubscribe").as_deref(),
            Some("<mailto:unsubscribe@acme.example?subject=abc>, <https://acme.example/u/abc>")
        );
        assert_eq!(
            raw("List-Unsubscribe-Post").as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        assert_eq!(raw("Auto-Submitted").as_deref(), Some("auto-generated"));
        assert_eq!(raw("Precedence").as_deref(), Some("bulk"));

        let content_type = message.content_type().unwrap();
        assert_eq!(
            (content_type.ctype(), content_type.subtype()),
            ("multipart", Some("alternative"))
        );
        assert_eq!(message.text_body_count(), 1);
        assert_eq!(message.html_body_count(), 1);
        assert_eq!(message.body_text(0).unwrap(), "Hi Bo & team");
        assert_eq!(message.body_html(0).unwrap(), "<p>Hi Bo &amp; team</p>");
        // Text first, then HTML.
        let parts: Vec<String> = message
            .parts
            .iter()
            .skip(1)
            .map(|part| {
                let ct = part.content_type().unwrap();
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
            })
            .collect();
        assert_eq!(parts, ["text/plain", "text/html"]);
        for part in &message.parts[1..] {
            assert_eq!(
                part.content_type().unwrap().attribute("charset"),
                Some("utf-8")
            );
        }
    }

    #[test]
    fn header_count_is_exact() {
        let eml = to_eml(&email()).unwrap();
        let names: Vec<String> = header_lines(&eml)
            .iter()
            .map(|line| line.split(':').next().unwrap().to_ascii_lowercase())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "auto-submitted",
                "content-type",
                "date",
                "from",
                "list-unsubscribe",
                "list-unsubscribe-post",
                "message-id",
                "mime-version",
                "precedence",
                "reply-to",
                "subject",
                "to",
            ]
        );
    }

    #[test]
    fn lead_data_cannot_inject_headers() {
        let mut email = email();
        let evil = "Bo\r\nBcc: victim@evil.example\r\n\r\nbody\nX-Injected: 1\u{b}\u{c}\u{2028}";
        email.to.name = Some(evil.into());
        email.subject = format!("Hi {evil}");
        email.one_click = false;
        email.list_unsubscribe.clear();
        email.extra_headers.clear();
        let eml = to_eml(&email).unwrap();
        let headers = header_lines(&eml);
        for line in &headers {
            let lower = line.to_ascii_lowercase();
            assert!(!lower.starts_with("bcc"), "{line}");
            assert!(!lower.starts_with("x-injected"), "{line}");
        }
        // From, To, Reply-To, Subject, Date, Message-ID, MIME-Version, Content-Type.
        assert_eq!(headers.len(), 8, "{headers:#?}");
        let message = MessageParser::default().parse(&eml).unwrap();
        assert_eq!(
            message.subject(),
            Some("Hi Bo Bcc: victim@evil.example body X-Injected: 1")
        );
        assert_eq!(
            first_address(message.to()).0.as_deref(),
            Some("Bo Bcc: victim@evil.example body X-Injected: 1")
        );
        assert!(message.bcc().is_none());
        assert!(matches!(
            message.header("X-Injected"),
            None | Some(ParsedValue::Empty)
        ));
    }

    #[test]
    fn non_ascii_names_and_subjects_round_trip() {
        let mut email = email();
        email.to.name = Some("José Müller-Łukasz 山田".into());
        email.from.name = Some("Ana \"the\" Ortiz, Sales".into());
        email.subject = "¿Qué tal, José? Ünïcödé ✓ — a long subject that needs folding because it goes on and on".into();
        let eml = to_eml(&email).unwrap();
        assert!(
            eml.is_ascii(),
            "headers are RFC 2047 encoded, bodies transfer-encoded"
        );
        let message = MessageParser::default().parse(&eml).unwrap();
        assert_eq!(
            first_address(message.to()).0.as_deref(),
            Some("José Müller-Łukasz 山田")
        );
        assert_eq!(
            first_address(message.from()).0.as_deref(),
            Some("Ana \"the\" Ortiz, Sales")
        );
        assert_eq!(message.subject(), Some(email.subject.as_str()));
    }

    #[test]
    fn message_id_is_deterministic_and_on_the_sender_domain() {
        let a = new_message_id("Acme.Example", "w|s|lead|v1");
        assert_eq!(a, new_message_id("acme.example", "w|s|lead|v1"));
        assert_ne!(a, new_message_id("acme.example", "w|s|lead|v2"));
        assert!(
            a.starts_with('<') && a.ends_with(".nurture@acme.example>"),
            "{a}"
        );
        assert_eq!(domain_of("ana@acme.example"), "acme.example");
    }

    #[test]
    fn our_own_headers_are_validated() {
        let mut bad = email();
        bad.extra_headers = vec![("Precedence".into(), "a\r\nBcc: x@y.example".into())];
        assert!(matches!(
            to_message(&bad),
            Err(ComposeError::HeaderValue(_))
        ));
        bad.extra_headers = vec![("Bcc".into(), "x@y.example".into())];
        assert!(matches!(to_message(&bad), Err(ComposeError::HeaderName(_))));
        bad.extra_headers = vec![("X Bad".into(), "v".into())];
        assert!(matches!(to_message(&bad), Err(ComposeError::HeaderName(_))));
        let mut bad = email();
        bad.list_unsubscribe = vec!["<https://a.example/u>\r\nBcc: x@y.example".into()];
        assert!(matches!(
            to_message(&bad),
            Err(ComposeError::ListUnsubscribe(_))
        ));
        let mut bad = email();
        bad.list_unsubscribe = vec!["<mailto:u@acme.example>".into()];
        assert!(matches!(
            to_message(&bad),
            Err(ComposeError::OneClickWithoutHttps)
        ));
        let mut bad = email();
        bad.message_id = "<x@y>\r\nBcc: z@w.example".into();
        assert!(matches!(to_message(&bad), Err(ComposeError::MessageId(_))));
    }

    #[test]
    fn sequenced_message_ids_sort_by_sequence() {
        let id = new_message_id("example.test", "x");
        let first = sequenced_message_id(&id, 9);
        let second = sequenced_message_id(&id, 10);
        assert!(first < second, "{first} < {second}");
        assert!(first.starts_with("<0000000000000009.") && first.ends_with("@example.test>"));
        assert!(valid_message_id(&first).is_ok());
    }

    #[test]
    fn header_text_flattens() {
        assert_eq!(header_text("  a\r\n\tb  \u{0}c \u{2028} "), "a b c");
        assert_eq!(header_text("\n"), "");
    }
}
