//! The first address of an address header (`From`, `To`), read from its raw value.
//!
//! mail-parser's address parser reads a value a byte at a time through a state machine built
//! for every shape RFC 5322 allows (groups, quoted names, comments, encoded words), and
//! allocates what it finds: the sender's `From` cost a twentieth of a classification
//! (callgrind). Nearly every `From` has one of three plain shapes: `local@domain`,
//! `Name <local@domain>` and `local@domain (Name)`. [`first_address`] reads those itself and
//! hands any other value to mail-parser, so the result is always mail-parser's own.

use mail_parser::parsers::MessageStream;
use mail_parser::{Address, HeaderValue};

/// The address of the first mailbox of the raw value of an address header, lower case.
pub(super) fn first_address(raw: &[u8]) -> Option<String> {
    if let Some(address) = plain(raw) {
        return Some(address.to_ascii_lowercase());
    }
    let parsed = MessageStream::new(raw).parse_address();
    parsed
        .as_address()
        .and_then(Address::first)
        .and_then(|addr| addr.address())
        .map(str::to_ascii_lowercase)
}

/// All of mail-parser's parsed addresses of `raw` (for the display name, or every mailbox).
pub(super) fn parse(raw: &[u8]) -> HeaderValue<'_> {
    MessageStream::new(raw).parse_address()
}

/// The address of a value of one of the plain shapes, `None` for any other: printable ASCII
/// without quotes, escapes, groups, lists, encoded words or nested comments; one address with
/// an `@` and no blank in it, alone, in angle brackets at the end (after a name without an
/// `@`), or before one comment; and
/// the line end after it, and no other but folds (mail-parser reads no address from a value the
/// mail ends in).
fn plain(raw: &[u8]) -> Option<&str> {
    let line = raw.strip_suffix(b"\n")?;
    // A line end inside must fold the value (a blank after it), or the header ended there.
    if line
        .windows(2)
        .any(|pair| pair[0] == b'\n' && !matches!(pair[1], b' ' | b'\t'))
        || line.last() == Some(&b'\n')
    {
        return None;
    }
    let value = std::str::from_utf8(line).ok()?.trim_ascii();
    let allowed = |b: u8| {
        (b.is_ascii_graphic() || matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            && !matches!(b, b'"' | b'\\' | b',' | b';' | b':' | b'=' | b'[' | b']')
    };
    if !value.bytes().all(allowed) {
        return None;
    }
    let count = |c: u8| value.bytes().filter(|&b| b == c).count();
    let address = match (count(b'<'), count(b'>'), count(b'('), count(b')')) {
        (0, 0, 0, 0) => value,
        (1, 1, 0, 0) if value.ends_with('>') => {
            let open = value.find('<')?;
            // mail-parser joins a name with an `@` to the address.
            if value[..open].contains('@') {
                return None;
            }
            &value[open + 1..value.len() - 1]
        }
        (0, 0, 1, 1) if value.ends_with(')') => value[..value.find('(')?].trim_ascii_end(),
        _ => return None,
    };
    let blank = |b: u8| b.is_ascii_whitespace();
    let at = address.find('@')?;
    (at > 0 && at + 1 < address.len() && !address.bytes().any(blank)).then_some(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mail-parser's own reading, for comparison. Raw values end with their line's end.
    fn theirs(raw: &str) -> Option<String> {
        parse(raw.as_bytes())
            .as_address()
            .and_then(Address::first)
            .and_then(|addr| addr.address())
            .map(str::to_ascii_lowercase)
    }

    /// Wherever the plain reading answers, it answers as mail-parser does; and it answers for
    /// the shapes of nearly every sender.
    #[test]
    fn plain_values_read_as_mail_parser_reads_them() {
        let plain_shapes = [
            "ana@example.test\n",
            " Ana@Example.Test \r\n",
            "Ana Ortiz <ana@example.test>\n",
            "Ana\r\n Ortiz <Ana@example.test>\r\n",
            "<ana@example.test>\n",
            "Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.example>\n",
            "MAILER-DAEMON@mail.example.test (Mail Delivery System)\n",
            "a.b+c@d-e.example (x)\r\n",
        ];
        for raw in plain_shapes {
            assert!(plain(raw.as_bytes()).is_some(), "{raw:?}");
            assert_eq!(first_address(raw.as_bytes()), theirs(raw), "{raw:?}");
        }
        let other_shapes = [
            "\n",
            "<>\n",
            "@\n",
            "a@\n",
            "@b\n",
            "ana\n",
            "Ana Ortiz\n",
            "\"Ortiz, Ana\" <ana@example.test>\n",
            "Ana <ana@example.test>, Bo <bo@example.test>\n",
            "ana@example.test, bo@example.test\n",
            "undisclosed-recipients:;\n",
            "team: ana@example.test;\n",
            "=?utf-8?q?Jos=C3=A9?= <jose@example.test>\n",
            "Ana <ana@example.test> (work)\n",
            "(work) ana@example.test\n",
            "ana@example.test (a (nested) comment)\n",
            "Ana <ana @example.test>\n",
            "Ana <ana@example.test\n",
            "Ana ana@example.test>\n",
            "a\\@b@example.test\n",
            "José <jose@example.test>\n",
            "ana@[192.0.2.1]\n",
            "Ana < ana@example.test >\n",
        ];
        for raw in other_shapes {
            assert_eq!(first_address(raw.as_bytes()), theirs(raw), "{raw:?}");
        }
        // A value the mail ends in, without its line's end, is left to mail-parser.
        assert_eq!(plain(b"ana@example.test"), None);
        assert_eq!(
            first_address(b"ana@example.test"),
            theirs("ana@example.test")
        );
        // Each byte of these inserted anywhere in a plain value reads as mail-parser reads it.
        for base in plain_shapes {
            for at in 0..=base.len() {
                for byte in [" ", "<", ">", "(", ")", "@", "\"", ",", ":", ".", "\n", "x"] {
                    if !base.is_char_boundary(at) {
                        continue;
                    }
                    let raw = format!("{}{byte}{}", &base[..at], &base[at..]);
                    if plain(raw.as_bytes()).is_some() {
                        assert_eq!(first_address(raw.as_bytes()), theirs(&raw), "{raw:?}");
                    }
                }
            }
        }
    }
}
