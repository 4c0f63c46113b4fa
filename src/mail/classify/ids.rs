//! Message-IDs read from a header field's raw value (`Message-ID`, `In-Reply-To`,
//! `References`), as mail-parser's `MessageStream::parse_id` reads them (tested against it),
//! at a fraction of its cost: it reads a byte at a time through an iterator, where this is a
//! loop over the bytes. mail-parser is told to leave these fields unparsed ([`super::PARSER`]).

use std::borrow::Cow;

/// The ids of a field's value, from after its colon to the end of its last folded line: every
/// id in angle brackets, else the text outside them as one id; none when there is neither, or
/// when the value is cut off before its line break (as `parse_id` reads it).
pub(super) fn ids(value: &[u8]) -> Vec<Cow<'_, str>> {
    // Ranges of `value`: the ids closed, the id being read, the text outside brackets.
    let mut closed: Vec<(usize, usize)> = Vec::new();
    let mut id: Option<(usize, usize)> = None;
    let mut outside: Option<(usize, usize)> = None;
    let extend = |range: &mut Option<(usize, usize)>, start: usize, end: usize| {
        *range = Some((range.map_or(start, |(first, _)| first), end));
    };
    let mut in_brackets = false;
    let mut at = 0;
    while let Some(&byte) = value.get(at) {
        match byte {
            b'\n' if matches!(value.get(at + 1), Some(b' ' | b'\t')) => at += 2,
            b'\n' => {
                if closed.is_empty() {
                    closed.extend(outside);
                }
                return closed
                    .into_iter()
                    .map(|(start, end)| super::lossy(&value[start..end]))
                    .collect();
            }
            b'<' => {
                in_brackets = true;
                at += 1;
            }
            b'>' => {
                in_brackets = false;
                // As in mail-parser, the `>` that closes an id counts as text outside brackets.
                if let Some(range) = id.take() {
                    closed.push(range);
                    extend(&mut outside, at, at + 1);
                }
                at += 1;
            }
            b' ' | b'\t' | b'\r' => at += 1,
            _ => {
                // A run of the id's own bytes, read at once.
                let start = at;
                while value
                    .get(at)
                    .is_some_and(|b| !matches!(b, b'\n' | b'<' | b'>' | b' ' | b'\t' | b'\r'))
                {
                    at += 1;
                }
                extend(if in_brackets { &mut id } else { &mut outside }, start, at);
            }
        }
    }
    Vec::new()
}

/// The id `Message::message_id` gives for a field's value (`HeaderValue::as_text`: the last).
pub(super) fn last_id(value: &[u8]) -> Option<String> {
    ids(value).pop().map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::parsers::MessageStream;

    #[test]
    fn ids_are_read_as_mail_parser_reads_them() {
        let values: [&[u8]; 17] = [
            b" <a@b>\n",
            b" <a@b> <c@d>\n",
            b" <a@b>\n <c@d>\t<e@f>\n",
            b" a@b\n",
            b" <a@b>x\n",
            b" x<a@b>\n",
            b" <>\n",
            b" < a @ b >\n",
            b" <a@b\n",
            b" a@b>\n",
            b"\n <folded@b>\n",
            b"\r\n\t<crlf@b>\r\n",
            b" <a@b>",
            b" <\xc3\xa9@b>\xff\n",
            b" (comment) <a@b>\n",
            b"",
            b"\n",
        ];
        let sample = b" <a@b> x <c@d>\r\n\t<e@f>\n";
        let mut mutated: Vec<Vec<u8>> = Vec::new();
        for at in 0..=sample.len() {
            mutated.push(sample[..at].to_vec());
            for byte in [b'<', b'>', b'\n', b' ', b'\t', b'\r', b'z', 0xc3] {
                let mut value = sample.to_vec();
                value.insert(at, byte);
                mutated.push(value);
            }
        }
        for value in values.into_iter().chain(mutated.iter().map(Vec::as_slice)) {
            let theirs = MessageStream::new(value).parse_id();
            let name = String::from_utf8_lossy(value);
            assert_eq!(
                ids(value),
                theirs.clone().into_text_list().unwrap_or_default(),
                "{name:?}"
            );
            assert_eq!(last_id(value).as_deref(), theirs.as_text(), "{name:?}");
        }
    }
}
