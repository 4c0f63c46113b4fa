//! The versioned value encoding: one format byte, then the value.
//!
//! Format 1 is JSON (readable with `sled` tooling, tolerant of added optional fields). An
//! outbox entry carries its MIME bytes after the JSON, so a 5 KB email is not inflated into a
//! JSON array of numbers. A value whose format byte this build does not know is reported, never
//! guessed at.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// The value format this build writes.
pub const FORMAT: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![FORMAT];
    // Serializing our own plain data types to JSON cannot fail (no maps with non-string keys).
    serde_json::to_writer(&mut bytes, value).expect("store records serialize to JSON");
    bytes
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    parse(what, payload(what, bytes)?)
}

/// A JSON header followed by raw bytes: `format ‖ header length (u32 BE) ‖ header ‖ raw`.
pub fn encode_with_raw<T: Serialize>(header: &T, raw: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("store records serialize to JSON");
    let mut bytes = Vec::with_capacity(5 + json.len() + raw.len());
    bytes.push(FORMAT);
    bytes.extend_from_slice(&(json.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(raw);
    bytes
}

pub fn decode_with_raw<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<(T, Vec<u8>), StoreError> {
    let (json, raw) = split_raw(what, bytes)?;
    Ok((parse(what, json)?, raw.to_vec()))
}

/// Only the JSON header of a value written by [`encode_with_raw`], its raw bytes left unread.
pub fn decode_header<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let (json, _) = split_raw(what, bytes)?;
    parse(what, json)
}

/// The JSON header and the raw bytes of a value written by [`encode_with_raw`].
fn split_raw<'a>(what: &'static str, bytes: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), StoreError> {
    let body = payload(what, bytes)?;
    let corrupt = |detail: &str| StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    };
    let length: [u8; 4] = body
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("truncated header length"))?;
    let end = 4 + u32::from_be_bytes(length) as usize;
    let json = body
        .get(4..end)
        .ok_or_else(|| corrupt("truncated header"))?;
    Ok((json, &body[end..]))
}

fn parse<T: DeserializeOwned>(what: &'static str, json: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(json).map_err(|error| StoreError::Corrupt {
        what,
        detail: error.to_string(),
    })
}

fn payload<'a>(what: &'static str, bytes: &'a [u8]) -> Result<&'a [u8], StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, body)) => Ok(body),
        Some((&format, _)) => Err(StoreError::UnknownFormat { what, format }),
        None => Err(StoreError::Corrupt {
            what,
            detail: "empty value".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let bytes = encode(&vec!["a", "b"]);
        assert_eq!(bytes[0], FORMAT);
        let back: Vec<String> = decode("list", &bytes).unwrap();
        assert_eq!(back, ["a", "b"]);
    }

    #[test]
    fn raw_bytes_ride_after_the_header() {
        let raw = b"Subject: hi\r\n\r\n\xff\x00body";
        let bytes = encode_with_raw(&"header", raw);
        let (header, back): (String, Vec<u8>) = decode_with_raw("outbox", &bytes).unwrap();
        assert_eq!(header, "header");
        assert_eq!(back, raw);
        let header: String = decode_header("outbox", &bytes).unwrap();
        assert_eq!(header, "header");
    }

    #[test]
    fn an_unknown_format_is_an_error_not_a_guess() {
        let mut bytes = encode(&1);
        bytes[0] = 9;
        let error = decode::<i32>("lead", &bytes).unwrap_err();
        assert!(error.to_string().contains("format 9"), "{error}");
        assert!(decode_with_raw::<String>("outbox", &[FORMAT, 0, 0]).is_err());
        assert!(decode::<i32>("lead", &[]).is_err());
    }
}
