//! The message a bounce or a complaint returns (a `message/rfc822` or `message/global` part),
//! kept as raw bytes instead of parsed.
//!
//! mail-parser parses such a part as a whole message of its own, every header and body part,
//! charset decoding included, and has no option to leave it alone; classification reads at
//! most its Message-ID, `From`, `To` and one other header. So before parsing, [`hide`] declares
//! those parts `message/x-kept` in a copy of the mail, which mail-parser keeps as plain bytes;
//! [`Returned`] finds the few fields wanted in them with a line scan of its own that tells
//! fields apart as mail-parser does, and reads their values as mail-parser reads them
//! (addresses as its parser reads them, [`super::address`]; ids with [`super::ids`]). A
//! returned message that was not hidden (an unusual spelling of its `Content-Type`) is still
//! read from mail-parser's parse.

use mail_parser::{HeaderName, Message, MessagePart, MimeHeaders, PartType};
use memchr::{memchr, memrchr};

use super::ids::last_id;
use super::{find_ignoring_case, header_text};

/// The subtype a hidden returned message is declared with: as long as `rfc822` and `global`,
/// so that the copy keeps every offset of the original.
const KEPT: &[u8] = b"x-kept";

/// How many header lines are looked over for the boundary line or the start of the mail that
/// shows a `Content-Type` field heads a part ([`heads_a_block`]), or for the end of its block.
pub(super) const HEADER_LINES: usize = 64;

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
    heads_a_block(raw, start)
}

/// Whether the header field whose line starts at `start` is in a header block that starts the
/// mail or follows a `--` boundary line: the lines above it, up to that, are header lines (no
/// blank line between).
pub(super) fn heads_a_block(raw: &[u8], mut start: usize) -> bool {
    for _ in 0..HEADER_LINES {
        if start == 0 {
            return true;
        }
        let end = start - 1;
        start = memrchr(b'\n', &raw[..end]).map_or(0, |i| i + 1);
        let line = &raw[start..end];
        if line.starts_with(b"--") {
            return true;
        }
        if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
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
            Returned::Kept(raw) => last_id(field(raw, &HeaderName::MessageId)?),
        }
    }

    /// The address of the first mailbox of its `name` header (`From`, `To`), lower case.
    pub(super) fn first_address(&self, name: HeaderName<'static>) -> Option<String> {
        match self {
            Returned::Parsed(message) => super::first_address(message, name),
            Returned::Kept(raw) => super::address::first_address(field(raw, &name)?),
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
/// mail-parser's accessors return), from after its colon to the end of its last folded line:
/// the bytes mail-parser would have parsed the field from.
///
/// Fields are told apart as `MessageStream::parse_headers` tells them apart, a line at a time
/// (a long `Received` field is passed over with `memchr`, where mail-parser's own parsers read
/// it a byte at a time):
/// - blanks before a name are passed over, and an empty line ends the block;
/// - the name runs to the first `:` after a byte that is not blank; a line without one has no
///   name and is passed over;
/// - a name mail-parser knows (`From`, `To`, `Message-ID`, …) is its letters, lower case, the
///   blanks between them dropped; any other name is as written, from its first byte to its
///   last that is not blank;
/// - a value ends with the first line break not followed by a space or a tab.
fn field<'r>(raw: &'r [u8], name: &HeaderName<'_>) -> Option<&'r [u8]> {
    let wanted = name.as_str().as_bytes();
    let known = !matches!(name, HeaderName::Other(_));
    let mut found = None;
    let mut at = 0;
    'fields: loop {
        loop {
            match raw.get(at) {
                None | Some(b'\n') => return found,
                Some(byte) if byte.is_ascii_whitespace() => at += 1,
                Some(_) => break,
            }
        }
        // The name: its first and last bytes that are not blank, how many such bytes, and
        // whether they spell `wanted` so far.
        let mut first = None;
        let mut last = 0;
        let mut letters = 0;
        let mut spells = true;
        while let Some(&byte) = raw.get(at) {
            at += 1;
            match byte {
                b':' if first.is_some() => break,
                b'\n' => continue 'fields,
                _ if byte == b':' || byte.is_ascii_whitespace() => {}
                _ => {
                    first.get_or_insert(at - 1);
                    last = at - 1;
                    spells &= wanted
                        .get(letters)
                        .is_some_and(|w| w.eq_ignore_ascii_case(&byte));
                    letters += 1;
                }
            }
        }
        let Some(first) = first else {
            return found;
        };
        let start = at;
        loop {
            let Some(newline) = memchr(b'\n', &raw[at..]) else {
                at = raw.len();
                break;
            };
            at += newline + 1;
            if !matches!(raw.get(at), Some(b' ' | b'\t')) {
                break;
            }
        }
        let same = if known {
            spells && letters == wanted.len()
        } else {
            raw[first..=last].eq_ignore_ascii_case(wanted)
        };
        if same {
            found = raw.get(start..at);
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

    /// What a kept header block reads as, and what mail-parser reads from it parsed.
    fn both_readings(raw: &[u8]) -> [[Option<String>; 4]; 2] {
        let read = |returned: &Returned<'_, '_>| {
            [
                returned.message_id(),
                returned.first_address(HeaderName::From),
                returned.first_address(HeaderName::To),
                returned
                    .header_text(HeaderName::Other("X-HmXmrOriginalRecipient".into()))
                    .map(str::to_owned),
            ]
        };
        let kept = read(&Returned::Kept(raw));
        let parsed = PARSER
            .parse(raw)
            .map_or([None, None, None, None], |message| {
                read(&Returned::Parsed(&message))
            });
        [kept, parsed]
    }

    /// The scan tells fields apart as mail-parser does, however odd the header block: every
    /// one of these bytes inserted at every place of a block agrees.
    #[test]
    fn kept_fields_are_found_as_mail_parser_finds_them() {
        let block = "Received: from a\r\n\tby b\r\nMessage-ID: <one@x>\r\nFrom: Ana <ana@x>\nTo:\n bo@x\nX-HmXmrOriginalRecipient: <wes@x>\nMessage-ID: <two@x>\n\nTo: body@x\n";
        let odd = [
            "  Message-ID: <lead@x>\n",
            ":Message-ID: <colon@x>\n",
            "Mess age-ID : <blank@x>\n",
            "X-Hm XmrOriginalRecipient: <blank@x>\n",
            "no colon\nTo: after@x\n",
            "From\n",
            "\n\nFrom: late@x\n",
            "From: a@x\n \n",
        ];
        for raw in odd {
            let [kept, parsed] = both_readings(raw.as_bytes());
            assert_eq!(kept, parsed, "{raw:?}");
        }
        for at in 0..=block.len() {
            for byte in [b' ', b'\t', b':', b'\n', b'\r', b'<', b'x', 0xff] {
                let mut raw = block.as_bytes().to_vec();
                raw.insert(at, byte);
                let [kept, parsed] = both_readings(&raw);
                assert_eq!(kept, parsed, "{:?}", String::from_utf8_lossy(&raw));
            }
            let [kept, parsed] = both_readings(&block.as_bytes()[..at]);
            assert_eq!(kept, parsed, "{:?}", &block[..at]);
        }
    }

    /// Every message returned in the corpus reads the same kept raw as parsed.
    #[test]
    fn kept_and_parsed_returned_messages_agree_in_the_corpus() {
        let mut count = 0;
        for (path, raw) in crate::mail::classify::corpus() {
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
