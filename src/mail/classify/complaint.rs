//! Spam complaints: feedback-loop reports from mailbox providers (ARF, RFC 5965:
//! `multipart/report; report-type=feedback-report` with a `message/feedback-report` part and
//! the original message or its headers), and Microsoft's older feedback-loop shape (a
//! `multipart/mixed` "complaint about message from …" with the message attached).
//!
//! What correlation needs is the original message: its Message-ID, and its recipient (the
//! report's `Original-Rcpt-To` or `Removal-Recipient`, else the returned message's own
//! `To`, or Microsoft's `X-HmXmrOriginalRecipient`).

use mail_parser::{HeaderName, Message, MessagePart, MimeHeaders};

use super::returned::Returned;
use super::{Incoming, Kind, is_report, lossy, other_header};

/// The complaint `message` is, or `None`. `lower_subject` is its subject in lower case.
pub(super) fn complaint(
    message: &Message<'_>,
    inbound: &mut Incoming,
    lower_subject: &str,
) -> Option<Kind> {
    let report_part = message.parts.iter().find(|part| is_feedback_part(part));
    let signal = if is_report(message, "feedback-report") {
        "a feedback report (multipart/report; report-type=feedback-report)".to_owned()
    } else if report_part.is_some() {
        "a message/feedback-report part".to_owned()
    } else {
        let subject = inbound.subject.as_deref().unwrap_or_default();
        let mixed = message
            .content_type()
            .is_some_and(|ct| ct.ctype().eq_ignore_ascii_case("multipart"));
        if !(mixed && lower_subject.contains("complaint about message from")) {
            return None;
        }
        format!("a feedback-loop complaint (subject “{subject}”)")
    };
    let report = report_part
        .map(|part| lossy(part.contents()))
        .unwrap_or_default();
    let field = |wanted: &str| {
        super::lines(&report).find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case(wanted)
                .then(|| value.trim().to_owned())
                .filter(|v| !v.is_empty())
        })
    };
    let feedback_type = field("Feedback-Type").map(|t| t.to_ascii_lowercase());
    let recipient = field("Original-Rcpt-To")
        .or_else(|| field("Removal-Recipient"))
        .map(|a| a.trim_matches(['<', '>']).to_ascii_lowercase())
        .filter(|a| a.contains('@'))
        .or_else(|| original_recipient(message));
    inbound.original_message_id =
        super::returned_message_id(message, inbound.message_id.as_deref());
    Some(Kind::Complaint {
        recipient,
        feedback_type,
        signal,
    })
}

fn is_feedback_part(part: &MessagePart<'_>) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("feedback-report"))
    })
}

/// The recipient of the reported message: Microsoft's own header, else its `To`; from the
/// attached message, or from attached headers.
fn original_recipient(message: &Message<'_>) -> Option<String> {
    for part in &message.parts {
        match Returned::of(part) {
            Some(original) => {
                if let Some(address) =
                    original.header_text(other_header("X-HmXmrOriginalRecipient"))
                {
                    return Some(address.trim_matches(['<', '>']).to_ascii_lowercase());
                }
                if let Some(address) = original.first_address(HeaderName::To) {
                    return Some(address);
                }
            }
            None if part.content_type().is_some_and(|ct| {
                ct.subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("rfc822-headers"))
            }) =>
            {
                let headers = lossy(part.contents());
                let found = super::lines(&headers).find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    let name = name.trim();
                    (name.eq_ignore_ascii_case("X-HmXmrOriginalRecipient")
                        || name.eq_ignore_ascii_case("To"))
                    .then(|| address_in(value))
                    .flatten()
                });
                if found.is_some() {
                    return found;
                }
            }
            _ => {}
        }
    }
    None
}

/// `Name <a@b>` or `a@b` → `a@b`, lower case.
fn address_in(value: &str) -> Option<String> {
    let inner = match (value.rfind('<'), value.rfind('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value.trim(),
    };
    let address = inner.trim().to_ascii_lowercase();
    address.contains('@').then_some(address)
}
