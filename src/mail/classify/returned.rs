//! The message a bounce or a complaint returns (a `message/rfc822` or `message/global` part),
//! kept as raw bytes instead of parsed.
//!
//! mail-parser parses such a part as a whole message of its own, every header and body part,
//! charset decoding included, and has no option to leave it alone; classification reads at
//! most its Message-ID, `From`, `To` and one other header. So before parsing, [`hide`] declares
//! those parts `message/x-kept` in a copy of the mail, which mail-parser keeps as plain bytes;
//! [`Returned`] reads the few fields wanted from them with mail-parser's own header-name and
//! field parsers, as mail-parser would have read them from the parsed message. A returned
//! message that was not hidden (an unusual spelling of its `Content-Type`) is still read from
//! mail-parser's parse.

use mail_parser::parsers::MessageStream;
use mail_parser::{Address, HeaderName, Message, MessagePart, MimeHeaders, PartType};

use super::{find_ignoring_case, header_text, same_name};

/// The subtype a hidden returned message is declared with: as long as `rfc822` and `global`,
/// so that the copy keeps every offset of the original.
const KEPT: &[u8] = b"x-kept";

/// How many header lines [`hide`] looks back over for the boundary line or the start of the
/// mail that shows a `Content-Type` line heads a part.
const HEADER_LINES: usize = 64;

/// A copy of `raw` in which every `Content-Type: message/rfc822` (or `message/global`) of the
/// mail's or a part's header block says `message/x-kept`, or `None` when there is none.
///
/// Only a `Content-Type` field (its name in any case, its value possibly on a folded line) in
/// a block of header lines that starts the mail or follows a `--` boundary line is changed:
/// the same words in a text are left as they are.
pub(super) fn hide(raw: &[u8]) -> Option<Vec<u8>> {
    let mut copy: Option<Vec<u8>> = None;
    let mut from = 0;
    while let Some(found) = find_ignoring_case(&raw[from..], b"message/") {
        let at = from + found;
        let subtype = at + b"message/".len();
        from = subtype;
        let Some(name) = raw.get(subtype..subtype + KEPT.len()) else {
            break;
        };
        let ends = raw
            .get(subtype + KEPT.len())
            .is_none_or(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b';' | b'('));
        if ends
            && (name.eq_ignore_ascii_case(b"rfc822") || name.eq_ignore_ascii_case(b"global"))
            && declares_a_part(raw, at)
        {
            copy.get_or_insert_with(|| raw.to_vec())[subtype..subtype + KEPT.len()]
                .copy_from_slice(KEPT);
        }
    }
    copy
}

/// Whether the value starting at `at` is the whole start of a `Content-Type` field in a header
/// block: `Content-Type:` (blanks allowed) before it on its line, or alone on the line above
/// when the value is folded; and above the field, header lines up to a `--` boundary line or
/// the start of the mail, no blank line between.
fn declares_a_part(raw: &[u8], at: usize) -> bool {
    let line_start = |end: usize| {
        raw[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
    };
    let is_blank = |bytes: &[u8]| bytes.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'));
    let mut start = line_start(at);
    let mut before = &raw[start..at];
    if before.is_empty() {
        return false;
    }
    if is_blank(before) {
        // A folded value: the field's name is on the line above.
        if start == 0 {
            return false;
        }
        start = line_start(start - 1);
        before = &raw[start..at];
    }
    let Some(colon) = before.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, rest) = (&before[..colon], &before[colon + 1..]);
    if !name.trim_ascii().eq_ignore_ascii_case(b"content-type")
        || name.first().is_some_and(|b| b.is_ascii_whitespace())
        || !rest.iter().all(u8::is_ascii_whitespace)
    {
        return false;
    }
    // The lines above, up to the boundary line or the start of the mail.
    for _ in 0..HEADER_LINES {
        if start == 0 {
            return true;
        }
        let end = start - 1;
        start = line_start(end);
        let line = &raw[start..end];
        if line.starts_with(b"--") {
            return true;
        }
        if is_blank(line) {
            return false;
        }
    }
    false
}

/// A message returned in a part: kept raw ([`hide`]), or parsed by mail-parser.
pub(super) enum Returned<'a, 'x> {
    Kept(&'a [u8]),
    Parsed(&'a Message<'x>),
}

impl<'a, 'x> Returned<'a, 'x> {
    /// The message `part` returns, if it is one.
    pub(super) fn of(part: &'a MessagePart<'x>) -> Option<Self> {
        match &part.body {
            PartType::Message(message) => Some(Returned::Parsed(message)),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes)
                if part.content_type().is_some_and(|ct| {
                    ct.ctype().eq_ignore_ascii_case("message")
                        && ct
                            .subtype()
                            .is_some_and(|s| s.as_bytes().eq_ignore_ascii_case(KEPT))
                }) =>
            {
                Some(Returned::Kept(bytes))
            }
            _ => None,
        }
    }

    /// Its Message-ID, as `Message::message_id` reads it.
    pub(super) fn message_id(&self) -> Option<String> {
        match self {
            Returned::Parsed(message) => super::message_id(message),
            Returned::Kept(raw) => MessageStream::new(field(raw, &HeaderName::MessageId)?)
                .parse_id()
                .as_text()
                .map(str::to_owned),
        }
    }

    /// The address of the first mailbox of its `name` header (`From`, `To`), lower case.
    pub(super) fn first_address(&self, name: HeaderName<'static>) -> Option<String> {
        match self {
            Returned::Parsed(message) => super::first_address(message, name),
            Returned::Kept(raw) => MessageStream::new(field(raw, &name)?)
                .parse_address()
                .as_address()
                .and_then(Address::first)
                .and_then(|addr| addr.address())
                .map(str::to_ascii_lowercase),
        }
    }

    /// A header's raw value, trimmed, as `Message::header_raw` reads it.
    pub(super) fn header_text(&self, name: HeaderName<'static>) -> Option<&'a str> {
        match self {
            Returned::Parsed(message) => header_text(message, name),
            Returned::Kept(raw) => std::str::from_utf8(field(raw, &name)?).ok().map(str::trim),
        }
    }
}

/// The raw value of the last `name` field of the header block that starts `raw` (the one
/// mail-parser's accessors return), from after its colon to the end of its last folded line.
/// The fields are told apart by mail-parser's own header-name parser, and their ends found as
/// mail-parser finds the end of a field it does not read, so that the value is the one it would
/// have parsed.
fn field<'r>(raw: &'r [u8], name: &HeaderName<'_>) -> Option<&'r [u8]> {
    let mut stream = MessageStream::new(raw);
    let mut found = None;
    loop {
        // As `MessageStream::parse_headers`: blanks before a name are passed over, and a line
        // that is empty ends the header block.
        loop {
            match stream.peek() {
                Some(b'\n') | None => return found,
                Some(ch) if !ch.is_ascii_whitespace() => break,
                _ => {
                    stream.next();
                }
            }
        }
        if let Some(field_name) = stream.parse_header_name() {
            let start = stream.offset();
            stream.parse_and_ignore();
            if same_name(&field_name, name) {
                found = raw.get(start..stream.offset());
            }
        } else if stream.is_eof() {
            return found;
        }
    }
}

/// Every message returned in `message`'s parts.
pub(super) fn returned<'a, 'x>(message: &'a Message<'x>) -> impl Iterator<Item = Returned<'a, 'x>> {
    message.parts.iter().filter_map(Returned::of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::classify::{PARSER, header_value};

    fn kept(raw: &str) -> Returned<'_, 'static> {
        Returned::Kept(raw.as_bytes())
    }

    #[test]
    fn returned_parts_are_hidden_in_any_case_folded_and_with_crlf() {
        let cases = [
            "--b\nContent-Type: message/rfc822\n\nFrom: a@b\n",
            "--b\r\nContent-Description: Undelivered Message\r\nCONTENT-TYPE:  Message/RFC822\r\n\r\nFrom: a@b\r\n",
            "--b\nContent-Type:\n\tmessage/rfc822; x-unix-mode=0644\n\nFrom: a@b\n",
            "--b\nContent-Type: message/global\n\nFrom: a@b\n",
            "Content-Type: message/rfc822\n\nFrom: a@b\n",
        ];
        for raw in cases {
            let hidden = hide(raw.as_bytes()).unwrap_or_else(|| panic!("{raw:?}"));
            assert_eq!(hidden.len(), raw.len());
            let text = String::from_utf8(hidden).unwrap().to_ascii_lowercase();
            assert!(text.contains("message/x-kept"), "{text:?}");
            assert!(
                !text.contains("rfc822") && !text.contains("global"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_same_words_elsewhere_are_left_alone() {
        let cases = [
            // Other subtypes.
            "--b\nContent-Type: text/rfc822-headers\n\nFrom: a@b\n",
            "--b\nContent-Type: message/rfc822-headers\n\nFrom: a@b\n",
            "--b\nContent-Type: message/delivery-status\n\n",
            // In a text, not a header block.
            "--b\nContent-Type: text/plain\n\nThe original was\nContent-Type: message/rfc822\n",
            "Subject: hi\n\nContent-Type: message/rfc822\n",
            "--b\nX-Note: see message/rfc822\n\n",
            "--b\nContent-Type: text/plain; name=\"message/rfc822\"\n\n",
            // Cut short, or nothing at all.
            "--b\nContent-Type: message/rfc8",
            "message/",
            "",
        ];
        for raw in cases {
            assert_eq!(hide(raw.as_bytes()), None, "{raw:?}");
        }
    }

    #[test]
    fn kept_headers_are_read_as_mail_parser_reads_them() {
        let raw = "Received: from x\n\tby y\nmessage-id:\n <first@example.test>\nFrom: \"Ana\" <ANA@Example.Test>\nTo: ghost@example.test,\n  other@example.test\nMessage-ID: <last@example.test>\nX-HmXmrOriginalRecipient: <wes@example.test>\n\nMessage-ID: <in-the-body@example.test>\n";
        let returned = kept(raw);
        assert_eq!(returned.message_id().as_deref(), Some("last@example.test"));
        assert_eq!(
            returned.first_address(HeaderName::From).as_deref(),
            Some("ana@example.test")
        );
        assert_eq!(
            returned.first_address(HeaderName::To).as_deref(),
            Some("ghost@example.test")
        );
        assert_eq!(
            returned.header_text(HeaderName::Other("x-hmxmroriginalrecipient".into())),
            Some("<wes@example.test>")
        );
        let crlf = raw.replace('\n', "\r\n");
        let returned = kept(&crlf);
        assert_eq!(returned.message_id().as_deref(), Some("last@example.test"));
        let folded = "Message-ID:\r\n\t<folded@example.test>\r\n\r\n";
        assert_eq!(
            kept(folded).message_id().as_deref(),
            Some("folded@example.test")
        );
    }

    #[test]
    fn garbled_returned_messages_read_as_nothing() {
        let cases: [&[u8]; 7] = [
            b"",
            b"\n",
            b"no colon here\n",
            b":\n",
            b"Message-ID",
            b"Message-ID:",
            b"\xff\xfe: \x00\x80\n\tMessage-ID: <x@y>",
        ];
        for raw in cases {
            let returned = Returned::Kept(raw);
            assert_eq!(returned.message_id(), None, "{raw:?}");
            assert_eq!(returned.first_address(HeaderName::From), None, "{raw:?}");
            assert_eq!(returned.header_text(HeaderName::To), None, "{raw:?}");
            assert_eq!(hide(raw), None, "{raw:?}");
        }
    }

    /// Every message returned in the corpus reads the same kept raw as parsed.
    #[test]
    fn kept_and_parsed_returned_messages_agree_in_the_corpus() {
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/classify");
        let mut count = 0;
        for entry in std::fs::read_dir(corpus).expect("the corpus") {
            let path = entry.expect("an entry").path();
            if path.extension().is_none_or(|ext| ext != "eml") {
                continue;
            }
            let raw = std::fs::read(&path).expect("readable");
            let crlf = String::from_utf8_lossy(&raw).replace('\n', "\r\n");
            for raw in [raw.clone(), crlf.into_bytes()] {
                let hidden = hide(&raw).unwrap_or_else(|| raw.clone());
                let (Some(original), Some(reparsed)) = (PARSER.parse(&raw), PARSER.parse(&hidden))
                else {
                    assert_eq!(hidden, raw, "{path:?}");
                    continue;
                };
                let parsed: Vec<_> = returned(&original).collect();
                let kept: Vec<_> = returned(&reparsed).collect();
                assert_eq!(parsed.len(), kept.len(), "{path:?}");
                for (parsed, kept) in parsed.iter().zip(&kept) {
                    assert!(matches!(parsed, Returned::Parsed(_)), "{path:?}");
                    assert!(matches!(kept, Returned::Kept(_)), "{path:?}");
                    count += 1;
                    assert_eq!(parsed.message_id(), kept.message_id(), "{path:?}");
                    for name in [HeaderName::From, HeaderName::To] {
                        assert_eq!(
                            parsed.first_address(name.clone()),
                            kept.first_address(name),
                            "{path:?}"
                        );
                    }
                    let name = || HeaderName::Other("X-HmXmrOriginalRecipient".into());
                    assert_eq!(
                        parsed.header_text(name()),
                        kept.header_text(name()),
                        "{path:?}"
                    );
                }
                // Nothing else changes: the same parts, the same text.
                assert_eq!(reparsed.parts.len(), original.parts.len(), "{path:?}");
                assert_eq!(reparsed.body_text(0), original.body_text(0), "{path:?}");
                assert_eq!(
                    header_value(&reparsed, &HeaderName::Subject),
                    header_value(&original, &HeaderName::Subject)
                );
            }
        }
        assert!(count >= 40, "{count} returned messages");
    }
}
