//! Amazon SES notifications received by mail: the JSON of an SNS notification (the SES event
//! in its `Message` string), or the SES event itself. A bounce, a complaint or a delivery.
//!
//! The JSON is read in one pass into the few fields classification uses; everything else is
//! skipped, not built (a `serde_json::Value` of each notification, its every key and string
//! allocated, cost a twentieth of all classification for one message in twenty). The fields
//! are lenient as `Value::get` and `Value::as_str` were: a value of an unexpected type reads as
//! absent instead of failing the whole notification.

use std::fmt;
use std::marker::PhantomData;

use mail_parser::Message;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::bounce::{floor_char_boundary, plain_text};
use super::reason::{self, Reason};
use super::{Incoming, Kind, excerpt};

/// An SES event, or the SNS notification around one (`Message`).
#[derive(serde::Deserialize)]
struct Event {
    #[serde(rename = "Message", default)]
    message: Text,
    /// Present (whatever its value) or not: a `notificationType` that is no string is not
    /// replaced by an `eventType`.
    #[serde(rename = "notificationType", default, deserialize_with = "present")]
    notification_type: Option<Text>,
    #[serde(rename = "eventType", default, deserialize_with = "present")]
    event_type: Option<Text>,
    /// Present (whatever its value) or not: a bounce event needs the field, not its contents.
    #[serde(default, deserialize_with = "present")]
    bounce: Option<Object<Bounce>>,
    #[serde(default, deserialize_with = "present")]
    complaint: Option<Object<Complaint>>,
    #[serde(default)]
    mail: Object<Mail>,
}

#[derive(serde::Deserialize)]
struct Bounce {
    #[serde(rename = "bouncedRecipients", default)]
    recipients: List<Object<Recipient>>,
    #[serde(rename = "bounceType", default)]
    bounce_type: Text,
    #[serde(rename = "bounceSubType", default)]
    sub_type: Text,
}

#[derive(serde::Deserialize)]
struct Complaint {
    #[serde(rename = "complainedRecipients", default)]
    recipients: List<Object<Recipient>>,
    #[serde(rename = "complaintFeedbackType", default)]
    feedback_type: Text,
}

#[derive(serde::Deserialize, Default)]
struct Recipient {
    #[serde(rename = "emailAddress", default)]
    address: Text,
    #[serde(rename = "diagnosticCode", default)]
    diagnostic: Text,
    #[serde(default)]
    status: Text,
    #[serde(default)]
    action: Text,
}

/// The message SES sent, as the event describes it.
#[derive(serde::Deserialize)]
struct Mail {
    #[serde(default)]
    headers: List<Object<HeaderField>>,
    #[serde(rename = "commonHeaders", default)]
    common_headers: Object<CommonHeaders>,
}

#[derive(serde::Deserialize)]
struct HeaderField {
    #[serde(default)]
    name: Text,
    #[serde(default)]
    value: Text,
}

#[derive(serde::Deserialize)]
struct CommonHeaders {
    #[serde(rename = "messageId", default)]
    message_id: Text,
}

/// A field that is there, `null` included (an `Option` alone reads `null` as absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A JSON string's text; any other value reads as `None` (`Value::as_str`).
#[derive(Default)]
struct Text(Option<String>);

/// A JSON object read as `T`; any other value reads as `None` (`Value::get` finds nothing in
/// it).
struct Object<T>(Option<T>);

/// A JSON array's items; any other value reads as no items (`Value::as_array`).
struct List<T>(Vec<T>);

impl<T> Default for Object<T> {
    fn default() -> Self {
        Object(None)
    }
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

/// Reads any JSON value: `on_map`, `on_seq` and `on_str` say what a map, an array or a string
/// becomes; anything else is skipped and becomes `V::default()`.
struct Lenient<V>(PhantomData<V>);

/// What [`Lenient`] makes of each kind of JSON value.
trait Shape<'de>: Default + Sized {
    fn on_str(_text: &str) -> Self {
        Self::default()
    }
    fn on_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
    fn on_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
}

impl<'de> Shape<'de> for Text {
    fn on_str(text: &str) -> Self {
        Text(Some(text.to_owned()))
    }
}

impl<'de, T: Deserialize<'de>> Shape<'de> for Object<T> {
    fn on_map<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(|t| Object(Some(t)))
    }
}

impl<'de, T: Deserialize<'de>> Shape<'de> for List<T> {
    fn on_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(List(items))
    }
}

impl<'de, V: Shape<'de>> Visitor<'de> for Lenient<V> {
    type Value = V;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<V, E> {
        Ok(V::on_str(text))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V, A::Error> {
        V::on_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V, A::Error> {
        V::on_seq(seq)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<V, E> {
        Ok(V::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<V, E> {
        Ok(V::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<V, E> {
        Ok(V::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<V, E> {
        Ok(V::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<V, E> {
        Ok(V::default())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Lenient(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Lenient(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Lenient(PhantomData))
    }
}

/// An Amazon SES bounce, complaint or delivery notification received by mail, or `None` when
/// `message` is not one.
pub(super) fn notification(message: &Message<'_>, inbound: &mut Incoming) -> Option<Kind> {
    let head = plain_text(message)?.trim_start();
    if !head.starts_with('{') || !head[..floor_char_boundary(head, 4096)].contains("Type") {
        return None;
    }
    // The JSON ends before the SNS footer ("--" and how to unsubscribe).
    let json: Vec<&str> = head
        .lines()
        .take_while(|line| line.trim() != "--")
        .collect();
    let Object(notification) = serde_json::from_str::<Object<Event>>(&json.join("\n"))
        .or_else(|_| serde_json::from_str(&json.concat()))
        .ok()?;
    let notification = notification?;
    let event = match &notification.message.0 {
        Some(inner) => serde_json::from_str::<Object<Event>>(inner).ok()?.0?,
        None => notification,
    };
    let kind = event
        .notification_type
        .or(event.event_type)
        .and_then(|kind| kind.0)?;
    inbound.original_message_id = event.mail.0.and_then(message_id);
    let signal = format!("an Amazon SES notification ({kind})");
    match kind.as_str() {
        "Bounce" => {
            let bounce = event.bounce?.0;
            let (first, bounce_type, sub_type) = match bounce {
                Some(Bounce {
                    recipients,
                    bounce_type,
                    sub_type,
                }) => (
                    recipients.0.into_iter().next().and_then(|first| first.0),
                    bounce_type.0.unwrap_or_default(),
                    sub_type.0.unwrap_or_default(),
                ),
                None => (None, String::new(), String::new()),
            };
            let first = first.unwrap_or_default();
            let recipient = first.address.0.map(|a| a.to_ascii_lowercase());
            let diagnostic = first
                .diagnostic
                .0
                .map(|d| {
                    d.split_once(';')
                        .map_or(d.clone(), |(_, t)| t.trim().to_owned())
                })
                .unwrap_or_default();
            let status = first
                .status
                .0
                .or_else(|| super::status_in_text(&diagnostic));
            let delayed =
                bounce_type == "Transient" && first.action.0.as_deref() == Some("delayed");
            let (reason, why) = match sub_type.as_str() {
                "NoEmail" => (
                    Reason::UserUnknown,
                    "bounce type Permanent/NoEmail".to_owned(),
                ),
                "MailboxFull" => (
                    Reason::MailboxFull,
                    "bounce type Transient/MailboxFull".into(),
                ),
                "MessageTooLarge" => (
                    Reason::MessageTooBig,
                    "bounce type Transient/MessageTooLarge".into(),
                ),
                "ContentRejected" | "AttachmentRejected" => (
                    Reason::ContentError,
                    format!("bounce type {bounce_type}/{sub_type}"),
                ),
                _ => reason::judge(status.as_deref(), &diagnostic, delayed),
            };
            // SES says Transient for what may pass later, whatever the code.
            let permanent = bounce_type == "Permanent"
                && reason::permanent(
                    reason,
                    status.as_deref().or(Some("5")),
                    delayed,
                    &diagnostic,
                );
            Some(Kind::Bounce {
                recipient,
                status,
                reason,
                permanent,
                delayed,
                diagnostic: Some(excerpt(&diagnostic)).filter(|d| !d.is_empty()),
                signal: format!("{signal}; {why}"),
            })
        }
        "Complaint" => {
            let (first, feedback_type) = match event.complaint?.0 {
                Some(Complaint {
                    recipients,
                    feedback_type,
                }) => (
                    recipients.0.into_iter().next().and_then(|first| first.0),
                    feedback_type.0,
                ),
                None => (None, None),
            };
            Some(Kind::Complaint {
                recipient: first
                    .and_then(|first| first.address.0)
                    .map(|a| a.to_ascii_lowercase()),
                feedback_type,
                signal,
            })
        }
        "Delivery" => Some(Kind::Unrelated {
            reason: format!("{signal}: delivered, not a bounce"),
        }),
        _ => None,
    }
}

/// The Message-ID our message had, from the SES event's copy of its headers.
fn message_id(mail: Mail) -> Option<String> {
    let from_headers = mail.headers.0.into_iter().find_map(|header| {
        let header = header.0?;
        header
            .name
            .0?
            .eq_ignore_ascii_case("message-id")
            .then_some(header.value.0)
            .flatten()
    });
    let id = from_headers.or_else(|| mail.common_headers.0.and_then(|c| c.message_id.0))?;
    let id = id.trim().trim_matches(['<', '>']);
    (!id.is_empty()).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Option<Event> {
        serde_json::from_str::<Object<Event>>(json).ok()?.0
    }

    #[test]
    fn values_of_other_types_read_as_absent() {
        let event = parse(
            r#"{"notificationType": 5, "eventType": "Bounce", "bounce": null,
                "mail": {"headers": [7, {"name": "Message-ID", "value": ["x"]},
                         {"name": "message-id", "value": "<a@b>"}],
                         "commonHeaders": "none"}}"#,
        )
        .expect("an object");
        // A notificationType that is no string is not replaced by the eventType.
        assert!(event.notification_type.is_some_and(|t| t.0.is_none()));
        assert!(
            event
                .event_type
                .is_some_and(|t| t.0.as_deref() == Some("Bounce"))
        );
        // A null bounce is there, with nothing in it.
        assert!(event.bounce.is_some_and(|b| b.0.is_none()));
        assert!(event.complaint.is_none());
        assert_eq!(event.mail.0.and_then(message_id).as_deref(), Some("a@b"));
    }

    #[test]
    fn what_is_not_an_object_is_no_event() {
        for json in ["[]", "\"text\"", "3", "null", "{\"mail\": [1, 2]}"] {
            let event = parse(json);
            assert!(event.as_ref().is_none_or(|e| e.mail.0.is_none()), "{json}");
        }
        assert!(parse("{").is_none());
        assert!(parse("{} trailing").is_none());
    }
}
