//! Parts declared `us-ascii`, read as UTF-8.
//!
//! mail-parser decodes a part declared `charset=us-ascii` through its Windows-1252 table, a
//! character at a time into a string twice the part's size that it then shrinks (a copy);
//! a part in UTF-8 it borrows as it is, once checked. Most bounce notices are declared
//! `us-ascii`: the decoding was a fifth of the instructions spent on a Postfix bounce
//! (callgrind). When every byte of the mail is ASCII and the part is neither quoted-printable
//! nor base64 (whose decoding could give other bytes), the two readings are the same text, so
//! [`declare_utf8`] declares such parts `utf-8` in the copy of the mail that is parsed.

use memchr::{memchr, memrchr};

use super::find_ignoring_case;
use super::returned::{HEADER_LINES, heads_a_block};

/// Declares `utf-8` every `charset=us-ascii` (or `charset="us-ascii"`) of a `Content-Type`
/// field, in the mail's header block or a part's, whose part reads the same either way; the
/// change is made in `copy`, which is made from `raw` when it is first needed. The value is
/// padded with blanks to its length, so that the copy keeps every offset of the original.
pub(super) fn declare_utf8(raw: &[u8], copy: &mut Option<Vec<u8>>) {
    if !raw.is_ascii() {
        return;
    }
    // Found by `charset=`, whose `=` is rare in mail (the letters of `us-ascii` are not).
    let mut from = 0;
    while let Some(found) = find_ignoring_case(&raw[from..], b"charset=") {
        let name_end = from + found + b"charset=".len();
        from = name_end;
        let quoted = raw.get(name_end) == Some(&b'"');
        let at = name_end + usize::from(quoted);
        let Some(value) = raw.get(at..at + b"us-ascii".len()) else {
            break;
        };
        let end = at + value.len() + usize::from(quoted);
        let closed = !quoted || raw.get(end - 1) == Some(&b'"');
        let ends = raw
            .get(end)
            .is_none_or(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b';'));
        if value.eq_ignore_ascii_case(b"us-ascii")
            && closed
            && ends
            && reads_the_same(raw, name_end)
        {
            let declared: &[u8] = if quoted { b"\"utf-8\"   " } else { b"utf-8   " };
            copy.get_or_insert_with(|| raw.to_vec())[name_end..end].copy_from_slice(declared);
        }
    }
}

/// Whether the `charset=` parameter ending at `at` belongs to a `Content-Type` field of a
/// header block (the mail's, or a part's after its `--` boundary line) whose part is not
/// encoded quoted-printable or base64.
fn reads_the_same(raw: &[u8], at: usize) -> bool {
    let line_start = |end: usize| memrchr(b'\n', &raw[..end]).map_or(0, |i| i + 1);
    let line_end = |start: usize| memchr(b'\n', &raw[start..]).map_or(raw.len(), |i| start + i);
    let is_blank = |line: &[u8]| line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'));
    let folded = |line: &[u8]| line.first().is_some_and(|b| matches!(b, b' ' | b'\t'));
    // The field's first line: folded lines begin with a blank.
    let mut start = line_start(at);
    for _ in 0..HEADER_LINES {
        if !folded(&raw[start..at]) || start == 0 {
            break;
        }
        start = line_start(start - 1);
    }
    if !is_field(&raw[start..line_end(start)], b"content-type") {
        return false;
    }
    if !heads_a_block(raw, start) {
        return false;
    }
    // Below it, to the blank line that ends the block: no encoding that could give other bytes.
    let mut below = line_end(start);
    for _ in 0..HEADER_LINES {
        if below >= raw.len() {
            return true;
        }
        let next = below + 1;
        let line = &raw[next..line_end(next)];
        if is_blank(line) {
            return true;
        }
        if is_field(line, b"content-transfer-encoding") {
            let value = line
                .iter()
                .position(|&b| b == b':')
                .map_or(&[][..], |colon| line[colon + 1..].trim_ascii());
            if !["7bit", "8bit", "binary"]
                .iter()
                .any(|plain| value.eq_ignore_ascii_case(plain.as_bytes()))
            {
                return false;
            }
        }
        below = line_end(next);
    }
    false
}

/// Whether `line` starts the header field `name` (lower case): the name in any case, blanks
/// allowed before its `:`; a folded line starts none.
fn is_field(line: &[u8], name: &[u8]) -> bool {
    if line.first().is_none_or(|b| b.is_ascii_whitespace()) {
        return false;
    }
    let Some(colon) = memchr(b':', line) else {
        return false;
    };
    line[..colon].trim_ascii_end().eq_ignore_ascii_case(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::classify::{PARSER, bounce::plain_text};

    fn declared(raw: &str) -> Option<String> {
        let mut copy = None;
        declare_utf8(raw.as_bytes(), &mut copy);
        copy.map(|copy| String::from_utf8(copy).expect("ASCII"))
    }

    /// Wherever the parts are declared UTF-8, mail-parser reads the same text from them.
    fn same_text(raw: &str) {
        let copy = declared(raw).unwrap_or_else(|| raw.to_owned());
        let (original, copied) = (PARSER.parse(raw.as_bytes()), PARSER.parse(copy.as_bytes()));
        let (Some(original), Some(copied)) = (original, copied) else {
            panic!("{raw:?} no longer parses");
        };
        assert_eq!(original.parts.len(), copied.parts.len(), "{raw:?}");
        for (a, b) in original.parts.iter().zip(&copied.parts) {
            assert_eq!(a.text_contents(), b.text_contents(), "{raw:?}");
        }
        assert_eq!(plain_text(&original), plain_text(&copied), "{raw:?}");
    }

    #[test]
    fn ascii_parts_are_declared_utf8_and_read_the_same() {
        let notice = "Subject: x\nContent-Type: multipart/report; boundary=\"b\"\n\n--b\nContent-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\nThis is the mail system.\n--b\nContent-Type: text/plain;\n\tcharset=\"US-ASCII\"; format=flowed\nContent-Transfer-Encoding: 7bit\n\nSecond.\n--b--\n";
        let copy = declared(notice).expect("declared");
        assert!(copy.contains("charset=utf-8   \n"), "{copy}");
        assert!(
            copy.contains("charset=\"utf-8\"   ; format=flowed"),
            "{copy}"
        );
        assert_eq!(copy.len(), notice.len());
        same_text(notice);
        let single = "From: a@x\nContent-Type: text/plain; charset=us-ascii\n\nHello.\n";
        assert!(declared(single).is_some());
        same_text(single);
        same_text(&single.replace('\n', "\r\n"));
    }

    /// Every message of the corpus reads the same declared as it is, with LF and CRLF.
    #[test]
    fn the_corpus_reads_the_same() {
        let mut declared_some = 0;
        for (_, raw) in crate::mail::classify::corpus() {
            let raw = String::from_utf8_lossy(&raw).into_owned();
            for raw in [
                raw.replace("\r\n", "\n"),
                raw.replace("\r\n", "\n").replace('\n', "\r\n"),
            ] {
                if PARSER.parse(raw.as_bytes()).is_none() {
                    continue;
                }
                declared_some += usize::from(declared(&raw).is_some());
                same_text(&raw);
            }
        }
        assert!(declared_some >= 40, "{declared_some}");
    }

    #[test]
    fn parts_that_could_read_otherwise_are_left_alone() {
        let encoded = "From: a@x\nContent-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: quoted-printable\n\nCaf=E9\n";
        let eight_bit = "From: a@x\nContent-Type: text/plain; charset=us-ascii\n\nCaf\u{e9}\n";
        let in_a_text = "From: a@x\nContent-Type: text/plain\n\nWe sent charset=us-ascii\n";
        let other_field = "From: a@x\nX-Note: charset=us-ascii\nContent-Type: text/plain\n\nHi\n";
        let longer = "From: a@x\nContent-Type: text/plain; charset=us-ascii2\n\nHi\n";
        for raw in [encoded, eight_bit, in_a_text, other_field, longer] {
            assert_eq!(declared(raw), None, "{raw:?}");
            same_text(raw);
        }
    }
}
