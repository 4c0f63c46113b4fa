//! The `/v1` API: JSON in and out, behind API keys.
//!
//! - `POST /v1/leads`: create (201) or update (200) a lead by the import's merge rules; it is
//!   enrolled in the same turn of the work loop. With `"confirm_with": "<form>"`, the lead is
//!   kept unconfirmed and sent that form's confirmation email instead (202).
//! - `GET /v1/leads/{email}`: the lead.
//! - `POST /v1/leads/{email}/events`: something the lead did elsewhere, journaled (201).
//!
//! Keys come from `http.api_key_file` (one a line) or the variable named by `http.api_key_env`;
//! a presented key is hashed and compared with every known key's hash in constant time, and is
//! never logged. Each key has its own rate limit. An `Idempotency-Key` header makes a retried
//! POST harmless ([`crate::daemon::intake`]).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use ring::digest::{SHA256, digest};
use serde_json::Value;
use subtle::ConstantTimeEq;
use tracing::warn;

use super::error::ApiError;
use super::{ANSWER_WITHIN, Doors};
use crate::config::HttpConfig;
use crate::daemon::intake::{Door, DoorRequest, Idempotency};
use crate::lead::normalize_email;
use crate::leads_file::lead_fields;

/// The longest `Idempotency-Key` taken.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// The shortest API key taken: a short key can be guessed.
const MIN_KEY_BYTES: usize = 16;

/// The API's keys (as SHA-256 digests) and their rate limits.
pub struct Keys {
    digests: Vec<[u8; 32]>,
    limiter: Option<DefaultKeyedRateLimiter<usize>>,
}

impl Keys {
    /// The configured keys; `None` when none is configured (no API).
    pub fn load(config: &HttpConfig) -> Result<Option<Keys>, String> {
        let keys: Vec<String> = match (
            config.api_key_file.is_empty(),
            config.api_key_env.is_empty(),
        ) {
            (true, true) => return Ok(None),
            (false, false) => {
                return Err("http.api_key_file and http.api_key_env are both set: keep one".into());
            }
            (false, true) => std::fs::read_to_string(&config.api_key_file)
                .map_err(|e| format!("http.api_key_file {}: {e}", config.api_key_file))?
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect(),
            (true, false) => std::env::var(&config.api_key_env)
                .map_err(|_| {
                    format!(
                        "http.api_key_env: the environment variable {} is not set",
                        config.api_key_env
                    )
                })?
                .split([',', ' ', '\n'])
                .filter(|key| !key.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        if keys.is_empty() {
            return Err("http.api_key_file / http.api_key_env: no API key in it".into());
        }
        if let Some(position) = keys.iter().position(|key| key.len() < MIN_KEY_BYTES) {
            return Err(format!(
                "API key number {} is shorter than {MIN_KEY_BYTES} characters: make a longer one (`openssl rand -hex 32`)",
                position + 1
            ));
        }
        let limiter = NonZeroU32::new(config.api_requests_per_second)
            .map(|rate| RateLimiter::keyed(Quota::per_second(rate)));
        Ok(Some(Keys {
            digests: keys.iter().map(|key| sha256(key.as_bytes())).collect(),
            limiter,
        }))
    }

    /// Which key `headers` present (its index), under its rate limit.
    pub(super) fn authorize(&self, headers: &HeaderMap) -> Result<usize, ApiError> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| sha256(key.trim().as_bytes()))
            .ok_or(ApiError::Unauthorized)?;
        // Every key is compared, so the time taken does not tell which one matched.
        let mut found = None;
        for (index, digest) in self.digests.iter().enumerate() {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(index);
            }
        }
        let index = found.ok_or(ApiError::Unauthorized)?;
        if let Some(limiter) = &self.limiter
            && let Err(not_until) = limiter.check_key(&index)
        {
            let wait = not_until.wait_time_from(limiter.clock().now());
            return Err(ApiError::RateLimited(wait));
        }
        Ok(index)
    }

    /// The keys' SHA-256 digests: the status page's login form takes the keys too.
    pub(super) fn digests(&self) -> &[[u8; 32]] {
        &self.digests
    }

    /// What scopes a key's idempotency keys: a prefix of its digest (never the key).
    fn scope(&self, index: usize) -> String {
        hex(&self.digests[index][..8])
    }
}

/// The `/v1` routes, with the body limit.
pub fn router(max_body_bytes: usize) -> Router<Arc<Doors>> {
    Router::new()
        .route("/v1/leads", post(create))
        .route("/v1/leads/{email}", get(show))
        .route("/v1/leads/{email}/events", post(event))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}

async fn create(
    State(doors): State<Arc<Doors>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = authorize(&doors, &headers)?;
    let body = json_body(&headers, body)?;
    let Value::Object(mut object) = parse(&body)? else {
        return Err(ApiError::Json(
            "expected an object with the lead's fields".into(),
        ));
    };
    let confirm_with = object.remove("confirm_with");
    let row = lead_fields(&object, Utc::now())
        .map_err(|(field, message)| ApiError::Invalid { field, message })?;
    if row.lead.email.is_empty() {
        return Err(invalid("email", "the lead needs an email address"));
    }
    let door = match confirm_with {
        None | Some(Value::Null) => Door::Upsert {
            row,
            by: "the API".into(),
        },
        Some(Value::String(name)) => match doors.forms.get(&name) {
            Some(form) if form.config.double_opt_in => Door::SignUp {
                row,
                form: form.config.clone(),
            },
            _ => {
                return Err(invalid(
                    "confirm_with",
                    &format!("no form `{name}` with double_opt_in = true in the configuration"),
                ));
            }
        },
        Some(_) => {
            return Err(invalid(
                "confirm_with",
                "the name of a form with double opt-in",
            ));
        }
    };
    let idempotency = idempotency(&doors, key, &headers, "POST /v1/leads", &body)?;
    relay(&doors, DoorRequest { door, idempotency }).await
}

async fn show(
    State(doors): State<Arc<Doors>>,
    headers: HeaderMap,
    Path(email): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&doors, &headers)?;
    let email = address(&email)?;
    let door = Door::Get { email };
    relay(
        &doors,
        DoorRequest {
            door,
            idempotency: None,
        },
    )
    .await
}

async fn event(
    State(doors): State<Arc<Doors>>,
    headers: HeaderMap,
    Path(email): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = authorize(&doors, &headers)?;
    let email = address(&email)?;
    let body = json_body(&headers, body)?;
    let Value::Object(mut object) = parse(&body)? else {
        return Err(ApiError::Json("expected an object: {\"event\": …}".into()));
    };
    let name = match object.remove("event") {
        Some(Value::String(name)) if valid_event_name(&name) => name,
        Some(_) => {
            return Err(invalid(
                "event",
                "an event name: 1 to 100 characters, no line breaks",
            ));
        }
        None => return Err(invalid("event", "the event's name is missing")),
    };
    let properties: BTreeMap<String, Value> = match object.remove("properties") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(properties)) => properties.into_iter().collect(),
        Some(_) => return Err(invalid("properties", "an object of properties")),
    };
    let at = match object.remove("at") {
        None | Some(Value::Null) => None,
        Some(Value::String(at)) => Some(
            DateTime::parse_from_rfc3339(&at)
                .map_err(|e| invalid("at", &format!("`{at}` is not an RFC 3339 time ({e})")))?
                .with_timezone(&Utc),
        ),
        Some(_) => return Err(invalid("at", "an RFC 3339 time, like 2026-11-23T09:00:00Z")),
    };
    if let Some(unknown) = object.keys().next() {
        return Err(invalid(
            unknown,
            "unknown field; an event has `event`, `properties` and `at`",
        ));
    }
    let path = format!("POST /v1/leads/{email}/events");
    let idempotency = idempotency(&doors, key, &headers, &path, &body)?;
    let door = Door::Event {
        email,
        name,
        properties,
        at,
        by: "the API".into(),
    };
    relay(&doors, DoorRequest { door, idempotency }).await
}

fn authorize(doors: &Doors, headers: &HeaderMap) -> Result<usize, ApiError> {
    doors
        .api
        .as_ref()
        .ok_or(ApiError::Unauthorized)?
        .authorize(headers)
}

/// The body, if it is JSON and not too large.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(content_length(headers)),
        _ => ApiError::Json(rejection.body_text()),
    })?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| {
            let media = media.trim();
            media.eq_ignore_ascii_case("application/json") || media.ends_with("+json")
        });
    if !json {
        return Err(ApiError::MediaType);
    }
    Ok(body)
}

fn content_length(headers: &HeaderMap) -> usize {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Json(e.to_string()))
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::Invalid {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// The lead's address from the path.
fn address(raw: &str) -> Result<String, ApiError> {
    normalize_email(raw).map_err(|e| invalid("email", &format!("bad email address: {e}")))
}

fn valid_event_name(name: &str) -> bool {
    !name.trim().is_empty() && name.chars().count() <= 100 && !name.chars().any(char::is_control)
}

/// The request's `Idempotency-Key`, scoped to its API key, with a digest of what it asks.
fn idempotency(
    doors: &Doors,
    key: usize,
    headers: &HeaderMap,
    what: &str,
    body: &[u8],
) -> Result<Option<Idempotency>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let header_error = |message: &str| ApiError::Header {
        field: "Idempotency-Key",
        message: message.to_owned(),
    };
    let text = value
        .to_str()
        .map_err(|_| header_error("Idempotency-Key must be printable ASCII"))?
        .trim();
    if text.is_empty() || text.len() > MAX_IDEMPOTENCY_KEY {
        return Err(header_error(
            "Idempotency-Key must be 1 to 255 characters (a UUID is a good choice)",
        ));
    }
    let scope = doors
        .api
        .as_ref()
        .map(|keys| keys.scope(key))
        .unwrap_or_default();
    let fingerprint = hex(&sha256(&[what.as_bytes(), b"\0", body].concat()));
    Ok(Some(Idempotency {
        key: format!("{scope}:{text}"),
        fingerprint,
    }))
}

/// Hands the request to the work loop and answers what it says.
async fn relay(doors: &Doors, request: DoorRequest) -> Result<Response, ApiError> {
    match tokio::time::timeout(ANSWER_WITHIN, doors.inbound.door(request)).await {
        Ok(Ok(reply)) => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
            Ok((status, Json(reply.body)).into_response())
        }
        Ok(Err(error)) => {
            warn!(%error, "an API request could not be applied");
            Err(ApiError::Unavailable(error))
        }
        Err(_) => Err(ApiError::Unavailable(
            "the work loop did not answer in time".into(),
        )),
    }
}

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
